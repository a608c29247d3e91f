"""nnlandmark side of the AFIDs template benchmark, trained for a wall-clock budget.

Runs in nnlandmark's own environment and uses only its public Python API
(``prepare``, ``train``, ``predict``); :mod:`run_benchmark` starts it as a subprocess so
that its peak memory and CPU time are measured apart from the landmarker baseline.

Fitting a time budget
---------------------
nnlandmark (like nnU-Net) trains for a number of epochs, and its learning-rate schedule
(poly decay) is laid out over that number, so a run cannot simply be stopped when the time
is up. The first epoch is therefore also the timing run:

1. fold 0 is trained for 1 epoch. Its duration gives the seconds per epoch (a slight
   overestimate, as it includes the warm-up of the first iterations), and the call's time
   outside the epoch the start-up and shutdown cost of one ``train`` call.
2. ``N = round((budget - 2 x start-up) / epoch seconds)`` epochs fit the budget (at least 1).
   When ``N > 1`` the fold is extended to ``N`` epochs with ``continue_training=True``.
   Poly decay gives epoch 0 the initial learning rate whatever the total, so the two calls
   train exactly as one ``N``-epoch run would. ``train`` leaves a finished fold as it is,
   so the 1-epoch run's ``checkpoint_final.pth`` is deleted first; training then resumes
   from its ``checkpoint_best.pth``, which after one epoch is the same state (weights,
   optimiser, log).

The reported training time is the wall time of both calls together; it can differ from the
budget by about half an epoch (the rounding) plus the error of the estimate.

nnU-Net's 5-fold cross-validation holds about 20 % of the training cases out of fold 0
(they give the validation loss that picks ``checkpoint_best.pth``, which prediction uses),
so nnlandmark learns from about 80 % of the cases the baseline sees.

Outputs (``--out``)
-------------------
``project/``                 nnlandmark project (nnU-Net raw, preprocessed, results)
``predictions_<decoder>/``   prediction JSONs of the test images, one folder per decoder
``timings.json``             preparation, training and prediction times, schedule, plans,
                             peak resident memory

Usage (main venv)::

    python benchmarks/afids_template/run_nnlandmark.py --train-data TRAIN --test-images TEST/images \\
        --out OUT --budget-minutes 25 [--threads N] [--decoders argmax local-mean]
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

import nnlandmark as nl
from nnlandmark.nnunet.planning import CONFIGURATION
from nnlandmark.planning.project import Project

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def _epoch_durations(checkpoint: Path) -> list:
    """Seconds of every epoch recorded in an nnU-Net checkpoint's log."""
    log = torch.load(checkpoint, map_location="cpu", weights_only=False)["logging"]
    return [end - start for start, end in zip(log["epoch_start_timestamps"], log["epoch_end_timestamps"])]


def _peak_rss_mb() -> dict:
    """Peak resident memory of this process and of its finished children (prepare's workers), MB."""
    to_mb = 1 / 1024.0  # ru_maxrss is in kilobytes on Linux
    return {"self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * to_mb,
            "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * to_mb}


def train_for_budget(project_dir: Path, settings: nl.TrainingSettings, budget_seconds: float,
                     device: str) -> tuple[Path, dict]:
    """Train fold 0 for as many epochs as fit ``budget_seconds`` (see the module docstring)."""
    t0 = time.perf_counter()
    model_dir = nl.train(project_dir, 0, replace(settings, epochs=1), device=device, progress=False)
    first_call = time.perf_counter() - t0
    fold_dir = model_dir / "fold_0"
    (epoch_seconds,) = _epoch_durations(fold_dir / "checkpoint_final.pth")
    startup = max(0.0, first_call - epoch_seconds)
    epochs = max(1, round((budget_seconds - 2 * startup) / epoch_seconds))
    print(f"  first epoch: {epoch_seconds:.1f} s for {settings.iterations_per_epoch} iterations, start-up "
          f"{startup:.1f} s -> {epochs} epochs in the {budget_seconds / 60:g} min budget", flush=True)
    second_call = 0.0
    if epochs > 1:
        # train() leaves a finished fold alone; without checkpoint_final.pth it resumes from
        # checkpoint_best.pth, which after a single epoch is that epoch's end state
        (fold_dir / "checkpoint_final.pth").unlink()
        t0 = time.perf_counter()
        nl.train(project_dir, 0, replace(settings, epochs=epochs), device=device, continue_training=True,
                 progress=False)
        second_call = time.perf_counter() - t0
    durations = _epoch_durations(fold_dir / "checkpoint_final.pth")
    if len(durations) != epochs:
        raise RuntimeError(f"{fold_dir}: {len(durations)} epochs in the final checkpoint, expected {epochs}")
    return model_dir, {"epochs": epochs, "first_epoch_seconds": epoch_seconds, "startup_seconds": startup,
                       "calls_seconds": [first_call, second_call], "train_seconds": first_call + second_call,
                       "epoch_seconds": durations}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-data", type=Path, required=True, help="dataset folder with the training cases only")
    ap.add_argument("--test-images", type=Path, required=True, help="folder of the test images")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--budget-minutes", type=float, required=True, help="wall-clock training time of fold 0")
    ap.add_argument("--iterations-per-epoch", type=int, default=5,
                    help="training batches per epoch: few, so that the budget holds several epochs "
                         "even at a minute per batch on a CPU (the budget is met to about half an epoch)")
    ap.add_argument("--val-iterations", type=int, default=1,
                    help="validation batches per epoch (about nnU-Net's 1:5 ratio to training batches)")
    ap.add_argument("--planner", default="default")
    ap.add_argument("--target-spacing", type=float, default=None,
                    help="isotropic spacing (mm) to plan for instead of the data's (coarser = faster on a CPU)")
    ap.add_argument("--decoders", nargs="+", default=["argmax", "local-mean"],
                    help="decoders to predict with, one prediction pass each")
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
    print(f"nnlandmark: budget {args.budget_minutes:g} min, {threads} threads, device {args.device}", flush=True)

    t0 = time.perf_counter()
    nl.prepare(args.train_data, project_dir, planner=args.planner, num_processes=min(2, threads),
               target_spacing=args.target_spacing, progress=False)
    prepare_seconds = time.perf_counter() - t0
    project = Project.load(project_dir)
    plan = project.plans()["configurations"][CONFIGURATION]
    print(f"  prepared in {prepare_seconds:.0f} s: patch {plan['patch_size']}, batch {plan['batch_size']}, "
          f"spacing {plan['spacing']}", flush=True)

    model_dir, schedule = train_for_budget(project_dir, settings, budget, args.device)
    epochs, train_seconds = schedule["epochs"], schedule["train_seconds"]
    settings = replace(settings, epochs=epochs)
    iterations = epochs * args.iterations_per_epoch
    best = torch.load(model_dir / "fold_0" / "checkpoint_best.pth", map_location="cpu", weights_only=False)
    best_after = int(best["current_epoch"])  # nnU-Net stores the number of finished epochs here
    split = json.loads((project.folders.preprocessed / project.dataset_name / "splits_final.json").read_text())[0]
    print(f"  trained {epochs} epochs ({iterations} iterations) in {train_seconds:.0f} s on "
          f"{len(split['train'])} cases ({len(split['val'])} held out for validation); "
          f"best validation loss after epoch {best_after}", flush=True)

    n_test = len([p for p in args.test_images.iterdir() if p.name.endswith(IMAGE_SUFFIXES)])
    predictions = {}
    for decoder in args.decoders:
        t0 = time.perf_counter()
        nl.predict(args.test_images, out / f"predictions_{decoder}", model_dir, folds=[0], device=args.device,
                   decoder=decoder, overwrite=True, progress=False)
        seconds = time.perf_counter() - t0
        # one model load per pass is included; cases are read, preprocessed and written too
        predictions[decoder] = {"folder": f"predictions_{decoder}", "seconds": seconds,
                                "seconds_per_case": seconds / max(n_test, 1)}
        print(f"  predicted {n_test} case(s) with {decoder}: {seconds / max(n_test, 1):.1f} s/case", flush=True)

    timings = {
        "prepare_seconds": prepare_seconds,
        "schedule": schedule,
        "train_seconds": train_seconds,
        "budget_seconds": budget,
        "epochs": epochs, "iterations_per_epoch": args.iterations_per_epoch,
        "val_iterations": args.val_iterations, "iterations": iterations,
        "seconds_per_iteration": train_seconds / iterations,
        "best_after_epochs": best_after,
        "checkpoint_used": "checkpoint_best.pth",
        "predictions": predictions,
        "predict_seconds_mean": predictions[args.decoders[0]]["seconds_per_case"],
        "peak_rss_mb": _peak_rss_mb(),
        "threads": threads, "device": args.device,
        "plans": {"planner": args.planner, "configuration": CONFIGURATION, "target_spacing": args.target_spacing,
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
