"""Saying when a prediction is lost: too many landmarks whose spread is far above the usual.

A model shown a scan unlike its training scans (another contrast, another
anatomy) does not fail quietly in its outputs: each landmark's
``uncertainty_mm`` (:mod:`nnlandmark.inference.uncertainty`) grows, about
12-fold on the AFIDs template in an unseen contrast. A landmark is *uncertain*
when its ``uncertainty_mm`` exceeds its threshold; a case is *lost* when more
than ``max_share`` of its landmarks are uncertain. One uncertain landmark is
news about that landmark (its radius says how far off it may be); many at
once are news about the scan.

The rule (a dict, stored in the model's ``nnlandmark.json`` as
``lost_calibration`` by ``evaluate-cv``):

``thresholds_mm``
    ``{name: mm}``. Calibrated: :data:`MARGIN` times the 95th percentile of
    the landmark's ``uncertainty_mm`` over the cross-validation predictions
    (cases like the training cases, predicted by a model that did not see
    them), so that hardly any such case has an uncertain landmark, and a
    spread well beyond anything seen there is one. Default (an uncalibrated
    model): :data:`DEFAULT_VOXELS` voxels of the first stage's grid (the
    global stage of a cascade, the coarsest) for every landmark: a landmark is
    uncertain when its spread is more than the stage that sees the whole scan
    could resolve. Not the final stage's voxels: a cascade's local voxels are
    so fine that the anatomy's own ambiguity spreads over several of them (on
    ISBI 2015 cephalograms, 0.21 mm local voxels and spreads of 1-3 mm on
    correct points: every test case was "lost" under that rule; at 2 of the
    1.68 mm global voxels none was, and the unseen contrast's 12-fold growth
    still clears it).
``max_share``
    Calibrated: the largest share of uncertain landmarks in any
    cross-validation case, at least :data:`MIN_SHARE`; default
    :data:`DEFAULT_SHARE`.

Landmarks written absent are never uncertain (they have no point to doubt).

Examples
--------
>>> rule = default_rule(["a", "b", "c", "d"], voxel_mm=1.5)
>>> rule["thresholds_mm"]["a"], rule["max_share"]
(3.0, 0.5)
>>> lost_state({"a": 9.0, "b": 8.0, "c": 7.0, "d": 0.5}, rule)
{'uncertain': ['a', 'b', 'c'], 'n_uncertain': 3, 'n_landmarks': 4, 'lost': True}
>>> warning_line("case_7", lost_state({"a": 9.0, "b": 8.0, "c": 7.0, "d": 0.5}, rule))
'case case_7: 3 of 4 landmarks uncertain; the scan may differ from the training scans'
"""
from __future__ import annotations

import numpy as np

#: ``nnlandmark.json`` key of the calibrated rule
LOST_KEY = "lost_calibration"
#: default threshold, in voxels of the first (coarsest) stage's grid (times their mean size in mm)
DEFAULT_VOXELS = 2.0
#: default largest share of uncertain landmarks in a case that is not lost
DEFAULT_SHARE = 0.5
#: the calibrated share is never below this: a few uncertain landmarks are news about them, not the scan
MIN_SHARE = 0.25
#: calibrated threshold = MARGIN x the 95th percentile of a landmark's cross-validation spreads
MARGIN = 2.0
QUANTILE = 0.95


def default_rule(names, voxel_mm: float) -> dict:
    """The rule of an uncalibrated model whose first stage has voxels of ``voxel_mm`` (mean size)."""
    threshold = round(DEFAULT_VOXELS * float(voxel_mm), 4)
    return {"thresholds_mm": {n: threshold for n in names}, "max_share": DEFAULT_SHARE,
            "source": f"default: uncertain above {DEFAULT_VOXELS:g} voxels of the first stage "
                      f"({threshold:g} mm); lost above {DEFAULT_SHARE:g} of the landmarks"}


def lost_state(spreads: dict, rule: dict, present: dict | None = None) -> dict:
    """Which landmarks of one case are uncertain, and whether the case is lost.

    ``spreads`` is ``{name: uncertainty_mm}`` (None or NaN: not uncertain), ``present``
    ``{name: bool}`` (absent landmarks are never uncertain). A landmark without a threshold
    in the rule is never uncertain but counts in the total.

    >>> rule = {"thresholds_mm": {"a": 1.0, "b": 1.0}, "max_share": 0.5}
    >>> lost_state({"a": 2.0, "b": 0.1}, rule)["lost"]  # one of two: not more than half
    False
    >>> lost_state({"a": 2.0, "b": 3.0}, rule, present={"a": True, "b": False})["uncertain"]
    ['a']
    """
    present = present or {}
    thresholds = rule.get("thresholds_mm") or {}
    uncertain = [n for n, u in spreads.items()
                 if present.get(n, True) and u is not None and np.isfinite(u) and n in thresholds
                 and thresholds[n] is not None and u > thresholds[n]]
    total = len(spreads)
    return {"uncertain": uncertain, "n_uncertain": len(uncertain), "n_landmarks": total,
            "lost": total > 0 and len(uncertain) / total > float(rule.get("max_share", DEFAULT_SHARE))}


def warning_line(case: str, state: dict) -> str:
    """The one line a lost case gets."""
    return (f"case {case}: {state['n_uncertain']} of {state['n_landmarks']} landmarks uncertain; "
            "the scan may differ from the training scans")


def calibrate_lost_rule(spreads: dict, fallback_mm: float | None = None) -> dict:
    """The rule from cross-validation spreads: ``spreads`` is ``{name: (n_cases,) uncertainty_mm}``
    (NaN where the landmark has no point), the cases in the same order for every name.

    A landmark with no finite spread keeps ``fallback_mm`` (None: never uncertain).

    >>> rule = calibrate_lost_rule({"a": np.array([1.0, 1.0, 2.0]), "b": np.array([0.5, 4.0, 0.5])})
    >>> rule["thresholds_mm"]  # 2 x the 95th percentile
    {'a': 3.8, 'b': 7.3}
    >>> rule["max_share"], rule["max_share_seen"]  # no case has an uncertain landmark: the floor
    (0.25, 0.0)
    """
    names = list(spreads)
    thresholds = {}
    for name in names:
        values = np.asarray(spreads[name], dtype=float)
        values = values[np.isfinite(values)]
        thresholds[name] = (round(MARGIN * float(np.quantile(values, QUANTILE)), 4) if values.size
                            else fallback_mm)
    rule = {"thresholds_mm": thresholds}
    n_cases = max((len(v) for v in spreads.values()), default=0)
    shares = []
    for c in range(n_cases):
        case = {n: float(spreads[n][c]) for n in names if c < len(spreads[n])}
        shares.append(lost_state(case, {**rule, "max_share": 1.0})["n_uncertain"] / max(1, len(names)))
    seen = max(shares, default=0.0)
    rule.update({"max_share": max(MIN_SHARE, seen), "max_share_seen": seen, "n_cases": n_cases,
                 "source": f"cross-validation: uncertain above {MARGIN:g} x the {100 * QUANTILE:g}th percentile "
                           f"of the landmark's uncertainty_mm; lost above the largest share of uncertain "
                           f"landmarks in a cross-validation case, at least {MIN_SHARE:g}"})
    return rule
