"""H3DE-style hybrid CNN + transformer network for 3D landmark heatmap regression.

Written from the description in *H3DE-Net: Efficient and Accurate 3D Landmark
Detection in Medical Imaging* (Huang et al., arXiv:2502.14221) and from the
description of bi-level routing attention in *BiFormer* (Zhu et al., CVPR 2023).
No code from either project was used.

Pieces
------
:func:`topk_regions`
    Region-to-region routing: the ``k`` key regions with the largest affinity
    ``q_r . k_r`` for every query region.
:class:`BiLevelRoutingAttention3d`
    Volumetric bi-level routing attention (V-BRA). Tokens are grouped into
    regions of ``r_d x r_h x r_w`` voxels; each region routes to its top-k
    regions, and its tokens attend (multi-head, token-to-token) only to the
    tokens of those ``k`` regions. A depthwise conv on V adds local context
    (BiFormer's LePE).
:class:`BRABlock3d`
    Pre-norm transformer block: CPE -> LN -> BRA -> residual -> LN -> MLP ->
    residual. LayerNorm over channels on a channels-last view.
:class:`H3DENet`
    nnU-Net-style conv encoder/decoder whose deepest stages add BRA blocks after
    their convs, with multi-scale fusion of all decoder stages at full
    resolution.
:func:`build_h3de_from_plans`
    Builds :class:`H3DENet` from nnU-Net's ``network_arch_init_kwargs``.

Padding conventions
-------------------
* :class:`H3DENet` zero-pads the input at the high end of every axis to a
  multiple of the total stride and crops the logits back, so any input size is
  accepted.
* :class:`BiLevelRoutingAttention3d` pads its token grid at the high end to a
  whole number of regions. Padded tokens are **masked out**: they contribute to
  no region average and are never attended to, so the output on the real tokens
  is exactly what an unpadded computation over irregular edge regions would
  give (tested against a brute-force reference). With ``region_grid=n`` an axis
  of length ``L`` gets regions of ``ceil(L / n)`` tokens and therefore
  ``ceil(L / ceil(L / n)) <= n`` regions, which guarantees that no region is
  padding only.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "topk_regions",
    "BiLevelRoutingAttention3d",
    "BRABlock3d",
    "H3DENet",
    "build_h3de_from_plans",
]

Int3 = tuple[int, int, int]


def _triple(value: int | Sequence[int], name: str = "value") -> Int3:
    """Broadcast an int to three axes, or check a length-3 sequence."""
    if isinstance(value, int):
        return (value, value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 3:
        raise ValueError(f"{name} must be an int or have 3 entries, got {value}")
    return value  # type: ignore[return-value]


def _per_stage(value, n_stages: int, name: str) -> list:
    """Expand a scalar / per-axis value to one entry per stage."""
    if isinstance(value, int):
        return [value] * n_stages
    value = list(value)
    if len(value) != n_stages:
        raise ValueError(f"{name} needs {n_stages} entries, got {len(value)}")
    return value


def _default_heads(channels: int, head_dim: int = 32) -> int:
    """Largest head count <= channels // head_dim that divides channels (at least 1)."""
    heads = max(1, channels // head_dim)
    while channels % heads:
        heads -= 1
    return heads


# --------------------------------------------------------------------------- #
# Bi-level routing attention
# --------------------------------------------------------------------------- #
@torch.no_grad()
def topk_regions(region_q: torch.Tensor, region_k: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` most relevant key regions for every query region.

    Relevance is the region-level affinity ``A = Q_r K_r^T`` (BiFormer's
    routing step). The selection is not differentiable, hence ``no_grad``.

    Args:
        region_q: (B, S, C) region-level queries (per-region means of the queries).
        region_k: (B, S, C) region-level keys.
        k: how many regions to keep per query region, ``1 <= k <= S``.

    Returns:
        (B, S, k) int64 indices into the S key regions, by decreasing affinity.
    """
    n_regions = region_k.shape[1]
    if not 1 <= k <= n_regions:
        raise ValueError(f"k must lie in [1, {n_regions}], got {k}")
    affinity = region_q @ region_k.transpose(-1, -2)
    return torch.topk(affinity, k, dim=-1, largest=True, sorted=True).indices


def _to_regions(t: torch.Tensor, grid: Int3, region: Int3) -> torch.Tensor:
    """(B, gD*rD, gH*rH, gW*rW, X) -> (B, S, T, X), regions in C order."""
    b, x = t.shape[0], t.shape[-1]
    t = t.reshape(b, grid[0], region[0], grid[1], region[1], grid[2], region[2], x)
    t = t.permute(0, 1, 3, 5, 2, 4, 6, 7)
    return t.reshape(b, math.prod(grid), math.prod(region), x)


def _from_regions(t: torch.Tensor, grid: Int3, region: Int3) -> torch.Tensor:
    """Inverse of :func:`_to_regions`."""
    b, x = t.shape[0], t.shape[-1]
    t = t.reshape(b, *grid, *region, x).permute(0, 1, 4, 2, 5, 3, 6, 7)
    return t.reshape(b, grid[0] * region[0], grid[1] * region[1], grid[2] * region[2], x)


class BiLevelRoutingAttention3d(nn.Module):
    """Volumetric bi-level routing attention (BiFormer's BRA in 3D).

    1. ``q, k, v`` = linear projections of the tokens.
    2. Tokens are split into S regions; region-level ``q_r, k_r`` are the means
       of the (real, unpadded) tokens of each region.
    3. Every query region keeps the ``topk`` key regions of largest ``q_r . k_r``
       (:func:`topk_regions`).
    4. Each region's query tokens attend, multi-head, to all tokens of the
       gathered ``topk`` regions (``topk * T`` keys for T tokens per region).
    5. A depthwise conv on V (local context, "LePE") is added, then an output
       projection.

    Cost per query token is ``topk * T`` keys, i.e. linear in the number of
    tokens for a fixed region size.

    Args:
        dim: channels C.
        num_heads: attention heads; must divide ``dim``.
        region_grid: number of regions per axis (int or 3 ints). Regions then
            have ``ceil(L / n)`` tokens on an axis of length L (see module
            docstring for padding). Mutually exclusive with ``region_size``.
        region_size: tokens per region per axis (int or 3 ints); the region
            count grows with the input. Default when neither is given: 4.
        topk: routed regions per query region; clipped to the number of
            regions present, so a single-region input is global attention.
        lepe_kernel_size: kernel of the depthwise local-context conv on V.
        qkv_bias: bias of the q/k/v projection.

    Input/output: (B, C, D, H, W) via :meth:`forward`, or channels-last
    (B, D, H, W, C) via :meth:`forward_channels_last`.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 4,
        region_grid: int | Sequence[int] | None = None,
        region_size: int | Sequence[int] | None = None,
        topk: int = 4,
        lepe_kernel_size: int = 3,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide dim={dim}")
        if region_grid is not None and region_size is not None:
            raise ValueError("give region_grid or region_size, not both")
        if region_grid is None and region_size is None:
            region_size = 4
        self.region_grid = None if region_grid is None else _triple(region_grid, "region_grid")
        self.region_size = None if region_size is None else _triple(region_size, "region_size")
        if min(self.region_grid or self.region_size) < 1:  # type: ignore[arg-type]
            raise ValueError("region_grid / region_size entries must be >= 1")
        if topk < 1:
            raise ValueError("topk must be >= 1")
        self.dim, self.num_heads, self.topk = dim, num_heads, topk
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.lepe = nn.Conv3d(dim, dim, lepe_kernel_size, padding=lepe_kernel_size // 2, groups=dim)
        self.proj = nn.Linear(dim, dim)

    def regions_for(self, spatial: Sequence[int]) -> tuple[Int3, Int3]:
        """(region grid, tokens per region) actually used for a token grid of this size."""
        if self.region_grid is not None:
            size = tuple(math.ceil(s / g) for s, g in zip(spatial, self.region_grid))
        else:
            size = tuple(min(r, s) for r, s in zip(self.region_size, spatial))  # type: ignore[arg-type]
        grid = tuple(math.ceil(s / r) for s, r in zip(spatial, size))
        return grid, size  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, D, H, W) -> (B, C, D, H, W)."""
        out = self.forward_channels_last(x.permute(0, 2, 3, 4, 1))
        return out.permute(0, 4, 1, 2, 3)

    def forward_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W, C) -> (B, D, H, W, C)."""
        b, *spatial, c = x.shape
        h, hd = self.num_heads, self.head_dim
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        # Local context is computed on the unpadded grid so it does not see the padding.
        lepe = self.lepe(v.permute(0, 4, 1, 2, 3)).permute(0, 2, 3, 4, 1)

        grid, region = self.regions_for(spatial)
        pad = [g * r - s for g, r, s in zip(grid, region, spatial)]
        padded = any(pad)
        n_regions, n_tok = math.prod(grid), math.prod(region)

        def regions(t: torch.Tensor) -> torch.Tensor:
            if padded:
                t = F.pad(t, (0, 0, 0, pad[2], 0, pad[1], 0, pad[0]))
            return _to_regions(t, grid, region)

        q, k, v = regions(q), regions(k), regions(v)  # (B, S, T, C)

        if padded:
            valid = torch.zeros([g * r for g, r in zip(grid, region)], dtype=torch.bool, device=x.device)
            valid[: spatial[0], : spatial[1], : spatial[2]] = True
            valid = _to_regions(valid[None, ..., None], grid, region)[0, ..., 0]  # (S, T)
            weight = (valid / valid.sum(-1, keepdim=True)).to(q.dtype)  # every region has >= 1 real token
            region_q = torch.einsum("bstc,st->bsc", q, weight)
            region_k = torch.einsum("bstc,st->bsc", k, weight)
        else:
            region_q, region_k = q.mean(2), k.mean(2)

        kk = min(self.topk, n_regions)
        idx = topk_regions(region_q, region_k, kk)  # (B, S, kk)
        # Gather through a flat (B*S) index: avoids materialising a (B, S, S, T, C) expand.
        flat = (idx + torch.arange(b, device=x.device).view(b, 1, 1) * n_regions).reshape(-1)
        k_sel = k.reshape(b * n_regions, n_tok, c)[flat].reshape(b * n_regions, kk * n_tok, c)
        v_sel = v.reshape(b * n_regions, n_tok, c)[flat].reshape(b * n_regions, kk * n_tok, c)

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(t.shape[0], t.shape[1], h, hd).transpose(1, 2)

        mask = None
        if padded:
            # True = may attend; shape broadcasts over heads and query tokens.
            mask = valid[idx].reshape(b * n_regions, 1, 1, kk * n_tok)
        out = F.scaled_dot_product_attention(
            heads(q.reshape(b * n_regions, n_tok, c)), heads(k_sel), heads(v_sel),
            attn_mask=mask, scale=self.scale,
        )  # (B*S, h, T, hd)
        out = out.transpose(1, 2).reshape(b, n_regions, n_tok, c)
        out = _from_regions(out, grid, region)
        if padded:
            out = out[:, : spatial[0], : spatial[1], : spatial[2]]
        return self.proj(out + lepe)


class BRABlock3d(nn.Module):
    """Transformer block around :class:`BiLevelRoutingAttention3d`.

    ``x + dwconv(x)`` (conditional position encoding, as in BiFormer), then
    ``x + BRA(LN(x))`` and ``x + MLP(LN(x))``. LayerNorm normalises over the
    channels of each token, so the block works on a channels-last view
    internally; input and output are (B, C, D, H, W). No drop-path or layer
    scale: the blocks sit in an nnU-Net-sized network trained from scratch.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 4,
        region_grid: int | Sequence[int] | None = None,
        region_size: int | Sequence[int] | None = None,
        topk: int = 4,
        mlp_ratio: float = 4.0,
        lepe_kernel_size: int = 3,
    ) -> None:
        super().__init__()
        self.cpe = nn.Conv3d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = BiLevelRoutingAttention3d(dim, num_heads, region_grid, region_size, topk, lepe_kernel_size)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.cpe(x)
        t = x.permute(0, 2, 3, 4, 1)
        t = t + self.attn.forward_channels_last(self.norm1(t))
        t = t + self.mlp(self.norm2(t))
        return t.permute(0, 4, 1, 2, 3).contiguous()


# --------------------------------------------------------------------------- #
# Network
# --------------------------------------------------------------------------- #
def _conv_block(c_in: int, c_out: int, kernel: Int3, stride: Int3, n_convs: int, slope: float) -> nn.Sequential:
    """nnU-Net's stacked conv -> InstanceNorm -> LeakyReLU; the first conv carries the stride."""
    layers: list[nn.Module] = []
    for i in range(n_convs):
        layers += [
            nn.Conv3d(c_in if i == 0 else c_out, c_out, kernel, stride=stride if i == 0 else 1,
                      padding=tuple(k // 2 for k in kernel)),
            nn.InstanceNorm3d(c_out, eps=1e-5, affine=True),
            nn.LeakyReLU(slope, inplace=True),
        ]
    return nn.Sequential(*layers)


class H3DEDecoder(nn.Module):
    """Transposed-conv decoder with skip connections and multi-scale fusion.

    Every decoder stage output (full resolution first) is projected 1x1x1 to
    ``fusion_channels``, trilinearly upsampled to full resolution and summed;
    InstanceNorm + LeakyReLU + a 1x1x1 head give the logits. Projecting before
    upsampling keeps the full-resolution tensors at ``fusion_channels``.

    ``deep_supervision`` is a plain attribute so that nnU-Net's
    ``nnUNetTrainer.set_deep_supervision_enabled`` (which sets
    ``network.decoder.deep_supervision``) works unchanged. When on, the output
    is a list: fused full-resolution logits, then 1x1x1 heads on decoder stages
    1 .. n-2, matching nnU-Net's deep-supervision scales.
    """

    def __init__(self, features: list[int], strides: list[Int3], kernels: list[Int3],
                 n_conv_decoder: list[int], num_classes: int, fusion_channels: int,
                 deep_supervision: bool, slope: float) -> None:
        super().__init__()
        n = len(features)
        self.deep_supervision = deep_supervision
        self.up = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for s in range(n - 2, -1, -1):  # deepest decoder stage first
            self.up.append(nn.ConvTranspose3d(features[s + 1], features[s], strides[s + 1], strides[s + 1]))
            self.blocks.append(_conv_block(2 * features[s], features[s], kernels[s], (1, 1, 1), n_conv_decoder[s], slope))
        self.fuse_proj = nn.ModuleList(nn.Conv3d(features[s], fusion_channels, 1) for s in range(n - 1))
        self.fuse_act = nn.Sequential(nn.InstanceNorm3d(fusion_channels, eps=1e-5, affine=True),
                                      nn.LeakyReLU(slope, inplace=True))
        self.head = nn.Conv3d(fusion_channels, num_classes, 1)
        self.ds_heads = nn.ModuleList(nn.Conv3d(features[s], num_classes, 1) for s in range(1, n - 1))

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        """``skips``: encoder outputs, full resolution first, bottleneck last."""
        x = skips[-1]
        outs = []
        for up, block, skip in zip(self.up, self.blocks, reversed(skips[:-1])):
            x = block(torch.cat((up(x), skip), dim=1))
            outs.append(x)
        outs = outs[::-1]  # full resolution first
        size = outs[0].shape[2:]
        fused = self.fuse_proj[0](outs[0])
        for proj, o in zip(self.fuse_proj[1:], outs[1:]):
            fused = fused + F.interpolate(proj(o), size=size, mode="trilinear", align_corners=False)
        logits = self.head(self.fuse_act(fused))
        if not self.deep_supervision:
            return logits
        return [logits] + [head(o) for head, o in zip(self.ds_heads, outs[1:])]


class H3DENet(nn.Module):
    """Hybrid CNN + bi-level-routing-transformer U-Net for heatmap regression.

    Encoder stage ``s``: ``n_conv_per_stage[s]`` conv-InstanceNorm-LeakyReLU
    layers (the first strided by ``strides[s]``, as in nnU-Net), followed, for
    ``s`` in ``attention_stages``, by ``attention_depth`` :class:`BRABlock3d`.
    Decoder: see :class:`H3DEDecoder`.

    Args:
        input_channels: image channels.
        num_classes: output heatmap channels (one per landmark).
        features_per_stage: channels per stage.
        strides: per stage, int or 3 ints (nnU-Net plans' ``strides``; the
            first is normally ``[1, 1, 1]``).
        kernel_sizes: int, or per stage int / 3 ints.
        n_conv_per_stage: encoder convs per stage (int or per stage).
        n_conv_per_stage_decoder: decoder convs per stage ``0 .. n-2``
            (int or list of n-1); default = ``n_conv_per_stage``.
        attention_stages: stage indices (negative allowed) that get BRA blocks.
        num_heads: per attention stage (int or list aligned with
            ``attention_stages``); None -> about C // 32 (largest divisor of C
            not above it).
        topk: routed regions per query region.
        region_size: tokens per region per axis: int, 3 ints, or a list with one
            such entry per attention stage. Ignored where ``region_grid`` is set.
        region_grid: alternatively the regions per axis (same forms).
        attention_depth: BRA blocks per attention stage.
        mlp_ratio: transformer MLP expansion.
        fusion_channels: channels of the multi-scale fusion; default
            ``features_per_stage[0]``.
        head_bias_init: initial bias of the output head(s); e.g. ``-3`` makes
            the initial heatmap probability ~0.05, a prior for sparse targets.
        head_init_std: if given, the output head weights are drawn from
            N(0, head_init_std^2) instead of nnU-Net's He init (the default,
            as for every conv). Under plain SGD the gradient that reaches the
            rest of the network is proportional to the head weights: with
            ``1e-2`` (about 25x below He for 32 fusion channels) 40 SGD
            iterations of the cone preset left all landmark channels peaking
            at one shared voxel; keep small values for Adam-style optimisers.
        deep_supervision: return the list of outputs described in
            :class:`H3DEDecoder` (low-resolution outputs cropped to
            ``ceil(size / cumulative stride)``).
        negative_slope: LeakyReLU slope (nnU-Net: 0.01).

    Forward: (B, input_channels, D, H, W) of any size -> (B, num_classes, D, H, W)
    logits. The input is zero-padded at the high end of each axis to a multiple
    of the total stride, and the logits are cropped back.
    """

    def __init__(
        self,
        input_channels: int,
        num_classes: int,
        features_per_stage: Sequence[int],
        strides: Sequence[int | Sequence[int]],
        kernel_sizes: int | Sequence[int | Sequence[int]] = 3,
        n_conv_per_stage: int | Sequence[int] = 2,
        n_conv_per_stage_decoder: int | Sequence[int] | None = None,
        attention_stages: Sequence[int] = (-2, -1),
        num_heads: int | Sequence[int] | None = None,
        topk: int = 4,
        region_size: int | Sequence = 4,
        region_grid: int | Sequence | None = None,
        attention_depth: int = 1,
        mlp_ratio: float = 4.0,
        fusion_channels: int | None = None,
        head_bias_init: float = 0.0,
        head_init_std: float | None = None,
        deep_supervision: bool = False,
        negative_slope: float = 1e-2,
    ) -> None:
        super().__init__()
        features = [int(f) for f in features_per_stage]
        n = len(features)
        if n < 2:
            raise ValueError("H3DENet needs at least 2 stages")
        self.strides = [_triple(s, "stride") for s in _per_stage(strides, n, "strides")]
        kernels = [_triple(k, "kernel_size") for k in _per_stage(kernel_sizes, n, "kernel_sizes")]
        n_conv = _per_stage(n_conv_per_stage, n, "n_conv_per_stage")
        if n_conv_per_stage_decoder is None:
            n_conv_dec = n_conv[:-1]
        else:
            n_conv_dec = _per_stage(n_conv_per_stage_decoder, n - 1, "n_conv_per_stage_decoder")
        self.total_stride: Int3 = tuple(math.prod(s[a] for s in self.strides) for a in range(3))  # type: ignore[assignment]

        for s in attention_stages:
            if not -n <= s < n:
                raise ValueError(f"attention stage {s} out of range for {n} stages")
        order = [s % n for s in attention_stages]  # user order, for per-stage lists
        if len(set(order)) != len(order):
            raise ValueError(f"repeated attention stage in {attention_stages}")
        self.attention_stages = tuple(sorted(order))

        def per_att(value, name: str) -> dict:
            """Map a shared or per-attention-stage option to {stage: value}."""
            if isinstance(value, (list, tuple)) and any(isinstance(v, (list, tuple)) for v in value):
                per = True  # nested: one region spec per stage
            else:
                per = name == "num_heads" and isinstance(value, (list, tuple))
            if not per:
                return {s: value for s in order}
            if len(value) != len(order):
                raise ValueError(f"{name} needs one entry per attention stage ({len(order)}), got {value}")
            return dict(zip(order, value))

        heads = per_att(num_heads, "num_heads")
        sizes = per_att(region_size, "region_size")
        grids = per_att(region_grid, "region_grid")

        self.stages = nn.ModuleList()
        c_in = input_channels
        for s in range(n):
            layers: list[nn.Module] = [_conv_block(c_in, features[s], kernels[s], self.strides[s], n_conv[s], negative_slope)]
            if s in self.attention_stages:
                nh = heads[s] if heads[s] is not None else _default_heads(features[s])
                grid = grids[s]
                for _ in range(attention_depth):
                    layers.append(BRABlock3d(features[s], nh, region_grid=grid,
                                             region_size=None if grid is not None else sizes[s],
                                             topk=topk, mlp_ratio=mlp_ratio))
            self.stages.append(nn.Sequential(*layers))
            c_in = features[s]
        self.decoder = H3DEDecoder(features, self.strides, kernels, n_conv_dec, num_classes,
                                   fusion_channels or features[0], deep_supervision, negative_slope)
        self.apply(self._init_weights)
        for head in [self.decoder.head, *self.decoder.ds_heads]:
            # He-initialised heads start with logits of std ~1.4 (the planned U-Nets start
            # alike); smaller heads start nearer head_bias_init but, under SGD, also scale
            # down every gradient behind them (see head_init_std).
            if head_init_std is not None:
                nn.init.normal_(head.weight, std=head_init_std)
            nn.init.constant_(head.bias, head_bias_init)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # Convs: nnU-Net's He init for LeakyReLU(0.01); linears: the usual transformer init.
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight, a=1e-2)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        spatial = x.shape[2:]
        pad = [(-s) % t for s, t in zip(spatial, self.total_stride)]
        if any(pad):
            x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        out = self.decoder(skips)
        if not any(pad):
            return out
        if isinstance(out, torch.Tensor):
            return out[:, :, : spatial[0], : spatial[1], : spatial[2]]
        cropped, stride = [], [1, 1, 1]
        for level, o in enumerate(out):  # level l has the resolution of encoder stage l
            stride = [a * b for a, b in zip(stride, self.strides[level])]
            keep = [math.ceil(s / st) for s, st in zip(spatial, stride)]
            cropped.append(o[:, :, : keep[0], : keep[1], : keep[2]])
        return cropped


# --------------------------------------------------------------------------- #
# nnU-Net plans
# --------------------------------------------------------------------------- #
def build_h3de_from_plans(
    arch_kwargs: dict,
    input_channels: int,
    num_classes: int,
    *,
    patch_size: Sequence[int] | None = None,
    deep_supervision: bool = False,
    max_attention_side: int = 16,
    region_side: int = 4,
    topk: int = 4,
    head_dim: int = 32,
    attention_depth: int = 1,
    **net_kwargs,
) -> H3DENet:
    """Build :class:`H3DENet` from ``configuration_manager.network_arch_init_kwargs``.

    Used keys: ``features_per_stage``, ``strides``, ``kernel_sizes``,
    ``n_conv_per_stage`` (or ResEnc plans' ``n_blocks_per_stage``),
    ``n_conv_per_stage_decoder`` (optional), ``n_stages`` (checked). Conv/norm/
    nonlinearity entries are ignored: H3DENet is always 3D conv-InstanceNorm-
    LeakyReLU.

    Attention cost is capped: of the two deepest stages, only those whose
    token grid is at most ``max_attention_side`` per axis get a BRA block (the
    deepest stage is kept regardless, with a warning, so the network always
    has global context); regions are at most ``region_side`` tokens per axis
    (64 tokens) and each region routes to ``topk`` regions, so a query sees at
    most ``topk * region_side**3`` keys (256 by default). For the default
    nnU-Net 128^3 plan this puts attention on the 8^3 and 4^3 stages.

    The token grid per stage is ``ceil(patch_size / cumulative stride)`` when
    ``patch_size`` is given; otherwise the bottleneck is assumed to be 8 per
    axis (nnU-Net's planner stops pooling an axis once it is below 8 voxels)
    and shallower stages are scaled up by the strides.

    Args:
        arch_kwargs: nnU-Net's ``network_arch_init_kwargs`` dict.
        input_channels, num_classes: network in/out channels.
        patch_size: the configuration's patch size, to size the token grids.
        deep_supervision: passed to :class:`H3DENet`.
        max_attention_side: largest token-grid side allowed for attention.
        region_side: tokens per region per axis (clipped to the grid).
        topk: routed regions per query region.
        head_dim: channels per attention head (heads = C // head_dim).
        attention_depth: BRA blocks per attention stage.
        **net_kwargs: further :class:`H3DENet` options (``mlp_ratio``,
            ``fusion_channels``, ``head_bias_init``, ...).
    """
    features = [int(f) for f in arch_kwargs["features_per_stage"]]
    n = len(features)
    if "n_stages" in arch_kwargs and int(arch_kwargs["n_stages"]) != n:
        raise ValueError(f"n_stages={arch_kwargs['n_stages']} but {n} features_per_stage")
    strides = [_triple(s, "stride") for s in _per_stage(arch_kwargs["strides"], n, "strides")]
    kernels = [_triple(k, "kernel_size") for k in _per_stage(arch_kwargs.get("kernel_sizes", 3), n, "kernel_sizes")]
    n_conv = arch_kwargs.get("n_conv_per_stage", arch_kwargs.get("n_blocks_per_stage", 2))
    n_conv_dec = arch_kwargs.get("n_conv_per_stage_decoder")

    if patch_size is not None:
        patch = _triple(patch_size, "patch_size")
        sides, cum = [], [1, 1, 1]
        for st in strides:
            cum = [c * x for c, x in zip(cum, st)]
            sides.append(tuple(math.ceil(p / c) for p, c in zip(patch, cum)))
    else:
        sides = [(8, 8, 8)]
        for st in reversed(strides[1:]):
            sides.insert(0, tuple(s * x for s, x in zip(sides[0], st)))

    stages = [s for s in (n - 2, n - 1) if s >= 1 and max(sides[s]) <= max_attention_side]
    if not stages:
        warnings.warn(f"no stage has a token grid <= {max_attention_side} per axis (sides {sides}); "
                      f"attention only at the deepest stage {sides[-1]}")
        stages = [n - 1]
    heads = [_default_heads(features[s], head_dim) for s in stages]
    regions = [tuple(min(region_side, x) for x in sides[s]) for s in stages]
    return H3DENet(
        input_channels, num_classes, features, strides, kernels, n_conv, n_conv_dec,
        attention_stages=tuple(stages), num_heads=heads, topk=topk, region_size=regions,
        attention_depth=attention_depth, deep_supervision=deep_supervision, **net_kwargs,
    )
