"""Absent landmarks on phantoms: the default softmax preset with its absent slot, against
the same preset without it and against ``cone``, at an equal time budget.

Phantoms (32^3 at 3 mm) with one ear left out of the image, and annotated absent, in a third
of the cases (``make_synthetic_dataset(absent_fraction=1/3)``); training and test sets from
different seeds. To fit a loaded 2-core machine, every model is the ``fullres`` configuration
of a small U-Net (nnU-Net's plan with 8-64 features, 32^3 patch = the whole phantom, batch 2).
Each model trains fold 0 for ``--minutes``; every test case is predicted with
every landmark written (presence thresholds 0), so that

- presence: the AUC of each model's score for the ears (present in the reference vs absent);
- localisation: the radial error of every landmark present in the reference.

    python benchmarks/absence/run_absence.py OUT [--minutes 3]
"""
from __future__ import annotations

import argparse
import shutil
import json
import time
from pathlib import Path

import numpy as np


def auc(scores, truth) -> float:
    """Probability that a present landmark scores above an absent one (ties count half)."""
    scores, truth = np.asarray(scores, float), np.asarray(truth, bool)
    pos, neg = scores[truth], scores[~truth]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def outcomes(pred_dir: Path, ref_dir: Path, names):
    """(scores, truth) of the ears and the radial errors of every reference-present landmark."""
    scores, truth, errors = [], [], []
    for ref in sorted((ref_dir / "landmarks").glob("*.json")):
        landmarks = json.loads(ref.read_text())["landmarks"]
        record = json.loads((pred_dir / ref.name).read_text())
        for name in names:
            r = record[name]
            if name.endswith("_ear"):
                scores.append(r["score"])
                truth.append(landmarks[name] != "absent")
            if landmarks[name] != "absent" and r["world_lps_mm"] is not None:
                errors.append(float(np.linalg.norm(np.subtract(r["world_lps_mm"], landmarks[name]))))
    return scores, truth, errors


def small_network(project_dir) -> None:
    """nnU-Net's 3d_fullres plan with at most 64 features per stage and a 32^3 patch, batch 2."""
    from nnlandmark.planning.project import Project
    project = Project.load(project_dir)
    plans = json.loads(project.plans_file.read_text())
    config = plans["configurations"]["3d_fullres"]
    arch = config["architecture"]["arch_kwargs"]
    arch["features_per_stage"] = [min(8 * 2 ** i, 64) for i in range(len(arch["features_per_stage"]))]
    config["patch_size"], config["batch_size"] = [32, 32, 32], 2
    project.plans_file.write_text(json.dumps(plans, indent=2))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--train-cases", type=int, default=24)
    parser.add_argument("--test-cases", type=int, default=12)
    args = parser.parse_args()
    from nnlandmark.data.synthetic import LANDMARK_NAMES, make_synthetic_dataset
    from nnlandmark.inference.model_folder import ModelFolder
    from nnlandmark.inference.predict import predict
    from nnlandmark.planning.project import prepare
    from nnlandmark.training.presets import TrainingSettings
    from nnlandmark.training.train import train

    out = args.out
    small = dict(shape=(32, 32, 32), spacing=(3.0, 3.0, 3.0), absent_fraction=1 / 3)
    train_dir = make_synthetic_dataset(out / "train", n_cases=args.train_cases, seed=0, **small)
    test_dir = make_synthetic_dataset(out / "test", n_cases=args.test_cases, seed=1, **small)
    prepare(train_dir, out / "project", num_processes=1, progress=False)
    small_network(out / "project")
    runs = {"softmax (absent slot, default)": dict(),
            "softmax without absent slot": dict(absence=False),
            "cone": dict(preset="cone")}
    rows = []
    for label, fields in runs.items():
        settings = TrainingSettings(time_budget_minutes=args.minutes, configuration="fullres", **fields)
        started = time.time()
        model = train(out / "project", 0, settings, progress=False)
        trained = time.time() - started
        # the runs share a model name (absence is a setting, not part of it): each is moved aside
        (out / "models").mkdir(exist_ok=True)
        model = Path(shutil.move(str(model), str(out / "models" / f"run{len(rows)}")))
        ModelFolder(model).update({"presence_thresholds": {n: 0.0 for n in LANDMARK_NAMES}})
        preds = predict(test_dir / "images", out / "predictions" / model.name, model, progress=False, overwrite=True)
        scores, truth, errors = outcomes(preds, test_dir, LANDMARK_NAMES)
        absence = json.loads((model / "nnlandmark.json").read_text())["settings"].get("absence")
        rows.append((label, absence, auc(scores, truth), int(np.sum(truth)), int(np.sum(~np.asarray(truth))),
                     float(np.mean(errors)), float(np.median(errors)), len(errors), trained))
        print(rows[-1], flush=True)
    lines = ["| model | absence learned | ear presence AUC | present / absent ears | MRE of present landmarks (mm) "
             "| median | points | training s |", "|---|---|---|---|---|---|---|---|"]
    for label, absence, a, npos, nneg, mre, med, n, secs in rows:
        lines.append(f"| {label} | {absence} | {a:.3f} | {npos} / {nneg} | {mre:.2f} | {med:.2f} | {n} | {secs:.0f} |")
    table = "\n".join(lines)
    print(table)
    (out / "results.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
