"""One atomic-write helper (nnlandmark/files.py): a target is the old file or the whole new one."""
import pytest

from nnlandmark.files import atomic_write, atomic_write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "nnlandmark.json"
    atomic_write_text(target, "old")

    def half_then_fail(tmp):
        tmp.write_text("half")
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["nnlandmark.json"]


#: writers that keep their own temporary name: nnU-Net writes the checkpoint (its extra parameters added
#: before the rename), and a case's preprocessing writes several files under one prefix
OWN_TEMPORARY_NAMES = {"nnunet/trainer.py", "nnunet/planning.py"}


def test_no_other_module_hand_rolls_a_temporary_name():
    from pathlib import Path
    package = Path(__file__).resolve().parents[1] / "nnlandmark"
    rolled = {p.relative_to(package).as_posix() for p in package.rglob("*.py")
              if p.name != "files.py" and '".tmp_' in p.read_text().replace("f\"", "\"")}
    assert rolled == OWN_TEMPORARY_NAMES
