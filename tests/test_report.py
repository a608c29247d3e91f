"""Report figures and HTML: files are written, sized as asked, and points land on the right voxel."""
import json

import matplotlib.image as mpimg
import numpy as np
import pytest
import SimpleITK as sitk

from nnlandmark.data.landmarks import Landmarks
from nnlandmark.evaluation.evaluate import evaluate
from nnlandmark.geometry import ImageGrid, index_to_world, world_to_index
from nnlandmark.report.curves import plot_training_curves
from nnlandmark.report.html import write_report
from nnlandmark.report.slices import _VIEWS, _slice, load_display_image, plot_landmark_slices

BLOB = (12, 20, 6)  # ITK index (i, j, k) of the one bright voxel


@pytest.fixture
def image():
    """Anisotropic, oblique-axis image: i -> -x, j -> +z, k -> +y, one voxel of value 100."""
    rng = np.random.default_rng(0)
    array = rng.random((20, 30, 40)).astype(np.float32)  # (k, j, i)
    array[BLOB[2], BLOB[1], BLOB[0]] = 100.0
    img = sitk.GetImageFromArray(array)
    img.SetSpacing((1.0, 1.5, 3.0))
    img.SetOrigin((5.0, -10.0, 20.0))
    img.SetDirection((-1, 0, 0, 0, 0, 1, 0, 1, 0))
    return img


def _blob_world(img):
    return index_to_world(np.array(BLOB, float), ImageGrid.from_image(img))


def test_display_slices_put_the_point_on_its_voxel(image):
    display = load_display_image(image)
    np.testing.assert_allclose(np.array(display.GetDirection()).reshape(3, 3), np.eye(3))
    array = sitk.GetArrayFromImage(display)
    index = world_to_index(_blob_world(image), ImageGrid.from_image(display))
    np.testing.assert_allclose(index, np.round(index), atol=1e-9)
    index = np.round(index).astype(int)
    for view, fixed, h, v, *_ in _VIEWS:
        # the marker is drawn at (index[h], index[v]) on this slice: it must be the bright voxel
        assert _slice(array, fixed, index[fixed])[index[v], index[h]] == 100.0, view


def test_plot_landmark_slices_png(image, tmp_path):
    blob = _blob_world(image)
    reference = Landmarks(points={"blob": blob, "other": blob + 6.0}, absent=["gone"])
    predicted = Landmarks(points={"blob": blob + np.array([3.0, 0.0, 4.0])}, absent=["other"])
    out = plot_landmark_slices(image, predicted, reference, tmp_path / "qc.png", dpi=50)
    png = mpimg.imread(out)
    # three 3.2-inch panels wide; three 3.2-inch rows (blob, other, gone) + 0.5 inch legend
    assert png.shape[:2] == (round((3 * 3.2 + 0.5) * 50), round(3 * 3.2 * 50))
    assert png[..., :3].std() > 0.05  # not a blank canvas
    with pytest.raises(ValueError):
        plot_landmark_slices(image, Landmarks(), None, tmp_path / "none.png")


def test_training_curves_png(tmp_path):
    log = {"train_loss": [1.0, 0.7, 0.5, 0.45], "val_loss": [1.1, None, 0.8, 0.7],
           "lr": [1e-2, 7e-3, 4e-3, 1e-3], "val_mre_mm": [9.0, 6.0, 4.0, 3.5]}
    out = plot_training_curves(log, tmp_path / "curves.png")
    png = mpimg.imread(out)
    assert png.shape[:2] == (round((2.8 * 3 + 0.4) * 100), 700)  # three panels
    png = mpimg.imread(plot_training_curves({"lr": [0.1]}, tmp_path / "lr.png"))
    assert png.shape[:2] == (round((2.8 + 0.4) * 100), 700)
    with pytest.raises(ValueError):
        plot_training_curves({"train_loss": []}, tmp_path / "empty.png")


def test_write_report_with_slices(image, tmp_path):
    ds = tmp_path / "Data"
    (ds / "landmarks").mkdir(parents=True)
    (ds / "dataset.json").write_text(json.dumps({"landmarks": ["blob", "other"]}))
    blob = _blob_world(image)
    (ds / "landmarks" / "c1.json").write_text(json.dumps(
        {"landmarks": {"blob": blob.tolist(), "other": "absent"}}))
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "c1.json").write_text(json.dumps(
        {"blob": {"world_lps_mm": (blob + [0.0, 2.0, 0.0]).tolist(), "present": True},
         "other": {"world_lps_mm": None, "present": False}}))
    result = evaluate(pred, ds)
    np.testing.assert_allclose(result.errors, [[2.0, np.nan]])

    out = write_report(result, tmp_path / "report", images={"c1": image, "c9": image})
    text = out.read_text()
    assert out.name == "report.html"
    for needle in ("error_boxplot.png", "sdr_curve.png", "slices/c1.png", "c9: no prediction file",
                   "2.00 &plusmn; 0.00 mm", "Presence"):
        assert needle in text, needle
    assert mpimg.imread(tmp_path / "report" / "error_boxplot.png").shape[:2] == (450, 600)
    assert mpimg.imread(tmp_path / "report" / "sdr_curve.png").shape[:2] == (450, 650)
    assert mpimg.imread(tmp_path / "report" / "slices" / "c1.png").shape[:2] == (690, 960)
    with pytest.raises(FileExistsError):
        write_report(result, tmp_path / "report")
    write_report(result, tmp_path / "report", overwrite=True)
