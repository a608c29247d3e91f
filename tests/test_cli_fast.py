"""The CLI answers --help and argument errors without importing torch or nnunetv2 (well under a second)."""
from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from nnlandmark import cli
try:
    cli.main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print("HEAVY", sorted(m for m in ("torch", "nnunetv2", "SimpleITK") if m in sys.modules), code)
"""


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["train"], ["predict", "-i", "x"],
                                  ["train", "p", "--preset", "nope"], ["train", "p", "--heatmap", "nope"]])
def test_help_and_argument_errors_import_nothing_heavy(argv):
    run = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=60)
    line = next(x for x in run.stdout.splitlines() if x.startswith("HEAVY"))
    assert line.startswith("HEAVY []"), (line, run.stderr[-500:])
    assert line.endswith("0" if "--help" in argv else "2")


def test_the_package_still_exports_its_api_lazily():
    import nnlandmark
    assert set(nnlandmark.__all__) >= {"prepare", "train", "predict", "evaluate", "TrainingSettings"}
    assert nnlandmark.TrainingSettings().configuration == "cascade"
    with pytest.raises(AttributeError):
        nnlandmark.no_such_thing


def test_nnlandmarks_own_warnings_are_one_line_others_keep_their_source(monkeypatch, capsys):
    """A warning of nnlandmark's reads like the errors (``warning: <message>``, no file and line of ours);
    another package's keeps Python's format with its source."""
    import warnings

    from nnlandmark import cli
    from nnlandmark.inference.predict import _radius_calibration

    def run(args):
        calibrated = {"uncertainty_calibration": {"coverage": 0.95, "decoder": "argmax", "scales": {}}}
        _radius_calibration(calibrated, "mass", "model/nnlandmark.json")  # warns from nnlandmark
        warnings.warn_explicit("a library's warning", UserWarning, "/site-packages/lib.py", 7)
        return 0

    monkeypatch.setattr(cli, "run", run)
    with pytest.warns(UserWarning, match="a library's warning") as passed_on:  # Python's own path, as it came
        assert cli.main(["check", "somewhere"]) == 0
    assert [(w.filename, w.lineno) for w in passed_on] == [("/site-packages/lib.py", 7)]
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["warning: model/nnlandmark.json: the uncertainty was calibrated with --decoder argmax, this "
                     "prediction uses mass; radius_95_mm is written as null (run evaluate-cv with --decoder mass)"]
