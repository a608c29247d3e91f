"""AFIDs template benchmark, default model: the softmax cascade, held-out MRE against training minutes.

The same data as ``run_benchmark.py`` (same configuration and seed, hence the same 24
training and 8 test cases), plus two test subsets the model never trains on:

``T1w``
    the 8 test cases (the training contrast, the training pose range);
``T2w (unseen contrast)``
    the same 8 poses, deformations and intensity changes, made from the template's
    T2w image: nnU-Net's intensity augmentation is all the model has for it;
``strong pose``
    8 T1w cases with rotations up to 30 degrees and translations up to 20 mm
    (training: 12 degrees, 8 mm);
``storage orders``
    the 8 T1w test cases, each stored in another of the 48 voxel orders (axes permuted
    and flipped, every voxel at the same world position: LAS, RSA, ...; the training
    cases are all stored as the template is); its rows list each case's order and error.

For every method (``preset:configuration``) and every budget, fold 0 is trained from
scratch with ``TrainingSettings(time_budget_minutes=budget)`` (the epochs are fitted to
the wall clock as training goes), then predicts each subset with each decoder. The
no-learning baselines (each landmark at its mean training position; at the image
centre) are scored on the same subsets. Run it on an idle machine: the budget buys
fewer iterations when other jobs share the cores.

Outputs in ``--out``: ``results.json``, ``results.md`` (one table per subset, worst
subset first, and the learning curves as numbers) and ``learning_curve.png``.

``--heatmaps gaussian laplace adaptive`` trains every method once per target shape
(:data:`nnlandmark.training.presets.HEATMAPS`), each at every budget: an equal-budget comparison
of the shapes (the rows are labelled ``method+shape``; adaptive runs report their learned sigmas).

Usage (main venv, from the repository root)::

    python benchmarks/afids_template/run_cascade.py --out bench_output/afids_cascade \\
        --budgets 4 10 30 [--methods softmax:cascade cone:fullres softmax:cascade:0.5]
    python benchmarks/afids_template/run_cascade.py --out bench_output/afids_heatmaps \\
        --budgets 4 10 --heatmaps gaussian laplace adaptive

A second invocation with the same ``--out`` adds its rows to the report (rows of the same
method and budget are replaced).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import make_data  # noqa: E402
import run_benchmark  # noqa: E402

THRESHOLDS_MM = (2.0, 2.5, 3.0, 4.0)
STRONG_POSE = dict(rotation_deg=30.0, translation_mm=20.0)


def build_subsets(out: Path, config: dict) -> tuple[dict, dict]:
    """The training data and the test subsets: ``(data, {subset: dataset folder})``."""
    data = run_benchmark.build_data(out, config)
    subsets = {"T1w": Path(data["test"])}
    extra = {"T2w (unseen contrast)": dict(contrast="T2w"),
             "strong pose": dict(params=make_data.GenerationParams(**STRONG_POSE))}
    for name, kwargs in extra.items():
        folder = out / "data" / ("test_t2w" if "T2w" in name else "test_strong_pose")
        stamp = folder / "config.json"
        if not (stamp.is_file() and json.loads(stamp.read_text()) == config):
            shutil.rmtree(folder, ignore_errors=True)
            print(f"data: generating the '{name}' test subset", flush=True)
            make_data.build_dataset(folder, 0, config["n_test"], config["voxel_mm"], config["seed"], verbose=False,
                                    **kwargs)
            stamp.write_text(json.dumps(config))
        subsets[name] = folder
    subsets[STORAGE_ORDERS] = storage_order_subset(subsets["T1w"], out / "data" / "test_storage_orders", config)
    return data, subsets


STORAGE_ORDERS = "storage orders"


def storage_order_subset(source: Path, folder: Path, config: dict) -> Path:
    """The cases of ``source`` each stored in a different random voxel order (of the 48 signed
    axis permutations; SimpleITK's PermuteAxes and Flip keep every voxel's world position, so the
    landmark files are copied unchanged)."""
    import itertools

    import numpy as np
    import SimpleITK as sitk
    stamp = folder / "config.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == config:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(source, folder)
    orders = list(itertools.product(itertools.permutations(range(3)), itertools.product([False, True], repeat=3)))
    rng = np.random.default_rng(config["seed"])
    images = sorted((folder / "images").iterdir())
    for image_file, k in zip(images, rng.choice(len(orders), size=len(images), replace=False)):
        axes, flips = orders[k]
        image = sitk.ReadImage(str(image_file))
        sitk.WriteImage(sitk.PermuteAxes(sitk.Flip(image, list(flips)), list(axes)), str(image_file),
                        useCompression=True)
    stamp.write_text(json.dumps(config))
    return folder


def per_case_lines(result, folder: Path) -> list:
    """``case (storage order): MRE, max`` for each case of a subset."""
    import SimpleITK as sitk
    lines = []
    for row in result.case_rows():
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(folder / "images" / f"{row.case}.nii.gz"))
        reader.ReadImageInformation()
        # SimpleITK's letters (where each axis points), as nnlandmark.geometry.orientation_code writes them
        code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(reader.GetDirection())
        lines.append(f"{row.case} ({code}): {row.mre_mm:.2f} mm, max {row.max_mm:.2f}")
    return lines


def _row(result, **fields) -> dict:
    overall = result.summary["overall"]
    sdr = overall.get("sdr", {})
    return {**fields, "mre": overall["mre_mm"], "std": overall["std_mm"], "median": overall.get("median_mm"),
            "n": overall["n_valid"], "missing": overall["n_missing"],
            "sdr": {f"{t:g}": sdr.get(run_benchmark.threshold_key(t)) for t in THRESHOLDS_MM}}


def method_label(method: str, heatmap: str | None) -> str:
    """The ``method`` column of a run: ``method``, or ``method+heatmap`` when a shape was asked for."""
    return method if heatmap is None else f"{method}+{heatmap}"


def train_and_predict(project: Path, method: str, budget: float, subsets: dict, decoders, out: Path,
                      threads: int, heatmap: str | None = None) -> list:
    """``method`` is ``preset:configuration``, optionally ``:P`` for contrast augmentation P;
    ``heatmap`` a target shape (default: the preset's)."""
    import nnlandmark as nl
    from nnlandmark.evaluation.evaluate import evaluate
    preset, configuration, *contrast = method.split(":")
    settings = nl.TrainingSettings(preset=preset, configuration=configuration, time_budget_minutes=budget,
                                   contrast_augmentation=float(contrast[0]) if contrast else 0.0, heatmap=heatmap)
    name = (f"{preset}{'' if heatmap is None else '-' + heatmap}_{configuration}"
            f"_c{settings.contrast_augmentation:g}_{budget:g}min")
    label = method_label(method, heatmap)
    kept = out / "models" / name
    if kept.exists():
        shutil.rmtree(kept)
    t0 = time.perf_counter()
    print(f"\n== {label}, {budget:g} min (load average {os.getloadavg()[0]:.2f})", flush=True)
    model = nl.train(project, 0, settings, progress=False)
    train_seconds = time.perf_counter() - t0
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(model), kept)  # the next budget trains from scratch in the same project
    iterations = {}
    for stage in settings.stages:
        curves = json.loads((kept / "fold_0" / ("" if stage == "fullres" else stage) / "training_curves.json")
                            .read_text())
        iterations[stage] = len(curves["train_loss"]) * settings.iterations_per_epoch
    print(f"  trained in {train_seconds:.0f} s: {iterations} iterations", flush=True)
    learned = json.loads((kept / "nnlandmark.json").read_text()).get("learned_sigmas", {}).get("fold_0", {})
    if learned:
        print(f"  learned sigmas (voxels): {learned}", flush=True)
    rows = []
    for subset, folder in subsets.items():
        for decoder in decoders:
            predictions = out / "predictions" / name / decoder / subset.split()[0]
            t0 = time.perf_counter()
            nl.predict(folder / "images", predictions, kept, folds=[0], decoder=decoder, overwrite=True,
                       progress=False)
            per_case = (time.perf_counter() - t0) / len(list((folder / "images").iterdir()))
            result = evaluate(predictions, folder, thresholds=THRESHOLDS_MM)
            rows.append(_row(result, subset=subset, method=label, budget_minutes=budget, decoder=decoder,
                             train_seconds=train_seconds, iterations=iterations, predict_seconds_per_case=per_case,
                             threads=threads, heatmap=settings.heatmap, sigma=settings.gaussian_sigma,
                             learned_sigmas=learned))
            if subset in (STORAGE_ORDERS, "T1w"):
                rows[-1]["per_case"] = per_case_lines(result, folder)
            print(f"  {subset:<22} {decoder:<7} MRE {rows[-1]['mre']:6.2f} mm, SDR@2 {rows[-1]['sdr']['2']:.1%}, "
                  f"SDR@4 {rows[-1]['sdr']['4']:.1%}, {per_case:.1f} s/case", flush=True)
    return rows


def baseline_rows(train_dir: Path, subsets: dict, out: Path) -> list:
    from nnlandmark.evaluation.baselines import write_baseline_predictions
    from nnlandmark.evaluation.evaluate import evaluate
    rows = []
    for subset, folder in subsets.items():
        written = write_baseline_predictions(train_dir, folder / "images", out / "baselines" / subset.split()[0])
        for baseline, predictions in written.items():
            rows.append(_row(evaluate(predictions, folder, thresholds=THRESHOLDS_MM), subset=subset,
                             method=f"no learning: {baseline}", budget_minutes=0, decoder="-"))
    return rows


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def write_report(out: Path, rows: list, args, started: float, load_start) -> None:
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    learned = [r for r in rows if not r["method"].startswith("no learning")]
    worst_first = sorted({r["subset"] for r in rows},
                         key=lambda s: -max([r["mre"] for r in learned if r["subset"] == s] or [0]))
    lines = [f"# AFIDs template: {', '.join(args.methods)} against training minutes", "",
             f"{args.n_train} training / {args.n_test} test cases per subset at {args.voxel_mm:g} mm (seed "
             f"{args.seed}), fold 0 (nnU-Net holds out a fifth of the training cases for validation), "
             f"{args.threads} threads; load average before the run "
             f"{' / '.join(f'{v:.2f}' for v in load_start)}; the whole run took "
             f"{(time.time() - started) / 60:.0f} min. Last command: `python benchmarks/afids_template/run_cascade.py "
             f"--out {args.out} --budgets {' '.join(f'{b:g}' for b in args.budgets)} --methods "
             f"{' '.join(args.methods)}"
             f"{' --heatmaps ' + ' '.join(args.heatmaps) if args.heatmaps else ''}`.", ""]
    for subset in worst_first:
        lines += [f"## {subset}", "",
                  "| method | budget | decoder | MRE +- std (mm) | median | SDR@2 | SDR@2.5 | SDR@4 | iterations "
                  "| train s | predict s/case |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted((r for r in rows if r["subset"] == subset),
                        key=lambda r: (r["method"].startswith("no"), r["method"], r["budget_minutes"], r["decoder"])):
            its = ", ".join(f"{k} {v}" for k, v in r.get("iterations", {}).items()) or "-"
            lines.append(f"| {r['method']} | {r['budget_minutes']:g} min | {r['decoder']} | {r['mre']:.2f} +- "
                         f"{r['std']:.2f} | {r['median']:.2f} | {_pct(r['sdr']['2'])} | {_pct(r['sdr']['2.5'])} | "
                         f"{_pct(r['sdr']['4'])} | {its} | {r.get('train_seconds', 0):.0f} | "
                         f"{r.get('predict_seconds_per_case', 0):.1f} |")
        lines.append("")
        for r in rows:
            if r["subset"] == subset and r.get("per_case"):
                lines += [f"Per case, {r['method']}, {r['budget_minutes']:g} min, {r['decoder']}: "
                          + "; ".join(r["per_case"]) + ".", ""]
    adaptive = {(r["method"], r["budget_minutes"]): r["learned_sigmas"] for r in learned if r.get("learned_sigmas")}
    if adaptive:
        lines += ["## Learned sigmas (voxels of each stage's grid, fold 0)", "",
                  "| method | budget | stage | mean | min | max |", "|---|---|---|---|---|---|"]
        for (method, budget), stages in sorted(adaptive.items()):
            for stage, sigmas in stages.items():
                values = list(sigmas.values())
                lines.append(f"| {method} | {budget:g} min | {stage} | {sum(values) / len(values):.2f} | "
                             f"{min(values):.2f} | {max(values):.2f} |")
        lines.append("")
    lines.append(f"Peak resident memory of the run: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB.")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    _plot(out / "learning_curve.png", learned, rows)


def _plot(path: Path, learned: list, rows: list) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    subsets = list(dict.fromkeys(r["subset"] for r in rows))
    fig, axes = plt.subplots(1, len(subsets), figsize=(5 * len(subsets), 4), squeeze=False)
    for ax, subset in zip(axes[0], subsets):
        for key in dict.fromkeys((r["method"], r["decoder"]) for r in learned if r["subset"] == subset):
            points = sorted((r["budget_minutes"], r["mre"]) for r in learned
                            if r["subset"] == subset and (r["method"], r["decoder"]) == key)
            ax.plot(*zip(*points), marker="o", label=f"{key[0]} ({key[1]})")
        for r in rows:
            if r["subset"] == subset and r["method"].startswith("no learning"):
                ax.axhline(r["mre"], linestyle="--", color="grey")
                ax.annotate(r["method"].removeprefix("no learning: "), (0, r["mre"]), fontsize=7)
        ax.set(title=subset, xlabel="training minutes (fold 0, 2 CPU cores)", ylabel="held-out MRE (mm)",
               yscale="log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--budgets", type=float, nargs="+", default=[4.0, 10.0, 30.0], help="training minutes")
    ap.add_argument("--methods", nargs="+", default=["softmax:cascade"],
                    help="preset:configuration, or preset:configuration:P with contrast augmentation P")
    ap.add_argument("--heatmaps", nargs="+", default=None, metavar="SHAPE",
                    help="train every method once per target shape (gaussian, laplace, adaptive, cone), each at "
                         "every budget; default: each preset's own shape")
    ap.add_argument("--decoders", nargs="+", default=["mass", "argmax"])
    ap.add_argument("--n-train", type=int, default=24)
    ap.add_argument("--n-test", type=int, default=8)
    ap.add_argument("--voxel-mm", type=float, default=2.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--subsets", nargs="+", default=None, metavar="NAME",
                    help="test only these subsets (T1w, 'T2w (unseen contrast)', 'strong pose', 'storage orders')")
    args = ap.parse_args(argv)
    from nnlandmark.training.presets import HEATMAPS
    unknown = sorted(set(args.heatmaps or []) - set(HEATMAPS))
    if unknown:
        ap.error(f"unknown heatmap(s) {unknown}, choose from {list(HEATMAPS)}")
    import torch
    import nnlandmark as nl
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    started, load_start = time.time(), os.getloadavg()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    config = {"n_train": args.n_train, "n_test": args.n_test, "voxel_mm": args.voxel_mm, "seed": args.seed}
    data, subsets = build_subsets(out, config)
    if args.subsets:
        subsets = {name: folder for name, folder in subsets.items() if name in args.subsets}
    t0 = time.perf_counter()
    nl.prepare(data["train"], out / "project", num_processes=min(2, args.threads), progress=False)
    print(f"prepared in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = baseline_rows(Path(data["train"]), subsets, out)
    # runs of other methods or budgets from an earlier invocation on the same data stay in the report
    earlier = out / "results.json"
    runs = [(m, h) for m in args.methods for h in (args.heatmaps or [None])]
    planned = {(method_label(m, h), float(b)) for m, h in runs for b in args.budgets}
    if earlier.is_file():
        rows += [r for r in json.loads(earlier.read_text()) if not r["method"].startswith("no learning")
                 and (r["method"], float(r["budget_minutes"])) not in planned]
    # budget by budget, the shapes one after the other: a change in the machine's load during the
    # run then costs the shapes of one budget alike, not one shape all its budgets
    for budget in args.budgets:
        for method, heatmap in runs:
            rows += train_and_predict(out / "project", method, budget, subsets, args.decoders, out, args.threads,
                                      heatmap=heatmap)
            write_report(out, rows, args, started, load_start)  # after each run: a partial report survives
    print("\n" + (out / "results.md").read_text(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
