"""Training targets: landmark points from label patches, and heatmaps from points.

During training, landmarks travel through nnU-Net's augmentation as label maps
(landmark ``l`` is label ``l + 1``, drawn as a small cube; landmarks whose
cubes would overlap are drawn in separate maps, the channels of nnU-Net's
segmentation). After augmentation, :func:`points_from_label_patch` turns each
label back into a sub-voxel point, :func:`mirror_samples` flips chosen samples
left-right, and :func:`cone_heatmaps`, :func:`gaussian_heatmaps` or
:func:`laplace_heatmaps` render the regression targets for the network. The
Gaussian and the Laplace shapes take one sigma for every landmark or one per
landmark, and a sigma that is a tensor in an autograd graph stays in it:
:class:`LearnedSigmas` holds per-landmark sigmas that are learned with the
network (Thaler et al. 2021).

All tensors are channel-first; spatial axes are plain array axes in whatever
order the caller uses (nothing here reorders them). Points are continuous
voxel indices along those axes; voxel ``i`` has its centre at index ``i``.
Everything stays on the input's device and is vectorised over voxels.

Examples
--------
>>> import torch
>>> seg = torch.zeros(1, 1, 8, 8, 8, dtype=torch.int16)
>>> seg[0, 0, 2:5, 3:6, 4:7] = 1
>>> points_from_label_patch(seg, num_landmarks=2)
tensor([[[3., 4., 5.],
         [nan, nan, nan]]])
>>> hm = cone_heatmaps(torch.tensor([[[3.0, 4.0, 5.0]]]), (8, 8, 8), radius=2.0)
>>> float(hm[0, 0, 3, 4, 5]), float(hm[0, 0, 4, 4, 5]), float(hm[0, 0, 5, 4, 5])
(1.0, 0.5, 0.0)
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["points_from_label_patch", "mirror_samples", "inside_patch", "cone_heatmaps", "gaussian_heatmaps",
           "laplace_heatmaps", "laplace_scale", "LearnedSigmas"]


def points_from_label_patch(seg: torch.Tensor, num_landmarks: int, spatial_dims: int = 3) -> torch.Tensor:
    """Centroid of every landmark label in a batch of 3D (or 2D) label patches.

    Parameters
    ----------
    seg : torch.Tensor
        Label patches, shape ``(B, M, X, Y, Z)`` (``M`` label maps) or
        ``(B, X, Y, Z)``, integer or floating dtype holding integer values.
        Landmark ``l`` (0-based) is label ``l + 1`` in whichever map holds it;
        0 is background. Values outside ``1..num_landmarks`` (e.g. nnU-Net's
        ``-1`` border padding) are ignored.
    num_landmarks : int
        Number of landmarks ``L``.
    spatial_dims : int
        3, or 2 for 2D patches: ``(B, M, X, Y)`` or ``(B, X, Y)``.

    Returns
    -------
    torch.Tensor
        ``(B, L, spatial_dims)`` float32 on ``seg``'s device: the mean voxel index of each
        label's voxels, along the patch's own array axes. A label without any
        voxel in the patch gives a row of NaN.

    Notes
    -----
    The centroid is that of the voxels *present in the patch*. A cube cut by
    the patch border therefore yields the centroid of its remaining part,
    which is pulled inside by up to one voxel (a 3-voxel cube centred on
    index 0 keeps indices 0 and 1 along that axis: centroid 0.5). Rotation or
    scaling by augmentation leaves the centroid of a resampled cube close to
    the transformed centre.

    Only labelled voxels are gathered (one ``nonzero`` over the patch plus
    scatter-adds into ``B * L`` bins), so the cost does not grow with ``L``.
    On CUDA, ``nonzero`` synchronises with the host once per call.

    Examples
    --------
    >>> seg = torch.zeros(2, 6, 6, 6, dtype=torch.uint8)
    >>> seg[1, 0:2, 2:5, 2:5] = 2          # a cube cut by the x = 0 border
    >>> points_from_label_patch(seg, 2)[1]
    tensor([[   nan,    nan,    nan],
            [0.5000, 3.0000, 3.0000]])
    >>> points_from_label_patch(seg[:, :, :, 3], 2, spatial_dims=2)[1]  # 2D patches (B, X, Y)
    tensor([[   nan,    nan],
            [0.5000, 3.0000]])
    """
    spatial_dims = int(spatial_dims)
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if seg.ndim == spatial_dims + 1:
        seg = seg[:, None]
    elif seg.ndim != spatial_dims + 2:
        axes = "X, Y, Z" if spatial_dims == 3 else "X, Y"
        raise ValueError(f"expected (B, M, {axes}) or (B, {axes}), got shape {tuple(seg.shape)}")
    num_landmarks = int(num_landmarks)
    if num_landmarks < 1:
        raise ValueError(f"num_landmarks must be >= 1, got {num_landmarks}")
    batch = seg.shape[0]
    device = seg.device

    # Half-integer bounds accept float label maps (nnU-Net may hand them over as
    # float) without a rounding pass over the whole patch.
    mask = (seg > 0.5) & (seg < num_landmarks + 0.5)
    where = torch.nonzero(mask)  # (N, 5): b, map, x, y, z; the map does not matter, the label says which landmark
    labels = seg[mask]
    if labels.is_floating_point():
        labels = labels.round()
    labels = labels.long()
    bins = where[:, 0] * num_landmarks + (labels - 1)

    # float64 sums keep the centroid exact even for labels with millions of voxels.
    acc_dtype = torch.float32 if device.type == "mps" else torch.float64
    counts = torch.zeros(batch * num_landmarks, dtype=acc_dtype, device=device)
    counts.index_add_(0, bins, torch.ones_like(bins, dtype=acc_dtype))
    sums = torch.zeros(batch * num_landmarks, spatial_dims, dtype=acc_dtype, device=device)
    sums.index_add_(0, bins, where[:, 2:].to(acc_dtype))

    points = sums / counts.unsqueeze(1)
    points = torch.where(counts.unsqueeze(1) > 0, points, torch.full_like(points, float("nan")))
    return points.to(torch.float32).reshape(batch, num_landmarks, spatial_dims)


def mirror_samples(data: torch.Tensor, points: torch.Tensor, mask: torch.Tensor, flip, axes,
                   swap) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mirror chosen samples of a batch along one spatial axis each, swapping paired landmarks.

    The result is what flipping each chosen image and label patch along its
    axis and relabelling left as right would give, without touching the label
    map: a flip of an axis of size ``n`` maps index ``i`` to ``n - 1 - i``,
    and landmark ``l`` of the mirrored sample is landmark ``swap[l]`` of the
    original (the left eye of a mirrored head is its right eye).

    Parameters
    ----------
    data : torch.Tensor
        ``(B, C, *spatial)`` image patches.
    points : torch.Tensor
        ``(B, L, D)`` landmark points in patch voxel indices (NaN: not in the patch).
    mask : torch.Tensor
        ``(B, L)`` bool, which landmarks count in the loss.
    flip : sequence of bool
        ``(B,)`` which samples to mirror.
    axes : sequence of int
        ``(B,)`` spatial axis (0-based) to mirror each sample along.
    swap : sequence of int
        ``(L,)`` landmark permutation, its own inverse (see
        :func:`nnlandmark.data.pairs.swap_permutation`).

    Returns
    -------
    data, points, mask : torch.Tensor
        New tensors; the inputs are not modified.

    Examples
    --------
    >>> data = torch.arange(4.0).reshape(1, 1, 4, 1)
    >>> points = torch.tensor([[[0.0, 0.0], [2.5, 0.0]]])
    >>> d, p, m = mirror_samples(data, points, torch.tensor([[True, False]]), [True], [0], [1, 0])
    >>> d.flatten().tolist(), p.tolist(), m.tolist()
    ([3.0, 2.0, 1.0, 0.0], [[[0.5, 0.0], [3.0, 0.0]]], [[False, True]])
    """
    data, points, mask = data.clone(), points.clone(), mask.clone()
    swap = torch.as_tensor(swap, dtype=torch.long, device=points.device)
    spatial = data.shape[2:]
    for b in range(data.shape[0]):
        if not flip[b]:
            continue
        axis = int(axes[b])
        data[b] = torch.flip(data[b], (axis + 1,))
        points[b, :, axis] = spatial[axis] - 1 - points[b, :, axis]
        points[b] = points[b, swap]
        mask[b] = mask[b, swap]
    return data, points, mask


def _squared_distances(points: torch.Tensor, spatial_shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distance of every voxel to every point, plus the finite-point mask.

    Built from one 1-D grid per axis and broadcasting, so the only full-size
    allocation is the result itself, shape ``(B, L, *spatial_shape)``.
    """
    if points.ndim != 3:
        raise ValueError(f"points must be (B, L, D), got shape {tuple(points.shape)}")
    spatial_shape = tuple(int(s) for s in spatial_shape)
    ndim = len(spatial_shape)
    if points.shape[-1] != ndim:
        raise ValueError(f"points have {points.shape[-1]} coordinates but spatial_shape has {ndim} axes")
    dtype = points.dtype if points.is_floating_point() else torch.float32
    # Targets are constants; detaching lets the callers work in place.
    points = points.detach().to(dtype)
    valid = torch.isfinite(points).all(dim=-1)  # (B, L)
    # NaN points become 0 here and are zeroed by the caller; this keeps NaN out
    # of intermediate arithmetic.
    safe = torch.where(valid.unsqueeze(-1), points, torch.zeros_like(points))

    d2 = None
    for axis, size in enumerate(spatial_shape):
        grid = torch.arange(size, dtype=dtype, device=points.device)
        view = [1] * ndim
        view[axis] = size
        diff = grid.view(*view) - safe[..., axis].reshape(*safe.shape[:2], *([1] * ndim))
        term = diff * diff
        d2 = term if d2 is None else d2 + term
    return d2, valid


def cone_heatmaps(points: torch.Tensor, spatial_shape: Sequence[int], radius: float = 15.0) -> torch.Tensor:
    """Linear cone heatmaps: ``max(0, 1 - d / radius)``.

    Parameters
    ----------
    points : torch.Tensor
        ``(B, L, D)`` continuous voxel indices (sub-voxel allowed); NaN marks a
        landmark absent from the patch.
    spatial_shape : sequence of int
        The ``D`` spatial sizes of the output.
    radius : float
        Distance in voxels at which the cone reaches 0.

    Returns
    -------
    torch.Tensor
        ``(B, L, *spatial_shape)`` on ``points``' device, dtype of ``points``
        (float32 for integer points). 1 at the point itself, falling linearly
        with the Euclidean distance ``d`` to 0 at ``d >= radius``. A point with
        any NaN coordinate gives an all-zero channel.

    Notes
    -----
    Points outside the patch are kept, not dropped: a landmark just beyond the
    patch edge contributes the part of its cone that reaches inside, so the
    network learns the slope towards it. Only a point farther than ``radius``
    from every voxel yields an all-zero channel.

    Examples
    --------
    >>> hm = cone_heatmaps(torch.tensor([[[0.0, 0.0]]]), (1, 4), radius=2.0)
    >>> hm[0, 0]
    tensor([[1.0000, 0.5000, 0.0000, 0.0000]])
    >>> cone_heatmaps(torch.tensor([[[-1.0, 0.0]]]), (1, 4), radius=2.0)[0, 0]
    tensor([[0.5000, 0.2929, 0.0000, 0.0000]])
    """
    radius = float(radius)
    if not radius > 0:
        raise ValueError(f"radius must be positive, got {radius}")
    d2, valid = _squared_distances(points, spatial_shape)
    out = d2.sqrt_().mul_(-1.0 / radius).add_(1.0).clamp_(min=0.0)
    return _zero_invalid(out, valid)


def _per_landmark(sigma, num_landmarks: int, like: torch.Tensor) -> torch.Tensor | float:
    """``sigma`` as a python float (one for all landmarks) or an ``(L,)`` tensor shaped to
    broadcast over ``like`` (``(B, L, *spatial)``), on its device and in its dtype.

    A tensor keeps its autograd graph (learned sigmas); a python float keeps the
    single-sigma arithmetic of the scalar case exactly as it was.
    """
    if isinstance(sigma, torch.Tensor) and sigma.ndim == 0:
        sigma = sigma.reshape(1)
    if not isinstance(sigma, torch.Tensor):
        values = [float(s) for s in (sigma if isinstance(sigma, Sequence) else [sigma])]
        if not all(v > 0 for v in values):  # also refuses NaN
            raise ValueError(f"sigma must be positive, got {sigma}")
        if len(values) == 1:
            return values[0]
        sigma = torch.tensor(values)
    elif not bool((sigma.detach() > 0).all()):
        raise ValueError(f"sigma must be positive, got {sigma.detach().tolist()}")
    if sigma.shape[0] == 1:
        sigma = sigma.expand(num_landmarks)
    if sigma.shape != (num_landmarks,):
        raise ValueError(f"expected one sigma or one per landmark ({num_landmarks}), got shape {tuple(sigma.shape)}")
    return sigma.to(device=like.device, dtype=like.dtype).reshape(1, num_landmarks, *([1] * (like.ndim - 2)))


def gaussian_heatmaps(points: torch.Tensor, spatial_shape: Sequence[int], sigma=4.0) -> torch.Tensor:
    """Unnormalised Gaussian heatmaps: ``exp(-d^2 / (2 sigma^2))``, peak 1.

    Parameters
    ----------
    points : torch.Tensor
        ``(B, L, D)`` continuous voxel indices; NaN marks an absent landmark.
    spatial_shape : sequence of int
        The ``D`` spatial sizes of the output.
    sigma : float, sequence of float or torch.Tensor
        Standard deviation in voxels: one for every landmark, or one per
        landmark (``L`` values). A tensor that requires grad (learned sigmas)
        keeps the heatmaps in its autograd graph.

    Returns
    -------
    torch.Tensor
        ``(B, L, *spatial_shape)`` on ``points``' device, dtype of ``points``
        (float32 for integer points). All-zero channel for a NaN point. As for
        :func:`cone_heatmaps`, points outside the patch keep their tail inside.
        Normalised to sum 1 (the softmax objective does it, see
        :func:`nnlandmark.training.losses.spatial_softmax_cross_entropy`), each
        channel is a discretised Gaussian distribution with standard deviation
        ``sigma`` along every axis.

    Examples
    --------
    >>> hm = gaussian_heatmaps(torch.tensor([[[0.0]]]), (3,), sigma=1.0)
    >>> hm
    tensor([[[1.0000, 0.6065, 0.1353]]])
    >>> gaussian_heatmaps(torch.tensor([[[0.0], [0.0]]]), (3,), sigma=[1.0, 2.0])[0, 1]  # one sigma per landmark
    tensor([1.0000, 0.8825, 0.6065])
    """
    d2, valid = _squared_distances(points, spatial_shape)
    sigma = _per_landmark(sigma, d2.shape[1], d2)
    if isinstance(sigma, torch.Tensor) and sigma.requires_grad:
        out = torch.exp(d2 * (-0.5 / (sigma * sigma)))  # out of place: autograd keeps its inputs
    else:
        out = d2.mul_(-0.5 / (sigma * sigma)).exp_()
    return _zero_invalid(out, valid)


def laplace_scale(sigma, ndim: int = 3):
    """The scale ``b`` of a Laplace heatmap ``exp(-d / b)`` whose distribution has standard deviation
    ``sigma`` along each of ``ndim`` axes: ``b = sigma / sqrt(ndim + 1)``.

    The distance ``d`` of a ``ndim``-dimensional density proportional to
    ``exp(-d / b)`` follows a Gamma(``ndim``, ``b``) distribution, so
    ``E[d^2] = ndim (ndim + 1) b^2``, shared equally by the axes. Matching the
    Gaussian's per-axis variance ``sigma^2`` makes the two shapes comparable
    at the same ``sigma``: same spread, a sharper peak and heavier tails for
    the Laplace.

    Examples
    --------
    >>> laplace_scale(1.5), laplace_scale(math.sqrt(3.0), ndim=2)
    (0.75, 1.0)
    """
    return sigma / math.sqrt(ndim + 1)


def laplace_heatmaps(points: torch.Tensor, spatial_shape: Sequence[int], sigma=1.5) -> torch.Tensor:
    """Unnormalised Laplace heatmaps: ``exp(-d / b)``, peak 1, with ``b = laplace_scale(sigma, D)``.

    Parameters
    ----------
    points : torch.Tensor
        ``(B, L, D)`` continuous voxel indices; NaN marks an absent landmark.
    spatial_shape : sequence of int
        The ``D`` spatial sizes of the output.
    sigma : float, sequence of float or torch.Tensor
        Standard deviation in voxels of the (continuous) distribution along
        each axis, as for :func:`gaussian_heatmaps`: one for every landmark or
        one per landmark. In 3D, ``b = sigma / 2``.

    Returns
    -------
    torch.Tensor
        ``(B, L, *spatial_shape)``, as :func:`gaussian_heatmaps` returns: all-zero
        channel for a NaN point, points outside the patch keep their tail.

    Examples
    --------
    >>> laplace_heatmaps(torch.tensor([[[0.0]]]), (3,), sigma=math.sqrt(2.0))  # 1-D: b = 1, exp(-d)
    tensor([[[1.0000, 0.3679, 0.1353]]])
    """
    d2, valid = _squared_distances(points, spatial_shape)
    scale = laplace_scale(_per_landmark(sigma, d2.shape[1], d2), len(spatial_shape))
    if isinstance(scale, torch.Tensor) and scale.requires_grad:
        out = torch.exp(d2.sqrt() * (-1.0 / scale))
    else:
        out = d2.sqrt_().mul_(-1.0 / scale).exp_()
    return _zero_invalid(out, valid)


class LearnedSigmas(torch.nn.Module):
    """Per-landmark target sigmas learned with the network (``heatmap="adaptive"``).

    Thaler et al. (2021, "Modeling annotation uncertainty with Gaussian
    heatmaps in landmark localization") learn each landmark's Gaussian sigma
    jointly with the network, with a penalty on large sigmas in the loss: a
    landmark the network cannot place precisely (an uncertain annotation, an
    ambiguous structure) ends with a wider target than a sharp one. This
    module holds the sigmas; the objective that trains them is
    :class:`nnlandmark.training.losses.SigmaPenalty` around the preset's loss.

    ``sigma = exp(step_scale * raw)``: learning the logarithm keeps sigma
    positive and lets it change by a share of itself per step, and
    ``step_scale`` makes that share about ``step_scale`` times the learning
    rate under Adam (whose steps are about ``lr`` in ``raw``, whatever the
    gradient's size), so that a sigma can move by tens of percent within the
    few hundred iterations of a CPU training instead of a few. ``step_scale``
    is a buffer: a checkpoint says how to read its ``raw``.

    Parameters
    ----------
    initial : sequence of float
        The ``L`` starting sigmas in voxels.
    step_scale : float
        See above.

    Examples
    --------
    >>> sigmas = LearnedSigmas([1.5, 3.0])
    >>> [round(v, 4) for v in sigmas().tolist()]
    [1.5, 3.0]
    >>> sorted(sigmas.state_dict())
    ['raw', 'step_scale']
    """

    def __init__(self, initial, step_scale: float = 10.0):
        super().__init__()
        initial = torch.as_tensor([float(v) for v in initial], dtype=torch.float32)
        if initial.ndim != 1 or not bool((initial > 0).all()):
            raise ValueError(f"initial sigmas must be positive, one per landmark, got {initial.tolist()}")
        self.register_buffer("step_scale", torch.tensor(float(step_scale)))
        self.raw = torch.nn.Parameter(initial.log() / self.step_scale)

    def forward(self) -> torch.Tensor:
        """The ``(L,)`` sigmas, in the autograd graph of ``raw``."""
        return torch.exp(self.raw * self.step_scale)


def _zero_invalid(out: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Zero the channels of NaN points, in place unless autograd needs ``out`` (learned sigmas)."""
    shape = (*valid.shape, *([1] * (out.ndim - 2)))
    keep = valid.reshape(shape).to(out.dtype)
    return out * keep if out.requires_grad else out.mul_(keep)


def inside_patch(points: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """``(B, L)`` bool: which points lie within the patch's voxel centres (NaN: no).

    Examples
    --------
    >>> inside_patch(torch.tensor([[[0.0, 3.0], [-0.5, 1.0], [float("nan"), 0.0]]]), (4, 4)).tolist()
    [[True, False, False]]
    """
    upper = torch.as_tensor([s - 1 for s in spatial_shape], dtype=points.dtype, device=points.device)
    return ((points >= 0) & (points <= upper)).all(dim=-1)
