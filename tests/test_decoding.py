"""Heatmap decoders: exactness, sub-voxel accuracy and numerical robustness."""
import numpy as np
import pytest
import torch

from nnlandmark.inference.decoding import (
    DECODERS,
    decode,
    decode_argmax,
    decode_local_mean,
    decode_mass,
    decode_quadratic,
)

SHAPE = (24, 26, 22)
CENTRE = np.array([10.3, 12.7, 9.45])


def _gaussian(centre, sigma, shape=SHAPE, scale=1.0, dtype=np.float32):
    grid = np.indices(shape, dtype=np.float64)
    d2 = sum((grid[a] - centre[a]) ** 2 for a in range(len(shape)))
    return (scale * np.exp(-d2 / (2 * sigma**2))).astype(dtype)


def test_registry_and_dispatch():
    assert set(DECODERS) == {"argmax", "local-mean", "quadratic", "mass"}
    hm = np.zeros((1, 3, 3, 3))
    hm[0, 1, 2, 0] = 1.0
    np.testing.assert_array_equal(decode(hm)[0], [[1, 2, 0]])
    with pytest.raises(ValueError):
        decode(hm, "softargmax")


def test_argmax_exact_with_first_occurrence_ties():
    hm = np.zeros((3, 5, 6, 7), dtype=np.float32)
    hm[0, 4, 0, 6] = 3.0
    hm[1, 2, 3, 1] = hm[1, 2, 3, 5] = hm[1, 3, 0, 0] = 2.0   # tie: first in C order wins
    hm[2] = -1.0
    hm[2, 0, 5, 2] = -0.5
    points, scores = decode_argmax(hm)
    np.testing.assert_array_equal(points, [[4, 0, 6], [2, 3, 1], [0, 5, 2]])
    np.testing.assert_array_equal(scores, [3.0, 2.0, -0.5])
    assert points.dtype == np.float64 and points.shape == (3, 3)


def test_subvoxel_decoders_on_gaussian_blob():
    hm = np.stack([_gaussian(CENTRE, 1.0), _gaussian(CENTRE, 2.0)])
    arg, _ = decode_argmax(hm)
    np.testing.assert_array_equal(arg, [[10, 13, 9], [10, 13, 9]])
    # argmax is off by 0.3 / 0.3 / 0.45 voxel
    np.testing.assert_allclose(np.abs(arg - CENTRE), [[0.3, 0.3, 0.45]] * 2, atol=1e-9)

    local, scores = decode_local_mean(hm[:1], radius=2)
    assert np.abs(local[0] - CENTRE).max() < 0.1
    assert scores[0] == pytest.approx(hm[0, 10, 13, 9])

    quad, _ = decode_quadratic(hm)
    assert np.abs(quad - CENTRE).max() < 0.1
    assert np.abs(quad[1] - CENTRE).max() < 0.02   # wider blob: parabola fits better


def test_local_mean_by_hand_and_background_invariance():
    # 1-D profile along axis 0, peak 3 at index 2, channel median 0: threshold
    # 0.5 * 3 = 1.5, weights (0, 1.5, 0.5) at indices 1..3 -> (2 * 1.5 + 3 * 0.5) / 2 = 2.25.
    hm = np.zeros((1, 7, 1, 1))
    hm[0, 1:4, 0, 0] = [1.0, 3.0, 2.0]
    expected = [2.25, 0, 0]
    np.testing.assert_allclose(decode_local_mean(hm)[0][0], expected)
    np.testing.assert_allclose(decode_local_mean(hm, radius=1)[0][0], expected)
    # A constant offset moves the channel median with it: same threshold above it.
    np.testing.assert_allclose(decode_local_mean(hm + 100.0)[0][0], expected)
    # level 0: every voxel above the minimum weighs (1, 3, 2) -> (1 + 6 + 6) / 6
    np.testing.assert_allclose(decode_local_mean(hm, level=0.0)[0][0], [13 / 6, 0, 0])
    with pytest.raises(ValueError):
        decode_local_mean(hm, level=1.0)


def _cone(centre, radius, shape=SHAPE):
    grid = np.indices(shape, dtype=np.float64)
    d = np.sqrt(sum((grid[a] - centre[a]) ** 2 for a in range(len(shape))))
    return np.clip(1.0 - d / radius, 0.0, None).astype(np.float32)


@pytest.mark.parametrize("blob", ["gaussian-4", "cone-15"])
def test_local_mean_unbiased_on_wide_heatmaps(blob):
    """Our training targets (Gaussian sigma 4, cone radius 15) are much wider than a 5^3 window."""
    hm = (_gaussian(CENTRE, 4.0) if blob == "gaussian-4" else _cone(CENTRE, 15.0, shape=(40, 40, 40)))[None]
    adaptive = decode_local_mean(hm)[0][0]
    fixed = decode_local_mean(hm, radius=2)[0][0]
    argmax = decode_argmax(hm)[0][0]
    assert np.abs(adaptive - CENTRE).max() < 0.02
    # the fixed small window is pulled back towards the argmax voxel (what the adaptive window fixes)
    assert np.abs(fixed - CENTRE).max() > 0.1
    assert np.abs(argmax - CENTRE).max() == pytest.approx(0.45)


def test_local_mean_level_from_the_background_not_the_minimum():
    """A weak, flat heatmap (undertrained model): a background of 0.47 with one low voxel
    of 0.25 and a peak of 0.6. Measured from the minimum, the threshold (0.425) would put
    the whole background above it and the centroid near the array centre."""
    hm = np.full((1, 31, 31, 31), 0.47, dtype=np.float32)
    hm[0, 0, 0, 0] = 0.25
    hm[0] += 0.13 * _gaussian(np.array([6.3, 7.0, 8.0]), 2.0, shape=(31, 31, 31))
    point = decode_local_mean(hm)[0][0]
    assert np.abs(point - [6.3, 7.0, 8.0]).max() < 0.05


def test_local_mean_window_stops_at_the_blob():
    """A second, lower blob elsewhere in the channel does not enter the window."""
    single = _gaussian(CENTRE, 1.5)
    far = single + _gaussian(np.array([2.0, 2.0, 2.0]), 1.5) * np.float32(0.9)
    np.testing.assert_allclose(decode_local_mean(far[None])[0], decode_local_mean(single[None])[0], atol=1e-9)
    assert np.abs(decode_local_mean(single[None])[0][0] - CENTRE).max() < 0.05


def test_quadratic_by_hand_border_and_clipping():
    hm = np.zeros((2, 5, 3, 1))
    hm[0, 1:4, 1, 0] = [2.0, 4.0, 3.0]       # offset (2 - 3) / (2 (2 - 8 + 3)) = 1/6
    hm[0, 2, 0, 0] = hm[0, 2, 2, 0] = 1.0    # symmetric along axis 1 -> 0
    hm[1, 4, 1, 0] = 5.0                     # peak on the axis-0 border -> no offset
    hm[1, 3, 1, 0] = 4.0
    points, _ = decode_quadratic(hm)
    np.testing.assert_allclose(points, [[2 + 1 / 6, 1, 0], [4, 1, 0]])


def test_quadratic_near_flat_denominator_gives_zero_offset():
    hm = np.zeros((1, 5, 1, 1))
    hm[0, 1:4, 0, 0] = [1.0 - 1e-12, 1.0, 1.0]   # denominator -1e-12 >= -eps
    np.testing.assert_array_equal(decode_quadratic(hm)[0], [[2, 0, 0]])


@pytest.mark.parametrize("method", sorted(set(DECODERS) - {"mass"}))  # mass: its own test below
def test_degenerate_heatmaps_give_finite_points(method):
    hm = np.zeros((5,) + (9, 8, 7), dtype=np.float32)
    # 0: all zero, 1: constant, 2: saturated plateau, 3: large values, 4: NaN voxels
    hm[1] = 0.7
    hm[2, 3:7, 2:6, 1:5] = 1.0
    hm[3] = _gaussian(np.array([4.2, 3.6, 3.1]), 1.5, shape=(9, 8, 7), scale=1e4)
    hm[4, 5, 5, 5] = 1.0
    hm[4, 0, 0, 0] = hm[4, 5, 4, 5] = np.nan
    points, scores = decode(hm, method)
    assert np.all(np.isfinite(points))
    np.testing.assert_array_equal(points[0], [0, 0, 0])
    np.testing.assert_array_equal(points[1], [0, 0, 0])
    # plateau: somewhere inside the saturated block (its first corner + refinement)
    assert np.all(points[2] >= [3, 2, 1]) and np.all(points[2] <= [6, 5, 4])
    assert np.abs(points[3] - [4.2, 3.6, 3.1]).max() < 0.5
    np.testing.assert_array_equal(np.rint(points[4]), [5, 5, 5])
    np.testing.assert_allclose(scores[:4], [0.0, 0.7, 1.0, hm[3].max()], rtol=1e-6)
    assert scores[4] == 1.0


def test_large_values_decode_like_unit_values():
    unit = _gaussian(CENTRE, 1.5)[None]
    for decoder in DECODERS.values():
        big, _ = decoder(unit * np.float32(1e4))
        small, _ = decoder(unit)
        np.testing.assert_allclose(big, small, atol=1e-6)


def test_torch_and_float16_inputs_match_numpy():
    hm = np.stack([_gaussian(CENTRE, 1.5), _gaussian(CENTRE[::-1] + 2, 1.0)])
    reference = decode_quadratic(hm)[0]
    np.testing.assert_allclose(decode_quadratic(torch.from_numpy(hm))[0], reference, atol=1e-9)
    half = decode_quadratic(hm.astype(np.float16))[0]
    np.testing.assert_allclose(half, reference, atol=0.02)
    bf16 = decode_local_mean(torch.from_numpy(hm).to(torch.bfloat16))[0]
    assert np.all(np.isfinite(bf16))
    assert np.abs(bf16 - decode_local_mean(hm)[0]).max() < 0.1


@pytest.mark.parametrize("method", sorted(DECODERS))
def test_float16_heatmaps_decode_like_their_float32_copy(method):
    """predict decodes its float16 heatmaps and writes them as float32 (--save-heatmaps): both must
    give the same points. An undertrained model's flat maps (background about 0.47, an even voxel
    count) have a float16 median that NumPy rounds to another number than the float32 median,
    which moved local-mean's threshold and window."""
    low, high = np.float16(0.47), np.nextafter(np.float16(0.47), np.float16(1))  # adjacent float16 numbers
    half = np.full((2, 20, 20, 20), high, dtype=np.float16)
    blob = (slice(None), slice(12, 15), slice(9, 12), slice(9, 12))
    half[blob] += np.float16(0.1) * np.arange(27, dtype=np.float16).reshape(3, 3, 3) / 26
    half[:, :10] = low  # 4000 of 8000 voxels: the two middle values differ, their mean is no float16 number
    assert float(np.median(half[0])) != float(np.median(half[0].astype(np.float32)))  # the case that mattered
    single = half.astype(np.float32)
    reference = decode(single, method)[0]
    np.testing.assert_array_equal(decode(half, method)[0], reference)
    np.testing.assert_array_equal(decode(torch.from_numpy(half), method)[0], reference)


def test_mass_decoder_on_a_softmax_distribution():
    """The softmax preset's channels are distributions: the window's centre of mass is sub-voxel
    and its mass says how sure the network is; a flat distribution gives a low score."""
    sharp = _gaussian(CENTRE, 1.5, dtype=np.float64)
    sharp /= sharp.sum()
    flat = np.full(SHAPE, 1.0 / np.prod(SHAPE))
    flat[3, 4, 5] *= 1.5  # a faint peak
    points, scores = decode_mass(np.stack([sharp, flat]), radius=2)
    assert np.abs(points[0] - CENTRE).max() < 0.01  # argmax is 0.45 voxel off
    assert np.abs(decode_argmax(sharp[None])[0][0] - CENTRE).max() == pytest.approx(0.45)
    assert 0.5 < scores[0] < 1.0  # most of a sigma-1.5 Gaussian lies within +-2 voxels
    np.testing.assert_allclose(points[1], [3, 4, 5], atol=0.5)
    assert scores[1] < 0.01
    with pytest.raises(ValueError):
        decode_mass(sharp[None], radius=-1)


def test_cli_choices_are_the_registries():
    """Each choice flag of the CLI offers exactly its registry's names (defined once, read by the CLI)."""
    import argparse
    from nnlandmark import cli
    from nnlandmark.data.convert import CONVERTERS
    from nnlandmark.nnunet.networks import ARCHITECTURES
    from nnlandmark.nnunet.planning import PLANNERS
    from nnlandmark.training.presets import CONFIGURATIONS, PRESETS
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    choices = {(command, action.dest): set(action.choices)
               for command, parser in sub.choices.items() for action in parser._actions if action.choices}
    expected = {("train", "preset"): PRESETS, ("train", "configuration"): CONFIGURATIONS,
                ("train", "architecture"): ARCHITECTURES, ("predict", "decoder"): DECODERS,
                ("evaluate-cv", "decoder"): DECODERS, ("prepare", "planner"): PLANNERS,
                ("convert", "benchmark"): CONVERTERS}
    for key, registry in expected.items():
        assert choices[key] == set(registry), key


def test_mass_decoder_on_degenerate_channels():
    p = np.zeros((3, 9, 8, 7), dtype=np.float32)
    p[1] = 0.5                               # constant: the first voxel, the mass of its clipped window
    p[2, 5, 5, 5] = 1.0
    p[2, 0, 0, 0] = p[2, 5, 4, 5] = np.nan   # NaN voxels weigh nothing
    points, scores = decode_mass(p, radius=1)
    assert np.all(np.isfinite(points)) and np.all(np.isfinite(scores))
    np.testing.assert_array_equal(points[0], [0, 0, 0])  # no mass: the argmax
    assert scores[0] == 0.0
    np.testing.assert_array_equal(points[1], [0, 0, 0])  # flat: no parabola to fit
    assert scores[1] == pytest.approx(0.5 * 8)
    np.testing.assert_allclose(points[2], [5, 5, 5])
    assert scores[2] == pytest.approx(1.0)
