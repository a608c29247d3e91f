"""Options of ``train`` and ``predict`` that the default pipeline does not exercise, on one model
trained here: ``train --fold all`` with the ``v1`` preset (full resolution), then
``predict --save-heatmaps`` and ``predict --decoder``.

The model is trained on a copy of the session's prepared project whose plans are shrunk to a
tiny U-Net on 24^3 patches (as in test_resume.py): these tests are about the schedule, the folds
and what prediction writes, none of which depends on the network's size.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnlandmark.cli import main
from conftest import shrink_plans

EPOCHS = 4
NUM_FOLDS = 5


@pytest.fixture(scope="module")
def v1_all_folds(prepared_project, synthetic_dataset, tmp_path_factory):
    """``nnlandmark train --fold all --preset v1 --configuration fullres`` for 4 epochs of 1 iteration."""
    root = tmp_path_factory.mktemp("options")
    project = Path(shutil.copytree(prepared_project, root / "project",
                                   ignore=shutil.ignore_patterns("nnUNet_results")))
    shrink_plans(project)
    assert main(["train", str(project), "--fold", "all", "--preset", "v1", "--configuration", "fullres",
                 "--epochs", str(EPOCHS), "--iterations", "1", "--val-iterations", "1"]) == 0
    model = next((project / "nnUNet_results").glob("*/v1_unet__*__3d_fullres"))
    return SimpleNamespace(project=project, model=model, root=root,
                           image=synthetic_dataset / "images" / "case_000.nii.gz")


# --------------------------------------------------------------------------- train --fold all, v1


def test_fold_all_trains_five_folds_that_cross_validate(v1_all_folds, synthetic_dataset):
    """Five finished folds with weights of their own, each validated on its own fifth of the cases:
    cross-validation predicts every case exactly once, by the one fold that did not train on it."""
    from nnlandmark.evaluation.cross_validation import evaluate_cv
    model = v1_all_folds.model
    weights = []
    for fold in range(NUM_FOLDS):
        folder = model / f"fold_{fold}"
        assert (folder / "checkpoint_final.pth").is_file(), folder
        curves = json.loads((folder / "training_curves.json").read_text())
        assert len(curves["train_loss"]) == EPOCHS
        weights.append(torch.load(folder / "checkpoint_final.pth", map_location="cpu",
                                  weights_only=False)["network_weights"])
    first = next(iter(weights[0]))
    assert all(not torch.equal(weights[0][first], w[first]) for w in weights[1:])

    splits = json.loads(next(v1_all_folds.project.glob("nnUNet_preprocessed/*/splits_final.json")).read_text())
    assert len(splits) == NUM_FOLDS
    cases = sorted(p.name[:-len(".json")] for p in (synthetic_dataset / "landmarks").glob("*.json"))
    assert sorted(c for s in splits for c in s["val"]) == cases  # each case validated by one fold
    result = evaluate_cv(v1_all_folds.project, v1_all_folds.root / "cv", model_dir=model, calibrate=False,
                         progress=False)
    assert sorted(result.case_ids) == cases
    assert sorted(p.name for p in (v1_all_folds.root / "cv" / "predictions").glob("case_*.json")
                  if not p.name.endswith(".mrk.json")) == [f"{c}.json" for c in cases]


def test_v1_preset_trains_with_adam_and_halves_the_rate_every_quarter(v1_all_folds):
    """v1: Adam at 5e-4, halved every quarter of the schedule (4 epochs: every epoch), in every fold."""
    description = json.loads((v1_all_folds.model / "nnlandmark.json").read_text())
    assert description["settings"]["preset"] == "v1" and description["settings"]["epochs"] == EPOCHS
    expected = [5e-4 * 0.5 ** e for e in range(EPOCHS)]  # the rate each epoch trained with
    for fold in range(NUM_FOLDS):
        folder = v1_all_folds.model / f"fold_{fold}"
        curves = json.loads((folder / "training_curves.json").read_text())
        assert curves["lr"] == pytest.approx(expected, rel=1e-9), fold
        optimizer = torch.load(folder / "checkpoint_final.pth", map_location="cpu",
                               weights_only=False)["optimizer_state"]
        group = optimizer["param_groups"][0]
        assert "betas" in group and "momentum" not in group, group  # Adam, not nnU-Net's SGD
        assert {"exp_avg", "exp_avg_sq"} <= set(next(iter(optimizer["state"].values())))


# --------------------------------------------------------------------------- predict --save-heatmaps


def _heatmap_arrays(path: Path) -> tuple[sitk.Image, np.ndarray]:
    """The saved heatmap image and its values as (L, k, j, i)."""
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)  # (k, j, i, L) for a vector image
    return image, np.moveaxis(array, -1, 0)


def test_saved_heatmaps_overlay_the_image_and_peak_at_the_predicted_points(v1_all_folds, tmp_path):
    """One component per landmark, on the input image's own grid (the phantoms are planned at their
    own 2 mm, uncropped), sigmoid values; each component's peak, placed in the world by SimpleITK
    from the heatmap file's geometry, is the predicted point (argmax decoder, v1's default)."""
    image_file = v1_all_folds.image
    assert main(["predict", "-i", str(image_file), "-o", str(tmp_path / "pred"), "-m", str(v1_all_folds.model),
                 "--save-heatmaps"]) == 0
    record = json.loads((tmp_path / "pred" / "case_000.json").read_text())
    heatmaps, values = _heatmap_arrays(tmp_path / "pred" / "case_000_heatmaps.nii.gz")
    names = json.loads((v1_all_folds.model / "nnlandmark.json").read_text())["landmarks"]
    assert list(record) == names
    assert heatmaps.GetNumberOfComponentsPerPixel() == len(names)
    image = sitk.ReadImage(str(image_file))
    assert heatmaps.GetSize() == image.GetSize()
    np.testing.assert_allclose(heatmaps.GetSpacing(), image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(heatmaps.GetOrigin(), image.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(heatmaps.GetDirection(), image.GetDirection(), atol=1e-6)
    assert values.min() >= 0 and values.max() <= 1 and values.std() > 0
    for c, name in enumerate(names):
        peak = np.unravel_index(np.argmax(values[c]), values[c].shape)  # (k, j, i)
        world = heatmaps.TransformIndexToPhysicalPoint([int(v) for v in peak[::-1]])
        np.testing.assert_allclose(record[name]["world_lps_mm"], world, atol=1e-3, err_msg=name)
        assert record[name]["score"] == pytest.approx(values[c].max(), abs=1e-4), name


# --------------------------------------------------------------------------- predict --decoder


def test_each_decoder_asked_for_is_the_one_applied(v1_all_folds, tmp_path):
    """predict's points for each decoder are that decoder's reading of the saved heatmaps, placed
    by SimpleITK; the default of a sigmoid (v1) model is argmax, whose points sit on voxel centres,
    and the sub-voxel decoders move off them."""
    from nnlandmark.inference.decoding import DECODERS, decode
    image_file = v1_all_folds.image
    points = {}
    for decoder in (None, *sorted(DECODERS)):
        out = tmp_path / f"pred_{decoder}"
        argv = ["predict", "-i", str(image_file), "-o", str(out), "-m", str(v1_all_folds.model), "--save-heatmaps"]
        assert main(argv + ([] if decoder is None else ["--decoder", decoder])) == 0
        record = json.loads((out / "case_000.json").read_text())
        points[decoder] = np.array([r["world_lps_mm"] for r in record.values()])
        heatmaps, values = _heatmap_arrays(out / "case_000_heatmaps.nii.gz")
        found, _ = decode(values, decoder or "argmax")  # (L, 3) continuous (k, j, i)
        world = [heatmaps.TransformContinuousIndexToPhysicalPoint(p[::-1].tolist()) for p in found]
        np.testing.assert_allclose(points[decoder], world, atol=1e-3, err_msg=str(decoder))
    np.testing.assert_array_equal(points[None], points["argmax"])
    index = np.array([sitk.ReadImage(str(image_file)).TransformPhysicalPointToContinuousIndex(p.tolist())
                      for p in points["argmax"]])
    np.testing.assert_allclose(index, np.rint(index), atol=1e-3)  # voxel centres
    for decoder in ("quadratic", "local-mean", "mass"):
        assert np.abs(points[decoder] - points["argmax"]).max() > 1e-2, decoder


class _Stop(Exception):
    pass


@pytest.mark.slow
def test_cpu_training_with_nnunets_schedule_warns_before_it_starts(prepared_project, tmp_path, monkeypatch):
    """nnU-Net's 1000 x 250 iterations on a CPU: a warning with the hours it would take and the way out,
    before the first iteration; a time budget or a short schedule gets none."""
    import warnings

    from conftest import copy_tree
    from nnlandmark.training import train as train_module
    project = copy_tree(prepared_project, tmp_path / "project")

    def stop(*args, **kwargs):
        raise _Stop
    monkeypatch.setattr(train_module, "_train_fold", stop)
    with pytest.warns(UserWarning, match=r"1000 epochs x 250 iterations for each of 2 stage\(s\) on the CPU: about "
                                         r"208 hours .* --time-budget MINUTES"):
        with pytest.raises(_Stop):
            train_module.train(project, 4, {}, device="cpu", progress=False)
    for settings in ({"time_budget_minutes": 5}, {"epochs": 2, "iterations_per_epoch": 2}):
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            with pytest.raises(_Stop):
                train_module.train(project, 4, settings, device="cpu", progress=False,
                                   continue_training=True)
