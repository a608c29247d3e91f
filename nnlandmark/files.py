"""Writing a file so that it is either the old one or the whole new one: never half written.

Every file nnlandmark writes where a killed process must not leave a truncated
copy (a case's predictions, the model's description, the project file,
nnU-Net's raw export, the plans) goes through :func:`atomic_write`: written
beside its target under a unique hidden name, then renamed over it (a rename within
one folder is atomic on POSIX and Windows). A leaf module: it imports nothing
of nnlandmark, so every layer, the nnU-Net adapter included, may use it.

>>> import tempfile
>>> from pathlib import Path
>>> target = Path(tempfile.mkdtemp()) / "record.json"
>>> atomic_write_text(target, '{"a": 1}')
>>> atomic_write(target, lambda tmp: tmp.write_text('{"a": 2}'))
>>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
('{"a": 2}', ['record.json'])
"""
from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path


#: mkstemp's random part: 8 characters
_RANDOM = "?" * 8


def temporary_name(path) -> Path:
    """A new, empty hidden file beside ``path`` with a unique name (``.tmp<random>_<name>``): where
    :func:`atomic_write` writes before the rename. Unique, so it is never a file of the user's and
    two writers of one target never share it; it ends with the target's name, so writers that pick a
    format by the file's extension (SimpleITK) write the target's format.

    >>> import tempfile
    >>> tmp = temporary_name(Path(tempfile.mkdtemp()) / "case_001.nii.gz")
    >>> tmp.name.startswith(".tmp"), tmp.name.endswith("_case_001.nii.gz"), tmp.is_file()
    (True, True, True)
    >>> leftovers(tmp.parent / "case_001.nii.gz") == [tmp]
    True
    """
    path = Path(path)
    # the name cut to fit the 255 bytes a file system allows, with room for the random part
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=".tmp", suffix=f"_{path.name[-200:]}")
    os.close(fd)
    return Path(name)


def leftovers(path) -> list:
    """The temporary files :func:`atomic_write` left beside ``path`` when its process was killed."""
    path = Path(path)
    return sorted(path.parent.glob(f".tmp{_RANDOM}_{glob.escape(path.name[-200:])}"))


def atomic_write(path, write) -> None:
    """``write(temporary path)``, then the temporary file replaces ``path``. When ``write`` fails
    the target is untouched and the temporary file is removed; the error propagates."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path, text: str) -> None:
    """``text`` into ``path`` by :func:`atomic_write`."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
