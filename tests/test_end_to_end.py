"""End to end on CPU: the demo trains a small model and finds held-out landmarks.

What the bound means: the test phantoms have random pose (rotations up to
15 degrees, a few mm of translation, 0.9-1.1 scale), so predicting every
landmark at its mean training position (an "atlas" that ignores the image)
misses by several millimetres. The trained model must beat that baseline by a
wide margin *and* land within ``MRE_BOUND_MM`` (2 voxels of 2 mm), a bound it
reaches with the demo's short schedule on 2 CPU cores.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from nnlandmark.data.dataset import load_dataset
from nnlandmark.demo import DEMO_EPOCHS, DEMO_ITERATIONS

MRE_BOUND_MM = 4.0


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from nnlandmark.demo import run_demo
    out = tmp_path_factory.mktemp("demo")
    result = run_demo(out, epochs=DEMO_EPOCHS, iterations=DEMO_ITERATIONS, progress=False)
    return out, result


def _atlas_baseline_mre(train_dir, test_dir) -> float:
    train = load_dataset(train_dir, progress=False)
    test = load_dataset(test_dir, progress=False)
    names = train.spec.landmarks
    mean = np.mean([c.landmarks.as_array(names) for c in train.cases], axis=0)
    errors = [np.linalg.norm(c.landmarks.as_array(names) - mean, axis=1) for c in test.cases]
    return float(np.mean(errors))


def test_demo_model_finds_held_out_landmarks(demo_run):
    out, result = demo_run
    overall = result.summary["overall"]
    baseline = _atlas_baseline_mre(out / "data" / "train", out / "data" / "test")
    print(f"demo MRE {overall['mre_mm']:.2f} mm, atlas baseline {baseline:.2f} mm")
    assert overall["n_valid"] == 4 * 6 and overall["n_missing"] == 0
    assert overall["mre_mm"] < MRE_BOUND_MM
    assert overall["mre_mm"] < 0.5 * baseline


def test_demo_validation_loss_goes_down(demo_run):
    out, _ = demo_run
    curves = next((out / "project").rglob("fold_0/training_curves.json"))
    val = json.loads(curves.read_text())["val_loss"]
    assert len(val) == DEMO_EPOCHS
    assert np.mean(val[-3:]) < 0.8 * np.mean(val[:2])


def test_demo_outputs_open_in_slicer_and_evaluation_is_written(demo_run):
    out, _ = demo_run
    markups = sorted((out / "predictions").glob("*.mrk.json"))
    assert len(markups) == 4
    doc = json.loads(markups[0].read_text())
    assert doc["markups"][0]["coordinateSystem"] in ("LPS", "RAS")
    for name in ("evaluation.json", "per_case.csv", "per_landmark.csv"):
        assert (out / "evaluation" / name).is_file()
