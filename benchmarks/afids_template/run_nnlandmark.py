"""nnlandmark side of the AFIDs template benchmark, trained for a wall-clock budget.

Runs in nnlandmark's own environment and uses only its public Python API
(``prepare``, ``train``, ``predict``); :mod:`run_benchmark` starts it as a subprocess so
that its peak memory and CPU time are measured apart from the landmarker baseline.

Fitting a time budget
---------------------
nnlandmark (like nnU-Net) trains for a number of epochs, and its learning-rate schedule
(poly decay) is laid out over that number, so a run cannot simply be stopped when the time
is up. Instead:

1. calibration: fold 1 is trained for 2 epochs with the real schedule's epoch size; the
   second epoch's duration (the first carries one-off warm-up) gives the seconds per epoch,
   and the call's time outside its epochs the start-up and shutdown cost. The fold-1 model
   is deleted afterwards; the calibration time is reported, not counted as training.
2. training: fold 0 for ``N = floor((budget - start-up) / epoch seconds)`` epochs (at
   least 1). The reported training time is the real wall time of this call, which may be
   a little above or below the budget.

nnU-Net's 5-fold cross-validation holds about 20 % of the training cases out of fold 0
(they give the validation loss that picks ``checkpoint_best.pth``, which prediction uses),
so nnlandmark learns from about 80 % of the cases the baseline sees.

Outputs (``--out``)
-------------------
``project/``                 nnlandmark project (nnU-Net raw, preprocessed, results)
``predictions_<decoder>/``   prediction JSONs of the test images, one folder per decoder
``timings.json``             preparation, calibration, training and prediction times,
                             schedule, plans, peak resident memory

Usage (main venv)::

    python benchmarks/afids_template/run_nnlandmark.py --train-data TRAIN --test-images TEST/images \\
        --out OUT --budget-minutes 35 [--threads N] [--decoders argmax local-mean]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

import nnlandmark as nl
from nnlandmark.nnunet.planning import CONFIGURATION
from nnlandmark.planning.project import Project
from nnlandmark.training.train import model_dir_for

CALIBRATION_FOLD = 1
CALIBRATION_EPOCHS = 2


def _epoch_durations(checkpoint: Path) -> list:
    """Seconds of every epoch recorded in an nnU-Net checkpoint's log."""
    log = torch.load(checkpoint, map_location="cpu", weights_only=False)["logging"]
    return [end - start for start, end in zip(log["epoch_start_timestamps"], log["epoch_end_timestamps"])]


def _peak_rss_mb() -> dict:
    """Peak resident memory of this process and of its finished children (prepare's workers), MB."""
    to_mb = 1 / 1024.0  # ru_maxrss is in kilobytes on Linux
    return {"self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * to_mb,
            "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * to_mb}


def calibrate(project_dir: Path, settings: nl.TrainingSettings, device: str) -> dict:
    """Time a short run of fold 1 with the real epoch size; its model folder is removed after."""
    project = Project.load(project_dir)
    model_dir = model_dir_for(project, settings)
    fold_dir = model_dir / f"fold_{CALIBRATION_FOLD}"
    if fold_dir.exists():          # left over from an interrupted run: its timing would be stale
        shutil.rmtree(fold_dir)
    t0 = time.perf_counter()
    nl.train(project_dir, CALIBRATION_FOLD, replace(settings, epochs=CALIBRATION_EPOCHS), device=device,
             progress=False)
    seconds = time.perf_counter() - t0
    epochs = _epoch_durations(fold_dir / "checkpoint_final.pth")
    shutil.rmtree(fold_dir)
    return {"fold": CALIBRATION_FOLD, "epochs": len(epochs), "seconds": seconds,
            "epoch_seconds": epochs, "seconds_per_epoch": epochs[-1],
            "startup_seconds": max(0.0, seconds - sum(epochs))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-data", type=Path, required=True, help="dataset folder with the training cases only")
    ap.add_argument("--test-images", type=Path, required=True, help="folder of the test images")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--budget-minutes", type=float, required=True, help="wall-clock training time of fold 0")
    ap.add_argument("--iterations-per-epoch", type=int, default=25)
    ap.add_argument("--val-iterations", type=int, default=5,
                    help="validation batches per epoch (default: nnU-Net's 1:5 ratio to training batches)")
    ap.add_argument("--planner", default="default")
    ap.add_argument("--decoders", nargs="+", default=["argmax", "local-mean"],
                    help="decoders to predict with; the first one's time is the reported prediction time")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    project_dir = out / "project"
    settings = nl.TrainingSettings(epochs=1, iterations_per_epoch=args.iterations_per_epoch,
                                   val_iterations=args.val_iterations)
    budget = args.budget_minutes * 60.0
    print(f"nnlandmark: budget {args.budget_minutes} min, {threads} threads, device {args.device}", flush=True)

    t0 = time.perf_counter()
    nl.prepare(args.train_data, project_dir, planner=args.planner, num_processes=min(2, threads), progress=False)
    prepare_seconds = time.perf_counter() - t0
    project = Project.load(project_dir)
    plan = project.plans()["configurations"][CONFIGURATION]
    print(f"  prepared in {prepare_seconds:.0f} s: patch {plan['patch_size']}, batch {plan['batch_size']}, "
          f"spacing {plan['spacing']}", flush=True)

    cal = calibrate(project_dir, settings, args.device)
    epochs = max(1, math.floor((budget - cal["startup_seconds"]) / cal["seconds_per_epoch"]))
    print(f"  calibration: {cal['seconds_per_epoch']:.1f} s/epoch of {args.iterations_per_epoch} iterations, "
          f"start-up {cal['startup_seconds']:.1f} s -> {epochs} epochs", flush=True)

    settings = replace(settings, epochs=epochs)
    t0 = time.perf_counter()
    model_dir = nl.train(project_dir, 0, settings, device=args.device, progress=False)
    train_seconds = time.perf_counter() - t0
    fold_dir = model_dir / "fold_0"
    best = torch.load(fold_dir / "checkpoint_best.pth", map_location="cpu", weights_only=False)
    iterations = epochs * args.iterations_per_epoch
    # nnU-Net stores the number of finished epochs under current_epoch
    best_after = int(best["current_epoch"])
    split = json.loads((project.folders.preprocessed / project.dataset_name / "splits_final.json").read_text())[0]
    print(f"  trained {epochs} epochs ({iterations} iterations) in {train_seconds:.0f} s on "
          f"{len(split['train'])} cases ({len(split['val'])} held out for validation); "
          f"best validation loss after epoch {best_after}", flush=True)

    n_test = len([p for p in args.test_images.iterdir() if p.name.endswith((".nii.gz", ".nii", ".nrrd", ".mha"))])
    predictions = {}
    for decoder in args.decoders:
        t0 = time.perf_counter()
        nl.predict(args.test_images, out / f"predictions_{decoder}", model_dir, folds=[0], device=args.device,
                   decoder=decoder, overwrite=True, progress=False)
        seconds = time.perf_counter() - t0
        predictions[decoder] = {"folder": f"predictions_{decoder}", "seconds": seconds,
                                "seconds_per_case": seconds / max(n_test, 1)}
        print(f"  predicted {n_test} case(s) with {decoder}: {seconds / max(n_test, 1):.1f} s/case", flush=True)

    timings = {
        "prepare_seconds": prepare_seconds,
        "calibration": cal,
        "train_seconds": train_seconds,
        "budget_seconds": budget,
        "epochs": epochs, "iterations_per_epoch": args.iterations_per_epoch,
        "val_iterations": args.val_iterations, "iterations": iterations,
        "seconds_per_iteration": train_seconds / iterations,
        "best_after_epochs": best_after,
        "checkpoint_used": "checkpoint_best.pth",
        "predictions": predictions,
        # one model load per decoder pass is included; cases are read, preprocessed and written too
        "predict_seconds_mean": predictions[args.decoders[0]]["seconds_per_case"],
        "peak_rss_mb": _peak_rss_mb(),
        "threads": threads, "device": args.device,
        "plans": {"planner": args.planner, "configuration": CONFIGURATION,
                  "patch_size": plan["patch_size"], "batch_size": plan["batch_size"],
                  "spacing": plan["spacing"]},
        "settings": settings.to_dict(),
        "model_dir": str(model_dir),
        "fold0_train_cases": split["train"], "fold0_val_cases": split["val"],
    }
    (out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
