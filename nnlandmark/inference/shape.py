"""A shape prior that catches a landmark the global stage put far from the others.

An undertrained global stage (a short CPU budget) can place one landmark
channel somewhere else entirely, in every case (on the AFIDs template at 4
minutes: PMJ about 60 mm off in all 8 test cases, every other landmark near
1 mm). The local stage cannot recover: its patch is centred on the wrong
place. Where the landmarks are together, the others say where the lost one
should be.

At training time, :func:`~nnlandmark.model.shape.fit_shape_prior` aligns the training cases' points
with similarity transforms (generalised Procrustes) and keeps their mean shape
and, per landmark, the spread about it. At prediction time,
:func:`expected_positions` fits the mean shape to the global stage's points
robustly (least median of squares over triples, then least squares on the
inliers), and :func:`shape_outliers` flags a landmark whose point is farther
from its expected position than both 4 spreads and the distance the local
stage can correct (half its patch). The caller then looks for the landmark
again near its expected position. Similarity transforms (rotation,
translation, isotropic scale) carry no assumption about pose, so scans in any
orientation are handled alike.

All points are world millimetres (ITK/LPS order); a shape is ``(L, 3)`` with
NaN rows for landmarks a case lacks.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np

from nnlandmark.model.shape import MIN_LANDMARKS, apply_similarity, fit_shape_prior, similarity_fit

__all__ = ["similarity_fit", "apply_similarity", "fit_shape_prior", "expected_positions", "shape_outliers",
           "MIN_LANDMARKS"]

#: how many spreads of the training shapes a point may lie from its expected position
SPREADS = 4.0


def expected_positions(points, mean, trials: int = 300, seed: int = 0) -> np.ndarray:
    """Where the mean shape puts each landmark, fitted robustly to ``points``.

    Least median of squares: the similarity through each of up to ``trials``
    triples of landmarks (every triple when there are fewer) is scored by the
    median distance of all landmarks from their transformed mean position; the
    best one's closer half (and every landmark within twice its median) is
    refitted by least squares. Up to half the landmarks may be anywhere.

    Examples
    --------
    >>> mean = np.array([[0., 0, 0], [40, 0, 0], [0, 30, 0], [0, 0, 20], [20, 20, 20], [10, 5, 30]])
    >>> found = mean + [100, 0, 0]
    >>> found[2] += [0, 0, 60]  # one landmark lost
    >>> (np.round(expected_positions(found, mean)[2], 3) + 0.0).tolist()  # + 0.0: -0.0 prints as 0.0
    [100.0, 30.0, 0.0]
    """
    points, mean = np.asarray(points, dtype=np.float64), np.asarray(mean, dtype=np.float64)
    n = len(points)
    every = list(combinations(range(n), 3))
    rng = np.random.default_rng(seed)
    triples = every if len(every) <= trials else [every[i] for i in rng.choice(len(every), trials, replace=False)]
    best, best_score = None, np.inf
    for triple in triples:
        triple = list(triple)
        span = np.linalg.svd(mean[triple] - mean[triple].mean(axis=0), compute_uv=False)
        if span[1] < 1e-6 * max(span[0], 1e-12):  # collinear: the rotation about their line is free
            continue
        transform = similarity_fit(mean[triple], points[triple])
        residual = np.linalg.norm(apply_similarity(transform, mean) - points, axis=1)
        score = np.median(residual)
        if score < best_score:
            best, best_score = residual, score
    if best is None:
        return np.full_like(points, np.nan)
    inliers = best <= max(np.sort(best)[(n - 1) // 2], 2 * best_score)
    return apply_similarity(similarity_fit(mean[inliers], points[inliers]), mean)


def shape_outliers(points, expected, spread, floor_mm: float) -> np.ndarray:
    """Landmarks whose point lies farther from its expected position than
    ``max(SPREADS * spread, floor_mm)`` (``(L,)`` bool; NaN expectations are never outliers).

    >>> shape_outliers([[0., 0, 0], [30, 0, 0]], [[1., 0, 0], [0, 0, 0]], [1.0, 1.0], floor_mm=10)
    array([False,  True])
    """
    distance = np.linalg.norm(np.asarray(points, dtype=np.float64) - np.asarray(expected, dtype=np.float64), axis=1)
    limit = np.maximum(SPREADS * np.asarray(spread, dtype=np.float64), float(floor_mm))
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(distance, nan=0.0) > limit
