"""ISBI 2015 cephalometric benchmark: nnlandmark on 400 real lateral cephalograms, beside published rows.

From the challenge's layout (``RawImage/``, ``AnnotationsByMD/``; see README.md) to a
markdown table, in one command:

1. ``convert isbi2015`` into ``OUT/data/{train,test1,test2}`` (ground truth: the mean of
   the two doctors unless ``--ground-truth``); with ``--subset N`` only the first N
   cases of each set are used (``OUT/data_subsetN``), for a plumbing check;
2. ``prepare`` the training images (``OUT/project``);
3. for each ``--budgets`` value (minutes): train ``--fold`` from scratch with that time
   budget (``OUT/models/<budget>min``), predict test1 and test2 (in a child process, so
   that its peak memory is the prediction's own), and evaluate against the ground truth
   of training **and** against the senior doctor;
4. beside them, on the same test images: the mean-position atlas of the same training
   images (:mod:`nnlandmark.evaluation.baselines`), the junior doctor against the senior
   one, and the published rows (MRE and SDR@2 mm, as tabulated by Ao & Wu 2022).

Outputs: ``OUT/results.md`` (tables: overall, per landmark), ``OUT/results.json``
(everything), ``OUT/evaluation/<row>/<test set>/`` (nnlandmark's evaluation files),
``OUT/predictions/``, ``OUT/baselines/``.

Usage (main venv, from the repository root)::

    python benchmarks/isbi2015/run_benchmark.py ISBI_DIR --out bench_output/isbi2015 --budgets 15 30 60
    python benchmarks/isbi2015/run_benchmark.py ISBI_DIR --out /tmp/isbi_smoke --subset 3 --budgets 1 --spacing 2
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

THRESHOLDS_MM = (2.0, 2.5, 3.0, 4.0)
TEST_SETS = ("test1", "test2")
#: Published results (test MRE mm, SDR@2 mm %), as tabulated by Ao & Wu 2022 (FARNet, J Digit
#: Imaging, Table 1); the ground truth (senior doctor or the doctors' mean) varies between papers.
PUBLISHED = {
    "test1": [("Lindner et al. 2016", 1.67, 74.95), ("Chen et al. 2019", 1.17, 86.67),
              ("Zhong et al. 2019", 1.12, 86.91), ("FARNet (Ao & Wu 2022)", 1.12, 88.03),
              ("landmarker, its ISBI example", None, 84.53)],
    "test2": [("Lindner et al. 2016", 1.92, 66.11), ("Chen et al. 2019", 1.48, 75.05),
              ("Zhong et al. 2019", 1.42, 76.00), ("FARNet (Ao & Wu 2022)", 1.42, 77.00),
              ("landmarker, its ISBI example", None, 73.11)],
}
REFERENCES = {"mean": "doctors' mean", "senior": "senior doctor", "junior": "junior doctor"}


def convert(src: Path, out: Path, ground_truth: str) -> Path:
    """``OUT/data`` converted from the challenge layout (reused when it was converted the same way)."""
    from nnlandmark.data.convert import run_converter
    data = out / "data"
    notes = data / "conversion_notes.json"
    if notes.is_file():
        done = json.loads(notes.read_text())
        if done.get("source") == str(src.resolve()) and done.get("ground_truth") == ground_truth:
            print(f"data: reusing {data}", flush=True)
            return data
        raise SystemExit(f"error: {data} holds another conversion ({done.get('source')}, ground truth "
                         f"{done.get('ground_truth')}); choose another --out")
    t0 = time.perf_counter()
    run_converter("isbi2015", src, data, ground_truth=ground_truth)
    print(f"data: converted in {time.perf_counter() - t0:.1f} s", flush=True)
    return data


def subset(data: Path, out: Path, n: int) -> Path:
    """The first ``n`` cases of each converted set, copied to ``OUT/data_subsetN``."""
    target = out / f"data_subset{n}"
    if target.exists():
        shutil.rmtree(target)
    for name in ("train", *TEST_SETS):
        src, dst = data / name, target / name
        cases = sorted(p.stem for p in (src / "landmarks").glob("*.json"))[:n]
        for sub in ("images", "landmarks", "doctors/senior", "doctors/junior"):
            (dst / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(src / "dataset.json", dst / "dataset.json")
        for case in cases:
            for image in (src / "images").glob(f"{case}.*"):
                shutil.copy(image, dst / "images" / image.name)
            for sub in ("landmarks", "doctors/senior", "doctors/junior"):
                shutil.copy(src / sub / f"{case}.json", dst / sub / f"{case}.json")
    return target


def references(data: Path, test_set: str, ground_truth: str) -> dict:
    """Reference label -> landmark folder: the training ground truth, and the senior doctor."""
    refs = {ground_truth: data / test_set}
    refs.setdefault("senior", data / test_set / "doctors" / "senior")
    return refs


def row(result, **fields) -> dict:
    overall = result.summary["overall"]
    return {**fields, "mre": overall["mre_mm"], "std": overall["std_mm"], "median": overall["median_mm"],
            "n": overall["n_valid"], "missing": overall["n_missing"],
            "sdr": {f"{t:g}": overall["sdr"].get(f"{t:g}") for t in THRESHOLDS_MM},
            "per_landmark": {name: {"mre": v["mre_mm"], "sdr2": v["sdr"].get("2")}
                             for name, v in result.summary["per_landmark"].items()}}


def evaluate_rows(predictions: Path, data: Path, test_set: str, ground_truth: str, out: Path, label: str,
                  **fields) -> list:
    from nnlandmark.evaluation.evaluate import evaluate
    rows = []
    for ref, folder in references(data, test_set, ground_truth).items():
        result = evaluate(predictions, folder, thresholds=THRESHOLDS_MM,
                          output_dir=out / "evaluation" / label.replace(" ", "_") / f"{test_set}_vs_{ref}",
                          overwrite=True)
        rows.append(row(result, method=label, test_set=test_set, reference=ref, **fields))
    return rows


def baseline_rows(data: Path, ground_truth: str, out: Path) -> list:
    """The atlas (mean training positions) and the junior doctor, on each test set."""
    from nnlandmark.evaluation.baselines import write_baseline_predictions
    from nnlandmark.evaluation.evaluate import evaluate
    spacing = json.loads((data / "train" / "dataset.json").read_text()).get("spacing")
    rows = []
    for test_set in TEST_SETS:
        written = write_baseline_predictions(data / "train", data / test_set / "images", out / "baselines" / test_set,
                                             spacing=spacing)
        rows += evaluate_rows(written["mean position"], data, test_set, ground_truth, out,
                              "mean-position atlas (no learning)")
        result = evaluate(data / test_set / "doctors" / "junior", data / test_set / "doctors" / "senior",
                          thresholds=THRESHOLDS_MM)
        rows.append(row(result, method="junior doctor", test_set=test_set, reference="senior"))
    return rows


def epochs_trained(model: Path, fold: int) -> dict:
    """Stage -> epochs trained, from each stage's ``training_curves.json``."""
    found = {}
    for curves in sorted((model / f"fold_{fold}").rglob("training_curves.json")):
        stage = curves.parent.relative_to(model / f"fold_{fold}").as_posix()
        found[stage if stage != "." else "fullres"] = len(json.loads(curves.read_text())["train_loss"])
    return found


def predict_child(images: Path, predictions: Path, model: Path, fold: int) -> tuple[float, float]:
    """Predict in a child process; returns (seconds per image, the child's peak resident MB)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                                     os.environ.get("PYTHONPATH")])))
    # the peak of the child's own memory: VmHWM (reset by exec); ru_maxrss would also count the
    # parent's resident memory at the fork (Linux keeps it across exec)
    code = ("import sys, re, nnlandmark as nl; "
            "nl.predict(sys.argv[1], sys.argv[2], sys.argv[3], folds=[int(sys.argv[4])], overwrite=True, "
            "progress=False); "
            "print('PEAK_MB', int(re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read()).group(1)) / 1024)")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, str(images), str(predictions), str(model), str(fold)],
                          env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"prediction failed:\n{done.stdout}\n{done.stderr}")
    peak = float(done.stdout.split("PEAK_MB")[-1].split()[0])
    return seconds / len(list(images.iterdir())), peak


def train_rows(project: Path, data: Path, budget: float, args, out: Path) -> list:
    import nnlandmark as nl
    fields = {k: v for k, v in (("preset", args.preset), ("configuration", args.configuration)) if v}
    settings = nl.TrainingSettings(time_budget_minutes=budget, **fields)
    kept = out / "models" / f"{budget:g}min"
    if kept.exists():
        shutil.rmtree(kept)
    print(f"\n== training fold {args.fold}, {budget:g} min (load average {os.getloadavg()[0]:.2f})", flush=True)
    t0 = time.perf_counter()
    model = nl.train(project, args.fold, settings, progress=False)
    train_seconds = time.perf_counter() - t0
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(model), kept)  # the next budget trains from scratch in the same project
    epochs = epochs_trained(kept, args.fold)
    print(f"  trained in {train_seconds:.0f} s: epochs {epochs}", flush=True)
    rows = []
    for test_set in TEST_SETS:
        predictions = out / "predictions" / f"{budget:g}min" / test_set
        per_image, peak_mb = predict_child(data / test_set / "images", predictions, kept, args.fold)
        new = evaluate_rows(predictions, data, test_set, args.ground_truth, out, f"nnlandmark {budget:g} min",
                            budget_minutes=budget, train_seconds=train_seconds, epochs=epochs,
                            predict_seconds_per_image=per_image, predict_peak_mb=peak_mb, model=kept.name)
        for r in new:
            print(f"  {test_set} vs {REFERENCES[r['reference']]}: MRE {r['mre']:.2f} mm, SDR@2 "
                  f"{100 * r['sdr']['2']:.1f} %; {per_image:.2f} s and {peak_mb:.0f} MB per prediction run",
                  flush=True)
        rows += new
    return rows


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def write_report(out: Path, rows: list, args, data: Path, started: float, load_start) -> None:
    (out / "results.json").write_text(json.dumps({"rows": rows, "args": {k: str(v) for k, v in vars(args).items()}},
                                                 indent=2) + "\n")
    n = {s: len(list((data / s / "images").iterdir())) for s in ("train", *TEST_SETS)}
    lines = ["# ISBI 2015 cephalometric benchmark", "",
             f"Training: {n['train']} images (TrainingData), fold {args.fold} (nnU-Net holds out a fifth for "
             f"validation); ground truth for training: {REFERENCES[args.ground_truth]}. Images: the JPEG copies of "
             "the challenge's BMPs (see README.md). Load average before the run "
             f"{' / '.join(f'{v:.2f}' for v in load_start)}, {args.threads} torch threads; the whole run took "
             f"{(time.time() - started) / 60:.1f} min. Command: `python benchmarks/isbi2015/run_benchmark.py "
             f"{' '.join(sys.argv[1:])}`.", ""]
    if args.subset:
        lines += [f"**Plumbing check on a subset ({args.subset} images per set): the numbers mean nothing.**", ""]
    for test_set in TEST_SETS:
        lines += [f"## {test_set} ({n[test_set]} images)", "",
                  "| method | reference | MRE +- std (mm) | median | SDR@2 | SDR@2.5 | SDR@3 | SDR@4 | train min "
                  "| epochs | predict s/image | predict peak MB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        ours_first = sorted((r for r in rows if r["test_set"] == test_set),
                            key=lambda r: (not r["method"].startswith("nnlandmark"), r.get("budget_minutes", 0)))
        for r in ours_first:
            epochs = ", ".join(f"{k} {v}" for k, v in r.get("epochs", {}).items()) or "-"
            timing = (f"{r['train_seconds'] / 60:.1f} | {epochs} | {r['predict_seconds_per_image']:.2f} | "
                      f"{r['predict_peak_mb']:.0f}") if "train_seconds" in r else "- | - | - | -"
            lines.append(f"| {r['method']} | {REFERENCES[r['reference']]} | {r['mre']:.2f} +- {r['std']:.2f} | "
                         f"{r['median']:.2f} | {_pct(r['sdr']['2'])} | {_pct(r['sdr']['2.5'])} | "
                         f"{_pct(r['sdr']['3'])} | {_pct(r['sdr']['4'])} | {timing} |")
        for name, mre, sdr2 in PUBLISHED[test_set]:
            lines.append(f"| {name} (published) | varies | {'-' if mre is None else f'{mre:.2f}'} | - | {sdr2:.2f} "
                         "| - | - | - | GPU, hours | - | - | - |")
        lines.append("")
    lines += ["Published rows: test MRE and SDR@2 mm as tabulated by Ao & Wu 2022 (FARNet, J Digit Imaging, "
              "Table 1), and landmarker's figure from its own ISBI example, both as quoted in issue #19, which also "
              "says they were trained for hours on GPUs; which ground truth each used (senior doctor or the "
              "doctors' mean) varies. Our rows are measured on JPEG copies of the challenge's BMP images. "
              "'predict s/image' is the prediction child process's wall time (start-up and model loading "
              "included) divided by the number of images; 'predict peak MB' its peak resident memory.", ""]
    reference_rows = [r for r in rows if r["reference"] == args.ground_truth and "per_landmark" in r]
    for test_set in TEST_SETS:
        shown = [r for r in reference_rows if r["test_set"] == test_set]
        doctors = [r for r in rows if r["test_set"] == test_set and r["method"] == "junior doctor"]
        shown += doctors
        if not shown:
            continue
        lines += [f"### {test_set}, per landmark: MRE mm (SDR@2 %)", "",
                  "| landmark | " + " | ".join(f"{r['method']} vs {REFERENCES[r['reference']]}" for r in shown) + " |",
                  "|---" * (len(shown) + 1) + "|"]
        for name in shown[0]["per_landmark"]:
            cells = [f"{r['per_landmark'][name]['mre']:.2f} ({_pct(r['per_landmark'][name]['sdr2'])})"
                     for r in shown]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(f"Peak resident memory of the benchmark process (conversion, preparation, training): "
                 f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB.")
    (out / "results.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("isbi", type=Path, help="the challenge's folder (RawImage/, AnnotationsByMD/)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--budgets", type=float, nargs="+", default=[15.0],
                    help="training minutes; several give a learning curve (each trained from scratch)")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--ground-truth", choices=["mean", "senior", "junior"], default="mean",
                    help="the training labels and first reference (the senior doctor is always evaluated too)")
    ap.add_argument("--subset", type=int, default=None, metavar="N",
                    help="only the first N images of each set (a plumbing check)")
    ap.add_argument("--spacing", type=float, nargs="+", default=None, metavar="MM",
                    help="prepare --spacing: the pixel spacing nnU-Net plans for (default: its own plan)")
    ap.add_argument("--preset", default=None, help="training preset (default: nnlandmark's)")
    ap.add_argument("--configuration", default=None, help="training configuration (default: nnlandmark's)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    import torch
    import nnlandmark as nl
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    started, load_start = time.time(), os.getloadavg()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = convert(args.isbi, out, args.ground_truth)
    if args.subset:
        data = subset(data, out, args.subset)
    t0 = time.perf_counter()
    project = out / "project"
    nl.prepare(data / "train", project, num_processes=min(2, args.threads), progress=False,
               target_spacing=args.spacing if args.spacing is None or len(args.spacing) > 1 else args.spacing[0])
    print(f"prepared in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = baseline_rows(data, args.ground_truth, out)
    write_report(out, rows, args, data, started, load_start)
    for budget in args.budgets:
        rows += train_rows(project, data, budget, args, out)
        write_report(out, rows, args, data, started, load_start)  # a partial report survives an interruption
    print("\n" + (out / "results.md").read_text(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
