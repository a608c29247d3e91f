"""Metrics against hand computations."""
import math

import numpy as np
import pytest

from nnlandmark.evaluation.metrics import (
    biometry_errors, calibrate_presence_threshold, landmark_distances, presence_metrics,
    radial_errors, success_detection_rate, summarize_biometry, summarize_errors, youden_threshold,
)
from nnlandmark.geometry import ImageGrid, index_to_world

NAN = np.nan


def _table():
    """2 cases x 3 landmarks, reference at the origin.

    errors by hand: case0 = [5 (3-4-0), 2 (exactly the 2 mm threshold), 3 (1-2-2)]
                    case1 = [1, missing prediction, 7 (2-3-6)]
    """
    ref = np.zeros((2, 3, 3))
    pred = np.array([[[3, 4, 0], [0, 0, 2], [1, 2, 2]],
                     [[0, 0, 1], [NAN, NAN, NAN], [2, 3, 6]]], dtype=float)
    return pred, ref


def test_radial_errors_hand_table():
    pred, ref = _table()
    errors = radial_errors(pred, ref)
    np.testing.assert_array_equal(errors, [[5, 2, 3], [1, NAN, 7]])


def test_radial_errors_nan_in_reference_and_shape_checks():
    pred = np.ones((1, 2, 3))
    ref = np.array([[[1, 1, 1], [NAN, 0, 0]]], dtype=float)
    np.testing.assert_array_equal(radial_errors(pred, ref), [[0, NAN]])
    with pytest.raises(ValueError):
        radial_errors(np.ones((1, 2, 3)), np.ones((1, 3, 3)))
    with pytest.raises(ValueError):
        radial_errors(np.ones((2, 3)), np.ones((2, 3)))


def test_summarize_errors_hand_table():
    pred, ref = _table()
    errors = radial_errors(pred, ref)
    s = summarize_errors(errors, thresholds=(2.0, 2.5, 3.0, 4.0), landmark_names=["a", "b", "c"],
                         case_ids=["c0", "c1"], missing_in_prediction=np.isnan(pred[..., 0]),
                         missing_in_reference=np.isnan(ref[..., 0]))
    o = s["overall"]
    # valid errors 5, 2, 3, 1, 7: mean 18/5; squared deviations 1.96+2.56+0.36+6.76+11.56 = 23.2
    assert o["mre_mm"] == pytest.approx(3.6)
    assert o["std_mm"] == pytest.approx(math.sqrt(23.2 / 5))  # population std (ddof=0)
    assert o["median_mm"] == 3.0 and o["max_mm"] == 7.0
    # error 2.0 at threshold 2.0 counts as a success: {2, 1} of 5 at 2 and 2.5 mm, {2, 3, 1} at 3, 4
    assert o["sdr"] == {"2": pytest.approx(0.4), "2.5": pytest.approx(0.4),
                        "3": pytest.approx(0.6), "4": pytest.approx(0.6)}
    assert (o["n_valid"], o["n_missing"]) == (5, 1)
    assert (o["missing_in_prediction"], o["missing_in_reference"]) == (1, 0)
    assert s["thresholds_mm"] == [2.0, 2.5, 3.0, 4.0]

    a, b, c = (s["per_landmark"][n] for n in "abc")
    assert (a["mre_mm"], a["std_mm"], a["median_mm"], a["max_mm"]) == (3.0, 2.0, 3.0, 5.0)
    assert a["sdr"]["2"] == 0.5 and a["sdr"]["4"] == 0.5
    assert (b["mre_mm"], b["std_mm"], b["n_valid"], b["n_missing"]) == (2.0, 0.0, 1, 1)
    assert b["sdr"]["2"] == 1.0  # the boundary case alone
    assert b["missing_in_prediction"] == 1 and a["missing_in_prediction"] == 0
    assert (c["mre_mm"], c["std_mm"], c["max_mm"]) == (5.0, 2.0, 7.0)
    assert c["sdr"]["3"] == 0.5 and c["sdr"]["2.5"] == 0.0

    assert s["per_case"]["c0"]["mre_mm"] == pytest.approx(10 / 3)
    assert s["per_case"]["c1"]["mre_mm"] == 4.0
    assert s["per_case"]["c1"]["missing_in_prediction"] == 1
    assert s["per_case"]["c0"]["n_missing"] == 0


def test_summarize_errors_counts_missing_sides_separately():
    errors = np.array([[NAN, NAN, 1.0]])
    miss_pred = np.array([[True, True, False]])
    miss_ref = np.array([[False, True, False]])
    s = summarize_errors(errors, [1.0], missing_in_prediction=miss_pred, missing_in_reference=miss_ref)
    o = s["overall"]
    assert (o["n_valid"], o["n_missing"], o["missing_in_prediction"], o["missing_in_reference"]) == (1, 2, 2, 1)
    assert s["per_landmark"]["1"]["missing_in_reference"] == 1
    assert s["per_landmark"]["0"]["missing_in_reference"] == 0


def test_summarize_errors_all_missing_is_nan_not_zero():
    s = summarize_errors(np.full((2, 1), NAN), [2.0])
    o = s["overall"]
    assert math.isnan(o["mre_mm"]) and math.isnan(o["sdr"]["2"])
    assert (o["n_valid"], o["n_missing"]) == (0, 2)


def test_success_detection_rate_boundary():
    np.testing.assert_allclose(success_detection_rate([0.5, 1.0, 1.5, NAN], [0.0, 1.0, 1.49, 1.5]),
                               [0, 2 / 3, 2 / 3, 1])


def test_biometry_isotropic_half_mm():
    grid = ImageGrid(size=(64, 64, 64), spacing=(0.5, 0.5, 0.5), origin=(10.0, -5.0, 3.0))
    # reference: voxel distance (6, 8, 0) -> 10 voxels = 5 mm; prediction (12, 0, 5) -> 13 voxels = 6.5 mm
    ref = index_to_world(np.array([[[0, 0, 0], [6, 8, 0]]]), grid)
    pred = index_to_world(np.array([[[0, 0, 0], [12, 0, 5]]]), grid)
    pairs = {"length": (0, 1)}
    np.testing.assert_allclose(landmark_distances(ref, pairs), [[5.0]])
    np.testing.assert_allclose(landmark_distances(pred, pairs), [[6.5]])
    np.testing.assert_allclose(biometry_errors(pred, ref, pairs), [[1.5]])


def test_biometry_anisotropic_rotated_grid():
    # permuted axes: i -> world z, j -> world x, k -> world y
    direction = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=float)
    grid = ImageGrid(size=(50, 50, 50), spacing=(0.5, 1.0, 2.0), origin=(-3.0, 7.0, 1.0),
                     direction=direction)
    # reference: index step (6, 4, 0) -> mm (3, 4, 0) -> 5 mm (the voxel-norm times
    # sqrt(sx^2+sy^2+sz^2) rule would give sqrt(52) * sqrt(5.25) ~ 16.5 mm)
    # prediction: index step (16, 0, 0) -> 8 mm
    ref = index_to_world(np.array([[[1, 1, 1], [7, 5, 1], [0, 6, 0]]]), grid)
    pred = index_to_world(np.array([[[1, 1, 1], [17, 1, 1], [0, 0, 3]]]), grid)
    pairs = {"ab": (0, 1), "ac": (0, 2)}
    np.testing.assert_allclose(landmark_distances(ref, {"ab": (0, 1)}), [[5.0]])
    pred_ac = np.linalg.norm(pred[0, 0] - pred[0, 2])   # index step (-1, -1, 2): mm (0.5, 1, 4)
    ref_ac = np.linalg.norm(ref[0, 0] - ref[0, 2])      # index step (-1, 5, -1): mm (0.5, 5, 2)
    assert pred_ac == pytest.approx(math.sqrt(0.25 + 1 + 16))
    assert ref_ac == pytest.approx(math.sqrt(0.25 + 25 + 4))
    errors = biometry_errors(pred, ref, pairs)
    np.testing.assert_allclose(errors, [[3.0, abs(math.sqrt(17.25) - math.sqrt(29.25))]])


def test_biometry_missing_point_and_summary():
    ref = np.array([[[0, 0, 0], [10, 0, 0]], [[0, 0, 0], [0, 4, 0]], [[0, 0, 0], [1, 0, 0]]], dtype=float)
    pred = np.array([[[0, 0, 0], [11, 0, 0]], [[0, 0, 0], [0, 7, 0]], [[NAN] * 3, [1, 0, 0]]])
    errors = biometry_errors(pred, ref, {"d": (0, 1)})
    np.testing.assert_allclose(errors, [[1.0], [3.0], [NAN]])
    s = summarize_biometry(errors, ["d"])["d"]
    assert (s["mean_mm"], s["std_mm"], s["median_mm"], s["max_mm"]) == (2.0, 1.0, 2.0, 3.0)
    assert (s["n_valid"], s["n_missing"]) == (2, 1)


def test_presence_metrics_hand_table():
    pred = np.array([[True, True], [False, True], [True, False]])
    ref = np.array([[True, False], [False, True], [True, True]])
    known = np.array([[True, True], [True, True], [False, True]])
    m = presence_metrics(pred, ref, known=known, landmark_names=["x", "y"])
    # x: (0) TP, (1) TN, (2) unknown -> left out
    x = m["per_landmark"]["x"]
    assert (x["tp"], x["fp"], x["fn"], x["tn"], x["n"]) == (1, 0, 0, 1, 2)
    assert (x["precision"], x["recall"], x["f1"]) == (1.0, 1.0, 1.0)
    # y: (0) FP, (1) TP, (2) FN
    y = m["per_landmark"]["y"]
    assert (y["tp"], y["fp"], y["fn"], y["tn"]) == (1, 1, 1, 0)
    assert (y["precision"], y["recall"], y["f1"]) == (0.5, 0.5, 0.5)
    o = m["overall"]
    assert (o["tp"], o["fp"], o["fn"], o["tn"], o["n"]) == (2, 1, 1, 1, 5)
    assert o["precision"] == pytest.approx(2 / 3) and o["recall"] == pytest.approx(2 / 3)
    assert o["f1"] == pytest.approx(2 / 3)


def test_presence_metrics_undefined_ratios_are_nan():
    m = presence_metrics(np.array([[False]]), np.array([[False]]))
    z = m["overall"]
    assert z["tn"] == 1 and math.isnan(z["precision"]) and math.isnan(z["recall"]) and math.isnan(z["f1"])


def test_calibrate_presence_threshold_hand():
    scores = [0.1, 0.3, 0.35, 0.4, 0.8, 0.9]
    truth = [False, False, True, False, True, True]
    # F1 at 0.1, 0.3, 0.35, 0.4, 0.8, 0.9 = 6/9, 6/8, 6/7, 4/6, 4/5, 2/4
    assert calibrate_presence_threshold(scores, truth) == 0.35


def test_calibrate_presence_threshold_ties_take_lowest():
    # F1 at 0.1, 0.2, 0.3, 0.4 = 2/3, 2/5, 1/2, 2/3
    assert calibrate_presence_threshold([0.4, 0.1, 0.2, 0.3], [True, True, False, False]) == 0.1
    with pytest.raises(ValueError):
        calibrate_presence_threshold([0.1, 0.2], [False, False])


def test_youden_threshold_hand():
    scores = [0.1, 0.3, 0.35, 0.4, 0.8, 0.9]
    truth = [False, False, True, False, True, True]
    # J at 0.1, 0.3, 0.35, 0.4, 0.8, 0.9 = 0, 1/3, 2/3, 1/3, 2/3, 1/3: tie -> 0.35
    assert youden_threshold(scores, truth) == 0.35
    with pytest.raises(ValueError):
        youden_threshold([0.1, 0.2], [True, True])
