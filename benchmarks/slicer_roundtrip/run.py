"""Check our Slicer markups files against 3D Slicer itself (the ``slicer-core`` wheel).

Run with the project's venv; Slicer runs in a second Python that has
``slicer-core`` (see README.md)::

    .venv/bin/python benchmarks/slicer_roundtrip/run.py --slicer-python /tmp/slicer-venv/bin/python

One case with absent and unknown landmarks between present ones (and a label
with a comma and quotes) is written by our writers in every markups kind we
write (``.mrk.json`` from prediction and from ``write_landmarks``, ``.fcsv``;
LPS and RAS), read by Slicer's storage nodes, and checked: control point i is
landmark i, defined/missing status, and Slicer's RAS positions against our LPS
ones within 1e-4 mm. Then Slicer writes the same case (``.mrk.json`` and
``.fcsv``, LPS and RAS, and re-saves our files) and our readers must give the
same landmarks in the same order. Prints one PASS/FAIL line per check; exit
code 1 when any fails.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nnlandmark.data.formats import read_landmarks
from nnlandmark.data.formats.json_formats import read_markups_control_points
from nnlandmark.data.landmarks import Landmarks
from nnlandmark.geometry import lps_to_ras

TOL_MM = 1e-4
HERE = Path(__file__).resolve().parent

# dataset order; state of each in this case; LPS points with digits to spare
NAMES = ["nasion", "left_eye", "sella", "right_eye", 'left ear, "tragus"', "basion", "opisthion"]
STATES = {"nasion": "present", "left_eye": "absent", "sella": "present", "right_eye": "unknown",
          'left ear, "tragus"': "present", "basion": "absent", "opisthion": "present"}
LPS = {"nasion": [1.234567, -87.654321, 12.5], "sella": [-0.000123, 20.25, 33.125],
       'left ear, "tragus"': [70.1, 5.5, -3.3333333], "opisthion": [-12.0, 40.75, -60.015625]}


def case() -> Landmarks:
    return Landmarks(points={n: np.array(LPS[n]) for n in NAMES if STATES[n] == "present"},
                     absent=[n for n in NAMES if STATES[n] == "absent"],
                     unknown=[n for n in NAMES if STATES[n] == "unknown"])


def write(landmarks, path, system):
    """``write_landmarks`` in dataset order; an older writer without ``names=`` still runs."""
    from nnlandmark.data.formats import write_landmarks
    try:
        write_landmarks(landmarks, path, coordinate_system=system, names=NAMES)
        return ""
    except TypeError:
        write_landmarks(landmarks, path, coordinate_system=system)
        return " [writer has no names=, wrote its default order]"


def write_prediction(folder: Path) -> Path:
    """The predictor's own path: ``_write_case`` with absent = score under the threshold."""
    from nnlandmark.inference.predict import _write_case
    decoded = {n: (LPS.get(n, [5.0, 5.0, 5.0]), [1.0, 2.0, 3.0], 0.9 if STATES[n] == "present" else 0.1)
               for n in NAMES}
    _write_case(folder, "pred", decoded, {n: 0.5 for n in NAMES})
    return folder / "pred.mrk.json"


def check_slicer_read(result, expect_names) -> str:
    """Problems with what Slicer read from one of our files ('' when none)."""
    if not result.get("ok"):
        return f"Slicer could not read it: {result.get('error', 'ReadData returned 0')}"
    points = result["points"]
    labels = [p["label"] for p in points]
    if labels != expect_names:
        return f"control point order {labels} != {expect_names}"
    for p in points:
        want = "defined" if STATES[p["label"]] == "present" else "missing"
        if p["status"] != want:
            return f"{p['label']!r}: Slicer status {p['status']}, expected {want}"
        if want == "defined":
            error = np.abs(np.array(p["ras"]) - lps_to_ras(np.array(LPS[p["label"]]))).max()
            if error > TOL_MM:
                return f"{p['label']!r}: Slicer RAS {p['ras']} off by {error:.3g} mm"
    return ""


def check_our_read(path: Path) -> str:
    """Problems with what our reader made of a file Slicer wrote ('' when none)."""
    try:
        lm = read_landmarks(path)
    except Exception as err:  # a refused file is a finding, not a crash
        return f"our reader refused it: {err}"
    for n in NAMES:
        got, want = lm.status(n), "present" if STATES[n] == "present" else "unknown"
        if got != want:
            return f"{n!r}: our status {got}, expected {want}"
        if want == "present":
            error = np.abs(lm.point(n) - np.array(LPS[n])).max()
            if error > TOL_MM:
                return f"{n!r}: our LPS {lm.point(n).tolist()} off by {error:.3g} mm"
    if path.name.endswith(".mrk.json"):
        labels = [label for label, _, _ in read_markups_control_points(path)]
        if labels != NAMES:
            return f"control point order {labels} != {NAMES}"
    else:
        present = [n for n in NAMES if STATES[n] == "present"]
        others = [n for n in NAMES if STATES[n] != "present"]
        if list(lm.points) != present or lm.absent + lm.unknown != others:
            return f"row order lost: {list(lm.points)} + {lm.absent + lm.unknown}"
    return ""


def run_slicer(slicer_python: str, jobs: list, workdir: Path) -> dict:
    job_file = workdir / "jobs.json"
    job_file.write_text(json.dumps(jobs))
    proc = subprocess.run([slicer_python, str(HERE / "slicer_side.py"), str(job_file)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"slicer_side.py failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slicer-python", default=os.environ.get("SLICER_PYTHON", "/tmp/slicer-venv/bin/python"),
                        help="a Python with slicer-core installed (default $SLICER_PYTHON or %(default)s)")
    parser.add_argument("--keep", type=Path, help="write the files here and keep them")
    args = parser.parse_args(argv)
    if not Path(args.slicer_python).exists():
        print(f"SKIP no Slicer Python at {args.slicer_python}; see benchmarks/slicer_roundtrip/README.md")
        return 2
    t0 = time.perf_counter()
    tmp = None
    if args.keep:
        work = args.keep
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="slicer_roundtrip_")
        work = Path(tmp.name)
    lm = case()
    ras_points = {n: lps_to_ras(np.array(LPS[n])).tolist() for n in LPS}
    checks, jobs = [], []  # checks: (label, kind, index of its job, note)

    # 1. our files, read by Slicer
    try:
        path, note = write_prediction(work), ""
    except Exception as err:
        path, note = None, f" [prediction writer failed: {type(err).__name__}: {err}]"
    if path is not None:
        checks.append(("Slicer reads our prediction pred.mrk.json (LPS)", "slicer_read", len(jobs), note))
        jobs.append({"op": "read", "path": str(path)})
    for suffix in (".mrk.json", ".fcsv"):
        for system in ("LPS", "RAS"):
            path = work / f"ours_{system}{suffix}"
            note = write(lm, path, system)
            checks.append((f"Slicer reads our {suffix} ({system})", "slicer_read", len(jobs), note))
            jobs.append({"op": "read", "path": str(path)})
    # 2. Slicer's files, read by us
    slicer_points = [{"label": n, "ras": ras_points.get(n)} for n in NAMES]
    for suffix in (".mrk.json", ".fcsv"):
        for system in ("LPS", "RAS"):
            path = work / f"slicer_{system}{suffix}"
            checks.append((f"we read Slicer-written {suffix} ({system})", "our_read", len(jobs), "", path))
            jobs.append({"op": "write", "path": str(path), "system": system, "points": slicer_points})
    # 3. our .mrk.json opened and saved again by Slicer, read by us
    for suffix in (".mrk.json", ".fcsv"):
        path = work / f"resaved_from_ours_LPS{suffix}"
        checks.append((f"we read Slicer's re-save of our .mrk.json as {suffix}", "our_read", len(jobs), "", path))
        jobs.append({"op": "reread", "path": str(work / "ours_LPS.mrk.json"), "out": str(path), "system": "LPS"})

    answer = run_slicer(args.slicer_python, jobs, work)
    results = answer["results"]
    failed = 0
    for label, kind, index, note, *rest in checks:
        result = results[index]
        if kind == "slicer_read":
            problem = check_slicer_read(result, NAMES)
        elif not result.get("ok"):
            problem = f"Slicer could not write it: {result.get('error', 'WriteData returned 0')}"
        else:
            problem = check_our_read(rest[0])
        failed += bool(problem)
        print(f"{'FAIL' if problem else 'PASS'} {label}{note}" + (f": {problem}" if problem else ""))
    print(f"# slicer-core {answer.get('slicer_version')}, import {answer['import_s']:.1f} s, "
          f"total {time.perf_counter() - t0:.1f} s, {len(checks) - failed}/{len(checks)} passed"
          + (f", files in {work}" if args.keep else ""))
    if tmp is not None:
        tmp.cleanup()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
