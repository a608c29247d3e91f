"""Benchmark converters on tiny fixtures written in each benchmark's documented format."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnlandmark.data.convert import CONVERTERS, ConversionError, run_converter, seeded_split
from nnlandmark.data.convert import afids, feta, fetal_pose, lfc, mml
from nnlandmark.data.convert._common import infer_lr_pairs
from nnlandmark.data.formats import MARKUPS_SCHEMA, read_landmarks
from nnlandmark.geometry import ImageGrid, index_to_world, lps_to_ras

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

FCSV_COLUMNS = "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n"


def oblique_direction(angle=0.35):
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(0.2), -np.sin(0.2)], [0.0, np.sin(0.2), np.cos(0.2)]])
    return rot @ tilt


def write_image(path, size=(8, 7, 6), spacing=(0.8, 1.1, 2.5), origin=(-12.0, 30.0, 5.0),
                direction=None, pixel=sitk.sitkInt16, array=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    if array is None:
        image = sitk.Image(*size, pixel)
    else:
        image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection((np.eye(3) if direction is None else direction).ravel().tolist())
    sitk.WriteImage(image, str(path))
    return ImageGrid.from_image(image)


def tree_digest(root):
    digest = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        digest.update(str(p.relative_to(root)).encode())
        if p.is_file():
            digest.update(p.read_bytes())
    return digest.hexdigest()


def check_dataset(dst, expected):
    """Every expected case reads back to its LPS points; splits are a partition."""
    dataset = json.loads((dst / "dataset.json").read_text())
    splits = json.loads((dst / "splits.json").read_text())
    assert set(splits) == {"train", "val", "test"}
    flat = splits["train"] + splits["val"] + splits["test"]
    assert len(flat) == len(set(flat)), "splits overlap"
    assert sorted(flat) == sorted(expected)
    for case, points in expected.items():
        images = list((dst / "images").glob(f"{case}.*"))
        assert len(images) == 1
        lm = read_landmarks(dst / "landmarks" / f"{case}.json")
        assert set(lm.names) == set(dataset["landmarks"])
        for name, point in points.items():
            if point is None:
                assert lm.status(name) in ("absent", "unknown"), (case, name)
            else:
                np.testing.assert_allclose(lm.point(name), point, atol=1e-3, err_msg=f"{case}/{name}")
    return dataset, splits


# ------------------------------------------------------------------ splits and pairs

def test_seeded_split_stratified_grouped_reproducible():
    cases = [f"s{g}_f{f}" for g in range(20) for f in range(3)]
    groups = {c: c.split("_")[0] for c in cases}
    strata = {c: "A" if int(c[1:].split("_")[0]) < 10 else "B" for c in cases}
    a = seeded_split(cases, seed=3, strata=strata, groups=groups)
    assert a == seeded_split(cases, seed=3, strata=strata, groups=groups)
    assert a != seeded_split(cases, seed=4, strata=strata, groups=groups)
    where = {c: k for k, v in a.items() for c in v}
    assert sorted(where) == sorted(cases)
    for g in range(20):
        assert len({where[f"s{g}_f{f}"] for f in range(3)}) == 1
    for stratum in "AB":
        members = [c for c in a["test"] if strata[c] == stratum]
        assert len(members) == 2 * 3  # 20 % of 10 groups, 3 frames each


def test_infer_lr_pairs():
    names = ["Chin", "Condyle_L", "Condyle_R", "left-eye", "right-eye", "Lt.ear", "Rt.ear", "LR"]
    assert infer_lr_pairs(names) == [["Condyle_L", "Condyle_R"], ["left-eye", "right-eye"],
                                     ["Lt.ear", "Rt.ear"]]


# ------------------------------------------------------------------ AFIDs

def afids_fixture(src, datasets=(("AFIDs-HCP", 3), ("SNSX", 3))):
    rng = np.random.default_rng(0)
    expected = {}
    for dataset, n in datasets:
        for s in range(n):
            prefix = f"sub-{dataset[:2].upper()}{s:03d}_acq-MP2RAGE_run-01"
            sub = prefix.split("_")[0]
            grid = write_image(src / dataset / sub / "anat" / f"{prefix}_T1w.nii.gz",
                               direction=oblique_direction(0.1 * s))
            index = rng.uniform(0, np.asarray(grid.size) - 1, size=(32, 3))
            lps = index_to_world(index, grid)
            rows = []
            for n_, (p, desc) in enumerate(zip(lps_to_ras(lps), afids.AFIDS), start=1):
                rows.append(f"vtkMRMLMarkupsFiducialNode_{n_},{p[0]:.6f},{p[1]:.6f},{p[2]:.6f},"
                            f"0,0,0,1,1,1,1,{n_},{desc},vtkMRMLScalarVolumeNode1\n")
            fcsv = (src / dataset / "derivatives" / "afids_groundtruth" / sub / "anat"
                    / f"{prefix}_space-T1w_desc-groundtruth_afids.fcsv")
            fcsv.parent.mkdir(parents=True, exist_ok=True)
            fcsv.write_text("# Markups fiducial file version = 4.6\n# CoordinateSystem = 0\n"
                            + FCSV_COLUMNS + "".join(rows))
            expected[f"{dataset}_{prefix}"] = dict(zip(afids.AFIDS, lps))
    return expected


def test_afids(tmp_path):
    src = tmp_path / "afids-data"
    expected = afids_fixture(src)
    # a fiducial file whose image was never downloaded is skipped, not fatal
    orphan = src / "SNSX/derivatives/afids_groundtruth/sub-X9/anat/sub-X9_space-T1w_desc-groundtruth_afids.fcsv"
    orphan.parent.mkdir(parents=True)
    orphan.write_text(next((src / "SNSX/derivatives").rglob("*.fcsv")).read_text())
    before = tree_digest(src)
    dst = run_converter("afids", src, tmp_path / "out", seed=1)
    assert tree_digest(src) == before
    dataset, splits = check_dataset(dst, expected)
    assert dataset["landmarks"] == list(afids.AFIDS)
    assert ["LSLMS", "RSLMS"] in dataset["pairs"] and len(dataset["pairs"]) == 11
    notes = json.loads((dst / "conversion_notes.json").read_text())
    assert "SNSX_sub-X9" in notes["skipped"] and notes["verified_against_real_data"] is False
    # stratified: each dataset contributes to test
    assert {c.split("_")[0] for c in splits["test"]} == {"AFIDs-HCP", "SNSX"}


def test_afids_bad_label_and_destination_rules(tmp_path):
    src = tmp_path / "src"
    afids_fixture(src, datasets=(("ds", 1),))
    fcsv = next(src.rglob("*.fcsv"))
    with pytest.raises(ConversionError, match="not empty"):
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "keep.txt").write_text("x")
        afids.convert(src, tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").exists()
    with pytest.raises(ConversionError, match="inside the source"):
        afids.convert(src, src / "out")
    assert not (src / "out").exists()
    fcsv.write_text(fcsv.read_text().replace(",1,1,1,1,7,", ",1,1,1,1,99,"))
    with pytest.raises(ConversionError, match=r"groundtruth_afids\.fcsv.*'99'"):
        afids.convert(src, tmp_path / "out")
    assert not (tmp_path / "out").exists(), "a failed conversion leaves no partial output"


# ------------------------------------------------------------------ MML

def test_mml(tmp_path):
    src = tmp_path / "download" / "mmld_dataset"
    rng = np.random.default_rng(1)
    expected, complete = {}, []
    for split, cases in (("train", ["a01", "a02"]), ("val", ["b01"]), ("test", ["c01"])):
        for case in cases:
            true_spacing = np.array([0.4, 0.4, 0.625])
            header_spacing = (1.0, 1.0, 1.0) if case == "a02" else tuple(true_spacing)
            write_image(src / split / f"{case}_volume.nrrd", size=(10, 9, 8), spacing=header_spacing,
                        origin=(3.0, -4.0, 10.0), direction=oblique_direction(0.5))
            label = rng.integers(0, 8, size=(14, 3)).astype(float)
            if case in ("a01", "c01"):
                label[[3, 9]] = -1.0
            np.save(src / split / f"{case}_label.npy", label)
            np.save(src / split / f"{case}_spacing.npy", true_spacing)
            grid = ImageGrid(size=(10, 9, 8), spacing=true_spacing, origin=(3.0, -4.0, 10.0),
                             direction=oblique_direction(0.5))
            expected[case] = {n: None if row[0] < 0 else index_to_world(row, grid)
                              for n, row in zip(mml.landmark_names(), label)}
            if not np.any(label < 0):
                complete.append(case)
    dst = mml.convert(tmp_path / "download", tmp_path / "out")
    dataset, splits = check_dataset(dst, expected)
    assert splits == {"train": ["a01", "a02"], "val": ["b01"], "test": ["c01"]}
    lm = read_landmarks(dst / "landmarks" / "a01.json")
    assert lm.absent == ["mml_04", "mml_10"]
    rewritten = sitk.ReadImage(str(dst / "images" / "a02.nrrd"))
    np.testing.assert_allclose(rewritten.GetSpacing(), [0.4, 0.4, 0.625])
    notes = json.loads((dst / "conversion_notes.json").read_text())
    assert notes["subsets"]["complete"] == sorted(complete)
    only = mml.convert(tmp_path / "download", tmp_path / "complete", complete_only=True)
    assert sorted(sum(json.loads((only / "splits.json").read_text()).values(), [])) == sorted(complete)


def test_mml_malformed(tmp_path):
    src = tmp_path / "m"
    for split in ("train", "val", "test"):
        (src / split).mkdir(parents=True)
    write_image(src / "train" / "x_volume.nrrd")
    np.save(src / "train" / "x_label.npy", np.zeros((13, 3)))
    np.save(src / "train" / "x_spacing.npy", np.ones(3))
    with pytest.raises(ConversionError, match=r"x_label\.npy.*\(14, 3\)"):
        mml.convert(src, tmp_path / "o1")
    (src / "train" / "x_spacing.npy").unlink()
    np.save(src / "train" / "x_label.npy", np.zeros((14, 3)))
    with pytest.raises(ConversionError, match=r"x_spacing\.npy: missing"):
        mml.convert(src, tmp_path / "o2")
    with pytest.raises(ConversionError, match="train/, val/ and test/"):
        mml.convert(tmp_path / "m" / "train", tmp_path / "o3")


# ------------------------------------------------------------------ PDDCA

PDDCA_NAMES = ["Chin", "Condyle_L", "Condyle_R", "Odontoid", "Occipital"]


def pddca_case(root, case, system, rng, names=PDDCA_NAMES):
    grid = write_image(root / case / "img.nrrd", size=(9, 9, 7), spacing=(0.98, 0.98, 2.5),
                       origin=(-40.0, -30.0, -80.0))
    lps = index_to_world(rng.uniform(0, 6, size=(len(names), 3)), grid)
    stored = lps_to_ras(lps) if system in ("RAS", "0", None) else lps
    rows = "".join(f"vtkMRMLMarkupsFiducialNode_{i},{p[0]},{p[1]},{p[2]},0,0,0,1,1,1,0,{n},,\n"
                   for i, (n, p) in enumerate(zip(names, stored), start=1))
    header = "# Markups fiducial file version = 4.4\n"
    if system is not None:
        header += f"# CoordinateSystem = {system}\n"
    (root / case / "points").mkdir(parents=True, exist_ok=True)
    (root / case / "points" / "landmarks.fcsv").write_text(header + FCSV_COLUMNS + rows)
    return dict(zip(names, lps))


def test_pddca(tmp_path):
    rng = np.random.default_rng(2)
    src = tmp_path / "PDDCA"
    expected = {
        "0522c0001": pddca_case(src / "part1", "0522c0001", "RAS", rng),
        "0522c0017": pddca_case(src / "part1", "0522c0017", "1", rng),
        "0522c0330": pddca_case(src / "part2", "0522c0330", None, rng),  # no header: RAS
        "0522c0555": pddca_case(src / "part3", "0522c0555", "LPS", rng),
        "0522c0878": pddca_case(src / "part3", "0522c0878", "0", rng, names=PDDCA_NAMES[:4]),
    }
    expected["0522c0878"]["Occipital"] = None
    write_image(src / "part3" / "0522c0790" / "img.nrrd")  # no landmark file: skipped
    dst = run_converter("pddca", src, tmp_path / "out")
    dataset, splits = check_dataset(dst, expected)
    assert splits == {"train": ["0522c0001", "0522c0017"], "val": ["0522c0330"],
                      "test": ["0522c0555", "0522c0878"]}
    assert dataset["landmarks"] == PDDCA_NAMES
    assert dataset["pairs"] == [["Condyle_L", "Condyle_R"]]
    assert read_landmarks(dst / "landmarks" / "0522c0878.json").status("Occipital") == "unknown"


def test_pddca_malformed(tmp_path):
    rng = np.random.default_rng(3)
    src = tmp_path / "p"
    pddca_case(src, "0522c0500", "RAS", rng)
    with pytest.raises(ConversionError, match="0522c0500 is outside"):
        run_converter("pddca", src, tmp_path / "o1")
    (src / "0522c0500").rename(src / "0522c0002")
    (src / "0522c0002" / "points" / "extra.fcsv").write_text("# CoordinateSystem = LPS\n")
    with pytest.raises(ConversionError, match="several .fcsv"):
        run_converter("pddca", src, tmp_path / "o2")
    (src / "0522c0002" / "points" / "extra.fcsv").unlink()
    fcsv = src / "0522c0002" / "points" / "landmarks.fcsv"
    fcsv.write_text(fcsv.read_text().replace("# CoordinateSystem = RAS", "# CoordinateSystem = IJK"))
    with pytest.raises(ConversionError, match=r"landmarks\.fcsv.*coordinate system"):
        run_converter("pddca", src, tmp_path / "o3")


# ------------------------------------------------------------------ FeTA

def feta_case(root, sub, rec, rng, missing=("TCD",)):
    size = (12, 11, 10)
    grid = write_image(root / sub / "anat" / f"{sub}_rec-{rec}_T2w.nii.gz", size=size,
                       spacing=(0.5, 0.5, 0.5), origin=(80.0, -20.0, 40.0),
                       direction=oblique_direction(1.1))
    array = np.zeros(size[::-1], np.uint8)  # (k, j, i)
    expected = {}
    for value, m in enumerate(feta.MEASUREMENTS, start=1):
        if m in missing:
            expected[f"{m}_1"] = expected[f"{m}_2"] = None
            continue
        while True:
            a, b = rng.integers(1, 9, size=(2, 3))
            diff = np.abs(a - b)
            if diff.max() >= 3 and np.sum(diff == diff.max()) == 1 and not array[tuple(a[::-1])] \
                    and not array[tuple(b[::-1])]:
                break
        axis = int(np.argmax(diff))
        first, second = (a, b) if a[axis] < b[axis] else (b, a)
        array[tuple(first[::-1])] = value
        array[tuple(second[::-1])] = value
        centre_second = second.astype(float)
        if m == "LCC":
            # the second endpoint drawn as a 2-voxel blob: its centroid counts
            blob = second.copy()
            blob[(axis + 1) % 3] += 1
            array[tuple(blob[::-1])] = value
            centre_second = (second + blob) / 2.0
        expected[f"{m}_1"] = index_to_world(first, grid)
        expected[f"{m}_2"] = index_to_world(centre_second, grid)
    meas = sitk.GetImageFromArray(array)
    meas.SetSpacing(grid.spacing)
    meas.SetOrigin(grid.origin)
    meas.SetDirection(grid.direction.ravel().tolist())
    sitk.WriteImage(meas, str(root / sub / "anat" / f"{sub}_rec-{rec}_meas.nii.gz"))
    return f"{sub}_rec-{rec}", expected


def test_feta(tmp_path):
    rng = np.random.default_rng(4)
    src = tmp_path / "feta_2024"
    expected = {}
    for i in range(1, 7):
        root = src / ("Kispi" if i <= 3 else "Vienna")
        case, points = feta_case(root, f"sub-{i:03d}", "mial" if i <= 3 else "nmic", rng)
        expected[case] = points
    (src / "Kispi" / "participants.tsv").write_text(
        "participant_id\tPathology\tGestational age\n" + "".join(
            f"sub-{i:03d}\t{'Neurotypical' if i % 2 else 'Pathological'}\t28\n" for i in range(1, 4)))
    dst = feta.convert(src, tmp_path / "out", seed=5)
    dataset, _ = check_dataset(dst, expected)
    assert dataset["biometry"]["LCC"] == ["LCC_1", "LCC_2"]
    assert ["TCD_1", "TCD_2"] in dataset["pairs"] and ["HV_1", "HV_2"] not in dataset["pairs"]
    notes = json.loads((dst / "conversion_notes.json").read_text())
    assert notes["strata"]["sub-001_rec-mial"] == "mial|Neurotypical"


def test_feta_three_regions_is_an_error(tmp_path):
    rng = np.random.default_rng(5)
    case, _ = feta_case(tmp_path / "src", "sub-001", "mial", rng)
    meas = tmp_path / "src" / "sub-001" / "anat" / f"{case}_meas.nii.gz"
    image = sitk.ReadImage(str(meas))
    array = sitk.GetArrayFromImage(image)
    array[9, 10, 11] = 2  # a third, isolated sBIP mark
    fixed = sitk.GetImageFromArray(array)
    fixed.CopyInformation(image)
    sitk.WriteImage(fixed, str(meas))
    with pytest.raises(ConversionError, match=r"meas\.nii\.gz: measurement sBIP \(label 2\) has 3"):
        feta.convert(tmp_path / "src", tmp_path / "out")


# ------------------------------------------------------------------ LFC

def line_markup(points, system, length):
    return {"@schema": MARKUPS_SCHEMA, "markups": [{
        "type": "Line", "coordinateSystem": system, "coordinateUnits": "mm",
        "controlPoints": [{"id": str(i), "label": f"L-{i}", "position": [float(v) for v in p],
                           "positionStatus": "defined"} for i, p in enumerate(points, start=1)],
        "measurements": [{"name": "length", "enabled": True, "value": length, "units": "mm"}]}]}


def lfc_case(src, split, case, rng, n_files=6, ras=False):
    grid = write_image(src / split / f"{case}.nii.gz", size=(10, 10, 9), spacing=(0.8, 0.8, 0.8),
                       origin=(-4.0, 6.0, -2.0), direction=oblique_direction(0.7))
    expected = {}
    folder = src / f"{split}_label" / case
    folder.mkdir(parents=True)
    for n, m in enumerate(lfc.MEASUREMENTS[:n_files], start=1):
        lps = index_to_world(rng.uniform(0, 8, size=(2, 3)), grid)
        expected[f"{m}_1"], expected[f"{m}_2"] = lps
        stored = lps_to_ras(lps) if ras else lps
        doc = line_markup(stored, "RAS" if ras else "LPS", float(np.linalg.norm(lps[0] - lps[1])))
        # numbers sort as integers, not text: _10 would come after _9
        (folder / f"{case}_{m.lower()}_{n}.mrk.json").write_text(json.dumps(doc))
    return expected


def test_lfc(tmp_path):
    rng = np.random.default_rng(6)
    src = tmp_path / "LFC"
    expected = {}
    for i in range(6):
        expected[f"{i:03d}"] = lfc_case(src, "train", f"{i:03d}", rng, ras=i % 2 == 1)
    for i in range(100, 102):
        expected[str(i)] = lfc_case(src, "test", str(i), rng)
    lfc_case(src, "train", "900", rng, n_files=5)  # incomplete: skipped like the reference loader
    dst = lfc.convert(src, tmp_path / "out", seed=2)
    dataset, splits = check_dataset(dst, expected)
    assert dataset["landmarks"] == lfc.NAMES and len(dataset["landmarks"]) == 12
    assert splits["test"] == ["100", "101"] and len(splits["val"]) == 1
    notes = json.loads((dst / "conversion_notes.json").read_text())
    assert "900" in notes["skipped"] and notes["warnings"] == ["skipped 900: 5 annotation files, expected 6"]


def test_lfc_line_with_three_points(tmp_path):
    rng = np.random.default_rng(7)
    src = tmp_path / "LFC"
    lfc_case(src, "train", "001", rng)
    path = sorted((src / "train_label" / "001").glob("*_3.mrk.json"))[0]
    doc = json.loads(path.read_text())
    doc["markups"][0]["controlPoints"].append(dict(doc["markups"][0]["controlPoints"][0], id="3"))
    path.write_text(json.dumps(doc))
    with pytest.raises(ConversionError, match=r"_3\.mrk\.json: 3 control points"):
        lfc.convert(src, tmp_path / "out")


# ------------------------------------------------------------------ fetal pose

def pose_frame(src, subject, frame, rng, header_spacing, spacing, as_list, index_base=0):
    folder = src / subject
    write_image(folder / f"{frame}.nii.gz", size=(12, 10, 8), spacing=header_spacing,
                origin=(10.0, 10.0, -30.0), direction=oblique_direction(-0.4))
    grid = ImageGrid(size=(12, 10, 8), spacing=spacing, origin=(10.0, 10.0, -30.0),
                     direction=oblique_direction(-0.4))
    index = rng.uniform(0, 7, size=(15, 3))
    rows = [list(map(float, r + index_base)) for r in index]
    expected = {k: index_to_world(r, grid) for k, r in zip(fetal_pose.KEYPOINTS, index)}
    if as_list:
        landmarks = rows
    else:
        landmarks = dict(zip(fetal_pose.KEYPOINTS, rows))
        landmarks["bladder"] = None
        expected["bladder"] = None
    (folder / f"{frame}.json").write_text(json.dumps({"landmarks": landmarks, "spacing": list(spacing)}))
    return f"{subject}_{frame}", expected


def test_fetal_pose(tmp_path):
    rng = np.random.default_rng(8)
    src = tmp_path / "pose"
    expected = {}
    for s in range(5):
        for f in range(3):
            header = (3.0, 3.0, 3.0) if (s, f) == (0, 0) else (3.0, 3.0, 3.5)
            case, points = pose_frame(src, f"subj{s}", f"frame_{f:03d}", rng, header, (3.0, 3.0, 3.5),
                                      as_list=f % 2 == 0)
            expected[case] = points
    dst = run_converter("fetal_pose", src, tmp_path / "out", seed=0)
    dataset, splits = check_dataset(dst, expected)
    assert ["ankle_l", "ankle_r"] in dataset["pairs"] and len(dataset["pairs"]) == 7
    where = {c: k for k, v in splits.items() for c in v}
    for s in range(5):
        assert len({where[f"subj{s}_frame_{f:03d}"] for f in range(3)}) == 1
    np.testing.assert_allclose(sitk.ReadImage(str(dst / "images" / "subj0_frame_000.nii.gz")).GetSpacing(),
                               (3.0, 3.0, 3.5))


def test_fetal_pose_one_based_and_malformed(tmp_path):
    rng = np.random.default_rng(9)
    src = tmp_path / "pose"
    case, expected = pose_frame(src, "s", "f0", rng, (2.0, 2.0, 2.0), (2.0, 2.0, 2.0), as_list=True,
                                index_base=1)
    dst = fetal_pose.convert(src, tmp_path / "out", index_base=1)
    check_dataset(dst, {case: expected})
    doc = json.loads((src / "s" / "f0.json").read_text())
    doc["landmarks"] = doc["landmarks"][:14]
    (src / "s" / "f0.json").write_text(json.dumps(doc))
    with pytest.raises(ConversionError, match=r"f0\.json: 'landmarks' list has 14 rows"):
        fetal_pose.convert(src, tmp_path / "out2")


# ------------------------------------------------------------------ registry

def test_registry(tmp_path):
    assert set(CONVERTERS) == {"afids", "mml", "pddca", "feta", "lfc", "fetal-pose"}
    with pytest.raises(KeyError, match="known: afids"):
        run_converter("isbi2015", tmp_path, tmp_path / "o")
    with pytest.raises(ConversionError, match="does not exist"):
        run_converter("lfc", tmp_path / "nowhere", tmp_path / "o")
