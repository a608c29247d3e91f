"""End-to-end smoke test of the AFIDs template benchmark runner, nnlandmark side only.

``benchmarks/afids_template/run_benchmark.py`` on the smallest useful problem: 5 training
and 1 test case at 8 mm, one training iteration per epoch, a few seconds of budget. It
checks the plumbing (data split, prepare, calibration, training, prediction, evaluation,
report), not accuracy. The landmarker baseline needs its own 1.8 GB venv and is not run.

Skips when the ``autoafids`` wheel (the template and its annotations) cannot be fetched.
"""
from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "afids_template"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module            # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    # run_benchmark imports make_data by name from its own folder
    sys.path.insert(0, str(BENCH))
    try:
        make_data = _load("make_data", BENCH / "make_data.py")
        try:
            make_data.fetch_autoafids()
        except RuntimeError as err:
            pytest.skip(f"autoafids wheel not available: {err}")
        yield _load("afids_run_benchmark", BENCH / "run_benchmark.py")
    finally:
        sys.path.remove(str(BENCH))


def test_benchmark_runner_nnlandmark_smoke(bench, tmp_path):
    out = tmp_path / "afids"
    assert bench.main(["--out", str(out), "--smoke", "--methods", "nnlandmark", "--voxel-mm", "8",
                       "--budget-minutes", "0.05", "--iterations-per-epoch", "1",
                       "--nnlandmark-decoders", "argmax"]) == 0

    # nnlandmark saw only the training cases; the test case was predicted, not trained on
    project = json.loads((out / "nnlandmark" / "project" / "project.json").read_text())
    assert sorted(project["cases"]) == [f"train_{i:03d}" for i in range(5)]
    assert sorted(p.name for p in (out / "data" / "test" / "images").iterdir()) == ["test_000.nii.gz"]

    results = json.loads((out / "results.json").read_text())
    assert results["data_config"] == {"n_train": 5, "n_test": 1, "voxel_mm": 8.0, "seed": 0}
    (row,) = [r for r in results["rows"] if r["method"] == "nnlandmark"]
    baselines = {r["decoder"]: r for r in results["rows"] if r["method"] == "baseline"}
    assert sorted(baselines) == ["image centre", "mean position"]
    assert all(r["n_valid"] == 32 and math.isfinite(r["mre_mm"]) for r in baselines.values())
    # the mean-position baseline is the training cases' mean point, by hand
    train = [json.loads(f.read_text())["landmarks"] for f in sorted((out / "data" / "train" / "landmarks").glob("*.json"))]
    predicted = json.loads((out / "baselines" / "mean_position" / "test_000.json").read_text())
    for name in ("AC", "PC"):
        mean = [sum(t[name][a] for t in train) / len(train) for a in range(3)]
        assert predicted[name]["world_lps_mm"] == pytest.approx(mean)
    assert (row["method"], row["decoder"], row["n_cases"]) == ("nnlandmark", "argmax", 1)
    assert row["n_valid"] == 32 and math.isfinite(row["mre_mm"])
    assert row["mre_voxels"] == pytest.approx(row["mre_mm"] / 8.0)
    assert row["train_seconds"] > 0 and row["peak_rss_mb"] > 0
    timings = results["timings"]["nnlandmark"]
    assert timings["epochs"] >= 1 and len(timings["fold0_train_cases"]) == 4
    report = (out / "results.md").read_text()
    assert "SMOKE RUN" in report and "| nnlandmark | argmax |" in report and "noise floor" in report
