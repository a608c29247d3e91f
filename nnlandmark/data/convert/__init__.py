"""Converters from public landmark benchmarks, as downloaded, to our dataset layout.

Each converter is ``convert(src, dst, *, seed=0, **options) -> Path``; it never
writes under ``src``, refuses a non-empty ``dst``, and writes ``dataset.json``,
``images/``, ``landmarks/<case>.json``, ``splits.json`` and
``conversion_notes.json`` (see :mod:`nnlandmark.data.convert._common`). No
converter has been run on the real downloads here; each module's docstring lists
the layout it expects and the assumptions it makes.

Examples
--------
>>> sorted(CONVERTERS)
['afids', 'feta', 'fetal-pose', 'isbi2015', 'lfc', 'mml', 'pddca']
"""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path

from nnlandmark.errors import InvalidInput

#: benchmark name -> the module here whose ``convert`` reads it (imported when used, so that
#: listing the names, as ``nnlandmark --help`` does, loads no image library)
CONVERTERS = {
    "afids": "afids",
    "mml": "mml",
    "pddca": "pddca",
    "feta": "feta",
    "lfc": "lfc",
    "fetal-pose": "fetal_pose",
    "isbi2015": "isbi2015",
}

__all__ = ["CONVERTERS", "ConversionError", "converter", "run_converter", "seeded_split"]


def __getattr__(name):
    if name in ("ConversionError", "seeded_split"):
        from nnlandmark.data.convert import _common
        return getattr(_common, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def converter(name: str):
    """The ``convert`` function registered as ``name`` (case and ``_``/``-`` do not matter)."""
    key = name.strip().lower().replace("_", "-")
    if key not in CONVERTERS:
        raise InvalidInput(f"unknown benchmark {name!r}; known: {', '.join(sorted(CONVERTERS))}")
    return importlib.import_module(f"{__name__}.{CONVERTERS[key]}").convert


def run_converter(name: str, src, dst, seed: int = 0, **options) -> Path:
    """Run the converter registered as ``name``; return the dataset folder.

    ``options`` are passed to the converter (e.g. ``complete_only=True`` for
    ``"mml"``, ``index_base=1`` for ``"fetal-pose"``, ``ground_truth="senior"`` for
    ``"isbi2015"``).

    Raises
    ------
    InvalidInput
        Unknown benchmark name (the message lists the known ones), or an
        option that converter does not take.
    ConversionError
        The source does not look like the benchmark, or ``dst`` is not empty.
    """
    convert = converter(name)
    accepted = inspect.signature(convert).parameters
    for option in options:
        if option not in accepted:
            raise InvalidInput(f"--{option.replace('_', '-')}: not an option of the {name} converter")
    return convert(Path(src), Path(dst), seed=seed, **options)
