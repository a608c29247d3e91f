"""Bad-input catalogue: every wrong input is refused by the CLI with a clear ``error:`` line.

Each case runs ``nnlandmark.cli.main`` in-process and checks that

- the exit code is 2 (a user error, not a traceback),
- one ``error:`` line on stderr names the offending file and the problem,
- nothing the user owns changed (every file hashed before and after) and no
  project or output folder appeared.

Dataset problems go through ``nnlandmark check`` (validation only, fast); a few
go through ``prepare`` to show that it writes nothing before validation passes.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REFUSALS
from nnlandmark.cli import main

# 5 cases: enough for 5-fold cross-validation, so a clean copy passes `check` without a warning
N_CASES = 5


# --------------------------------------------------------------------------- helpers

def snapshot(*roots) -> dict:
    """SHA-256 of every file (and the set of folders) under ``roots``; a missing root maps to None."""
    state = {}
    for root in map(Path, roots):
        if not root.exists():
            state[str(root)] = None
            continue
        for path in sorted([root, *root.rglob("*")]):
            state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return state


def error_lines(stderr: str) -> list:
    """The ``error:`` lines of captured stderr; progress bars redraw with carriage returns."""
    lines = [segment.split("\r")[-1] for segment in stderr.splitlines()]
    return [line for line in lines if line.startswith("error: ")]


def assert_refused(capsys, argv, *expected, watched=(), absent=()) -> list:
    """Run the CLI and check it fails cleanly.

    ``expected`` are tuples of substrings that must all appear in one error line
    (a file name and the problem); ``watched`` paths must be byte-identical
    afterwards; ``absent`` paths must not have been created.
    """
    before = snapshot(*watched)
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    errors = error_lines(err)
    assert rc == 2, err  # a bug would have raised out of main() instead (test_a_bug_keeps_its_traceback)
    assert errors, err
    test_id = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" (", 1)[0].split("::", 1)[-1]
    REFUSALS.append((test_id, [str(a) for a in argv], errors))  # for pytest --error-catalogue FILE
    for needles in expected:
        assert any(all(n in line for n in needles) for line in errors), (needles, errors)
    assert snapshot(*watched) == before
    for path in absent:
        assert not Path(path).exists(), path
    return errors


@pytest.fixture(scope="module")
def clean_dataset(tmp_path_factory) -> Path:
    """A valid 5-case dataset with MetaImage files, whose text headers are easy to corrupt by hand."""
    from nnlandmark.data.synthetic import make_synthetic_dataset
    return make_synthetic_dataset(tmp_path_factory.mktemp("bad") / "clean", n_cases=N_CASES, seed=3,
                                  shape=(40, 40, 40), spacing=(4.0, 4.0, 4.0), file_ending=".mha")


@pytest.fixture
def dataset(clean_dataset, tmp_path) -> Path:
    return Path(shutil.copytree(clean_dataset, tmp_path / "data"))


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))  # json.dumps writes NaN / Infinity literals as Python's json reads them


def _set_point(name, value):
    return lambda d: d["landmarks"].__setitem__(name, value)


def _edit_header(path: Path, key: str, value: str) -> None:
    """Replace one ``key = value`` line of a MetaImage header (SimpleITK refuses to write such values)."""
    data = path.read_bytes()
    start = data.index(key.encode())
    end = data.index(b"\n", start)
    path.write_bytes(data[:start] + f"{key} = {value}".encode() + data[end:])


def _convert_images(ds: Path, ending: str) -> None:
    """Rewrite every image with another file ending (the dataset must use one ending)."""
    for f in sorted((ds / "images").glob("*.mha")):
        sitk.WriteImage(sitk.ReadImage(str(f)), str(f.with_name(f.name[:-4] + ending)))
        f.unlink()


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# --------------------------------------------------------------------------- dataset checks

DATASET_CASES = {
    "missing image": (lambda ds: (ds / "images/case_001.mha").unlink(),
                      [("landmarks/case_001.json", "has no image")]),
    "missing landmark file": (lambda ds: (ds / "landmarks/case_002.json").unlink(),
                              [("images/case_002.mha", "has no landmark file")]),
    "case id mismatch": (lambda ds: (ds / "landmarks/case_003.json").rename(ds / "landmarks/case_03.json"),
                         [("landmarks/case_03.json", "has no image"),
                          ("images/case_003.mha", "has no landmark file")]),
    "landmark names differ between cases": (
        lambda ds: _edit_json(ds / "landmarks/case_001.json",
                              lambda d: d["landmarks"].__setitem__("top", d["landmarks"].pop("vertex"))),
        [("landmarks/case_001.json", "differ from dataset.json", "'vertex'", "'top'")]),
    "NaN coordinate": (lambda ds: _edit_json(ds / "landmarks/case_000.json",
                                             _set_point("nose_tip", [float("nan"), 0.0, 0.0])),
                       [("landmarks/case_000.json", "'nose_tip'", "not finite")]),
    "infinite coordinate": (lambda ds: _edit_json(ds / "landmarks/case_000.json",
                                                  _set_point("left_eye", [0.0, float("inf"), 0.0])),
                            [("landmarks/case_000.json", "'left_eye'", "not finite")]),
    "non-numeric coordinate": (lambda ds: _edit_json(ds / "landmarks/case_004.json",
                                                     _set_point("vertex", ["12a", 0.0, 0.0])),
                               [("landmarks/case_004.json", "'vertex'", "non-numeric coordinate '12a'")]),
    "two coordinates on a 3D image": (
        lambda ds: _edit_json(ds / "landmarks/case_004.json", _set_point("vertex", [1.0, 2.0])),
        [("landmarks/case_004.json", "'vertex'", "2 coordinates, but the image is 3D")]),
    "one coordinate": (lambda ds: _edit_json(ds / "landmarks/case_004.json", _set_point("vertex", [1.0])),
                       [("landmarks/case_004.json", "'vertex'", "expected 3 coordinates")]),
    "non-numeric coordinate in a CSV": (
        lambda ds: ((ds / "landmarks/case_002.json").unlink(),
                    (ds / "landmarks/case_002.csv").write_text("name,x,y,z\nnose_tip,1,abc,3\n")),
        [("landmarks/case_002.csv", "'nose_tip'", "non-numeric coordinate 'abc'")]),
    "landmark outside the image": (lambda ds: _edit_json(ds / "landmarks/case_000.json",
                                                         _set_point("nose_tip", [500.0, 0.0, 0.0])),
                                   [("landmarks/case_000.json", "'nose_tip'", "outside its image")]),
    "unknown coordinate system": (
        lambda ds: _edit_json(ds / "landmarks/case_001.json", lambda d: d.__setitem__("coordinate_system", "IJK")),
        [("landmarks/case_001.json", "unknown coordinate system 'IJK'")]),
    "unknown coordinate system in an fcsv": (
        lambda ds: ((ds / "landmarks/case_001.json").unlink(),
                    (ds / "landmarks/case_001.fcsv").write_text(
                        "# CoordinateSystem = 2\n# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,"
                        "associatedNodeID\n1,0,0,0,0,0,0,1,1,1,0,nose_tip,,\n")),
        [("landmarks/case_001.fcsv", "unknown coordinate system '2'")]),
    "duplicate landmark names in a file": (
        lambda ds: (ds / "landmarks/case_002.json").write_text(
            '{"landmarks": {"nose_tip": [0, 0, 0], "nose_tip": [1, 1, 1]}}'),
        [("landmarks/case_002.json", "duplicate", "'nose_tip'")]),
    "duplicate landmark names in a CSV": (
        lambda ds: ((ds / "landmarks/case_002.json").unlink(),
                    (ds / "landmarks/case_002.csv").write_text("name,x,y,z\na,1,2,3\na,1,2,4\n")),
        [("landmarks/case_002.csv", "duplicate landmark name 'a'")]),
    "duplicate landmark names in dataset.json": (
        lambda ds: _edit_json(ds / "dataset.json", lambda d: d["landmarks"].append("vertex")),
        [("dataset.json", "duplicate landmark names ['vertex']")]),
    "dataset.json missing": (lambda ds: (ds / "dataset.json").unlink(), [("dataset.json", "not found")]),
    "dataset.json holds a list": (lambda ds: (ds / "dataset.json").write_text("[1, 2]"),
                                  [("dataset.json", "must hold a JSON object", "not a list")]),
    "pairs of numbers": (lambda ds: _edit_json(ds / "dataset.json", lambda d: d.__setitem__("pairs", [1, 2])),
                         [("dataset.json", "pair 1 must name two landmarks"),
                          ("dataset.json", "pair 2 must name two landmarks")]),
    "pairs not a list": (lambda ds: _edit_json(ds / "dataset.json", lambda d: d.__setitem__("pairs", "a,b")),
                         [("dataset.json", "'pairs' must be a list")]),
    "biometry of a number": (lambda ds: _edit_json(ds / "dataset.json", lambda d: d.__setitem__("biometry", {"ab": 5})),
                             [("dataset.json", "biometry 'ab' must name two landmarks", "got 5")]),
    "biometry a list": (lambda ds: _edit_json(ds / "dataset.json",
                                              lambda d: d.__setitem__("biometry", [["nose_tip", "vertex"]])),
                        [("dataset.json", "'biometry' must map each measurement")]),
    "dataset.json not JSON": (lambda ds: (ds / "dataset.json").write_text("{landmarks: [a]"),
                              [("dataset.json", "not valid JSON")]),
    "2D image among 3D ones": (
        lambda ds: sitk.WriteImage(sitk.Image(40, 40, sitk.sitkFloat32), str(ds / "images/case_001.mha")),
        [("images/case_001.mha", "a 2D image in a dataset of 3D images", "either 2D or 3D")]),
    "4D image": (lambda ds: sitk.WriteImage(sitk.Image([40, 40, 40, 2], sitk.sitkFloat32),
                                            str(ds / "images/case_001.mha")),
                 [("images/case_001.mha", "expected a 2D or 3D image, got 4D")]),
    "one voxel thick along x": (
        lambda ds: sitk.WriteImage(sitk.Image([1, 40, 40], sitk.sitkFloat32), str(ds / "images/case_001.mha")),
        [("images/case_001.mha", "neither a 3D volume nor a 2D image")]),
    "picture spacing for MetaImage files": (
        lambda ds: _edit_json(ds / "dataset.json", lambda d: d.__setitem__("spacing", 0.5)),
        [("dataset.json", "'spacing' is for PNG/JPEG images only", "carries its own")]),
    "vector image": (lambda ds: sitk.WriteImage(sitk.Compose([sitk.Image(40, 40, 40, sitk.sitkFloat32)] * 2),
                                                str(ds / "images/case_003.mha")),
                     [("images/case_003.mha", "expected a scalar image, got 2 components")]),
    "truncated MetaImage": (lambda ds: _truncate(ds / "images/case_002.mha"),
                            [("images/case_002.mha", "truncated or corrupt")]),
    "truncated NIfTI (ITK reads it without complaint)": (
        lambda ds: (_convert_images(ds, ".nii.gz"), _truncate(ds / "images/case_004.nii.gz")),
        [("images/case_004.nii.gz", "truncated")]),
    "truncated uncompressed NIfTI": (
        lambda ds: (_convert_images(ds, ".nii"), _truncate(ds / "images/case_004.nii")),
        [("images/case_004.nii", "truncated")]),
    "not an image": (lambda ds: (ds / "images/case_000.mha").write_bytes(b"\x00garbage" * 64),
                     [("images/case_000.mha", "cannot read image header")]),
    "zero spacing (MetaImage header)": (lambda ds: _edit_header(ds / "images/case_001.mha", "ElementSpacing", "4 0 4"),
                                        [("images/case_001.mha", "spacing must be positive", "0.0")]),
    "negative spacing (MetaImage header)": (
        lambda ds: _edit_header(ds / "images/case_001.mha", "ElementSpacing", "4 -4 4"),
        [("images/case_001.mha", "spacing must be positive", "-4.0")]),
    "zero spacing (NRRD header)": (
        lambda ds: (_convert_images(ds, ".nrrd"),
                    _edit_nrrd(ds / "images/case_003.nrrd", "space directions", "(4,0,0) (0,0,0) (0,0,4)")),
        [("images/case_003.nrrd", "spacing must be positive")]),
    "non-orthonormal direction": (
        lambda ds: _edit_header(ds / "images/case_002.mha", "TransformMatrix", "1 0 0 1 1 0 0 0 1"),
        [("images/case_002.mha", "direction matrix is not orthonormal")]),
    "mixed image types": (lambda ds: (sitk.WriteImage(sitk.ReadImage(str(ds / "images/case_000.mha")),
                                                      str(ds / "images/case_000.nrrd")),
                                      (ds / "images/case_000.mha").unlink()),
                          [("images", "mixed image file types")]),
    "stray file in images": (lambda ds: (ds / "images/notes.txt").write_text("x"),
                             [("images/notes.txt", "not a recognised image file")]),
    "channel files missing": (lambda ds: _edit_json(ds / "dataset.json",
                                                    lambda d: d.__setitem__("channels", ["T1", "T2"])),
                              [("images/case_000.mha", "2 channels expected", "<case>_0000.mha")]),
    "empty dataset": (lambda ds: [f.unlink() for sub in ("images", "landmarks") for f in (ds / sub).iterdir()],
                      [("data", "empty dataset")]),
    "no landmarks folder": (lambda ds: shutil.rmtree(ds / "landmarks"),
                            [("data/landmarks", "folder not found")]),
    "DICOM series with a missing slice": (
        lambda ds: (_dicom_case(ds) / "slice_0005.dcm").unlink(),
        [("images/case_001", "not evenly spaced", "slice_0004.dcm and slice_0006.dcm", "a missing slice")]),
    "DICOM series with a duplicate slice position": (
        lambda ds: _move_slice(_dicom_case(ds) / "slice_0005.dcm", z_slices=-1),
        [("images/case_001", "slice_0004.dcm and slice_0005.dcm have the same position")]),
    "DICOM series with mixed orientations": (
        lambda ds: _move_slice(_dicom_case(ds) / "slice_0005.dcm", tilt=True),
        [("images/case_001", "different orientations", "slice_0005.dcm")]),
}


def _dicom_case(ds: Path) -> Path:
    """case_001's image replaced by a DICOM series folder (one file per slice)."""
    from nnlandmark.data.images import write_dicom_series
    image = ds / "images/case_001.mha"
    volume = sitk.Cast(sitk.RescaleIntensity(sitk.ReadImage(str(image)), 0, 1000), sitk.sitkInt16)
    image.unlink()
    return write_dicom_series(volume, ds / "images/case_001")


def _move_slice(path: Path, z_slices: int = 0, tilt: bool = False) -> None:
    """Rewrite one slice of a series ``z_slices`` slices further along z, or with a tilted orientation."""
    plane = sitk.ReadImage(str(path))
    position = [float(v) for v in plane.GetMetaData("0020|0032").split("\\")]
    position[2] += z_slices * 4.0  # the clean dataset's spacing
    plane.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in position))
    if tilt:
        plane.SetMetaData("0020|0037", "1\\0\\0\\0\\0.8\\0.6")
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(path))
    writer.Execute(plane)


def _edit_nrrd(path: Path, key: str, value: str) -> None:
    """Replace one ``key: value`` line of an NRRD header (the header is text up to a blank line)."""
    data = path.read_bytes()
    start = data.index(key.encode() + b":")
    end = data.index(b"\n", start)
    path.write_bytes(data[:start] + f"{key}: {value}".encode() + data[end:])


@pytest.mark.parametrize("problem", list(DATASET_CASES))
def test_check_refuses(problem, dataset, capsys):
    mutate, expected = DATASET_CASES[problem]
    mutate(dataset)
    assert_refused(capsys, ["check", dataset], *expected, watched=[dataset])


def test_check_accepts_clean_dataset_and_writes_nothing(dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may appear in the working folder either
    before = snapshot(tmp_path)
    assert main(["check", str(dataset)]) == 0
    assert f"OK, {N_CASES} cases, 6 landmarks" in capsys.readouterr().out
    assert snapshot(tmp_path) == before


def test_check_warns_when_too_few_cases_for_cross_validation(dataset, capsys):
    for case in ("case_003", "case_004"):
        (dataset / "images" / f"{case}.mha").unlink()
        (dataset / "landmarks" / f"{case}.json").unlink()
    assert main(["check", str(dataset)]) == 0  # fine as a test set, so a warning only
    err = capsys.readouterr().err
    assert "warning:" in err and "3 cases" in err and "at least 5" in err


def test_case_ids_ending_in_digits_are_not_channels(dataset, capsys):
    """Single-channel ids like ``sub_0001`` stay whole (they once read as channel 1 of ``sub``)."""
    for sub in ("images", "landmarks"):
        for f in sorted((dataset / sub).iterdir()):
            f.rename(f.with_name(f.name.replace("case_00", "sub_000")))
    assert main(["check", str(dataset)]) == 0, capsys.readouterr().err


# --------------------------------------------------------------------------- prepare writes nothing

@pytest.mark.parametrize("problem", ["NaN coordinate", "zero spacing (MetaImage header)",
                                     "truncated MetaImage", "DICOM series with a missing slice"])
def test_prepare_writes_nothing_on_invalid_dataset(problem, dataset, tmp_path, capsys):
    mutate, expected = DATASET_CASES[problem]
    mutate(dataset)
    project = tmp_path / "projects" / "p"
    assert_refused(capsys, ["prepare", dataset, "-p", project], *expected, watched=[dataset],
                   absent=[tmp_path / "projects"])


def test_prepare_into_a_path_under_a_regular_file(dataset, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert_refused(capsys, ["prepare", dataset, "-p", blocker / "project"], ("a_file/project", "cannot be created", "a_file is a file"),
                   watched=[dataset, blocker])


def test_prepare_project_inside_dataset(dataset, capsys):
    assert_refused(capsys, ["prepare", dataset, "-p", dataset / "project"],
                   ("project", "must not be inside the dataset folder"), watched=[dataset],
                   absent=[dataset / "project"])


# --------------------------------------------------------------------------- train

@pytest.fixture
def project_copy(prepared_project, tmp_path) -> Path:
    """The prepared project without its trained models (so training starts clean)."""
    return Path(shutil.copytree(prepared_project, tmp_path / "project",
                                ignore=shutil.ignore_patterns("nnUNet_results")))


def test_train_refuses_fewer_cases_than_folds(project_copy, capsys):
    from nnlandmark.nnunet.planning import preprocessed_folder
    from nnlandmark.planning.project import Project
    project = Project.load(project_copy)
    folder = preprocessed_folder(project.folders, project.dataset_name, project.plans())
    keep = sorted(p.name[:-4] for p in folder.glob("*.pkl"))[:3]
    for f in folder.iterdir():
        if not any(f.name.startswith(case) for case in keep):
            f.unlink()
    (folder.parent / "splits_final.json").unlink(missing_ok=True)  # splits are made on first training
    assert_refused(capsys, ["train", project_copy, "--fold", "0", "--epochs", "1"],
                   ("3 prepared case(s)", "needs at least 5"), watched=[project_copy],
                   absent=[project_copy / "nnUNet_results"])


def test_train_refuses_splits_naming_missing_cases(project_copy, capsys):
    from nnlandmark.planning.project import Project
    project = Project.load(project_copy)
    splits = project.folders.preprocessed / project.dataset_name / "splits_final.json"
    splits.write_text(json.dumps([{"train": ["case_000", "ghost"], "val": ["case_001"]}]))
    assert_refused(capsys, ["train", project_copy, "--epochs", "1"],
                   ("splits_final.json", "not prepared", "ghost"), watched=[project_copy],
                   absent=[project_copy / "nnUNet_results"])
    assert_refused(capsys, ["train", project_copy, "--fold", "1", "--epochs", "1"],
                   ("splits_final.json", "no training cases for fold 1"), watched=[project_copy])


def test_train_bad_fold_and_missing_project(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(tmp_path), "--fold", "7"])
    assert exit_info.value.code == 2
    assert "--fold: expected 0, 1, 2, 3, 4 or 'all', got '7'" in capsys.readouterr().err
    assert_refused(capsys, ["train", tmp_path / "nowhere"], ("nowhere", "not an nnlandmark project"),
                   absent=[tmp_path / "nowhere"])


# --------------------------------------------------------------------------- predict

@pytest.fixture
def image(synthetic_dataset) -> Path:
    return synthetic_dataset / "images" / "case_000.nii.gz"


def _model_copy(model: Path, dst: Path, skip=()) -> Path:
    """A copy of a model folder's small files with its fold folders linked, not copied
    (the checks under test run before any checkpoint is read)."""
    dst.mkdir()
    for f in model.iterdir():
        if f.name in skip:
            continue
        if f.is_dir():
            os.symlink(f, dst / f.name)
        else:
            shutil.copy2(f, dst / f.name)
    return dst


def test_predict_model_missing_fold(tiny_model, image, tmp_path, capsys):
    out = tmp_path / "out"
    assert_refused(capsys, ["predict", "-i", image, "-o", out, "-m", tiny_model, "--folds", "0", "1"],
                   ("fold_1", "no checkpoint for fold 1"), watched=[tiny_model, image], absent=[out])


def test_predict_model_missing_plans(tiny_model, image, tmp_path, capsys):
    model = _model_copy(tiny_model, tmp_path / "model", skip={"plans.json"})
    out = tmp_path / "out"
    assert_refused(capsys, ["predict", "-i", image, "-o", out, "-m", model], ("model", "plans.json missing"),
                   watched=[model, image], absent=[out])


def test_predict_not_a_model_folder(image, tmp_path, capsys):
    out = tmp_path / "out"
    assert_refused(capsys, ["predict", "-i", image, "-o", out, "-m", tmp_path],
                   (str(tmp_path), "neither a model folder"), absent=[out])


def test_predict_wrong_channel_count(tiny_model, synthetic_dataset, tmp_path, capsys):
    model = _model_copy(tiny_model, tmp_path / "model")
    _edit_json(model / "nnlandmark.json", lambda d: d.__setitem__("channels", ["T1", "T2"]))
    out = tmp_path / "out"
    assert_refused(capsys, ["predict", "-i", synthetic_dataset / "images", "-o", out, "-m", model],
                   ("images/case_000.nii.gz", "2 channels expected"), watched=[synthetic_dataset],
                   absent=[out])


def test_predict_4d_input(tiny_model, tmp_path, capsys):
    four = tmp_path / "four.nii.gz"
    sitk.WriteImage(sitk.Image([12, 12, 12, 2], sitk.sitkFloat32), str(four))
    out = tmp_path / "out"
    assert_refused(capsys, ["predict", "-i", four, "-o", out, "-m", tiny_model],
                   ("four.nii.gz", "expected a 2D or 3D image, got 4D"), watched=[four], absent=[out])


def test_predict_missing_input(tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    assert_refused(capsys, ["predict", "-i", tmp_path / "nope.nii.gz", "-o", out, "-m", tiny_model],
                   ("nope.nii.gz", "no such file or folder"), absent=[out])


def test_predict_output_under_a_regular_file(tiny_model, image, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert_refused(capsys, ["predict", "-i", image, "-o", blocker / "out", "-m", tiny_model],
                   ("a_file/out", "cannot be created", "is a file"), watched=[blocker, image])


def test_predict_output_folder_read_only(tiny_model, image, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o500)
    try:
        try:  # root ignores permission bits: then there is nothing to test
            (out / "probe").write_text("")
        except PermissionError:
            pass
        else:
            pytest.skip("permission bits are not enforced for this user (root)")
        assert_refused(capsys, ["predict", "-i", image, "-o", out, "-m", tiny_model],
                       ("out", "output folder cannot be written"), watched=[out, image])
    finally:
        out.chmod(0o700)


def test_predict_refuses_existing_outputs(tiny_model, image, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", "-i", str(image), "-o", str(out), "-m", str(tiny_model)]) == 0
    assert_refused(capsys, ["predict", "-i", image, "-o", out, "-m", tiny_model],
                   ("out", "predictions exist", "--overwrite", "--continue"), watched=[out, image])


@pytest.mark.parametrize("flag", [[], ["--overwrite"], ["--continue"]])
def test_predict_never_replaces_a_file_it_did_not_write(tiny_model, image, tmp_path, capsys, flag):
    out = tmp_path / "out"
    out.mkdir()
    (out / "case_000.json").write_text('{"my": "own notes"}')
    assert_refused(capsys, ["predict", "-i", image, "-o", out, "-m", tiny_model, *flag],
                   ("case_000.json", "not written by nnlandmark predict"), watched=[out, image])


# --------------------------------------------------------------------------- evaluate and report

def test_report_and_evaluate_bad_paths(synthetic_dataset, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert_refused(capsys, ["evaluate", "-p", tmp_path / "nope", "-r", synthetic_dataset], ("nope",),
                   watched=[synthetic_dataset])
    predictions = tmp_path / "pred"
    predictions.mkdir()
    (predictions / "case_000.json").write_text(json.dumps(
        {"nose_tip": {"world_lps_mm": [0.0, 0.0, 0.0], "present": True}}))
    assert_refused(capsys, ["report", "-p", predictions, "-r", synthetic_dataset, "-o", blocker / "report"],
                   ("a_file/report", "cannot be created", "a_file is a file"), watched=[synthetic_dataset, predictions, blocker])
    assert_refused(capsys, ["evaluate", "-p", predictions, "-r", synthetic_dataset, "-o", blocker / "eval"],
                   ("a_file/eval", "cannot be created", "a_file is a file"), watched=[synthetic_dataset, predictions, blocker])


def _copy_image(src: Path, dst: Path, edit=None) -> Path:
    image = sitk.ReadImage(str(src), sitk.sitkFloat32)
    if edit is not None:
        array = sitk.GetArrayFromImage(image)
        edit(array)
        edited = sitk.GetImageFromArray(array)
        edited.CopyInformation(image)
        image = edited
    dst.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(dst))
    return dst


@pytest.mark.parametrize("edit, needle", [
    (lambda a: a.__setitem__((5, 6, 7), np.nan), "1 of"),
    (lambda a: a.fill(np.nan), "NaN or infinite"),
    (lambda a: a.__setitem__((0, 0, 0), np.inf), "NaN or infinite"),
])
def test_predict_refuses_non_finite_voxels(tiny_model, image, tmp_path, capsys, edit, needle):
    # MetaImage keeps NaN (SimpleITK reads NaN in NIfTI as 0, so a NIfTI input never shows one)
    bad = _copy_image(image, tmp_path / "in" / "nan_case.mha", edit)
    out = tmp_path / "out"
    assert_refused(capsys, ["predict", "-i", bad, "-o", out, "-m", tiny_model],
                   ("nan_case.mha", needle, "NaN or infinite"), watched=[bad], absent=[out])


def test_predict_refuses_a_truncated_image(tiny_model, image, tmp_path, capsys):
    whole = _copy_image(image, tmp_path / "whole.nii")
    cut = tmp_path / "in" / "cut.nii"
    cut.parent.mkdir()
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    out = tmp_path / "out"
    assert_refused(capsys, ["predict", "-i", cut, "-o", out, "-m", tiny_model], ("cut.nii", "truncated"),
                   watched=[cut], absent=[out])


def test_predict_refuses_two_inputs_with_one_case_name(tiny_model, image, tmp_path, capsys):
    a = _copy_image(image, tmp_path / "a" / "scan.nii.gz")
    b = _copy_image(image, tmp_path / "b" / "scan.nii.gz")
    out = tmp_path / "out"
    assert_refused(capsys, ["predict", "-i", a, b, "-o", out, "-m", tiny_model], ("scan.nii.gz", "case 'scan'"),
                   watched=[a, b], absent=[out])
    folder = tmp_path / "both"
    _copy_image(image, folder / "scan.nii.gz")
    _copy_image(image, folder / "scan.mha")
    assert_refused(capsys, ["predict", "-i", folder, "-o", out, "-m", tiny_model],
                   ("scan", "same case and channel"), watched=[folder], absent=[out])


# --------------------------------------------------------------------------- one message for many files

def _numbered_fcsv(path: Path, names, points) -> None:
    """An .fcsv as the AFIDs protocol publishes it: the index in ``label``, the name in ``desc``."""
    rows = [f"vtkMRMLMarkupsFiducialNode_{i},{-x},{-y},{z},0,0,0,1,1,1,0,{i},{name},vtkMRMLScalarVolumeNode1"
            for i, (name, (x, y, z)) in enumerate(zip(names, points), start=1)]
    path.write_text("# Markups fiducial file version = 4.6\n# CoordinateSystem = 0\n"
                    "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n"
                    + "\n".join(rows) + "\n")


def _to_numbered_fcsv(ds: Path) -> None:
    from nnlandmark.data.formats import read_landmarks
    names = json.loads((ds / "dataset.json").read_text())["landmarks"]
    for f in sorted((ds / "landmarks").glob("*.json")):
        points = read_landmarks(f).points
        _numbered_fcsv(f.with_suffix(".fcsv"), names, [points[n] for n in names])
        f.unlink()


def test_numbered_fcsv_files_are_named_by_their_descriptions(dataset, capsys):
    """AFIDs' own files put 1..32 in ``label`` and the names in ``desc``: they check as they are."""
    _to_numbered_fcsv(dataset)
    assert main(["check", str(dataset)]) == 0, capsys.readouterr().err


def test_the_same_name_mismatch_in_every_file_is_said_once(dataset, capsys):
    _edit_json(dataset / "dataset.json", lambda d: d.update(landmarks=[f"L{i}" for i in range(len(d["landmarks"]))],
                                                             pairs=[], biometry={}))
    errors = assert_refused(capsys, ["check", dataset],
                            ("case_000.json", f"and {N_CASES - 1} more landmark files", "differ from dataset.json",
                             "missing ['L0'"), watched=[dataset])
    assert len(errors) == 1, errors


# --------------------------------------------------------------------------- errors, bugs and Ctrl-C

def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
    """Only user errors become ``error:`` lines; a KeyError or ValueError from a bug propagates."""
    import nnlandmark.cli as cli
    for bug in (KeyError("landmarks"), ValueError("operands could not be broadcast"), TypeError("x")):
        def broken(args, bug=bug):
            raise bug
        monkeypatch.setattr(cli, "run", broken)
        with pytest.raises(type(bug)):
            cli.main(["check", str(tmp_path)])


def test_a_system_error_about_a_path_is_a_user_error(monkeypatch, tmp_path, capsys):
    import nnlandmark.cli as cli

    def full(args):
        raise OSError(28, "No space left on device", str(tmp_path / "out.json"))
    monkeypatch.setattr(cli, "run", full)
    assert cli.main(["check", str(tmp_path)]) == 2
    assert error_lines(capsys.readouterr().err) == [f"error: {tmp_path / 'out.json'}: No space left on device"]


@pytest.mark.parametrize("argv, hint", [
    (["predict", "-i", "x", "-o", "y", "-m", "z"], "--continue"),
    (["train", "p"], "--continue"),
    (["check", "d"], None),
])
def test_ctrl_c_exits_130_and_says_how_to_resume(monkeypatch, capsys, argv, hint):
    import nnlandmark.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "run", interrupted)
    assert cli.main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
    assert (hint in err) if hint else err.strip() == "interrupted"


def test_user_error_in_a_real_process_has_no_traceback(tmp_path):
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-m", "nnlandmark.cli", "check", str(tmp_path / "nowhere")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip() == f"error: {tmp_path / 'nowhere'}: dataset folder not found"


# --------------------------------------------------------------------------- flags of prepare and convert

def test_prepare_bad_processes_and_project_paths(dataset, tmp_path, capsys):
    project = tmp_path / "project"
    assert_refused(capsys, ["prepare", dataset, "-p", project, "-np", "0"], ("--num-processes", "at least 1", "0"),
                   watched=[dataset], absent=[project])
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    assert_refused(capsys, ["prepare", dataset, "-p", a_file], ("a_file", "is a file"), watched=[dataset, a_file])
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.tex").write_text("mine")
    assert_refused(capsys, ["prepare", dataset, "-p", busy], ("busy", "not empty and not an nnlandmark project"),
                   watched=[dataset, busy])


def test_convert_refuses_an_option_of_another_converter(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    assert_refused(capsys, ["convert", "afids", src, tmp_path / "dst", "--index-base", "1"],
                   ("--index-base", "not an option of the afids converter"), watched=[src],
                   absent=[tmp_path / "dst"])
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", "no-such-benchmark", str(src), str(tmp_path / "dst")])
    assert exit_info.value.code == 2
    assert "invalid choice: 'no-such-benchmark'" in capsys.readouterr().err


# --------------------------------------------------------------------------- predict: flags and model files

@pytest.mark.parametrize("step", ["0", "-0.5", "3"])
def test_predict_refuses_a_step_size_outside_0_1(tiny_model, image, tmp_path, capsys, step):
    out = tmp_path / "out"
    assert_refused(capsys, ["predict", "-i", image, "-o", out, "-m", tiny_model, "--step-size", step],
                   ("--step-size", "(0, 1]", step), watched=[image], absent=[out])


def test_predict_refuses_a_truncated_checkpoint(tiny_model, image, tmp_path, capsys):
    model = Path(shutil.copytree(tiny_model, tmp_path / "model"))
    checkpoint = sorted(model.rglob("checkpoint_*.pth"))[0]
    _truncate(checkpoint)
    out = tmp_path / "out"
    assert_refused(capsys, ["predict", "-i", image, "-o", out, "-m", model],
                   (checkpoint.name, "not a readable checkpoint"), watched=[model, image], absent=[out])


def test_predict_refuses_a_malformed_model_description(tiny_model, image, tmp_path, capsys):
    model = _model_copy(tiny_model, tmp_path / "model")
    (model / "nnlandmark.json").write_text('{"landmarks": ["a",')
    out = tmp_path / "out"
    assert_refused(capsys, ["predict", "-i", image, "-o", out, "-m", model],
                   ("nnlandmark.json", "not a valid model description"), watched=[model, image], absent=[out])


def test_predict_refuses_channel_files_for_a_one_channel_model(tiny_model, image, tmp_path, capsys):
    folder = tmp_path / "in"
    for channel in ("0000", "0001"):
        _copy_image(image, folder / f"scan_{channel}.nii.gz")
    out = tmp_path / "out"
    assert_refused(capsys, ["predict", "-i", folder, "-o", out, "-m", tiny_model],
                   ("in", "2 channels per case", "scan_0000 ... scan_0001", "model takes 1 channel"),
                   watched=[folder], absent=[out])


def test_predict_overwrite_removes_only_the_earlier_runs_cases(tiny_model, synthetic_dataset, tmp_path, capsys):
    images = synthetic_dataset / "images"
    out = tmp_path / "out"
    assert main(["predict", "-i", str(images / "case_000.nii.gz"), str(images / "case_001.nii.gz"), "-o", str(out),
                 "-m", str(tiny_model)]) == 0
    (out / "my_notes.json").write_text('{"mine": true}')
    (out / "my_notes.txt").write_text("mine")
    assert main(["predict", "-i", str(images / "case_002.nii.gz"), "-o", str(out), "-m", str(tiny_model),
                 "--overwrite"]) == 0
    # the run's manifest (and the lock file guarding it) are hidden files
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "case_002.json", "case_002.mrk.json", "my_notes.json", "my_notes.txt", "predictions.csv"]
    assert (out / ".nnlandmark_predict.json").is_file()
    summary = (out / "predictions.csv").read_text().splitlines()[1:]
    assert {row.split(",")[0] for row in summary} == {"case_002"}


def test_predict_accepts_a_project_with_one_model(tiny_model, prepared_project, image, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", "-i", str(image), "-o", str(out), "-m", str(prepared_project)]) == 0
    assert (out / "case_000.json").is_file()


# --------------------------------------------------------------------------- evaluate, report, import-model

def _prediction(folder: Path, case: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{case}.json"
    path.write_text(json.dumps({"nose_tip": {"world_lps_mm": [0.0, 0.0, 0.0], "score": 1.0, "present": True}}))
    return path


def test_evaluate_refuses_nothing_to_compare_and_bad_flags(synthetic_dataset, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "eval"
    assert_refused(capsys, ["evaluate", "-p", empty, "-r", synthetic_dataset, "-o", out],
                   ("empty", "no prediction matches a case"), watched=[synthetic_dataset, empty], absent=[out])
    other = tmp_path / "other"
    _prediction(other, "someone_else")
    assert_refused(capsys, ["evaluate", "-p", other, "-r", synthetic_dataset, "-o", out],
                   ("other", "no prediction matches a case", "1 prediction(s)"), watched=[synthetic_dataset, other],
                   absent=[out])
    mine = tmp_path / "mine"
    _prediction(mine, "case_000")
    assert_refused(capsys, ["evaluate", "-p", mine, "-r", synthetic_dataset, "--thresholds", "-1", "nan"],
                   ("--thresholds", "positive, finite"), watched=[synthetic_dataset, mine])
    assert_refused(capsys, ["evaluate", "-p", mine, "-r", synthetic_dataset, "--biometry", "width=nose_tip"],
                   ("--biometry", "NAME=A,B"), watched=[synthetic_dataset, mine])
    assert_refused(capsys, ["evaluate", "-p", mine, "-r", synthetic_dataset, "--landmarks", "nose_tip", "nose_tipp"],
                   ("--landmarks", "['nose_tipp'] not in any reference file"), watched=[synthetic_dataset, mine])


@pytest.mark.parametrize("flag, value, message", [
    ("--epochs", "0", "must be at least 1"), ("--iterations", "0", "must be at least 1"),
    ("--time-budget", "-1", "a positive number of minutes"), ("--contrast-augmentation", "2", "a probability"),
])
def test_train_names_the_flag_with_a_bad_value(tmp_path, capsys, flag, value, message):
    assert_refused(capsys, ["train", tmp_path, flag, value], (flag, message), watched=[tmp_path])


def test_evaluate_and_report_refuse_to_overwrite_without_the_flag(synthetic_dataset, tmp_path, capsys):
    mine = tmp_path / "mine"
    _prediction(mine, "case_000")
    out = tmp_path / "eval"
    assert main(["evaluate", "-p", str(mine), "-r", str(synthetic_dataset), "-o", str(out),
                 "--landmarks", "nose_tip"]) == 0
    errors = assert_refused(capsys, ["evaluate", "-p", mine, "-r", synthetic_dataset, "-o", out],
                            ("evaluation.json", "--overwrite"), watched=[out, mine])
    assert not any("overwrite=True" in line for line in errors)
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.html").write_text("an earlier report")
    errors = assert_refused(capsys, ["report", "-p", mine, "-r", synthetic_dataset, "-o", report],
                            ("report.html", "--overwrite"), watched=[report, mine])
    assert not any("overwrite=True" in line for line in errors)


def test_import_model_refuses_what_is_not_an_exported_model(tmp_path, capsys):
    import zipfile
    not_zip = tmp_path / "model.zip"
    not_zip.write_text("not a zip")
    target = tmp_path / "imported"
    assert_refused(capsys, ["import-model", not_zip, target], ("model.zip", "not a zip archive"),
                   watched=[not_zip], absent=[target])
    other = tmp_path / "photos.zip"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("holiday.jpg", b"x")
    assert_refused(capsys, ["import-model", other, target], ("photos.zip", "not an exported nnlandmark model"),
                   watched=[other], absent=[target])
    assert_refused(capsys, ["import-model", tmp_path / "nowhere.zip", target], ("nowhere.zip", "no such file"),
                   absent=[target])


# --------------------------------------------------------------------------- state other commands stored

def test_thresholds_survive_training_another_fold_and_evaluate_cv_sums_all_folds(tiny_model, prepared_project,
                                                                                  tmp_path, capsys):
    """``evaluate-cv``'s presence thresholds stay when a fold is trained later, and a two-fold
    ``evaluate-cv`` summary (predictions.csv, per_case.csv) holds every validation case of both."""
    from nnlandmark.evaluation.cross_validation import store_presence_thresholds
    project = Path(shutil.copytree(prepared_project, tmp_path / "project"))
    model = next((project / "nnUNet_results").rglob("nnlandmark.json")).parent
    store_presence_thresholds(model, {"nose_tip": 0.25})
    assert main(["train", str(project), "--fold", "1", "--epochs", "2", "--iterations", "2",
                 "--val-iterations", "1"]) == 0
    description = json.loads((model / "nnlandmark.json").read_text())
    assert description["presence_thresholds"] == {"nose_tip": 0.25}

    out = tmp_path / "cv"
    assert main(["evaluate-cv", str(project), "-o", str(out)]) == 0
    splits = json.loads(next((project / "nnUNet_preprocessed").rglob("splits_final.json")).read_text())
    expected = set(splits[0]["val"]) | set(splits[1]["val"])
    summary = (out / "predictions" / "predictions.csv").read_text().splitlines()[1:]
    assert {row.split(",")[0] for row in summary} == expected
    per_case = (out / "per_case.csv").read_text().splitlines()[1:]
    assert {row.split(",")[0] for row in per_case} == expected
    # a second run refuses to mix with the first, and --continue predicts nothing again
    assert_refused(capsys, ["evaluate-cv", project, "-o", out], ("predictions", "--overwrite", "--continue"),
                   watched=[out])
    before = {p.name: p.stat().st_mtime_ns for p in (out / "predictions").glob("case_*.json")}
    assert main(["evaluate-cv", str(project), "-o", str(out), "--continue"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "predictions").glob("case_*.json")} == before


# --------------------------------------------------------------------------- trust (issue 20)

class _Payload:
    """What a hostile checkpoint may carry: unpickling it runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def _plant_payload(checkpoint: Path, marker: Path) -> None:
    import torch
    torch.save({"network_weights": {}, "note": _Payload(marker)}, checkpoint)


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    from nnlandmark.errors import UserError
    from nnlandmark.nnunet.checkpoints import load_checkpoint
    checkpoint, marker = tmp_path / "checkpoint_final.pth", tmp_path / "pwned"
    _plant_payload(checkpoint, marker)
    with pytest.raises(UserError, match=r"checkpoint_final.pth: refused to load .* posix.system|system"):
        load_checkpoint(checkpoint)
    assert not marker.exists()


def test_predict_refuses_a_model_whose_checkpoint_would_run_code(tiny_model, image, tmp_path, capsys):
    model = Path(shutil.copytree(tiny_model, tmp_path / "model"))
    marker = tmp_path / "pwned"
    for checkpoint in model.rglob("checkpoint_*.pth"):
        _plant_payload(checkpoint, marker)
    out = tmp_path / "out"
    assert_refused(capsys, ["predict", "-i", image, "-o", out, "-m", model],
                   ("checkpoint_", "refused to load", "system"), watched=[model, image], absent=[out, marker])


@pytest.mark.parametrize("edit, suffix, needle", [
    (lambda a: a.fill(np.nan), ".nii.gz", "all of them: an image with no signal"),
    (lambda a: a.__setitem__((5, 6, 7), np.nan), ".nii.gz", "1 of"),
    (lambda a: a.fill(7.0), ".nii.gz", "every voxel has the value 7"),
    (lambda a: a.fill(0.0), ".mha", "every voxel has the value 0"),
])
def test_predict_refuses_an_image_with_no_signal(tiny_model, image, tmp_path, capsys, edit, suffix, needle):
    # SimpleITK reads a NIfTI's NaN voxels as 0; nibabel is asked instead
    bad = _copy_image(image, tmp_path / "in" / f"empty_case{suffix}", edit)
    out = tmp_path / "out"
    assert_refused(capsys, ["predict", "-i", bad, "-o", out, "-m", tiny_model],
                   (f"empty_case{suffix}", needle), watched=[bad], absent=[out])


def test_predict_refuses_a_dicom_series_with_a_missing_slice(tiny_model, image, tmp_path, capsys):
    from nnlandmark.data.images import write_dicom_series
    volume = sitk.Cast(sitk.RescaleIntensity(sitk.ReadImage(str(image)), 0, 1000), sitk.sitkInt16)
    series = write_dicom_series(volume, tmp_path / "in" / "scan")
    (series / "slice_0010.dcm").unlink()
    out = tmp_path / "out"
    assert_refused(capsys, ["predict", "-i", series, "-o", out, "-m", tiny_model],
                   ("in/scan", "not evenly spaced", "slice_0009.dcm and slice_0011.dcm"),
                   watched=[series], absent=[out])


def _predict(image_files, out, model, *flags) -> int:
    return main(["predict", "-i", *map(str, image_files), "-o", str(out), "-m", str(model), *flags])


def test_overwrite_keeps_a_users_corrected_prediction(tiny_model, synthetic_dataset, tmp_path, capsys):
    images = synthetic_dataset / "images"
    out = tmp_path / "out"
    assert _predict([images / "case_000.nii.gz"], out, tiny_model) == 0
    # the user corrects a prediction and saves it beside ours: prediction-shaped, but theirs
    shutil.copy(out / "case_000.json", out / "case_000_corrected.json")
    shutil.copy(out / "case_000.mrk.json", out / "case_000_corrected.mrk.json")
    mine = snapshot(out / "case_000_corrected.json", out / "case_000_corrected.mrk.json")
    assert _predict([images / "case_001.nii.gz"], out, tiny_model, "--overwrite") == 0
    assert snapshot(out / "case_000_corrected.json", out / "case_000_corrected.mrk.json") == mine
    assert not (out / "case_000.json").exists() and (out / "case_001.json").is_file()


def test_predict_never_replaces_a_predictions_csv_it_did_not_write(tiny_model, image, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.csv").write_text("my,own,table\n")
    for flag in ([], ["--overwrite"], ["--continue"]):
        assert_refused(capsys, ["predict", "-i", image, "-o", out, "-m", tiny_model, *flag],
                       ("predictions.csv", "not written by nnlandmark predict"), watched=[out, image])


def test_continue_with_another_model_is_refused(tiny_model, image, synthetic_dataset, tmp_path, capsys):
    out = tmp_path / "out"
    assert _predict([image], out, tiny_model) == 0
    other = Path(shutil.copytree(tiny_model, tmp_path / "other_model"))
    assert_refused(capsys, ["predict", "-i", synthetic_dataset / "images" / "case_001.nii.gz", "-o", out,
                            "-m", other, "--continue"],
                   (".nnlandmark_predict.json", "--continue", "made by", str(tiny_model)), watched=[out, image])
    # another decoder is another setting, refused alike
    assert_refused(capsys, ["predict", "-i", image, "-o", out, "-m", tiny_model, "--continue", "--decoder", "argmax"],
                   ("--continue", "made by"), watched=[out, image])


def test_a_second_predict_into_a_locked_folder_fails(tiny_model, image, tmp_path, capsys):
    from nnlandmark.inference.outputs import output_lock
    out = tmp_path / "out"
    out.mkdir()
    with output_lock(out):  # another run writing there now
        assert_refused(capsys, ["predict", "-i", image, "-o", out, "-m", tiny_model],
                       ("out", "another nnlandmark predict", "is writing into this folder"), watched=[image])
    assert not list(out.glob("*.json"))


def test_continue_with_other_inputs_lists_every_case_in_predictions_csv(tiny_model, synthetic_dataset, tmp_path):
    images = synthetic_dataset / "images"
    out = tmp_path / "out"
    assert _predict([images / "case_000.nii.gz"], out, tiny_model) == 0
    assert _predict([images / "case_001.nii.gz"], out, tiny_model, "--continue") == 0
    rows = (out / "predictions.csv").read_text().splitlines()[1:]
    assert {row.split(",")[0] for row in rows} == {"case_000", "case_001"}


@pytest.mark.parametrize("where", ["the input folder", "inside the input folder", "the folder of an input file"])
def test_predict_refuses_an_output_folder_among_the_inputs(tiny_model, synthetic_dataset, tmp_path, capsys, where):
    folder = Path(shutil.copytree(synthetic_dataset / "images", tmp_path / "scans"))
    inputs, out = {"the input folder": ([folder], folder),
                   "inside the input folder": ([folder], folder / "predictions"),
                   "the folder of an input file": ([folder / "case_000.nii.gz"], folder)}[where]
    assert_refused(capsys, ["predict", "-i", *inputs, "-o", out, "-m", tiny_model],
                   ("scans", "the output folder is", "choose a folder outside it"), watched=[folder])


def test_predict_refuses_a_case_name_too_long_for_its_files_before_any_work(tiny_model, image, tmp_path, capsys):
    long = _copy_image(image, tmp_path / "in" / ("c" * 240 + ".nii.gz"))
    out = tmp_path / "out"
    assert_refused(capsys, ["predict", "-i", long, "-o", out, "-m", tiny_model],
                   ("c" * 240, "too long for its output files"), watched=[long], absent=[out])


def test_predict_in_a_folder_from_before_the_manifest(tiny_model, synthetic_dataset, tmp_path, capsys):
    """The rule for older prediction folders: --continue adopts their records, --overwrite is refused."""
    images = synthetic_dataset / "images"
    out = tmp_path / "out"
    assert _predict([images / "case_000.nii.gz"], out, tiny_model) == 0
    for hidden in out.glob(".nnlandmark_predict*"):
        hidden.unlink()  # as an earlier nnlandmark left it
    assert_refused(capsys, ["predict", "-i", images / "case_001.nii.gz", "-o", out, "-m", tiny_model, "--overwrite"],
                   ("out", "before nnlandmark kept a manifest", "remove them by hand"), watched=[out])
    assert _predict([images / "case_001.nii.gz"], out, tiny_model, "--continue") == 0
    rows = (out / "predictions.csv").read_text().splitlines()[1:]
    assert {row.split(",")[0] for row in rows} == {"case_000", "case_001"}
    assert set(json.loads((out / ".nnlandmark_predict.json").read_text())["cases"]) == {"case_000", "case_001"}


def test_an_unfinished_fold_is_named_at_predict_and_in_the_exported_model(tiny_model, image, tmp_path, capsys):
    model = Path(shutil.copytree(tiny_model, tmp_path / "model"))
    final = sorted(model.rglob("checkpoint_final.pth"))[-1]  # the last stage: killed before it finished
    final.unlink()
    stage = final.parent.name
    out = tmp_path / "out"
    capsys.readouterr()
    assert _predict([image], out, model) == 0
    err = capsys.readouterr().err
    assert f"warning: {model}: fold 0 ({stage} stage) did not finish training" in err and "2 epoch(s)" in err
    archive = tmp_path / "model.zip"
    assert main(["export-model", str(model), str(archive)]) == 0
    assert f"the {stage} stage did not finish training" in capsys.readouterr().err
    imported = tmp_path / "imported"
    assert main(["import-model", str(archive), str(imported)]) == 0
    assert "did not finish training" in capsys.readouterr().err
    states = json.loads((imported / "fold_states.json").read_text())
    assert states["fold_0"][stage] == {"finished": False, "epochs": 2}


def _model_zip(path: Path, members: dict) -> Path:
    import zipfile
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


_GOOD_MEMBERS = {"plans.json": json.dumps({"configurations": {}}), "dataset.json": json.dumps({"channel_names": {}}),
                 "nnlandmark.json": json.dumps({"landmarks": ["a"], "configuration": "3d_fullres"})}


@pytest.mark.parametrize("members, needles", [
    ({**_GOOD_MEMBERS, "plans.json": "{not json"}, ("plans.json is not valid JSON",)),
    ({"plans.json": "{}", "dataset.json": "{}", "nnlandmark.json": "{}"}, ("plans.json is not a model's",)),
    ({**_GOOD_MEMBERS, "nnlandmark.json": json.dumps({"landmarks": ["a"]})}, ("nnlandmark.json", "not a valid")),
    ({**_GOOD_MEMBERS, "fold_0/checkpoint_final.pth": b"\0" * (64 << 20)}, ("would expand to", "zip bomb")),
])
def test_import_model_validates_before_extracting(tmp_path, capsys, members, needles):
    archive = _model_zip(tmp_path / "model.zip", members)
    target = tmp_path / "imported"
    assert_refused(capsys, ["import-model", archive, target], ("model.zip", *needles), watched=[archive],
                   absent=[target])
    assert [p.name for p in tmp_path.iterdir()] == ["model.zip"]


def test_import_model_refuses_a_member_twice(tmp_path, capsys):
    import warnings
    import zipfile
    archive = _model_zip(tmp_path / "model.zip", _GOOD_MEMBERS)
    with warnings.catch_warnings(), zipfile.ZipFile(archive, "a") as z:
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name it is asked to write
        z.writestr("plans.json", "{not json")  # a second plans.json: extracting all would let it win
    assert_refused(capsys, ["import-model", archive, tmp_path / "imported"], ("plans.json more than once",),
                   watched=[archive], absent=[tmp_path / "imported"])


def test_import_model_extracts_only_a_models_members_and_keeps_a_users_folders(tmp_path, capsys, monkeypatch):
    archive = _model_zip(tmp_path / "model.zip", {**_GOOD_MEMBERS, "notes/readme.sh": "echo hi"})
    sibling = tmp_path / ".tmp_imported"  # a folder of the user's named as the old temporary folder was
    sibling.mkdir()
    (sibling / "keep.txt").write_text("mine")
    assert main(["import-model", str(archive), str(tmp_path / "imported")]) == 0
    assert "not part of a model were not extracted" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "imported").iterdir()) == sorted(_GOOD_MEMBERS)
    assert (sibling / "keep.txt").read_text() == "mine"
    # "." as the target (it once failed with a ValueError on its empty name)
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert main(["import-model", str(archive), "."]) == 0
    assert sorted(p.name for p in here.iterdir()) == sorted(_GOOD_MEMBERS)


def test_export_model_keeps_a_users_file_named_like_its_old_temporary_file(tiny_model, tmp_path, capsys):
    mine = tmp_path / ".tmp_model.zip"
    mine.write_text("mine")
    assert main(["export-model", str(tiny_model), str(tmp_path / "model.zip")]) == 0
    assert mine.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp_model.zip", "model.zip"]


@pytest.mark.slow
def test_prepare_with_no_augmentation_workers(synthetic_dataset, tmp_path, monkeypatch, capsys):
    """``nnUNet_n_proc_DA=0`` (training without worker processes) once crashed nnU-Net's planner."""
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    assert main(["prepare", str(synthetic_dataset), "-p", str(tmp_path / "project"), "-np", "1"]) == 0
    assert os.environ["nnUNet_n_proc_DA"] == "0"


def test_predict_reads_a_grey_and_alpha_png_and_names_a_jpeg_exif_orientation(tmp_path):
    from PIL import Image
    from nnlandmark.data.images import read_image, read_image_grid
    pixels = (np.arange(600).reshape(20, 30) % 200).astype(np.uint8)
    Image.fromarray(np.stack([pixels, np.full_like(pixels, 255)], -1), "LA").save(tmp_path / "la.png")
    assert read_image_grid(tmp_path / "la.png", read_pixels=True, finite=True).size == (30, 20, 1)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(tmp_path / "la.png"))[0], pixels)
    picture = Image.fromarray(pixels, "L")
    exif = picture.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees to display"
    picture.save(tmp_path / "rotated.jpg", exif=exif)
    with pytest.warns(UserWarning, match=r"rotated.jpg: its EXIF orientation \(6\)"):
        read_image_grid(tmp_path / "rotated.jpg")


def test_evaluate_hints_at_2d_predictions_against_3d_references(synthetic_dataset, tmp_path, capsys):
    predictions = tmp_path / "pred"
    _prediction(predictions, "case_000")  # z = 0, as a model of 2D images writes
    _prediction(predictions, "case_001")
    assert main(["evaluate", "-p", str(predictions), "-r", str(synthetic_dataset)]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "every point has z = 0 (2D images)" in err and "are 3D" in err


def test_check_hints_at_a_csv_with_semicolons(dataset, capsys):
    (dataset / "landmarks" / "case_000.json").unlink()
    (dataset / "landmarks" / "case_000.csv").write_text("name;x;y;z\nnose_tip;1;2;3\n")
    assert_refused(capsys, ["check", dataset],
                   ("case_000.csv", "missing column(s)", "holding ';'", "save the file with commas"),
                   watched=[dataset])
