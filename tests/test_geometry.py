"""Geometry: voxel index <-> world <-> preprocessed grid, on oblique anisotropic images."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from nnlandmark.geometry import (ImageGrid, PreprocessedGrid, array_to_itk_index, array_to_preprocessed_index,
                                 index_to_world, itk_to_array_index, lps_to_ras, preprocessed_image_grid,
                                 preprocessed_to_array_index, preprocessed_to_world, ras_to_lps, world_to_index,
                                 world_to_preprocessed)

OBLIQUE = Rotation.from_euler("xyz", [17, -31, 48], degrees=True).as_matrix()


def oblique_image(size=(40, 30, 20), spacing=(0.7, 1.3, 2.9), origin=(-12.5, 30.25, 7.0)) -> sitk.Image:
    image = sitk.Image(size, sitk.sitkFloat32)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(OBLIQUE.ravel().tolist())
    return image


def test_index_world_round_trip_matches_simpleitk():
    image = oblique_image()
    grid = ImageGrid.from_image(image)
    rng = np.random.default_rng(0)
    indices = rng.uniform(-0.5, 19.5, size=(20, 3))
    world = index_to_world(indices, grid)
    for idx, w in zip(indices, world):
        assert np.allclose(w, image.TransformContinuousIndexToPhysicalPoint(idx.tolist()), atol=1e-9)
    assert np.allclose(world_to_index(world, grid), indices, atol=1e-9)


def test_ras_lps_flip_x_and_y_only():
    p = np.array([1.0, -2.0, 3.0])
    assert np.allclose(ras_to_lps(p), [-1.0, 2.0, 3.0])
    assert np.allclose(lps_to_ras(ras_to_lps(p)), p)


def test_array_and_itk_index_orders_are_reversed():
    image = oblique_image()
    array = sitk.GetArrayViewFromImage(image)
    assert array.shape == image.GetSize()[::-1]
    assert np.allclose(itk_to_array_index([1, 2, 3]), [3, 2, 1])
    assert np.allclose(array_to_itk_index(itk_to_array_index([1.5, 2, 3])), [1.5, 2, 3])


def test_validate_rejects_bad_spacing_and_direction():
    with pytest.raises(ValueError, match="spacing"):
        ImageGrid((2, 2, 2), (1, 0, 1), (0, 0, 0)).validate()
    skew = np.eye(3)
    skew[0, 1] = 0.3
    with pytest.raises(ValueError, match="orthonormal"):
        ImageGrid((2, 2, 2), (1, 1, 1), (0, 0, 0), skew).validate()


def test_landmark_cube_sits_on_the_voxel_simpleitk_finds_nearest():
    """A landmark becomes a 3x3x3 label cube in the raw export, centred on the voxel nearest the
    world point as SimpleITK finds it (``TransformPhysicalPointToIndex`` rounds the continuous index);
    that voxel's centre is within half a voxel of the point along each index axis."""
    from nnlandmark.data.dataset import Case
    from nnlandmark.data.landmarks import Landmarks
    from nnlandmark.nnunet.raw import landmark_label_map

    image = oblique_image()
    grid = ImageGrid.from_image(image)
    rng = np.random.default_rng(1)
    names = [f"p{i}" for i in range(6)]
    # continuous ITK indices well inside the 40 x 30 x 20 image, then world points by SimpleITK
    indices = rng.uniform([2, 2, 2], [37, 27, 17], size=(len(names), 3))
    points = {n: np.array(image.TransformContinuousIndexToPhysicalPoint(idx.tolist())) for n, idx in zip(names, indices)}
    case = Case("c", [], None, Landmarks(points=points), grid)
    labels = landmark_label_map(case, names)
    assert labels.shape == image.GetSize()[::-1]
    for i, (name, idx) in enumerate(zip(names, indices)):
        nearest = np.array(image.TransformPhysicalPointToIndex(points[name].tolist()))  # ITK (i, j, k)
        np.testing.assert_array_equal(nearest, np.rint(idx))  # the independent reference agrees with itself
        k, j, i_ = nearest[::-1]  # array order (k, j, i)
        expected = np.zeros_like(labels, dtype=bool)
        expected[k - 1:k + 2, j - 1:j + 2, i_ - 1:i_ + 2] = True
        np.testing.assert_array_equal(labels == i + 1, expected, err_msg=name)
        centre = np.array(image.TransformIndexToPhysicalPoint(nearest.tolist()))
        back = np.array(image.TransformPhysicalPointToContinuousIndex(centre.tolist()))
        assert np.all(np.abs(back - idx) <= 0.5 + 1e-9), name


def test_preprocessed_index_maps_are_inverse():
    pgrid = PreprocessedGrid(transpose_forward=(2, 0, 1), crop_start=(3, 1, 4), cropped_shape=(30, 20, 10),
                             preprocessed_shape=(41, 13, 25))
    rng = np.random.default_rng(2)
    p = rng.uniform(0, 10, size=(7, 3))
    assert np.allclose(array_to_preprocessed_index(preprocessed_to_array_index(p, pgrid), pgrid), p)
    grid = ImageGrid.from_image(oblique_image())
    w = preprocessed_to_world(p, pgrid, grid)
    assert np.allclose(world_to_preprocessed(w, pgrid, grid), p)
    placement = preprocessed_image_grid(pgrid, grid)
    # a saved preprocessed array (ITK index = reversed preprocessed index) lands at the same world points
    assert np.allclose(index_to_world(p[:, ::-1], placement), w)


def _coordinate_channels(image: sitk.Image, box_lo, box_hi):
    """Three channels holding each voxel's world x, y, z (+1000) inside a box, zero outside.

    nnU-Net crops to the non-zero box and resamples with cubic splines, which
    reproduce linear functions: the preprocessed value at a voxel *is* its world point.
    """
    grid = ImageGrid.from_image(image)
    k, j, i = np.meshgrid(*[np.arange(s) for s in image.GetSize()[::-1]], indexing="ij")
    world = index_to_world(np.stack([i, j, k], axis=-1).astype(float), grid)
    inside = np.zeros(k.shape, bool)
    inside[box_lo[0]:box_hi[0], box_lo[1]:box_hi[1], box_lo[2]:box_hi[2]] = True
    channels = []
    for axis in range(3):
        arr = np.where(inside, world[..., axis] + 1000.0, 0.0).astype(np.float64)
        ch = sitk.GetImageFromArray(arr)
        ch.CopyInformation(image)
        channels.append(ch)
    return channels


def _preprocessed_coordinates(prepared_project, tmp_path):
    """An oblique, anisotropic image whose three channels hold each voxel's world point,
    preprocessed by nnU-Net (transposed, cropped, resampled): ``(data, pgrid, grid)``."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnlandmark.nnunet.predictor import preprocess_case
    from nnlandmark.planning.project import Project

    project = Project.load(prepared_project)
    plans = copy.deepcopy(project.plans())
    plans["transpose_forward"], plans["transpose_backward"] = [1, 2, 0], [2, 0, 1]
    config = plans["configurations"]["3d_fullres"]
    config["spacing"] = [1.1, 1.9, 0.8]  # transposed order, anisotropic, < 3x so no separate-z resampling
    config["normalization_schemes"] = ["NoNormalization"] * 3
    config["use_mask_for_norm"] = [False] * 3
    intensity = plans["foreground_intensity_properties_per_channel"]["0"]
    plans["foreground_intensity_properties_per_channel"] = {str(c): intensity for c in range(3)}
    plans_manager = PlansManager(plans)
    dataset_json = {"channel_names": {"0": "x", "1": "y", "2": "z"}, "labels": {"background": 0, "a": 1},
                    "file_ending": ".mha"}

    image = oblique_image(size=(40, 30, 24), spacing=(0.8, 1.3, 2.1))  # < 3x anisotropy: no separate-z
    files = []
    for c, ch in enumerate(_coordinate_channels(image, box_lo=(3, 4, 5), box_hi=(21, 27, 36))):
        files.append(tmp_path / f"case_{c:04d}.mha")
        sitk.WriteImage(ch, str(files[-1]))
    data, pgrid = preprocess_case(files, plans_manager, plans_manager.get_configuration("3d_fullres"),
                                  dataset_json)
    return data, pgrid, ImageGrid.from_image(image)


def _interior(data, pgrid):
    # cubic splines reproduce linear data exactly once ~8 input voxels away from the crop border
    margins = np.ceil(8 / pgrid.scale).astype(int)
    return [np.arange(m, s - m) for m, s in zip(margins, data.shape[1:])]


def test_preprocessed_grid_matches_nnunet_preprocessing_exactly(prepared_project, tmp_path):
    """Transpose + crop + resampling by nnU-Net's own preprocessor, inverted by geometry to 1e-3 mm.

    Also checks the full decoding path: a heatmap peak placed at a preprocessed
    voxel decodes to that voxel's world point.
    """
    from nnlandmark.inference.predict import decode_case

    data, pgrid, grid = _preprocessed_coordinates(prepared_project, tmp_path)
    assert pgrid.crop_start == (4, 5, 3)  # array box (3,4,5) after transpose [1, 2, 0]
    assert pgrid.preprocessed_shape != pgrid.cropped_shape  # really resampled
    interior = _interior(data, pgrid)
    rng = np.random.default_rng(3)
    for _ in range(25):
        p = np.array([rng.choice(ax) for ax in interior], dtype=float)
        expected = data[(slice(None), *p.astype(int))] - 1000.0
        assert np.allclose(preprocessed_to_world(p, pgrid, grid), expected, atol=1e-3)

        heatmaps = np.zeros((1, *data.shape[1:]), np.float16)
        heatmaps[(0, *p.astype(int))] = 1.0
        world, index, score = decode_case(heatmaps, pgrid, grid, ["a"])["a"]
        assert np.allclose(world, expected, atol=1e-3) and score == 1.0
        assert np.allclose(index_to_world(index, grid), world, atol=1e-6)


def test_point_in_a_local_patch_maps_to_its_world_point(prepared_project, tmp_path):
    """The cascade's local step: a patch cut around a world estimate (nnU-Net-preprocessed,
    oblique, anisotropic, transposed image); every voxel of the patch holds its own world
    point, and the patch index maps back to it through geometry to 1e-3 mm."""
    import torch
    from nnlandmark.geometry import patch_start, patch_to_preprocessed
    from nnlandmark.inference.predict import crop_patches

    data, pgrid, grid = _preprocessed_coordinates(prepared_project, tmp_path)
    interior = _interior(data, pgrid)
    lo, hi = np.array([ax[0] for ax in interior]), np.array([ax[-1] for ax in interior])
    patch_size = (6, 5, 8)
    rng = np.random.default_rng(5)
    estimates = [preprocessed_to_world(rng.uniform(lo, hi), pgrid, grid) for _ in range(6)]
    starts = patch_start(world_to_preprocessed(np.array(estimates), pgrid, grid), patch_size)
    patches = crop_patches(torch.from_numpy(data), starts, patch_size).numpy()
    checked = 0
    for n, estimate in enumerate(estimates):
        for q in np.ndindex(*patch_size):
            index = patch_to_preprocessed(q, starts[n])
            if np.all(index >= lo) and np.all(index <= hi):  # where nnU-Net's resampling is exact
                world = preprocessed_to_world(index, pgrid, grid)
                assert np.allclose(world, patches[(n, slice(None), *q)] - 1000.0, atol=1e-3)
                checked += 1
            elif np.any(index < 0) or np.any(index >= data.shape[1:]):
                assert np.all(patches[(n, slice(None), *q)] == 0)  # padding outside the array
        centre = patch_to_preprocessed((np.array(patch_size) - 1) / 2, starts[n])
        # the patch is centred on the estimate to within half a voxel per axis
        assert np.all(np.abs(world_to_preprocessed(estimate, pgrid, grid) - centre) <= 0.5 + 1e-9)
    assert checked >= 200


@pytest.mark.parametrize("dims", [2, 3])
def test_shared_patches_keep_every_point_within_reach_of_its_patch_centre(dims):
    from nnlandmark.geometry import patch_start, shared_patch_starts
    rng = np.random.default_rng(dims)
    patch = (40,) * dims
    for _ in range(20):
        centres = rng.uniform(0, 120, size=(32, dims))
        reach = rng.uniform(1, 10, size=dims)
        starts, patch_of = shared_patch_starts(centres, patch, reach)
        patch_centres = starts[patch_of] + (np.asarray(patch) - 1) / 2
        assert np.all(np.abs(centres - patch_centres) <= reach + 0.5 + 1e-9)
        assert set(patch_of.tolist()) == set(range(len(starts)))  # no empty patch
        # reach 0: each point's own patch, as the local stage had it before sharing
        alone, patch_of = shared_patch_starts(centres, patch, 0)
        assert np.array_equal(alone[patch_of], patch_start(centres, patch))
    # clustered points do share: 32 points in four tight clusters need four patches
    clusters = np.repeat(rng.uniform(0, 200, size=(4, dims)), 8, axis=0) + rng.uniform(-2, 2, size=(32, dims))
    assert len(shared_patch_starts(clusters, patch, 4)[0]) == 4
