"""Radiographs as users bring them: 8- and 16-bit PNG and TIFF, grey stored as RGB, 2D DICOM
files (DX, CR) with their spacing tags, and landmark files in pixels (``"landmark_units": "pixel"``)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnlandmark.cli import main
from nnlandmark.data.dataset import load_dataset
from nnlandmark.data.images import read_image, read_image_grid, write_dicom_series
from nnlandmark.evaluation.evaluate import evaluate
from nnlandmark.geometry import world_to_index

from test_bad_inputs import assert_refused


def _ramp(dtype, rows=30, columns=40) -> np.ndarray:
    """Distinct values (beyond 8 bits for uint16), rows x columns."""
    top = np.iinfo(dtype).max
    return (np.arange(rows * columns).reshape(rows, columns) * (top // (rows * columns))).astype(dtype)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_8_and_16_bit_pictures_keep_their_values_and_take_the_dataset_spacing(tmp_path, suffix, dtype):
    array = _ramp(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.2, 0.3))  # written as the TIFF's resolution tags / the PNG's pHYs: a print resolution
    path = tmp_path / f"a{suffix}"
    sitk.WriteImage(image, str(path))
    read = read_image(path, spacing=0.1)
    assert read.GetSize() == (40, 30, 1) and read.GetSpacing() == (0.1, 0.1, 1.0)
    assert read.GetPixelID() == (sitk.sitkUInt16 if dtype == np.uint16 else sitk.sitkUInt8)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read)[0], array)
    assert read_image_grid(path, read_pixels=True).spacing == (1.0, 1.0, 1.0)  # no dataset spacing: 1 mm


def test_grey_stored_as_rgb_reads_as_that_grey(tmp_path):
    array = _ramp(np.uint8)
    path = tmp_path / "grey_as_rgb.png"
    sitk.WriteImage(sitk.GetImageFromArray(np.stack([array] * 3, axis=-1), isVector=True), str(path))
    assert sitk.ReadImage(str(path)).GetNumberOfComponentsPerPixel() == 3
    read = read_image(path)
    assert read.GetNumberOfComponentsPerPixel() == 1 and read.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read)[0], array)


def _dicom_radiograph(path: Path, modality: str, imager_spacing, pixel_spacing=None) -> np.ndarray:
    """A one-frame DICOM file as a radiograph: SimpleITK writes the image's spacing of a DX/CR
    file as Imager Pixel Spacing (0018,1164); Pixel Spacing (0028,0030) is added when given."""
    array = _ramp(np.uint16).astype(np.int16) // 4
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(imager_spacing)
    image.SetMetaData("0008|0060", modality)
    if pixel_spacing is not None:
        image.SetMetaData("0028|0030", "\\".join(str(v) for v in pixel_spacing[::-1]))  # row\column
    writer = sitk.ImageFileWriter()
    writer.SetFileName(str(path))
    writer.Execute(image)
    return array


@pytest.mark.parametrize("modality", ["DX", "CR"])
def test_a_dicom_radiograph_takes_pixel_spacing_else_imager_pixel_spacing(tmp_path, modality):
    only_imager = tmp_path / "imager.dcm"
    array = _dicom_radiograph(only_imager, modality, (0.2, 0.25))
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(only_imager))
    reader.ReadImageInformation()
    assert reader.GetMetaData("0018|1164").strip() == ".25\\.2" and not reader.HasMetaDataKey("0028|0030")
    grid = read_image_grid(only_imager, read_pixels=True)
    assert grid.is_2d and grid.size == (40, 30, 1) and grid.spacing == (0.2, 0.25, 1.0)
    image = read_image(only_imager)
    assert image.GetSpacing() == (0.2, 0.25, 1.0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image)[0], array)
    # both tags: Pixel Spacing wins (GDCM alone would read Imager Pixel Spacing)
    both = tmp_path / "both.dcm"
    _dicom_radiograph(both, modality, (0.2, 0.25), pixel_spacing=(0.1, 0.15))
    assert sitk.ReadImage(str(both)).GetSpacing()[:2] == (0.2, 0.25)
    assert read_image_grid(both).spacing == (0.1, 0.15, 1.0)
    assert read_image(both).GetSpacing() == (0.1, 0.15, 1.0)


def test_a_dataset_of_dicom_radiographs_in_pixels(tmp_path):
    """images/<case>.dcm with their own spacing, landmarks in pixels: checked, placed, evaluated."""
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "landmarks").mkdir()
    spacings = {"p1": (0.2, 0.25), "p2": (0.1, 0.1)}
    pixels = {"p1": (10, 20), "p2": (39, 0)}
    for case, spacing in spacings.items():
        _dicom_radiograph(root / "images" / f"{case}.dcm", "DX", spacing)
        x, y = pixels[case]
        (root / "landmarks" / f"{case}.csv").write_text(f"name,x,y\ntip,{x},{y}\n")
    (root / "dataset.json").write_text(json.dumps({"landmarks": ["tip"], "landmark_units": "pixel"}))
    dataset = load_dataset(root, progress=False)
    for case in dataset.cases:
        x, y = pixels[case.case_id]
        sx, sy = spacings[case.case_id]
        np.testing.assert_allclose(case.landmarks.point("tip"), [x * sx, y * sy, 0.0])
        np.testing.assert_allclose(world_to_index(case.landmarks.point("tip"), case.grid), [x, y, 0.0], atol=1e-9)
    # evaluate against the dataset folder places the reference pixels through each image too
    predictions = tmp_path / "pred"
    predictions.mkdir()
    (predictions / "p1.json").write_text(json.dumps({"tip": {"world_lps_mm": [2.0, 5.0 + 0.3, 0.0]}}))
    (predictions / "p2.json").write_text(json.dumps({"tip": {"world_lps_mm": [3.9, 0.4, 0.0]}}))
    result = evaluate(predictions, root)
    np.testing.assert_allclose(result.errors.ravel(), [0.3, 0.4], atol=1e-9)


def test_picture_landmarks_in_pixels_take_the_dataset_spacing(tmp_path):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "landmarks").mkdir()
    array = _ramp(np.uint8)
    array[12, 7] = 255  # row 12, column 7
    sitk.WriteImage(sitk.GetImageFromArray(array), str(root / "images" / "a.png"))
    (root / "landmarks" / "a.json").write_text(json.dumps({"landmarks": {"tip": [7, 12]}}))
    (root / "dataset.json").write_text(json.dumps({"landmarks": ["tip"], "spacing": 0.1,
                                                   "landmark_units": "pixel"}))
    case = load_dataset(root, progress=False).cases[0]
    np.testing.assert_allclose(case.landmarks.point("tip"), [0.7, 1.2, 0.0])
    index = world_to_index(case.landmarks.point("tip"), case.grid)
    assert case.read_image()[int(round(index[0])), int(round(index[1])), 0] == 255
    # a pixel outside the image is refused in pixels' terms of the same check
    (root / "landmarks" / "a.json").write_text(json.dumps({"landmarks": {"tip": [45, 12]}}))
    with pytest.raises(Exception, match="lies outside its 2D image"):
        load_dataset(root, progress=False)


def test_unknown_landmark_units_are_refused(tmp_path, capsys):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "landmarks").mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(_ramp(np.uint8)), str(root / "images" / "a.png"))
    (root / "landmarks" / "a.csv").write_text("name,x,y\ntip,1,2\n")
    (root / "dataset.json").write_text(json.dumps({"landmarks": ["tip"], "landmark_units": "px"}))
    assert_refused(capsys, ["check", root], ("dataset.json", "'landmark_units' must be one of", '"px"'),
                   watched=[root])


def test_slices_of_a_volume_loose_in_images_are_not_radiographs(tmp_path, capsys):
    root = tmp_path / "ds"
    (root / "landmarks").mkdir(parents=True)
    write_dicom_series(sitk.GetImageFromArray(np.zeros((3, 6, 5), np.int16)), root / "images")
    (root / "dataset.json").write_text(json.dumps({"landmarks": ["tip"]}))
    assert main(["check", str(root)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert sum("holds 3 DICOM slice files" in line for line in errors) == 1, errors
