"""Uncertainty a user can act on: the raw spread in mm, its split-conformal calibration, and the coverage
``evaluate`` reports (issue #13, item 3)."""
from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from nnlandmark.evaluation.conformal import (calibrate_scales, conformal_quantile, coverage_summary,
                                             nonconformity)
from nnlandmark.inference.uncertainty import point_spread, radial_spread, radius_key


# --------------------------------------------------------------------------- the conformal quantile

def _coverage_over_repetitions(quantile, n: int, coverage: float, repetitions: int = 4000, seed: int = 0) -> float:
    """Mean coverage on fresh cases of radii ``q * spread``, ``q`` from ``quantile`` on ``n`` calibration
    cases: exchangeable synthetic predictions whose error is ``spread * |N(0, 1)|``, the spread itself
    varying 2-3x between cases (log-normal), calibrated on one half, tested on the other."""
    rng = np.random.default_rng(seed)
    spreads = rng.lognormal(0.0, 0.5, size=(repetitions, 2 * n))
    errors = spreads * np.abs(rng.standard_normal((repetitions, 2 * n)))
    covered = []
    for e, s in zip(errors, spreads):
        q = quantile(nonconformity(e[:n], s[:n]), coverage)
        covered.append(np.mean(e[n:] <= q * s[n:]))
    return float(np.mean(covered))


def _without_the_plus_one(scores, coverage):
    """The textbook empirical quantile, ceil(n C)-th smallest, that conformal prediction corrects."""
    scores = np.sort(scores)
    return scores[math.ceil(len(scores) * coverage - 1e-9) - 1]


@pytest.mark.parametrize("n, coverage", [(20, 0.95), (10, 0.90)])
def test_conformal_radius_covers_the_stated_fraction_of_new_cases(n, coverage):
    """Split conformal guarantees coverage >= C for exchangeable cases, and <= C + 1/(n+1) for
    continuous scores. n = 20 at 95 % (and 10 at 90 %) is where the (n + 1) matters: k = n, the
    largest score, against n - 1 without it (coverage 19/21 = 0.905 instead of 20/21 = 0.952)."""
    tolerance = 0.01  # the mean over 4000 repetitions has a standard error of about 0.001
    observed = _coverage_over_repetitions(conformal_quantile, n, coverage)
    assert coverage - tolerance <= observed <= coverage + 1 / (n + 1) + tolerance, observed
    # the check has the power to see the broken quantiles (why the test exists): no +1, the median
    assert _coverage_over_repetitions(_without_the_plus_one, n, coverage) < coverage - tolerance
    assert _coverage_over_repetitions(lambda s, c: np.median(s), n, coverage) < 0.6


def test_conformal_quantile_order_statistic_and_too_few_cases():
    scores = np.arange(1.0, 101.0)  # 1..100
    assert conformal_quantile(scores, 0.95) == 96.0  # k = ceil(101 * 0.95) = 96
    assert conformal_quantile(scores[:19], 0.95) == 19.0
    assert conformal_quantile(scores[:18], 0.95) == math.inf  # k = 19 > n: no finite radius is guaranteed
    assert conformal_quantile(scores[::-1], 0.9) == 91.0  # order of the input does not matter
    with pytest.raises(ValueError, match="--coverage"):
        conformal_quantile(scores, 95)


def test_scales_per_landmark_with_a_pooled_fallback():
    rng = np.random.default_rng(1)
    errors = {"many": rng.random(40) * 4.0, "few": rng.random(6), "none": np.full(3, np.nan)}
    spreads = {"many": np.full(40, 2.0), "few": np.full(6, 0.5), "none": np.ones(3)}
    c = calibrate_scales(errors, spreads, coverage=0.95, min_cases=20)
    assert c["source"] == {"many": "landmark", "few": "pooled", "none": "pooled"}
    assert c["n"] == {"many": 40, "few": 6, "none": 0} and c["n_pooled"] == 46
    assert c["scale"]["many"] == pytest.approx(np.sort(errors["many"] / 2.0)[39 - 1])  # ceil(41 * .95) = 39
    pooled = np.sort(np.concatenate([errors["many"] / 2.0, errors["few"] / 0.5]))[math.ceil(47 * 0.95) - 1]
    assert c["scale"]["few"] == c["scale"]["none"] == c["pooled_scale"] == pytest.approx(pooled)
    # too few scores even pooled: no scale (prediction writes a null radius), never an infinite one
    small = calibrate_scales({"a": np.ones(5)}, {"a": np.ones(5)}, coverage=0.95)
    assert small["scale"] == {"a": None} and small["pooled_scale"] is None
    json.dumps(small)  # stored in nnlandmark.json as it is


# --------------------------------------------------------------------------- the raw spread

def _gaussian(shape, centre, sigma_voxels) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    log = sum(-((g - c) ** 2) / (2 * s ** 2) for g, c, s in zip(grids, centre, sigma_voxels))
    p = np.exp(log)
    return p / p.sum()


def test_spread_of_a_gaussian_distribution_is_sigma_times_spacing_on_anisotropic_voxels():
    spacing = np.array([0.5, 1.0, 3.0])
    centre = [20.3, 19.6, 20.1]  # off the voxel centres
    p = _gaussian((41, 41, 41), centre, (2.0, 2.0, 2.0))
    axis = point_spread(p[None], [centre], voxel_size_mm=spacing)
    np.testing.assert_allclose(axis[0], 2.0 * spacing, rtol=1e-6)
    assert radial_spread(axis)[0] == pytest.approx(2.0 * np.linalg.norm(spacing), rel=1e-6)

    # a Gaussian of 3 mm in the world, sampled on these voxels (sigma 6, 3 and 1 voxels): 3 mm on every axis
    world = _gaussian((81, 41, 41), [40.3, 19.6, 20.1], 3.0 / spacing)  # room for 6 voxels of sigma
    import torch  # the predictor hands over torch tensors, float32
    world_axis = point_spread(torch.from_numpy(world[None]).float(), [[40.3, 19.6, 20.1]], voxel_size_mm=spacing)
    np.testing.assert_allclose(world_axis[0], [3.0, 3.0, 3.0], rtol=1e-4)

    # about the decoded point, not the mean: 1 voxel off along axis 2 adds 1 voxel^2 there
    moved = point_spread(p[None], [[20.3, 19.6, 21.1]], voxel_size_mm=spacing)
    assert moved[0, 2] == pytest.approx(3.0 * math.sqrt(2.0 ** 2 + 1.0), rel=1e-6)
    # the training target's width is taken out (variances add): a network trained towards sigma 1.5 that
    # outputs sigma 2 doubts the position by sqrt(4 - 2.25) voxels; outputting the target itself, by no
    # more than one voxel's own spread, sqrt(1/12), never by 0 (a zero radius would never cover anything)
    deconvolved = point_spread(p[None], [centre], voxel_size_mm=spacing, target_sigma_voxels=1.5)
    np.testing.assert_allclose(deconvolved[0], math.sqrt(4.0 - 2.25) * spacing, rtol=1e-6)
    sure = point_spread(np.stack([p, p]), [centre, centre], voxel_size_mm=spacing, target_sigma_voxels=[2.0, 3.0])
    np.testing.assert_allclose(sure, [math.sqrt(1 / 12) * spacing] * 2, rtol=1e-3)
    # a second candidate position 10 voxels away with a fifth of the mass makes it much larger
    two = 0.8 * p + 0.2 * _gaussian((41, 41, 41), [20.3, 29.6, 20.1], (2.0, 2.0, 2.0))
    assert point_spread(two[None], [centre], voxel_size_mm=spacing)[0, 1] > 2.0 * axis[0, 1]


def test_heatmap_spread_grows_with_the_blob_and_ignores_the_background():
    """Sigmoid heatmaps are not distributions: the blob above half the peak is weighed, so the spread
    is proportional to the blob's width (here 2x) and a constant background changes nothing."""
    narrow = _gaussian((41, 41, 41), [20.0, 20.0, 20.0], (2.0, 2.0, 2.0))
    wide = _gaussian((41, 41, 41), [20.0, 20.0, 20.0], (4.0, 4.0, 4.0))
    heatmaps = np.stack([narrow / narrow.max(), wide / wide.max(), 0.3 + 0.5 * wide / wide.max()])
    spread = point_spread(heatmaps, [[20.0] * 3] * 3, kind="heatmap")
    assert spread[1, 0] == pytest.approx(2.0 * spread[0, 0], rel=0.02)
    np.testing.assert_allclose(spread[2], spread[1], rtol=1e-9)
    # a constant heatmap says nothing: NaN, which the predictor writes as null
    assert np.isnan(point_spread(np.ones((1, 4, 4, 4)), [[1.0, 1.0, 1.0]], kind="heatmap")).all()


# --------------------------------------------------------------------------- written and evaluated

def _record(point, radius, present=True):
    return {"world_lps_mm": point if present else None, "voxel_index": [0, 0, 0] if present else None,
            "score": 0.9, "present": present, "uncertainty_mm": 1.0, "radius_95_mm": radius}


def test_evaluate_reports_the_observed_coverage_of_predicted_radii(tmp_path):
    from nnlandmark.evaluation.evaluate import evaluate
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    # errors: a 3 (radius 2: out), b 1 (radius 2: in); c2: a 0 (in, radius 0 exactly at the error),
    # b predicted absent (no radius); c3: a 4 (radius 5: in), b's reference absent (not counted)
    cases = {"c1": ({"a": _record([3, 0, 0], 2.0), "b": _record([1, 0, 0], 2.0)}, {"a": [0, 0, 0], "b": [0, 0, 0]}),
             "c2": ({"a": _record([0, 0, 0], 0.0), "b": _record(None, None, present=False)},
                    {"a": [0, 0, 0], "b": [0, 0, 0]}),
             "c3": ({"a": _record([4, 0, 0], 5.0), "b": _record([0, 0, 0], 1.0)}, {"a": [0, 0, 0], "b": "absent"})}
    for case, (pred, ref) in cases.items():
        (tmp_path / "pred" / f"{case}.json").write_text(json.dumps(pred))
        (tmp_path / "ref" / f"{case}.json").write_text(json.dumps({"coordinate_system": "LPS", "landmarks": ref}))
    result = evaluate(tmp_path / "pred", tmp_path / "ref", output_dir=tmp_path / "eval")
    c = result.coverage
    assert (c["radius"], c["target"]) == ("radius_95_mm", 0.95)
    assert c["per_landmark"]["a"] == {"n": 3, "with_radius": 3, "covered": 2, "coverage": 2 / 3,
                                      "mean_radius_mm": pytest.approx(7 / 3)}
    assert (c["per_landmark"]["b"]["n"], c["per_landmark"]["b"]["with_radius"],
            c["per_landmark"]["b"]["covered"]) == (2, 1, 1)
    assert (c["overall"]["covered"], c["overall"]["with_radius"], c["overall"]["n"]) == (3, 4, 5)
    table = result.format_table()
    assert "Coverage of radius_95_mm (target 95%): 75.0% of 4 present reference points" in table
    assert "(1 more without a predicted radius)" in table
    stored = json.loads((tmp_path / "eval" / "evaluation.json").read_text())["coverage"]
    assert stored["overall"]["coverage"] == 0.75 and stored["per_landmark"]["a"]["covered"] == 2

    # predictions without radii (uncalibrated: null; or files of another tool): no coverage, no section
    for case, (pred, _) in cases.items():
        for r in pred.values():
            r["radius_95_mm"] = None
        (tmp_path / "pred" / f"{case}.json").write_text(json.dumps(pred))
    result = evaluate(tmp_path / "pred", tmp_path / "ref")
    assert result.coverage is None and "Coverage" not in result.format_table()


def test_written_case_carries_uncertainty_and_radius_in_json_csv_and_slicer_description(tmp_path):
    from nnlandmark.data.formats import read_landmarks
    from nnlandmark.inference.predict import _write_case, write_summary
    decoded = {"a": ([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], 0.9), "b": ([4.0, 5.0, 6.0], [1.0, 1.0, 1.0], 0.1),
               "c": ([7.0, 8.0, 9.0], [2.0, 2.0, 2.0], 0.8)}
    spreads = {"a": 0.8, "b": 1.5, "c": float("nan")}
    _write_case(tmp_path, "calibrated", decoded, {"b": 0.5}, spreads, {"a": 2.5, "b": 3.0, "c": 2.0}, "radius_95_mm")
    _write_case(tmp_path, "plain", decoded, {}, spreads)  # a model evaluate-cv never calibrated
    record = json.loads((tmp_path / "calibrated.json").read_text())
    assert (record["a"]["uncertainty_mm"], record["a"]["radius_95_mm"]) == (0.8, 2.0)
    assert (record["b"]["uncertainty_mm"], record["b"]["radius_95_mm"]) == (1.5, None)  # absent: no radius
    assert (record["c"]["uncertainty_mm"], record["c"]["radius_95_mm"]) == (None, None)  # no spread: null
    plain = json.loads((tmp_path / "plain.json").read_text())
    assert [plain[n]["radius_95_mm"] for n in "abc"] == [None] * 3 and plain["a"]["uncertainty_mm"] == 0.8

    markup = json.loads((tmp_path / "calibrated.mrk.json").read_text())["markups"][0]["controlPoints"]
    assert [cp["description"] for cp in markup] == [
        "uncertainty_mm=0.800; radius_95_mm=2.000", "uncertainty_mm=1.500; radius_95_mm=null",
        "uncertainty_mm=null; radius_95_mm=null"]
    back = read_landmarks(tmp_path / "calibrated.mrk.json")  # still a plain point list
    assert [back.status(n) for n in "abc"] == ["present", "unknown", "present"]

    write_summary(tmp_path, ["calibrated", "plain"])
    rows = list(csv.reader((tmp_path / "predictions.csv").open()))
    # the lost flags (nnlandmark.inference.lost) follow; empty here, where _write_case had no rule
    assert rows[0][-6:] == ["present", "uncertainty_mm", "radius_95_mm", "uncertain", "case_lost", "case_uncertain"]
    assert rows[1][:2] == ["calibrated", "a"] and rows[1][-5:-3] == ["0.8", "2.0"]
    assert rows[2][-5:-3] == ["1.5", ""] and rows[4][-5:-3] == ["0.8", ""]


def test_radii_need_the_decoder_they_were_calibrated_with():
    from nnlandmark.inference.predict import _radius_calibration
    description = {"uncertainty_calibration": {"coverage": 0.9, "radius_key": "radius_90_mm",
                                               "scale": {"a": 2.0}, "decoder": "mass"}}
    assert _radius_calibration(description, "mass", "m") == ("radius_90_mm", {"a": 2.0})
    with pytest.warns(UserWarning, match="calibrated with --decoder mass"):
        assert _radius_calibration(description, "argmax", "m") == ("radius_90_mm", {})
    assert _radius_calibration({}, "mass", "m") == ("radius_95_mm", {})


def test_evaluate_cv_refuses_a_coverage_outside_0_1_before_any_work(tmp_path, capsys):
    from nnlandmark.cli import main
    assert main(["evaluate-cv", str(tmp_path / "nowhere"), "-o", str(tmp_path / "cv"), "--coverage", "95"]) == 2
    assert "--coverage" in capsys.readouterr().err
    assert not (tmp_path / "cv").exists()
    assert radius_key(0.9) == "radius_90_mm"


# --------------------------------------------------------------------------- end to end (slow)

def test_evaluate_cv_calibrates_and_prediction_writes_radii(prepared_project, tiny_model, synthetic_dataset,
                                                            tmp_path):
    """evaluate-cv stores a conformal scale; predict then writes radius_95_mm = scale x uncertainty_mm in
    the case JSON, predictions.csv and the Slicer file, and evaluate reports its coverage.

    Fold 0 of the shared project validates on 2 cases (12 points: too few for any finite 95 % radius),
    so this copy's split validates fold 0 on 4 cases (24 points, pooled: fewer than 20 per landmark;
    the scale is then the largest of the 24 ratios). It tests the plumbing; the coverage figures are
    for real models (benchmarks)."""
    from nnlandmark.evaluation.cross_validation import evaluate_cv
    from nnlandmark.evaluation.evaluate import evaluate
    from nnlandmark.inference.predict import predict
    project = Path(shutil.copytree(prepared_project, tmp_path / "project"))
    model = project / Path(tiny_model).resolve().relative_to(Path(prepared_project).resolve())
    splits_path = next(project.glob("nnUNet_preprocessed/*/splits_final.json"))
    splits = json.loads(splits_path.read_text())
    cases = sorted(splits[0]["val"] + splits[0]["train"][:2])
    splits[0]["val"] = cases
    splits_path.write_text(json.dumps(splits))

    evaluate_cv(project, tmp_path / "cv", model_dir=model, progress=False, coverage=0.95)
    calibration = json.loads((model / "nnlandmark.json").read_text())["uncertainty_calibration"]
    assert calibration["radius_key"] == "radius_95_mm" and calibration["coverage"] == 0.95
    assert calibration["n_pooled"] == 24 and set(calibration["source"].values()) == {"pooled"}
    scale = calibration["pooled_scale"]
    assert scale is not None and scale > 0 and calibration["scale"]["vertex"] == scale
    assert calibration["decoder"] == "mass" and calibration["folds"] == [0]
    # the stored scale is the conformal quantile of the cross-validation predictions' error / spread
    cv_records = {c: json.loads((tmp_path / "cv" / "predictions" / f"{c}.json").read_text()) for c in cases}
    reference = evaluate(tmp_path / "cv" / "predictions", synthetic_dataset)
    spreads = np.array([[cv_records[c][n]["uncertainty_mm"] for n in reference.landmark_names]
                        for c in reference.case_ids])
    assert np.all(spreads > 0)
    assert scale == pytest.approx(conformal_quantile(reference.errors / spreads, 0.95), rel=1e-3)

    images = {c: [next((synthetic_dataset / "images").glob(f"{c}.*"))] for c in cases[:1]}
    out = predict(images, tmp_path / "again", model, progress=False)
    record = json.loads((out / f"{cases[0]}.json").read_text())
    for name, r in record.items():
        assert r["uncertainty_mm"] > 0
        assert r["radius_95_mm"] == pytest.approx(scale * r["uncertainty_mm"], abs=1e-3)
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == 6 and all(float(row["radius_95_mm"]) > 0 for row in rows)
    markup = json.loads((out / f"{cases[0]}.mrk.json").read_text())["markups"][0]["controlPoints"]
    assert all(f"radius_95_mm={record[cp['label']]['radius_95_mm']:.3f}" in cp["description"] for cp in markup)
    result = evaluate(out, synthetic_dataset)
    assert result.coverage["overall"]["with_radius"] == 6
    assert "Coverage of radius_95_mm" in result.format_table()
