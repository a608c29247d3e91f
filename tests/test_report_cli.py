"""``nnlandmark report`` end to end on the tiny model's predictions, and the per-fold training curves."""
from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from nnlandmark.cli import main

PREDICTED = ("case_000", "case_001")


@pytest.fixture(scope="module")
def predictions(tiny_model, synthetic_dataset, tmp_path_factory) -> Path:
    from nnlandmark.inference.predict import predict
    out = tmp_path_factory.mktemp("report") / "predictions"
    images = [synthetic_dataset / "images" / f"{case}.nii.gz" for case in PREDICTED]
    return predict(images, out, tiny_model, progress=False)


def test_report_cli(predictions, synthetic_dataset, tmp_path, capsys, monkeypatch):
    # not `import nnlandmark.report.slices`: the attribute nnlandmark.report is the report() function
    from nnlandmark.report import slices
    from nnlandmark.evaluation.evaluate import evaluate

    figures = {}  # case -> the slice figure, kept to inspect what was drawn

    def keep(fig, out_png, **kwargs):
        figures[Path(out_png).stem] = fig
        return save(fig, out_png, **kwargs)
    save = slices.save_figure
    monkeypatch.setattr(slices, "save_figure", keep)

    out = tmp_path / "report"
    assert main(["report", "-p", str(predictions), "-r", str(synthetic_dataset), "-o", str(out)]) == 0
    result = evaluate(predictions, synthetic_dataset)
    names = result.landmark_names
    assert list(result.case_ids) == list(PREDICTED)

    # report.html: per-landmark table with each landmark's MRE, box plot, SDR curve, slice links
    html = (out / "report.html").read_text()
    for name in names:
        mre = result.summary["per_landmark"][name]["mre_mm"]
        assert re.search(rf"<tr><td>{name}</td><td>{len(PREDICTED)}</td><td>{mre:.2f} &plusmn;", html), name
    for png in ("error_boxplot.png", "sdr_curve.png"):
        assert f"<img src='{png}'" in html
        assert mpimg.imread(out / png)[..., :3].std() > 0.05  # drawn, not blank
    for case in PREDICTED:
        assert f"slices/{case}.png" in html
    assert "case_002: no prediction file" in html  # reference cases without a prediction are listed

    # per-case PNG: three orthogonal slices per landmark, reference and prediction marked, error in the title
    assert sorted(figures) == list(PREDICTED)
    for c, case in enumerate(PREDICTED):
        png = mpimg.imread(out / "slices" / f"{case}.png")
        assert png.shape[:2] == (round((3.2 * len(names) + 0.5) * 100), round(3 * 3.2 * 100))
        axes = figures[case].axes
        assert len(axes) == 3 * len(names)
        for row, name in enumerate(names):
            panels = axes[3 * row: 3 * row + 3]
            assert panels[0].get_title(loc="left") == f"{name}: error {result.errors[c, row]:.2f} mm"
            assert [p.get_xlabel().split()[0] for p in panels] == ["axial", "coronal", "sagittal"]
            for panel in panels:
                assert panel.images, (case, name)
                markers = {(line.get_marker(), line.get_markeredgecolor()) for line in panel.lines}
                assert {("o", "lime"), ("x", "red")} <= markers, (case, name, markers)

    # a second run refuses to overwrite, unless asked
    capsys.readouterr()
    assert main(["report", "-p", str(predictions), "-r", str(synthetic_dataset), "-o", str(out)]) == 2
    assert "report.html" in capsys.readouterr().err
    assert main(["report", "-p", str(predictions), "-r", str(synthetic_dataset), "-o", str(out),
                 "--overwrite"]) == 0


@pytest.mark.parametrize("stage", ["global", "local"])
def test_training_writes_curves_per_fold_and_stage(tiny_model, stage):
    from conftest import TINY_SETTINGS
    fold = tiny_model / "fold_0" / stage
    curves = json.loads((fold / "training_curves.json").read_text())
    assert set(curves) >= {"train_loss", "val_loss", "lr"}
    assert all(len(v) == TINY_SETTINGS["epochs"] for v in curves.values())
    assert np.isfinite(curves["train_loss"]).all()
    png = mpimg.imread(fold / "training_curves.png")
    assert png.shape[0] > 100 and png[..., :3].std() > 0.05
