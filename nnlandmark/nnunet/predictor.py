"""Sliding-window heatmap prediction with nnU-Net's predictor.

A trained model folder is loaded without nnU-Net's trainer lookup by name:
the network is rebuilt from the plans and each fold's weights are loaded
directly. Each case goes through nnU-Net's own preprocessing, then nnU-Net's
Gaussian-weighted sliding window, logits averaged over folds. Heatmaps stay in
the preprocessed grid: the caller decodes there and maps points back through
:mod:`nnlandmark.geometry`, so the C channels are never resampled to the
original resolution.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnlandmark.geometry import PreprocessedGrid
from nnlandmark.nnunet.networks import build_network

CHECKPOINT_PREFERENCE = ("checkpoint_best.pth", "checkpoint_final.pth", "checkpoint_latest.pth")


class ModelFolderError(ValueError):
    """A model folder that cannot be used; the message names what is missing."""


def fold_checkpoint(model_dir: Path, fold: int) -> Path:
    for name in CHECKPOINT_PREFERENCE:
        path = Path(model_dir) / f"fold_{fold}" / name
        if path.is_file():
            return path
    raise ModelFolderError(f"{Path(model_dir) / f'fold_{fold}'}: no checkpoint for fold {fold} "
                           f"(looked for {', '.join(CHECKPOINT_PREFERENCE)})")


def check_model_folder(model_dir: Path, folds) -> dict:
    """The model description; raises ModelFolderError for missing plans, description or folds."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelFolderError(f"{model_dir}: model folder not found")
    for name in ("plans.json", "dataset.json", "nnlandmark.json"):
        if not (model_dir / name).is_file():
            raise ModelFolderError(f"{model_dir}: {name} missing; not a complete nnlandmark model folder")
    for fold in folds:
        fold_checkpoint(model_dir, fold)
    return json.loads((model_dir / "nnlandmark.json").read_text())


def preprocess_case(image_files, plans_manager: PlansManager, configuration_manager, dataset_json: dict):
    """Run nnU-Net's DefaultPreprocessor on one case.

    Returns the preprocessed array (C, ...) and the :class:`PreprocessedGrid`
    that maps its voxels back to the original image (transpose, crop, resampling).
    """
    data, _, properties = DefaultPreprocessor(verbose=False).run_case(
        [str(f) for f in image_files], None, plans_manager, configuration_manager, dataset_json)
    grid = PreprocessedGrid(transpose_forward=plans_manager.transpose_forward,
                            crop_start=[b[0] for b in properties["bbox_used_for_cropping"]],
                            cropped_shape=properties["shape_after_cropping_and_before_resampling"],
                            preprocessed_shape=data.shape[1:])
    return data, grid


class _HeatmapChannels:
    """Stands in for nnU-Net's LabelManager inside the sliding window, which
    only asks it how many output channels to allocate."""

    def __init__(self, n: int):
        self.num_segmentation_heads = n


class LandmarkPredictor(nnUNetPredictor):
    """nnU-Net's predictor for a landmark model folder.

    Test-time mirroring is along one axis only, the patient's left-right
    axis, which differs between cases and is therefore given per call to
    :meth:`heatmaps`. ``mirror_swap`` (optional) is the channel permutation
    applied to the prediction of the flipped image, so that paired landmarks
    swap (left eye <-> right eye) instead of being averaged with each other.
    """

    def __init__(self, model_dir, folds=(0,), device: str = "cpu", step_size: float = 0.5,
                 mirror_swap=None, progress: bool = False):
        device = torch.device(device)
        super().__init__(tile_step_size=step_size, use_gaussian=True, use_mirroring=False,
                         perform_everything_on_device=device.type == "cuda", device=device, verbose=False,
                         verbose_preprocessing=False, allow_tqdm=progress)
        self.model_dir = Path(model_dir)
        self.description = check_model_folder(self.model_dir, folds)
        plans = json.loads((self.model_dir / "plans.json").read_text())
        dataset_json = json.loads((self.model_dir / "dataset.json").read_text())
        plans_manager = PlansManager(plans)
        configuration = plans_manager.get_configuration(self.description["configuration"])
        n_landmarks = len(self.description["landmarks"])
        network = build_network(self.description["settings"]["architecture"], configuration,
                                len(dataset_json["channel_names"]), n_landmarks)
        parameters = [torch.load(fold_checkpoint(self.model_dir, f), map_location="cpu",
                                 weights_only=False)["network_weights"] for f in folds]
        self.manual_initialization(network, plans_manager, configuration, parameters, dataset_json,
                                   "LandmarkTrainer", None)
        self.label_manager = _HeatmapChannels(n_landmarks)
        self.mirror_swap = None if mirror_swap is None else torch.as_tensor(mirror_swap, dtype=torch.long)
        self.mirror_axis = None  # set by heatmaps() for the case at hand

    @property
    def num_input_channels(self) -> int:
        return len(self.dataset_json["channel_names"])

    def _internal_maybe_mirror_and_predict(self, x: torch.Tensor) -> torch.Tensor:
        # nnU-Net's sliding window calls this once per tile
        prediction = self.network(x)
        if self.mirror_axis is None:
            return prediction
        flip = (self.mirror_axis + 2,)  # x is (B, C, *spatial)
        mirrored = torch.flip(self.network(torch.flip(x, flip)), flip)
        if self.mirror_swap is not None:
            # channel l of the flipped image's prediction is landmark swap[l] of the original
            mirrored = mirrored[:, self.mirror_swap.to(mirrored.device)]
        return (prediction + mirrored) / 2

    def preprocess(self, image_files) -> tuple[torch.Tensor, PreprocessedGrid]:
        """nnU-Net's preprocessing of one case; also returns how its grid maps back."""
        data, grid = preprocess_case(image_files, self.plans_manager, self.configuration_manager, self.dataset_json)
        return torch.from_numpy(np.ascontiguousarray(data)), grid

    @torch.inference_mode()
    def heatmaps(self, data: torch.Tensor, mirror_axis: int | None = None) -> torch.Tensor:
        """Sigmoid heatmaps (L, *preprocessed shape), float16 on the CPU, folds averaged in logit space.

        With ``mirror_axis`` (the case's left-right axis of the preprocessed
        array, see :func:`nnlandmark.data.pairs.left_right_axis`), every tile
        is also predicted flipped along it, channels swapped by
        ``mirror_swap``, and the two logits are averaged.
        """
        self.mirror_axis = None if mirror_axis is None else int(mirror_axis)
        logits = self.predict_logits_from_preprocessed_data(data)
        return torch.sigmoid_(logits.float()).half() if logits.dtype != torch.float32 else \
            torch.sigmoid_(logits).half()
