"""``predict --num-parts N --part-id K``: the parts of one run, written into one folder, give the
files of a single run; ``merge-predictions`` says what is missing until every part is done."""
from __future__ import annotations

from pathlib import Path

from nnlandmark.cli import main


def _visible(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def test_two_parts_give_the_files_of_one_run(tiny_model, synthetic_dataset, tmp_path, capsys):
    images = [str(synthetic_dataset / "images" / f"case_00{i}.nii.gz") for i in range(3)]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert main(["predict", "-i", *images, "-o", str(whole), "-m", str(tiny_model)]) == 0

    assert main(["predict", "-i", *images, "-o", str(parts), "-m", str(tiny_model), "--num-parts", "2",
                 "--part-id", "1"]) == 0
    # part 1 of 2: every second case from the second on
    assert sorted(p.name for p in parts.glob("*.mrk.json")) == ["case_001.mrk.json"]
    capsys.readouterr()
    assert main(["merge-predictions", str(parts)]) == 1
    assert "2 case(s) of the run not predicted yet: case_000, case_002" in capsys.readouterr().err

    assert main(["predict", "-i", *images, "-o", str(parts), "-m", str(tiny_model), "--num-parts", "2",
                 "--part-id", "0"]) == 0
    assert _visible(parts) == _visible(whole)  # the case files and a whole predictions.csv
    assert main(["merge-predictions", str(parts)]) == 0
    assert _visible(parts) == _visible(whole)


def test_a_part_out_of_range_is_refused(tiny_model, synthetic_dataset, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["predict", "-i", str(synthetic_dataset / "images"), "-o", str(out), "-m", str(tiny_model),
               "--num-parts", "2", "--part-id", "2"])
    assert rc == 2 and "error: --part-id: must be in 0 ... 1 (--num-parts 2), got 2" in capsys.readouterr().err
    assert not out.exists()
