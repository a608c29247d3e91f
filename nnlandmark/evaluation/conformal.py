"""Split-conformal calibration of the predicted uncertainty, and the coverage a test set shows.

Calibration (``nnlandmark evaluate-cv``)
----------------------------------------
Each cross-validation prediction of a landmark whose reference is present
gives a nonconformity score, its radial error over its raw spread
(``uncertainty_mm``, :mod:`nnlandmark.inference.uncertainty`):

.. math:: s_i = r_i / u_i

For a stated coverage ``C`` (0.95 by default) the scale ``q`` is the
``k``-th smallest of the ``n`` scores, ``k = ceil((n + 1) C)``
(:func:`conformal_quantile`). If the calibration cases and a new case are
exchangeable, the new case's score is below ``q`` with probability at least
``C``, i.e. its true landmark lies within ``radius = q * u`` of the predicted
point (Vovk et al. 2005; Angelopoulos & Bates, "A gentle introduction to
conformal prediction", 2021). The ``+ 1`` counts the new case itself among the
``n + 1``; without it (``ceil(n C)``) the coverage falls short by up to
``1 / (n + 1)``. When ``k > n`` no finite radius has that guarantee and the
scale is None: at 95 % that needs at least 19 scores.

Each landmark gets its own scale when it has at least ``min_cases`` scores
(and enough for a finite quantile): its radii then hold ``C`` for that
landmark. Landmarks with fewer fall back to the scale of all landmarks' scores
pooled, which holds ``C`` on average over those landmarks, not for each one.

What the guarantee does not cover: cases unlike the calibration cases (another
scanner, contrast or pose range: the AFIDs benchmark shows how coverage breaks
in an unseen contrast), and a model used differently from how it was
calibrated. Cross-validation predicts with one fold at a time; an ensemble of
folds is usually more accurate, so its radii tend to be conservative, but that
is not guaranteed. Two more reasons a test set can fall short: the validation
cases of a fold also chose its checkpoint (the lowest validation loss), which
makes their errors a little optimistic; and the points of one case are not
independent (one hard scan makes all its landmarks hard), so a few cases hold
less information than their number of points suggests (AFIDs template, 5
calibration cases x 32 landmarks: 93 % observed on the T1w test cases for a
95 % target, ``benchmarks/afids_template/run_uncertainty.py``).

Coverage on a test set (``nnlandmark evaluate``)
------------------------------------------------
:func:`coverage_summary`: of the reference points that are present and whose
prediction carries a radius, the fraction within that radius, overall and per
landmark; present reference points without a radius (the landmark predicted
absent) are counted separately.
"""
from __future__ import annotations

import math

import numpy as np

from nnlandmark.data.formats.json_formats import read_prediction_record
from nnlandmark.errors import InvalidInput

__all__ = ["MIN_CASES_PER_LANDMARK", "conformal_quantile", "nonconformity", "calibrate_scales",
           "coverage_summary", "record_values", "format_coverage"]

#: fewer scores than this per landmark and the landmark uses the pooled scale
MIN_CASES_PER_LANDMARK = 20


def _check_coverage(coverage) -> float:
    coverage = float(coverage)
    if not 0.0 < coverage < 1.0:
        raise InvalidInput(f"--coverage: a fraction in (0, 1) such as 0.95, got {coverage:g}")
    return coverage


def _rank(n: int, coverage: float) -> int:
    """``ceil((n + 1) coverage)``, robust to (n + 1) * coverage landing a hair above an integer."""
    return math.ceil((n + 1) * coverage - 1e-9)


def conformal_quantile(scores, coverage: float) -> float:
    """The split-conformal quantile: the ``ceil((n + 1) coverage)``-th smallest score.

    Parameters
    ----------
    scores : array_like
        Nonconformity scores of the calibration cases; NaN are left out.
    coverage : float
        Wanted coverage ``1 - alpha``, in (0, 1).

    Returns
    -------
    float
        ``inf`` when ``ceil((n + 1) coverage) > n`` (too few scores for any
        finite bound with that guarantee, e.g. n < 19 at 0.95).

    Examples
    --------
    >>> conformal_quantile(np.arange(1.0, 20.0), 0.95)   # n = 19: k = ceil(20 * 0.95) = 19, the largest
    19.0
    >>> conformal_quantile(np.arange(1.0, 19.0), 0.95)   # n = 18: k = 19 > n
    inf
    >>> conformal_quantile([3.0, 1.0, 2.0, np.nan], 0.5)  # k = ceil(4 * 0.5) = 2
    2.0
    """
    coverage = _check_coverage(coverage)
    scores = np.asarray(scores, dtype=np.float64).ravel()
    scores = scores[~np.isnan(scores)]
    k = _rank(scores.size, coverage)
    if k > scores.size:
        return math.inf
    return float(np.partition(scores, k - 1)[k - 1])


def nonconformity(errors_mm, spreads_mm) -> np.ndarray:
    """``error / spread``; NaN where either is NaN, inf for a positive error with zero spread.

    >>> nonconformity([1.0, 2.0, 0.0, np.nan, 1.0], [0.5, 4.0, 0.0, 1.0, 0.0]).tolist()
    [2.0, 0.5, 0.0, nan, inf]
    """
    errors = np.asarray(errors_mm, dtype=np.float64)
    spreads = np.asarray(spreads_mm, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = errors / spreads
    # a perfect point with no spread conforms perfectly (0/0); a negative spread is no spread
    scores = np.where((errors == 0) & (spreads == 0), 0.0, scores)
    return np.where(spreads < 0, np.nan, scores)


def _scale_or_none(q: float):
    return float(q) if math.isfinite(q) else None


def calibrate_scales(errors: dict, spreads: dict, coverage: float = 0.95,
                     min_cases: int = MIN_CASES_PER_LANDMARK) -> dict:
    """Per-landmark conformal scales, with a pooled fallback (module notes).

    Parameters
    ----------
    errors, spreads : dict of str to array_like
        Per landmark name, the radial errors (mm) of the calibration
        predictions and their raw spreads (mm), aligned; pairs with a NaN are
        left out (no reference, no prediction, or no spread).
    coverage : float
        Wanted coverage in (0, 1).
    min_cases : int
        Fewest scores for a landmark's own scale.

    Returns
    -------
    dict
        ``coverage``; ``scale`` ``{name: q or None}``; ``source`` ``{name:
        "landmark" | "pooled"}``; ``n`` ``{name: scores}``; ``pooled_scale``;
        ``n_pooled``; ``min_cases``. JSON-ready (None for no finite scale).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> e = {"a": rng.random(40), "b": rng.random(5)}
    >>> s = {"a": np.ones(40), "b": np.ones(5)}
    >>> c = calibrate_scales(e, s, coverage=0.9)
    >>> c["source"], c["n"], c["n_pooled"]
    ({'a': 'landmark', 'b': 'pooled'}, {'a': 40, 'b': 5}, 45)
    >>> c["scale"]["a"] == conformal_quantile(e["a"], 0.9)
    True
    """
    coverage = _check_coverage(coverage)
    scores = {}
    for name in errors:
        score = nonconformity(errors[name], spreads[name]).ravel()
        scores[name] = score[~np.isnan(score)]
    pooled = np.concatenate(list(scores.values())) if scores else np.zeros(0)
    pooled_scale = _scale_or_none(conformal_quantile(pooled, coverage))
    # a landmark's own scale needs min_cases scores and enough of them for a finite quantile
    needed = max(int(min_cases), _rank_min_n(coverage))
    scale, source = {}, {}
    for name, score in scores.items():
        if score.size >= needed:
            scale[name], source[name] = _scale_or_none(conformal_quantile(score, coverage)), "landmark"
        else:
            scale[name], source[name] = pooled_scale, "pooled"
    return {"coverage": coverage, "scale": scale, "source": source,
            "n": {name: int(score.size) for name, score in scores.items()},
            "pooled_scale": pooled_scale, "n_pooled": int(pooled.size), "min_cases": needed}


def _rank_min_n(coverage: float) -> int:
    """The fewest scores with a finite conformal quantile: the least n with ceil((n + 1) C) <= n.

    >>> _rank_min_n(0.95), _rank_min_n(0.9)
    (19, 9)
    """
    n = 1
    while _rank(n, coverage) > n:
        n += 1
    return n


def coverage_summary(errors, radii, reference_present, landmark_names) -> dict:
    """Observed coverage of predicted radii on a test set.

    Parameters
    ----------
    errors : array_like, shape (N, L)
        Radial errors in mm (NaN without a predicted or reference point).
    radii : array_like, shape (N, L)
        Predicted radii in mm (NaN where the prediction has none).
    reference_present : array_like of bool, shape (N, L)
        Where the reference has the landmark.
    landmark_names : sequence of str
        The L names.

    Returns
    -------
    dict
        ``{"overall": row, "per_landmark": {name: row}}``, each row with
        ``n`` (present reference points), ``with_radius`` (of those, with a
        predicted point and radius), ``covered`` (of those, error <= radius),
        ``coverage`` (``covered / with_radius``, NaN when 0) and
        ``mean_radius_mm``.

    Examples
    --------
    >>> errors = np.array([[1.0, 3.0], [2.0, np.nan], [0.5, 1.0]])
    >>> radii = np.array([[1.0, 2.0], [1.5, np.nan], [1.0, 2.0]])
    >>> present = np.ones((3, 2), bool)
    >>> s = coverage_summary(errors, radii, present, ["a", "b"])
    >>> s["overall"]["covered"], s["overall"]["with_radius"], s["overall"]["n"], s["overall"]["coverage"]
    (3, 5, 6, 0.6)
    >>> s["per_landmark"]["b"]["coverage"], s["per_landmark"]["b"]["mean_radius_mm"]
    (0.5, 2.0)
    """
    errors = np.asarray(errors, dtype=np.float64)
    radii = np.asarray(radii, dtype=np.float64)
    present = np.asarray(reference_present, dtype=bool)
    with_radius = present & np.isfinite(errors) & np.isfinite(radii)
    covered = with_radius & (errors <= radii)  # an error exactly at the radius is covered, as SDR counts

    def row(columns) -> dict:
        m = int(with_radius[:, columns].sum())
        k = int(covered[:, columns].sum())
        return {"n": int(present[:, columns].sum()), "with_radius": m, "covered": k,
                "coverage": k / m if m else math.nan,
                "mean_radius_mm": float(radii[:, columns][with_radius[:, columns]].mean()) if m else math.nan}

    return {"overall": row(slice(None)),
            "per_landmark": {name: row([j]) for j, name in enumerate(landmark_names)}}


def record_values(files: dict, case_ids, landmark_names, key: str) -> np.ndarray:
    """``(N, L)`` values of one field of the predictor's ``<case>.json`` records; NaN where absent or null.

    ``files`` maps a case to its prediction file; files that are not the
    predictor's JSON records (Slicer files, our landmark JSON, CSV) give NaN.
    """
    values = np.full((len(case_ids), len(landmark_names)), np.nan)
    for i, case in enumerate(case_ids):
        record = read_prediction_record(files[case])
        if record is None:
            continue
        for j, name in enumerate(landmark_names):
            entry = record.get(name)
            value = entry.get(key) if isinstance(entry, dict) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values[i, j] = float(value)
    return values


def radius_keys(files: dict) -> list:
    """The calibrated-radius fields (``radius_95_mm``, ...) that the prediction records carry a value for."""
    from nnlandmark.inference.uncertainty import coverage_of_key
    keys = set()
    for path in files.values():
        for entry in (read_prediction_record(path) or {}).values():
            if isinstance(entry, dict):
                keys.update(k for k, v in entry.items() if v is not None and coverage_of_key(k) is not None)
    return sorted(keys)


def format_coverage(coverage: dict) -> str:
    """The coverage section of the printed evaluation: one line, then a table per landmark.

    Examples
    --------
    >>> s = coverage_summary([[1.0, 3.0]], [[1.0, 2.0]], [[True, True]], ["a", "b"])
    >>> s["radius"], s["target"] = "radius_95_mm", 0.95
    >>> print(format_coverage(s))
    Coverage of radius_95_mm (target 95%): 50.0% of 2 present reference points within the predicted radius
    landmark  n  covered  coverage  mean radius (mm)
    --------  -  -------  --------  ----------------
    a         1        1    100.0%              1.00
    b         1        0      0.0%              2.00
    ALL       2        1     50.0%              1.50
    """
    overall = coverage["overall"]
    target = coverage.get("target")
    missing = overall["n"] - overall["with_radius"]
    line = (f"Coverage of {coverage.get('radius', 'the radius')}"
            + (f" (target {100 * target:g}%)" if target is not None else "")
            + f": {_pct(overall['coverage'])} of {overall['with_radius']} present reference points within the "
              "predicted radius"
            + (f" ({missing} more without a predicted radius)" if missing else ""))
    rows = [[name, r["with_radius"], r["covered"], _pct(r["coverage"]), _mm(r["mean_radius_mm"])]
            for name, r in coverage["per_landmark"].items()]
    rows.append(["ALL", overall["with_radius"], overall["covered"], _pct(overall["coverage"]),
                 _mm(overall["mean_radius_mm"])])
    headers = ["landmark", "n", "covered", "coverage", "mean radius (mm)"]
    widths = [max(len(str(r[c])) for r in [headers] + rows) for c in range(len(headers))]

    def fmt(cells):
        return "  ".join(str(v).ljust(w) if c == 0 else str(v).rjust(w)
                         for c, (v, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line, fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def _pct(value) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def _mm(value) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"
