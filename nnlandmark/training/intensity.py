"""Contrast augmentation: random intensity remapping, so a model does not rely on one contrast.

nnU-Net's intensity augmentation (noise, blur, brightness, contrast, gamma,
occasionally inverted) keeps the order of intensities almost always; a model
trained on T1-weighted images then fails on T2-weighted ones, where the same
tissues have other grey values. Remapping the intensities of a share of the
training patches through a random, non-monotonic curve leaves only the shapes
and edges of the anatomy to learn from, as contrast-agnostic training does
(SynthSeg-style randomisation, here on real images).

Examples
--------
>>> import torch
>>> x = torch.linspace(-1, 1, 5).reshape(1, 1, 5)
>>> y = random_intensity_remap(x, probability=1.0, generator=torch.Generator().manual_seed(0))
>>> y.shape == x.shape, bool(torch.isclose(y.mean(), torch.tensor(0.0), atol=1e-5))
(True, True)
"""
from __future__ import annotations

import torch

__all__ = ["random_intensity_remap"]


def random_intensity_remap(data: torch.Tensor, probability: float = 0.5, knots: int = 6,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """Remap the intensities of a random share of the samples through random curves.

    Parameters
    ----------
    data : torch.Tensor
        ``(B, C, *spatial)`` image patches (nnU-Net-normalised, any range).
    probability : float
        Chance that a sample is remapped (all its channels, each with its own curve).
    knots : int
        Points of the piecewise-linear curve, evenly spaced between the
        channel's 1st and 99th percentile; each gets an output value drawn
        uniformly from that range, so the curve is usually non-monotonic.
        Values beyond the end knots keep the end knots' outputs (flat tails).
    generator : torch.Generator, optional
        For reproducible draws.

    Returns
    -------
    torch.Tensor
        A new tensor; remapped channels are standardised again (mean 0, std 1,
        as nnU-Net's z-score normalisation leaves them); the others are unchanged.
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {probability}")
    if knots < 2:
        raise ValueError(f"knots must be >= 2, got {knots}")
    out = data.clone()
    chosen = torch.rand(data.shape[0], generator=generator) < probability
    for b in torch.nonzero(chosen).flatten().tolist():
        for c in range(data.shape[1]):
            x = data[b, c]
            flat = x.reshape(-1).float()
            picks = torch.randint(flat.numel(), (min(flat.numel(), 20000),), generator=generator)
            lo, hi = torch.quantile(flat[picks.to(flat.device)], torch.tensor([0.01, 0.99], device=flat.device)).tolist()
            if not hi > lo:
                continue  # a constant patch has no contrast to change
            ys = (lo + (hi - lo) * torch.rand(knots, generator=generator)).to(flat.device)
            position = ((flat.clamp(lo, hi) - lo) / (hi - lo) * (knots - 1)).clamp(0, knots - 1 - 1e-6)
            left = position.floor().long()
            t = position - left
            mapped = ys[left] * (1 - t) + ys[left + 1] * t
            std = mapped.std()
            mapped = (mapped - mapped.mean()) / std if std > 0 else mapped - mapped.mean()
            out[b, c] = mapped.reshape(x.shape).to(out.dtype)
    return out
