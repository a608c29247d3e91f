"""What 3D Slicer needs from our markups files, pinned without Slicer.

Found by reading our files with Slicer's own storage nodes (the ``slicer-core``
5.13 wheel; ``benchmarks/slicer_roundtrip/run.py`` repeats that check):

- Slicer keeps control points in file order, so control point *i* is landmark
  *i* only if we write them in the dataset's order. Absent landmarks moved to
  the end because ``Landmarks.names`` lists present landmarks first; the
  writers now take ``names=`` and the predictor passes its landmark order.
- ``.mrk.json``: a missing point must carry ``"positionStatus": "missing"``
  (lower case: Slicer's reader refuses a file with any other spelling) and a
  ``position`` array (Slicer 5.0 turns a point without one into
  "undefined", which place mode asks the user to place).
- ``.fcsv``: Slicer 5 reads the unnamed field after ``associatedNodeID`` as
  the position status (3 = missing) and ignores the ``# columns`` line; it
  writes missing points as ``0,0,0`` with status 3, and our reader used to
  take those for present points at the origin.
"""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from nnlandmark.data.formats import read_landmarks, write_landmarks
from nnlandmark.data.formats.json_formats import read_markups_control_points, write_markups_json
from nnlandmark.data.formats.text_formats import write_fcsv
from nnlandmark.data.landmarks import LandmarkFileError, Landmarks
from nnlandmark.inference.predict import _write_case

NAMES = ["nasion", "left_eye", "sella", "right_eye", "basion", "opisthion"]
LPS = {"nasion": [1.234567, -87.654321, 12.5], "sella": [-0.000123, 20.25, 33.125],
       "opisthion": [-12.0, 40.75, -60.015625]}
ABSENT, UNKNOWN = ["left_eye", "basion"], ["right_eye"]


def case() -> Landmarks:
    return Landmarks(points={n: np.array(p) for n, p in LPS.items()}, absent=list(ABSENT),
                     unknown=list(UNKNOWN))


def control_points(path):
    markup, = json.loads(path.read_text())["markups"]
    return markup["controlPoints"]


def fcsv_rows(path):
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    return list(csv.reader(io.StringIO("\n".join(lines))))


# ------------------------------------------------------------------ prediction output

def test_prediction_mrk_json_keeps_landmark_order_with_missing_points_in_place(tmp_path):
    decoded = {n: (LPS.get(n, [5.0, 6.0, 7.0]), [1.0, 2.0, 3.0], 0.9 if n in LPS else 0.1) for n in NAMES}
    _write_case(tmp_path, "c1", decoded, {n: 0.5 for n in NAMES})
    points = control_points(tmp_path / "c1.mrk.json")
    assert [cp["label"] for cp in points] == NAMES
    for cp in points:
        if cp["label"] in LPS:
            assert cp["positionStatus"] == "defined"
            assert cp["position"] == LPS[cp["label"]]
        else:  # exactly what Slicer reads as PositionMissing, in place
            assert cp["positionStatus"] == "missing"
            assert isinstance(cp["position"], list) and len(cp["position"]) == 3
            assert all(isinstance(v, float) for v in cp["position"])
    assert [int(cp["id"]) for cp in points] == list(range(1, len(NAMES) + 1))


# ------------------------------------------------------------------ writers with names=

@pytest.mark.parametrize("system", ["LPS", "RAS"])
def test_mrk_json_writer_follows_names(tmp_path, system):
    write_landmarks(case(), tmp_path / "a.mrk.json", coordinate_system=system, names=NAMES)
    points = control_points(tmp_path / "a.mrk.json")
    assert [cp["label"] for cp in points] == NAMES
    assert [cp["positionStatus"] for cp in points] == ["missing" if n in ABSENT + UNKNOWN else "defined"
                                                       for n in NAMES]
    assert [label for label, _, _ in read_markups_control_points(tmp_path / "a.mrk.json")] == NAMES


@pytest.mark.parametrize("system", ["LPS", "RAS"])
def test_fcsv_writer_keeps_missing_rows_in_place_as_slicer_writes_them(tmp_path, system):
    write_landmarks(case(), tmp_path / "a.fcsv", coordinate_system=system, names=NAMES)
    text = (tmp_path / "a.fcsv").read_text()
    assert "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n" in text
    rows = fcsv_rows(tmp_path / "a.fcsv")
    assert [row[11] for row in rows] == NAMES
    for row in rows:
        if row[11] in LPS:
            assert len(row) == 14  # Slicer's standard fields, as before
        else:
            assert len(row) == 15 and row[14] == "3" and row[1:4] == ["0", "0", "0"]
    back = read_landmarks(tmp_path / "a.fcsv")
    assert [n for n in NAMES if back.status(n) == "unknown"] == ["left_eye", "right_eye", "basion"]
    for name, point in LPS.items():
        np.testing.assert_allclose(back.point(name), point, atol=1e-9)


def test_names_not_in_landmarks_are_written_as_missing(tmp_path):
    write_markups_json(case(), tmp_path / "a.mrk.json", names=NAMES + ["inion"])
    assert control_points(tmp_path / "a.mrk.json")[-1]["positionStatus"] == "missing"
    write_fcsv(case(), tmp_path / "a.fcsv", names=NAMES + ["inion"])
    assert fcsv_rows(tmp_path / "a.fcsv")[-1][11:] == ["inion", "", "", "3"]


@pytest.mark.parametrize("names, message", [(NAMES[:-1], "opisthion"), (NAMES + ["sella"], "duplicate")])
def test_names_must_cover_every_landmark_once(tmp_path, names, message):
    with pytest.raises(ValueError, match=message):
        write_landmarks(case(), tmp_path / "a.mrk.json", names=names)


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_other_writers_follow_names_too(tmp_path, suffix):
    write_landmarks(case(), tmp_path / f"a{suffix}", names=NAMES)
    text = (tmp_path / f"a{suffix}").read_text()
    assert sorted(NAMES, key=text.index) == NAMES


def test_default_order_is_unchanged(tmp_path):
    write_markups_json(case(), tmp_path / "a.mrk.json")
    assert [cp["label"] for cp in control_points(tmp_path / "a.mrk.json")] == case().names


@pytest.mark.parametrize("suffix", [".mrk.json", ".fcsv", ".json", ".csv"])
def test_a_file_read_and_written_again_keeps_its_order(tmp_path, suffix):
    """Absent and unknown points stay where the file had them, without passing ``names``."""
    names = ["nasion", "left_eye", "sella", "right_eye", "basion"]
    original = Landmarks(points={"nasion": np.array([1.0, 2.0, 3.0]), "sella": np.array([4.0, 5.0, 6.0]),
                                 "basion": np.array([7.0, 8.0, 9.0])}, absent=["left_eye"], unknown=["right_eye"])
    write_landmarks(original, tmp_path / f"a{suffix}", names=names)
    again = read_landmarks(tmp_path / f"a{suffix}")
    assert again.names == names
    write_landmarks(again, tmp_path / f"b{suffix}")
    assert read_landmarks(tmp_path / f"b{suffix}").names == names


# ------------------------------------------------------------------ files Slicer writes

# vtkMRMLMarkupsFiducialStorageNode of slicer-core 5.13.31053.0, a point list with
# missing points: 16 fields, the last two (position status, auto-created) unnamed
SLICER_FCSV = '''# Markups fiducial file version = slicer-core-5.13.31053.0
# CoordinateSystem = LPS
# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID
1,1.234567,-87.654321,12.5,0,0,0,1,1,1,0,nasion,,,2,0
2,0,0,0,0,0,0,1,1,1,0,left_eye,,,3,0
3,-0.000123,20.25,33.125,0,0,0,1,1,1,0,sella,,,2,0
4,0,0,0,0,0,0,1,1,1,0,right_eye,,,3,0
5,70.1,5.5,-3.3333333,0,0,0,1,1,1,0,"left ear, ""tragus""",,,2,0
'''


def test_reads_slicer_fcsv_missing_points_as_unknown(tmp_path):
    (tmp_path / "s.fcsv").write_text(SLICER_FCSV)
    lm = read_landmarks(tmp_path / "s.fcsv")
    assert list(lm.points) == ["nasion", "sella", 'left ear, "tragus"']
    assert lm.unknown == ["left_eye", "right_eye"]
    np.testing.assert_allclose(lm.point("nasion"), LPS["nasion"])


@pytest.mark.parametrize("code, status", [("0", "unknown"), ("1", "unknown"), ("2", "present"),
                                          ("3", "unknown"), ("", "present")])
def test_fcsv_status_codes(tmp_path, code, status):
    (tmp_path / "s.fcsv").write_text(SLICER_FCSV.splitlines(keepends=True)[0] + "".join(
        SLICER_FCSV.splitlines(keepends=True)[1:3]) + f"1,1,2,3,0,0,0,1,1,1,0,a,,,{code}\n")
    assert read_landmarks(tmp_path / "s.fcsv").status("a") == status


def test_fcsv_unnamed_extra_field_that_is_no_status_is_ignored(tmp_path):
    # an unquoted comma in desc pushes text into the status field: not a status
    (tmp_path / "s.fcsv").write_text(SLICER_FCSV.split("1,1.23")[0]
                                     + "1,1,2,3,0,0,0,1,1,1,0,a,left, upper,vtkMRMLScalarVolumeNode1\n")
    assert read_landmarks(tmp_path / "s.fcsv").status("a") == "present"


def test_fcsv_named_position_status_column_must_be_a_code(tmp_path):
    text = ("# CoordinateSystem = LPS\n# columns = label,x,y,z,positionStatus\n"
            "a,1,2,3,3\nb,1,2,3,2\nc,1,2,3,defined\n")
    (tmp_path / "s.fcsv").write_text(text)
    with pytest.raises(LandmarkFileError, match="position status 'defined'"):
        read_landmarks(tmp_path / "s.fcsv")
    (tmp_path / "s.fcsv").write_text(text.replace("c,1,2,3,defined\n", ""))
    lm = read_landmarks(tmp_path / "s.fcsv")
    assert (lm.status("a"), lm.status("b")) == ("unknown", "present")


def test_reads_slicer_mrk_json_with_empty_position_for_missing(tmp_path):
    # what vtkMRMLMarkupsJsonStorageNode 5.13 writes: schema v1.0.4, "position": "" when missing
    cp = {"id": "1", "description": "", "associatedNodeID": "",
          "orientation": [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0],
          "selected": True, "locked": False, "visibility": True}
    doc = {"@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
                      "Resources/Schema/markups-schema-v1.0.4.json#",
           "markups": [{"type": "Fiducial", "coordinateSystem": "LPS", "coordinateUnits": "mm",
                        "controlPoints": [
                            {**cp, "label": "nasion", "position": LPS["nasion"], "positionStatus": "defined"},
                            {**cp, "label": "left_eye", "position": "", "positionStatus": "missing"},
                            {**cp, "label": "sella", "position": LPS["sella"], "positionStatus": "defined"}]}]}
    (tmp_path / "s.mrk.json").write_text(json.dumps(doc))
    lm = read_landmarks(tmp_path / "s.mrk.json")
    assert lm.unknown == ["left_eye"] and list(lm.points) == ["nasion", "sella"]
    assert [label for label, _, _ in read_markups_control_points(tmp_path / "s.mrk.json")] == [
        "nasion", "left_eye", "sella"]
