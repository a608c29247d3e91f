"""AFIDs template benchmark: nnlandmark vs the landmarker baseline at the same training time.

One command regenerates every accuracy number of the benchmark's README::

    python benchmarks/afids_template/run_benchmark.py --out bench_output/afids --budget-minutes 25
    python benchmarks/afids_template/run_benchmark.py --out bench_output/afids_smoke --smoke

Steps
-----
1. Data (:func:`make_data.build_dataset`) into ``OUT/data/all`` (kept and reused when a rerun
   asks for the same cases), then split into two dataset folders: ``OUT/data/train`` holds
   only the training cases (the only folder nnlandmark's ``prepare`` ever sees) and
   ``OUT/data/test`` only the test cases (their images are predicted, their landmarks are
   the references).
2. nnlandmark (``run_nnlandmark.py``, this environment): prepare with the default planner,
   train fold 0 for one epoch, extend it to as many epochs as fit the budget (the first
   epoch's duration sets the number), predict the test images with each decoder.
3. landmarker (``run_landmarker.py``, in its own venv, made by ``setup_landmarker_venv.sh``
   when missing): train for the same wall-clock budget on all training cases, predict.
4. Both prediction folders are scored by nnlandmark's :func:`nnlandmark.evaluate` against
   ``OUT/data/test`` (the same metric code for both), and ``OUT/results.json`` and
   ``OUT/results.md`` are written.

The two methods run one after the other, never together, each in its own subprocess:
its wall time, CPU time and peak resident memory (of the process and the children it
waited for, e.g. nnU-Net's preprocessing workers) come from ``os.wait4``; training and
prediction times come from each runner's ``timings.json``.

Each method's folder gets a ``run.json`` once it has finished, so a failed or skipped
method can be rerun alone (``--methods landmarker``) and the report (``--report-only``)
still covers both, as long as they were run on the same data configuration.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path


HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))        # make_data.py lives next to this script, not in a package

import make_data  # noqa: E402
from nnlandmark.evaluation.metrics import threshold_key  # noqa: E402

LANDMARKER_VENV = HERE / "work" / "venv_landmarker"
METHODS = ("nnlandmark", "landmarker")
#: SDR thresholds evaluated (all are in results.json; the table shows TABLE_SDR_MM).
THRESHOLDS_MM = (2.0, 2.5, 3.0, 4.0)
TABLE_SDR_MM = (2.0, 3.0, 4.0)
#: Target of the benchmark issue: nnlandmark's MRE at most this many voxels of the data.
TARGET_MRE_VOXELS = 2.0
#: Field of view (z, y, x mm) the landmarker grid must cover: the generated heads are up to
#: about 240 x 285 x 250 mm; 96 x 112 x 96 voxels of 2.5 mm (landmarker's default) is this.
LANDMARKER_FOV_MM = (240.0, 280.0, 240.0)

SMOKE = dict(n_train=5, n_test=1, voxel_mm=4.0, budget_minutes=1.0, iterations_per_epoch=1, val_iterations=1)


# --------------------------------------------------------------------------- data
def data_config(args) -> dict:
    """What identifies the generated data; method results are only comparable on equal configs."""
    return {"n_train": args.n_train, "n_test": args.n_test, "voxel_mm": args.voxel_mm, "seed": args.seed}


def _copy_cases(src: Path, dst: Path, cases: list) -> None:
    """A dataset folder at ``dst`` with the given cases of ``src`` (hard links where possible)."""
    if dst.exists():
        shutil.rmtree(dst)
    for sub, suffix in (("images", ".nii.gz"), ("landmarks", ".json")):
        (dst / sub).mkdir(parents=True)
        for case in cases:
            a, b = src / sub / f"{case}{suffix}", dst / sub / f"{case}{suffix}"
            try:
                os.link(a, b)
            except OSError:
                shutil.copy2(a, b)
    shutil.copy2(src / "dataset.json", dst / "dataset.json")


def build_data(out: Path, config: dict, generate: bool = True) -> dict:
    """Generate (or reuse) the data and split it; returns a description for the report.

    With ``generate=False`` existing data of another configuration is an error, not replaced.
    """
    root = out / "data"
    all_dir, train_dir, test_dir = root / "all", root / "train", root / "test"
    stamp = root / "config.json"
    reuse = stamp.is_file() and json.loads(stamp.read_text()) == config and (all_dir / "splits.json").is_file()
    if not reuse and not generate:
        raise SystemExit(f"{root}: no data generated with {config}; run without --report-only")
    if reuse:
        print(f"data: reusing {all_dir}", flush=True)
    else:
        if root.exists():
            shutil.rmtree(root)
        print(f"data: generating {config['n_train']} train + {config['n_test']} test cases at "
              f"{config['voxel_mm']} mm", flush=True)
        make_data.build_dataset(all_dir, config["n_train"], config["n_test"], config["voxel_mm"], config["seed"],
                                verbose=False)
    splits = make_data.read_splits(all_dir)
    if not reuse:
        _copy_cases(all_dir, train_dir, splits["train"])
        _copy_cases(all_dir, test_dir, splits["test"])
        stamp.write_text(json.dumps(config, indent=2) + "\n")
    generation = json.loads((all_dir / "generation.json").read_text())
    return {"all": str(all_dir), "train": str(train_dir), "test": str(test_dir),
            "train_cases": splits["train"], "test_cases": splits["test"],
            "max_round_trip_mm": generation["max_round_trip_mm"], "source": generation["source"]}


# --------------------------------------------------------------------------- subprocesses
def run_measured(cmd: list, log_path: Path, env: dict | None = None) -> dict:
    """Run ``cmd``, echo and log its output; wall time, CPU time and peak RSS from ``os.wait4``.

    ``wait4`` gives the resource usage of this one child (and of the children it waited
    for), which ``getrusage(RUSAGE_CHILDREN)`` cannot once more than one child has run.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "w", buffering=1) as log:     # line-buffered: follow it with tail -f
        log.write("$ " + " ".join(map(str, cmd)) + "\n")
        proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env, cwd=REPO)
        for line in proc.stdout:
            sys.stdout.write("    " + line)
            sys.stdout.flush()
            log.write(line)
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)   # reaped here, so Popen must not wait again
    return {"command": [str(c) for c in cmd], "returncode": proc.returncode,
            "wall_seconds": time.perf_counter() - t0,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": usage.ru_maxrss / 1024.0,          # kilobytes on Linux
            "log": str(log_path)}


def thread_env(threads: int) -> dict:
    """The environment for a method's subprocess: same thread count for both, unbuffered output."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    return env


def landmarker_python(venv: Path, out: Path) -> Path:
    """The landmarker venv's interpreter, creating the venv first when it is missing."""
    python = venv / "bin" / "python"
    if python.is_file():
        return python
    print(f"landmarker venv missing: creating {venv} (about 1.5 min, 1.8 GB)", flush=True)
    result = run_measured(["bash", HERE / "setup_landmarker_venv.sh", venv], out / "logs" / "setup_landmarker_venv.log")
    if result["returncode"] != 0 or not python.is_file():
        raise RuntimeError(f"could not create the landmarker venv; see {result['log']}")
    return python


def landmarker_dim(voxel_mm: float) -> list:
    """landmarker's fixed grid (z, y, x) for this voxel size: the field of view, in multiples of 16."""
    return [int(16 * math.ceil(fov / voxel_mm / 16)) for fov in LANDMARKER_FOV_MM]


def _versions(python: Path, packages: list) -> dict:
    code = ("import importlib.metadata as m, json, sys; "
            "print(json.dumps({p: m.version(p) for p in sys.argv[1:]}))")
    try:
        out = subprocess.run([str(python), "-c", code, *packages], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)
    except (subprocess.CalledProcessError, ValueError, OSError):
        return {}


def run_method(method: str, args, data: dict, out: Path) -> None:
    """Run one method in its subprocess and record ``run.json`` in its folder."""
    folder = out / method
    if folder.exists():
        shutil.rmtree(folder)      # a fresh run: training must not resume from an older one
    folder.mkdir(parents=True)
    env = thread_env(args.threads)
    if method == "nnlandmark":
        python = Path(sys.executable)
        cmd = [python, HERE / "run_nnlandmark.py", "--train-data", data["train"],
               "--test-images", Path(data["test"]) / "images", "--out", folder,
               "--budget-minutes", args.budget_minutes, "--threads", args.threads,
               "--iterations-per-epoch", args.iterations_per_epoch, "--val-iterations", args.val_iterations,
               "--decoders", *args.nnlandmark_decoders, "--preset", args.nnlandmark_preset,
               "--configuration", args.nnlandmark_configuration]
        if args.nnlandmark_target_spacing:
            cmd += ["--target-spacing", args.nnlandmark_target_spacing]
        versions = _versions(python, ["nnlandmark", "nnunetv2", "torch"])
    else:
        python = landmarker_python(args.landmarker_venv, out)
        cmd = [python, HERE / "run_landmarker.py", "--data", data["all"], "--out", folder,
               "--budget-minutes", args.budget_minutes, "--threads", args.threads,
               "--dim", *landmarker_dim(args.voxel_mm), "--extra-decoders", "argmax"]
        versions = _versions(python, ["landmarker", "monai", "torch"])
    load = os.getloadavg()
    print(f"\n== {method} (load average before start: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f})", flush=True)
    result = run_measured(cmd, out / "logs" / f"{method}.log", env=env)
    if result["returncode"] != 0:
        raise RuntimeError(f"{method} failed with exit code {result['returncode']}; see {result['log']}")
    record = {"method": method, "data_config": data_config(args), "budget_minutes": args.budget_minutes,
              "threads": args.threads, "loadavg_before": list(load), "versions": versions, **result}
    (folder / "run.json").write_text(json.dumps(record, indent=2) + "\n")


# --------------------------------------------------------------------------- evaluation and report
def prediction_folders(method: str, timings: dict, folder: Path) -> dict:
    """decoder -> prediction folder of a finished method run."""
    if method == "nnlandmark":
        return {d: folder / p["folder"] for d, p in timings["predictions"].items()}
    decoders = {timings["config"]["decoder"]: folder / "predictions"}
    for d in timings["config"].get("extra_decoders", []):
        decoders[d] = folder / f"predictions_{d}"
    return decoders




def write_baselines(out: Path, data: dict) -> dict:
    """Predictions made without learning, to read the methods' errors against
    (:mod:`nnlandmark.evaluation.baselines`): ``image centre`` and ``mean position``
    (every landmark at its mean world position over the training cases; the cases'
    random poses make this a weak atlas). A method that does not beat both has learned little.
    """
    from nnlandmark.evaluation.baselines import write_baseline_predictions
    return write_baseline_predictions(data["train"], Path(data["test"]) / "images", out / "baselines")


def evaluate_methods(out: Path, config: dict, data: dict, budget_minutes: float) -> list:
    """Score every finished method run on this data config and budget; one row per (method, decoder)."""
    import nnlandmark as nl
    rows = []
    for method in METHODS:
        folder = out / method
        if not (folder / "run.json").is_file():
            print(f"report: no finished {method} run in {folder}; left out", flush=True)
            continue
        run = json.loads((folder / "run.json").read_text())
        if run["data_config"] != config or run["budget_minutes"] != budget_minutes:
            print(f"report: {method} was run on {run['data_config']} with {run['budget_minutes']} min, "
                  f"not {config} with {budget_minutes} min; left out", flush=True)
            continue
        timings = json.loads((folder / "timings.json").read_text())
        for decoder, pred_dir in prediction_folders(method, timings, folder).items():
            result = nl.evaluate(pred_dir, data["test"], thresholds=THRESHOLDS_MM,
                                 output_dir=out / "evaluation" / f"{method}_{decoder}", overwrite=True)
            overall = result.summary["overall"]
            rows.append({
                "method": method, "decoder": decoder, "predictions": str(pred_dir),
                "n_cases": len(result.case_ids), "cases_without_prediction": result.cases_without_prediction,
                "mre_mm": overall["mre_mm"], "std_mm": overall["std_mm"], "median_mm": overall["median_mm"],
                "max_mm": overall["max_mm"], "mre_voxels": overall["mre_mm"] / config["voxel_mm"],
                "sdr": overall["sdr"], "n_valid": overall["n_valid"],
                "missing_in_prediction": overall.get("missing_in_prediction", 0),
                "train_seconds": timings["train_seconds"],
                "iterations": timings["iterations"],
                "predict_seconds_per_case": (timings["predictions"][decoder]["seconds_per_case"]
                                             if method == "nnlandmark" else timings["predict_seconds_mean"]),
                "peak_rss_mb": run["peak_rss_mb"],
                "biometry": result.biometry_summary,
                "per_landmark_mre_mm": {n: s["mre_mm"] for n, s in result.summary["per_landmark"].items()},
            })
    for name, pred_dir in write_baselines(out, data).items():
        result = nl.evaluate(pred_dir, data["test"], thresholds=THRESHOLDS_MM,
                             output_dir=out / "evaluation" / f"baseline_{pred_dir.name}", overwrite=True)
        overall = result.summary["overall"]
        rows.append({"method": "baseline", "decoder": name, "predictions": str(pred_dir),
                     "n_cases": len(result.case_ids), "mre_mm": overall["mre_mm"], "std_mm": overall["std_mm"],
                     "median_mm": overall["median_mm"], "max_mm": overall["max_mm"],
                     "mre_voxels": overall["mre_mm"] / config["voxel_mm"], "sdr": overall["sdr"],
                     "n_valid": overall["n_valid"]})
    return rows


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def write_report(out: Path, args, config: dict, data: dict, rows: list, started: float, load_start) -> dict:
    """``results.json`` (everything) and ``results.md`` (the table and the configuration)."""
    floor = make_data.noise_floor(verbose=False)
    runs, timings = {}, {}
    for method in dict.fromkeys(r["method"] for r in rows if r["method"] != "baseline"):  # in table order
        runs[method] = json.loads((out / method / "run.json").read_text())
        timings[method] = json.loads((out / method / "timings.json").read_text())
    cpu_count = os.cpu_count()
    results = {
        "benchmark": "AFIDs template (one annotated MNI152NLin2009cAsym head under random pose, "
                     "deformation, field of view and contrast)",
        "smoke": args.smoke, "data_config": config, "data": data,
        "budget_minutes_per_method": args.budget_minutes, "threads": args.threads, "cpu_count": cpu_count,
        "loadavg_at_start": list(load_start), "machine": platform.platform(), "processor": platform.processor(),
        "python": platform.python_version(),
        "noise_floor_mm": {k: floor[k] for k in ("mean_mm", "median_mm", "max_mm")},
        "target_mre_voxels": TARGET_MRE_VOXELS,
        "rows": rows, "runs": runs, "timings": timings,
        "total_wall_seconds": time.time() - started,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")

    sdr_cols = [threshold_key(t) for t in TABLE_SDR_MM]
    lines = ["# AFIDs template benchmark: results", ""]
    if args.smoke:
        lines += ["**SMOKE RUN: plumbing check only, the numbers mean nothing.**", ""]
    lines += [
        "Every case is the same annotated head (MNI152NLin2009cAsym with its expert AFIDs) under a random "
        "pose, smooth deformation, field of view and contrast: this measures robustness to those, "
        "not to variation between people.", "",
        "| method | decoder | MRE +- std (mm) | MRE (voxels) | median (mm) | "
        + " | ".join(f"SDR@{k} mm" for k in sdr_cols) + " | training | prediction / case | peak RSS |",
        "|---|---|---|---|---|" + "---|" * len(sdr_cols) + "---|---|---|",
    ]
    for r in rows:
        costs = ("| - | - | - |" if r["method"] == "baseline" else
                 f"| {_minutes(r['train_seconds'])} ({r['iterations']} it) | {r['predict_seconds_per_case']:.1f} s "
                 f"| {r['peak_rss_mb'] / 1024:.2f} GB |")
        lines.append(
            f"| {r['method']} | {r['decoder']} | {r['mre_mm']:.2f} +- {r['std_mm']:.2f} | {r['mre_voxels']:.2f} | "
            f"{r['median_mm']:.2f} | " + " | ".join(f"{100 * r['sdr'][k]:.1f} %" for k in sdr_cols) + " " + costs)
    lines += ["", f"Human noise floor (the template's two expert annotations): mean {floor['mean_mm']:.2f} mm, "
                  f"median {floor['median_mm']:.2f} mm, max {floor['max_mm']:.2f} mm.", ""]
    nn = [r for r in rows if r["method"] == "nnlandmark"]
    if nn:
        target_mm = TARGET_MRE_VOXELS * config["voxel_mm"]
        parts = [f"{r['decoder']} {r['mre_voxels']:.2f} voxels ({'met' if r['mre_voxels'] <= TARGET_MRE_VOXELS else 'NOT met'})"
                 for r in nn]
        lines += [f"Target: nnlandmark MRE <= {TARGET_MRE_VOXELS:g} voxels ({target_mm:.1f} mm at "
                  f"{config['voxel_mm']:g} mm): " + "; ".join(parts) + ".", ""]

    lines += ["## Configuration", "",
              f"- data: {config['n_train']} training + {config['n_test']} test cases, {config['voxel_mm']:g} mm "
              f"isotropic voxels, seed {config['seed']}; source `{data['source']['package']}`; largest landmark "
              f"round-trip residual {data['max_round_trip_mm']:.1e} mm",
              f"- training budget: {args.budget_minutes:g} min wall clock per method; the methods ran one after "
              f"the other, each with {args.threads} CPU thread(s) on a {cpu_count}-CPU machine "
              f"({platform.processor() or platform.machine()}, {platform.platform()})",
              f"- load average (1/5/15 min) before the run: {' / '.join(f'{v:.2f}' for v in load_start)}"]
    for method, run in runs.items():
        lines.append(f"  - before {method}: {' / '.join(f'{v:.2f}' for v in run['loadavg_before'])}; "
                     f"its subprocess used {run['cpu_seconds'] / run['wall_seconds']:.2f} CPUs on average "
                     f"over {_minutes(run['wall_seconds'])}")
    if "nnlandmark" in timings:
        t, run = timings["nnlandmark"], runs["nnlandmark"]
        lines.append(
            f"- nnlandmark {run['versions'].get('nnlandmark', '?')} (nnunetv2 {run['versions'].get('nnunetv2', '?')}, "
            f"torch {run['versions'].get('torch', '?')}): {t['plans']['planner']} planner"
            + (f" with target spacing {t['plans']['target_spacing']:g} mm" if t["plans"].get("target_spacing") else "")
            + f", patch "
            f"{t['plans']['patch_size']}, batch {t['plans']['batch_size']}, spacing {t['plans']['spacing']} mm; "
            f"preset `{t['settings']['preset']}`, configuration `{t['plans']['configuration']}`; "
            f"{t['epochs']} epochs x {t['iterations_per_epoch']} iterations "
            f"(+ {t['val_iterations']} validation batches per epoch), the number fitted to the budget as it "
            f"trained; "
            f"preparation ({t['prepare_seconds']:.0f} s) not counted as training; fold 0 trains on "
            f"{len(t['fold0_train_cases'])} of the {config['n_train']} training cases, nnU-Net holds out "
            f"{len(t['fold0_val_cases'])} for the validation loss that picks `{t['checkpoint_used']}`; "
            f"prediction time per case includes reading, "
            f"preprocessing, left-right test-time mirroring, writing and the model loading, per decoder pass")
    if "landmarker" in timings:
        t, run = timings["landmarker"], runs["landmarker"]
        c = t["config"]
        lines.append(
            f"- landmarker {run['versions'].get('landmarker', '?')} (MONAI {run['versions'].get('monai', '?')}, "
            f"torch {run['versions'].get('torch', '?')}): MONAI 3D U-Net on a fixed {c['dim']} grid, "
            f"{t['iterations']} iterations of batch {c['batch_size']} ({t['seconds_per_iteration']:.2f} s each), "
            f"Gaussian sigma {c['sigma_voxels']} voxels, trained on all {c['n_train']} training cases; "
            f"`{c['decoder']}` is its primary decoder, `argmax` is decoded from the same heatmaps; prediction "
            f"time per case: resampling, forward pass, decoding and writing (the image is read before the timer)")
    lines += [f"- peak RSS: maximum resident memory of the method's subprocess (and of the children it waited "
              f"for), from `os.wait4`; training and prediction together",
              f"- total wall time of this command: {_minutes(results['total_wall_seconds'])}"
              + (" (--report-only: evaluation and report only)" if args.report_only else ""),
              f"- per-case and per-landmark errors: `evaluation/<method>_<decoder>/`; everything above: "
              f"`results.json`", ""]
    command = "python benchmarks/afids_template/run_benchmark.py " + " ".join(sys.argv[1:])
    lines += [f"Regenerate: `{command}`", ""]
    (out / "results.md").write_text("\n".join(lines))
    return results


# --------------------------------------------------------------------------- main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="output folder (data, runs, results)")
    ap.add_argument("--budget-minutes", type=float, default=None, help="training wall time per method (25)")
    ap.add_argument("--voxel-mm", type=float, default=None, help="isotropic voxel size of the data (2.5)")
    ap.add_argument("--n-train", type=int, default=None, help="training cases (24)")
    ap.add_argument("--n-test", type=int, default=None, help="test cases (8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for each method (all CPUs)")
    ap.add_argument("--iterations-per-epoch", type=int, default=None, help="nnlandmark's epoch size (5)")
    ap.add_argument("--val-iterations", type=int, default=None, help="nnlandmark's validation batches per epoch (1)")
    ap.add_argument("--nnlandmark-decoders", nargs="+", default=["argmax", "local-mean"])
    ap.add_argument("--nnlandmark-preset", default="cone", help="nnlandmark's preset (cone: the MIDL method)")
    ap.add_argument("--nnlandmark-configuration", default="fullres",
                    help="fullres (the MIDL method) or cascade; the softmax cascade has its own script, "
                         "run_cascade.py")
    ap.add_argument("--nnlandmark-target-spacing", type=float, default=None,
                    help="plan nnlandmark for this isotropic spacing (mm) instead of the data's; "
                         "coarser means smaller patches and more iterations in the budget")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                    help="methods to (re)run; the report covers every finished run on the same data")
    ap.add_argument("--report-only", action="store_true", help="only evaluate finished runs and write the report")
    ap.add_argument("--landmarker-venv", type=Path, default=LANDMARKER_VENV)
    ap.add_argument("--smoke", action="store_true",
                    help="5 train / 1 test cases at 4 mm, 1 min per method, 1-iteration epochs: plumbing only")
    args = ap.parse_args(argv)
    defaults = dict(n_train=24, n_test=8, voxel_mm=2.5, budget_minutes=25.0, iterations_per_epoch=5,
                    val_iterations=1)
    if args.smoke:
        defaults.update(SMOKE)
    for key, value in defaults.items():      # explicit options win over the (smoke) defaults
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.threads = args.threads or len(os.sched_getaffinity(0))     # the CPUs this process may use
    if args.n_train < 5:
        ap.error("--n-train must be at least 5 (nnU-Net's 5-fold split of the training cases)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    started, load_start = time.time(), os.getloadavg()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    config = data_config(args)
    print(f"AFIDs template benchmark -> {out}\n  {config}, budget {args.budget_minutes:g} min per method, "
          f"{args.threads} threads, load average {load_start[0]:.2f} / {load_start[1]:.2f} / {load_start[2]:.2f} "
          f"on {os.cpu_count()} CPUs", flush=True)
    if load_start[0] > 0.5 * os.cpu_count():
        print("  WARNING: the machine is busy; the time-budgeted results will be worse than on an idle machine",
              flush=True)
    data = build_data(out, config, generate=not args.report_only)
    if not args.report_only:
        for method in args.methods:            # one after the other: they would share the cores
            run_method(method, args, data, out)
    rows = evaluate_methods(out, config, data, args.budget_minutes)
    if not rows:            # keep an earlier report rather than replace it by an empty one
        raise SystemExit(f"{out}: no finished method run with this data and budget; nothing to report")
    write_report(out, args, config, data, rows, started, load_start)
    print("\n" + (out / "results.md").read_text(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
