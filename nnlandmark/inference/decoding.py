"""Heatmap decoding: from one case's predicted heatmaps to landmark points.

Every decoder takes heatmaps of shape ``(L, *spatial)`` (NumPy or torch, any
float dtype, usually 3 spatial axes) and returns ``(points, scores)``:

points
    ``(L, ndim)`` float64 sub-voxel indices along the heatmap's own array axes
    (voxel ``i`` has its centre at ``i``). Always finite.
scores
    ``(L,)`` float64 value of each channel's maximum (NaN only for a channel
    that is NaN everywhere).

The maximum is taken with first-occurrence tie breaking (C order). NaN voxels
are ignored when locating it. Channels are processed one at a time and only a
window around the peak (about the size of its blob) is ever copied, so ``32 x 200^3`` float16
heatmaps cost no more than one channel of extra memory (a torch channel is
moved to the CPU one at a time). No exponentials are taken; saturated plateaus,
constant, all-zero and very large-valued channels all give finite points.

Examples
--------
>>> import numpy as np
>>> hm = np.zeros((1, 5, 5, 5), dtype=np.float32)
>>> hm[0, 2, 3, 1] = 1.0
>>> hm[0, 2, 3, 2] = 0.5
>>> points, scores = decode(hm, "argmax")
>>> points, scores
(array([[2., 3., 1.]]), array([1.]))
>>> decode(hm, "quadratic")[0]  # (0 - 0.5) / (2 (0 - 2 + 0.5)) = 1/6
array([[2.        , 3.        , 1.16666667]])
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["decode_argmax", "decode_local_mean", "decode_quadratic", "decode_mass", "DECODERS", "decode"]


def _channel_reader(heatmaps) -> tuple[int, int, Callable[[int], np.ndarray]]:
    """Number of channels, spatial ndim, and a getter returning one channel as NumPy.

    A NumPy channel is a view (no copy); a torch channel is detached and moved
    to the CPU alone, so the full tensor is never duplicated on the host.
    Half-precision channels (the predictor's float16 heatmaps) are returned as
    float32: NumPy computes a float16 array's median in float16, rounded to a
    float16 number, so the same heatmaps read from a float32 file would
    otherwise get another threshold and another point.
    """
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency, but decoding does not need it
        torch = None
    if torch is not None and isinstance(heatmaps, torch.Tensor):
        tensor = heatmaps.detach()

        def get(c: int) -> np.ndarray:
            channel = tensor[c]
            if channel.dtype in (torch.float16, torch.bfloat16):  # NumPy has no bfloat16
                channel = channel.float()
            return channel.cpu().numpy()

        shape = tuple(tensor.shape)
    else:
        array = np.asarray(heatmaps)

        def get(c: int) -> np.ndarray:
            return array[c].astype(np.float32) if array.dtype == np.float16 else array[c]

        shape = array.shape
    if len(shape) < 2:
        raise ValueError(f"heatmaps must be (L, *spatial), got shape {shape}")
    if any(s == 0 for s in shape[1:]):
        raise ValueError(f"heatmaps have an empty spatial axis: shape {shape}")
    return shape[0], len(shape) - 1, get


def _peak(channel: np.ndarray) -> tuple[tuple[int, ...], float]:
    """Index and value of the channel maximum, first occurrence, NaN ignored."""
    flat = int(np.argmax(channel))
    value = channel.flat[flat]
    if np.isnan(value):
        # np.argmax stops at the first NaN; redo it with NaN as -inf (one
        # channel-sized copy, only for channels that contain NaN).
        clean = np.where(np.isnan(channel), -np.inf, channel)
        flat = int(np.argmax(clean))
        value = channel.flat[flat]
    return tuple(int(i) for i in np.unravel_index(flat, channel.shape)), float(value)


def _decode(heatmaps, refine: Callable[[np.ndarray, tuple[int, ...]], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    n_channels, ndim, get = _channel_reader(heatmaps)
    points = np.zeros((n_channels, ndim), dtype=np.float64)
    scores = np.zeros(n_channels, dtype=np.float64)
    for c in range(n_channels):
        channel = get(c)
        index, scores[c] = _peak(channel)
        point = refine(channel, index)
        # Refinements only move the point when every number involved is
        # finite; this is the last guard of the "always finite" promise.
        points[c] = point if np.all(np.isfinite(point)) else index
    return points, scores


def decode_argmax(heatmaps) -> tuple[np.ndarray, np.ndarray]:
    """Integer voxel of each channel's maximum.

    Parameters
    ----------
    heatmaps : array_like or torch.Tensor
        ``(L, *spatial)`` heatmaps of one case.

    Returns
    -------
    points : numpy.ndarray
        ``(L, ndim)`` float64 voxel indices of the maximum (first occurrence on
        ties, C order).
    scores : numpy.ndarray
        ``(L,)`` the maximum values.

    Examples
    --------
    >>> hm = np.zeros((1, 3, 4))
    >>> hm[0, 1, 2] = hm[0, 2, 3] = 7.0
    >>> decode_argmax(hm)
    (array([[1., 2.]]), array([7.]))
    """
    return _decode(heatmaps, lambda channel, index: np.asarray(index, dtype=np.float64))


def decode_local_mean(heatmaps, radius: int | None = None, level: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Argmax refined by the centroid of the heatmap above a fraction of its peak.

    Parameters
    ----------
    heatmaps : array_like or torch.Tensor
        ``(L, *spatial)`` heatmaps of one case.
    radius : int, optional
        Half-width of a fixed ``(2 radius + 1)^ndim`` window centred on the
        argmax. By default (None) the window adapts to the blob: it starts at
        the argmax voxel and grows one voxel at a time along every axis whose
        two outer faces still hold a value above the threshold, until no face
        does (or the array border is reached). It stays centred on the argmax.
    level : float
        Threshold as a fraction of the peak height above the channel's
        background, its median: ``t = median + level * (max - median)``,
        ``0 <= level < 1``.

    Returns
    -------
    points : numpy.ndarray
        ``(L, ndim)`` float64 weighted centroids of the window, weights
        ``max(0, value - t)`` (non-finite values weigh 0).
    scores : numpy.ndarray
        ``(L,)`` the maximum values.

    Notes
    -----
    Why a threshold and an adaptive window: the earlier mean over a fixed
    5^3 window weighted by ``value - min(window)`` is pulled back towards the
    argmax voxel whenever the blob is wider than the window (it removed less
    than half of a 0.3-voxel offset for a Gaussian of sigma 4 or a cone of
    radius 15, our training targets). The part of a symmetric blob above a
    level set is symmetric about the true centre, so its weighted centroid is
    unbiased up to sampling, whatever the blob width, as long as the window
    holds all of it; the adaptive window does, and costs about
    ``(blob width)^ndim`` voxels. The level is measured from the median
    because a landmark's blob covers a minority of the voxels, so the median
    is the background: a constant offset does not shift the level, and the
    flat heatmaps of an undertrained model (background 0.47, peak 0.6) do not
    put most of the volume above it, as measuring from the minimum (0.25)
    did (``benchmarks/decoders.py`` after 300 iterations: 15.5 mm MRE from
    the minimum, 8.3 mm from the median, 10.0 mm for the argmax).

    A channel whose weights sum to 0 (peak at the median, e.g. constant)
    falls back to the argmax. The median costs a partial sort of a copy of
    the channel.
    Near a border the window is clipped, so the centroid is biased towards
    the inside; a second peak above the threshold that touches the blob is
    averaged in.

    Examples
    --------
    >>> hm = np.zeros((1, 7, 1))
    >>> hm[0, 2:5, 0] = [1.0, 3.0, 2.0]
    >>> decode_local_mean(hm)[0]  # median 0, t = 1.5: weights 1.5 and 0.5 at indices 3 and 4
    array([[3.25, 0.  ]])
    """
    if radius is not None and int(radius) < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    level = float(level)
    if not 0.0 <= level < 1.0:
        raise ValueError(f"level must be in [0, 1), got {level}")

    def refine(channel: np.ndarray, index: tuple[int, ...]) -> np.ndarray:
        peak = float(channel[index])
        background = float(np.median(channel))
        if np.isnan(background):  # np.median propagates NaN; only such channels pay for nanmedian
            background = float(np.nanmedian(channel))
        threshold = background + level * (peak - background)
        if not np.isfinite(threshold):  # all-NaN or infinite values: nothing to weigh
            return np.asarray(index, dtype=np.float64)
        if radius is None:
            starts, stops = _grow_window(channel, index, threshold)
        else:
            starts = [max(0, i - int(radius)) for i in index]
            stops = [min(n, i + int(radius) + 1) for i, n in zip(index, channel.shape)]
        window = channel[tuple(slice(a, b) for a, b in zip(starts, stops))].astype(np.float64)  # small copy
        weights = np.clip(window - threshold, 0.0, None)
        weights[~np.isfinite(weights)] = 0.0
        total = weights.sum()
        if not (total > 0 and np.isfinite(total)):
            return np.asarray(index, dtype=np.float64)
        point = np.empty(len(index), dtype=np.float64)
        for axis in range(weights.ndim):
            others = tuple(a for a in range(weights.ndim) if a != axis)
            profile = weights.sum(axis=others) if others else weights
            point[axis] = starts[axis] + float(profile @ np.arange(profile.size)) / total
        return point

    return _decode(heatmaps, refine)


def _grow_window(channel: np.ndarray, index: tuple[int, ...], threshold: float) -> tuple[list, list]:
    """Start/stop of the smallest argmax-centred window whose inner faces are all <= ``threshold``.

    Faces on the array border are not checked (the window cannot grow past
    them). Only the faces of the current window are read in each step.
    """
    shape = channel.shape
    radius = [0] * len(index)
    while True:
        starts = [max(0, i - r) for i, r in zip(index, radius)]
        stops = [min(n, i + r + 1) for i, r, n in zip(index, radius, shape)]
        window = channel[tuple(slice(a, b) for a, b in zip(starts, stops))]
        grow = []
        for axis, (a, b, n) in enumerate(zip(starts, stops, shape)):
            # `>` is False for NaN, so NaN voxels never make the window grow
            low = a > 0 and bool(np.any(np.take(window, 0, axis=axis) > threshold))
            high = b < n and bool(np.any(np.take(window, -1, axis=axis) > threshold))
            grow.append(low or high)
        if not any(grow):
            return starts, stops
        radius = [r + g for r, g in zip(radius, grow)]


def decode_quadratic(heatmaps) -> tuple[np.ndarray, np.ndarray]:
    """Argmax refined per axis by a parabola through the peak and its 2 neighbours.

    Parameters
    ----------
    heatmaps : array_like or torch.Tensor
        ``(L, *spatial)`` heatmaps of one case.

    Returns
    -------
    points : numpy.ndarray
        ``(L, ndim)`` float64: argmax plus, per axis, the vertex offset
        ``(f[-1] - f[+1]) / (2 (f[-1] - 2 f[0] + f[+1]))`` clipped to
        ``[-0.5, 0.5]``.
    scores : numpy.ndarray
        ``(L,)`` the maximum values.

    Notes
    -----
    The offset is 0 at a border (a neighbour is missing) and when the
    denominator is ``>= -eps`` with ``eps = 1e-9 * max(|f[-1]|, |f[0]|, |f[+1]|)``,
    i.e. the three values are (numerically) collinear: flat or saturated
    heatmaps. Each axis is fitted independently through the peak voxel.

    Examples
    --------
    >>> hm = np.array([[0.0, 2.0, 4.0, 3.0, 0.0]])[..., None]  # (1, 5, 1)
    >>> decode_quadratic(hm)[0]  # (2 - 3) / (2 (2 - 8 + 3)) = 1/6
    array([[2.16666667, 0.        ]])
    """

    def refine(channel: np.ndarray, index: tuple[int, ...]) -> np.ndarray:
        point = np.asarray(index, dtype=np.float64)
        centre = float(channel[index])
        for axis, (i, n) in enumerate(zip(index, channel.shape)):
            if i == 0 or i == n - 1:
                continue
            before = list(index)
            after = list(index)
            before[axis] -= 1
            after[axis] += 1
            f_before, f_after = float(channel[tuple(before)]), float(channel[tuple(after)])
            denominator = f_before - 2.0 * centre + f_after
            eps = 1e-9 * max(abs(f_before), abs(centre), abs(f_after))
            # `not <` also rejects NaN neighbours.
            if not denominator < -eps:
                continue
            offset = (f_before - f_after) / (2.0 * denominator)
            if np.isfinite(offset):
                point[axis] += min(0.5, max(-0.5, offset))
        return point

    return _decode(heatmaps, refine)


def decode_mass(probabilities, radius: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The peak of a probability distribution, refined in log space, and the mass around it.

    For the ``softmax`` preset, whose channels are probability distributions
    over the voxels (each sums to 1).

    Parameters
    ----------
    probabilities : array_like or torch.Tensor
        ``(L, *spatial)``, non-negative.
    radius : int
        Half-width of the ``(2 radius + 1)^ndim`` window centred on the argmax
        (clipped at the array border) whose mass is the score.

    Returns
    -------
    points : numpy.ndarray
        ``(L, ndim)`` float64: the argmax refined per axis by the vertex of a
        parabola through the *log*-probabilities of the peak and its two
        neighbours (:func:`decode_quadratic` on ``log p``), at most half a voxel.
    scores : numpy.ndarray
        ``(L,)`` the mass in the window: for a softmax channel, the
        probability the network gives to the landmark lying within
        ``radius`` voxels (per axis) of its peak.

    Notes
    -----
    The softmax preset trains each channel towards a Gaussian, whose logarithm
    is a parabola: the fit is exact for it, whatever its width and wherever its
    centre lies between voxels. The mean over a window around the peak, by
    contrast, is pulled towards the peak voxel when the window cuts the tails
    (0.45 voxel becomes 0.17 for sigma 1.5 and radius 2), and the whole-volume
    mean (soft-argmax) towards the centre of the volume by the small mass every
    distant voxel keeps.

    Examples
    --------
    >>> x = np.arange(7.0)
    >>> p = np.exp(-(x - 3.3) ** 2 / 2)[None, :, None]
    >>> points, scores = decode_mass(p / p.sum(), radius=1)
    >>> points.round(6).tolist(), round(float(scores[0]), 3)
    ([[3.3, 0.0]], 0.865)
    """
    radius = int(radius)
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    n_channels, ndim, get = _channel_reader(probabilities)
    points = np.zeros((n_channels, ndim), dtype=np.float64)
    scores = np.zeros(n_channels, dtype=np.float64)
    tiny = np.finfo(np.float64).tiny
    for c in range(n_channels):
        channel = get(c)
        index, _ = _peak(channel)
        # the mass around the peak, and the 3-voxel neighbourhood the parabola is fitted to
        starts = [max(0, i - radius) for i in index]
        stops = [min(n, i + radius + 1) for i, n in zip(index, channel.shape)]
        window = channel[tuple(slice(a, b) for a, b in zip(starts, stops))].astype(np.float64)
        window[~np.isfinite(window)] = 0.0
        scores[c] = float(window.sum())
        near = [max(0, i - 1) for i in index]
        block = channel[tuple(slice(a, min(n, i + 2)) for a, i, n in zip(near, index, channel.shape))]
        block = np.where(np.isfinite(block), block, 0.0).astype(np.float64)
        local = tuple(i - a for i, a in zip(index, near))
        if block[local] > 0:
            offsets = decode_quadratic(np.log(np.maximum(block, tiny))[None])[0][0] - np.asarray(local)
            # the block's own argmax can differ from the channel's on ties; keep the channel's peak then
            points[c] = np.asarray(index) + (offsets if np.all(np.abs(offsets) <= 0.5) else 0.0)
        else:
            points[c] = index
    return points, scores


DECODERS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "argmax": decode_argmax,
    "local-mean": decode_local_mean,
    "quadratic": decode_quadratic,
    "mass": decode_mass,
}


def decode(heatmaps, method: str = "argmax") -> tuple[np.ndarray, np.ndarray]:
    """Decode with the decoder registered under ``method`` in :data:`DECODERS`.

    Examples
    --------
    >>> decode(np.array([[[0.0, 1.0, 0.0]]]), "local-mean")
    (array([[0., 1.]]), array([1.]))
    """
    try:
        decoder = DECODERS[method]
    except KeyError:
        raise ValueError(f"unknown decoding method {method!r}; choose from {sorted(DECODERS)}") from None
    return decoder(heatmaps)
