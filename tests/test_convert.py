"""Benchmark converters on tiny fixtures written in each benchmark's documented format."""
from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.io import savemat

from nnlandmark.data.convert import CONVERTERS, ConversionError, run_converter, seeded_split
from nnlandmark.data.convert import afids, feta, fetal_pose, lfc, mml
from nnlandmark.data.images import read_image_grid
from nnlandmark.data.formats import MARKUPS_SCHEMA, read_landmarks
from nnlandmark.geometry import ImageGrid, index_to_world, lps_to_ras, world_to_index

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


def test_converters_pair_names_with_the_one_rule():
    """Converters propose left/right pairs with :func:`nnlandmark.data.pairs.propose_pairs`,
    the rule that also suggests them for user datasets."""
    from nnlandmark.data.pairs import propose_pairs
    names = ["Chin", "Condyle_L", "Condyle_R", "left-eye", "right-eye", "Lt.ear", "Rt.ear", "LR"]
    assert propose_pairs(names) == [("Condyle_L", "Condyle_R"), ("left-eye", "right-eye"), ("Lt.ear", "Rt.ear")]


# ------------------------------------------------------------------ AFIDs
#
# Sources (checked): the file trees of github.com/afids/AFIDs-HCP and afids/AFIDs-OASIS (the
# .fcsv files themselves are stored in those repositories), OpenNeuro ds004470 (SNSX) and
# ds004471 (LHSCPD) as mirrored on github.com/OpenNeuroDatasets, the afids-data super-dataset
# (github.com/afids/afids-data, .gitmodules: data/datasets/<name>), the template .fcsv in the
# autoafids 0.1.4 wheel (autoafids/resources/, MIT) and afids-utils' reader
# (afids_utils/ext/fcsv.py: label = AFID number, desc = description, "0" = RAS).
# Real image / fiducial name pairs, copied from those trees:
AFIDS_RELEASE_NAMES = {
    # dataset: (image name, fiducial name) of one subject
    "SNSX": ("sub-C001_acq-MP2RAGE_run-01_T1w.nii.gz",
             "sub-C001_acq-MP2RAGE_run-01_space-T1w_desc-groundtruth_afids.fcsv"),
    "LHSCPD": ("sub-087_run-01_T1w.nii.gz", "sub-087_space-T1w_desc-groundtruth_afids.fcsv"),
    "AFIDs-HCP": ("sub-103111_acq-MP2RAGE_T1w.nii.gz", "sub-103111_space-T1w_desc-groundtruth_afids.fcsv"),
    "AFIDs-OASIS": ("sub-0010_T1w.nii.gz", "sub-0010_space-T1w_desc-groundtruth_afids.fcsv"),
}
# The desc column of the autoafids template (AFID 1..32, in label order).
AFIDS_REAL_DESCS = (
    "AC", "PC", "infracollicular sulcus", "PMJ", "superior interpeduncular fossa", "R superior LMS",
    "L superior LMS", "R inferior LMS", "L inferior LMS", "culmen", "intermammillary sulcus", "R MB",
    "L MB", "pineal gland", "R LV at AC", "L LV at AC", "R LV at PC", "L LV at PC", "genu of CC",
    "splenium of CC", "R AL temporal horn", "L AL temporal horn", "R superior AM temporal horn",
    "L superior AM temporal horn", "R inferior AM temporal horn", "L inferior AM temporal horn",
    "R indusium griseum origin", "L indusium griseum origin", "R ventral occipital horn",
    "L ventral occipital horn", "R olfactory sulcal fundus", "L olfactory sulcal fundus")
# Four rows copied verbatim from autoafids 0.1.4 (MIT),
# autoafids/resources/tpl-MNI152NLin2009cAsym_res-01_desc-groundtruth_afids.fcsv; the file has
# these three header lines and no newline after its last row.
AFIDS_REAL_HEADER = ("# Markups fiducial file version = 4.6\n# CoordinateSystem = 0\n"
                     "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n")
AFIDS_REAL_ROWS = (
    "vtkMRMLMarkupsFiducialNode_1,-0.204861407692308,2.72288076923077,-4.88105282051282,0,0,0,1,1,1,0,1,AC,vtkMRMLScalarVolumeNode1\n"
    "vtkMRMLMarkupsFiducialNode_2,-0.00726026948717949,-25.0450538461538,-2.21068230769231,0,0,0,1,1,1,0,2,PC,vtkMRMLScalarVolumeNode1\n"
    "vtkMRMLMarkupsFiducialNode_3,0.025998141025641,-37.691917948718,-11.0111497435897,0,0,0,1,1,1,0,3,infracollicular sulcus,vtkMRMLScalarVolumeNode1\n"
    "vtkMRMLMarkupsFiducialNode_4,-0.0892198512820513,-23.1885743589744,-21.5288358974359,0,0,0,1,1,1,0,4,PMJ,vtkMRMLScalarVolumeNode1")
# Header of the template's T1w image in the same wheel (read with SimpleITK): size (193, 229, 193),
# spacing 1 mm, origin (96, 132, -78) LPS, direction diag(-1, -1, 1).
MNI_ORIGIN, MNI_DIRECTION = (96.0, 132.0, -78.0), np.diag([-1.0, -1.0, 1.0])


def afids_fcsv_text(lps, version="4.10", lock=0, last_newline=True, descs=AFIDS_REAL_DESCS):
    """An AFIDs ground-truth .fcsv in the release's form: RAS, label = 1..32, desc = free text."""
    rows = [f"vtkMRMLMarkupsFiducialNode_{n},{p[0]:.15g},{p[1]:.15g},{p[2]:.15g},0,0,0,1,1,1,{lock},{n},{desc},"
            "vtkMRMLScalarVolumeNode1"
            for n, (p, desc) in enumerate(zip(lps_to_ras(lps), descs), start=1)]
    return (f"# Markups fiducial file version = {version}\n# CoordinateSystem = 0\n"
            + FCSV_COLUMNS + "\n".join(rows) + ("\n" if last_newline else ""))


def afids_fixture(src, datasets=("SNSX", "LHSCPD", "AFIDs-HCP", "AFIDs-OASIS"), n=2):
    """The afids-data super-dataset layout: data/datasets/<name>/ with the release's file names."""
    rng = np.random.default_rng(0)
    expected = {}
    for d, dataset in enumerate(datasets):
        image_name, fcsv_name = AFIDS_RELEASE_NAMES[dataset]
        for s in range(n):
            sub = image_name.split("_")[0] + (f"x{s}" if s else "")
            root = src / "data" / "datasets" / dataset
            image = root / sub / "anat" / image_name.replace(image_name.split("_")[0], sub)
            grid = write_image(image, direction=oblique_direction(0.1 * s + d))
            lps = index_to_world(rng.uniform(0, np.asarray(grid.size) - 1, size=(32, 3)), grid)
            fcsv = (root / "derivatives" / "afids_groundtruth" / sub / "anat"
                    / fcsv_name.replace(fcsv_name.split("_")[0], sub))
            fcsv.parent.mkdir(parents=True, exist_ok=True)
            # HCP files say 4.10 / lock 0, OASIS 4.6 / lock 1 (both seen in the release); OASIS
            # describes AFID 20 as "splenium" where HCP and the template say "splenium of CC"
            descs = AFIDS_REAL_DESCS
            if dataset == "AFIDs-OASIS":
                descs = descs[:19] + ("splenium",) + descs[20:]
            fcsv.write_text(afids_fcsv_text(lps, version="4.10" if d % 2 else "4.6", lock=d % 2,
                                            last_newline=bool(s), descs=descs))
            # the rater derivative sits beside the ground truth and must be ignored
            rater = root / "derivatives" / "afids_rater" / sub / "anat" / fcsv.name.replace(
                "desc-groundtruth", "desc-rater01")
            rater.parent.mkdir(parents=True, exist_ok=True)
            rater.write_text(afids_fcsv_text(lps + 5.0))
            expected[f"{dataset}_{fcsv.name.split('_space-')[0]}"] = dict(zip(afids.AFIDS, lps))
    return expected


def test_afids_acronyms_follow_the_release_numbering():
    # label n of the real files is described by AFIDS_REAL_DESCS[n-1]: our acronym n must be a
    # left/right one exactly when that description names a side, and on the same side
    paired = {name: pair for pair in afids.PAIRS for name in pair}
    for acronym, desc in zip(afids.AFIDS, AFIDS_REAL_DESCS):
        if desc[:2] in ("R ", "L "):
            assert acronym in paired and acronym[0] == desc[0], (acronym, desc)
        else:
            assert acronym not in paired, (acronym, desc)
    assert afids.AFIDS[:4] == ("AC", "PC", "ICS", "PMJ") and afids.AFIDS[18:20] == ("GENU", "SPLE")


def test_afids(tmp_path):
    src = tmp_path / "afids-data"
    expected = afids_fixture(src)
    # a fiducial file whose image was never fetched (DataLad, data-use agreement) is skipped
    orphan = (src / "data/datasets/AFIDs-HCP/derivatives/afids_groundtruth/sub-999999/anat"
              / "sub-999999_space-T1w_desc-groundtruth_afids.fcsv")
    orphan.parent.mkdir(parents=True)
    orphan.write_text(next((src / "data/datasets/SNSX/derivatives").rglob("*groundtruth*.fcsv")).read_text())
    before = tree_digest(src)
    dst = run_converter("afids", src, tmp_path / "out", seed=1)
    assert tree_digest(src) == before
    dataset, splits = check_dataset(dst, expected)
    assert sorted(expected)[:2] == ["AFIDs-HCP_sub-103111", "AFIDs-HCP_sub-103111x1"]
    assert "LHSCPD_sub-087" in expected and "SNSX_sub-C001_acq-MP2RAGE_run-01" in expected
    assert dataset["landmarks"] == list(afids.AFIDS)
    assert ["LSLMS", "RSLMS"] in dataset["pairs"] and len(dataset["pairs"]) == 11
    notes = json.loads((dst / "conversion_notes.json").read_text())
    assert list(notes["skipped"]) == ["AFIDs-HCP_sub-999999"] and notes["verified_against_real_data"] is False
    # stratified: every dataset contributes to train
    assert {c.split("_")[0] for c in splits["train"]} == {"AFIDs-HCP", "AFIDs-OASIS", "LHSCPD", "SNSX"}


def test_afids_real_template_rows(tmp_path):
    """Real rows of the autoafids template .fcsv on a grid with the template image's header."""
    src = tmp_path / "tpl"
    image = src / "sub-MNI" / "anat" / "sub-MNI_T1w.nii.gz"
    # the template's origin and direction; 4 mm voxels keep the file small (extent as the template)
    grid = write_image(image, size=(49, 58, 49), spacing=(4.0, 4.0, 4.0), origin=MNI_ORIGIN,
                       direction=MNI_DIRECTION, pixel=sitk.sitkUInt8)
    fcsv = src / "derivatives/afids_groundtruth/sub-MNI/anat/sub-MNI_space-T1w_desc-groundtruth_afids.fcsv"
    fcsv.parent.mkdir(parents=True)
    fcsv.write_text(AFIDS_REAL_HEADER + AFIDS_REAL_ROWS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "outside the image" warning
        dst = afids.convert(src, tmp_path / "out")
    lm = read_landmarks(dst / "landmarks" / "sub-MNI.json")
    # RAS in the file -> LPS: x and y change sign
    np.testing.assert_allclose(lm.point("AC"), [0.204861407692308, -2.72288076923077, -4.88105282051282])
    np.testing.assert_allclose(lm.point("PMJ"), [0.0892198512820513, 23.1885743589744, -21.5288358974359])
    assert lm.status("ICS") == "present" and lm.status("LOSF") == "unknown"
    # AC lies near the template's world origin: voxel ((96 - 0.2) / 4, (132 + 2.7) / 4, (78 - 4.9) / 4)
    np.testing.assert_allclose(world_to_index(lm.point("AC"), grid), [23.95, 33.68, 18.28], atol=0.01)


def test_afids_ambiguous_image_bad_label_and_destination_rules(tmp_path):
    src = tmp_path / "src"
    afids_fixture(src, datasets=("LHSCPD",), n=1)
    root = src / "data/datasets/LHSCPD"
    fcsv = next((root / "derivatives/afids_groundtruth").rglob("*.fcsv"))
    with pytest.raises(ConversionError, match="not empty"):
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "keep.txt").write_text("x")
        afids.convert(src, tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").exists()
    with pytest.raises(ConversionError, match="inside the source"):
        afids.convert(src, src / "out")
    assert not (src / "out").exists()
    # a second run of the same subject: the fiducial name no longer tells which image was annotated
    write_image(root / "sub-087/anat/sub-087_run-02_T1w.nii.gz")
    with pytest.raises(ConversionError, match="several T1w images match 'sub-087'"):
        afids.convert(src, tmp_path / "out")
    (root / "sub-087/anat/sub-087_run-02_T1w.nii.gz").unlink()
    fcsv.write_text(fcsv.read_text().replace(",7,L superior LMS,", ",99,L superior LMS,"))
    with pytest.raises(ConversionError, match=r"groundtruth_afids\.fcsv.*'99'"):
        afids.convert(src, tmp_path / "out")
    assert not (tmp_path / "out").exists(), "a failed conversion leaves no partial output"


# ------------------------------------------------------------------ MML
#
# Sources: the benchmark's README and code, github.com/ithet1007/mmld_code (README "Data
# format": mmld_dataset/{train,val,test}/*_volume.nrrd, *_label.npy, *_spacing.npy;
# data_utils/dataloader.py reads the volume with nrrd.read (Fortran order, axis 0 = NRRD's
# fastest axis = ITK i); data_utils/transforms.py indexes that array with the label rows and marks
# a missing landmark with "a very small value" (mean < -100); utils.py multiplies index
# differences by the spacing axis by axis; main_yolol.py names the 14 rows L0, La..Lf, R0,
# Ra..Rf) and the nnLandmark conversion (github.com/MIC-DKFZ/nnLandmark,
# dataset_conversion/nnLandmark/Dataset733_MML/04_label_maps.py paints seg[x, y, z] at the
# rounded label rows). The exact "very small value" is not published: -1000 is used here.
MML_MISSING = -1000.0


def test_mml(tmp_path):
    src = tmp_path / "download" / "mmld_dataset"
    rng = np.random.default_rng(1)
    expected, complete = {}, []
    for split, cases in (("train", ["a01", "a02"]), ("val", ["b01"]), ("test", ["c01"])):
        for case in cases:
            true_spacing = np.array([0.4, 0.4, 0.625])
            header_spacing = (1.0, 1.0, 1.0) if case == "a02" else tuple(true_spacing)
            grid = write_image(src / split / f"{case}_volume.nrrd", size=(10, 9, 8), spacing=header_spacing,
                               origin=(3.0, -4.0, 10.0), direction=oblique_direction(0.5))
            # rows index the array as pynrrd returns it: label[n] = (x, y, z) with array[x, y, z]
            array_shape = sitk.GetArrayFromImage(sitk.ReadImage(str(src / split / f"{case}_volume.nrrd"))).shape[::-1]
            label = rng.integers(0, 8, size=(14, 3)).astype(float)
            assert np.all(label < np.array(array_shape))
            if case in ("a01", "c01"):
                label[[3, 9]] = MML_MISSING
            np.save(src / split / f"{case}_label.npy", label)
            np.save(src / split / f"{case}_spacing.npy", true_spacing)
            grid = ImageGrid(size=grid.size, spacing=true_spacing, origin=grid.origin, direction=grid.direction)
            expected[case] = {n: None if row[0] < 0 else index_to_world(row, grid)
                              for n, row in zip(mml.NAMES, label)}
            if not np.any(label < 0):
                complete.append(case)
    dst = mml.convert(tmp_path / "download", tmp_path / "out")
    dataset, splits = check_dataset(dst, expected)
    assert dataset["landmarks"] == ["L0", "La", "Lb", "Lc", "Ld", "Le", "Lf",
                                    "R0", "Ra", "Rb", "Rc", "Rd", "Re", "Rf"]
    assert ["L0", "R0"] in dataset["pairs"] and ["Lf", "Rf"] in dataset["pairs"] and len(dataset["pairs"]) == 7
    assert splits == {"train": ["a01", "a02"], "val": ["b01"], "test": ["c01"]}
    lm = read_landmarks(dst / "landmarks" / "a01.json")
    assert lm.absent == ["Lc", "Rb"]
    rewritten = sitk.ReadImage(str(dst / "images" / "a02.nrrd"))
    np.testing.assert_allclose(rewritten.GetSpacing(), [0.4, 0.4, 0.625])
    notes = json.loads((dst / "conversion_notes.json").read_text())
    assert notes["subsets"]["complete"] == sorted(complete)
    only = mml.convert(tmp_path / "download", tmp_path / "complete", complete_only=True)
    assert sorted(sum(json.loads((only / "splits.json").read_text()).values(), [])) == sorted(complete)


def test_mml_label_axes_follow_pynrrd_order(tmp_path):
    """A label row (x, y, z) is the voxel array[x, y, z] of the volume as pynrrd reads it."""
    src = tmp_path / "mmld_dataset"
    for split in ("train", "val", "test"):
        (src / split).mkdir(parents=True)
    # an anisotropic, non-cubic volume with one bright voxel; pynrrd's array[x, y, z] is ITK's
    # index (x, y, z), SimpleITK's numpy array is [z, y, x]
    array = np.zeros((6, 9, 12), np.int16)  # (k, j, i)
    array[4, 7, 2] = 1000
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.3, 0.3, 1.25))
    image.SetOrigin((5.0, 6.0, 7.0))
    sitk.WriteImage(image, str(src / "train" / "p_volume.nrrd"))
    label = np.full((14, 3), MML_MISSING)
    label[0] = (2, 7, 4)  # pynrrd order: array[2, 7, 4] is the bright voxel
    np.save(src / "train" / "p_label.npy", label)
    np.save(src / "train" / "p_spacing.npy", np.array([0.3, 0.3, 1.25]))
    dst = mml.convert(src, tmp_path / "out")
    lm = read_landmarks(dst / "landmarks" / "p.json")
    np.testing.assert_allclose(lm.point("L0"), [5.0 + 2 * 0.3, 6.0 + 7 * 0.3, 7.0 + 4 * 1.25])
    written = sitk.ReadImage(str(dst / "images" / "p.nrrd"))
    assert written[written.TransformPhysicalPointToIndex(lm.point("L0").tolist())] == 1000
    assert sorted(lm.absent) == sorted(mml.NAMES[1:])


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
#
# Sources: the dataset page (imagenglab.com/newsite/pddca: 48 CTs of RTOG 0522, three zip parts,
# "manual identification of bony landmarks", details in pddca.odt, which we could not read);
# torch_em's public PDDCA loader (0522cNNNN/img.nrrd + structures/<organ>.nrrd, package ranges
# train 0001-0328, train_additional 0329-0479, test_offsite 0555-0746, test_onsite 0788-0878);
# the nnLandmark scripts (github.com/MIC-DKFZ/nnLandmark, dataset_conversion/nnLandmark/
# Dataset740_PDDCA: every *.fcsv directly in the case folder, several merged, points named by
# `label`, RAS; landmarks for 33 cases, all <= 0522c0479, per All_split_jsons/
# split_Dataset740_PDDCA.json).
# UNVERIFIED (no published description found): the .fcsv file names, the landmark names (the
# dataset page says only "bony landmarks"; the names below are invented), the Slicer version and
# whether the files carry a CoordinateSystem header (both forms are tested).
PDDCA_NAMES = ["Chin", "Condyle_L", "Condyle_R", "Odontoid", "Occipital"]


def pddca_case(root, case, system, rng, names=PDDCA_NAMES, landmarks=True):
    grid = write_image(root / case / "img.nrrd", size=(9, 9, 7), spacing=(0.98, 0.98, 2.5),
                       origin=(-40.0, -30.0, -80.0))
    write_image(root / case / "structures" / "Mandible.nrrd", size=(9, 9, 7), spacing=(0.98, 0.98, 2.5),
                origin=(-40.0, -30.0, -80.0), pixel=sitk.sitkUInt8)
    if not landmarks:
        return None
    lps = index_to_world(rng.uniform(0, 6, size=(len(names), 3)), grid)
    stored = lps_to_ras(lps) if system in ("RAS", "0", None) else lps
    rows = "".join(f"vtkMRMLMarkupsFiducialNode_{i},{p[0]},{p[1]},{p[2]},0,0,0,1,1,1,0,{n},,\n"
                   for i, (n, p) in enumerate(zip(names, stored), start=1))
    header = "# Markups fiducial file version = 4.4\n"
    if system is not None:
        header += f"# CoordinateSystem = {system}\n"
    (root / case / f"{case}_landmarks.fcsv").write_text(header + FCSV_COLUMNS + rows)
    return dict(zip(names, lps))


def test_pddca_release_layout(tmp_path):
    """Landmarks only in the train packages, as in the release: test is carved from train."""
    rng = np.random.default_rng(2)
    src = tmp_path / "PDDCA-1.4.1"
    train = ["0522c0001", "0522c0002", "0522c0003", "0522c0009", "0522c0013", "0522c0014",
             "0522c0017", "0522c0057", "0522c0070", "0522c0077"]
    expected = {c: pddca_case(src / "part1", c, "RAS", rng) for c in train}
    expected["0522c0330"] = pddca_case(src / "part2", "0522c0330", None, rng)  # no header: RAS
    for case in ("0522c0555", "0522c0878"):  # test packages: image and organs, no landmarks
        pddca_case(src / "part3", case, None, rng, landmarks=False)
    dst = run_converter("pddca", src, tmp_path / "out", seed=3)
    dataset, splits = check_dataset(dst, expected)
    assert splits["val"] == ["0522c0330"] and len(splits["test"]) == 2 and len(splits["train"]) == 8
    assert set(splits["test"]) <= set(train)
    notes = json.loads((dst / "conversion_notes.json").read_text())
    assert sorted(notes["skipped"]) == ["0522c0555", "0522c0878"]
    assert "test = seeded 20% of the train package" in notes["split_rule"]
    assert dataset["landmarks"] == PDDCA_NAMES and dataset["pairs"] == [["Condyle_L", "Condyle_R"]]


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
    # a case whose landmarks are split over two files (the nnLandmark scripts merge them)
    extra = src / "part3" / "0522c0878" / "occipital.fcsv"
    extra_lps = index_to_world(np.array([[2.0, 3.0, 4.0]]), read_image_grid(src / "part3/0522c0878/img.nrrd"))
    extra.write_text("# CoordinateSystem = LPS\n" + FCSV_COLUMNS
                     + "vtkMRMLMarkupsFiducialNode_1,{},{},{},0,0,0,1,1,1,0,Occipital,,\n".format(*extra_lps[0]))
    expected["0522c0878"]["Occipital"] = extra_lps[0]
    write_image(src / "part3" / "0522c0790" / "img.nrrd")  # no landmark file: skipped
    dst = run_converter("pddca", src, tmp_path / "out")
    dataset, splits = check_dataset(dst, expected)
    assert splits == {"train": ["0522c0001", "0522c0017"], "val": ["0522c0330"],
                      "test": ["0522c0555", "0522c0878"]}
    assert dataset["landmarks"] == PDDCA_NAMES
    assert dataset["pairs"] == [["Condyle_L", "Condyle_R"]]
    notes = json.loads((dst / "conversion_notes.json").read_text())
    assert notes["split_rule"].startswith("official") and "seeded" not in notes["split_rule"]


def test_pddca_malformed(tmp_path):
    rng = np.random.default_rng(3)
    src = tmp_path / "p"
    pddca_case(src, "0522c0500", "RAS", rng)
    with pytest.raises(ConversionError, match="0522c0500 is outside"):
        run_converter("pddca", src, tmp_path / "o1")
    (src / "0522c0500").rename(src / "0522c0002")
    (src / "0522c0002" / "0522c0500_landmarks.fcsv").rename(src / "0522c0002" / "a.fcsv")
    (src / "0522c0002" / "b.fcsv").write_text(
        "# CoordinateSystem = LPS\n" + FCSV_COLUMNS + "vtkMRMLMarkupsFiducialNode_1,1,2,3,0,0,0,1,1,1,0,Chin,,\n")
    with pytest.raises(ConversionError, match="'Chin'.* more than one .fcsv"):
        run_converter("pddca", src, tmp_path / "o2")
    (src / "0522c0002" / "b.fcsv").unlink()
    fcsv = src / "0522c0002" / "a.fcsv"
    fcsv.write_text(fcsv.read_text().replace("# CoordinateSystem = RAS", "# CoordinateSystem = IJK"))
    with pytest.raises(ConversionError, match=r"a\.fcsv.*coordinate system"):
        run_converter("pddca", src, tmp_path / "o3")


# ------------------------------------------------------------------ FeTA
#
# Sources: the README of the release's biometry ("Fetal Tissue Annotation Challenge (FeTA)
# Biometry - MICCAI 2024", Zenodo doi 10.5281/zenodo.11192452): derivatives/biometry/
# {biometry.tsv, sub-<sub>/anat/sub-<sub>_rec-<rec>_meas.nii.gz, ..._trf.txt}; mask values
# {"LCC": 1, "HV": 2, "bBIP": 3, "sBIP": 4, "TCD": 5}; the mask is in the re-aligned space and
# the transform maps the original image to it (its example code: sitk.Resample(im, im, trf));
# ends rounded to whole voxels. The challenge's submission README (fetachallenge submission
# template): participants.tsv with participant_id, Gestational age, Pathology; biometry columns
# LCC, HV, bBIP, sBIP, TCD. The nnLandmark scripts (github.com/MIC-DKFZ/nnLandmark,
# Dataset742_FeTA_2_4) and MedVision's FeTA24 loader read the same layout, find exactly two voxels
# per label, and resample the T2w with the transform before using the mask's voxels.
# UNVERIFIED: the transform's ITK class in the real files (an affine is written here), the first
# column name of biometry.tsv and the Pathology values.
FETA_LABELS = {"LCC": 1, "HV": 2, "bBIP": 3, "sBIP": 4, "TCD": 5}


def feta_transform(k):
    """A rigid re-alignment (rotation about an oblique axis plus a shift) as an ITK affine."""
    t = sitk.AffineTransform(3)
    t.SetMatrix(oblique_direction(0.3 + 0.1 * k).ravel().tolist())
    t.SetTranslation((1.5, -2.0, 0.7 * k))
    t.SetCenter((84.0, -17.0, 42.0))
    return t


def feta_case(root, sub, rec, rng, k=0, missing=("TCD",), blob="LCC"):
    """One subject: T2w, and the mask + transform under derivatives/biometry; returns expected points."""
    size = (14, 13, 12)
    grid = write_image(root / sub / "anat" / f"{sub}_rec-{rec}_T2w.nii.gz", size=size,
                       spacing=(0.5, 0.5, 0.5), origin=(80.0, -20.0, 40.0), direction=oblique_direction(0.2))
    array = np.zeros(size[::-1], np.uint8)  # (k, j, i); the mask shares the T2w grid
    transform = feta_transform(k)
    expected, lengths = {}, {}
    for m, value in FETA_LABELS.items():
        if m in missing:
            expected[f"{m}_1"] = expected[f"{m}_2"] = None
            continue
        while True:
            ends = rng.integers(1, 10, size=(2, 3))
            if np.abs(ends[0] - ends[1]).max() >= 3 and not array[tuple(ends[0][::-1])] \
                    and not array[tuple(ends[1][::-1])]:
                break
        centres = ends.astype(float)
        for e in ends:
            array[tuple(e[::-1])] = value
        if m == blob:  # one end drawn as a 2-voxel blob: its centroid counts
            extra = ends[1] + np.array([0, 0, 1])
            array[tuple(extra[::-1])] = value
            centres[1] = (ends[1] + extra) / 2.0
        realigned = index_to_world(centres, grid)
        lengths[m] = float(np.linalg.norm(realigned[0] - realigned[1]))
        # our naming: right end first for transverse lengths, anterior for LCC, superior for HV
        key = {"LCC": realigned[:, 1], "HV": -realigned[:, 2]}.get(m, realigned[:, 0])
        first, second = realigned[np.argsort(key, kind="stable")]
        expected[f"{m}_1"] = np.array(transform.TransformPoint(first.tolist()))
        expected[f"{m}_2"] = np.array(transform.TransformPoint(second.tolist()))
    biometry = root / "derivatives" / "biometry" / sub / "anat"
    biometry.mkdir(parents=True, exist_ok=True)
    meas = sitk.GetImageFromArray(array)
    meas.SetSpacing(grid.spacing)
    meas.SetOrigin(grid.origin)
    meas.SetDirection(grid.direction.ravel().tolist())
    sitk.WriteImage(meas, str(biometry / f"{sub}_rec-{rec}_meas.nii.gz"))
    sitk.WriteTransform(transform, str(biometry / f"{sub}_rec-{rec}_trf.txt"))
    return f"{sub}_rec-{rec}", expected, lengths


def test_feta(tmp_path):
    rng = np.random.default_rng(4)
    src = tmp_path / "feta_2.4"
    expected, reference = {}, {}
    for i in range(1, 7):
        case, points, lengths = feta_case(src, f"sub-{i:03d}", "mial" if i <= 3 else "irtk", rng, k=i)
        expected[case] = points
        reference[f"sub-{i:03d}"] = lengths
    (src / "participants.tsv").write_text(
        "participant_id\tGestational age\tPathology\n" + "".join(
            f"sub-{i:03d}\t28.1\t{'Neurotypical' if i % 2 else 'Pathological'}\n" for i in range(1, 7)))
    reference["sub-002"]["HV"] += 5.0  # a wrong reference length is reported, not fatal
    (src / "derivatives" / "biometry" / "biometry.tsv").write_text(
        "participant_id\tLCC\tHV\tbBIP\tsBIP\tTCD\n" + "".join(
            f"{sub}\t" + "\t".join(f"{v[m]:.3f}" if m in v else "" for m in FETA_LABELS) + "\n"
            for sub, v in reference.items()))
    # the release's example code writes original-space copies under derivatives/biometry_mapped
    mapped = src / "derivatives" / "biometry_mapped" / "sub-001" / "anat"
    mapped.mkdir(parents=True)
    (mapped / "sub-001_rec-mial_meas.nii.gz").write_bytes(
        (src / "derivatives/biometry/sub-001/anat/sub-001_rec-mial_meas.nii.gz").read_bytes())
    # a subject whose transform is missing cannot be placed: skipped
    write_image(src / "sub-007" / "anat" / "sub-007_rec-mial_T2w.nii.gz")
    (src / "derivatives/biometry/sub-007/anat").mkdir(parents=True)
    (src / "derivatives/biometry/sub-007/anat/sub-007_rec-mial_meas.nii.gz").write_bytes(
        (src / "derivatives/biometry/sub-001/anat/sub-001_rec-mial_meas.nii.gz").read_bytes())
    dst = feta.convert(src, tmp_path / "out", seed=5)
    dataset, _ = check_dataset(dst, expected)
    assert dataset["landmarks"][:4] == ["LCC_1", "LCC_2", "HV_1", "HV_2"]
    assert dataset["biometry"]["LCC"] == ["LCC_1", "LCC_2"]
    assert ["TCD_1", "TCD_2"] in dataset["pairs"] and ["HV_1", "HV_2"] not in dataset["pairs"]
    notes = json.loads((dst / "conversion_notes.json").read_text())
    assert notes["strata"]["sub-001_rec-mial"] == "mial|Neurotypical"
    assert list(notes["skipped"]) == ["sub-007_rec-mial"] and "transform" in notes["skipped"]["sub-007_rec-mial"]
    length_warnings = [w for w in notes["warnings"] if "biometry.tsv" in w]
    assert len(length_warnings) == 1 and length_warnings[0].startswith("sub-002_rec-mial: HV")


def test_feta_three_regions_is_an_error(tmp_path):
    rng = np.random.default_rng(5)
    case, _, _ = feta_case(tmp_path / "src", "sub-001", "mial", rng)
    meas = tmp_path / "src" / "derivatives/biometry/sub-001/anat" / f"{case}_meas.nii.gz"
    image = sitk.ReadImage(str(meas))
    array = sitk.GetArrayFromImage(image)
    array[11, 12, 13] = FETA_LABELS["HV"]  # a third, isolated HV mark
    fixed = sitk.GetImageFromArray(array)
    fixed.CopyInformation(image)
    sitk.WriteImage(fixed, str(meas))
    with pytest.raises(ConversionError, match=r"meas\.nii\.gz: measurement HV \(label 2\) has 3 voxel"):
        feta.convert(tmp_path / "src", tmp_path / "out")


# ------------------------------------------------------------------ LFC
#
# Sources: the benchmark's reference code, github.com/lhaof/LFC (dataloader.py: <root>/<mode>/
# <case>.nii.gz and <root>/<mode>_label/<case>/ with six files sorted by
# int(name.split('.')[0].split('_')[-1]) = CBD, BBD, TCD, FOD, HDV, ADV, each read as
# markups[0].controlPoints[*].position (start, end) and markups[0].measurements[0].value;
# train_3d.py: modes train, valid, test; gestational_age_samples.csv: cases 001..300) and the
# nnLandmark conversion of the released files (github.com/MIC-DKFZ/nnLandmark,
# dataset_conversion/nnLandmark/Dataset737_DMGLD_LFC: *.mrk.json Slicer markups,
# coordinateSystem read with LPS as default, split folders train/valid, unpadded case numbers).
# UNVERIFIED: the prefix of the annotation file names (only "_<n>.mrk.json" is published through
# the loaders), the Slicer markups version and whether real files are LPS or RAS (both tested).

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
    for i in range(1, 6):
        expected[f"{i:03d}"] = lfc_case(src, "train", f"{i:03d}", rng, ras=i % 2 == 1)
    expected["121"] = lfc_case(src, "valid", "121", rng)
    for i in range(181, 183):
        expected[str(i)] = lfc_case(src, "test", str(i), rng)
    lfc_case(src, "train", "099", rng, n_files=5)  # incomplete: skipped like the reference loader
    dst = lfc.convert(src, tmp_path / "out", seed=2)
    dataset, splits = check_dataset(dst, expected)
    assert dataset["landmarks"] == lfc.NAMES and len(dataset["landmarks"]) == 12
    assert splits == {"train": ["001", "002", "003", "004", "005"], "val": ["121"], "test": ["181", "182"]}
    notes = json.loads((dst / "conversion_notes.json").read_text())
    assert "099" in notes["skipped"] and notes["warnings"] == ["skipped 099: 5 annotation files, expected 6"]


def test_lfc_dgmld_copy_without_test_folder(tmp_path):
    rng = np.random.default_rng(16)
    src = tmp_path / "DMGLD_dataset" / "LFC_dataset"
    expected = {c: lfc_case(src, "train", c, rng) for c in ("1", "10", "101")}
    expected["1034"] = lfc_case(src, "valid", "1034", rng, ras=True)
    dst = lfc.convert(src, tmp_path / "out")
    _, splits = check_dataset(dst, expected)
    assert splits == {"train": ["1", "10", "101"], "val": ["1034"], "test": []}
    notes = json.loads((dst / "conversion_notes.json").read_text())
    assert any("no test/ folder" in w for w in notes["warnings"])


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
#
# Published form (README and code/data.py of github.com/daviddmc/fetal-pose): one folder of
# per-frame volumes per subject (<subject>/<subject>_0000.nii.gz ...) and <label_folder>/
# <subject>.mat holding joint_coord of shape (T, 3, 15): (x, y, z) 1-based with x along the
# second array axis and y along the first ("v(y, x, z)" in MATLAB); keypoints 1..15 = ankle L/R,
# knee L/R, bladder, elbow L/R, eye L/R, hip L/R, shoulder L/R, wrist L/R.
# UNVERIFIED: how the .mat marks a keypoint that is not visible (NaN is used here).
# The per-frame JSON form is the one of our brief; the nnLandmark scripts (github.com/MIC-DKFZ/
# nnLandmark, Dataset734_Fetal_pose, Dataset739_Fposev2) read a similar, unpublished copy:
# volumes/<case>.nii.gz + landmark_anno/<case>_landmark.json with "landmarks" (name -> index
# into the nibabel array, painted at seg[x, y, z]), a scalar "spacing" and "spacing_unit".
# UNVERIFIED: the keypoint names used in those JSON files.


def release_subject(data, labels, subject, rng, n_frames=3, missing=((1, "bladder"),)):
    """One subject in the release's form; returns ``{case: {keypoint: LPS or None}}``."""
    coords = np.zeros((n_frames, 3, 15))
    expected = {}
    for t in range(n_frames):
        frame = data / subject / f"{subject}_{t:04d}.nii.gz"
        grid = write_image(frame, size=(12, 10, 8), spacing=(3.0, 3.0, 3.0), origin=(10.0, 10.0, -30.0),
                           direction=oblique_direction(-0.4))
        itk = rng.integers(0, (12, 10, 8), size=(15, 3)).astype(float)  # (i, j, k), 0-based
        coords[t, 0] = itk[:, 1] + 1  # x: second array axis, 1-based
        coords[t, 1] = itk[:, 0] + 1  # y: first array axis
        coords[t, 2] = itk[:, 2] + 1
        points = {k: index_to_world(row, grid) for k, row in zip(fetal_pose.KEYPOINTS, itk)}
        for frame_t, name in missing:
            if frame_t == t:
                coords[t, :, fetal_pose.KEYPOINTS.index(name)] = np.nan
                points[name] = None
        expected[f"{subject}_{t:04d}"] = points
    labels.mkdir(parents=True, exist_ok=True)
    savemat(labels / f"{subject}.mat", {"joint_coord": coords})
    return expected


def test_fetal_pose_release_form(tmp_path):
    rng = np.random.default_rng(10)
    src = tmp_path / "fetal-pose"
    expected = {}
    for s in range(4):
        expected.update(release_subject(src / "data_folder", src / "label_folder", f"MAP-C50{s}", rng))
    dst = fetal_pose.convert(src, tmp_path / "out", seed=1)
    dataset, splits = check_dataset(dst, expected)
    assert dataset["landmarks"] == list(fetal_pose.KEYPOINTS) and len(dataset["pairs"]) == 7
    assert read_landmarks(dst / "landmarks" / "MAP-C500_0001.json").status("bladder") == "unknown"
    where = {c: k for k, v in splits.items() for c in v}
    for s in range(4):
        assert len({where[f"MAP-C50{s}_{t:04d}"] for t in range(3)}) == 1


def test_fetal_pose_release_axes_match_matlab_indexing(tmp_path):
    """v(y, x, z) in MATLAB (1-based, x and y swapped) is the voxel the converter places the point on."""
    src = tmp_path / "release"
    array = np.zeros((7, 9, 11), np.int16)  # SimpleITK order (k, j, i); nibabel/MATLAB order is (i, j, k)
    array[5, 2, 8] = 1000                   # nibabel v[8, 2, 5] -> MATLAB v(9, 3, 6) -> y=9, x=3, z=6
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((2.0, 2.5, 3.0))
    (src / "data" / "s1").mkdir(parents=True)
    sitk.WriteImage(image, str(src / "data" / "s1" / "s1_0000.nii.gz"))
    coords = np.full((1, 3, 15), np.nan)
    coords[0, :, 0] = (3, 9, 6)             # ankle_l: x=3, y=9, z=6
    (src / "labels").mkdir()
    savemat(src / "labels" / "s1.mat", {"joint_coord": coords})
    dst = fetal_pose.convert(src, tmp_path / "out")
    point = read_landmarks(dst / "landmarks" / "s1_0000.json").point("ankle_l")
    written = sitk.ReadImage(str(dst / "images" / "s1_0000.nii.gz"))
    assert written[written.TransformPhysicalPointToIndex(point.tolist())] == 1000


def test_fetal_pose_release_frame_count_mismatch(tmp_path):
    rng = np.random.default_rng(11)
    release_subject(tmp_path / "src" / "data", tmp_path / "src" / "labels", "s2", rng, n_frames=2)
    (tmp_path / "src" / "data" / "s2" / "s2_0001.nii.gz").unlink()
    with pytest.raises(ConversionError, match=r"s2\.mat: joint_coord has 2 frames but .* has 1"):
        fetal_pose.convert(tmp_path / "src", tmp_path / "out")


def test_fetal_pose_json_in_separate_annotation_folder(tmp_path):
    rng = np.random.default_rng(12)
    src = tmp_path / "pose_dataset"
    expected = {}
    for case in ("flp_0810_262", "flp_0811_263"):
        grid = write_image(src / "volumes" / f"{case}.nii.gz", size=(12, 10, 8), spacing=(1.0, 1.0, 1.0),
                           origin=(0.0, 0.0, 0.0))
        index = rng.uniform(0, 7, size=(15, 3))
        true = ImageGrid(size=grid.size, spacing=(2.0, 2.0, 2.0), origin=grid.origin, direction=grid.direction)
        expected[case] = {k: index_to_world(r, true) for k, r in zip(fetal_pose.KEYPOINTS, index)}
        doc = {"landmarks": {k: list(map(float, r)) for k, r in zip(fetal_pose.KEYPOINTS, index)},
               "spacing": 2.0, "spacing_unit": "mm"}
        (src / "landmark_anno").mkdir(exist_ok=True)
        (src / "landmark_anno" / f"{case}_landmark.json").write_text(json.dumps(doc))
    dst = fetal_pose.convert(src, tmp_path / "out")
    check_dataset(dst, expected)
    np.testing.assert_allclose(sitk.ReadImage(str(dst / "images" / "flp_0810_262.nii.gz")).GetSpacing(),
                               (2.0, 2.0, 2.0))
    doc["spacing_unit"] = "cm"
    (src / "landmark_anno" / "flp_0811_263_landmark.json").write_text(json.dumps(doc))
    with pytest.raises(ConversionError, match="spacing_unit 'cm' is not mm"):
        fetal_pose.convert(src, tmp_path / "out2")


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


# ------------------------------------------------------------------ ISBI 2015 cephalometric
#
# Published layout (the challenge's release, as described by Wang et al. 2016 and read by the
# public loaders, e.g. github.com/christianpayer/MedicalDataAugmentationTool-HeatmapRegression):
# RawImage/{TrainingData,Test1Data,Test2Data}/NNN.bmp, AnnotationsByMD/{400_senior,400_junior}/
# NNN.txt with 19 lines "x,y" (integer pixels: x column, y row, 0.1 mm per pixel) in the paper's
# landmark order. The real release's images are 1935 x 2400 grey BMPs; the fixture's are 30 x 40.

ISBI_SIZE = (30, 40)  # (columns, rows)
ISBI_FOLDERS = {"TrainingData": ("001", "002", "003"), "Test1Data": ("151", "152"), "Test2Data": ("301",)}


def isbi_fixture(src, suffix=".png", rgb=False, extra_lines=("1", "2")):
    """The challenge layout under ``src``; returns {case: {"senior": (19, 2), "junior": (19, 2)}} pixels.

    Each image is dark with one bright pixel at each senior landmark, so that a
    point's pixel can be looked up in the converted image."""
    rng = np.random.default_rng(19)
    truth = {}
    for folder, cases in ISBI_FOLDERS.items():
        for case in cases:
            senior = np.stack([rng.integers(0, ISBI_SIZE[0], 19), rng.integers(0, ISBI_SIZE[1], 19)], axis=1)
            junior = np.clip(senior + rng.integers(-3, 4, senior.shape), 0, np.array(ISBI_SIZE) - 1)
            truth[case] = {"senior": senior, "junior": junior}
            array = np.full(ISBI_SIZE[::-1], 20, np.uint8)  # rows, columns
            array[senior[:, 1], senior[:, 0]] = 250
            image = sitk.Compose(*[sitk.GetImageFromArray(array)] * 3) if rgb else sitk.GetImageFromArray(array)
            path = src / "RawImage" / folder / f"{case}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(image, str(path))
            for doctor, xy in truth[case].items():
                txt = src / "AnnotationsByMD" / f"400_{doctor}" / f"{case}.txt"
                txt.parent.mkdir(parents=True, exist_ok=True)
                txt.write_text("".join(f"{x},{y}\r\n" for x, y in xy) + "".join(f"{v}\r\n" for v in extra_lines))
    return truth


def test_isbi2015_challenge_layout_mean_of_the_doctors(tmp_path):
    from nnlandmark.data.convert import isbi2015
    from nnlandmark.data.dataset import load_dataset
    src = tmp_path / "ISBI2015"
    truth = isbi_fixture(src)
    before = tree_digest(src)
    dst = run_converter("isbi2015", src, tmp_path / "out")
    assert tree_digest(src) == before
    assert sorted(p.name for p in dst.iterdir()) == ["conversion_notes.json", "test1", "test2", "train"]
    for name, (folder, split) in zip(("train", "test1", "test2"), [("TrainingData", "train"),
                                                                  ("Test1Data", "test"), ("Test2Data", "test")]):
        cases = ISBI_FOLDERS[folder]
        mean_mm = {c: {n: [*(0.05 * (truth[c]["senior"][k] + truth[c]["junior"][k])), 0.0]
                       for k, n in enumerate(isbi2015.NAMES)} for c in cases}
        dataset, splits = check_dataset(dst / name, mean_mm)
        assert splits[split] == list(cases) and sum(map(len, splits.values())) == len(cases)
        assert dataset["landmarks"][:3] == ["sella", "nasion", "orbitale"]
        assert dataset["landmarks"][-1] == "articulare" and len(dataset["landmarks"]) == 19
        assert dataset["spacing"] == [0.1, 0.1]
        for case in cases:  # pictures copied byte for byte
            assert (dst / name / "images" / f"{case}.png").read_bytes() == \
                (src / "RawImage" / folder / f"{case}.png").read_bytes()
            for doctor in ("senior", "junior"):
                lm = read_landmarks(dst / name / "doctors" / doctor / f"{case}.json")
                np.testing.assert_allclose(lm.as_array(isbi2015.NAMES)[:, :2], 0.1 * truth[case][doctor])
                np.testing.assert_array_equal(lm.as_array(isbi2015.NAMES)[:, 2], 0.0)
    # each converted set is a dataset nnlandmark reads, with the 0.1 mm pixels
    train = load_dataset(dst / "train", progress=False)
    assert [c.case_id for c in train.cases] == ["001", "002", "003"]
    assert train.cases[0].grid.spacing == (0.1, 0.1, 1.0) and train.cases[0].grid.size == (30, 40, 1)
    notes = json.loads((dst / "conversion_notes.json").read_text())
    assert notes["ground_truth"] == "mean" and notes["verified_against_real_data"] is True
    assert notes["datasets"]["test2"]["cases"] == 1


def test_isbi2015_points_land_on_their_pixels(tmp_path):
    """Pixel (x, y) of an annotation file -> world mm -> the same pixel of the converted image."""
    from nnlandmark.data.convert import isbi2015
    from nnlandmark.data.dataset import load_dataset
    src = tmp_path / "src"
    truth = isbi_fixture(src, suffix=".bmp", rgb=True)
    dst = isbi2015.convert(src, tmp_path / "out", ground_truth="senior")
    case = load_dataset(dst / "test1", progress=False).cases[1]
    image = case.read_image()
    assert (dst / "test1" / "images" / "152.png").is_file()
    assert image.GetNumberOfComponentsPerPixel() == 1 and image.GetPixelID() == sitk.sitkUInt8  # grey, exact
    for k, name in enumerate(isbi2015.NAMES):
        index = world_to_index(case.landmarks.point(name), case.grid)
        np.testing.assert_allclose(index, [*truth["152"]["senior"][k], 0.0], atol=1e-9)
        assert image[int(round(index[0])), int(round(index[1])), 0] == 250


@pytest.mark.parametrize("doctor, suffix", [("senior", ".jpg"), ("junior", ".jpeg")])
def test_isbi2015_one_doctor_as_ground_truth(tmp_path, doctor, suffix):
    from nnlandmark.data.convert import isbi2015
    src = tmp_path / "src"
    truth = isbi_fixture(src, suffix=suffix, extra_lines=())
    dst = run_converter("isbi2015", src, tmp_path / "out", ground_truth=doctor)
    lm = read_landmarks(dst / "train" / "landmarks" / "002.json")
    np.testing.assert_allclose(lm.as_array(isbi2015.NAMES)[:, :2], 0.1 * truth["002"][doctor])
    assert sorted(p.name for p in (dst / "train" / "images").iterdir()) == ["001.jpg", "002.jpg", "003.jpg"]
    # JPEG is copied byte for byte (never decoded and encoded again), whichever its spelling
    assert (dst / "train" / "images" / "002.jpg").read_bytes() == \
        (src / "RawImage" / "TrainingData" / f"002{suffix}").read_bytes()
    assert json.loads((dst / "conversion_notes.json").read_text())["ground_truth"] == doctor


def test_isbi2015_from_the_command_line(tmp_path, capsys):
    from nnlandmark.cli import main
    src = tmp_path / "src"
    isbi_fixture(src)
    assert main(["convert", "isbi2015", str(src), str(tmp_path / "out"), "--ground-truth", "junior"]) == 0
    assert json.loads((tmp_path / "out" / "conversion_notes.json").read_text())["ground_truth"] == "junior"
    capsys.readouterr()
    assert main(["convert", "afids", str(src), str(tmp_path / "o2"), "--ground-truth", "senior"]) == 2
    assert "--ground-truth: not an option of the afids converter" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_isbi2015_malformed(tmp_path):
    from nnlandmark.data.convert import isbi2015
    src = tmp_path / "src"
    isbi_fixture(src)
    with pytest.raises(ConversionError, match="--ground-truth: 'median'"):
        isbi2015.convert(src, tmp_path / "o1", ground_truth="median")
    # a missing junior file: that case is skipped for the mean, kept for the senior doctor
    (src / "AnnotationsByMD" / "400_junior" / "002.txt").unlink()
    dst = isbi2015.convert(src, tmp_path / "o2")
    notes = json.loads((dst / "train" / "conversion_notes.json").read_text())
    assert list(notes["skipped"]) == ["002"] and "400_junior/002.txt" in notes["skipped"]["002"]
    assert json.loads((dst / "train" / "splits.json").read_text())["train"] == ["001", "003"]
    assert sorted(p.name for p in (isbi2015.convert(src, tmp_path / "o3", ground_truth="senior")
                                   / "train" / "landmarks").iterdir()) == ["001.json", "002.json", "003.json"]
    # 18 points, or a point that is not two numbers: refused naming the file and line, nothing left behind
    txt = src / "AnnotationsByMD" / "400_senior" / "151.txt"
    lines = txt.read_text().splitlines()
    txt.write_text("\n".join(lines[:18]) + "\n")
    with pytest.raises(ConversionError, match=r"151\.txt: 18 'x,y' lines, expected 19"):
        isbi2015.convert(src, tmp_path / "o4")
    assert not (tmp_path / "o4").exists()
    txt.write_text("\n".join(lines[:5] + ["12;40"] + lines[6:]) + "\n")
    with pytest.raises(ConversionError, match=r"151\.txt: line 6 is '12;40'"):
        isbi2015.convert(src, tmp_path / "o5")
    with pytest.raises(ConversionError, match="expected the challenge layout"):
        isbi2015.convert(src / "RawImage", tmp_path / "o6")


# ------------------------------------------------------------------ registry

def test_registry(tmp_path):
    assert set(CONVERTERS) == {"afids", "mml", "pddca", "feta", "lfc", "fetal-pose", "isbi2015"}
    with pytest.raises(ValueError, match="known: afids"):
        run_converter("isbi2099", tmp_path, tmp_path / "o")
    with pytest.raises(ConversionError, match="does not exist"):
        run_converter("lfc", tmp_path / "nowhere", tmp_path / "o")
