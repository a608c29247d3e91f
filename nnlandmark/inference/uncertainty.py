"""How far from its predicted point a landmark may be: a raw spread, and a calibrated radius.

Two numbers per predicted landmark, both in world millimetres:

``uncertainty_mm`` (raw, every model)
    how far from the decoded point the stage that placed it (the local stage
    of a cascade) spreads the landmark, as a root-mean-square distance,
    :func:`radial_spread` of :func:`point_spread`:

    .. math:: u = \\sqrt{\\sum_a s_a^2 \\max(v_a - \\sigma_t^2, 1/12)}, \\quad
              v_a = \\sum_x w(x) (x_a - \\hat x_a)^2

    over the voxels ``x`` of the map, with ``s_a`` the voxel size in mm along
    array axis ``a`` and ``w`` the map normalised to sum 1. For a ``softmax``
    model ``w`` is the channel's probability distribution itself (``kind=
    "distribution"``) and ``sigma_t`` the width of the target it was trained
    towards (1.5 voxels by default, :func:`target_sigmas`); for a sigmoid
    heatmap (``cone``, ``v1``) ``w`` is the part of the heatmap above
    ``median + level (peak - median)`` (``kind="heatmap"``), the blob
    :func:`~nnlandmark.inference.decoding.decode_local_mean` averages, and
    ``sigma_t = 0``. ``v_a`` is a second moment about the *decoded point*,
    not about the mean, so a second mode or a point off the centre of its
    blob makes it larger. It is a relative measure: nothing makes the
    network's distribution match its real errors.
``radius_<C>_mm`` (calibrated models, e.g. ``radius_95_mm``)
    ``q * uncertainty_mm``, where ``q`` comes from split-conformal calibration
    on cross-validation predictions (``nnlandmark evaluate-cv --coverage C``,
    :mod:`nnlandmark.evaluation.conformal`): the radius of a sphere around the
    predicted point that holds the true landmark in a fraction ``C`` of new
    cases like the calibration cases. Null for a model that was never
    calibrated, for an absent landmark, or when calibration had too few cases.

Examples
--------
>>> x = np.arange(31.0)
>>> p = np.exp(-(x - 15.0) ** 2 / (2 * 2.0 ** 2))   # a Gaussian of sigma 2 voxels along axis 0
>>> maps = (p / p.sum())[None, :, None]              # one channel, shape (1, 31, 1)
>>> spread = point_spread(maps, [[15.0, 0.0]], voxel_size_mm=(0.5, 1.0))
>>> spread.round(4).tolist()     # sigma x spacing on axis 0; axis 1 is one voxel long (a 2D map): 0
[[1.0, 0.0]]
>>> point_spread(maps, [[15.0, 0.0]], voxel_size_mm=(0.5, 1.0), target_sigma_voxels=1.5).round(4).tolist()
[[0.6614, 0.0]]
>>> point_spread(maps, [[15.0, 0.0]], voxel_size_mm=(0.5, 1.0), target_sigma_voxels=2.5).round(4).tolist()
[[0.1443, 0.0]]
>>> radial_spread([[3.0, 4.0]]).tolist()
[5.0]
"""
from __future__ import annotations

import math
import re

import numpy as np

from nnlandmark.errors import InvalidInput
from nnlandmark.inference.decoding import _channel_reader

__all__ = ["SPREAD_KINDS", "DEFAULT_COVERAGE", "VOXEL_VARIANCE", "point_spread", "radial_spread", "spread_kind",
           "target_sigmas", "radius_key", "coverage_of_key", "calibrated_radius"]

SPREAD_KINDS = ("distribution", "heatmap")
#: the coverage ``evaluate-cv`` calibrates for unless told otherwise, and the radius key uncalibrated models write
DEFAULT_COVERAGE = 0.95
_RADIUS_KEY = re.compile(r"^radius_(\d+(?:\.\d+)?)_mm$")
#: the least variance per axis, in voxels^2: a point on a grid is known no better than a voxel (uniform: 1/12)
VOXEL_VARIANCE = 1.0 / 12.0


def spread_kind(output: str) -> str:
    """The spread that fits a model's output: ``distribution`` for ``softmax``, else ``heatmap``.

    >>> spread_kind("softmax"), spread_kind("sigmoid")
    ('distribution', 'heatmap')
    """
    return "distribution" if output == "softmax" else "heatmap"


def point_spread(maps, points, voxel_size_mm=1.0, kind: str = "distribution", level: float = 0.5,
                 target_sigma_voxels=None) -> np.ndarray:
    """Root-mean-square deviation of each map's mass from its decoded point, per axis, in mm.

    Parameters
    ----------
    maps : array_like or torch.Tensor
        ``(L, *spatial)`` maps of one case (or one patch per landmark), in the
        grid the points were decoded in.
    points : array_like
        ``(L, ndim)`` decoded points, continuous indices along the maps' axes.
    voxel_size_mm : float or array_like
        Voxel edge length in mm per spatial axis of ``maps`` (a scalar for
        isotropic voxels); for nnU-Net's preprocessed grid,
        :func:`nnlandmark.geometry.preprocessed_voxel_size_mm`.
    kind : {'distribution', 'heatmap'}
        ``distribution``: each channel is a probability distribution (the
        ``softmax`` preset); its non-negative finite values are the weights.
        ``heatmap``: a sigmoid heatmap; the weights are ``max(0, value - t)``
        with ``t = median + level * (peak - median)``, so the background
        (the median) weighs nothing.
    level : float
        The threshold fraction of ``heatmap``, ``0 <= level < 1``.
    target_sigma_voxels : float or array_like, optional
        The standard deviation per axis, in voxels of this grid, of the
        target the network was trained towards (one value, or one per
        channel); its square is subtracted from each axis's second moment.

    Returns
    -------
    numpy.ndarray
        ``(L, ndim)`` float64: ``s_a sqrt(max(v_a - sigma_t^2, 1/12))`` (0 along an axis of one voxel) with
        ``v_a = sum_x w(x) (x_a - point_a)^2 / sum_x w(x)`` in voxels^2. NaN
        for a channel whose weights sum to 0 (e.g. a constant heatmap).

    Notes
    -----
    Why subtract the target's width: cross-entropy against a Gaussian target
    of sigma 1.5 voxels teaches the network to output that width even where it
    has no doubt at all (on the AFIDs T1w test cases the raw spread was
    1.5 voxels per axis for every landmark, errors a quarter of a voxel). If
    the output is the target blurred by the network's doubt about the
    position, their variances add, and the difference is the doubt. The floor
    of 1/12 voxel^2 (a uniform distribution over one voxel) keeps a landmark
    the network is sure of from a zero spread, whose calibrated radius would
    be zero; it is not applied along an axis only one voxel long (the
    singleton axis of a 2D image), where there is nothing to be unsure of.

    Why the whole map and not a window around the peak: the failure a user
    needs to see is a second candidate position (the other ear, the next
    vertebra), which a window would cut off. Preprocessed voxels lie along
    orthogonal world directions (the direction matrix is orthonormal and the
    grid only transposes, crops and rescales its axes), so scaling each axis
    by its voxel size gives world millimetres, and the root of the sum of the
    squares (:func:`radial_spread`) is the same in any world frame.

    Examples
    --------
    A point 1 voxel off the centre of a distribution of sigma 2 voxels: the
    second moment about the point is sigma^2 + 1 (here along axis 1, voxels of 3 mm):

    >>> x = np.arange(31.0)
    >>> p = np.exp(-(x - 15.0) ** 2 / 8.0)
    >>> maps = (p / p.sum())[None, None, :]
    >>> point_spread(maps, [[0.0, 16.0]], voxel_size_mm=(1.0, 3.0)).round(4).tolist()
    [[0.0, 6.7082]]
    """
    if kind not in SPREAD_KINDS:
        raise ValueError(f"kind must be one of {SPREAD_KINDS}, got {kind!r}")
    level = float(level)
    if not 0.0 <= level < 1.0:
        raise ValueError(f"level must be in [0, 1), got {level}")
    n_channels, ndim, get = _channel_reader(maps)
    points = np.asarray(points, dtype=np.float64).reshape(n_channels, ndim)
    size = np.broadcast_to(np.asarray(voxel_size_mm, dtype=np.float64), (ndim,))
    target_variance = np.broadcast_to(
        np.square(np.asarray(0.0 if target_sigma_voxels is None else target_sigma_voxels, dtype=np.float64)),
        (n_channels,))
    spread = np.full((n_channels, ndim), np.nan)
    for c in range(n_channels):
        weights = np.array(get(c), dtype=np.float64)  # one channel at a time, as the decoders do
        finite = np.isfinite(weights)
        if kind == "heatmap":
            values = weights[finite]
            if values.size == 0:
                continue
            background = float(np.median(values))
            threshold = background + level * (float(values.max()) - background)
            weights -= threshold
        weights[~finite] = 0.0
        np.clip(weights, 0.0, None, out=weights)
        total = weights.sum()
        if not (total > 0 and np.isfinite(total)):
            continue
        for axis in range(ndim):
            others = tuple(a for a in range(ndim) if a != axis)
            profile = weights.sum(axis=others) if others else weights
            offset = np.arange(profile.size) - points[c, axis]
            variance = float(profile @ offset ** 2) / total - target_variance[c]
            # an axis the map does not extend along (one voxel: a 2D image) says nothing, and adds nothing
            floor = VOXEL_VARIANCE if profile.size > 1 else 0.0
            spread[c, axis] = size[axis] * math.sqrt(max(variance, floor))
    return spread


def radial_spread(axis_spread) -> np.ndarray:
    """``uncertainty_mm``: the root of the sum of the squared per-axis spreads (NaN stays NaN).

    For errors spread like the map, this is the root-mean-square radial error.

    >>> radial_spread([[3.0, 4.0, 0.0], [np.nan, 1.0, 1.0]]).tolist()
    [5.0, nan]
    """
    return np.sqrt(np.sum(np.square(np.asarray(axis_spread, dtype=np.float64)), axis=-1))


def target_sigmas(description: dict, stage: str, folds=(0,)) -> np.ndarray | None:
    """Per landmark, the standard deviation (voxels of ``stage``'s grid) of the target that stage was
    trained towards, when its output is a distribution (``softmax``); None for sigmoid heatmaps.

    Learned sigmas (``heatmap="adaptive"``, ``learned_sigmas`` in the description) are averaged
    over ``folds``; otherwise the settings' ``gaussian_sigma`` (one value or one per landmark).
    ``description``: a :class:`~nnlandmark.model.description.ModelDescription` or its dict.

    >>> d = {"landmarks": ["a", "b"], "stages": {"local": "3d_local"},
    ...      "settings": {"preset": "softmax", "gaussian_sigma": 1.5}}
    >>> target_sigmas(d, "local").tolist()
    [1.5, 1.5]
    >>> d["learned_sigmas"] = {"fold_0": {"local": {"a": 1.0, "b": 2.0}}, "fold_1": {"local": {"a": 2.0, "b": 2.0}}}
    >>> target_sigmas(d, "local", folds=[0, 1]).tolist()
    [1.5, 2.0]
    >>> target_sigmas({"landmarks": ["a"], "configuration": "3d_fullres", "settings": {"preset": "cone"}},
    ...               "fullres") is None
    True
    """
    from nnlandmark.model.description import ModelDescription
    description = ModelDescription.of(description)
    if description.output != "softmax" or description.heatmap == "cone":
        return None
    names = description.landmarks
    per_fold = [description.learned_sigmas_of(f, stage) for f in folds]
    if per_fold and all(isinstance(s, dict) and all(n in s for n in names) for s in per_fold):
        return np.mean([[float(s[n]) for n in names] for s in per_fold], axis=0)
    values = np.broadcast_to(np.asarray(description.settings["gaussian_sigma"], dtype=np.float64), (len(names),))
    return values.copy()


def radius_key(coverage: float) -> str:
    """The field name of the calibrated radius for a coverage in (0, 1).

    >>> radius_key(0.95), radius_key(0.9), radius_key(0.975)
    ('radius_95_mm', 'radius_90_mm', 'radius_97.5_mm')
    """
    coverage = float(coverage)
    if not 0.0 < coverage < 1.0:
        raise InvalidInput(f"--coverage: a fraction in (0, 1) such as 0.95, got {coverage:g}")
    return f"radius_{round(100.0 * coverage, 6):g}_mm"


def coverage_of_key(key: str) -> float | None:
    """The coverage a radius field was calibrated for, or None for any other name.

    >>> coverage_of_key("radius_95_mm"), coverage_of_key("radius_97.5_mm"), coverage_of_key("score")
    (0.95, 0.975, None)
    """
    match = _RADIUS_KEY.match(str(key))
    return None if match is None else round(float(match.group(1)) / 100.0, 8)


def calibrated_radius(uncertainty_mm, scale) -> float | None:
    """``scale * uncertainty_mm``, or None when either is missing or not finite.

    >>> calibrated_radius(0.5, 3.0), calibrated_radius(0.5, None), calibrated_radius(float("nan"), 3.0)
    (1.5, None, None)
    """
    if uncertainty_mm is None or scale is None:
        return None
    radius = float(scale) * float(uncertainty_mm)
    return radius if math.isfinite(radius) else None
