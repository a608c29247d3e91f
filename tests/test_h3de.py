"""Tests for the H3DE-style network (nnlandmark.architectures.h3de)."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from nnlandmark.architectures import H3DENet, build_h3de_from_plans
from nnlandmark.architectures.h3de import BiLevelRoutingAttention3d, topk_regions


@pytest.fixture(autouse=True)
def _one_thread():
    # The CPU is shared with other jobs; one thread keeps these tests polite.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# --------------------------------------------------------------------------- #
# Routing and attention against brute force
# --------------------------------------------------------------------------- #
def test_topk_regions_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    b, s, c, k = 2, 7, 5, 3
    rq = torch.randn(b, s, c, generator=g, dtype=torch.float64)
    rk = torch.randn(b, s, c, generator=g, dtype=torch.float64)
    idx = topk_regions(rq, rk, k)
    assert idx.shape == (b, s, k)
    for bi in range(b):
        for i in range(s):
            scores = []
            for j in range(s):
                scores.append((sum(float(rq[bi, i, ch] * rk[bi, j, ch]) for ch in range(c)), j))
            expected = [j for _, j in sorted(scores, reverse=True)[:k]]
            assert idx[bi, i].tolist() == expected
    with pytest.raises(ValueError):
        topk_regions(rq, rk, s + 1)


def _reference_bra(m: BiLevelRoutingAttention3d, x: torch.Tensor) -> torch.Tensor:
    """Brute-force BRA: full token-to-token attention with an explicit region mask.

    Regions are laid out independently of the module: region id of voxel
    (d, h, w) is (d // r_d, h // r_h, w // r_w) with r = ceil(L / n) for a region
    grid n, so edge regions are simply smaller (no padding at all).
    """
    b, c, *spatial = x.shape
    nh, hd = m.num_heads, m.head_dim
    if m.region_grid is not None:
        r = [math.ceil(s / g) for s, g in zip(spatial, m.region_grid)]
    else:
        r = [min(a, s) for a, s in zip(m.region_size, spatial)]
    coords = list(itertools.product(*(range(s) for s in spatial)))  # C order = flatten order
    region_of = [tuple(p // q for p, q in zip(xyz, r)) for xyz in coords]
    regions = sorted(set(region_of))
    rid = torch.tensor([regions.index(t) for t in region_of])
    n_tok, n_reg = len(coords), len(regions)

    t = x.permute(0, 2, 3, 4, 1).reshape(b, n_tok, c)
    q, k, v = m.qkv(t).chunk(3, dim=-1)
    out = torch.zeros_like(q)
    for bi in range(b):
        rq = torch.stack([q[bi, rid == i].mean(0) for i in range(n_reg)])
        rk = torch.stack([k[bi, rid == i].mean(0) for i in range(n_reg)])
        kk = min(m.topk, n_reg)
        chosen = []
        for i in range(n_reg):
            aff = [(float(torch.dot(rq[i], rk[j])), j) for j in range(n_reg)]
            chosen.append({j for _, j in sorted(aff, reverse=True)[:kk]})
        allowed = torch.zeros(n_tok, n_tok, dtype=torch.bool)
        for i in range(n_tok):
            for j in range(n_tok):
                allowed[i, j] = int(rid[j]) in chosen[int(rid[i])]
        for h in range(nh):
            sl = slice(h * hd, (h + 1) * hd)
            logits = q[bi, :, sl] @ k[bi, :, sl].T * hd ** -0.5
            logits = logits.masked_fill(~allowed, float("-inf"))
            out[bi, :, sl] = logits.softmax(-1) @ v[bi, :, sl]
    out = out.reshape(b, *spatial, c)
    lepe = m.lepe(v.reshape(b, *spatial, c).permute(0, 4, 1, 2, 3)).permute(0, 2, 3, 4, 1)
    return m.proj(out + lepe).permute(0, 4, 1, 2, 3)


@pytest.mark.parametrize(
    "spatial, kwargs",
    [
        ((5, 6, 7), dict(region_grid=2, topk=3)),  # padded on D and W, 8 regions
        ((4, 4, 4), dict(region_size=2, topk=2)),  # divisible, no padding path
        ((5, 3, 6), dict(region_size=(2, 3, 4), topk=4)),  # anisotropic regions, padding
        ((3, 3, 3), dict(region_grid=4, topk=5)),  # grid > size, topk clipped to 27 -> 5
    ],
)
def test_bra_matches_brute_force(spatial, kwargs):
    torch.manual_seed(0)
    m = BiLevelRoutingAttention3d(dim=8, num_heads=2, **kwargs).double()
    x = torch.randn(2, 8, *spatial, dtype=torch.float64)
    with torch.no_grad():
        got = m(x)
        ref = _reference_bra(m, x)
    assert got.shape == x.shape
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_bra_region_layout():
    m = BiLevelRoutingAttention3d(8, 2, region_grid=4)
    # L=5, n=4: 2 tokens per region and only 3 regions, so none is pure padding.
    assert m.regions_for((5, 8, 3)) == ((3, 4, 3), (2, 2, 1))
    m = BiLevelRoutingAttention3d(8, 2, region_size=4)
    assert m.regions_for((9, 4, 2)) == ((3, 1, 1), (4, 4, 2))
    with pytest.raises(ValueError):
        BiLevelRoutingAttention3d(8, 3)
    with pytest.raises(ValueError):
        BiLevelRoutingAttention3d(8, 2, region_grid=2, region_size=2)


# --------------------------------------------------------------------------- #
# Network shapes
# --------------------------------------------------------------------------- #
def test_forward_backward_odd_size():
    torch.manual_seed(0)
    net = H3DENet(1, 3, [4, 8, 16], [[1, 1, 1], [2, 2, 2], [2, 2, 2]], num_heads=2, region_size=2, topk=2)
    assert net.attention_stages == (1, 2)
    x = torch.randn(2, 1, 37, 45, 29)
    y = net(x)
    assert y.shape == (2, 3, 37, 45, 29)
    y.square().mean().backward()
    att = net.stages[2][1].attn
    assert att.qkv.weight.grad is not None and att.qkv.weight.grad.abs().sum() > 0
    # Everything but the deep-supervision heads (unused when it is off) gets a gradient.
    missing = [k for k, p in net.named_parameters() if p.grad is None and ".ds_heads." not in k]
    assert not missing


def _plans_kwargs():
    # Shaped like configuration_manager.network_arch_init_kwargs of a 3d_fullres plan.
    return {
        "n_stages": 4,
        "features_per_stage": [4, 8, 16, 32],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
        "n_conv_per_stage": [2, 2, 2, 2],
        "n_conv_per_stage_decoder": [2, 2, 2],
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }


def test_plans_builder_forward_backward():
    torch.manual_seed(0)
    net = build_h3de_from_plans(_plans_kwargs(), input_channels=2, num_classes=5, patch_size=(24, 40, 40))
    assert net.attention_stages == (2, 3)  # token grids (12,10,10) and (6,5,5) are <= 16
    assert [net.stages[s][1].attn.region_size for s in (2, 3)] == [(4, 4, 4), (4, 4, 4)]
    x = torch.randn(1, 2, 21, 35, 30)
    y = net(x)
    assert y.shape == (1, 5, 21, 35, 30)
    y.mean().backward()

    # nnU-Net toggles deep supervision through network.decoder.deep_supervision.
    net.decoder.deep_supervision = True
    with torch.no_grad():
        outs = net(torch.randn(1, 2, 24, 40, 40))
    assert [o.shape[2:] for o in outs] == [(24, 40, 40), (24, 20, 20), (12, 10, 10)]


def test_plans_builder_caps_attention():
    kw = _plans_kwargs()
    kw["strides"] = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    kw["kernel_sizes"] = 3
    # 128^3 patch: stages are 128, 64, 32, 16 -> attention only at the 16^3 stage.
    net = build_h3de_from_plans(kw, 1, 1, patch_size=(128, 128, 128))
    assert net.attention_stages == (3,)
    # Without a patch size the bottleneck is assumed 8^3 -> 16^3 and 8^3 stages.
    assert build_h3de_from_plans(kw, 1, 1).attention_stages == (2, 3)
    # ResEnc plans call the encoder depth n_blocks_per_stage.
    kw["n_blocks_per_stage"] = kw.pop("n_conv_per_stage")
    assert build_h3de_from_plans(kw, 1, 1).attention_stages == (2, 3)
    with pytest.warns(UserWarning):
        assert build_h3de_from_plans(kw, 1, 1, patch_size=(512, 512, 512)).attention_stages == (3,)


# --------------------------------------------------------------------------- #
# It learns
# --------------------------------------------------------------------------- #
def test_short_training_lowers_loss():
    torch.manual_seed(0)
    n, size = 8, 16
    grid = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * 3, indexing="ij"))
    centres = torch.randint(4, size - 4, (n, 3)).float()
    dist2 = ((grid[None] - centres[:, :, None, None, None]) ** 2).sum(1, keepdim=True)
    image = torch.exp(-dist2 / (2 * 2.0 ** 2)) + 0.1 * torch.randn(n, 1, size, size, size)  # blob + noise
    target = torch.exp(-dist2 / (2 * 1.5 ** 2))  # Gaussian heatmap at the blob

    net = H3DENet(1, 1, [4, 8, 16], [[1, 1, 1], [2, 2, 2], [2, 2, 2]], num_heads=2, region_size=2, topk=2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for step in range(30):
        batch = slice((2 * step) % n, (2 * step) % n + 2)
        loss = F.binary_cross_entropy_with_logits(net(image[batch]), target[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        final = F.binary_cross_entropy_with_logits(net(image), target).item()
    assert final < 0.7 * losses[0], (losses[0], final)
    print(f"loss {losses[0]:.4f} -> {final:.4f}")
