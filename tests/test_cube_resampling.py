"""Landmark cubes survive nnU-Net's resampling when cases are much finer than the target spacing.

nnU-Net downsamples label maps by interpolating each label's mask linearly and
keeping values >= 0.5. A 3x3x3 cube vanishes at 4x downsampling in most
positions, which would silently remove the landmark from training; the cube
therefore grows with the ratio of target to case spacing
(``nnlandmark.nnunet.raw.cube_half_widths``).
"""
import json
import shutil
from pathlib import Path

import blosc2
import numpy as np
import pytest

from nnlandmark.nnunet.raw import cube_half_widths

N = 64  # fine grid edge, voxels


def _resampled_cube(centre, half_widths, factors):
    """nnU-Net's label resampling of one cube on an N^3 grid, downsampled by ``factors`` (array axes)."""
    from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape
    seg = np.zeros((1, N, N, N), np.int16)
    seg[(0,) + tuple(slice(c - h, c + h + 1) for c, h in zip(centre, half_widths))] = 1
    new_shape = tuple(int(round(N / f)) for f in factors)
    out = resample_data_or_seg_to_shape(seg, new_shape, [1.0] * 3, list(factors), is_seg=True, order=1, order_z=0)
    return out[0], new_shape


@pytest.mark.parametrize("factors", [(1.5,) * 3, (2.0,) * 3, (2.5,) * 3, (3.9,) * 3, (4.0,) * 3, (5.5,) * 3,
                                     (8.0,) * 3, (6.0, 1.0, 1.0), (1.0, 2.0, 4.0)])
def test_sized_cube_survives_downsampling_with_its_centre(factors):
    rng = np.random.default_rng(0)
    half_widths = cube_half_widths((1.0, 1.0, 1.0), factors[::-1])  # (x, y, z) in, (k, j, i) out
    for _ in range(20):
        centre = rng.integers(12, N - 12, 3)
        coarse, new_shape = _resampled_cube(centre, half_widths, factors)
        voxels = np.argwhere(coarse > 0)
        assert len(voxels), (factors, centre)
        # coarse voxel c covers fine voxels around (c + 0.5) * N / n - 0.5 (pixel-centre alignment)
        centroid_fine = (voxels.mean(0) + 0.5) * N / np.array(new_shape) - 0.5
        assert np.all(np.abs(centroid_fine - centre) / np.array(factors) <= 0.5), (factors, centre)


def test_three_voxel_cube_is_lost_at_four_times_downsampling():
    """The failure the sizing prevents (if nnU-Net's resampling changes, revisit cube_half_widths)."""
    rng = np.random.default_rng(0)
    lost = sum(not np.any(_resampled_cube(rng.integers(12, N - 12, 3), (1, 1, 1), (4.0,) * 3)[0])
               for _ in range(20))
    assert lost >= 10


def test_half_widths_follow_each_axis():
    assert cube_half_widths((0.5, 1.0, 3.0), (2.0, 2.0, 3.0)).tolist() == [1, 2, 4]  # (k, j, i)
    assert cube_half_widths((2.0, 2.0, 2.0), (1.0, 1.0, 1.0)).tolist() == [1, 1, 1]  # upsampling: 3x3x3
    assert cube_half_widths((1.0, 1.0, 1.0)).tolist() == [1, 1, 1]


def test_planned_spacing_is_read_back_through_nnunets_transpose():
    from nnlandmark.nnunet.planning import planned_spacing_xyz
    # array axes (z, y, x) spaced (3.0, 1.0, 0.5); nnU-Net's transpose (2, 0, 1) stores them as [0.5, 3.0, 1.0]
    plans = {"transpose_forward": [2, 0, 1], "configurations": {"3d_fullres": {"spacing": [0.5, 3.0, 1.0]}}}
    assert planned_spacing_xyz(plans) == [0.5, 1.0, 3.0]


def _labels_per_case(project) -> dict:
    from nnlandmark.nnunet.planning import preprocessed_folder
    folder = preprocessed_folder(project.folders, project.dataset_name, project.plans())
    return {f.name.removesuffix("_seg.b2nd"): sorted(int(v) for v in np.unique(blosc2.open(str(f), mode="r")[:]) if v)
            for f in sorted(folder.glob("*_seg.b2nd"))}


@pytest.mark.slow  # prepares a project
def test_prepare_keeps_every_landmark_at_four_times_coarser_spacing(tmp_path):
    from nnlandmark.data.synthetic import make_synthetic_dataset
    from nnlandmark.planning.project import prepare
    data = make_synthetic_dataset(tmp_path / "data", n_cases=3, seed=5, shape=(64, 64, 64), spacing=(1.0, 1.0, 1.0))
    project = prepare(data, tmp_path / "project", num_processes=1, target_spacing=4.0, progress=False)
    all_labels = list(range(1, len(project.landmarks) + 1))
    assert _labels_per_case(project) == {f"case_{i:03d}": all_labels for i in range(3)}
    sizes = json.loads((project.raw_dir() / "dataset.json").read_text())["nnlandmark_cube_half_widths"]
    assert sizes == {f"case_{i:03d}": [4, 4, 4] for i in range(3)}


@pytest.mark.slow  # prepares a project
def test_prepare_enlarges_cubes_of_a_fine_case_after_planning(tmp_path):
    """nnU-Net plans the median spacing (4 mm); the one 1 mm case gets larger cubes after planning."""
    from nnlandmark.data.synthetic import make_synthetic_dataset
    from nnlandmark.planning.project import prepare
    data = make_synthetic_dataset(tmp_path / "data", n_cases=4, seed=6, shape=(16, 16, 16), spacing=(4.0, 4.0, 4.0))
    fine = make_synthetic_dataset(tmp_path / "fine", n_cases=1, seed=7, shape=(64, 64, 64), spacing=(1.0, 1.0, 1.0))
    shutil.copy(fine / "images" / "case_000.nii.gz", data / "images" / "case_004.nii.gz")
    shutil.copy(fine / "landmarks" / "case_000.json", data / "landmarks" / "case_004.json")

    project = prepare(data, tmp_path / "project", num_processes=1, progress=False)
    from nnlandmark.nnunet.planning import planned_spacing_xyz
    assert planned_spacing_xyz(project.plans()) == pytest.approx([4.0, 4.0, 4.0])
    all_labels = list(range(1, len(project.landmarks) + 1))
    assert _labels_per_case(project) == {f"case_{i:03d}": all_labels for i in range(5)}
    sizes = json.loads((project.raw_dir() / "dataset.json").read_text())["nnlandmark_cube_half_widths"]
    assert sizes["case_004"] == [4, 4, 4] and sizes["case_000"] == [1, 1, 1]

    # a rerun leaves the enlarged label file alone (no export/preprocessing churn)
    label_file = project.raw_dir() / "labelsTr" / "case_004.mha"
    before = label_file.stat().st_mtime_ns
    prepare(data, tmp_path / "project", num_processes=1, progress=False)
    assert label_file.stat().st_mtime_ns == before
