"""Prediction time and peak memory per case on a CPU, for 3 and for 32 landmarks (issue 3).

What is measured
----------------
One 193 x 229 x 193 volume at 1 mm (the size of the MNI152 template) is predicted
with ``nnlandmark predict`` (one fold) in a fresh Python process per configuration,
with ``torch.set_num_threads(threads)`` and test-time mirroring off (``--mirror on``
runs every tile twice, doubling the sliding-window time). The process itself
stamps the phases of the prediction: model loading, nnU-Net preprocessing,
sliding window (logits), sigmoid, decoding + writing. Next to each phase it
records the memory high-water mark so far (``VmHWM``), so the phase that set the
peak can be read off.

Peak memory is the process's own ``VmHWM`` at its end, cross-checked with
``ru_maxrss`` from ``/usr/bin/time``. Not ``getrusage(RUSAGE_CHILDREN)`` of
this script: Linux seeds a child's ``ru_maxrss`` with the RSS of the process
it was forked (or vforked) from before ``exec``, so a child of this script,
which trains in-process and holds a few GB, would report this script's
memory instead of its own. ``/usr/bin/time`` is a small process, so the
``ru_maxrss`` it reports for its child is the child's own.

Configurations
--------------
Three plans, each for 3 and 32 landmarks:

``cpu-2.5mm``
    nnU-Net's default planner with ``target_spacing=2.5`` mm: what a CPU user
    runs (``nnlandmark prepare --spacing 2.5``).
``default-1mm``
    nnU-Net's default plan, at the data's own 1 mm: a large patch, slow on a CPU.
``cascade-1mm``
    the default model (softmax preset, cascade): the global stage on the whole
    scan at its coarse spacing, then one full-resolution (1 mm) patch per
    landmark. (The two plans above are the ``cone`` preset, full resolution.)

Data
----
Five synthetic heads (``nnlandmark.data.synthetic``) of 193 x 229 x 193 at 1 mm for
training and one held-out head for prediction. The 3-landmark dataset uses the
phantom's nose tip and eyes; the 32-landmark dataset adds the ears and vertex and
26 points on a 3 x 3 x 3 grid (centre left out) inside the skull, which move with
each head's pose. All 32 are at least 4 voxels of the coarsest planned spacing
apart. Each fold is trained for 1 epoch of 2 iterations: the weights do not change
speed or memory.

Everything is written under ``--out`` (gitignored ``bench_output/`` by default),
and a rerun reuses the data, projects and models already there::

    python benchmarks/prediction_memory.py --out bench_output/prediction
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SHAPE = (193, 229, 193)  # ITK order (i, j, k)
SPACING = (1.0, 1.0, 1.0)
N_TRAIN_CASES = 5
TEST_SEED = 900_001  # far from the training seeds' Cantor codes
#: plan -> (target spacing, configuration, preset)
PLANS = {"cpu-2.5mm": (2.5, "fullres", "cone"), "default-1mm": (None, "fullres", "cone"),
         "cascade-1mm": (None, "cascade", "softmax")}
LANDMARK_COUNTS = (3, 32)
MIN_SEPARATION_VOXELS = 4.0
# Grid points in the canonical phantom frame, units of the head size H: well inside
# the inner skull (semi-axes 0.68, 0.82, 0.75 H) and >= 0.3 H (about 19 mm) apart.
GRID_STEP = 0.3
MARKER = "BENCH_JSON "
TIME = Path("/usr/bin/time")


# --------------------------------------------------------------------------- data

def _similarity_fit(source: np.ndarray, target: np.ndarray):
    """Scale, rotation and translation with target ~ s R source + t (Umeyama, least squares)."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    a, b = source - mu_s, target - mu_t
    u, d, vt = np.linalg.svd(b.T @ a / len(source))
    sign = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(d) @ sign) / (a ** 2).sum(1).mean())
    return scale, rotation, mu_t - scale * rotation @ mu_s


def _grid_names_and_points():
    steps = (-GRID_STEP, 0.0, GRID_STEP)
    names, points = [], []
    for x in steps:
        for y in steps:
            for z in steps:
                if x == y == z == 0.0:
                    continue  # 26 points, so that 6 anatomical + 26 = 32
                names.append(f"grid_{'RCL'[steps.index(x)]}{'ACP'[steps.index(y)]}{'ICS'[steps.index(z)]}")
                points.append((x, y, z))
    return names, np.array(points)


def landmarks_32(world: dict) -> dict:
    """The 6 phantom landmarks plus 26 grid points placed with the case's pose.

    The pose is recovered by a similarity fit of the phantom's canonical
    landmarks (head size 1) onto the case's world landmarks, so only the
    generator's output is needed, not its random state.
    """
    from nnlandmark.data.synthetic import LANDMARK_NAMES, _canonical_landmarks
    canonical = _canonical_landmarks(1.0)
    source = np.array([canonical[n] for n in LANDMARK_NAMES])
    target = np.array([world[n] for n in LANDMARK_NAMES])
    scale, rotation, translation = _similarity_fit(source, target)
    names, grid = _grid_names_and_points()
    out = {n: np.asarray(world[n], dtype=float) for n in LANDMARK_NAMES}
    out.update({n: scale * rotation @ p + translation for n, p in zip(names, grid)})
    return out


def min_separation(points: dict) -> float:
    p = np.array(list(points.values()))
    d = np.linalg.norm(p[:, None] - p[None], axis=-1)
    return float(d[~np.eye(len(p), dtype=bool)].min())


def make_data(out: Path) -> dict:
    """Training datasets for 3 and 32 landmarks (shared images) and the test image; reused when present."""
    from nnlandmark.data.synthetic import make_synthetic_case, make_synthetic_dataset
    import SimpleITK as sitk

    source = out / "data" / "source"
    if not (source / "dataset.json").exists():
        print(f"rendering {N_TRAIN_CASES} synthetic heads {SHAPE} at {SPACING[0]} mm ...", flush=True)
        make_synthetic_dataset(source, n_cases=N_TRAIN_CASES, seed=0, shape=SHAPE, spacing=SPACING,
                               overwrite=True)
    test = out / "data" / "test"
    test_image = test / "images" / "test_000.nii.gz"
    if not test_image.exists():
        image, _ = make_synthetic_case(TEST_SEED, shape=SHAPE, spacing=SPACING)
        test_image.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(test_image.with_name(".tmp_" + test_image.name)))
        os.replace(test_image.with_name(".tmp_" + test_image.name), test_image)

    coarsest = max(s for s, _, _ in PLANS.values() if s is not None)
    datasets = {}
    for n in LANDMARK_COUNTS:
        ds = out / "data" / f"landmarks{n}"
        datasets[n] = ds
        if (ds / "dataset.json").exists():
            continue
        (ds / "images").mkdir(parents=True, exist_ok=True)
        (ds / "landmarks").mkdir(parents=True, exist_ok=True)
        names = None
        for image in sorted((source / "images").iterdir()):
            link = ds / "images" / image.name
            if not link.exists():
                try:
                    os.link(image, link)  # same bytes for both datasets, no second copy
                except OSError:
                    shutil.copy2(image, link)
            case = image.name.split(".")[0]
            world = json.loads((source / "landmarks" / f"{case}.json").read_text())["landmarks"]
            points = {k: world[k] for k in ("nose_tip", "left_eye", "right_eye")} if n == 3 else landmarks_32(world)
            separation = min_separation(points)
            if separation < MIN_SEPARATION_VOXELS * coarsest:
                raise RuntimeError(f"{case}: landmarks only {separation:.1f} mm apart, below "
                                   f"{MIN_SEPARATION_VOXELS} voxels of {coarsest} mm")
            names = list(points)
            record = {"coordinate_system": "LPS",
                      "landmarks": {k: [round(float(v), 4) for v in p] for k, p in points.items()}}
            (ds / "landmarks" / f"{case}.json").write_text(json.dumps(record, indent=2) + "\n")
        pairs = [["left_eye", "right_eye"]] + ([["left_ear", "right_ear"]] if n == 32 else [])
        spec = {"name": f"Bench{n}", "landmarks": names, "pairs": pairs, "channels": ["MR"]}
        (ds / "dataset.json").write_text(json.dumps(spec, indent=2) + "\n")
    return {"datasets": datasets, "test": test}


def prepare_and_train(dataset: Path, project: Path, plan, threads: int) -> Path:
    """Plan, preprocess and train fold 0 briefly; returns the model folder (reused when trained)."""
    import torch
    import nnlandmark as nl
    spacing, configuration, preset = plan
    torch.set_num_threads(threads)
    nl.prepare(dataset, project, num_processes=threads, target_spacing=spacing, progress=False)
    settings = nl.TrainingSettings(preset=preset, configuration=configuration, epochs=1, iterations_per_epoch=2,
                                   val_iterations=1)
    return nl.train(project, 0, settings, device="cpu", continue_training=True, progress=False)


# ---------------------------------------------------------------------- measuring

def _memory_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MB."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, kb = line.split()[:2]
            values[key] = int(kb) / 1024
    return values.get("VmRSS:", float("nan")), values.get("VmHWM:", float("nan"))


def measure_child(model: str, test: str, output: str, threads: int, mirror: str) -> None:
    """Run ``nnlandmark predict`` here, stamping its phases; prints one JSON line.

    The phases are timed by wrapping the predictor's methods; the prediction
    itself is the unmodified CLI code path.
    """
    started = time.perf_counter()
    import torch
    torch.set_num_threads(threads)
    from nnlandmark import cli
    from nnlandmark.inference import predict as predict_module
    from nnlandmark.nnunet.predictor import LandmarkPredictor

    phases = []

    def stamp(name, seconds):
        rss, hwm = _memory_mb()
        phases.append({"phase": name, "seconds": seconds, "rss_mb": rss, "hwm_mb": hwm})

    def timed(owner, attribute, name):
        original = getattr(owner, attribute)

        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            result = original(*args, **kwargs)
            stamp(name, time.perf_counter() - t)
            return result
        setattr(owner, attribute, wrapper)

    stamp("imports", time.perf_counter() - started)
    timed(LandmarkPredictor, "__init__", "load model")
    timed(LandmarkPredictor, "preprocess", "preprocess")
    timed(LandmarkPredictor, "predict_logits_from_preprocessed_data", "sliding window")
    timed(LandmarkPredictor, "patch_logits", "local patches")
    timed(predict_module, "_predict_case", "case")
    timed(predict_module, "_write_case", "write")
    t = time.perf_counter()
    rc = cli.main(["predict", "-i", test, "-o", output, "-m", model, "--folds", "0", "--overwrite",
                   "--mirror", mirror])
    stamp("predict total", time.perf_counter() - t)
    print(MARKER + json.dumps({"rc": rc, "threads": torch.get_num_threads(), "phases": phases,
                               "vmhwm_mb": _memory_mb()[1]}), flush=True)


def run_measurement(model: Path, test: Path, output: Path, threads: int, mirror: str) -> dict:
    """One fresh process: wall time, its own peak RSS (VmHWM) and ru_maxrss through /usr/bin/time."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [sys.executable, __file__, "--measure", str(model), str(test), str(output), "--threads", str(threads),
               "--mirror", mirror]
    maxrss_file = output.parent / f".maxrss_{output.name}"
    output.parent.mkdir(parents=True, exist_ok=True)
    if TIME.is_file():
        # %M: ru_maxrss in kB of the child of /usr/bin/time (see the module docstring for why not ours)
        command = [str(TIME), "-f", "%M", "-o", str(maxrss_file)] + command
    t = time.perf_counter()
    process = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    wall = time.perf_counter() - t
    log = process.stdout
    lines = [line for line in log.splitlines() if line.startswith(MARKER)]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"measurement failed (exit {process.returncode}):\n{log[-4000:]}")
    result = json.loads(lines[-1][len(MARKER):])
    if result["rc"] != 0:
        raise RuntimeError(f"nnlandmark predict failed:\n{log[-4000:]}")
    result["wall_s"] = wall
    result["peak_rss_mb"] = result["vmhwm_mb"]
    result["time_maxrss_mb"] = int(maxrss_file.read_text().split()[-1]) / 1024 if maxrss_file.is_file() else None
    return result


def _seconds(result: dict, name: str) -> float:
    """Seconds of a phase, summed over its calls (a cascade preprocesses twice, loads two stages)."""
    return sum(p["seconds"] for p in result["phases"] if p["phase"] == name)


def summarise(result: dict) -> dict:
    window, patches = _seconds(result, "sliding window"), _seconds(result, "local patches")
    preprocess = _seconds(result, "preprocess")
    return {
        "load": _seconds(result, "load model"),
        "preprocess": preprocess,
        "window": window,
        "patches": patches,
        # what the case took besides preprocessing and the networks: softmax/sigmoid, cropping, decoding
        "sigmoid": _seconds(result, "case") - preprocess - window - patches,
        "decode": _seconds(result, "write"),
        "predict": _seconds(result, "predict total"),
        "wall": result["wall_s"],
        "peak": result["peak_rss_mb"],
        "time_maxrss": result["time_maxrss_mb"],
        "hwm": {p["phase"]: p["hwm_mb"] for p in result["phases"]},
    }


def plan_summary(model: Path) -> str:
    """Spacing and patch of each stage the model predicts with."""
    from nnlandmark.model.folder import ModelFolder
    plans = json.loads((model / "plans.json").read_text())
    stages = ModelFolder(model).stages
    parts = []
    for configuration_name in stages.values():
        configuration = plans["configurations"][configuration_name]
        full = plans["configurations"]["3d_fullres"]
        spacing = "x".join(f"{s:g}" for s in configuration.get("spacing", full["spacing"]))
        patch = "x".join(str(p) for p in configuration["patch_size"])
        parts.append(f"{spacing} mm, patch {patch}")
    return " + ".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_output/prediction", help="work folder (gitignored)")
    parser.add_argument("--plans", nargs="+", default=list(PLANS), choices=list(PLANS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1,
                        help="measurements per configuration: fastest time and largest peak are reported")
    parser.add_argument("--mirror", default="off", choices=["off", "on", "auto"],
                        help="test-time mirroring of 'nnlandmark predict' (on: two network passes per tile)")
    parser.add_argument("--measure", nargs=3, metavar=("MODEL", "TEST", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        measure_child(*args.measure, threads=args.threads, mirror=args.mirror)
        return 0

    out = Path(args.out).resolve()
    data = make_data(out)
    rows = []
    for plan in args.plans:
        for n in LANDMARK_COUNTS:
            project = out / "projects" / f"{plan}_L{n}"
            t = time.perf_counter()
            model = prepare_and_train(data["datasets"][n], project, PLANS[plan], args.threads)
            print(f"[{plan}, {n} landmarks] prepared and trained in {time.perf_counter() - t:.0f} s "
                  f"(0 s when reused)", flush=True)
            runs = []
            for r in range(args.repeats):
                load = os.getloadavg()[0]
                result = summarise(run_measurement(model, data["test"], out / "predictions" / f"{plan}_L{n}",
                                                   args.threads, args.mirror))
                result["load_avg"] = load
                runs.append(result)
                print(f"[{plan}, {n} landmarks] run {r + 1} (load avg {load:.2f}): predict {result['predict']:.1f} s "
                      f"(load {result['load']:.1f}, preprocess {result['preprocess']:.1f}, window "
                      f"{result['window']:.1f}, local patches {result['patches']:.1f}, activation+decode "
                      f"{result['sigmoid']:.2f}, write {result['decode']:.2f}), "
                      f"peak {result['peak']:.0f} MB (time: {result['time_maxrss'] or float('nan'):.0f}); "
                      "high-water after each phase (MB): "
                      + ", ".join(f"{k} {v:.0f}" for k, v in result["hwm"].items()), flush=True)
            best = min(runs, key=lambda r: r["predict"])
            best = dict(best, peak=max(r["peak"] for r in runs),
                        time_maxrss=max(r["time_maxrss"] or 0.0 for r in runs) or None)
            rows.append({"plan": plan, "grid": plan_summary(model), "landmarks": n, **best})
    # merged with earlier runs of other plans, so that the slow default plan can be measured separately
    results_file = out / "results.json"
    earlier = json.loads(results_file.read_text()) if results_file.is_file() else []
    measured = {(r["plan"], r["landmarks"], r.get("mirror")) for r in rows}
    merged = [r for r in earlier if (r["plan"], r["landmarks"], r.get("mirror")) not in measured] + \
        [dict(r, mirror=args.mirror, threads=args.threads, repeats=args.repeats) for r in rows]
    results_file.write_text(json.dumps(merged, indent=2))
    print_table(sorted((r for r in merged if r.get("mirror") == args.mirror and r.get("threads") == args.threads),
                       key=lambda r: (list(PLANS).index(r["plan"]), r["landmarks"])), args.threads, args.mirror)
    return 0


def print_table(rows, threads: int, mirror: str) -> None:
    print(f"\nPrediction of one {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} case at 1 mm, 1 fold, CPU, {threads} threads, "
          f"test-time mirroring {mirror}")
    print("times in s: load = model, prep = nnU-Net preprocessing, window = sliding window (cascade: global "
          "stage), patches = cascade's local patches, sig = activation + decode, dec = write;\nper fold = predict() total (prep .. write, model load included); "
          "wall = fresh process incl. imports;\npeak RSS = the process's VmHWM; loadavg = 1-min load average when "
          "the run started; runs: fastest time, largest peak\n")
    header = (f"{'plan':<12} {'spacing, patch':<58} {'L':>3} {'load':>5} {'prep':>5} {'window':>7} "
              f"{'patches':>7} {'sig':>5} "
              f"{'dec':>5} {'per fold':>9} {'wall':>6} {'peak RSS MB':>12} {'(time -f %M)':>13} {'loadavg':>8} "
              f"{'runs':>5}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['plan']:<12} {r['grid']:<58} {r['landmarks']:>3} {r['load']:>5.1f} {r['preprocess']:>5.1f} "
              f"{r['window']:>7.1f} {r.get('patches', 0.0):>7.1f} {r['sigmoid']:>5.2f} {r['decode']:>5.2f} {r['predict']:>9.1f} "
              f"{r['wall']:>6.1f} {r['peak']:>12.0f} {r['time_maxrss'] or float('nan'):>13.0f} "
              f"{r['load_avg']:>8.2f} {r['repeats']:>5}")
    print()
    for plan in dict.fromkeys(r["plan"] for r in rows):
        by_n = {r["landmarks"]: r for r in rows if r["plan"] == plan}
        if set(LANDMARK_COUNTS) <= set(by_n):
            few, many = by_n[LANDMARK_COUNTS[0]], by_n[LANDMARK_COUNTS[-1]]
            ok = all(r["predict"] <= 15 and r["peak"] <= 3072 for r in by_n.values())
            print(f"{plan}: 32 vs 3 landmarks: time x{many['predict'] / few['predict']:.2f}, "
                  f"peak RSS x{many['peak'] / few['peak']:.2f} (+{many['peak'] - few['peak']:.0f} MB); "
                  f"targets (<= 15 s per fold, <= 3 GB): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    sys.exit(main())
