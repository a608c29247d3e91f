"""Training targets (label patch -> points -> heatmaps) and the heatmap losses."""
import math

import pytest
import torch

from nnlandmark.training.losses import mse_on_sigmoid, spatial_softmax_cross_entropy, topk_bce_with_logits
from nnlandmark.training.targets import cone_heatmaps, gaussian_heatmaps, points_from_label_patch

NAN = float("nan")


# --------------------------------------------------------------------------- points_from_label_patch

def _cube(seg, b, centre, label):
    """3x3x3 cube of ``label`` around ``centre``, clipped at the patch border."""
    sl = tuple(slice(max(0, c - 1), c + 2) for c in centre)
    seg[(b, 0, *sl)] = label


def test_points_from_label_patch_recovers_cube_centres_and_nan_for_missing():
    seg = torch.zeros(2, 1, 12, 10, 8, dtype=torch.int16)
    _cube(seg, 0, (3, 4, 5), 1)
    _cube(seg, 0, (8, 2, 2), 3)          # label 2 absent in sample 0
    _cube(seg, 1, (5, 5, 5), 2)
    _cube(seg, 1, (0, 9, 3), 1)          # cut by x = 0 and y = 9 borders
    points = points_from_label_patch(seg, num_landmarks=3)

    assert points.shape == (2, 3, 3) and points.dtype == torch.float32
    assert points[0, 0].tolist() == [3.0, 4.0, 5.0]
    assert torch.isnan(points[0, 1]).all()
    assert points[0, 2].tolist() == [8.0, 2.0, 2.0]
    # Remaining part: x in {0, 1} -> 0.5; y in {8, 9} -> 8.5; z in {2, 3, 4} -> 3.
    assert points[1, 0].tolist() == [0.5, 8.5, 3.0]
    assert points[1, 1].tolist() == [5.0, 5.0, 5.0]
    assert torch.isnan(points[1, 2]).all()


def test_points_from_label_patch_irregular_shape_float_labels_and_ignored_values():
    # A deformed "cube" of 3 voxels, as augmentation may leave it: centroid by hand
    # ((1+1+1)/3, (1+1+2)/3, (1+2+1)/3) = (1, 4/3, 4/3).
    seg = torch.zeros(1, 6, 6, 6)  # (B, X, Y, Z), float labels
    seg[0, 1, 1, 1] = seg[0, 1, 1, 2] = seg[0, 1, 2, 1] = 1.0
    seg[0, 4, 4, 4] = -1.0   # nnU-Net border padding: ignored
    seg[0, 5, 5, 5] = 7.0    # beyond num_landmarks: ignored
    points = points_from_label_patch(seg, num_landmarks=2)
    assert points[0, 0].tolist() == pytest.approx([1.0, 4 / 3, 4 / 3], abs=1e-6)
    assert torch.isnan(points[0, 1]).all()


def test_points_from_label_patch_rejects_wrong_dimensions():
    # (B, M, X, Y, Z) with several label maps is accepted (tests/test_collisions.py)
    for shape in [(4, 4, 4), (1, 1, 1, 4, 4, 4)]:
        with pytest.raises(ValueError):
            points_from_label_patch(torch.zeros(shape), 1)


# --------------------------------------------------------------------------- heatmaps

def test_cone_values_at_peak_rim_and_half_radius():
    points = torch.tensor([[[10.0, 12.0, 9.0], [10.0, 12.5, 9.0], [NAN, 1.0, 2.0]]])
    hm = cone_heatmaps(points, (32, 32, 32), radius=15.0)
    assert hm.shape == (1, 3, 32, 32, 32)
    assert hm[0, 0, 10, 12, 9] == 1.0 and hm[0, 0].max() == 1.0
    # 3-4-5 triangle scaled by 3: distance exactly 15 -> 0; by 1: distance 5 -> 2/3.
    assert hm[0, 0, 19, 24, 9] == 0.0
    assert hm[0, 0, 13, 16, 9].item() == pytest.approx(1 - 5 / 15)
    assert hm[0, 0, 31, 31, 31] == 0.0
    # Sub-voxel point (10, 12.5, 9): voxel (10, 20, 9) is 7.5 away -> 0.5.
    assert hm[0, 1, 10, 20, 9].item() == pytest.approx(0.5)
    assert hm[0, 1, 10, 12, 9].item() == pytest.approx(1 - 0.5 / 15)
    assert torch.count_nonzero(hm[0, 2]) == 0
    assert hm.min() >= 0.0


def test_cone_of_point_outside_patch_keeps_its_inner_part():
    hm = cone_heatmaps(torch.tensor([[[-3.0, 4.0, 4.0]]]), (8, 8, 8), radius=15.0)
    assert hm[0, 0, 0, 4, 4].item() == pytest.approx(0.8)   # d = 3
    assert hm[0, 0].max().item() == pytest.approx(0.8)
    far = cone_heatmaps(torch.tensor([[[-30.0, 4.0, 4.0]]]), (8, 8, 8), radius=15.0)
    assert torch.count_nonzero(far) == 0


def test_gaussian_peak_sigma_and_nan():
    points = torch.tensor([[[5.0, 6.0, 7.0]], [[NAN, NAN, NAN]]])  # B = 2, L = 1
    hm = gaussian_heatmaps(points, (12, 12, 12), sigma=4.0)
    assert hm.shape == (2, 1, 12, 12, 12)
    assert hm[0, 0, 5, 6, 7] == 1.0
    assert hm[0, 0, 9, 6, 7].item() == pytest.approx(math.exp(-0.5))   # d = sigma
    assert hm[0, 0, 5, 6, 11].item() == pytest.approx(math.exp(-0.5))
    assert hm[0, 0, 1, 6, 7].item() == pytest.approx(math.exp(-0.5))
    assert hm[0, 0, 5, 2, 3].item() == pytest.approx(math.exp(-1.0))    # d^2 = 32 = 2 sigma^2
    assert torch.count_nonzero(hm[1]) == 0


def test_heatmaps_reject_bad_arguments():
    with pytest.raises(ValueError):
        cone_heatmaps(torch.zeros(1, 1, 3), (4, 4), radius=5.0)     # 3 coords, 2 axes
    with pytest.raises(ValueError):
        cone_heatmaps(torch.zeros(1, 1, 3), (4, 4, 4), radius=0.0)
    with pytest.raises(ValueError):
        gaussian_heatmaps(torch.zeros(1, 1, 3), (4, 4, 4), sigma=-1.0)


def test_label_patch_to_cone_round_trip():
    seg = torch.zeros(1, 1, 16, 16, 16, dtype=torch.uint8)
    _cube(seg, 0, (4, 9, 11), 1)
    hm = cone_heatmaps(points_from_label_patch(seg, 1), seg.shape[2:], radius=6.0)
    flat = int(hm[0, 0].argmax())
    assert (flat // 256, flat // 16 % 16, flat % 16) == (4, 9, 11)


# --------------------------------------------------------------------------- losses

# BCE with target 0 is softplus(x) = log(1 + e^x); with target 1 it is softplus(-x).
SOFTPLUS_4 = 4.0181499279178094
SOFTPLUS_3 = 3.048587351573742
SOFTPLUS_2 = 2.1269280110429727
LOG_2 = 0.6931471805599453


def _topk_case():
    """B = 1, L = 2, 10 voxels -> k = ceil(0.2 * 10) = 2 per channel."""
    logits = torch.tensor([[
        [0.0, 1.0, 2.0, 3.0, -1.0, -2.0, -3.0, 4.0, 0.5, -0.5],   # target 0: hardest x = 4, 3
        [5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, -2.0, 0.0],      # target 1: hardest x = -2, 0
    ]], dtype=torch.float64, requires_grad=True)
    target = torch.zeros_like(logits)
    target[0, 1] = 1.0
    return logits, target


def test_topk_bce_keeps_exactly_the_hardest_fifth():
    logits, target = _topk_case()
    loss = topk_bce_with_logits(logits, target, fraction=0.2)
    channel0 = (SOFTPLUS_4 + SOFTPLUS_3) / 2
    channel1 = (SOFTPLUS_2 + LOG_2) / 2
    assert loss.item() == pytest.approx((channel0 + channel1) / 2, rel=1e-6)
    assert loss.shape == ()

    # Gradient only on the 4 kept voxels: d softplus(x)/dx = sigmoid(x), scaled
    # by 1 / (k * pairs) = 1/4; for target 1 it is -sigmoid(-x) / 4.
    loss.backward()
    grad = logits.grad[0]
    assert torch.count_nonzero(grad) == 4
    assert grad[0, 7].item() == pytest.approx(0.9820137900379085 / 4, rel=1e-5)
    assert grad[0, 3].item() == pytest.approx(0.9525741268224334 / 4, rel=1e-5)
    assert grad[1, 8].item() == pytest.approx(-1 / (1 + math.exp(-2)) / 4, rel=1e-5)
    assert grad[1, 9].item() == pytest.approx(-0.5 / 4, rel=1e-5)


def test_topk_bce_channel_mask_excludes_a_channel():
    logits, target = _topk_case()
    loss = topk_bce_with_logits(logits, target, fraction=0.2, channel_mask=torch.tensor([[True, False]]))
    assert loss.item() == pytest.approx((SOFTPLUS_4 + SOFTPLUS_3) / 2, rel=1e-6)
    loss.backward()
    assert torch.count_nonzero(logits.grad[0, 1]) == 0
    assert torch.count_nonzero(logits.grad[0, 0]) == 2


def test_topk_bce_all_masked_is_zero_with_grad():
    logits, target = _topk_case()
    loss = topk_bce_with_logits(logits, target, channel_mask=torch.zeros(1, 2, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.count_nonzero(logits.grad) == 0


def test_topk_bce_k_rounding_and_soft_targets():
    # 15 voxels * 0.2 = 3.0000000000000004 in floats: k must be 3, not 4.
    logits = torch.tensor([[[4.0, 3.0, 2.0] + [0.0] * 12]])
    target = torch.zeros_like(logits)
    expected = (SOFTPLUS_4 + SOFTPLUS_3 + SOFTPLUS_2) / 3
    assert topk_bce_with_logits(logits, target, fraction=0.2).item() == pytest.approx(expected, rel=1e-6)
    # fraction 1 = plain mean; soft target 0.5 at logit 0 gives log 2 as well.
    soft = torch.tensor([[[0.0, 0.0]]])
    assert topk_bce_with_logits(soft, torch.full_like(soft, 0.5), fraction=1.0).item() == pytest.approx(LOG_2)
    with pytest.raises(ValueError):
        topk_bce_with_logits(logits, target, fraction=0.0)


def test_mse_on_sigmoid_values_mask_and_grad():
    logits = torch.zeros(2, 2, 2, 2, requires_grad=True)   # sigmoid = 0.5 everywhere
    target = torch.zeros(2, 2, 2, 2)
    target[0, 0] = 1.0           # error 0.25 per voxel
    target[1, 1] = 0.5           # error 0
    # mean over 4 pairs: (0.25 + 0.25 + 0 + 0.25) / 4
    assert mse_on_sigmoid(logits, target).item() == pytest.approx(0.1875)
    mask = torch.tensor([[False, True], [False, True]])
    assert mse_on_sigmoid(logits, target, channel_mask=mask).item() == pytest.approx(0.125)
    loss = mse_on_sigmoid(logits, target, channel_mask=torch.zeros(2, 2, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(logits.grad) == 0


def test_spatial_softmax_cross_entropy_equals_hand_computation_with_masked_channel():
    # two samples, two landmarks, 3 voxels each
    logits = torch.tensor([[[0.0, 1.0, 2.0], [5.0, 0.0, 0.0]],
                           [[1.0, 1.0, 1.0], [0.0, 0.0, 3.0]]], requires_grad=True)
    target = torch.tensor([[[0.0, 1.0, 1.0], [2.0, 0.0, 0.0]],
                           [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])  # (1, 1): absent, nothing to learn
    mask = torch.tensor([[True, False], [True, True]])  # (0, 1) unknown
    loss = spatial_softmax_cross_entropy(logits, target, channel_mask=mask)

    def ce(row, q):
        log_z = math.log(sum(math.exp(v) for v in row))
        q = [v / sum(q) for v in q]
        return -sum(qi * (v - log_z) for qi, v in zip(q, row))

    # kept pairs: (0, 0) and (1, 0); (0, 1) is masked and (1, 1) has an all-zero target
    expected = (ce([0.0, 1.0, 2.0], [0.0, 1.0, 1.0]) + ce([1.0, 1.0, 1.0], [1.0, 0.0, 0.0])) / 2
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.all(logits.grad[0, 1] == 0) and torch.all(logits.grad[1, 1] == 0)
    assert torch.any(logits.grad[0, 0] != 0)


def test_spatial_softmax_cross_entropy_minimum_is_the_target_entropy():
    target = gaussian_heatmaps(torch.tensor([[[3.3, 4.0]]]), (8, 8), sigma=1.5)
    q = target / target.sum()
    best = spatial_softmax_cross_entropy(torch.log(q), target)
    entropy = -(q * torch.log(q)).sum()
    assert float(best) == pytest.approx(float(entropy), rel=1e-5)
    uniform = spatial_softmax_cross_entropy(torch.zeros_like(target), target)
    assert float(uniform) == pytest.approx(math.log(64), rel=1e-6)
    everything_masked = spatial_softmax_cross_entropy(torch.zeros_like(target), target, torch.tensor([[False]]))
    assert float(everything_masked) == 0.0
