"""nnlandmark side of the AFIDs template benchmark, trained for a wall-clock budget.

Runs in nnlandmark's own environment and uses only its public Python API
(``prepare``, ``train``, ``predict``); :mod:`run_benchmark` starts it as a subprocess so
that its peak memory and CPU time are measured apart from the landmarker baseline.

Fitting a time budget
---------------------
``train(..., TrainingSettings(time_budget_minutes=B))`` fits the number of epochs to the
wall clock as it trains (after every epoch, from the mean epoch time so far; the
learning-rate schedule follows), for all stages of the fold together (the cascade
gives each of its two stages half). The reported training time is the wall time of the
``train`` call; it exceeds the budget by the start-up and by up to about one epoch.

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
from pathlib import Path

import torch

import nnlandmark as nl
from nnlandmark.data.images import IMAGE_SUFFIXES
from nnlandmark.nnunet.planning import CONFIGURATION
from nnlandmark.planning.project import Project


def _epoch_durations(fold_dir: Path) -> dict:
    """Seconds of every epoch of each stage, from the training curves' stage folders."""
    out = {}
    for folder in [fold_dir, fold_dir / "global", fold_dir / "local"]:
        final = folder / "checkpoint_final.pth"
        if final.is_file():
            log = torch.load(final, map_location="cpu", weights_only=False)["logging"]
            out[folder.name if folder != fold_dir else "fullres"] = [
                end - start for start, end in zip(log["epoch_start_timestamps"], log["epoch_end_timestamps"])]
    return out


def _peak_rss_mb() -> dict:
    """Peak resident memory of this process and of its finished children (prepare's workers), MB."""
    to_mb = 1 / 1024.0  # ru_maxrss is in kilobytes on Linux
    return {"self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * to_mb,
            "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * to_mb}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-data", type=Path, required=True, help="dataset folder with the training cases only")
    ap.add_argument("--test-images", type=Path, required=True, help="folder of the test images")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--budget-minutes", type=float, required=True, help="wall-clock training time of fold 0")
    ap.add_argument("--iterations-per-epoch", type=int, default=5,
                    help="training batches per epoch: few, so that the budget holds several epochs "
                         "even at a minute per batch on a CPU (the budget is met to about one epoch)")
    ap.add_argument("--val-iterations", type=int, default=1,
                    help="validation batches per epoch (about nnU-Net's 1:5 ratio to training batches)")
    ap.add_argument("--preset", default="cone", help="training preset (cone: the MIDL method)")
    ap.add_argument("--configuration", default="fullres", help="fullres or cascade")
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
    settings = nl.TrainingSettings(preset=args.preset, configuration=args.configuration,
                                   time_budget_minutes=args.budget_minutes,
                                   iterations_per_epoch=args.iterations_per_epoch,
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

    t0 = time.perf_counter()
    model_dir = nl.train(project_dir, 0, settings, device=args.device, progress=False)
    train_seconds = time.perf_counter() - t0
    schedule = {stage: {"epochs": len(seconds), "epoch_seconds": seconds}
                for stage, seconds in _epoch_durations(model_dir / "fold_0").items()}
    epochs = sum(s["epochs"] for s in schedule.values())
    iterations = epochs * args.iterations_per_epoch
    split = json.loads((project.folders.preprocessed / project.dataset_name / "splits_final.json").read_text())[0]
    trained = ", ".join(f"{stage}: {record['epochs']} epochs" for stage, record in schedule.items())
    print(f"  trained {trained} "
          f"({iterations} iterations) in {train_seconds:.0f} s on "
          f"{len(split['train'])} cases ({len(split['val'])} held out for validation)", flush=True)

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
        "checkpoint_used": "checkpoint_best.pth",
        "predictions": predictions,
        "predict_seconds_mean": predictions[args.decoders[0]]["seconds_per_case"],
        "peak_rss_mb": _peak_rss_mb(),
        "threads": threads, "device": args.device,
        "plans": {"planner": args.planner, "configuration": args.configuration,
                  "target_spacing": args.target_spacing,
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
