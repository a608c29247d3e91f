"""The shape prior: training shapes aligned by similarity, robust fitting, and the cascade's second look."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from nnlandmark.geometry import ImageGrid, PreprocessedGrid, preprocessed_to_world, world_to_preprocessed
from nnlandmark.inference.predict import _search_near_expected
from nnlandmark.inference.shape import (MIN_LANDMARKS, apply_similarity, expected_positions, fit_shape_prior,
                                        shape_outliers, similarity_fit)

SHAPE = np.random.default_rng(7).uniform(-40, 40, size=(32, 3))  # a 32-landmark "anatomy" in mm


def _pose(seed: int, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    return scale, Rotation.random(random_state=seed).as_matrix(), rng.uniform(-80, 80, 3)


def test_similarity_fit_recovers_any_pose_and_coplanar_points():
    for seed in range(5):
        transform = _pose(seed, scale=0.8 + 0.1 * seed)
        s, r, t = similarity_fit(SHAPE, apply_similarity(transform, SHAPE))
        np.testing.assert_allclose(apply_similarity((s, r, t), SHAPE), apply_similarity(transform, SHAPE), atol=1e-9)
        assert np.isclose(np.linalg.det(r), 1.0)
    flat = SHAPE * [1, 1, 0]  # a 2D image's points (z = 0), rotated in plane
    in_plane = (1.0, Rotation.from_euler("z", 40, degrees=True).as_matrix(), np.array([5.0, -3.0, 0.0]))
    fitted = similarity_fit(flat, apply_similarity(in_plane, flat))
    np.testing.assert_allclose(apply_similarity(fitted, flat), apply_similarity(in_plane, flat), atol=1e-9)


def test_prior_of_posed_noisy_cases_is_their_shape_and_noise():
    """Training cases in random poses with 1.5 mm of noise per axis: the mean shape equals the true shape
    up to a similarity, to a fraction of the noise, and the spread is the noise's (1.5 sqrt(3) = 2.6 mm)."""
    rng = np.random.default_rng(5)
    cases = [apply_similarity(_pose(seed), SHAPE) + rng.normal(scale=1.5, size=SHAPE.shape) for seed in range(40)]
    cases[3][5] = np.nan  # a landmark one case lacks
    prior = fit_shape_prior(cases)
    mean = np.array(prior["mean_mm"])
    aligned = apply_similarity(similarity_fit(SHAPE, mean), SHAPE)
    assert np.abs(aligned - mean).max() < 1.0
    np.testing.assert_allclose(prior["spread_mm"], 1.5 * np.sqrt(3), rtol=0.25)
    assert prior["cases"] == 40
    assert fit_shape_prior([c[:MIN_LANDMARKS - 1] for c in cases]) is None  # too few landmarks to say anything


def test_robust_fit_ignores_lost_landmarks_in_any_pose():
    """A third of the landmarks thrown 30-90 mm away: the others still say where every landmark should be,
    and exactly the thrown ones are outliers."""
    rng = np.random.default_rng(11)
    transform = _pose(11, scale=1.1)
    found = apply_similarity(transform, SHAPE) + rng.normal(scale=0.5, size=SHAPE.shape)
    lost = rng.choice(len(SHAPE), size=10, replace=False)
    directions = rng.normal(size=(10, 3))
    found[lost] += directions / np.linalg.norm(directions, axis=1, keepdims=True) * rng.uniform(30, 90, size=(10, 1))
    expected = expected_positions(found, SHAPE)
    truth = apply_similarity(transform, SHAPE)
    assert np.linalg.norm(expected - truth, axis=1).max() < 2.0
    flagged = shape_outliers(found, expected, np.full(len(SHAPE), 0.5), floor_mm=10.0)
    assert set(np.flatnonzero(flagged)) == set(lost)


def _varied_faces(n: int, seed: int) -> np.ndarray:
    """2D "cephalograms" (z = 0): ten landmarks of a face within 15 mm of each other, nine of a skull
    60-100 mm away, in random in-plane poses; the face's size and place relative to the skull vary
    between cases as people's do (+-15 %, +-4 mm), which no similarity transform absorbs."""
    rng = np.random.default_rng(seed)
    face = np.random.default_rng(0).uniform(-7.5, 7.5, size=(10, 2))
    skull = np.random.default_rng(1).uniform(-50, 50, size=(9, 2)) + [-80, 0]
    cases = []
    for _ in range(n):
        points = np.vstack([face * rng.uniform(0.85, 1.15) + rng.uniform(-4, 4, 2), skull])
        points += rng.normal(scale=0.7, size=points.shape)
        angle = rng.uniform(-0.3, 0.3)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        cases.append(np.c_[points @ rotation.T * rng.uniform(0.9, 1.1) + rng.uniform(-20, 20, 2), np.zeros(19)])
    return np.array(cases)


def test_robust_fit_flags_no_correct_landmark_of_a_varied_anatomy():
    """Where the anatomy varies beyond a similarity and most landmarks sit in one cluster (a face on a
    skull), the fit must not follow the cluster and throw the far landmarks out (as the best triple of a
    least-median fit did on ISBI 2015: correct landmarks flagged and moved by centimetres in a quarter of
    the test cases); a landmark that is truly 30 mm off is still flagged, in the cluster or outside it."""
    prior = fit_shape_prior(_varied_faces(60, seed=2))
    mean, spread = np.array(prior["mean_mm"]), np.array(prior["spread_mm"])
    floor = 5.0
    flags = [shape_outliers(case, expected_positions(case, mean, spread), spread, floor) for case in _varied_faces(40, 3)]
    assert not np.any(flags)
    rng = np.random.default_rng(4)
    for case in _varied_faces(10, 5):
        thrown = [int(rng.integers(0, 10)), int(rng.integers(10, 19))]
        case[thrown] += [[30.0, 0, 0], [0, -30.0, 0]]
        flagged = shape_outliers(case, expected_positions(case, mean, spread), spread, floor)
        assert set(np.flatnonzero(flagged)) == set(thrown)


def _blob(shape, centre, height: float, sigma: float = 1.2) -> np.ndarray:
    grids = np.indices(shape, dtype=np.float64)
    return height * np.exp(-sum((g - c) ** 2 for g, c in zip(grids, centre)) / (2 * sigma ** 2))


def test_cascade_looks_again_near_where_the_shape_puts_a_lost_landmark():
    """Global maps on an oblique, anisotropic, transposed and resampled grid: one channel's strongest
    blob is 50 mm off, a weaker one sits at the landmark. The second look finds the weaker one (to a
    fraction of a voxel); the other landmarks' points are left exactly as they were."""
    grid = ImageGrid(size=(40, 36, 30), spacing=(1.0, 1.2, 2.0), origin=(-20.0, 10.0, 5.0),
                     direction=Rotation.from_euler("xz", [15, 30], degrees=True).as_matrix())
    pgrid = PreprocessedGrid(transpose_forward=(2, 0, 1), crop_start=(0, 0, 0), cropped_shape=(40, 30, 36),
                             preprocessed_shape=(20, 15, 18))  # half resolution
    shape6 = np.array([[8.0, 6, 4], [14, 6, 4], [8, 14, 4], [8, 6, 12], [14, 14, 12], [11, 10, 8]])
    world = preprocessed_to_world(shape6, pgrid, grid)
    maps = np.stack([_blob(pgrid.preprocessed_shape, p, 1.0) for p in shape6])
    wrong = np.array([16.0, 3, 14])  # about 50 mm away in this grid
    maps[2] = _blob(pgrid.preprocessed_shape, wrong, 1.0) + _blob(pgrid.preprocessed_shape, shape6[2], 0.4)
    maps = torch.from_numpy(maps).half()
    found = world.copy()
    found[2] = preprocessed_to_world(wrong[None], pgrid, grid)[0]
    prior = {"mean_mm": apply_similarity(_pose(3, 0.9), world).tolist(), "spread_mm": [1.0] * 6}
    local = SimpleNamespace(configuration_manager=SimpleNamespace(patch_size=[16, 16, 16], spacing=[1.0, 1.0, 1.0]))
    corrected, moved = _search_near_expected(found, maps, pgrid, grid, prior, local, "argmax")
    assert moved.tolist() == [False, False, True, False, False, False]
    np.testing.assert_array_equal(np.delete(corrected, 2, axis=0), np.delete(found, 2, axis=0))
    index = world_to_preprocessed(corrected[2:3], pgrid, grid)[0]
    np.testing.assert_allclose(index, shape6[2], atol=1e-6)
    # the same point within the local stage's reach (8 mm) is trusted, not looked for again
    near = world.copy()
    near[2] += 5.0 / np.sqrt(3)
    unchanged, moved = _search_near_expected(near, maps, pgrid, grid, prior, local, "argmax")
    np.testing.assert_array_equal(unchanged, near)
    assert not moved.any()


@pytest.mark.slow
def test_training_records_each_folds_prior(tiny_model, prepared_project):
    """train writes the shape of fold 0's training cases into nnlandmark.json; the phantoms share one
    shape in different poses, so their spread is nearly nil."""
    description = json.loads((tiny_model / "nnlandmark.json").read_text())
    splits = json.loads(next(prepared_project.rglob("splits_final.json")).read_text())
    prior = description["shape_prior"]["fold_0"]
    assert prior["cases"] == len(splits[0]["train"])
    assert np.array(prior["mean_mm"]).shape == (len(description["landmarks"]), 3)
    assert max(prior["spread_mm"]) < 0.5


@pytest.mark.slow
def test_predict_says_which_landmarks_the_prior_moved(tiny_model, synthetic_dataset, tmp_path):
    """Every record carries ``moved_by_shape_prior``; with ``--no-shape-prior`` nothing is moved, and
    the points of the landmarks the prior did not move are the same either way (it touches no other)."""
    from nnlandmark.cli import main
    image = sorted((synthetic_dataset / "images").iterdir())[0]
    records = {}
    for flag in ([], ["--no-shape-prior"]):
        out = tmp_path / ("off" if flag else "on")
        assert main(["predict", "-i", str(image), "-o", str(out), "-m", str(tiny_model), *flag]) == 0
        records[bool(flag)] = json.loads(next(out.glob("*[0-9].json")).read_text())
    on, off = records[False], records[True]
    assert all(isinstance(r["moved_by_shape_prior"], bool) for r in on.values())
    assert not any(r["moved_by_shape_prior"] for r in off.values())
    for name, r in on.items():
        if not r["moved_by_shape_prior"] and r["present"] and off[name]["present"]:
            np.testing.assert_allclose(r["world_lps_mm"], off[name]["world_lps_mm"], atol=1e-4)
