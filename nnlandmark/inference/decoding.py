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
small window around the peak is ever copied, so ``32 x 200^3`` float16
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

__all__ = ["decode_argmax", "decode_local_mean", "decode_quadratic", "DECODERS", "decode"]


def _channel_reader(heatmaps) -> tuple[int, int, Callable[[int], np.ndarray]]:
    """Number of channels, spatial ndim, and a getter returning one channel as NumPy.

    A NumPy channel is a view (no copy); a torch channel is detached and moved
    to the CPU alone, so the full tensor is never duplicated on the host.
    """
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency, but decoding does not need it
        torch = None
    if torch is not None and isinstance(heatmaps, torch.Tensor):
        tensor = heatmaps.detach()

        def get(c: int) -> np.ndarray:
            channel = tensor[c]
            if channel.dtype == torch.bfloat16:  # NumPy has no bfloat16
                channel = channel.float()
            return channel.cpu().numpy()

        shape = tuple(tensor.shape)
    else:
        array = np.asarray(heatmaps)

        def get(c: int) -> np.ndarray:
            return array[c]

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


def decode_local_mean(heatmaps, radius: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Argmax refined by the intensity-weighted mean of the window around it.

    Parameters
    ----------
    heatmaps : array_like or torch.Tensor
        ``(L, *spatial)`` heatmaps of one case.
    radius : int
        Half-width of the ``(2 radius + 1)^ndim`` window centred on the
        argmax, clipped at the array borders.

    Returns
    -------
    points : numpy.ndarray
        ``(L, ndim)`` float64 weighted means, weights ``value - min(window)``.
    scores : numpy.ndarray
        ``(L,)`` the maximum values.

    Notes
    -----
    Subtracting the window minimum stops a constant background from pulling
    the mean to the window centre. A window whose weights sum to 0 (flat
    heatmap) or that holds a non-finite value falls back to the argmax.
    Near a border the clipped window is asymmetric, so the mean is biased
    towards the inside; that is the intended reading of "what is visible".

    The window is centred on the argmax voxel, so for a blob much wider than
    the window the mean is pulled back towards that voxel: for a Gaussian
    centred 0.3 / 0.3 / 0.45 voxel off the argmax, ``radius=2`` recovers the
    centre within 0.04 voxel for ``sigma=1`` but removes less than half of
    the offset for ``sigma=4`` (or a cone of radius 15). Use a radius near
    the blob width, or :func:`decode_quadratic`, for wide heatmaps.

    Examples
    --------
    >>> hm = np.zeros((1, 5, 1))
    >>> hm[0, 1:4, 0] = [1.0, 3.0, 2.0]
    >>> decode_local_mean(hm, radius=1)[0]  # weights 0, 2, 1 around index 2
    array([[2.33333333, 0.        ]])
    """
    radius = int(radius)
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")

    def refine(channel: np.ndarray, index: tuple[int, ...]) -> np.ndarray:
        starts = [max(0, i - radius) for i in index]
        window = channel[tuple(slice(s, min(n, i + radius + 1)) for s, i, n in zip(starts, index, channel.shape))]
        window = window.astype(np.float64)  # small copy; float16 would lose the weights
        if not np.all(np.isfinite(window)):
            return np.asarray(index, dtype=np.float64)
        weights = window - window.min()
        total = weights.sum()
        if not total > 0:
            return np.asarray(index, dtype=np.float64)
        point = np.empty(len(index), dtype=np.float64)
        for axis in range(weights.ndim):
            others = tuple(a for a in range(weights.ndim) if a != axis)
            profile = weights.sum(axis=others) if others else weights
            point[axis] = starts[axis] + float(profile @ np.arange(profile.size)) / total
        return point

    return _decode(heatmaps, refine)


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


DECODERS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "argmax": decode_argmax,
    "local-mean": decode_local_mean,
    "quadratic": decode_quadratic,
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
