"""The shape prior's training half: the mean shape and spread of the training cases.

Training fits it (:func:`fit_shape_prior`, stored per fold in the model's
description as ``shape_prior``), prediction uses it
(:mod:`nnlandmark.inference.shape`, which explains why it exists). It sits
in the model room, below both, with the similarity fit both use.

All points are world millimetres (ITK/LPS order); a shape is ``(L, 3)`` with
NaN rows for landmarks a case lacks.
"""
from __future__ import annotations

import numpy as np

__all__ = ["similarity_fit", "apply_similarity", "fit_shape_prior", "MIN_LANDMARKS"]

#: fewer landmarks than this say too little about each other: no prior
MIN_LANDMARKS = 4


def similarity_fit(source, target, weights=None) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``target ~ scale * R @ source + t`` (Umeyama 1991), each pair of
    points weighted by ``weights`` (default equal).

    Parameters
    ----------
    source, target : array_like
        ``(N, 3)`` corresponding points, ``N >= 3``.
    weights : array_like, optional
        ``(N,)`` non-negative weights of the pairs.

    Returns
    -------
    scale, rotation, translation
        ``rotation`` is a proper rotation (det +1). Points that all lie in one plane
        normal to a world axis in both sets (a 2D image's, z = 0) are fitted by a rotation
        about that axis: a 3D rotation could otherwise turn the plane over, mirroring the
        shape within it (left-right swapped on a radiograph).

    Examples
    --------
    >>> src = np.array([[0., 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    >>> rot = np.array([[0., -1, 0], [1, 0, 0], [0, 0, 1]])  # 90 degrees about z
    >>> s, r, t = similarity_fit(src, 2 * src @ rot.T + [5, 0, 0])
    >>> round(s, 6), np.allclose(r, rot), np.allclose(t, [5, 0, 0])
    (2.0, True, True)
    >>> flat = np.array([[0., 0, 0], [2, 0, 0], [0, 1, 0]])  # in the plane z = 0
    >>> s, r, t = similarity_fit(flat, flat * [1, -1, 1])  # its mirror image: no rotation gives it
    >>> float(r[2, 2]), bool(np.linalg.det(r[:2, :2]) > 0)  # turned within the plane, never over
    (1.0, True)
    """
    source, target = np.asarray(source, dtype=np.float64), np.asarray(target, dtype=np.float64)
    w = np.ones(len(source)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mu_s, mu_t = w @ source, w @ target
    a, b = source - mu_s, target - mu_t
    var_s = float(w @ (a ** 2).sum(axis=1))
    if var_s <= 0:
        return 1.0, np.eye(3), mu_t - mu_s
    extent = max(float(np.abs(a).max()), float(np.abs(b).max()))
    flat = [k for k in range(3) if np.abs(a[:, k]).max() <= 1e-9 * extent and np.abs(b[:, k]).max() <= 1e-9 * extent]
    axes = [k for k in range(3) if k not in flat] if len(flat) == 1 else list(range(3))
    u, d, vt = np.linalg.svd((b[:, axes] * w[:, None]).T @ a[:, axes])
    sign = np.ones(len(axes))
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rotation = np.eye(3)
    rotation[np.ix_(axes, axes)] = u @ np.diag(sign) @ vt
    scale = float((d * sign).sum() / var_s)
    return scale, rotation, mu_t - scale * rotation @ mu_s


def apply_similarity(transform, points) -> np.ndarray:
    """``scale * R @ p + t`` for each row ``p`` of ``points``."""
    scale, rotation, translation = transform
    return scale * np.asarray(points, dtype=np.float64) @ rotation.T + translation


def fit_shape_prior(shapes, iterations: int = 10) -> dict | None:
    """Mean shape and per-landmark spread of training shapes after similarity alignment.

    Parameters
    ----------
    shapes : array_like
        ``(cases, L, 3)`` world points, NaN where a case lacks a landmark.

    Returns
    -------
    dict or None
        ``{"mean_mm": (L, 3) list, "spread_mm": (L,) list, "cases": n}``: the
        spread is the root-mean-square distance of the aligned cases' points
        from the mean. None when fewer than :data:`MIN_LANDMARKS` landmarks or
        fewer than 2 usable cases.

    Examples
    --------
    >>> base = np.array([[0., 0, 0], [40, 0, 0], [0, 30, 0], [0, 0, 20], [20, 20, 20]])
    >>> rng = np.random.default_rng(0)
    >>> cases = []
    >>> for _ in range(10):  # random poses of one shape, with 1 mm of noise
    ...     q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    ...     q *= np.sign(np.linalg.det(q))
    ...     cases.append(base @ q.T + rng.normal(size=3) * 50 + rng.normal(size=base.shape))
    >>> prior = fit_shape_prior(cases)
    >>> prior["cases"], np.round(prior["spread_mm"], 1).tolist()  # about 1 mm per axis (less: 5 points fit 7 parameters)
    (10, [1.4, 0.9, 1.0, 1.4, 1.3])
    """
    shapes = np.asarray(shapes, dtype=np.float64)
    if shapes.ndim != 3 or shapes.shape[1] < MIN_LANDMARKS:
        return None
    usable = [s for s in shapes if np.isfinite(s).all(axis=1).sum() >= MIN_LANDMARKS]
    if len(usable) < 2:
        return None

    def centroid_size(shape):
        known = shape[np.isfinite(shape).all(axis=1)]
        return np.sqrt(((known - known.mean(axis=0)) ** 2).sum(axis=1).mean())

    # the millimetres of the cases themselves: a mean of shapes in different poses is smaller than any of them
    size = float(np.mean([centroid_size(s) for s in usable]))
    mean = max(usable, key=lambda s: np.isfinite(s).all(axis=1).sum())  # the most complete case to start
    aligned = np.full((len(usable), *mean.shape), np.nan)
    for _ in range(iterations):
        for c, shape in enumerate(usable):
            known = np.isfinite(shape).all(axis=1)
            common = known & np.isfinite(mean).all(axis=1)
            transform = similarity_fit(shape[common], mean[common])
            aligned[c, known] = apply_similarity(transform, shape[known])
        with np.errstate(invalid="ignore"):
            mean = np.nanmean(aligned, axis=0)
        if not np.isfinite(mean).all():  # a landmark no case has
            return None
        centred = mean - mean.mean(axis=0)
        mean = centred * size / centroid_size(centred)
    squared = ((aligned - mean) ** 2).sum(axis=2)
    spread = np.sqrt(np.nanmean(squared, axis=0))
    return {"mean_mm": mean.round(4).tolist(), "spread_mm": spread.round(4).tolist(), "cases": len(usable)}
