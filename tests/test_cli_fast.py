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
