"""Writing a file so that it is either the old one or the whole new one: never half written.

Every file nnlandmark writes where a killed process must not leave a truncated
copy (a case's predictions, the model's description, the project file,
nnU-Net's raw export, the plans) goes through :func:`atomic_write`: written
beside its target under a hidden name, then renamed over it (a rename within
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

import os
from pathlib import Path


def temporary_name(path) -> Path:
    """Where :func:`atomic_write` writes before the rename: a hidden file beside ``path``.

    >>> temporary_name("out/case_001.json").as_posix()
    'out/.tmp_case_001.json'
    """
    path = Path(path)
    return path.with_name(f".tmp_{path.name}")


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
