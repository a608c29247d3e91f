"""The pipeline on the synthetic dataset: prepare, train, predict, evaluate."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from nnlandmark.data.dataset import load_dataset
from nnlandmark.geometry import ImageGrid, PreprocessedGrid, preprocessed_to_world
from nnlandmark.planning.project import Project


def test_prepare_exports_plans_and_preprocesses_every_case(prepared_project, synthetic_dataset):
    project = Project.load(prepared_project)
    dataset = load_dataset(synthetic_dataset, progress=False)
    raw = project.raw_dir()
    assert json.loads((raw / "dataset.json").read_text())["labels"] == {
        "background": 0, **{n: i + 1 for i, n in enumerate(dataset.spec.landmarks)}}
    assert len(list((raw / "imagesTr").glob("*.mha"))) == len(dataset.cases)
    plans = project.plans()["configurations"]["3d_fullres"]
    assert plans["patch_size"] and plans["batch_size"] >= 1
    pre = project.folders.preprocessed / project.dataset_name / plans["data_identifier"]
    assert len(list(pre.glob("*.pkl"))) == len(dataset.cases)


def test_preprocessed_cubes_sit_on_the_world_landmarks(prepared_project, synthetic_dataset):
    """The label cube nnU-Net preprocessed for each landmark maps back within one voxel of its world point."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    project = Project.load(prepared_project)
    dataset = {c.case_id: c for c in load_dataset(synthetic_dataset, progress=False).cases}
    config = project.plans()["configurations"]["3d_fullres"]
    folder = project.folders.preprocessed / project.dataset_name / config["data_identifier"]
    cases = infer_dataset_class(str(folder))(str(folder))
    case_id = sorted(dataset)[0]
    _, seg, _, props = cases.load_case(case_id)
    seg = np.asarray(seg[0])
    pgrid = PreprocessedGrid(project.plans()["transpose_forward"], [b[0] for b in props["bbox_used_for_cropping"]],
                             props["shape_after_cropping_and_before_resampling"], seg.shape)
    case = dataset[case_id]
    for i, name in enumerate(project.landmarks):
        centre = np.argwhere(seg == i + 1).mean(axis=0)
        world = preprocessed_to_world(centre, pgrid, case.grid)
        assert np.linalg.norm(world - case.landmarks.points[name]) <= np.linalg.norm(case.grid.spacing) / 2 + 1e-6


def test_tiny_model_folder_is_self_contained(tiny_model, prepared_project, synthetic_dataset, tmp_path):
    """The model folder alone predicts: copied elsewhere while the project it was trained in is
    moved away, it gives the same points as in place. And each stage's checkpoint rebuilds, from
    the folder's own plans, a network with one output channel per landmark of the description."""
    import os
    import shutil
    import torch
    from nnlandmark import predict
    image = sorted((synthetic_dataset / "images").iterdir())[0]
    case = image.name[:-len(".nii.gz")]
    in_place = predict([image], tmp_path / "in_place", tiny_model, progress=False)
    copy = Path(shutil.copytree(tiny_model, tmp_path / "elsewhere" / "model"))
    project, hidden = Path(prepared_project), Path(f"{prepared_project}_moved_away")
    os.rename(project, hidden)  # the session's project: put back below, whatever happens
    try:
        assert not (project / "project.json").exists()
        moved = predict([image], tmp_path / "moved", copy, progress=False)
    finally:
        os.rename(hidden, project)
    record = json.loads((moved / f"{case}.json").read_text())
    assert record == json.loads((in_place / f"{case}.json").read_text())
    assert list(record) == json.loads((tiny_model / "nnlandmark.json").read_text())["landmarks"]

    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnlandmark.model.folder import ModelFolder
    from nnlandmark.nnunet.networks import build_network
    description = json.loads((tiny_model / "nnlandmark.json").read_text())
    assert description["landmarks"][0] == "nose_tip"
    plans = PlansManager(json.loads((tiny_model / "plans.json").read_text()))
    stages = ModelFolder(tiny_model).stages
    assert stages == {"global": "3d_global", "local": "3d_local"}
    for stage, configuration in stages.items():
        folder = ModelFolder(tiny_model).stage_dir(0, stage)
        assert (folder / "training_curves.json").is_file()
        network = build_network("unet", plans.get_configuration(configuration), 1, len(description["landmarks"]))
        weights = torch.load(folder / "checkpoint_best.pth", map_location="cpu", weights_only=False)
        network.load_state_dict(weights["network_weights"])  # raises on any mismatch
        patch = plans.get_configuration(configuration).patch_size
        with torch.no_grad():
            assert network(torch.zeros(1, 1, *patch)).shape == (1, len(description["landmarks"]), *patch)


def test_export_import_round_trip_predicts_the_same(tiny_model, synthetic_dataset, tmp_path):
    from nnlandmark import export_model, import_model, predict
    zip_path = export_model(tiny_model, tmp_path / "model.zip")
    imported = import_model(zip_path, tmp_path / "imported")
    # what prediction needs, byte for byte: the model's files and, per stage, the checkpoints
    # prediction may pick and the curves; not the logs, nnU-Net's debug.json or a latest checkpoint
    expected = {"plans.json", "dataset.json", "dataset_fingerprint.json", "nnlandmark.json"} | {
        f"fold_0/{stage}/{name}" for stage in ("global", "local")
        for name in ("checkpoint_best.pth", "checkpoint_final.pth", "training_curves.json", "training_curves.png")}
    files = {p.relative_to(imported).as_posix() for p in imported.rglob("*") if p.is_file()}
    assert files == expected | {"fold_states.json"}  # and whether each fold finished training
    assert json.loads((imported / "fold_states.json").read_text()) == {
        "fold_0": {stage: {"finished": True, "epochs": 2} for stage in ("global", "local")}}
    for name in expected:
        assert (imported / name).read_bytes() == (tiny_model / name).read_bytes(), name
    image = sorted((synthetic_dataset / "images").iterdir())[0]
    out = predict([image], tmp_path / "pred", imported, progress=False)
    original = predict([image], tmp_path / "pred_original", tiny_model, progress=False)
    record = json.loads((out / f"{image.name[:-7]}.json").read_text())
    assert record == json.loads((original / f"{image.name[:-7]}.json").read_text())
    assert set(record) == set(json.loads((tiny_model / "nnlandmark.json").read_text())["landmarks"])
    assert all(np.isfinite(r["world_lps_mm"]).all() for r in record.values())
    assert (out / f"{image.name[:-7]}.mrk.json").is_file() and (out / "predictions.csv").is_file()


_BLOCK_TORCHVISION = textwrap.dedent("""
    import sys, importlib.abc
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in ('torchvision', 'timm'):
                raise ImportError(f'{name} blocked by the test')
    sys.meta_path.insert(0, Block())
    from nnlandmark.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_commands_work_when_torchvision_cannot_be_imported(prepared_project, tiny_model, synthetic_dataset,
                                                          tmp_path):
    """nnU-Net's trainer lookup by name imports timm -> torchvision; ours never does."""
    import shutil
    project = shutil.copytree(prepared_project, tmp_path / "project")
    model = project / tiny_model.relative_to(prepared_project)
    shutil.rmtree(model)  # train afresh in the copy
    run = lambda *args: subprocess.run([sys.executable, "-c", _BLOCK_TORCHVISION, *args], capture_output=True,
                                       encoding="utf-8", errors="replace", timeout=600)  # UTF-8 progress bars
    r = run("train", str(project), "--fold", "0", "--epochs", "1", "--iterations", "1", "--val-iterations", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    image = sorted((synthetic_dataset / "images").iterdir())[0]
    r = run("predict", "-i", str(image), "-o", str(tmp_path / "pred"), "-m", str(project))
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(list((tmp_path / "pred").glob("*.mrk.json"))) == 1
