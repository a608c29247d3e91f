"""Model folders without training: the zip-slip guard of ``import-model`` and ``resolve_model``
for a project with several models (fast: the folders are written by hand)."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from nnlandmark.cli import main
from nnlandmark.model.folder import MODEL_FILE, import_model, resolve_model

_DESCRIPTION = json.dumps({"landmarks": ["a"], "settings": {"preset": "softmax", "architecture": "unet"}})


def _files_under(folder: Path) -> set:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("member", ["../evil.txt", "fold_0/../../evil.txt", "/tmp/nnlandmark_zip_slip_evil.txt"])
def test_import_model_refuses_an_archive_that_writes_outside_its_folder(tmp_path, member, capsys):
    """A member whose path leaves the target folder (zip slip) is refused and nothing is unpacked,
    neither outside nor inside the folder, even though the archive is otherwise a model."""
    archive = tmp_path / "in" / "model.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(MODEL_FILE, _DESCRIPTION)
        z.writestr("plans.json", "{}")
        z.writestr("fold_0/checkpoint_final.pth", "weights")
        z.writestr(member, "evil")
    before = _files_under(tmp_path)
    target = tmp_path / "out" / "imported"
    with pytest.raises(ValueError, match="unsafe path") as refused:
        import_model(archive, target)
    assert member in str(refused.value)
    assert _files_under(tmp_path) == before  # no model folder, no evil.txt next to it or above
    assert not Path("/tmp/nnlandmark_zip_slip_evil.txt").exists()

    capsys.readouterr()
    assert main(["import-model", str(archive), str(target)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "unsafe path" in err and "Traceback" not in err
    assert _files_under(tmp_path) == before


def test_import_model_unpacks_a_safe_archive(tmp_path):
    """The guard's counterpart: the same archive without the bad member imports as it is."""
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(MODEL_FILE, json.dumps({**json.loads(_DESCRIPTION), "configuration": "3d_fullres"}))
        z.writestr("plans.json", '{"configurations": {}}')
        z.writestr("dataset.json", '{"channel_names": {"0": "CT"}}')
        z.writestr("fold_0/checkpoint_final.pth", "weights")
    folder = import_model(archive, tmp_path / "imported")
    assert _files_under(folder) == {MODEL_FILE, "plans.json", "dataset.json", "fold_0",
                                    "fold_0/checkpoint_final.pth"}
    assert (folder / "fold_0" / "checkpoint_final.pth").read_text() == "weights"


def _project_with_models(root: Path, models) -> Path:
    """A project folder as ``prepare`` and ``train`` leave it, as far as finding models goes."""
    root.mkdir()
    (root / "project.json").write_text(json.dumps({"dataset_dir": str(root / "data"), "dataset_id": 701,
                                                   "dataset_name": "Dataset701_X", "landmarks": ["a"]}))
    results = root / "nnUNet_results" / "Dataset701_X"
    results.mkdir(parents=True)
    (results / "not_a_model").mkdir()  # no nnlandmark.json: not counted
    for name in models:
        (results / name).mkdir()
        (results / name / MODEL_FILE).write_text(_DESCRIPTION)
    return root


def test_resolve_model_with_several_models_lists_them(tmp_path, capsys):
    names = ["softmax_unet__nnUNetPlans__cascade", "v1_unet__nnUNetPlans__3d_fullres"]
    project = _project_with_models(tmp_path / "project", names)
    models = [project.resolve() / "nnUNet_results" / "Dataset701_X" / n for n in names]
    with pytest.raises(ValueError) as refused:
        resolve_model(project)
    message = str(refused.value)
    assert "2 models" in message and all(str(m) in message for m in models), message

    # the CLI refuses before any work, naming both, and writes no output
    capsys.readouterr()
    image = tmp_path / "case.nii.gz"
    image.write_bytes(b"")
    assert main(["predict", "-i", str(image), "-o", str(tmp_path / "pred"), "-m", str(project)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert any(all(str(m) in line for m in models) for line in errors), errors
    assert not (tmp_path / "pred").exists()

    # a model folder itself, or a project with exactly one model, resolves to that model
    assert resolve_model(models[1]) == models[1]
    single = _project_with_models(tmp_path / "single", names[:1])
    assert resolve_model(single) == single.resolve() / "nnUNet_results" / "Dataset701_X" / names[0]
    with pytest.raises(FileNotFoundError, match="no trained model"):
        resolve_model(_project_with_models(tmp_path / "empty", []))
