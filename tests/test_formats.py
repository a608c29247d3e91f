"""Landmark file formats: round trips, coordinate systems, malformed files."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnlandmark.data.formats import (
    MARKUPS_SCHEMA, read_landmark_table, read_landmarks, read_landmarks_from_label_map,
    write_label_map, write_landmark_table, write_landmarks, write_prediction_json,
)
from nnlandmark.data.landmarks import LandmarkFileError, Landmarks
from nnlandmark.geometry import ImageGrid, index_to_world, lps_to_ras

LPS = {"nasion": np.array([1.25, -20.5, 33.125]),
       "left_eye": np.array([-31.0, 4.5, -7.75]),
       "right_eye": np.array([30.0, 5.0, -8.0])}


def sample(absent=("chin",), unknown=("inion",)) -> Landmarks:
    return Landmarks(points={k: v.copy() for k, v in LPS.items()},
                     absent=list(absent), unknown=list(unknown))


def assert_points(lm: Landmarks, expected=LPS):
    assert set(lm.points) == set(expected)
    for name, point in expected.items():
        np.testing.assert_allclose(lm.point(name), point, atol=1e-3)


# ------------------------------------------------------------------ round trips

@pytest.mark.parametrize("suffix", [".json", ".mrk.json", ".fcsv", ".csv"])
@pytest.mark.parametrize("system", ["LPS", "RAS"])
def test_round_trip(tmp_path, suffix, system):
    path = tmp_path / f"case{suffix}"
    write_landmarks(sample(), path, coordinate_system=system)
    lm = read_landmarks(path)
    assert_points(lm)
    assert lm.source == path
    if suffix in (".json", ".csv"):
        assert lm.absent == ["chin"] and lm.unknown == ["inion"]
    elif suffix == ".mrk.json":
        assert sorted(lm.unknown) == ["chin", "inion"]


@pytest.mark.parametrize("suffix", [".json", ".mrk.json", ".fcsv", ".csv"])
def test_written_file_declares_system_and_stores_ras_values(tmp_path, suffix):
    path = tmp_path / f"case{suffix}"
    write_landmarks(sample(), path, coordinate_system="RAS")
    text = path.read_text()
    assert "RAS" in text and "LPS" not in text.replace("vtkMRML", "")
    # the stored numbers are RAS: x and y negated
    ras = lps_to_ras(LPS["nasion"])
    assert repr(float(ras[0])) in text and repr(float(ras[1])) in text


def test_mrk_json_is_slicer_point_list(tmp_path):
    path = tmp_path / "case.mrk.json"
    write_landmarks(sample(), path, coordinate_system="LPS")
    doc = json.loads(path.read_text())
    assert doc["@schema"] == MARKUPS_SCHEMA
    markup, = doc["markups"]
    assert markup["type"] == "Fiducial" and markup["coordinateSystem"] == "LPS"
    defined = [cp for cp in markup["controlPoints"] if cp["positionStatus"] == "defined"]
    assert [cp["label"] for cp in defined] == list(LPS)
    assert all({"id", "label", "position", "positionStatus"} <= set(cp) for cp in defined)
    np.testing.assert_allclose(defined[0]["position"], LPS["nasion"])


# ------------------------------------------------------------------ realistic fixtures, RAS vs LPS

FCSV_HEADER = ("# Markups fiducial file version = {version}\n# CoordinateSystem = {system}\n"
               "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n")


def fcsv_text(system_code, points, version="4.11", header=True):
    lines = [FCSV_HEADER.format(version=version, system=system_code)] if header else []
    for n, (name, p) in enumerate(points.items(), start=1):
        lines.append(f"vtkMRMLMarkupsFiducialNode_{n},{p[0]},{p[1]},{p[2]},0,0,0,1,1,1,0,{name},"
                     f"\"desc, with comma\",vtkMRMLScalarVolumeNode1\n")
    return "".join(lines)


RAS = {k: lps_to_ras(v) for k, v in LPS.items()}


@pytest.mark.parametrize("ras_code,lps_code", [("RAS", "LPS"), ("0", "1")])
def test_fcsv_ras_and_lps_read_equal(tmp_path, ras_code, lps_code):
    (tmp_path / "ras.fcsv").write_text(fcsv_text(ras_code, RAS, version="4.6"))
    (tmp_path / "lps.fcsv").write_text(fcsv_text(lps_code, LPS, version="5.2"))
    assert_points(read_landmarks(tmp_path / "ras.fcsv"))
    assert_points(read_landmarks(tmp_path / "lps.fcsv"))


def test_fcsv_without_system_header_is_ras(tmp_path):
    text = "# Markups fiducial file version = 4.4\n" + fcsv_text("", RAS, header=False)
    (tmp_path / "old.fcsv").write_text(text)
    assert_points(read_landmarks(tmp_path / "old.fcsv"))


def test_fcsv_custom_column_order(tmp_path):
    text = "# CoordinateSystem = LPS\n# columns = label,z,y,x\n" + "".join(
        f"{n},{p[2]},{p[1]},{p[0]}\n" for n, p in LPS.items())
    (tmp_path / "c.fcsv").write_text(text)
    assert_points(read_landmarks(tmp_path / "c.fcsv"))


def markups_doc(points, system, extra=()):
    cps = [{"id": str(i), "label": n, "description": "", "associatedNodeID": "",
            "position": [float(v) for v in p],
            "orientation": [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0],
            "selected": True, "locked": False, "visibility": True, "positionStatus": "defined"}
           for i, (n, p) in enumerate(points.items(), start=1)]
    cps += list(extra)
    return {"@schema": MARKUPS_SCHEMA, "markups": [
        {"type": "Fiducial", "coordinateSystem": system, "coordinateUnits": "mm",
         "controlPoints": cps, "measurements": [], "display": {"visibility": True}}]}


def test_mrk_json_ras_and_lps_read_equal_and_missing_is_unknown(tmp_path):
    extra = [{"id": "9", "label": "inion", "position": [0.0, 0.0, 0.0], "positionStatus": "missing"},
             {"id": "10", "label": "vertex", "position": [], "positionStatus": "undefined"}]
    (tmp_path / "ras.mrk.json").write_text(json.dumps(markups_doc(RAS, "RAS", extra)))
    (tmp_path / "lps.mrk.json").write_text(json.dumps(markups_doc(LPS, "LPS")))
    ras = read_landmarks(tmp_path / "ras.mrk.json")
    assert_points(ras)
    assert_points(read_landmarks(tmp_path / "lps.mrk.json"))
    assert ras.unknown == ["inion", "vertex"]


def test_mrk_json_system_per_markup(tmp_path):
    doc = markups_doc({"nasion": RAS["nasion"]}, "RAS")
    doc["markups"].append(markups_doc({k: LPS[k] for k in ("left_eye", "right_eye")}, "LPS")["markups"][0])
    (tmp_path / "two.mrk.json").write_text(json.dumps(doc))
    assert_points(read_landmarks(tmp_path / "two.mrk.json"))


def test_our_json_ras_and_lps_read_equal(tmp_path):
    for system, pts in (("RAS", RAS), ("LPS", LPS)):
        doc = {"coordinate_system": system,
               "landmarks": {**{k: list(map(float, v)) for k, v in pts.items()},
                             "chin": "absent", "inion": None}}
        (tmp_path / f"{system}.json").write_text(json.dumps(doc))
        lm = read_landmarks(tmp_path / f"{system}.json")
        assert_points(lm)
        assert lm.status("chin") == "absent" and lm.status("inion") == "unknown"


def test_prediction_json(tmp_path):
    doc = {"nasion": {"world_lps_mm": list(LPS["nasion"]), "voxel_index": [3, 4, 5], "score": 0.93,
                      "present": True},
           "left_eye": {"world_lps_mm": list(LPS["left_eye"]), "voxel_index": [1, 2, 3], "score": 0.8,
                        "present": True},
           "right_eye": {"world_lps_mm": list(LPS["right_eye"]), "voxel_index": [1, 2, 3], "score": 0.7,
                         "present": True},
           "needle_tip": {"world_lps_mm": [1.0, 2.0, 3.0], "voxel_index": [0, 0, 0], "score": 0.1,
                          "present": False},
           "chin": {"world_lps_mm": None, "voxel_index": None, "score": 0.05}}
    (tmp_path / "pred.json").write_text(json.dumps(doc))
    lm = read_landmarks(tmp_path / "pred.json")
    assert_points(lm)
    assert lm.absent == ["needle_tip", "chin"]


def test_write_prediction_json_reads_back(tmp_path):
    path = tmp_path / "pred.json"
    write_prediction_json(sample(), path, voxel_index={"nasion": (1, 2, 3)}, score={"nasion": 0.5})
    doc = json.loads(path.read_text())
    assert doc["nasion"] == {"world_lps_mm": list(LPS["nasion"]), "voxel_index": [1, 2, 3],
                             "score": 0.5, "present": True}
    lm = read_landmarks(path)
    assert_points(lm)
    assert sorted(lm.absent) == ["chin", "inion"]


def test_csv_system_comment_and_column_read_equal(tmp_path):
    rows = "".join(f"{n},{p[0]},{p[1]},{p[2]}\n" for n, p in RAS.items())
    (tmp_path / "comment.csv").write_text("# coordinate_system = RAS\nname,x,y,z\n" + rows)
    rows_col = "".join(f"{n},{p[0]},{p[1]},{p[2]},RAS\n" for n, p in RAS.items())
    (tmp_path / "column.csv").write_text("name,x,y,z,coordinate_system\n" + rows_col)
    rows_lps = "".join(f"{n},{p[0]},{p[1]},{p[2]}\n" for n, p in LPS.items())
    (tmp_path / "default.csv").write_text("name,x,y,z\n" + rows_lps + "chin,,,\n")
    for name in ("comment.csv", "column.csv", "default.csv"):
        assert_points(read_landmarks(tmp_path / name))
    assert read_landmarks(tmp_path / "default.csv").unknown == ["chin"]


def test_landmark_table_round_trip(tmp_path):
    other = Landmarks(points={"nasion": np.array([0.5, 0.25, -1.0])}, absent=["left_eye"])
    path = tmp_path / "table.csv"
    write_landmark_table({"case_01": sample(), "case_02": other}, path, coordinate_system="RAS")
    table = read_landmark_table(path)
    assert list(table) == ["case_01", "case_02"]
    assert_points(table["case_01"])
    assert table["case_01"].absent == ["chin"] and table["case_01"].unknown == ["inion"]
    np.testing.assert_allclose(table["case_02"].point("nasion"), [0.5, 0.25, -1.0])
    assert table["case_02"].absent == ["left_eye"]


def test_landmark_table_ras_comment(tmp_path):
    (tmp_path / "t.csv").write_text("# coordinate_system = RAS\ncase,name,x,y,z\n"
                                    "a,p,1,2,3\nb,p,-4,5,6\n")
    table = read_landmark_table(tmp_path / "t.csv")
    np.testing.assert_allclose(table["a"].point("p"), [-1, -2, 3])
    np.testing.assert_allclose(table["b"].point("p"), [4, -5, 6])


# ------------------------------------------------------------------ label maps

def oblique_image(size=(12, 10, 8), spacing=(0.8, 1.1, 2.5)):
    image = sitk.Image(*size, sitk.sitkUInt8)
    image.SetSpacing(spacing)
    image.SetOrigin((-10.0, 25.0, 3.0))
    c, s = np.cos(0.3), np.sin(0.3)
    direction = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]])
    image.SetDirection(direction.ravel().tolist())
    return image


def test_label_map_round_trip_oblique(tmp_path):
    ref = oblique_image()
    grid = ImageGrid.from_image(ref)
    names = ["a", "b", "c"]
    points = {"a": index_to_world([2, 3, 4], grid), "b": index_to_world([9, 1, 6], grid)}
    lm = Landmarks(points=points, unknown=["c"])
    write_label_map(lm, names, ref, tmp_path / "lab.nii.gz")
    back = read_landmarks_from_label_map(tmp_path / "lab.nii.gz", names)
    for n in ("a", "b"):
        np.testing.assert_allclose(back.point(n), points[n], atol=1e-3)
    assert back.unknown == ["c"]


def test_label_map_centroid_of_two_voxels(tmp_path):
    ref = oblique_image()
    grid = ImageGrid.from_image(ref)
    array = np.zeros((8, 10, 12), np.uint8)
    array[1, 2, 3] = 1   # itk (3, 2, 1)
    array[5, 2, 3] = 1   # itk (3, 2, 5)
    img = sitk.GetImageFromArray(array)
    img.CopyInformation(ref)
    sitk.WriteImage(img, str(tmp_path / "two.nrrd"))
    lm = read_landmarks_from_label_map(tmp_path / "two.nrrd", ["m"])
    np.testing.assert_allclose(lm.point("m"), index_to_world([3, 2, 3], grid), atol=1e-6)


def test_label_map_errors(tmp_path):
    ref = oblique_image()
    far = Landmarks(points={"a": np.array([1e4, 0, 0])})
    with pytest.raises(ValueError, match="outside"):
        write_label_map(far, ["a"], ref, tmp_path / "x.nii.gz")
    array = np.zeros((8, 10, 12), np.uint8)
    array[0, 0, 0] = 3
    img = sitk.GetImageFromArray(array)
    sitk.WriteImage(img, str(tmp_path / "stray.nii.gz"))
    with pytest.raises(LandmarkFileError, match=r"stray\.nii\.gz.*\[3\]"):
        read_landmarks_from_label_map(tmp_path / "stray.nii.gz", ["a", "b"])


# ------------------------------------------------------------------ malformed files

GOOD_HEADER = FCSV_HEADER.format(version="4.11", system="LPS")

MALFORMED = {
    "empty.json": ("", "empty"),
    "broken.json": ('{"coordinate_system": "LPS", "landmarks": {"a": [1, 2, 3]', "invalid JSON"),
    "onecoord.json": ('{"landmarks": {"a": [1]}}', "3 coordinates"),
    "nan.json": ('{"landmarks": {"a": [1, NaN, 3]}}', "not finite"),
    "text.json": ('{"landmarks": {"a": [1, "two", 3]}}', "non-numeric"),
    "system.json": ('{"coordinate_system": "RAI", "landmarks": {"a": [1, 2, 3]}}', "coordinate system"),
    "dup.json": ('{"landmarks": {"a": [1, 2, 3], "a": [4, 5, 6]}}', "duplicate"),
    "nolandmarks.json": ('{"landmarks": {}}', "no landmarks"),
    "other.json": ('{"foo": 1}', "not a landmark JSON"),
    "predbad.json": ('{"a": {"world_lps_mm": [1], "present": true}}', "3 coordinates"),
    "empty.mrk.json": ("  \n", "empty"),
    "system.mrk.json": (json.dumps(markups_doc(LPS, "IJK")), "coordinate system"),
    "dup.mrk.json": (json.dumps(markups_doc(LPS, "LPS", [{"label": "nasion", "position": [0, 0, 0]}])),
                     "duplicate"),
    "inf.mrk.json": (json.dumps(markups_doc(LPS, "LPS", [{"label": "x", "position": [0, 1e999, 0]}])),
                     "not finite"),
    "four.mrk.json": (json.dumps(markups_doc({"a": [1, 2, 3, 4]}, "LPS")), "3 coordinates"),
    "nolabel.mrk.json": (json.dumps(markups_doc({}, "LPS", [{"position": [1, 2, 3]}])), "label"),
    "empty.fcsv": ("", "empty"),
    "headeronly.fcsv": (GOOD_HEADER, "no landmarks"),
    "system.fcsv": (FCSV_HEADER.format(version="4.4", system="2") + "0,1,2,3,0,0,0,1,1,1,0,a,,\n",
                    "coordinate system"),
    "nocols.fcsv": ("# CoordinateSystem = LPS\n# columns = id,x,y,ow,label\n0,1,2,0,a\n", "missing column"),
    "short.fcsv": (GOOD_HEADER + "0,1.0,2.0\n", "fields"),
    "nan.fcsv": (GOOD_HEADER + "0,1,nan,3,0,0,0,1,1,1,0,a,,\n", "not finite"),
    "text.fcsv": (GOOD_HEADER + "0,1,abc,3,0,0,0,1,1,1,0,a,,\n", "non-numeric"),
    "dup.fcsv": (GOOD_HEADER + "0,1,2,3,0,0,0,1,1,1,0,a,,\n1,4,5,6,0,0,0,1,1,1,0,a,,\n", "duplicate"),
    "empty.csv": ("", "empty"),
    "nocols.csv": ("name,x\na,1\n", "missing column"),
    "onecoord.csv": ("name,x,y,z\na,1,,\n", "3 coordinates"),
    "xz.csv": ("name,x,y,z\na,1,,3\n", "3 coordinates"),
    "inf.csv": ("name,x,y,z\na,1,inf,3\n", "not finite"),
    "text.csv": ("name,x,y,z\na,1,two,3\n", "non-numeric"),
    "system.csv": ("# coordinate_system = ijk\nname,x,y,z\na,1,2,3\n", "coordinate system"),
    "conflict.csv": ("# coordinate_system = RAS\nname,x,y,z,coordinate_system\na,1,2,3,LPS\n",
                     "contradicts"),
    "dup.csv": ("name,x,y,z\na,1,2,3\na,4,5,6\n", "duplicate"),
    "headeronly.csv": ("name,x,y,z\n", "no landmarks"),
}


@pytest.mark.parametrize("filename", sorted(MALFORMED))
def test_malformed_file_names_file_and_problem(tmp_path, filename):
    text, problem = MALFORMED[filename]
    path = tmp_path / filename
    path.write_text(text)
    with pytest.raises(LandmarkFileError) as info:
        read_landmarks(path)
    message = str(info.value)
    assert filename in message
    assert problem.lower() in message.lower()


@pytest.mark.parametrize("text,problem", [
    ("", "empty"),
    ("case,x,y,z\na,1,2,3\n", "missing column"),
    ("case,name,x,y,z\na,p,1,2,3\na,p,1,2,3\n", "duplicate"),
    ("case,name,x,y,z\na,p,1,2\n", "fields"),
])
def test_malformed_table(tmp_path, text, problem):
    path = tmp_path / "table.csv"
    path.write_text(text)
    with pytest.raises(LandmarkFileError, match=problem) as info:
        read_landmark_table(path)
    assert "table.csv" in str(info.value)


def test_unsupported_suffix_and_missing_file(tmp_path):
    with pytest.raises(LandmarkFileError, match="suffix"):
        read_landmarks(tmp_path / "a.txt")
    with pytest.raises(LandmarkFileError, match="no such file"):
        read_landmarks(tmp_path / "absent.fcsv")
    with pytest.raises(ValueError, match="coordinate_system"):
        write_landmarks(sample(), tmp_path / "a.json", coordinate_system="IJK")
