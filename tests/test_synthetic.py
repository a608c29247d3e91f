"""Tests of the synthetic head dataset generator."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnlandmark.data.synthetic import (
    BIOMETRY,
    LANDMARK_NAMES,
    PAIRS,
    make_synthetic_case,
    make_synthetic_dataset,
)
from nnlandmark.geometry import (
    ImageGrid,
    itk_to_array_index,
    nearest_voxel,
    world_to_index,
)

GRIDS = {
    "iso": dict(shape=(48, 48, 48), spacing=(2.0, 2.0, 2.0), oblique=False),
    "aniso_oblique": dict(shape=(48, 48, 48), spacing=(1.5, 1.5, 3.0), oblique=True),
    # unequal sizes catch ITK-versus-array axis order mix-ups
    "mixed_oblique": dict(shape=(40, 56, 32), spacing=(2.0, 1.5, 3.0), oblique=True),
}


def _sample(array: np.ndarray, grid: ImageGrid, point) -> float:
    """Nearest-voxel intensity at a world LPS point."""
    return float(array[tuple(nearest_voxel(itk_to_array_index(world_to_index(point, grid))))])


def _background(array: np.ndarray) -> tuple[float, float]:
    """Median and robust standard deviation of the border voxels (outside the head)."""
    border = np.concatenate([array[0].ravel(), array[-1].ravel(), array[:, 0].ravel(),
                             array[:, -1].ravel(), array[:, :, 0].ravel(), array[:, :, -1].ravel()])
    median = float(np.median(border))
    return median, float(1.4826 * np.median(np.abs(border - median)))


def test_same_seed_gives_identical_case():
    image_a, points_a = make_synthetic_case(7, oblique=True)
    image_b, points_b = make_synthetic_case(7, oblique=True)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image_a), sitk.GetArrayFromImage(image_b))
    assert image_a.GetOrigin() == image_b.GetOrigin()
    assert image_a.GetDirection() == image_b.GetDirection()
    assert image_a.GetSpacing() == image_b.GetSpacing()
    assert list(points_a) == list(points_b) == list(LANDMARK_NAMES)
    for name in LANDMARK_NAMES:
        np.testing.assert_array_equal(points_a[name], points_b[name])


def test_different_seeds_differ():
    image_a, points_a = make_synthetic_case(1)
    image_b, points_b = make_synthetic_case(2)
    assert not np.array_equal(sitk.GetArrayFromImage(image_a), sitk.GetArrayFromImage(image_b))
    for name in LANDMARK_NAMES:
        assert np.linalg.norm(points_a[name] - points_b[name]) > 1e-3


@pytest.mark.parametrize("grid_name", list(GRIDS))
def test_geometry_of_the_image(grid_name):
    kwargs = GRIDS[grid_name]
    image, _ = make_synthetic_case(3, **kwargs)
    assert image.GetPixelID() == sitk.sitkFloat32
    assert image.GetSize() == kwargs["shape"]
    assert sitk.GetArrayFromImage(image).shape == kwargs["shape"][::-1]
    np.testing.assert_allclose(image.GetSpacing(), kwargs["spacing"])
    grid = ImageGrid.from_image(image)
    grid.validate()
    if kwargs["oblique"]:
        assert not np.allclose(grid.direction, np.eye(3), atol=1e-3)
        assert np.linalg.norm(grid.origin) > 1.0
    else:
        np.testing.assert_array_equal(grid.direction, np.eye(3))
        np.testing.assert_array_equal(grid.origin, 0.0)


@pytest.mark.parametrize("grid_name", list(GRIDS))
def test_landmarks_inside_with_margin(grid_name):
    for seed in range(5):
        image, points = make_synthetic_case(seed, **GRIDS[grid_name])
        grid = ImageGrid.from_image(image)
        size = np.asarray(grid.size)
        for name, point in points.items():
            index = world_to_index(point, grid)
            assert np.all(index >= 3.0) and np.all(index <= size - 1 - 3.0), (seed, name, index)


def test_landmarks_follow_lps_anatomy():
    # rotations stay within 15 degrees, so the anatomical sides survive every pose
    for seed in range(4):
        _, p = make_synthetic_case(seed)
        assert p["left_eye"][0] > p["right_eye"][0]  # +x is the patient's left
        assert p["left_ear"][0] > p["right_ear"][0]
        assert p["nose_tip"][1] < min(p["left_ear"][1], p["right_ear"][1])  # -y is anterior
        assert p["vertex"][2] > max(p[name][2] for name in LANDMARK_NAMES if name != "vertex")


@pytest.mark.parametrize("grid_name", list(GRIDS))
def test_eyes_are_at_the_eye_landmarks(grid_name):
    for seed in range(4):
        image, points = make_synthetic_case(seed, **GRIDS[grid_name])
        array = sitk.GetArrayFromImage(image)
        grid = ImageGrid.from_image(image)
        background, noise = _background(array)
        # the midpoint of the ears lies in the brain, away from the ventricles
        brain = _sample(array, grid, 0.5 * (points["left_ear"] + points["right_ear"]))
        for eye in ("left_eye", "right_eye"):
            value = _sample(array, grid, points[eye])
            assert value - background > 10.0 * noise, (seed, eye)
            # a misplaced point inside the head would mostly hit the darker brain
            assert value > brain, (seed, eye)


@pytest.mark.parametrize("grid_name", ["aniso_oblique", "mixed_oblique"])
def test_simpleitk_agrees_on_landmark_voxels(grid_name):
    # SimpleITK's own header interpretation, independent of nnlandmark.geometry
    image, points = make_synthetic_case(5, **GRIDS[grid_name])
    grid = ImageGrid.from_image(image)
    for point in points.values():
        np.testing.assert_allclose(image.TransformPhysicalPointToContinuousIndex(point.tolist()),
                                   world_to_index(point, grid), atol=1e-6)


def test_too_small_grid_is_refused():
    with pytest.raises(ValueError):
        make_synthetic_case(0, shape=(12, 12, 12))


def test_dataset_layout(tmp_path):
    out = make_synthetic_dataset(tmp_path / "ds", n_cases=3, seed=4)
    assert out == tmp_path / "ds"
    cases = [f"case_{i:03d}" for i in range(3)]
    assert sorted(p.name for p in (out / "images").iterdir()) == [c + ".nii.gz" for c in cases]
    assert sorted(p.name for p in (out / "landmarks").iterdir()) == [c + ".json" for c in cases]

    meta = json.loads((out / "dataset.json").read_text())
    assert meta["landmarks"] == list(LANDMARK_NAMES)
    assert meta["pairs"] == [list(pair) for pair in PAIRS]
    assert meta["biometry"] == {k: list(v) for k, v in BIOMETRY.items()}
    assert meta["biometry"]["interocular"] == ["left_eye", "right_eye"]
    assert isinstance(meta["name"], str) and len(meta["channels"]) == 1
    for a, b in meta["pairs"]:
        assert a.startswith("left_") and b == "right_" + a[len("left_"):]

    for case in cases:
        record = json.loads((out / "landmarks" / f"{case}.json").read_text())
        assert record["coordinate_system"] == "LPS"
        assert list(record["landmarks"]) == list(LANDMARK_NAMES)
        image = sitk.ReadImage(str(out / "images" / f"{case}.nii.gz"))
        assert image.GetPixelID() == sitk.sitkFloat32
        array = sitk.GetArrayFromImage(image)
        grid = ImageGrid.from_image(image)
        background, noise = _background(array)
        eye = _sample(array, grid, record["landmarks"]["left_eye"])
        assert eye - background > 10.0 * noise


def test_dataset_is_deterministic_and_seeds_are_disjoint(tmp_path):
    def landmark_sets(folder):
        return [json.dumps(json.loads(p.read_text())["landmarks"])
                for p in sorted((folder / "landmarks").iterdir())]

    a = landmark_sets(make_synthetic_dataset(tmp_path / "a", n_cases=2, seed=0, file_ending=".mha"))
    b = landmark_sets(make_synthetic_dataset(tmp_path / "b", n_cases=2, seed=0, file_ending=".mha"))
    c = landmark_sets(make_synthetic_dataset(tmp_path / "c", n_cases=2, seed=1, file_ending=".mha"))
    assert a == b
    assert not set(a) & set(c)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a/images/case_001.mha"))),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "b/images/case_001.mha"))))


def test_refuses_to_overwrite(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()  # an existing empty folder is fine
    make_synthetic_dataset(out, n_cases=3)
    before = (out / "landmarks" / "case_000.json").read_text()
    with pytest.raises(FileExistsError):
        make_synthetic_dataset(out, n_cases=2, seed=9)
    assert (out / "landmarks" / "case_000.json").read_text() == before

    make_synthetic_dataset(out, n_cases=2, seed=9, overwrite=True)
    # stale cases from the first run are gone: the folder describes one dataset
    assert sorted(p.name for p in (out / "images").iterdir()) == ["case_000.nii.gz", "case_001.nii.gz"]
    assert sorted(p.name for p in (out / "landmarks").iterdir()) == ["case_000.json", "case_001.json"]
    assert (out / "landmarks" / "case_000.json").read_text() != before


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        make_synthetic_dataset(tmp_path / "x", n_cases=1, file_ending=".png")
    with pytest.raises(ValueError):
        make_synthetic_dataset(tmp_path / "y", n_cases=0)
    with pytest.raises(ValueError):
        make_synthetic_case(-1)
