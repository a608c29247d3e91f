"""JSON landmark files: ours, the predictor's output, and 3D Slicer markups.

Our format (``docs/dataset_layout.md``)::

    {"coordinate_system": "LPS",
     "landmarks": {"nose_tip": [1.5, -20.0, 33.1], "left_eye": "absent", "right_eye": null}}

Prediction format (one object per landmark, always LPS)::

    {"nose_tip": {"world_lps_mm": [1.5, -20.0, 33.1], "voxel_index": [10, 4, 7],
                  "score": 0.93, "present": true},
     "left_eye": {"world_lps_mm": null, "voxel_index": null, "score": 0.02, "present": false}}

3D Slicer markups (``.mrk.json``): see :func:`read_markups_json`.
"""
from __future__ import annotations

import json
from pathlib import Path

from nnlandmark.data.landmarks import Landmarks
from nnlandmark.data.formats._common import (
    build_landmarks, check_name, check_output_system, fail, from_lps, iter_states,
    parse_coordinate_system, parse_point, read_text, to_lps,
)
from nnlandmark.errors import InvalidInput

MARKUPS_SCHEMA = ("https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/"
                  "Markups/Resources/Schema/markups-schema-v1.0.3.json#")

# Slicer's per-point orientation for an identity frame, as it writes it per system
_ORIENTATION = {"LPS": [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0],
                "RAS": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]}


def states_in_order(landmarks: Landmarks, names=None):
    """``(name, status, lps_point_or_None)`` in the order of ``names``.

    A :class:`Landmarks` does not remember where its absent and unknown names
    stood among the present ones (``landmarks.names`` lists present ones first),
    so a writer that must keep an order (a Slicer point list, where control
    point *i* is landmark *i*) is given it here. ``names=None`` keeps
    ``landmarks.names``. A name in ``names`` that ``landmarks`` does not mention
    is unknown; a name of ``landmarks`` missing from ``names`` is an error.
    """
    if names is None:
        yield from iter_states(landmarks)
        return
    names = [str(n) for n in names]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidInput(f"names: duplicate landmark name(s) {', '.join(map(repr, dupes))}")
    listed = set(names)
    extra = [n for n in landmarks.names if n not in listed]
    if extra:
        raise InvalidInput(f"names: landmark(s) {', '.join(map(repr, extra))} not in the given order "
                           f"{names!r}")
    for name in names:
        status = landmarks.status(name)
        yield name, ("unknown" if status == "missing" else status), landmarks.points.get(name)


def _no_duplicate_keys(path):
    def hook(pairs):
        keys = [k for k, _ in pairs]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise fail(path, f"duplicate key(s) in JSON object: {', '.join(map(repr, dupes))}")
        return dict(pairs)
    return hook


def load_json(path):
    """Parse a JSON file, rejecting empty files, invalid JSON and duplicate keys."""
    path = Path(path)
    text = read_text(path)
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys(path))
    except json.JSONDecodeError as err:
        raise fail(path, f"invalid JSON: {err}") from None


def _is_prediction(data) -> bool:
    return (isinstance(data, dict) and len(data) > 0
            and all(isinstance(v, dict) and ("world_lps_mm" in v or "present" in v)
                    for v in data.values()))


def read_json_landmarks(path) -> Landmarks:
    """Read a ``.json`` file in our format, the prediction format or Slicer markups.

    The format is recognised by content: a top-level ``"markups"`` list is a
    Slicer markups file; a top-level ``"landmarks"`` object whose values are
    points/``"absent"``/``null`` is ours; an object whose every value is an object
    with ``world_lps_mm`` or ``present`` is a prediction.
    """
    path = Path(path)
    data = load_json(path)
    if isinstance(data, dict) and isinstance(data.get("markups"), list):
        return _markups_from_data(data, path)
    if isinstance(data, dict) and isinstance(data.get("landmarks"), dict) \
            and not any(isinstance(v, dict) for v in data["landmarks"].values()):
        return _ours_from_data(data, path)
    if _is_prediction(data):
        return _prediction_from_data(data, path)
    raise fail(path, "not a landmark JSON: expected {'coordinate_system': ..., 'landmarks': {...}}, "
                     "a prediction {name: {'world_lps_mm': [...], 'present': ...}} or Slicer markups")


def _ours_from_data(data, path) -> Landmarks:
    system = parse_coordinate_system(data.get("coordinate_system", "LPS"), path,
                                     where="'coordinate_system'")
    entries = []
    for name, value in data["landmarks"].items():
        name = check_name(name, path)
        if value is None:
            entries.append((name, "unknown", None))
        elif isinstance(value, str):
            if value.strip().lower() != "absent":
                raise fail(path, f"landmark {name!r}: expected [x, y, z], 'absent' or null, got {value!r}")
            entries.append((name, "absent", None))
        else:
            entries.append((name, "present", to_lps(parse_point(value, path, name), system)))
    return build_landmarks(entries, path)


def _prediction_from_data(data, path) -> Landmarks:
    entries = []
    for name, record in data.items():
        name = check_name(name, path)
        present = record.get("present", True)
        if not isinstance(present, bool):
            raise fail(path, f"landmark {name!r}: 'present' must be true or false, got {present!r}")
        world = record.get("world_lps_mm")
        if not present or world is None:
            entries.append((name, "absent", None))
        else:
            entries.append((name, "present", parse_point(world, path, name)))
    return build_landmarks(entries, path)


def write_json_landmarks(landmarks: Landmarks, path, coordinate_system: str = "LPS",
                         names=None) -> None:
    """Write our JSON format (present points, ``"absent"`` and ``null`` for unknown).

    ``names`` sets the key order (see :func:`states_in_order`).
    """
    system = check_output_system(coordinate_system)
    out = {}
    for name, status, point in states_in_order(landmarks, names):
        if status == "present":
            out[name] = [float(v) for v in from_lps(point, system)]
        else:
            out[name] = "absent" if status == "absent" else None
    Path(path).write_text(json.dumps({"coordinate_system": system, "landmarks": out}, indent=2) + "\n")


def read_prediction_record(path) -> dict | None:
    """The predictor's per-case record (``{name: {"world_lps_mm", "score", "present", ...}}``) in
    ``path``, or None when the file is anything else (a Slicer file, landmark JSON, not JSON)."""
    path = Path(path)
    if not path.name.endswith(".json") or path.name.endswith(".mrk.json"):
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(record, dict) and record and all(
            isinstance(r, dict) and {"world_lps_mm", "score", "present"} <= set(r) for r in record.values()):
        return record
    return None


def write_prediction_json(landmarks: Landmarks, path, *, voxel_index=None, score=None) -> None:
    """Write the predictor's JSON format.

    Parameters
    ----------
    landmarks : Landmarks
        Present names get ``present: true``; absent and unknown ones ``present: false``.
    path : path-like
        Output file.
    voxel_index : dict, optional
        ``name -> (i, j, k)`` ITK voxel index of each present landmark.
    score : dict, optional
        ``name -> float`` confidence.
    """
    voxel_index = voxel_index or {}
    score = score or {}
    out = {}
    for name, status, point in iter_states(landmarks):
        index = voxel_index.get(name)
        out[name] = {
            "world_lps_mm": None if status != "present" else [float(v) for v in point],
            "voxel_index": None if index is None or status != "present" else [int(v) for v in index],
            "score": None if name not in score else float(score[name]),
            "present": status == "present",
        }
    Path(path).write_text(json.dumps(out, indent=2) + "\n")


def read_markups_json(path) -> Landmarks:
    """Read a 3D Slicer markups file (``.mrk.json``).

    Every control point of every markup in ``markups`` becomes a landmark named
    by its ``label``. Each markup's ``coordinateSystem`` (``"LPS"`` or ``"RAS"``)
    applies to its own points; when absent, ``"LPS"`` is assumed (the schema's
    default and what Slicer 5 writes). A point whose ``positionStatus`` is
    ``"missing"``, ``"undefined"`` or ``"preview"`` is read as unknown; a point
    with status ``"defined"`` (or no status) must have a finite 3-vector
    ``position``. ``coordinateUnits`` other than ``"mm"`` are rejected.
    """
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("markups"), list):
        raise fail(path, "not a Slicer markups file: missing the top-level 'markups' list")
    return _markups_from_data(data, path)


def read_markups_control_points(path) -> list:
    """Every control point of a Slicer markups file, in file order, without name checks.

    Returns ``[(label, status, lps_point_or_None), ...]`` where ``status`` is
    ``"present"`` or ``"unknown"`` (same rules as :func:`read_markups_json`).
    Useful for line markups, whose two end points may share a label.
    """
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("markups"), list):
        raise fail(path, "not a Slicer markups file: missing the top-level 'markups' list")
    return _markups_entries(data, path, check_labels=False)


def _markups_from_data(data, path) -> Landmarks:
    return build_landmarks(_markups_entries(data, path, check_labels=True), path)


def _markups_entries(data, path, *, check_labels: bool) -> list:
    entries = []
    for m, markup in enumerate(data["markups"]):
        if not isinstance(markup, dict):
            raise fail(path, f"markups[{m}] is not an object")
        system = parse_coordinate_system(markup.get("coordinateSystem", "LPS"), path,
                                         where=f"markups[{m}].coordinateSystem")
        units = markup.get("coordinateUnits", "mm")
        if units != "mm":
            raise fail(path, f"markups[{m}].coordinateUnits is {units!r}; only 'mm' is supported")
        points = markup.get("controlPoints", [])
        if not isinstance(points, list):
            raise fail(path, f"markups[{m}].controlPoints is not a list")
        for p, cp in enumerate(points):
            if not isinstance(cp, dict):
                raise fail(path, f"markups[{m}].controlPoints[{p}] is not an object")
            if check_labels and "label" not in cp:
                raise fail(path, f"markups[{m}].controlPoints[{p}] has no 'label'")
            name = check_name(cp["label"], path) if check_labels else str(cp.get("label", ""))
            status = str(cp.get("positionStatus", "defined")).lower()
            if status in ("missing", "undefined", "preview"):
                entries.append((name, "unknown", None))
                continue
            if status != "defined":
                raise fail(path, f"landmark {name!r}: unknown positionStatus {cp['positionStatus']!r}")
            if "position" not in cp:
                raise fail(path, f"landmark {name!r}: defined control point without 'position'")
            entries.append((name, "present", to_lps(parse_point(cp["position"], path, name), system)))
    return entries


def write_markups_json(landmarks: Landmarks, path, coordinate_system: str = "LPS",
                       names=None, descriptions=None) -> None:
    """Write a Slicer point list (markups type ``"Fiducial"``) that Slicer opens in place.

    ``descriptions`` (``{name: text}``, optional) fills the control points'
    ``description``, a field of the markups schema that Slicer reads, shows in
    the Markups module's control point table and writes back (the predictor
    puts each landmark's uncertainty there).

    Control point *i* is the *i*-th of ``names`` (default ``landmarks.names``,
    which lists present landmarks first; see :func:`states_in_order`). Absent
    and unknown landmarks are written in their place as control points with
    ``positionStatus: "missing"`` and ``position: [0, 0, 0]``; they read back
    as unknown (the format has no "annotated as absent" state).

    What Slicer (5.0 and later, checked with the ``slicer-core`` wheel, see
    ``benchmarks/slicer_roundtrip``) needs to keep a missing point as
    ``PositionMissing`` in its place: the exact lower-case status
    ``"missing"`` (its reader is case-sensitive and refuses the whole file on
    an unknown status) and a ``position`` array; Slicer 5.0 turns a point
    without ``position`` into ``PositionUndefined``, which Slicer's place mode
    then asks the user to place. ``"missing"`` is not in the v1.0.3/v1.0.4
    schema's ``positionStatus`` enum, but it is what Slicer itself writes.
    """
    system = check_output_system(coordinate_system)
    control_points = []
    for n, (name, status, point) in enumerate(states_in_order(landmarks, names), start=1):
        cp = {"id": str(n), "label": name, "description": str((descriptions or {}).get(name, "")),
              "associatedNodeID": "",
              "position": [0.0, 0.0, 0.0], "orientation": list(_ORIENTATION[system]),
              "selected": True, "locked": False, "visibility": True,
              "positionStatus": "missing"}
        if status == "present":
            cp["position"] = [float(v) for v in from_lps(point, system)]
            cp["positionStatus"] = "defined"
        control_points.append(cp)
    doc = {"@schema": MARKUPS_SCHEMA,
           "markups": [{"type": "Fiducial", "coordinateSystem": system, "coordinateUnits": "mm",
                        "locked": False, "fixedNumberOfControlPoints": False,
                        "labelFormat": "%N-%d", "lastUsedControlPointNumber": len(control_points),
                        "controlPoints": control_points, "measurements": []}]}
    Path(path).write_text(json.dumps(doc, indent=4) + "\n")
