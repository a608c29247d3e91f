"""Interrupted work resumes instead of starting over.

- ``train`` killed with SIGKILL mid-run continues from its last checkpoint with ``--continue``
  (or ``continue_training=True``), keeping the schedule it saved when none is given;
- a rerun of ``prepare`` redoes only the cases that are missing or were re-exported;
- ``predict --continue`` skips finished cases, predicts the rest and leaves no temporary files.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nnlandmark.cli import main
from conftest import shrink_plans

EPOCHS = 4
# the full-resolution model: one stage, so the kill lands in the stage being resumed
SCHEDULE = ["--epochs", str(EPOCHS), "--iterations", "2", "--val-iterations", "1", "--configuration", "fullres"]


def _project_copy(prepared_project: Path, dst: Path) -> Path:
    """The session's prepared project without trained models (so training starts clean)."""
    return Path(shutil.copytree(prepared_project, dst, ignore=shutil.ignore_patterns("nnUNet_results")))


def _logged_epochs(log: Path) -> list:
    """Epoch numbers nnU-Net's training log announces (``<time>: Epoch N``)."""
    return [int(n) for n in re.findall(r": Epoch (\d+)\s*$", log.read_text(), flags=re.M)]


def _kill_when(argv, done, console: Path, timeout: float = 400) -> str:
    """Run ``argv`` and SIGKILL it as soon as ``done()``; returns its console output."""
    with open(console, "w") as out:
        run = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while run.poll() is None and not done() and time.monotonic() < deadline:
            time.sleep(0.05)
        run.send_signal(signal.SIGKILL)
        run.wait()
    text = console.read_text(encoding="utf-8", errors="replace")  # progress bars: UTF-8 blocks
    assert run.returncode == -signal.SIGKILL, text  # still running: killed, not finished or crashed
    return text


def _resume_keeping_to(argv, model: Path, epochs: int, console: Path, timeout: float = 400) -> str:
    """Run the resuming ``argv`` to its end and return its console output, but stop it, and fail,
    as soon as it shows another schedule than ``epochs``: its model description says so, or a
    stage's curves grow past it (a resume that forgot the saved schedule would otherwise train
    for nnU-Net's default 1000 epochs of 250 iterations)."""
    description = model / "nnlandmark.json"
    before = description.read_text()
    with open(console, "w") as out:
        run = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        problem = None
        while run.poll() is None and problem is None:
            time.sleep(0.1)
            text = description.read_text()  # replaced atomically
            settings = json.loads(text)["settings"]
            if text != before and settings["epochs"] != epochs:
                problem = f"the resumed run's description says {settings['epochs']} epochs"
            for curves in model.rglob("training_curves.json"):
                try:
                    if len(json.loads(curves.read_text())["train_loss"]) > epochs:
                        problem = f"{curves.parent.name} trained past epoch {epochs}"
                except ValueError:
                    pass  # caught mid-write
            if time.monotonic() > deadline:
                problem = f"still running after {timeout} s"
        if problem is not None:
            run.kill()
            run.wait()
            pytest.fail(f"resume did not keep the saved schedule of {epochs} epochs: {problem}")
    text = console.read_text(encoding="utf-8", errors="replace")  # progress bars: UTF-8 blocks
    assert run.returncode == 0, text
    return text


@pytest.mark.slow
def test_killed_training_resumes_from_last_checkpoint(prepared_project, tmp_path):
    from nnlandmark.planning.project import Project
    from nnlandmark.training.presets import TrainingSettings
    from nnlandmark.training.train import model_dir_for

    project = _project_copy(prepared_project, tmp_path / "project")
    shrink_plans(project)
    fold = model_dir_for(Project.load(project), TrainingSettings(configuration="fullres")) / "fold_0"

    console_text = _kill_when([sys.executable, "-m", "nnlandmark.cli", "train", str(project), *SCHEDULE],
                              lambda: (fold / "checkpoint_latest.pth").exists(), tmp_path / "killed_run.txt")
    assert "fold 0 fullres" in console_text  # the progress bar
    assert not (fold / "checkpoint_final.pth").exists()
    killed = torch.load(fold / "checkpoint_latest.pth", map_location="cpu", weights_only=False)
    done = killed["current_epoch"]  # nnU-Net stores the next epoch to run
    assert 1 <= done < EPOCHS

    # resumed without the schedule: the run keeps the one it saved (epochs and iterations)
    console_text = _resume_keeping_to(
        [sys.executable, "-m", "nnlandmark.cli", "train", str(project), "--continue", "--configuration", "fullres"],
        fold.parent, EPOCHS, tmp_path / "resumed_run.txt")
    assert "fold 0 fullres" in console_text
    settings = json.loads((fold.parent / "nnlandmark.json").read_text())["settings"]
    assert (settings["epochs"], settings["iterations_per_epoch"], settings["val_iterations"]) == (EPOCHS, 2, 1)

    final = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["current_epoch"] == EPOCHS
    assert not (fold / "checkpoint_latest.pth").exists()  # nnU-Net removes it once final is written
    # nnU-Net names its log by the second the trainer started; on a fast machine the killed and the
    # resumed run can share one file (nnU-Net then appends), so read the logs in order, not by name
    logs = sorted(fold.glob("training_log_*.txt"), key=lambda p: p.stat().st_mtime_ns)
    epochs = [n for log in logs for n in _logged_epochs(log)]
    assert epochs.count(0) == 1  # continued, not restarted at 0
    resumed_from = len(epochs) - 1 - epochs[::-1].index(done)
    assert epochs[resumed_from:] == list(range(done, EPOCHS))
    # the curves hold the whole run: the killed run's epochs unchanged, then the resumed ones
    curves = json.loads((fold / "training_curves.json").read_text())
    assert len(curves["train_loss"]) == EPOCHS
    np.testing.assert_allclose(curves["train_loss"][:done], killed["logging"]["train_losses"][:done])
    assert (fold / "training_curves.png").stat().st_size > 0


_TRAIN_API = "import sys; from nnlandmark import train, TrainingSettings; "


@pytest.mark.slow
def test_api_resume_without_settings_keeps_the_saved_schedule(prepared_project, tmp_path):
    """``train(project, fold, continue_training=True)`` with no settings resumes the project's model
    with the schedule it saved: the killed global stage finishes its 3 epochs of 2 iterations, then
    the local stage trains the same, not nnU-Net's default 1000 x 250."""
    from nnlandmark.planning.project import Project
    from nnlandmark.training.presets import TrainingSettings
    from nnlandmark.training.train import model_dir_for

    project = _project_copy(prepared_project, tmp_path / "project")
    epochs = 3
    schedule = f"epochs={epochs}, iterations_per_epoch=2, val_iterations=1"
    model = model_dir_for(Project.load(project), TrainingSettings())  # the default model: the cascade
    first = model / "fold_0" / "global"
    _kill_when([sys.executable, "-c", _TRAIN_API + f"train(sys.argv[1], 0, TrainingSettings({schedule}), "
                "progress=False)", str(project)],
               lambda: (first / "checkpoint_latest.pth").exists(), tmp_path / "killed_run.txt")
    killed = torch.load(first / "checkpoint_latest.pth", map_location="cpu", weights_only=False)
    assert 1 <= killed["current_epoch"] < epochs and not (model / "fold_0" / "local").exists()

    _resume_keeping_to([sys.executable, "-c", _TRAIN_API + "train(sys.argv[1], 0, continue_training=True, "
                        "progress=False)", str(project)], model, epochs, tmp_path / "resumed_run.txt")
    for stage in ("global", "local"):
        final = torch.load(model / "fold_0" / stage / "checkpoint_final.pth", map_location="cpu",
                           weights_only=False)
        assert final["current_epoch"] == epochs, stage
        curves = json.loads((model / "fold_0" / stage / "training_curves.json").read_text())
        assert len(curves["train_loss"]) == epochs, stage
    epochs_logged = [n for log in sorted(first.glob("training_log_*.txt"), key=lambda p: p.stat().st_mtime_ns)
                     for n in _logged_epochs(log)]
    assert epochs_logged.count(0) == 1  # the global stage continued, not restarted
    settings = json.loads((model / "nnlandmark.json").read_text())["settings"]
    assert (settings["epochs"], settings["iterations_per_epoch"], settings["val_iterations"]) == (epochs, 2, 1)


def test_run_resumed_in_the_same_second_appends_to_the_log(tmp_path):
    """nnU-Net names a log by the second its trainer starts; moving the resumed run's log into the
    fold must not replace the killed run's log of the same name."""
    from types import SimpleNamespace
    from nnlandmark.nnunet.trainer import LandmarkTrainer
    model_dir = tmp_path / "model"
    (model_dir / "fold_0").mkdir(parents=True)
    (model_dir / "fold_0" / "training_log_1.txt").write_text("killed run: Epoch 0\n")
    default_fold = tmp_path / "nnUNet_results" / "fold_0"  # where nnU-Net's __init__ started the new log
    default_fold.mkdir(parents=True)
    (default_fold / "training_log_1.txt").write_text("resumed run: header\n")
    trainer = SimpleNamespace(output_folder=str(default_fold), log_file=str(default_fold / "training_log_1.txt"),
                              fold=0, local_rank=0, logger=SimpleNamespace(output_folder=None))
    LandmarkTrainer._relocate(trainer, model_dir, model_dir / "fold_0")
    assert (model_dir / "fold_0" / "training_log_1.txt").read_text() == "killed run: Epoch 0\nresumed run: header\n"
    assert trainer.log_file == str(model_dir / "fold_0" / "training_log_1.txt")
    assert not default_fold.exists()


def _case_files(folder: Path) -> dict:
    """mtime (ns) of every case file of a folder tree, keyed by relative path."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("case_*") if p.is_file()}


def test_prepare_rerun_redoes_only_missing_or_changed_cases(prepared_project, synthetic_dataset, tmp_path,
                                                            capsys):
    from nnlandmark.nnunet.planning import preprocessed_folder
    from nnlandmark.planning.project import Project

    project_dir = _project_copy(prepared_project, tmp_path / "project")
    dataset = Path(shutil.copytree(synthetic_dataset, tmp_path / "data"))  # this test edits the dataset
    record = json.loads((project_dir / "project.json").read_text())
    record["dataset_dir"] = str(dataset.resolve())
    (project_dir / "project.json").write_text(json.dumps(record))
    project = Project.load(project_dir)
    raw = project.raw_dir()
    pre = preprocessed_folder(project.folders, project.dataset_name, project.plans())
    prepare = ["prepare", str(dataset), "-p", str(project_dir), "-np", "1"]

    # 1. a case whose preprocessing never finished is redone; the others are left alone
    before = {**_case_files(raw), **_case_files(pre)}
    removed = sorted(pre.glob("case_003*"))
    assert removed
    for f in removed:
        f.unlink()
    assert main(prepare) == 0
    assert "preprocessing" in capsys.readouterr().err  # the progress bar of the one case redone
    after = {**_case_files(raw), **_case_files(pre)}
    assert after.keys() == before.keys()
    changed = {k for k in before if after[k] != before[k]}
    assert changed == {str(f.relative_to(pre)) for f in removed}

    # 2. a corrected landmark file: that case is re-exported and re-preprocessed, nothing else
    lm_file = dataset / "landmarks" / "case_005.json"
    data = json.loads(lm_file.read_text())
    data["landmarks"]["vertex"] = (np.array(data["landmarks"]["vertex"]) + [0.0, 0.0, -0.5]).tolist()
    lm_file.write_text(json.dumps(data))
    before = after
    time.sleep(0.01)  # distinct mtimes on coarse clocks
    assert main(prepare) == 0
    after = {**_case_files(raw), **_case_files(pre)}
    changed = {k for k in before if after[k] != before[k]}
    assert changed and all(Path(k).name.startswith("case_005") for k in changed)
    assert any(k.endswith(".pkl") for k in changed)  # preprocessed again, not only re-exported
    sidecar = json.loads((raw / "landmarks_world.json").read_text())
    np.testing.assert_allclose(sidecar["case_005"]["vertex"], data["landmarks"]["vertex"])

    # 3. a removed case: refused before anything is written (fingerprint, plans and splits are for the old set)
    (dataset / "images" / "case_009.nii.gz").unlink()
    (dataset / "landmarks" / "case_009.json").unlink()
    hashes = {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in project_dir.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(prepare) == 2
    err = capsys.readouterr().err
    assert "cases changed since this project was prepared" in err and "removed ['case_009']" in err
    assert hashes == {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
                      for p in project_dir.rglob("*") if p.is_file()}


def test_predict_continue_skips_finished_cases(tiny_model, synthetic_dataset, tmp_path, capsys):
    images = [str(synthetic_dataset / "images" / f"case_00{i}.nii.gz") for i in range(3)]
    out = tmp_path / "predictions"
    assert main(["predict", "-i", images[0], "-o", str(out), "-m", str(tiny_model)]) == 0
    first = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert {"case_000.json", "case_000.mrk.json", "predictions.csv"} <= first.keys()
    # what a run killed while writing case_001 leaves behind: a temporary file only
    leftover = out / ".tmpk2x9_q1a_case_001.json"  # nnlandmark.files.temporary_name's pattern
    leftover.write_text('{"nose_tip": {"world_lps')

    capsys.readouterr()
    assert main(["predict", "-i", *images, "-o", str(out), "-m", str(tiny_model), "--continue"]) == 0
    assert "predicting" in capsys.readouterr().err  # the progress bar
    for name in ("case_000.json", "case_000.mrk.json"):
        assert (out / name).stat().st_mtime_ns == first[name], name  # not predicted again
    landmarks = json.loads((synthetic_dataset / "dataset.json").read_text())["landmarks"]
    for case in ("case_001", "case_002"):
        record = json.loads((out / f"{case}.json").read_text())
        assert list(record) == landmarks
        assert all(np.isfinite(r["world_lps_mm"]).all() for r in record.values())
        assert (out / f"{case}.mrk.json").is_file()
    assert not leftover.exists() and not list(out.glob(".tmp*"))
    rows = (out / "predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * len(landmarks)  # the summary covers resumed and earlier cases
    assert {r.split(",")[0] for r in rows[1:]} == {"case_000", "case_001", "case_002"}
