"""A prediction folder: what ``predict`` wrote there, who is writing now, and its summary.

A folder that ``predict`` writes into may also hold the user's own files (a
corrected ``case_000_corrected.json``, notes, a ``predictions.csv`` of their
own). So every run records what it writes in a **manifest**,
``.nnlandmark_predict.json``: the run (model folder, its checkpoints' sizes and
times, folds, settings, the number of parts) and, per case, the files written.
``--overwrite`` removes exactly the files listed there and ``--continue``
skips exactly the cases listed there whose ``<case>.json`` exists; a file that
is not listed is never removed or replaced.

**Folders written before the manifest existed** (prediction records but no
manifest): ``--continue`` takes a ``<case>.json`` in our prediction format for
one of the input cases as done, as earlier versions did, and records it;
``--overwrite`` is refused there (nothing tells a user's prediction-shaped file
from ours): remove the old predictions by hand, or choose another folder.

**Locks.** A run holds a lock file (``.nnlandmark_predict.lock``, one per part
with ``--num-parts``) for as long as it writes; a second run into the same
folder (or the same part twice) fails at once with one line. The lock is an
``flock`` on the file, so a killed run leaves no stale lock.

**Parts** (``--num-parts N --part-id K``, nnU-Net's convention): part K
predicts every N-th case of the sorted case list from the K-th on. The parts of
one run (same model, checkpoints, folds, settings, case list) write into one
folder and one manifest (updated under a short lock); each part rewrites
``predictions.csv`` from every case in the manifest when it ends, so the
summary is whole once all parts are done. ``nnlandmark merge-predictions
FOLDER`` rebuilds it at any time and lists the cases still missing.
"""
from __future__ import annotations

import csv
import errno
import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path

from nnlandmark.errors import InvalidInput, OutputExists, check_writable
from nnlandmark.files import atomic_write, leftovers  # noqa: F401  (predict's writers take atomic_write from here)

MANIFEST = ".nnlandmark_predict.json"
SUMMARY_FILE = "predictions.csv"
CASE_ENDINGS = (".json", ".mrk.json", "_heatmaps.nii.gz")
_MANIFEST_FORMAT = 1
#: longest case name: its files (``<case>_heatmaps.nii.gz``, and a temporary name beside it) must fit
#: the 255 bytes most file systems allow for a name
MAX_CASE_NAME_BYTES = 255 - len("_heatmaps.nii.gz") - 24


def part_cases(case_ids, num_parts: int = 1, part_id: int = 0) -> list:
    """The cases of part ``part_id`` of ``num_parts``: every N-th of the sorted ids from the K-th on.

    >>> part_cases(["c", "a", "d", "b", "e"], 2, 1)
    ['b', 'd']
    """
    check_parts(num_parts, part_id)
    return sorted(case_ids)[part_id::num_parts]


def check_parts(num_parts: int, part_id: int) -> None:
    """Refuse part numbers that select nothing or overlap, naming the flag."""
    if num_parts < 1:
        raise InvalidInput(f"--num-parts: must be at least 1, got {num_parts}")
    if not 0 <= part_id < num_parts:
        raise InvalidInput(f"--part-id: must be in 0 ... {num_parts - 1} (--num-parts {num_parts}), got {part_id}")


def check_case_names(case_ids) -> None:
    """Refuse case names whose output files could not be created (before any inference)."""
    long = [c for c in case_ids if len(c.encode()) > MAX_CASE_NAME_BYTES]
    if long:
        raise InvalidInput(f"{long[0]}: case name of {len(long[0].encode())} bytes is too long for its output "
                           f"files (at most {MAX_CASE_NAME_BYTES}); rename the image")


def check_not_inside_inputs(output_dir: Path, inputs) -> None:
    """Refuse an output folder that is an input folder (or inside one), or the folder of an input
    file: predictions written among the images would be read as part of the dataset later.

    >>> check_not_inside_inputs("scans/out", ["other/a.nii.gz"])
    >>> check_not_inside_inputs("scans", ["scans/a.nii.gz"])
    Traceback (most recent call last):
    ...
    nnlandmark.errors.InvalidInput: scans: the output folder is the folder of the input scans/a.nii.gz; choose a folder outside it
    """
    out = Path(os.path.abspath(output_dir))
    for item in map(Path, inputs):
        folder = Path(os.path.abspath(item))
        if item.is_dir() and (out == folder or folder in out.parents):
            raise InvalidInput(f"{output_dir}: the output folder is {'the' if out == folder else 'inside the'} "
                               f"input folder {item}; choose a folder outside it")
        if not item.is_dir() and out == folder.parent:
            raise InvalidInput(f"{output_dir}: the output folder is the folder of the input {item}; choose a "
                               "folder outside it")


# --------------------------------------------------------------------------- the manifest

def read_manifest(output_dir: Path) -> dict | None:
    """The manifest of ``output_dir``, None without one; InvalidInput when it is damaged."""
    path = Path(output_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict) or not isinstance(manifest.get("cases"), dict):
            raise ValueError("expected an object with 'cases'")
    except ValueError as e:
        raise InvalidInput(f"{path}: damaged prediction manifest ({e}); remove the folder's predictions by hand "
                           "or choose another output folder") from e
    return manifest


def _write_manifest(output_dir: Path, manifest: dict) -> None:
    atomic_write(Path(output_dir) / MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=1) + "\n"))


@contextmanager
def _manifest_lock(output_dir: Path):
    """A short, blocking lock around reading and rewriting the manifest (parts share it)."""
    with open(Path(output_dir) / f"{MANIFEST}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def legacy_outputs(output_dir: Path) -> dict:
    """``{case: [files]}`` that a ``predict`` from before the manifest wrote: a ``<case>.json``
    in our prediction format, its markups and heatmaps beside it."""
    from nnlandmark.data.formats.json_formats import read_prediction_record
    found = {}
    if not Path(output_dir).is_dir():
        return found
    for record in sorted(Path(output_dir).glob("*.json")):
        case = record.name[: -len(".json")]
        if case.endswith(".mrk") or record.name == MANIFEST or read_prediction_record(record) is None:
            continue
        found[case] = [f for f in (Path(output_dir) / f"{case}{e}" for e in CASE_ENDINGS) if f.is_file()]
    return found


def previous_outputs(output_dir: Path) -> dict:
    """``{case: [files]}`` that earlier runs wrote into ``output_dir`` and that still exist: the
    manifest's cases whose ``<case>.json`` exists (a folder from before the manifest:
    :func:`legacy_outputs`). Files we did not write are never listed."""
    output_dir = Path(output_dir)
    manifest = read_manifest(output_dir)
    if manifest is None:
        return legacy_outputs(output_dir)
    found = {}
    for case, entry in sorted(manifest["cases"].items()):
        files = [output_dir / name for name in entry.get("files", ())]
        if (output_dir / f"{case}.json").is_file():
            found[case] = [f for f in files if f.is_file()]
    return found


def run_identity(model_path, checkpoints, folds, settings: dict, num_parts: int, cases) -> dict:
    """What makes two predictions the same run: the model (its checkpoints' sizes and times, so a
    retrained model is another), folds, settings and the case list of all parts."""
    stamps = {}
    for checkpoint in checkpoints:
        stat = Path(checkpoint).stat()
        stamps[Path(checkpoint).relative_to(model_path).as_posix()] = [stat.st_size, stat.st_mtime_ns]
    return {"model": str(Path(os.path.abspath(model_path))), "checkpoints": stamps, "folds": list(folds),
            "settings": settings, "num_parts": int(num_parts), "all_cases": sorted(cases)}


def _same_model(a: dict, b: dict, mix_folds: bool) -> bool:
    # evaluate-cv (mix_folds): each fold predicts its own cases with its own checkpoints
    keys = ("model", "settings") + (() if mix_folds else ("checkpoints", "folds"))
    return all(a.get(k) == b.get(k) for k in keys)


def plan_outputs(output_dir: Path, identity: dict, own_cases, overwrite: bool, resume: bool,
                 mix_folds: bool = False) -> tuple[list, str]:
    """Which of ``own_cases`` to predict, and what to do with the folder first: ``"new"`` (no
    earlier run), ``"join"`` (the same run: another part, or a resumed one), ``"clear"`` (remove
    the earlier run's files first: ``overwrite``) or ``"adopt"`` (a folder from before the
    manifest, continued). Raises, naming the file, for everything else; writes nothing."""
    output_dir = Path(output_dir)
    check_writable(output_dir)
    manifest = read_manifest(output_dir)
    previous = previous_outputs(output_dir)
    own = list(own_cases)
    example = f"e.g. {next(iter(previous))}.json" if previous else ""
    if manifest is None:
        if previous and overwrite:
            raise OutputExists(f"{output_dir}: holds predictions written before nnlandmark kept a manifest "
                               f"({MANIFEST}), {example}; --overwrite cannot tell them from your own files: "
                               "remove them by hand or choose another output folder")
        if previous and not resume:
            raise OutputExists(f"{output_dir}: predictions exist for {len(previous)} case(s) ({example}); use "
                               "--continue to skip them, or choose another output folder")
        mode = "adopt" if previous else "new"
        listed = {f.name for files in previous.values() for f in files}
        summary_ours = bool(previous)
    else:
        run = manifest.get("run", {})
        same = _same_model(run, identity, mix_folds)
        same_run = same and all(run.get(k) == identity[k] for k in ("num_parts", "all_cases"))
        done_own = [c for c in own if c in previous]
        if resume and not same:
            raise InvalidInput(f"{output_dir / MANIFEST}: --continue: the predictions here were made by "
                               f"{run.get('model')} (folds {run.get('folds')}, settings {run.get('settings')}), "
                               "not with this model, its checkpoints, folds and settings; use --overwrite or "
                               "another output folder")
        if overwrite and not same_run:
            mode = "clear"
        elif same_run or resume:
            if done_own and not (overwrite or resume):
                raise OutputExists(f"{output_dir}: predictions exist for {len(done_own)} case(s) of this run "
                                   f"(e.g. {done_own[0]}.json); use --overwrite to replace them or --continue "
                                   "to skip them")
            mode = "join"
        elif previous:
            raise OutputExists(f"{output_dir}: predictions exist for {len(previous)} case(s) ({example}); use "
                               "--overwrite to replace them or --continue to skip them")
        else:
            mode = "clear"  # a manifest whose cases are all gone: start afresh
        listed = {n for entry in manifest["cases"].values() for n in entry.get("files", ())}
        summary_ours = bool(manifest.get("summary"))
    todo = [c for c in own if not (resume and c in previous)]
    # a file of the same name that we did not write is the user's: never replaced
    theirs = [output_dir / f"{c}{e}" for c in todo for e in CASE_ENDINGS
              if (output_dir / f"{c}{e}").exists() and f"{c}{e}" not in listed]
    if theirs:
        raise OutputExists(f"{theirs[0]}: exists and was not written by nnlandmark predict; move it or choose "
                           "another output folder")
    summary = output_dir / SUMMARY_FILE
    if summary.exists() and not summary_ours:
        raise OutputExists(f"{summary}: exists and was not written by nnlandmark predict; move it or choose "
                           "another output folder")
    return todo, mode


def start_run(output_dir: Path, identity: dict, mode: str, redo=()) -> None:
    """Prepare the folder for a run planned by :func:`plan_outputs` (the folder exists and the run
    holds its lock): remove what an earlier run wrote (``clear``), or this run's own cases that
    are predicted again (``redo``, with --overwrite), and write the manifest."""
    output_dir = Path(output_dir)
    with _manifest_lock(output_dir):
        manifest = read_manifest(output_dir)
        if mode == "clear" and manifest is not None:
            for entry in manifest["cases"].values():
                for name in entry.get("files", ()):
                    (output_dir / name).unlink(missing_ok=True)
            if manifest.get("summary"):
                (output_dir / SUMMARY_FILE).unlink(missing_ok=True)
            manifest = None
        if mode == "adopt":
            cases = {case: {"files": [f.name for f in files], "written_by": "an earlier nnlandmark"}
                     for case, files in legacy_outputs(output_dir).items()}
            manifest = {"format": _MANIFEST_FORMAT, "run": identity, "cases": cases,
                        "summary": SUMMARY_FILE if (output_dir / SUMMARY_FILE).is_file() else None}
        if manifest is None:
            manifest = {"format": _MANIFEST_FORMAT, "run": identity, "cases": {}}
        for case in redo:
            for name in manifest["cases"].pop(case, {}).get("files", ()):
                (output_dir / name).unlink(missing_ok=True)
            for ending in CASE_ENDINGS:  # temporary files of a run killed while writing this case
                for leftover in leftovers(output_dir / f"{case}{ending}"):
                    leftover.unlink(missing_ok=True)
        if mode != "join":
            manifest["run"] = identity
        _write_manifest(output_dir, manifest)


def record_case(output_dir: Path, case: str, files, folds) -> None:
    """Record a case's files in the manifest *before* they are written: an interrupted run then
    leaves no file of ours unlisted (``--continue`` takes a case as done once its JSON exists)."""
    output_dir = Path(output_dir)
    with _manifest_lock(output_dir):
        manifest = read_manifest(output_dir) or {"format": _MANIFEST_FORMAT, "run": {}, "cases": {}}
        manifest["cases"][case] = {"files": [Path(f).name for f in files], "folds": list(folds)}
        _write_manifest(output_dir, manifest)


@contextmanager
def output_lock(output_dir: Path, num_parts: int = 1, part_id: int = 0):
    """Hold the folder's (or this part's) lock while writing; refuse at once when another run holds it."""
    name = ".nnlandmark_predict.lock" if num_parts == 1 else f".nnlandmark_predict.part-{part_id}-of-{num_parts}.lock"
    path = Path(output_dir) / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise OutputExists(f"{output_dir}: another nnlandmark predict (process {holder}) is writing into this "
                               "folder" + ("" if num_parts == 1 else f" as part {part_id} of {num_parts}")
                               + "; wait for it or choose another output folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
        os.unlink(path)  # while still held: a run waiting on it fails, one starting later creates a new one
    finally:
        os.close(fd)


def clear_outputs(output_dir: Path) -> None:
    """Remove what earlier ``predict`` runs wrote in ``output_dir`` (and only that): the files the
    manifest lists, our ``predictions.csv`` and the manifest; in a folder from before the manifest
    (``evaluate-cv``'s own ``predictions/``), the prediction records (:func:`legacy_outputs`)."""
    output_dir = Path(output_dir)
    manifest = read_manifest(output_dir)
    if manifest is None:
        legacy = legacy_outputs(output_dir)
        for files in legacy.values():
            for f in files:
                f.unlink()
        if legacy:
            (output_dir / SUMMARY_FILE).unlink(missing_ok=True)
        return
    for entry in manifest["cases"].values():
        for name in entry.get("files", ()):
            (output_dir / name).unlink(missing_ok=True)
    if manifest.get("summary"):
        (output_dir / SUMMARY_FILE).unlink(missing_ok=True)
    (output_dir / MANIFEST).unlink()


def written_cases(output_dir: Path, identity: dict, own_cases, overwrite: bool, resume: bool, endings,
                  mix_folds: bool = False, num_parts: int = 1, part_id: int = 0):
    """The cases to predict, one at a time, for ``predict``'s loop: creates the folder, holds its
    lock (:func:`output_lock`) while the loop runs, plans again under it (another run may have
    written meanwhile), clears or joins (:func:`start_run`), records each case's files (its
    ``endings``) in the manifest before yielding it, and writes ``predictions.csv`` of every case
    in the folder at the end. The lock is released when the loop ends, normally or not."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with output_lock(output_dir, num_parts, part_id):
        todo, mode = plan_outputs(output_dir, identity, own_cases, overwrite, resume, mix_folds)
        start_run(output_dir, identity, mode, redo=todo)
        for case in todo:
            record_case(output_dir, case, [f"{case}{e}" for e in endings], identity["folds"])
            yield case
        finish_run(output_dir)


# --------------------------------------------------------------------------- the summary

def write_summary(output_dir: Path, case_ids=None) -> list:
    """``predictions.csv`` from every case the manifest lists whose ``<case>.json`` exists (or from
    ``case_ids``); returns the cases it lists.

    After ``present`` come ``uncertainty_mm`` and the calibrated radius (``radius_95_mm``, or each
    radius field the records carry), empty where null, then whether the landmark is ``uncertain``, whether
    its case is lost (``case_lost``) and how many of the case's landmarks are uncertain (``case_uncertain``;
    :mod:`nnlandmark.inference.lost`).
    """
    from nnlandmark.inference.uncertainty import DEFAULT_COVERAGE, coverage_of_key, radius_key
    output_dir = Path(output_dir)
    if case_ids is None:
        case_ids = list(previous_outputs(output_dir))
    records = {}
    for case in sorted(case_ids):
        path = output_dir / f"{case}.json"
        if path.exists():
            records[case] = json.loads(path.read_text())
    keys = sorted({k for record in records.values() for r in record.values() for k in r
                   if coverage_of_key(k) is not None}) or [radius_key(DEFAULT_COVERAGE)]
    rows = []
    for case, record in records.items():
        for name, r in record.items():
            world = r["world_lps_mm"] or [None] * 3
            index = r["voxel_index"] or [None] * 3
            rows.append([case, name, *world, *index, r["score"], r.get("present", True), r.get("uncertainty_mm"),
                         *(r.get(k) for k in keys), r.get("uncertain"), r.get("case_lost"), r.get("case_uncertain")])

    def write(p):
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["case", "landmark", "x_lps_mm", "y_lps_mm", "z_lps_mm", "i", "j", "k", "score", "present",
                        "uncertainty_mm", *keys, "uncertain", "case_lost", "case_uncertain"])
            w.writerows(rows)
    atomic_write(output_dir / SUMMARY_FILE, write)
    return list(records)


def finish_run(output_dir: Path) -> list:
    """``predictions.csv`` of every case in the folder, written under the manifest's lock (parts
    finishing together write it one after the other); returns the cases it lists."""
    with _manifest_lock(output_dir):
        manifest = read_manifest(output_dir)
        if manifest is not None and not manifest.get("summary"):
            manifest["summary"] = SUMMARY_FILE  # from now on predictions.csv is ours to replace
            _write_manifest(output_dir, manifest)
        return write_summary(output_dir)


def merge_predictions(output_dir) -> tuple[list, list]:
    """Rebuild ``predictions.csv`` of a prediction folder (the parts of a run): ``(cases listed,
    cases of the run still missing)``."""
    output_dir = Path(output_dir)
    manifest = read_manifest(output_dir)
    if manifest is None:
        raise InvalidInput(f"{output_dir}: no {MANIFEST}; not a folder that nnlandmark predict wrote into")
    listed = finish_run(output_dir)
    missing = [c for c in manifest.get("run", {}).get("all_cases", []) if c not in listed]
    return listed, missing
