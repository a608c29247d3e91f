"""AFIDs template benchmark: the cascade's shape prior, on and off, for the same trained models.

Takes the models that ``run_cascade.py`` trained (``--out``/models/<name>, fold 0 each), copies each
(the benchmark's own folder is left as it was), writes fold 0's shape prior into the copy (models
trained before the prior existed have none; the same function ``train`` calls,
:func:`nnlandmark.training.train.record_shape_prior`), and predicts the three test subsets with
``predict(..., shape_prior=False)`` and ``True``. Same weights, same decoder (the model's default),
so the difference is the second look alone (:mod:`nnlandmark.inference.shape`).

Usage (main venv, repository root, after ``run_cascade.py`` wrote ``--out``)::

    python benchmarks/afids_template/run_shape_prior.py --out bench_output/afids_seed1 [--models NAME ...]

Writes ``--out``/shape_prior/results.md.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run_uncertainty import _subsets  # noqa: E402  (the test subsets run_cascade.py wrote)


def run_model(out: Path, name: str, subsets: dict) -> list:
    from nnlandmark.evaluation.evaluate import evaluate
    from nnlandmark.inference.predict import predict
    from nnlandmark.planning.project import Project
    from nnlandmark.training.train import record_shape_prior

    work = out / "shape_prior" / name
    model = work / "model"
    if model.exists():
        shutil.rmtree(model)
    shutil.copytree(out / "models" / name, model, ignore=shutil.ignore_patterns("checkpoint_latest.pth"))
    prior = record_shape_prior(Project.load(out / "project"), 0, model)
    print(f"\n== {name}: prior of {prior['cases']} training cases, median spread "
          f"{np.median(prior['spread_mm']):.2f} mm", flush=True)
    rows = []
    for subset, folder in subsets.items():
        for on in (False, True):
            predictions = work / ("with" if on else "without") / subset.split()[0]
            predict(folder / "images", predictions, model, folds=[0], overwrite=True, progress=False, shape_prior=on)
            result = evaluate(predictions, folder)
            errors = result.errors[np.isfinite(result.errors)]
            s = result.summary["overall"]
            rows.append((name, subset, "on" if on else "off", s["mre_mm"], s["std_mm"], float(np.median(errors)),
                         float(errors.max()), int((errors > 10).sum()), errors.size))
            print("  " + " | ".join(str(v) if isinstance(v, (str, int)) else f"{v:.2f}" for v in rows[-1][1:]),
                  flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench_output/afids_cascade"),
                    help="the --out of run_cascade.py (its models/, data/ and project/)")
    ap.add_argument("--models", nargs="+", default=None, help="model names under OUT/models (default: all)")
    args = ap.parse_args(argv)
    subsets = _subsets(args.out)
    names = args.models or sorted(p.name for p in (args.out / "models").iterdir() if p.is_dir())
    load = os.getloadavg()
    rows = [row for name in names for row in run_model(args.out, name, subsets)]
    lines = ["# AFIDs template: the cascade's shape prior off and on (same weights)", "",
             f"Load average before the run {' / '.join(f'{v:.2f}' for v in load)}. Command: "
             f"`python benchmarks/afids_template/run_shape_prior.py --out {args.out} --models {' '.join(names)}`.", "",
             "| model | subset | shape prior | MRE +- std (mm) | median | max | errors > 10 mm |", "|---|---|---|---|---|---|---|"]
    for name, subset, on, mre, std, median, worst, far, n in rows:
        lines.append(f"| {name} | {subset} | {on} | {mre:.2f} +- {std:.2f} | {median:.2f} | {worst:.1f} | {far} of {n} |")
    path = args.out / "shape_prior" / "results.md"
    path.write_text("\n".join(lines) + "\n")
    print(f"\n{path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
