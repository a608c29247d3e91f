"""Comma-separated landmark files: Slicer ``.fcsv``, one-case ``.csv`` and multi-case tables.

Slicer fiducial CSV (``.fcsv``)::

    # Markups fiducial file version = 4.11
    # CoordinateSystem = LPS
    # columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID
    vtkMRMLMarkupsFiducialNode_1,-1.5,20.0,33.1,0,0,0,1,1,1,0,nose_tip,,
    vtkMRMLMarkupsFiducialNode_2,0,0,0,0,0,0,1,1,1,0,left_eye,,,3

Slicer 5 writes two more fields after ``associatedNodeID`` that the
``# columns`` line does not name: the position status (``0`` undefined, ``1``
preview, ``2`` defined, ``3`` missing) and "auto-created". A point whose status
is not ``2`` has no position.

One-case CSV (``.csv``)::

    # coordinate_system = RAS
    name,x,y,z,status
    nose_tip,1.5,-20.0,33.1,present
    left_eye,,,,absent
    right_eye,,,,unknown

On a 2D image the ``z`` column may be left out (``name,x,y``) or empty: the
point is (x, y, 0).

Multi-case table: the same with a leading ``case`` column.

Coordinate-system rules for the two plain CSV kinds: an optional
``coordinate_system`` column (``LPS``/``RAS`` per row) wins; an empty cell falls
back to a ``# coordinate_system = ...`` comment line before the header; with
neither the file is LPS. A row whose column disagrees with the comment is an
error. The optional ``status`` column is ``present``, ``absent`` or ``unknown``;
a row with empty ``x, y, z`` is unknown unless its status says ``absent``.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from nnlandmark.data.landmarks import Landmarks
from nnlandmark.data.formats._common import (
    build_landmarks, check_name, check_output_system, fail, format_float, from_lps,
    iter_states, parse_coordinate_system, parse_point, read_text, to_lps,
)
from nnlandmark.data.formats.json_formats import states_in_order

FCSV_COLUMNS = ("id", "x", "y", "z", "ow", "ox", "oy", "oz", "vis", "sel", "lock",
                "label", "desc", "associatedNodeID")
FCSV_VERSION = "4.11"
# Slicer >= 5.0 (vtkMRMLMarkupsFiducialStorageNode): the field after the 14
# named columns is the control point's position status, by position, whatever
# the '# columns' line says.
FCSV_STATUS_FIELD = len(FCSV_COLUMNS)
FCSV_STATUS_CODES = {"0": "undefined", "1": "preview", "2": "defined", "3": "missing"}
FCSV_MISSING = "3"


def _split_header(text: str):
    """``(comment lines without '#', data lines with their 1-based line numbers)``."""
    comments, data = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            comments.append(stripped[1:].strip())
        else:
            data.append((number, line))
    return comments, data


def _header_value(comments, key: str):
    """Value of the first ``# key = value`` comment (key case-insensitive), else None."""
    for comment in comments:
        left, sep, right = comment.partition("=")
        if sep and left.strip().lower() == key.lower():
            return right.strip()
    return None


# --------------------------------------------------------------------------- fcsv

def read_fcsv(path) -> Landmarks:
    """Read a 3D Slicer fiducial CSV (``.fcsv``).

    The ``# CoordinateSystem`` header may be ``LPS``, ``RAS`` or the legacy
    codes ``0`` (RAS) and ``1`` (LPS); without it the file is RAS, as written by
    Slicer before 4.11. The ``# columns`` header sets the column order; without
    it Slicer's standard order is assumed. Landmarks are named by ``label``,
    except in files that number their points in ``label`` (all whole numbers)
    and name them in ``desc`` (all distinct, none empty), as the AFIDs
    protocol's published files do: there the names are the ``desc`` values.

    The position status is the column named ``positionStatus`` or, in a file
    with Slicer's standard columns, the unnamed field after them (what Slicer
    5 writes). Status ``2`` (defined) or an empty/absent field is a present
    point; ``0``, ``1`` and ``3`` (undefined, preview, missing) are unknown and
    their coordinates are ignored. Another value is an error in a named
    ``positionStatus`` column and ignored in the unnamed field.
    """
    path = Path(path)
    comments, data = _split_header(read_text(path))
    declared = _header_value(comments, "CoordinateSystem")
    system = "RAS" if declared is None else parse_coordinate_system(declared, path,
                                                                   where="CoordinateSystem header")
    columns_text = _header_value(comments, "columns")
    columns = FCSV_COLUMNS if columns_text is None else tuple(c.strip() for c in columns_text.split(","))
    missing = [c for c in ("x", "y", "z", "label") if c not in columns]
    if missing:
        raise fail(path, f"missing column(s) {', '.join(missing)} in '# columns' header")
    where = {c: columns.index(c) for c in ("x", "y", "z", "label")}
    needed = max(where.values()) + 1
    status_at = (columns.index("positionStatus") if "positionStatus" in columns
                 else FCSV_STATUS_FIELD if columns == FCSV_COLUMNS else None)
    desc_at = columns.index("desc") if "desc" in columns else None
    entries, descriptions = [], []
    for number, row in _csv_rows(data):
        if len(row) < needed:
            raise fail(path, f"line {number}: {len(row)} fields, expected at least {needed} "
                             f"(columns {', '.join(columns[:needed])})")
        name = check_name(row[where["label"]], path)
        descriptions.append(row[desc_at].strip() if desc_at is not None and desc_at < len(row) else "")
        code = row[status_at].strip() if status_at is not None and status_at < len(row) else ""
        if code and code not in FCSV_STATUS_CODES:
            if "positionStatus" in columns:
                raise fail(path, f"line {number}: landmark {name!r}: unknown position status {code!r}; "
                                 f"expected one of "
                                 f"{', '.join(f'{k} ({v})' for k, v in FCSV_STATUS_CODES.items())}")
            code = ""  # an unnamed extra field that is no status (e.g. a description with a comma)
        if code and FCSV_STATUS_CODES[code] != "defined":
            entries.append((name, "unknown", None))
            continue
        point = parse_point([row[where[a]] for a in "xyz"], path, name)
        entries.append((name, "present", to_lps(point, system)))
    numbered = entries and all(name.isdigit() for name, _, _ in entries)
    if numbered and all(descriptions) and len(set(descriptions)) == len(descriptions):
        entries = [(check_name(d, path), status, point) for d, (_, status, point) in zip(descriptions, entries)]
    return build_landmarks(entries, path)


def _csv_rows(data):
    for number, line in data:
        yield number, next(csv.reader([line]))


def write_fcsv(landmarks: Landmarks, path, coordinate_system: str = "LPS", names=None) -> None:
    """Write a Slicer fiducial CSV with a ``# CoordinateSystem`` header.

    Row *i* is the *i*-th of ``names`` (default ``landmarks.names``, present
    landmarks first; see :func:`~nnlandmark.data.formats.json_formats.states_in_order`).
    Absent and unknown landmarks are written in their place as Slicer 5 writes
    a missing control point: coordinates ``0,0,0`` and position status ``3``
    in the unnamed field after ``associatedNodeID``. Slicer 5 reads them as
    missing, in place; they read back here as unknown. A reader that ignores
    that field (Slicer 4, plain CSV tools) sees a point at the origin: use
    ``.mrk.json`` or ``.csv`` for those. Rows of present landmarks are
    Slicer's 14 standard fields.
    """
    system = check_output_system(coordinate_system)
    buffer = io.StringIO()
    buffer.write(f"# Markups fiducial file version = {FCSV_VERSION}\n")
    buffer.write(f"# CoordinateSystem = {system}\n")
    buffer.write(f"# columns = {','.join(FCSV_COLUMNS)}\n")
    writer = csv.writer(buffer, lineterminator="\n")
    for n, (name, status, point) in enumerate(states_in_order(landmarks, names), start=1):
        row = [f"vtkMRMLMarkupsFiducialNode_{n}", 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, name, "", ""]
        if status == "present":
            row[1:4] = (format_float(v) for v in from_lps(point, system))
        else:
            row.append(FCSV_MISSING)
        writer.writerow(row)
    Path(path).write_text(buffer.getvalue())


# --------------------------------------------------------------------------- plain csv

def _read_plain_table(path, key_columns):
    """Parse a plain CSV into ``[(keys tuple, status, lps point or None)]`` in file order."""
    path = Path(path)
    comments, data = _split_header(read_text(path))
    declared = _header_value(comments, "coordinate_system")
    default = "LPS" if declared is None else parse_coordinate_system(
        declared, path, where="'# coordinate_system' comment")
    if not data:
        raise fail(path, "empty file: no header row")
    rows = list(_csv_rows(data))
    header_line, header = rows[0]
    header = [h.strip() for h in header]
    required = list(key_columns) + ["x", "y"]  # no z column: points of 2D images
    missing = [c for c in required if c not in header]
    if missing:
        raise fail(path, f"missing column(s) {', '.join(missing)}; header is {', '.join(header)}"
                   + _delimiter_hint(header))
    col = {c: header.index(c) for c in header}
    out = []
    for number, row in rows[1:]:
        if len(row) != len(header):
            raise fail(path, f"line {number}: {len(row)} fields, header has {len(header)}")
        get = {c: row[i].strip() for c, i in col.items()}
        keys = tuple(check_name(get[k], path) for k in key_columns)
        label = "/".join(keys)
        system = default
        if get.get("coordinate_system"):
            system = parse_coordinate_system(get["coordinate_system"], path, where=f"line {number}")
            if declared is not None and system != default:
                raise fail(path, f"line {number}: coordinate_system {system} contradicts the "
                                 f"'# coordinate_system = {default}' comment")
        status = (get.get("status") or "").lower()
        if status not in ("", "present", "absent", "unknown"):
            raise fail(path, f"line {number}: unknown status {get['status']!r}")
        coords = [get.get(a, "") for a in "xyz"]
        if not any(coords):
            if status == "present":
                raise fail(path, f"landmark {label!r}: status present but no coordinates")
            out.append((keys, status or "unknown", None))
            continue
        if not coords[2] and all(coords[:2]):
            coords = coords[:2]  # x, y: a point of a 2D image
        elif not all(coords):
            raise fail(path, f"landmark {label!r}: expected 3 coordinates (x, y on a 2D image), got "
                             f"{sum(bool(c) for c in coords)}")
        if status in ("absent", "unknown"):
            raise fail(path, f"landmark {label!r}: status {status} but coordinates given")
        out.append((keys, "present", to_lps(parse_point(coords, path, label), system)))
    if not out:
        raise fail(path, "no landmarks in file (empty file)")
    return out


def _delimiter_hint(header) -> str:
    """A hint when a header read as one field holds semicolons or tabs: a CSV written with another
    delimiter (as spreadsheet programs in many locales do).

    >>> _delimiter_hint(["name;x;y;z"])
    " (the header reads as one column holding ';': this reader takes comma-separated values; save the file with commas)"
    """
    if len(header) == 1:
        for delimiter, said in ((";", "';'"), ("\t", "tabs")):
            if delimiter in header[0]:
                return (f" (the header reads as one column holding {said}: this reader takes comma-separated "
                        "values; save the file with commas)")
    return ""


def read_csv_landmarks(path) -> Landmarks:
    """Read a one-case CSV with columns ``name,x,y,z`` (optional ``status``, ``coordinate_system``)."""
    rows = _read_plain_table(path, ["name"])
    return build_landmarks([(keys[0], status, point) for keys, status, point in rows], path)


def read_landmark_table(csv_path) -> dict:
    """Read a multi-case CSV with columns ``case,name,x,y,z`` into ``{case: Landmarks}``.

    Cases keep their first-appearance order; the coordinate-system rules are the
    same as for a one-case CSV (see the module docstring).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "all.csv"
    >>> _ = p.write_text("# coordinate_system = RAS\\ncase,name,x,y,z\\nc1,a,1,2,3\\n")
    >>> read_landmark_table(p)["c1"].point("a")
    array([-1., -2.,  3.])
    """
    rows = _read_plain_table(csv_path, ["case", "name"])
    grouped = {}
    for (case, name), status, point in rows:
        grouped.setdefault(case, []).append((name, status, point))
    return {case: build_landmarks(entries, csv_path) for case, entries in grouped.items()}


def _write_plain(rows, path, key_columns, system):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(key_columns) + ["x", "y", "z", "status", "coordinate_system"])
    for keys, status, point in rows:
        coords = ["", "", ""] if status != "present" else [format_float(v) for v in from_lps(point, system)]
        writer.writerow(list(keys) + coords + [status, system])
    Path(path).write_text(buffer.getvalue())


def write_csv_landmarks(landmarks: Landmarks, path, coordinate_system: str = "LPS",
                        names=None) -> None:
    """Write a one-case CSV with columns ``name,x,y,z,status,coordinate_system``.

    ``names`` sets the row order (see
    :func:`~nnlandmark.data.formats.json_formats.states_in_order`).
    """
    system = check_output_system(coordinate_system)
    rows = [((name,), status, point) for name, status, point in states_in_order(landmarks, names)]
    _write_plain(rows, path, ["name"], system)


def write_landmark_table(mapping: dict, csv_path, coordinate_system: str = "LPS") -> None:
    """Write ``{case: Landmarks}`` as one CSV with columns ``case,name,x,y,z,status,coordinate_system``."""
    system = check_output_system(coordinate_system)
    rows = [((str(case), name), status, point)
            for case, landmarks in mapping.items()
            for name, status, point in iter_states(landmarks)]
    _write_plain(rows, csv_path, ["case", "name"], system)
