"""AFIDs template benchmark: does the calibrated radius hold its coverage on new cases?

Takes the models that ``run_cascade.py`` trained (``--out``/models/<name>, fold 0 each) and, for
each model:

1. copies it (the benchmark's own model folder is left as it was) and runs ``evaluate-cv`` on the
   copy: fold 0 predicts its 5 validation cases (5 x 32 = 160 points, fewer than 20 per landmark,
   so the pooled scale is used), and the split-conformal scale for ``--coverage`` is stored;
2. predicts the three test subsets of ``run_cascade.py`` with the calibrated copy (T1w: the
   calibration cases' contrast and pose range; strong pose: poses outside it; T2w: a contrast the
   model never saw) and reports, per subset: MRE, the observed coverage of ``radius_95_mm`` (the
   fraction of the 8 x 32 reference points within it), the mean radius, and the Spearman
   correlation between ``uncertainty_mm`` and the radial error (does the spread rank the errors?);
3. as a yardstick, the same coverage target met by one radius for every point: the conformal
   quantile of the calibration errors themselves (no spread). A spread that ranks errors gives
   the same coverage with a smaller mean radius.

Split conformal guarantees the coverage only for cases exchangeable with the calibration cases:
expect it on T1w (up to the noise of 160 calibration points and 256 test points), not on T2w.

Usage (main venv, from the repository root, after ``run_cascade.py`` wrote ``--out``)::

    python benchmarks/afids_template/run_uncertainty.py --out bench_output/afids_cascade \\
        [--models softmax_cascade_c0_30min ...] [--coverage 0.95]

Writes ``--out``/uncertainty/results.md and results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _subsets(out: Path) -> dict:
    """The test subsets ``run_cascade.py`` generated (never regenerated here)."""
    data = out / "data"
    subsets = {"T1w": data / "test", "strong pose": data / "test_strong_pose", "T2w (unseen contrast)": data / "test_t2w"}
    missing = [str(p) for p in subsets.values() if not (p / "images").is_dir()]
    if missing:
        raise SystemExit(f"{', '.join(missing)}: missing; run run_cascade.py with this --out first")
    return subsets


def _values(prediction_dir: Path, result, key: str) -> np.ndarray:
    from nnlandmark.evaluation.conformal import record_values
    from nnlandmark.evaluation.evaluate import list_case_files
    files, _ = list_case_files(prediction_dir)
    return record_values(files, result.case_ids, result.landmark_names, key)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr
    keep = np.isfinite(a) & np.isfinite(b)
    return float(spearmanr(a[keep], b[keep]).statistic) if keep.sum() > 2 else float("nan")


def run_model(out: Path, name: str, subsets: dict, coverage: float) -> list:
    from nnlandmark.evaluation.conformal import conformal_quantile
    from nnlandmark.evaluation.cross_validation import evaluate_cv
    from nnlandmark.evaluation.evaluate import evaluate
    from nnlandmark.inference.predict import predict
    from nnlandmark.inference.uncertainty import radius_key

    work = out / "uncertainty" / name
    model = work / "model"
    if model.exists():
        shutil.rmtree(model)
    shutil.copytree(out / "models" / name, model, ignore=shutil.ignore_patterns("checkpoint_latest.pth"))
    t0 = time.perf_counter()
    cv = evaluate_cv(out / "project", work / "cv", model_dir=model, overwrite=True, progress=False,
                     coverage=coverage)
    calibration = json.loads((model / "nnlandmark.json").read_text())["uncertainty_calibration"]
    key = radius_key(coverage)
    # the yardstick: one radius for all, the conformal quantile of the calibration errors alone
    present = np.asarray(cv.reference_status) == "present"
    constant = conformal_quantile(np.where(present, cv.errors, np.nan), coverage)
    print(f"\n== {name}: calibrated on {calibration['n_pooled']} cross-validation points in "
          f"{time.perf_counter() - t0:.0f} s; pooled scale {calibration['pooled_scale']}, constant radius "
          f"{constant:.2f} mm", flush=True)
    rows = []
    for subset, folder in subsets.items():
        predictions = work / "predictions" / subset.split()[0]
        predict(folder / "images", predictions, model, folds=[0], overwrite=True, progress=False)
        result = evaluate(predictions, folder)
        c = result.coverage["overall"]
        errors = result.errors.ravel()
        spread = _values(predictions, result, "uncertainty_mm").ravel()
        within_constant = float(np.mean(errors[np.isfinite(errors)] <= constant))
        rows.append({"model": name, "subset": subset, "coverage_target": coverage, "radius_key": key,
                     "calibration_points": calibration["n_pooled"], "scale": calibration["pooled_scale"],
                     "mre_mm": result.summary["overall"]["mre_mm"], "n": c["with_radius"],
                     "coverage": c["coverage"], "mean_radius_mm": c["mean_radius_mm"],
                     "median_uncertainty_mm": float(np.nanmedian(spread)),
                     "spearman_uncertainty_error": _spearman(spread, errors),
                     "constant_radius_mm": constant, "constant_radius_coverage": within_constant,
                     "worst_landmark_coverage": min(
                         (r["coverage"], n) for n, r in result.coverage["per_landmark"].items() if r["with_radius"])})
        r = rows[-1]
        print(f"  {subset:<22} MRE {r['mre_mm']:6.2f} mm | {key}: coverage {r['coverage']:.1%} of {r['n']}, mean "
              f"radius {r['mean_radius_mm']:.2f} mm | constant {constant:.2f} mm: {within_constant:.1%} | "
              f"Spearman(uncertainty, error) {r['spearman_uncertainty_error']:.2f}", flush=True)
    return rows


def write_report(out: Path, rows: list, args, load) -> Path:
    folder = out / "uncertainty"
    (folder / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [f"# AFIDs template: coverage of the calibrated radius (target {100 * args.coverage:g} %)", "",
             f"Calibration: `evaluate-cv --coverage {args.coverage:g}` on fold 0's 5 validation cases (pooled over "
             f"32 landmarks). Test: 8 cases x 32 landmarks per subset. Load average before the run "
             f"{' / '.join(f'{v:.2f}' for v in load)}. Command: `python benchmarks/afids_template/run_uncertainty.py "
             f"--out {args.out} --models {' '.join(args.models)} --coverage {args.coverage:g}`.", "",
             "| model | subset | MRE (mm) | coverage | mean radius (mm) | worst landmark | constant radius: mm, "
             "coverage | Spearman(uncertainty, error) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        worst, landmark = r["worst_landmark_coverage"]
        lines.append(f"| {r['model']} | {r['subset']} | {r['mre_mm']:.2f} | {100 * r['coverage']:.1f} % | "
                     f"{r['mean_radius_mm']:.2f} | {landmark} {100 * worst:.0f} % | {r['constant_radius_mm']:.2f}, "
                     f"{100 * r['constant_radius_coverage']:.1f} % | {r['spearman_uncertainty_error']:.2f} |")
    (folder / "results.md").write_text("\n".join(lines) + "\n")
    return folder / "results.md"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench_output/afids_cascade"),
                    help="the --out of run_cascade.py (its models/, data/ and project/)")
    ap.add_argument("--models", nargs="+", default=None, help="model names under OUT/models (default: all)")
    ap.add_argument("--coverage", type=float, default=0.95)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()
    out = args.out.resolve()
    args.models = args.models or sorted(p.name for p in (out / "models").iterdir() if p.is_dir())
    subsets = _subsets(out)
    rows = []
    for name in args.models:
        rows += run_model(out, name, subsets, args.coverage)
        report = write_report(out, rows, args, load)  # after each model: a partial report survives
    print("\n" + report.read_text(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
