"""Landmark detection metrics as pure functions on NumPy arrays.

Every point is in world coordinates (LPS millimetres, see :mod:`nnlandmark.geometry`),
so distances are plain Euclidean norms: no voxel spacing enters anywhere.

Arrays follow one layout: ``(N, L, 3)`` points for N cases and L landmarks, with
NaN rows for landmarks that have no point (absent, unknown or not mentioned).
Error tables are ``(N, L)`` with NaN where no error can be computed.

Conventions
-----------
* A detection succeeds at threshold ``t`` when ``error <= t`` (the boundary counts
  as a success).
* Standard deviations are population standard deviations (``ddof=0``): the
  spread of the errors actually observed, not an estimate for a larger population.
  A single valid error therefore has std 0.
* Statistics over an empty set are NaN (written as ``null`` in JSON) rather than 0,
  so that "no data" is never mistaken for "perfect".
* Missing points are never silently dropped: every summary carries
  ``n_valid``, ``n_missing`` and, when the masks are given,
  ``missing_in_prediction`` / ``missing_in_reference`` counts.

Examples
--------
>>> import numpy as np
>>> pred = np.array([[[0.0, 0.0, 0.0], [3.0, 4.0, 0.0]]])
>>> ref = np.zeros((1, 2, 3))
>>> radial_errors(pred, ref)
array([[0., 5.]])
>>> s = summarize_errors(radial_errors(pred, ref), thresholds=(2.0, 5.0))
>>> s["overall"]["mre_mm"], s["overall"]["sdr"]
(2.5, {'2': 0.5, '5': 1.0})
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

DEFAULT_THRESHOLDS_MM = (2.0, 2.5, 3.0, 4.0)


def threshold_key(threshold: float) -> str:
    """The string key under which a threshold's SDR is stored (``2.0 -> '2'``, ``2.5 -> '2.5'``).

    Examples
    --------
    >>> threshold_key(2.0), threshold_key(2.5)
    ('2', '2.5')
    """
    return f"{float(threshold):g}"


def _as_points(points, name: str) -> np.ndarray:
    points = np.asarray(points, dtype=float)
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (N cases, L landmarks, 3), got {points.shape}")
    return points


def radial_errors(pred, ref) -> np.ndarray:
    """Euclidean distance in mm between predicted and reference world points.

    Parameters
    ----------
    pred, ref : array_like, shape (N, L, 3)
        World points (LPS mm) of N cases and L landmarks; NaN rows mark missing points.

    Returns
    -------
    errors : ndarray, shape (N, L)
        ``||pred - ref||``; NaN where either point has a NaN coordinate.

    Examples
    --------
    >>> import numpy as np
    >>> pred = np.array([[[1.0, 2.0, 2.0], [np.nan] * 3]])
    >>> ref = np.zeros((1, 2, 3))
    >>> radial_errors(pred, ref)
    array([[ 3., nan]])
    """
    pred = _as_points(pred, "pred")
    ref = _as_points(ref, "ref")
    if pred.shape != ref.shape:
        raise ValueError(f"pred and ref shapes differ: {pred.shape} vs {ref.shape}")
    # NaN propagates through the norm, so a missing coordinate yields a NaN error
    return np.linalg.norm(pred - ref, axis=-1)


def success_detection_rate(errors, thresholds) -> np.ndarray:
    """Fraction of valid (non-NaN) errors with ``error <= t``, for each threshold ``t``.

    Parameters
    ----------
    errors : array_like
        Errors in mm, any shape; NaN entries are left out of numerator and denominator.
    thresholds : array_like, shape (T,)
        Thresholds in mm.

    Returns
    -------
    sdr : ndarray, shape (T,)
        Success rates in [0, 1]; NaN for every threshold when no error is valid.

    Examples
    --------
    >>> success_detection_rate([1.0, 2.0, 3.0, float("nan")], [2.0, 2.5])
    array([0.66666667, 0.66666667])
    """
    errors = np.asarray(errors, dtype=float).ravel()
    errors = errors[~np.isnan(errors)]
    thresholds = np.atleast_1d(np.asarray(thresholds, dtype=float))
    if errors.size == 0:
        return np.full(thresholds.shape, np.nan)
    return (errors[None, :] <= thresholds[:, None]).mean(axis=1)


def _stats(values: np.ndarray, thresholds: np.ndarray) -> dict:
    """mean/std/median/max/SDR of the non-NaN entries of ``values``."""
    values = np.asarray(values, dtype=float).ravel()
    valid = values[~np.isnan(values)]
    n = int(valid.size)
    nan = float("nan")
    sdr = success_detection_rate(valid, thresholds)
    return {
        "mre_mm": float(valid.mean()) if n else nan,
        "std_mm": float(valid.std(ddof=0)) if n else nan,
        "median_mm": float(np.median(valid)) if n else nan,
        "max_mm": float(valid.max()) if n else nan,
        "sdr": {threshold_key(t): float(s) for t, s in zip(thresholds, sdr)},
        "n_valid": n,
        "n_missing": int(values.size - n),
    }


def _check_mask(mask, shape, name: str) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {mask.shape}")
    return mask


def summarize_errors(errors, thresholds=DEFAULT_THRESHOLDS_MM, *, landmark_names=None,
                     case_ids=None, missing_in_prediction=None,
                     missing_in_reference=None) -> dict:
    """Summary statistics of a table of radial errors.

    Parameters
    ----------
    errors : array_like, shape (N, L)
        Radial errors in mm (see :func:`radial_errors`); NaN marks a missing error.
    thresholds : sequence of float
        SDR thresholds in mm; a detection with ``error <= t`` is a success.
    landmark_names : sequence of str, optional
        Names of the L columns; defaults to ``"0"``, ``"1"``, ...
    case_ids : sequence of str, optional
        Names of the N rows; defaults to ``"0"``, ``"1"``, ...
    missing_in_prediction, missing_in_reference : array_like of bool, shape (N, L), optional
        Where the prediction / the reference has no point. The two may overlap;
        each is counted on its own. Without them only ``n_missing`` (NaN errors) is
        reported.

    Returns
    -------
    summary : dict
        ``thresholds_mm``: the thresholds as floats.

        ``overall``: micro statistics over every valid (case, landmark) error:
        ``mre_mm`` (mean), ``std_mm`` (population std, ``ddof=0``), ``median_mm``,
        ``max_mm``, ``sdr`` (``{threshold_key(t): fraction}``), ``n_valid``,
        ``n_missing`` and, when the masks are given, ``missing_in_prediction`` and
        ``missing_in_reference``.

        ``per_landmark``: ``{name: same keys as overall}`` over that column.

        ``per_case``: ``{case: {"mre_mm", "n_valid", "n_missing", ...}}`` over that row.

    Examples
    --------
    >>> import numpy as np
    >>> errors = np.array([[1.0, 2.0], [3.0, np.nan]])
    >>> s = summarize_errors(errors, thresholds=[2.0], landmark_names=["a", "b"])
    >>> s["overall"]["mre_mm"], s["overall"]["n_missing"], s["overall"]["sdr"]
    (2.0, 1, {'2': 0.6666666666666666})
    >>> s["per_landmark"]["a"]["mre_mm"], s["per_landmark"]["b"]["n_valid"]
    (2.0, 1)
    >>> s["per_case"]["1"]["mre_mm"]
    3.0
    """
    errors = np.asarray(errors, dtype=float)
    if errors.ndim != 2:
        raise ValueError(f"errors must have shape (N cases, L landmarks), got {errors.shape}")
    n_cases, n_landmarks = errors.shape
    thresholds = np.atleast_1d(np.asarray(thresholds, dtype=float))
    landmark_names = [str(i) for i in range(n_landmarks)] if landmark_names is None else list(landmark_names)
    case_ids = [str(i) for i in range(n_cases)] if case_ids is None else list(case_ids)
    if len(landmark_names) != n_landmarks or len(case_ids) != n_cases:
        raise ValueError(f"{len(case_ids)} case ids and {len(landmark_names)} landmark names "
                         f"for an errors table of shape {errors.shape}")
    miss_pred = _check_mask(missing_in_prediction, errors.shape, "missing_in_prediction")
    miss_ref = _check_mask(missing_in_reference, errors.shape, "missing_in_reference")

    def add_missing(stats: dict, index) -> dict:
        if miss_pred is not None:
            stats["missing_in_prediction"] = int(miss_pred[index].sum())
        if miss_ref is not None:
            stats["missing_in_reference"] = int(miss_ref[index].sum())
        return stats

    overall = add_missing(_stats(errors, thresholds), (slice(None), slice(None)))
    per_landmark = {
        name: add_missing(_stats(errors[:, j], thresholds), (slice(None), j))
        for j, name in enumerate(landmark_names)
    }
    per_case = {}
    for i, case in enumerate(case_ids):
        row = _stats(errors[i], thresholds)
        per_case[case] = add_missing(
            {k: row[k] for k in ("mre_mm", "std_mm", "max_mm", "n_valid", "n_missing")}, (i, slice(None)))
    return {"thresholds_mm": [float(t) for t in thresholds], "overall": overall,
            "per_landmark": per_landmark, "per_case": per_case}


def landmark_distances(points, pairs: Mapping[str, Sequence[int]]) -> np.ndarray:
    """Distances in mm between landmark pairs of each case.

    Parameters
    ----------
    points : array_like, shape (N, L, 3)
        World points (LPS mm).
    pairs : mapping of str to (int, int)
        Measurement name -> landmark column indices ``(i, j)``.

    Returns
    -------
    distances : ndarray, shape (N, P)
        ``||points[:, i] - points[:, j]||`` per measurement in ``pairs`` order; NaN
        when either point is missing.

    Examples
    --------
    >>> import numpy as np
    >>> landmark_distances(np.array([[[0, 0, 0], [0, 3, 4.0]]]), {"d": (0, 1)})
    array([[5.]])
    """
    points = _as_points(points, "points")
    out = np.empty((points.shape[0], len(pairs)))
    for p, (i, j) in enumerate(pairs.values()):
        out[:, p] = np.linalg.norm(points[:, i] - points[:, j], axis=-1)
    return out


def biometry_errors(pred, ref, pairs: Mapping[str, Sequence[int]]) -> np.ndarray:
    """Absolute error of predicted biometric distances, in mm.

    The points are world coordinates, so the distance already is in mm; no voxel
    spacing factor is applied.

    Parameters
    ----------
    pred, ref : array_like, shape (N, L, 3)
        Predicted and reference world points (LPS mm).
    pairs : mapping of str to (int, int)
        Measurement name -> landmark column indices ``(i, j)``.

    Returns
    -------
    errors : ndarray, shape (N, P)
        ``| ||pred_i - pred_j|| - ||ref_i - ref_j|| |``; NaN when any of the four
        points is missing.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.array([[[0.0, 0, 0], [10.0, 0, 0]]])
    >>> pred = np.array([[[1.0, 0, 0], [12.0, 0, 0]]])
    >>> biometry_errors(pred, ref, {"length": (0, 1)})
    array([[1.]])
    """
    pred = _as_points(pred, "pred")
    ref = _as_points(ref, "ref")
    if pred.shape != ref.shape:
        raise ValueError(f"pred and ref shapes differ: {pred.shape} vs {ref.shape}")
    return np.abs(landmark_distances(pred, pairs) - landmark_distances(ref, pairs))


def summarize_biometry(errors, names: Sequence[str]) -> dict:
    """Per-measurement statistics of :func:`biometry_errors`.

    Parameters
    ----------
    errors : array_like, shape (N, P)
        Absolute distance errors in mm; NaN where a point was missing.
    names : sequence of str
        The P measurement names.

    Returns
    -------
    summary : dict
        ``{name: {"mean_mm", "std_mm" (ddof=0), "median_mm", "max_mm", "n_valid",
        "n_missing"}}``; statistics are NaN without a valid error.

    Examples
    --------
    >>> import numpy as np
    >>> s = summarize_biometry(np.array([[1.0], [3.0], [np.nan]]), ["d"])
    >>> s["d"]["mean_mm"], s["d"]["std_mm"], s["d"]["n_missing"]
    (2.0, 1.0, 1)
    """
    errors = np.asarray(errors, dtype=float)
    names = list(names)
    if errors.ndim != 2 or errors.shape[1] != len(names):
        raise ValueError(f"errors of shape {errors.shape} do not match {len(names)} measurement names")
    out = {}
    for p, name in enumerate(names):
        s = _stats(errors[:, p], np.empty(0))
        out[name] = {"mean_mm": s["mre_mm"], "std_mm": s["std_mm"], "median_mm": s["median_mm"],
                     "max_mm": s["max_mm"], "n_valid": s["n_valid"], "n_missing": s["n_missing"]}
    return out


def _ratio(num: int, den: int) -> float:
    return float(num / den) if den else float("nan")


def _confusion(pred: np.ndarray, ref: np.ndarray) -> dict:
    tp = int(np.sum(pred & ref))
    fp = int(np.sum(pred & ~ref))
    fn = int(np.sum(~pred & ref))
    tn = int(np.sum(~pred & ~ref))
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn), "n": tp + fp + fn + tn}


def presence_metrics(pred_present, ref_present, known=None, landmark_names=None) -> dict:
    """Confusion counts, precision, recall and F1 of landmark presence.

    "Positive" means *present*. A true positive is a landmark predicted present
    where the reference has it; the radial error (MRE) is only defined on true
    positives, which is where :func:`radial_errors` has both points.

    Parameters
    ----------
    pred_present : array_like of bool, shape (N, L)
        Whether the prediction places the landmark.
    ref_present : array_like of bool, shape (N, L)
        Whether the reference has the landmark (False = annotated absent).
    known : array_like of bool, shape (N, L), optional
        Where the reference state is known (present or absent). Unknown entries
        are left out of every count. Defaults to all known.
    landmark_names : sequence of str, optional
        Names of the L columns; defaults to ``"0"``, ``"1"``, ...

    Returns
    -------
    metrics : dict
        ``overall`` (pooled over all known entries) and ``per_landmark``
        ``{name: ...}``, each with ``tp``, ``fp``, ``fn``, ``tn``, ``n`` (known
        entries), ``precision = tp/(tp+fp)``, ``recall = tp/(tp+fn)`` and
        ``f1 = 2tp/(2tp+fp+fn)``. A ratio with a zero denominator is NaN
        (undefined), not 0.

    Examples
    --------
    >>> import numpy as np
    >>> pred = np.array([[True, True], [False, True]])
    >>> ref = np.array([[True, False], [True, True]])
    >>> m = presence_metrics(pred, ref)
    >>> m["overall"]["tp"], m["overall"]["fp"], m["overall"]["fn"], m["overall"]["f1"]
    (2, 1, 1, 0.6666666666666666)
    """
    pred = np.asarray(pred_present, dtype=bool)
    ref = np.asarray(ref_present, dtype=bool)
    if pred.ndim != 2 or pred.shape != ref.shape:
        raise ValueError(f"pred_present and ref_present must be (N, L) of equal shape, "
                         f"got {pred.shape} and {ref.shape}")
    known = np.ones(pred.shape, bool) if known is None else _check_mask(known, pred.shape, "known")
    names = [str(i) for i in range(pred.shape[1])] if landmark_names is None else list(landmark_names)
    if len(names) != pred.shape[1]:
        raise ValueError(f"{len(names)} landmark names for {pred.shape[1]} columns")
    per_landmark = {name: _confusion(pred[known[:, j], j], ref[known[:, j], j])
                    for j, name in enumerate(names)}
    return {"overall": _confusion(pred[known], ref[known]), "per_landmark": per_landmark}


def _scores_truth(scores, truth) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=float).ravel()
    truth = np.asarray(truth, dtype=bool).ravel()
    if scores.shape != truth.shape:
        raise ValueError(f"{scores.size} scores for {truth.size} truth values")
    if scores.size == 0:
        raise ValueError("no scores to calibrate on")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite")
    return scores, truth


def _counts_at_candidates(scores: np.ndarray, truth: np.ndarray):
    """TP/FP at every candidate threshold (the unique scores, ascending).

    A case is predicted present when ``score >= threshold``.
    """
    candidates = np.unique(scores)
    pos = np.sort(scores[truth])
    neg = np.sort(scores[~truth])
    # number of scores >= c is the count to the right of the left insertion point
    tp = pos.size - np.searchsorted(pos, candidates, side="left")
    fp = neg.size - np.searchsorted(neg, candidates, side="left")
    return candidates, tp, fp, int(pos.size), int(neg.size)


def calibrate_presence_threshold(scores, truth) -> float:
    """The score threshold that maximises F1 of "present" decisions.

    A landmark is predicted present when ``score >= threshold``. The candidates
    are the observed scores; among thresholds with equal best F1 the **lowest**
    is returned, so that a landmark is declared absent only when the data demand
    it (a missed landmark costs more than a spurious one in most uses).

    Parameters
    ----------
    scores : array_like of float
        Presence scores (e.g. heatmap peak values) of cross-validation predictions.
    truth : array_like of bool
        Whether the landmark is present in the reference, same length.

    Returns
    -------
    threshold : float

    Raises
    ------
    ValueError
        Without scores, with non-finite scores or when no reference is present
        (F1 is then 0 or undefined for every threshold).

    Examples
    --------
    >>> calibrate_presence_threshold([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
    0.35
    >>> calibrate_presence_threshold([0.2, 0.5, 0.9], [False, True, True])
    0.5
    """
    scores, truth = _scores_truth(scores, truth)
    if not truth.any():
        raise ValueError("cannot calibrate F1 without a single present reference")
    candidates, tp, fp, n_pos, _ = _counts_at_candidates(scores, truth)
    fn = n_pos - tp
    f1 = 2 * tp / (2 * tp + fp + fn)  # denominator >= n_pos > 0
    # argmax returns the first maximum, i.e. the lowest threshold among ties
    return float(candidates[int(np.argmax(f1))])


def youden_threshold(scores, truth) -> float:
    """The score threshold that maximises Youden's J = sensitivity + specificity - 1.

    Same rule and tie-breaking as :func:`calibrate_presence_threshold` (predicted
    present when ``score >= threshold``; the lowest of equally good observed
    scores). Unlike F1, J weighs absent and present landmarks equally, which
    suits rare absences.

    Raises
    ------
    ValueError
        Unless both present and absent references occur.

    Examples
    --------
    >>> youden_threshold([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
    0.35
    """
    scores, truth = _scores_truth(scores, truth)
    if truth.all() or not truth.any():
        raise ValueError("Youden's J needs both present and absent references")
    candidates, tp, fp, n_pos, n_neg = _counts_at_candidates(scores, truth)
    j = tp / n_pos - fp / n_neg
    return float(candidates[int(np.argmax(j))])
