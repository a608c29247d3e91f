"""Heatmap regression losses with per-sample landmark masking.

Both losses take raw network outputs (``logits``) and targets in ``[0, 1]`` of
the same shape ``(B, L, *spatial)``. A ``channel_mask`` of shape ``(B, L)``
marks which landmarks are annotated for each sample; unknown ones
(``False``) contribute nothing, neither to the value nor to the gradient.
Each kept ``(sample, channel)`` pair weighs the same in the final mean.

Examples
--------
>>> import torch
>>> logits = torch.zeros(1, 2, 4)
>>> target = torch.zeros(1, 2, 4)
>>> round(float(topk_bce_with_logits(logits, target, fraction=0.25)), 4)  # log(2)
0.6931
>>> float(mse_on_sigmoid(logits, target))  # sigmoid(0) = 0.5
0.25
>>> target[0, :, 1] = 1.0
>>> round(float(spatial_softmax_cross_entropy(logits, target)), 4)  # log(4): uniform over 4 voxels
1.3863
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["topk_bce_with_logits", "mse_on_sigmoid", "spatial_softmax_cross_entropy", "spatial_softmax_kl",
           "spatial_softmax_absent_cross_entropy", "present_log_probability", "SigmaPenalty"]


def _check_shapes(logits: torch.Tensor, target: torch.Tensor, channel_mask: torch.Tensor | None) -> None:
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
    if logits.ndim < 3:
        raise ValueError(f"expected (B, L, *spatial), got shape {tuple(logits.shape)}")
    if channel_mask is not None and tuple(channel_mask.shape) != tuple(logits.shape[:2]):
        raise ValueError(f"channel_mask must be (B, L) = {tuple(logits.shape[:2])}, got {tuple(channel_mask.shape)}")


def _select_channels(logits: torch.Tensor, target: torch.Tensor, channel_mask: torch.Tensor | None):
    """Flatten to ``(K, N)`` rows of kept ``(sample, channel)`` pairs.

    Selecting before computing the per-voxel loss skips all work on unknown
    landmarks.
    """
    n_voxels = math.prod(logits.shape[2:])
    logits = logits.reshape(-1, n_voxels)
    target = target.reshape(-1, n_voxels)
    if channel_mask is not None:
        keep = channel_mask.reshape(-1).to(device=logits.device, dtype=torch.bool)
        logits, target = logits[keep], target[keep]
    return logits, target


def _zero_loss(logits: torch.Tensor) -> torch.Tensor:
    # A zero that is still part of the graph, so ``backward()`` works (and gives
    # zero gradients) when a batch has no annotated landmark at all. Summing an
    # empty slice, unlike ``logits.sum() * 0``, stays 0 if logits hold inf/NaN.
    return logits.reshape(-1)[:0].float().sum()


def topk_bce_with_logits(
    logits: torch.Tensor,
    target: torch.Tensor,
    fraction: float = 0.2,
    channel_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean of the hardest ``fraction`` of per-voxel BCE losses, per channel.

    Parameters
    ----------
    logits : torch.Tensor
        ``(B, L, *spatial)`` raw outputs (before the sigmoid).
    target : torch.Tensor
        Same shape, values in ``[0, 1]`` (soft heatmap targets are fine).
    fraction : float
        Share of voxels kept per ``(sample, channel)``, in ``(0, 1]``.
    channel_mask : torch.Tensor, optional
        ``(B, L)`` bool; ``False`` excludes that landmark of that sample.

    Returns
    -------
    torch.Tensor
        Scalar float32. Computed as follows: the per-voxel loss is
        ``binary_cross_entropy_with_logits(logits, target)``. For every kept
        ``(sample, channel)`` pair with ``N`` voxels, the
        ``k = max(1, ceil(fraction * N))`` largest per-voxel losses are averaged
        (ties at the k-th value are broken arbitrarily, which does not change
        the value). The result is the plain mean of these per-pair averages.
        When the mask keeps no pair, a zero connected to ``logits``' graph.

    Notes
    -----
    ``fraction * N`` is rounded to 9 decimals before the ceiling so that float
    noise (``0.2 * 15 = 3.0000000000000004``) does not add a voxel.
    The loss is computed in float32 even for half-precision logits.

    Examples
    --------
    >>> logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0, 10.0]]])
    >>> target = torch.tensor([[[0.0, 0.0, 0.0, 0.0, 0.0]]])
    >>> round(float(topk_bce_with_logits(logits, target, fraction=0.2)), 4)  # k = 1
    10.0
    """
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    _check_shapes(logits, target, channel_mask)
    rows_logits, rows_target = _select_channels(logits, target, channel_mask)
    if rows_logits.shape[0] == 0:
        return _zero_loss(logits)
    n_voxels = rows_logits.shape[1]
    k = max(1, math.ceil(round(fraction * n_voxels, 9)))
    per_voxel = F.binary_cross_entropy_with_logits(
        rows_logits.float(), rows_target.float(), reduction="none"
    )
    if k < n_voxels:
        per_voxel = per_voxel.topk(k, dim=1, sorted=False).values
    return per_voxel.mean(dim=1).mean()


def mse_on_sigmoid(
    logits: torch.Tensor,
    target: torch.Tensor,
    channel_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error between ``sigmoid(logits)`` and ``target`` (the "v1" preset).

    Parameters
    ----------
    logits : torch.Tensor
        ``(B, L, *spatial)`` raw outputs.
    target : torch.Tensor
        Same shape, values in ``[0, 1]``.
    channel_mask : torch.Tensor, optional
        ``(B, L)`` bool; ``False`` excludes that landmark of that sample.

    Returns
    -------
    torch.Tensor
        Scalar float32: the mean over all voxels of the kept ``(sample,
        channel)`` pairs (equal to the mean of per-pair means, since every pair
        has the same number of voxels). When the mask keeps no pair, a zero
        connected to ``logits``' graph.

    Examples
    --------
    >>> logits = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])
    >>> target = torch.tensor([[[1.0, 1.0], [0.5, 0.5]]])
    >>> float(mse_on_sigmoid(logits, target, channel_mask=torch.tensor([[False, True]])))
    0.0
    """
    _check_shapes(logits, target, channel_mask)
    rows_logits, rows_target = _select_channels(logits, target, channel_mask)
    if rows_logits.shape[0] == 0:
        return _zero_loss(logits)
    return F.mse_loss(torch.sigmoid(rows_logits.float()), rows_target.float())


def spatial_softmax_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    channel_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy between a per-channel softmax over all voxels and the normalised target.

    Each ``(sample, channel)`` output is read as one probability distribution
    over the patch's voxels, ``p = softmax(logits)`` over the spatial axes, and
    compared with the target heatmap scaled to sum 1, ``q = target / sum(target)``:
    the loss is ``-sum(q * log p)``. Unlike a per-voxel loss, every voxel
    competes with every other for the one landmark, so the gradient is the same
    size whatever the share of background, which is why it learns to localise
    in a few hundred iterations where per-voxel BCE has not started.

    Parameters
    ----------
    logits : torch.Tensor
        ``(B, L, *spatial)`` raw outputs.
    target : torch.Tensor
        Same shape, non-negative (e.g. Gaussian heatmaps).
    channel_mask : torch.Tensor, optional
        ``(B, L)`` bool; ``False`` excludes that landmark of that sample. A
        target that sums to 0 (landmark absent, or outside the patch) is
        excluded too: it defines no distribution.

    Returns
    -------
    torch.Tensor
        Scalar float32, the mean over kept pairs of ``-sum(q * log_softmax(logits))``.
        Its minimum is the entropy of ``q`` (reached when ``p = q``); an
        untrained network (``p`` uniform) scores ``log(N)`` for ``N`` voxels.
        When nothing is kept, a zero connected to ``logits``' graph.

    Examples
    --------
    >>> logits = torch.tensor([[[0.0, 0.0], [0.0, 5.0]]])
    >>> target = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    >>> round(float(spatial_softmax_cross_entropy(logits, target)), 4)  # (log 2 + log(1 + e^-5)) / 2
    0.3499
    >>> round(float(spatial_softmax_cross_entropy(logits, target, torch.tensor([[False, True]]))), 4)
    0.0067
    """
    rows = _distributions(logits, target, channel_mask)
    if rows is None:
        return _zero_loss(logits)
    q, log_p = rows
    return -(q * log_p).sum(dim=1).mean()


def present_log_probability(logits: torch.Tensor) -> torch.Tensor:
    """``log(1 - p(absent))`` per channel of ``(L, *spatial)`` logits, under
    :func:`spatial_softmax_absent_cross_entropy`'s model: ``(L,)`` float32.

    The absent slot has the logit ``log N`` beside the channel's ``N`` voxel
    logits ``z``, so ``p(present) = sigmoid(logsumexp z - log N)``: the slot
    competes with the channel's mean ``exp z``, whatever the size of the
    array (a training patch, or a whole scan at prediction).

    Examples
    --------
    >>> round(float(present_log_probability(torch.zeros(1, 3)).exp()), 4)  # an untrained network: 1/2
    0.5
    >>> round(float(present_log_probability(torch.full((1, 2, 2), -30.0)).exp()), 6)  # far below the slot
    0.0
    """
    flat = logits.float().reshape(logits.shape[0], -1)
    return F.logsigmoid(torch.logsumexp(flat, dim=1) - math.log(flat.shape[1]))


def spatial_softmax_absent_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    channel_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of a per-channel softmax over all voxels *plus one "absent" slot*.

    The softmax preset's objective (:func:`spatial_softmax_cross_entropy`) for
    datasets with absent landmarks: each channel's ``N`` voxels compete with one
    more outcome, "not in this patch", whose logit is fixed at ``log N``. A
    channel whose target has mass (present in the patch) is trained towards
    ``q`` on the voxels and nothing on the slot, ``-sum(q * log p)``; a kept
    channel whose target is all zero (annotated absent, or cropped out of the
    patch) towards the slot, ``-log p(absent)``. The present probability is
    ``sigmoid(logsumexp z - log N)`` (:func:`present_log_probability`).

    Why ``log N`` and not 0: the slot then competes with the *mean* voxel, so
    an untrained network (all logits 0) gives it 1/2, and telling present from
    absent needs the logits' level to move by a few units, as localising does.
    With a slot at 0 it would start at ``1 / (N + 1)``, and the network would
    have to lower every logit by ``log N`` (10 for a 32^3 patch) for an absent
    landmark, which Adam at 1e-3 does in thousands of steps, not hundreds.

    Why it leaves localisation alone: the distribution over the voxels given
    presence is the plain spatial softmax of the same logits, which present
    channels still train towards ``q``; the slot only adds a term that depends
    on the logits' overall level (``logsumexp``), not on where the mass is. The
    loss starts at ``log(2 N)``, ``log 2`` above the plain objective's ``log N``.

    Parameters
    ----------
    logits, target, channel_mask
        As for :func:`spatial_softmax_cross_entropy`; here an all-zero target
        of a kept channel counts (as absent) instead of being left out.

    Examples
    --------
    >>> logits = torch.zeros(1, 2, 3)
    >>> target = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    >>> round(float(spatial_softmax_absent_cross_entropy(logits, target)), 4)  # (log 6 + log 2) / 2
    1.2425
    >>> low = torch.full((1, 1, 3), -20.0)  # every voxel far below the slot: absent, at no cost
    >>> round(float(spatial_softmax_absent_cross_entropy(low, torch.zeros(1, 1, 3))), 6)
    0.0
    """
    _check_shapes(logits, target, channel_mask)
    rows_logits, rows_target = _select_channels(logits, target, channel_mask)
    if rows_logits.shape[0] == 0:
        return _zero_loss(logits)
    z = rows_logits.float()
    log_n = math.log(z.shape[1])
    lse = torch.logsumexp(z, dim=1)
    log_norm = torch.logaddexp(lse, torch.full_like(lse, log_n))  # log(N + sum exp z): slot and voxels
    mass = rows_target.float().sum(dim=1)
    present = mass > 0
    q = rows_target.float() / mass.clamp_min(torch.finfo(torch.float32).tiny)[:, None]
    # present: -sum q (z - log_norm) = log_norm - sum q z; absent: -log p(absent) = log_norm - log N
    per_row = log_norm - torch.where(present, (q * z).sum(dim=1), torch.full_like(lse, log_n))
    return per_row.mean()


def _distributions(logits: torch.Tensor, target: torch.Tensor, channel_mask: torch.Tensor | None):
    """``(q, log p)``, ``(K, N)`` rows of the kept pairs whose target has mass, or None when none has."""
    _check_shapes(logits, target, channel_mask)
    rows_logits, rows_target = _select_channels(logits, target, channel_mask)
    mass = rows_target.float().sum(dim=1)
    keep = mass > 0
    if not bool(keep.all()):
        rows_logits, rows_target, mass = rows_logits[keep], rows_target[keep], mass[keep]
    if rows_logits.shape[0] == 0:
        return None
    return rows_target.float() / mass[:, None], torch.log_softmax(rows_logits.float(), dim=1)


def spatial_softmax_kl(
    logits: torch.Tensor,
    target: torch.Tensor,
    channel_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL divergence ``KL(q || p)`` of the normalised target from the per-channel spatial softmax.

    :func:`spatial_softmax_cross_entropy` minus the entropy of ``q``: the same
    gradient for the network (the entropy does not depend on ``logits``), but
    differentiable in the target too, in the way a learned target width needs.
    Cross-entropy alone pulls a learned sigma to 0 whatever the network does
    (for a network whose ``p`` is a Gaussian of width ``s`` around the point,
    ``CE = D sigma^2 / (2 s^2) + const`` in ``D`` dimensions, smallest at
    ``sigma = 0``); the divergence, ``D sigma^2 / (2 s^2) - D log sigma + const``,
    is smallest at ``sigma = s``: the target's width follows the network's own
    spread, wider for landmarks it cannot place precisely.

    Parameters
    ----------
    logits, target, channel_mask
        As for :func:`spatial_softmax_cross_entropy`; ``target`` may require grad.

    Returns
    -------
    torch.Tensor
        Scalar float32, the mean over kept pairs of ``sum(q * (log q - log_softmax(logits)))``
        (``0 log 0 = 0``); 0 when ``p = q``. When nothing is kept, a zero
        connected to ``logits``' graph.

    Examples
    --------
    >>> target = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]])
    >>> round(float(spatial_softmax_kl(torch.zeros(1, 1, 4), target)), 4)  # log 4 - log 2
    0.6931
    >>> float(spatial_softmax_kl(torch.tensor([[[0.0, 0.0, -1e4, -1e4]]]), target))  # p = q
    0.0
    """
    rows = _distributions(logits, target, channel_mask)
    if rows is None:
        return _zero_loss(logits)
    q, log_p = rows
    # q log q taken as 0 where q = 0, with a gradient of 0 there too: torch.xlogy's gradient
    # at q = 0 is -inf, which times a zero derivative of the target (far in a Gaussian's tail,
    # where it underflows to 0) would give NaN
    tiny = torch.finfo(q.dtype).tiny
    q_log_q = torch.where(q > 0, q * torch.log(q.clamp_min(tiny)), torch.zeros_like(q))
    return (q_log_q - q * log_p).sum(dim=1).mean()


class SigmaPenalty:
    """``loss(logits, target, channel_mask)`` of a preset plus ``weight`` times the mean ``sigma^2``.

    The penalty of Thaler et al. (2021) on learned target sigmas
    (:class:`nnlandmark.training.targets.LearnedSigmas`): without it a
    sigma grows with no limit, because a wider target is easier to match and
    the network, matched to it, becomes wider in turn.

    The mean is over the batch's kept ``(sample, landmark)`` pairs, the ones
    the loss averages over: each landmark's sigma is penalised in proportion
    to its share of the loss. A plain mean over landmarks would let the
    penalty win for a landmark that is rarely in the patch (the cascade's
    local stage supervises only the landmarks inside each patch) and shrink
    its sigma whatever the network does. With the softmax
    objective's divergence (:func:`spatial_softmax_kl`) and a network whose
    error spread is ``e`` voxels, a sigma settles where
    ``weight * sigma^2 * 2 / D = e^2 / (sigma^2 + e^2)``; with ``weight`` 0.1 in
    3D: about 1.35 voxels for ``e`` = 0.5, 1.8 for ``e`` = 1, 2.45 for ``e`` = 2.

    ``per_voxel``: for a loss that is a mean over voxels (:func:`mse_on_sigmoid`),
    the penalty is divided by the voxels per channel, so that it weighs
    against the per-channel sum of errors as in Thaler et al., not against
    their mean over a patch of any size.

    Parameters
    ----------
    loss : callable
        ``loss(logits, target, channel_mask=None)``, differentiable in ``target``.
    sigmas : callable
        ``sigmas()`` -> ``(L,)`` tensor (the module, read at every call).
    weight : float
        Penalty per squared voxel.
    per_voxel : bool
        See above.

    Examples
    --------
    >>> from nnlandmark.training.targets import LearnedSigmas
    >>> loss = SigmaPenalty(spatial_softmax_kl, LearnedSigmas([1.0, 3.0]), weight=0.1)
    >>> target = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    >>> logits = torch.tensor([[[9.0, -9.0], [-9.0, 9.0]]])  # p = q: the divergence is ~0
    >>> round(float(loss(logits, target)), 4)  # 0.1 * (1 + 9) / 2
    0.5
    >>> round(float(loss(logits, target, channel_mask=torch.tensor([[False, True]]))), 4)  # 0.1 * 9
    0.9
    """

    def __init__(self, loss, sigmas, weight: float, per_voxel: bool = False):
        if not weight >= 0:
            raise ValueError(f"the sigma penalty's weight must be >= 0, got {weight}")
        self.loss, self.sigmas, self.weight, self.per_voxel = loss, sigmas, float(weight), per_voxel

    def __call__(self, logits: torch.Tensor, target: torch.Tensor,
                 channel_mask: torch.Tensor | None = None) -> torch.Tensor:
        sigma = self.sigmas().to(logits.device)
        if channel_mask is None:
            pairs = torch.full(sigma.shape, float(logits.shape[0]), device=logits.device)
        else:
            pairs = channel_mask.to(device=logits.device, dtype=sigma.dtype).sum(dim=0)
        penalty = self.weight * (pairs * sigma ** 2).sum() / pairs.sum().clamp_min(1.0)
        if self.per_voxel:
            penalty = penalty / math.prod(logits.shape[2:])
        return self.loss(logits, target, channel_mask=channel_mask) + penalty
