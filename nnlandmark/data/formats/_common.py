"""Shared checks for every landmark file reader and writer.

Readers collect ``(name, status, point)`` entries in file order and hand them to
:func:`build_landmarks`, which rejects duplicates and converts to LPS; every
problem is raised as :class:`LandmarkFileError` prefixed with the file path.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nnlandmark.data.landmarks import LandmarkFileError, Landmarks
from nnlandmark.geometry import lps_to_ras, ras_to_lps
from nnlandmark.errors import InvalidInput

COORDINATE_SYSTEMS = ("LPS", "RAS")


def fail(path, problem: str) -> LandmarkFileError:
    """A :class:`LandmarkFileError` whose message starts with the file path."""
    return LandmarkFileError(f"{path}: {problem}")


def read_text(path) -> str:
    """The text of a UTF-8 file (a byte-order mark is dropped); empty or undecodable files are rejected."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise fail(path, f"not UTF-8 text ({err})") from None
    if not text.strip():
        raise fail(path, "empty file")
    return text


def parse_coordinate_system(value, path, *, where: str = "") -> str:
    """Normalise a declared coordinate system to ``"LPS"`` or ``"RAS"``.

    Accepts the names in any case and Slicer's legacy numeric codes
    (``0`` = RAS, ``1`` = LPS). Anything else, including Slicer's legacy
    ``2`` (IJK, voxel coordinates), is rejected.

    Examples
    --------
    >>> parse_coordinate_system(" ras ", "f.fcsv")
    'RAS'
    >>> parse_coordinate_system("1", "f.fcsv")
    'LPS'
    """
    text = str(value).strip().upper()
    text = {"0": "RAS", "1": "LPS"}.get(text, text)
    if text not in COORDINATE_SYSTEMS:
        suffix = f" ({where})" if where else ""
        raise fail(path, f"unknown coordinate system {value!r}{suffix}; expected LPS or RAS")
    return text


def check_output_system(coordinate_system) -> str:
    """Validate the ``coordinate_system`` argument of a writer."""
    text = str(coordinate_system).strip().upper()
    if text not in COORDINATE_SYSTEMS:
        raise InvalidInput(f"coordinate_system must be 'LPS' or 'RAS', got {coordinate_system!r}")
    return text


def parse_point(values, path, name: str) -> np.ndarray:
    """Three finite floats from a list of numbers or numeric strings, or two for a point of a
    2D image (x, y; :func:`build_landmarks` places it at z = 0)."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise fail(path, f"landmark {name!r}: expected 3 coordinates (2 on a 2D image), got {values!r}")
    if len(values) not in (2, 3):
        raise fail(path, f"landmark {name!r}: expected 3 coordinates (2 on a 2D image), got {len(values)}")
    out = []
    for v in values:
        # bool is an int subclass; true/false in a coordinate slot is a broken file
        if isinstance(v, bool):
            raise fail(path, f"landmark {name!r}: non-numeric coordinate {v!r}")
        try:
            f = float(v.strip() if isinstance(v, str) else v)
        except (TypeError, ValueError):
            raise fail(path, f"landmark {name!r}: non-numeric coordinate {v!r}") from None
        if not math.isfinite(f):
            raise fail(path, f"landmark {name!r}: coordinate is not finite ({v!r})")
        out.append(f)
    return np.array(out)


def to_lps(point: np.ndarray, system: str) -> np.ndarray:
    """A point declared in ``system`` expressed in LPS (a 2D point (x, y) too)."""
    point = np.asarray(point, dtype=float)
    if system != "RAS":
        return point
    return ras_to_lps(np.pad(point, (0, 3 - len(point))))[:len(point)]


def from_lps(point, system: str) -> np.ndarray:
    """An LPS point expressed in ``system`` for writing."""
    return lps_to_ras(point) if system == "RAS" else np.asarray(point, dtype=float)


def check_name(name, path) -> str:
    """A landmark name must be a non-empty string."""
    if not isinstance(name, str) or not name.strip():
        raise fail(path, f"empty or non-text landmark name {name!r}")
    return name.strip()


def build_landmarks(entries, path) -> Landmarks:
    """Assemble a :class:`Landmarks` from ``(name, status, lps_point)`` entries.

    ``status`` is ``"present"``, ``"absent"`` or ``"unknown"``; ``lps_point`` is
    ignored unless present. A point of two coordinates (x, y) gets z = 0 and its
    name goes into ``planar`` (allowed on 2D images only, which the dataset
    checks). Duplicate names and files without any landmark raise
    :class:`LandmarkFileError`.
    """
    lm = Landmarks(source=Path(path))
    seen = set()
    for name, status, point in entries:
        if name in seen:
            raise fail(path, f"duplicate landmark name {name!r}")
        seen.add(name)
        lm.order.append(name)
        if status == "present":
            point = np.asarray(point, dtype=float)
            if len(point) == 2:
                point = np.append(point, 0.0)
                lm.planar.append(name)
            lm.points[name] = point
        elif status == "absent":
            lm.absent.append(name)
        else:
            lm.unknown.append(name)
    if not seen:
        raise fail(path, "no landmarks in file (empty file)")
    return lm


def iter_states(landmarks: Landmarks):
    """``(name, status, lps_point_or_None)`` for every name, in ``landmarks.names`` order."""
    for name in landmarks.names:
        status = landmarks.status(name)
        yield name, status, landmarks.points.get(name)


def format_float(value: float) -> str:
    """Shortest text that reads back to the same float."""
    return repr(float(value))
