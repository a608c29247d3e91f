"""Training on several GPUs with nnU-Net's DDP path, exercised on the CPU with the gloo backend.

``train(..., num_gpus=2, ddp_on_cpu=True)`` starts two processes joined in a gloo
process group (:func:`nnlandmark.nnunet.distributed.spawn`), the code path that
``--device cuda --num-gpus 2`` runs with NCCL: nnU-Net's trainer splits each
batch across the processes and wraps the network in ``DistributedDataParallel``;
rank 0 alone writes. The trainer's log says what each rank did (gathered from
both processes, so both took part). Refusals of ``--num-gpus`` are fast tests.
"""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import copy_tree
from nnlandmark.errors import InvalidInput

SCHEDULE = dict(epochs=1, iterations_per_epoch=2, val_iterations=1)


@pytest.fixture(scope="module")
def ddp_model(prepared_project, tmp_path_factory):
    """The shared project's cascade trained for one epoch of 2 iterations by 2 gloo processes."""
    from nnlandmark.training.presets import TrainingSettings
    from nnlandmark.training.train import train
    project = copy_tree(prepared_project, tmp_path_factory.mktemp("ddp") / "project")
    shutil.rmtree(project / "nnUNet_results", ignore_errors=True)  # the session's tiny model, if trained
    started = time.monotonic()
    model = train(project, 0, TrainingSettings(**SCHEDULE), device="cpu", progress=False, num_gpus=2,
                  ddp_on_cpu=True)
    print(f"2-process gloo training of both stages: {time.monotonic() - started:.1f} s")
    return project, model


def _log(stage_dir: Path) -> str:
    logs = list(stage_dir.glob("training_log_*.txt"))
    assert len(logs) == 1, logs  # rank 0's; no other process logs
    return logs[0].read_text()


@pytest.mark.parametrize("stage", ["global", "local"])
def test_two_processes_train_each_stage_on_half_batches_and_rank_0_alone_writes(ddp_model, stage):
    from nnlandmark.nnunet.planning import GLOBAL_CONFIGURATION, LOCAL_CONFIGURATION, planned_batch_size
    from nnlandmark.planning.project import Project
    project, model = ddp_model
    stage_dir = model / "fold_0" / stage
    batch = planned_batch_size(Project.load(project).plans(),
                               {"global": GLOBAL_CONFIGURATION, "local": LOCAL_CONFIGURATION}[stage])
    assert batch % 2 == 0  # the planned cascade's batches are 2 (global) and 2..8 (local)
    log = _log(stage_dir)
    # gathered from both processes in the trainer: each trained half the batch, in the DDP wrapper
    assert (f"distributed training: 2 processes (gloo), batch size {batch} split as "
            f"rank 0: batch {batch // 2} on cpu (DistributedDataParallel), "
            f"rank 1: batch {batch // 2} on cpu (DistributedDataParallel)") in log
    written = re.search(r"files written: rank 0: (.*); rank 1: (.*?)\s*$", log, flags=re.M)
    assert written is not None, log[-2000:]
    assert set(written.group(1).split(", ")) >= {"checkpoint_best.pth", "checkpoint_final.pth",
                                                 "training_curves.json"}
    assert written.group(2) == "none"
    assert sorted(p.name for p in stage_dir.iterdir() if p.name.startswith((".tmp", "checkpoint"))) == \
        ["checkpoint_best.pth", "checkpoint_final.pth"]
    curves = json.loads((stage_dir / "training_curves.json").read_text())
    assert len(curves["train_loss"]) == len(curves["val_loss"]) == SCHEDULE["epochs"]
    assert np.isfinite(curves["train_loss"] + curves["val_loss"]).all()
    checkpoint = torch.load(stage_dir / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["current_epoch"] == SCHEDULE["epochs"]
    assert not any(k.startswith("module.") for k in checkpoint["network_weights"])  # unwrapped, as one GPU's


def test_no_default_nnunet_folder_is_left_behind(ddp_model):
    project, model = ddp_model
    assert sorted(p.name for p in model.parent.iterdir()) == [model.name]


def test_the_ddp_model_predicts_like_any_model(ddp_model, synthetic_dataset, tmp_path):
    from nnlandmark import predict
    image = sorted((synthetic_dataset / "images").iterdir())[0]
    case = image.name[:-len(".nii.gz")]
    out = predict([image], tmp_path / "pred", ddp_model[1], progress=False)
    record = json.loads((out / f"{case}.json").read_text())
    names = json.loads((ddp_model[1] / "nnlandmark.json").read_text())["landmarks"]
    assert list(record) == names
    assert all(np.isfinite(record[n]["world_lps_mm"]).all() for n in names)


def _fit_budget_in_each_process(out_dir: str) -> None:
    """Run in 2 gloo processes: the trainer's budget re-fitting, with rank 1's epochs 10x slower."""
    from nnlandmark.nnunet import distributed
    from nnlandmark.nnunet.trainer import LandmarkTrainer
    rank = distributed.rank()
    decided = []
    trainer = SimpleNamespace(time_budget_s=100.0, current_epoch=1, recipe=SimpleNamespace(epochs=1000),
                              _epoch_seconds=lambda: [1.0 if rank == 0 else 10.0], _set_num_epochs=decided.append)
    LandmarkTrainer._fit_to_budget(trainer)
    Path(out_dir, f"rank_{rank}.json").write_text(json.dumps(decided))


@pytest.mark.slow
def test_every_process_keeps_rank_0s_epoch_count_under_a_time_budget(tmp_path):
    """Each process times its own epochs; were each to fit the budget alone, they would stop at
    different epochs and wait on each other for ever."""
    from nnlandmark.nnunet.distributed import spawn
    spawn(_fit_budget_in_each_process, (str(tmp_path),), 2, backend="gloo")
    # rank 0: 1 + floor(99 / 1) epochs; rank 1 alone would say 1 + floor(90 / 10) = 10
    assert [json.loads((tmp_path / f"rank_{r}.json").read_text()) for r in (0, 1)] == [[100], [100]]


# --- refusals (fast) -----------------------------------------------------------------------

def test_num_gpus_needs_cuda(tmp_path):
    from nnlandmark.training.train import train
    with pytest.raises(InvalidInput, match=r"--num-gpus 2 .*needs --device cuda \(got --device cpu\)"):
        train(tmp_path, num_gpus=2, device="cpu")


@pytest.mark.parametrize("n", [0, -1, 1.5])
def test_num_gpus_must_be_a_positive_whole_number(tmp_path, n):
    from nnlandmark.training.train import train
    with pytest.raises(InvalidInput, match="--num-gpus must be a whole number"):
        train(tmp_path, num_gpus=n, device="cuda")


def test_more_gpus_than_visible_are_refused(tmp_path, monkeypatch):
    from nnlandmark.training.train import train
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(InvalidInput, match=r"--num-gpus 2: torch sees 1 CUDA device"):
        train(tmp_path, num_gpus=2, device="cuda")


def test_cli_refuses_num_gpus_on_the_cpu(tmp_path, capsys):
    from nnlandmark.cli import main
    assert main(["train", str(tmp_path), "--num-gpus", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --num-gpus 2 ") and "--device cuda" in err


def test_more_gpus_than_a_stage_has_samples_per_batch_are_refused(prepared_project):
    """The global stage's planned batch is 2: nnU-Net's DDP cannot give 3 processes a sample each.
    Refused before anything is written."""
    from nnlandmark.training.presets import TrainingSettings
    from nnlandmark.training.train import train
    before = sorted(str(p) for p in Path(prepared_project).rglob("*"))
    with pytest.raises(InvalidInput, match=r"--num-gpus 3: the global stage's planned batch size is 2"):
        train(prepared_project, 0, TrainingSettings(**SCHEDULE), device="cpu", num_gpus=3, ddp_on_cpu=True)
    assert sorted(str(p) for p in Path(prepared_project).rglob("*")) == before
