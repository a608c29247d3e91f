"""Sliding-window heatmap prediction with nnU-Net's predictor.

A trained model is loaded without nnU-Net's trainer lookup by name: the
network is rebuilt from the plans and each fold's weights are loaded directly
from its checkpoint. Which plans, configuration, architecture and
checkpoints make the model is the model layer's to say
(:meth:`nnlandmark.model.folder.ModelFolder.predictor` reads them from a
model folder). Each case goes through nnU-Net's own preprocessing, then nnU-Net's
Gaussian-weighted sliding window (its weights floored so that no border voxel
loses its logit in float16, see
:meth:`LandmarkPredictor._internal_predict_sliding_window_return_logits`),
logits averaged over folds. Heatmaps stay in
the preprocessed grid: the caller decodes there and maps points back through
:mod:`nnlandmark.geometry`, so the C channels are never resampled to the
original resolution.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.inference.sliding_window_prediction import compute_gaussian
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnlandmark.geometry import PreprocessedGrid
from nnlandmark.nnunet.console import captured
from nnlandmark.nnunet.checkpoints import load_checkpoint
from nnlandmark.nnunet.networks import build_network
from nnlandmark.nnunet.planning import case_grids

GAUSSIAN_FLOOR = 1e-3  # smallest sliding-window weight, relative to the tile centre's

def read_case(image_files, plans_manager: PlansManager):
    """nnU-Net's reading of one case's channel files: ``(data, properties)``, before preprocessing."""
    return plans_manager.image_reader_writer_class().read_images([str(f) for f in image_files])


def preprocess_case(image_files, plans_manager: PlansManager, configuration_manager, dataset_json: dict,
                    read=None):
    """Run nnU-Net's DefaultPreprocessor on one case.

    Returns the preprocessed array (C, ...) and the :class:`PreprocessedGrid`
    that maps its voxels back to the original image (transpose, crop, resampling).
    ``read`` (from :func:`read_case`) spares reading the files again when one
    case is preprocessed for two configurations (the cascade's stages); it is
    not modified.
    """
    data, properties = read if read is not None else read_case(image_files, plans_manager)
    # run_case_npy casts (copies) the data but writes into the properties
    data, _, properties = DefaultPreprocessor(verbose=False).run_case_npy(
        data, None, copy.deepcopy(properties), plans_manager, configuration_manager, dataset_json)
    grid, _ = case_grids(properties, plans_manager.transpose_forward, data.shape[1:])
    return data, grid


class _HeatmapChannels:
    """Stands in for nnU-Net's LabelManager inside the sliding window, which
    only asks it how many output channels to allocate."""

    def __init__(self, n: int):
        self.num_segmentation_heads = n


class LandmarkPredictor(nnUNetPredictor):
    """nnU-Net's predictor for one network of a landmark model, its folds' weights averaged.

    Parameters
    ----------
    plans, dataset_json : dict
        nnU-Net's plans and dataset description the model was trained with.
    configuration : str
        The plans' configuration of this network (a stage of the cascade, or ``3d_fullres``).
    architecture : str
        One of :data:`nnlandmark.nnunet.networks.ARCHITECTURES`.
    num_landmarks : int
        Output channels.
    checkpoints : list of path
        One nnU-Net checkpoint per fold; their logits are averaged.
    mirror_swap : list of int, optional
        Test-time mirroring is along one axis only, the patient's left-right
        axis, which differs between cases and is therefore given per call to
        :meth:`heatmaps`. ``mirror_swap`` is the channel permutation applied to
        the prediction of the flipped image, so that paired landmarks swap
        (left eye <-> right eye) instead of being averaged with each other.
    """

    def __init__(self, plans: dict, dataset_json: dict, configuration: str, architecture: str, num_landmarks: int,
                 checkpoints, device: str = "cpu", step_size: float = 0.5, mirror_swap=None,
                 progress: bool = False):
        device = torch.device(device)
        with captured():  # on a CPU: "perform_everything_on_device=True is only supported for cuda devices!"
            super().__init__(tile_step_size=step_size, use_gaussian=True, use_mirroring=False,
                             perform_everything_on_device=device.type == "cuda", device=device, verbose=False,
                             verbose_preprocessing=False, allow_tqdm=progress)
        plans_manager = PlansManager(plans)
        configuration = plans_manager.get_configuration(configuration)
        network = build_network(architecture, configuration, len(dataset_json["channel_names"]), num_landmarks)
        # weights_only: a shared model's checkpoint must not run code when it is read
        parameters = [load_checkpoint(checkpoint)["network_weights"] for checkpoint in checkpoints]
        self.manual_initialization(network, plans_manager, configuration, parameters, dataset_json,
                                   "LandmarkTrainer", None)
        self.label_manager = _HeatmapChannels(num_landmarks)
        self.mirror_swap = None if mirror_swap is None else torch.as_tensor(mirror_swap, dtype=torch.long)
        self.mirror_axis = None  # set by heatmaps() for the case at hand

    @property
    def num_input_channels(self) -> int:
        return len(self.dataset_json["channel_names"])

    def _internal_maybe_mirror_and_predict(self, x: torch.Tensor) -> torch.Tensor:
        # nnU-Net's sliding window calls this once per tile
        prediction = self.network(x)
        # mirror_axis is an axis of the preprocessed (3D) array; a 2D configuration's tiles
        # (B, C, *2 axes) are that array without its first axis, the one slice
        axis = None if self.mirror_axis is None else self.mirror_axis - (5 - x.ndim)
        if axis is None or axis < 0:
            return prediction
        flip = (axis + 2,)  # x is (B, C, *spatial)
        mirrored = torch.flip(self.network(torch.flip(x, flip)), flip)
        if self.mirror_swap is not None:
            # channel l of the flipped image's prediction is landmark swap[l] of the original
            mirrored = mirrored[:, self.mirror_swap.to(mirrored.device)]
        return (prediction + mirrored) / 2

    @torch.inference_mode()
    def _internal_predict_sliding_window_return_logits(self, data: torch.Tensor, slicers, do_on_device: bool = True):
        """nnU-Net's Gaussian-weighted sliding window, float16 sums as in nnU-Net, with the
        Gaussian floored at ``GAUSSIAN_FLOOR`` of its peak.

        nnU-Net builds its Gaussian in float16, where the tails beyond about 4 sigma
        (the corners of every tile) underflow; it lifts those zeros to the smallest
        float16 number, and a logit times that weight underflows to 0 in the
        float16 sum. A voxel that only a tile's corner covers (image borders) then
        gets logit 0, sigmoid 0.5, whatever the network said: for segmentation the
        argmax hides it, for heatmaps it is a spurious score of 0.5 (an absent
        landmark would look half present) and it breaks left-right equivariance.
        With the floor every weight and weighted logit is a normal float16 number,
        and tile borders still weigh a thousand times less than tile centres.
        """
        results_device = self.device if do_on_device else torch.device("cpu")
        data = data.to(results_device)
        logits = torch.zeros((self.label_manager.num_segmentation_heads, *data.shape[1:]), dtype=torch.half,
                             device=results_device)
        weights = torch.zeros(data.shape[1:], dtype=torch.half, device=results_device)
        gaussian = compute_gaussian(tuple(self.configuration_manager.patch_size), sigma_scale=1. / 8,
                                    value_scaling_factor=10, dtype=torch.float32, device=results_device)
        gaussian.clamp_(min=GAUSSIAN_FLOOR * float(gaussian.max()))
        for sl in slicers:
            prediction = self._internal_maybe_mirror_and_predict(data[sl][None].to(self.device))[0]
            # weighted in place and released before the next tile runs: a tile's (L, *patch)
            # float32 logits are what grows with the landmark count here (270 MB for 32 at 128^3)
            logits[sl] += prediction.to(results_device).float().mul_(gaussian)
            del prediction
            weights[sl[1:]] += gaussian
        return logits.div_(weights)

    def read(self, image_files):
        """The case as nnU-Net reads it, to preprocess it for several stages (:func:`read_case`)."""
        return read_case(image_files, self.plans_manager)

    def preprocess(self, image_files, read=None) -> tuple[torch.Tensor, PreprocessedGrid]:
        """nnU-Net's preprocessing of one case; also returns how its grid maps back."""
        data, grid = preprocess_case(image_files, self.plans_manager, self.configuration_manager, self.dataset_json,
                                     read)
        return torch.from_numpy(np.ascontiguousarray(data)), grid

    @torch.inference_mode()
    def logits(self, data: torch.Tensor, mirror_axis: int | None = None) -> torch.Tensor:
        """Logits (L, *preprocessed shape), float16 on the CPU, sliding window, folds averaged."""
        self.mirror_axis = None if mirror_axis is None else int(mirror_axis)
        return self.predict_logits_from_preprocessed_data(data)

    @torch.inference_mode()
    def patch_logits(self, patches: torch.Tensor, mirror_axis: int | None = None,
                     batch_size: int = 8) -> torch.Tensor:
        """Logits (N, L, *patch) of whole patches (N, C, *patch), folds averaged, float32 on the CPU.

        For the cascade's local stage: each patch is one network input (no
        sliding window), optionally also predicted mirrored along ``mirror_axis``
        with channels swapped, as :meth:`heatmaps` does per tile.
        """
        self.mirror_axis = None if mirror_axis is None else int(mirror_axis)
        total = None
        for parameters in self.list_of_parameters:
            self.network.load_state_dict(parameters)
            self.network.eval()
            outputs = [self._internal_maybe_mirror_and_predict(chunk.to(self.device)).float().cpu()
                       for chunk in patches.split(batch_size)]
            fold = torch.cat(outputs)
            total = fold if total is None else total.add_(fold)
        return total.div_(len(self.list_of_parameters))

    @torch.inference_mode()
    def heatmaps(self, data: torch.Tensor, mirror_axis: int | None = None) -> torch.Tensor:
        """Sigmoid heatmaps (L, *preprocessed shape), float16 on the CPU, folds averaged in logit space.

        With ``mirror_axis`` (the case's left-right axis of the preprocessed
        array, see :func:`nnlandmark.data.pairs.left_right_axis`), every tile
        is also predicted flipped along it, channels swapped by
        ``mirror_swap``, and the two logits are averaged.
        """
        return sigmoid_in_place(self.logits(data, mirror_axis))


@torch.inference_mode()
def sigmoid_in_place(logits: torch.Tensor) -> torch.Tensor:
    """Sigmoid heatmaps, float16, of (L, ...) logits; float16 logits are overwritten.

    The whole-array ``sigmoid(logits.float()).half()`` held a float32 copy and a
    float16 result beside the logits (8 bytes per voxel and landmark, 1.5 GB
    extra for 32 landmarks on a 193x229x193 grid), so peak memory grew with the
    number of landmarks. PyTorch's float16 sigmoid computes in float32 and
    rounds once, so in place it gives the same bits (checked on all 65536
    float16 values) with no copy, and is faster than converting per channel.
    """
    if logits.dtype != torch.float16:
        # not what nnU-Net's sliding window returns (float16); kept exact for other callers
        return torch.sigmoid(logits.float()).half()
    torch.sigmoid_(logits)
    return logits


@torch.inference_mode()
def softmax_in_place(logits: torch.Tensor) -> torch.Tensor:
    """Per-channel softmax over all voxels of (L, ...) logits, in place, channel by channel.

    Each channel becomes a probability distribution over the voxels (the
    ``softmax`` preset's output); it is computed in float32 one channel at a
    time, so memory does not grow with the number of landmarks.
    """
    for c in range(logits.shape[0]):
        channel = logits[c]
        channel.copy_(torch.softmax(channel.float().reshape(-1), dim=0).reshape(channel.shape))
    return logits
