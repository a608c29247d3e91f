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
['afids', 'feta', 'fetal-pose', 'lfc', 'mml', 'pddca']
"""
from __future__ import annotations

from pathlib import Path

from nnlandmark.data.convert import afids, feta, fetal_pose, lfc, mml, pddca
from nnlandmark.data.convert._common import ConversionError, seeded_split

CONVERTERS = {
    "afids": afids.convert,
    "mml": mml.convert,
    "pddca": pddca.convert,
    "feta": feta.convert,
    "lfc": lfc.convert,
    "fetal-pose": fetal_pose.convert,
}

__all__ = ["CONVERTERS", "ConversionError", "run_converter", "seeded_split"]


def run_converter(name: str, src, dst, seed: int = 0, **options) -> Path:
    """Run the converter registered as ``name``; return the dataset folder.

    ``options`` are passed to the converter (e.g. ``complete_only=True`` for
    ``"mml"``, ``index_base=1`` for ``"fetal-pose"``).

    Raises
    ------
    KeyError
        Unknown benchmark name (the message lists the known ones).
    ConversionError
        The source does not look like the benchmark, or ``dst`` is not empty.
    """
    key = name.strip().lower().replace("_", "-")
    if key not in CONVERTERS:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(sorted(CONVERTERS))}")
    return CONVERTERS[key](Path(src), Path(dst), seed=seed, **options)
