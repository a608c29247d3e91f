"""DICOM series as images: a folder per series, geometry from SimpleITK's series reader.

The reference for every check is the same volume written as NRRD: an oblique,
anisotropic grid must come back within 1e-3 mm, voxel for voxel, and a model
must predict the same points from either.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from nnlandmark.cli import main
from nnlandmark.data.images import read_image, read_image_grid, write_dicom_series
from nnlandmark.geometry import index_to_world


def _oblique_volume(seed: int = 0) -> sitk.Image:
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray((rng.random((12, 16, 20)) * 1000).astype(np.int16))
    image.SetSpacing((0.7, 0.9, 2.5))
    image.SetOrigin((10.5, -20.25, 33.0))
    image.SetDirection(Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix().ravel().tolist())
    return image


def _corners(grid) -> np.ndarray:
    return index_to_world(np.array([[i, j, k] for i in (0, grid.size[0] - 1) for j in (0, grid.size[1] - 1)
                                    for k in (0, grid.size[2] - 1)], float), grid)


def test_an_oblique_series_has_the_geometry_and_voxels_of_the_same_volume_in_nrrd(tmp_path):
    image = _oblique_volume()
    series = write_dicom_series(image, tmp_path / "series")
    sitk.WriteImage(image, str(tmp_path / "volume.nrrd"))
    dicom, nrrd = read_image_grid(series, read_pixels=True), read_image_grid(tmp_path / "volume.nrrd")
    assert dicom.size == nrrd.size
    np.testing.assert_allclose(_corners(dicom), _corners(nrrd), atol=1e-3)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(series)), sitk.GetArrayFromImage(image))


def _dicom_dataset(src: Path, dst: Path) -> Path:
    """``src`` (a synthetic dataset) with every image replaced by a DICOM series folder."""
    shutil.copytree(src, dst)
    for f in sorted((dst / "images").iterdir()):
        case = f.name.split(".")[0]
        image = sitk.Cast(sitk.RescaleIntensity(sitk.ReadImage(str(f)), 0, 1000), sitk.sitkInt16)
        write_dicom_series(image, dst / "images" / case)
        f.unlink()
    return dst


def test_check_reads_a_folder_per_series(synthetic_dataset, tmp_path, capsys):
    dataset = _dicom_dataset(synthetic_dataset, tmp_path / "dicom")
    assert main(["check", str(dataset)]) == 0, capsys.readouterr().err
    assert "OK, 10 cases" in capsys.readouterr().out


def test_slices_loose_in_images_are_one_message(synthetic_dataset, tmp_path, capsys):
    dataset = _dicom_dataset(synthetic_dataset, tmp_path / "dicom")
    series = dataset / "images" / "case_000"
    for f in series.iterdir():
        f.rename(dataset / "images" / f.name)
    series.rmdir()
    capsys.readouterr()
    assert main(["check", str(dataset)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert sum("DICOM slice files" in line for line in errors) == 1, errors
    assert not any("slice_0001.dcm" in line for line in errors), errors


def test_a_folder_with_two_series_is_refused(tmp_path, capsys):
    folder = tmp_path / "two"
    write_dicom_series(_oblique_volume(0), folder)
    other = write_dicom_series(_oblique_volume(1), tmp_path / "other")
    for f in other.iterdir():
        f.rename(folder / f"b_{f.name}")
    with pytest.raises(Exception, match="2 DICOM series"):
        read_image_grid(folder)


def test_prepare_and_predict_a_dicom_series_like_the_same_volume_in_nrrd(tiny_model, synthetic_dataset, tmp_path,
                                                                           capsys):
    image = sitk.Cast(sitk.RescaleIntensity(sitk.ReadImage(str(synthetic_dataset / "images" / "case_003.nii.gz")),
                                            0, 1000), sitk.sitkInt16)
    series = write_dicom_series(image, tmp_path / "in_dicom" / "scan")
    nrrd = tmp_path / "in_nrrd" / "scan.nrrd"
    nrrd.parent.mkdir()
    sitk.WriteImage(image, str(nrrd))
    for source, out in ((series, tmp_path / "out_dicom"), (nrrd, tmp_path / "out_nrrd")):
        assert main(["predict", "-i", str(source), "-o", str(out), "-m", str(tiny_model)]) == 0
    dicom = json.loads((tmp_path / "out_dicom" / "scan.json").read_text())
    reference = json.loads((tmp_path / "out_nrrd" / "scan.json").read_text())
    for name in reference:
        np.testing.assert_allclose(dicom[name]["world_lps_mm"], reference[name]["world_lps_mm"], atol=1e-3)
    assert not list(Path(series).glob("*.mha"))  # the temporary copy is not left with the user's files

    # prepare exports a DICOM dataset's voxels to nnU-Net unchanged
    dataset = _dicom_dataset(synthetic_dataset, tmp_path / "dicom")
    project = tmp_path / "project"
    assert main(["prepare", str(dataset), "-p", str(project), "-np", "1"]) == 0, capsys.readouterr().err
    raw = next(project.rglob("imagesTr/case_000_0000.*"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(raw))),
                                  sitk.GetArrayFromImage(read_image(dataset / "images" / "case_000")))
