"""Evaluate a folder of predicted landmarks against reference annotations.

:func:`evaluate` pairs prediction and reference files by case name, builds the
``(N, L, 3)`` world-point arrays and hands them to :mod:`nnlandmark.evaluation.metrics`.
Nothing is dropped silently: cases found on one side only, landmarks missing in the
prediction or the reference, and files that were skipped are all counted and listed
in the result, its JSON and its printed table.

Examples
--------
>>> import json, tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> (root / "pred").mkdir(); (root / "ref").mkdir()
>>> _ = (root / "ref" / "c1.json").write_text(json.dumps(
...     {"coordinate_system": "LPS", "landmarks": {"a": [0, 0, 0], "b": [10, 0, 0]}}))
>>> _ = (root / "pred" / "c1.json").write_text(json.dumps(
...     {"a": {"world_lps_mm": [3, 4, 0], "present": True},
...      "b": {"world_lps_mm": [10, 0, 1], "present": True}}))
>>> result = evaluate(root / "pred", root / "ref", thresholds=(1, 5))
>>> result.errors
array([[5., 1.]])
>>> result.summary["overall"]["mre_mm"], result.summary["overall"]["sdr"]
(3.0, {'1': 0.5, '5': 1.0})
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnlandmark.data.formats import landmark_suffix, read_landmarks
from nnlandmark.data.landmarks import Landmarks
from nnlandmark.evaluation.metrics import (
    DEFAULT_THRESHOLDS_MM, biometry_errors, landmark_distances, presence_metrics,
    radial_errors, summarize_biometry, summarize_errors, threshold_key,
)
from nnlandmark.errors import InvalidInput, MissingPath, OutputExists

#: Files that live next to predictions or annotations but are not cases
#: (nnU-Net's prediction folder metadata and our own evaluation outputs).
NON_CASE_FILES = frozenset({
    "dataset.json", "plans.json", "predict_from_raw_data_args.json", "dataset_fingerprint.json",
    "splits_final.json", "summary.json", "evaluation.json", "per_case.csv", "per_landmark.csv",
    "predictions.csv", "splits.json", "conversion_notes.json", "nnlandmark.json", "project.json",
})

OUTPUT_FILES = ("evaluation.json", "per_case.csv", "per_landmark.csv")


def case_stem(path) -> str | None:
    """The case name of a landmark file: its name without the landmark suffix.

    Examples
    --------
    >>> case_stem("sub-01.mrk.json"), case_stem("a/b/case_7.fcsv"), case_stem("x.nii.gz")
    ('sub-01', 'case_7', None)
    """
    path = Path(path)
    suffix = landmark_suffix(path)
    return None if suffix is None else path.name[: -len(suffix)]


def list_case_files(folder) -> tuple[dict, list]:
    """Landmark files of a folder keyed by case name.

    Parameters
    ----------
    folder : path-like
        A folder of ``<case>.json`` / ``.mrk.json`` / ``.fcsv`` / ``.csv`` files.

    Returns
    -------
    files : dict of str to Path
        Case name -> file, sorted by case name.
    ignored : list of str
        Names of files skipped because they are not landmark files or are known
        metadata (:data:`NON_CASE_FILES`); hidden files are not listed.

    Raises
    ------
    FileNotFoundError
        When ``folder`` is not a directory.
    ValueError
        When two files give the same case name (``c1.json`` and ``c1.fcsv``);
        ``c1.json`` beside ``c1.mrk.json`` (as the predictor writes them) is
        read from ``c1.json``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingPath(f"{folder}: not a directory")
    files, ignored = {}, []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        stem = case_stem(path) if path.is_file() else None
        if stem is None or path.name.lower() in NON_CASE_FILES:
            ignored.append(path.name)
            continue
        if stem in files and {files[stem].name, path.name} == {stem + ".json", stem + ".mrk.json"}:
            # the predictor writes both; its .json holds the exact record (scores, presence)
            files[stem] = folder / (stem + ".json")
            ignored.append(stem + ".mrk.json")
            continue
        if stem in files:
            raise InvalidInput(f"{folder}: case {stem!r} has two landmark files: "
                             f"{files[stem].name} and {path.name}")
        files[stem] = path
    return dict(sorted(files.items())), ignored


def resolve_reference(reference_dir) -> tuple[Path, dict | None]:
    """The landmark folder and ``dataset.json`` content of a reference location.

    ``reference_dir`` is either a landmark folder or a dataset folder
    (``docs/dataset_layout.md``) with ``landmarks/`` and ``dataset.json``.

    Returns
    -------
    landmarks_dir : Path
    dataset : dict or None
        Parsed ``dataset.json`` when there is one next to ``landmarks/``.
    """
    reference_dir = Path(reference_dir)
    if not reference_dir.is_dir():
        raise MissingPath(f"{reference_dir}: not a directory")
    if (reference_dir / "landmarks").is_dir():
        dataset_json = reference_dir / "dataset.json"
        dataset = json.loads(dataset_json.read_text()) if dataset_json.is_file() else None
        return reference_dir / "landmarks", dataset
    return reference_dir, None


def _json_safe(value):
    """Recursively turn NumPy values into JSON types and NaN into None."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _check_free(paths, overwrite: bool) -> None:
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not overwrite:
        raise OutputExists(f"{', '.join(existing)}: already written by an earlier evaluation; use --overwrite "
                           "to replace them")


def _csv_value(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def _fmt(value: float, digits: int = 2) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f}%"


def _table(headers: list, rows: list) -> str:
    """Monospace table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[c])) for r in [headers] + rows) for c in range(len(headers))]

    def line(cells):
        return "  ".join(str(v).ljust(w) if c == 0 else str(v).rjust(w)
                         for c, (v, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


@dataclass
class EvaluationResult:
    """The outcome of :func:`evaluate`.

    Attributes
    ----------
    case_ids : list of str
        Cases found on both sides (rows of every table), sorted.
    landmark_names : list of str
        Evaluated landmarks (columns).
    thresholds : tuple of float
        SDR thresholds in mm (success when ``error <= t``).
    errors : ndarray, shape (N, L)
        Radial errors in mm; NaN where the prediction or the reference has no point.
    prediction_status, reference_status : ndarray of str, shape (N, L)
        ``"present"``, ``"absent"``, ``"unknown"`` or ``"missing"`` (not in the file).
    summary : dict
        :func:`~nnlandmark.evaluation.metrics.summarize_errors` output, with
        ``missing_in_prediction`` / ``missing_in_reference`` counts.
    biometry_pairs : dict of str to (str, str)
        Measurement name -> landmark names; empty when no biometry was asked for.
    biometry_errors : ndarray, shape (N, P)
        ``|predicted - reference|`` distance in mm.
    biometry_predicted_mm, biometry_reference_mm : ndarray, shape (N, P)
        The distances themselves.
    biometry_summary : dict
        :func:`~nnlandmark.evaluation.metrics.summarize_biometry` output.
    presence : dict or None
        :func:`~nnlandmark.evaluation.metrics.presence_metrics` output, computed
        when any landmark is absent in the prediction or the reference.
    cases_without_prediction, cases_without_reference : list of str
        Cases found on one side only; they are in no table.
    ignored_files : list of str
        Files of either folder that were not read as cases.
    """

    case_ids: list
    landmark_names: list
    thresholds: tuple
    errors: np.ndarray
    prediction_status: np.ndarray
    reference_status: np.ndarray
    summary: dict
    biometry_pairs: dict = field(default_factory=dict)
    biometry_errors: np.ndarray | None = None
    biometry_predicted_mm: np.ndarray | None = None
    biometry_reference_mm: np.ndarray | None = None
    biometry_summary: dict = field(default_factory=dict)
    presence: dict | None = None
    cases_without_prediction: list = field(default_factory=list)
    cases_without_reference: list = field(default_factory=list)
    ignored_files: list = field(default_factory=list)
    prediction_dir: Path | None = None
    reference_dir: Path | None = None

    def to_dict(self) -> dict:
        """Everything in JSON types (NaN becomes None)."""
        per_case = {}
        for i, case in enumerate(self.case_ids):
            per_case[case] = {
                name: {"error_mm": self.errors[i, j],
                       "prediction": str(self.prediction_status[i, j]),
                       "reference": str(self.reference_status[i, j])}
                for j, name in enumerate(self.landmark_names)}
        biometry = None
        if self.biometry_pairs:
            biometry = {
                "pairs": {k: list(v) for k, v in self.biometry_pairs.items()},
                "summary": self.biometry_summary,
                "per_case": {case: {name: {"predicted_mm": self.biometry_predicted_mm[i, p],
                                           "reference_mm": self.biometry_reference_mm[i, p],
                                           "abs_error_mm": self.biometry_errors[i, p]}
                                    for p, name in enumerate(self.biometry_pairs)}
                             for i, case in enumerate(self.case_ids)}}
        return _json_safe({
            "prediction_dir": self.prediction_dir, "reference_dir": self.reference_dir,
            "landmarks": self.landmark_names, "thresholds_mm": list(self.thresholds),
            "cases": self.case_ids,
            "cases_without_prediction": self.cases_without_prediction,
            "cases_without_reference": self.cases_without_reference,
            "ignored_files": self.ignored_files,
            "summary": self.summary, "per_case": per_case,
            "biometry": biometry, "presence": self.presence,
        })

    def to_json(self, path, overwrite: bool = False) -> Path:
        """Write :meth:`to_dict` as indented JSON; refuse to replace a file unless ``overwrite``."""
        path = Path(path)
        _check_free([path], overwrite)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def per_case_rows(self) -> tuple[list, list]:
        """Header and rows of ``per_case.csv``: case MRE, counts, each error and biometry error."""
        header = ["case", "mre_mm", "std_mm", "max_mm", "n_valid", "missing_in_prediction",
                  "missing_in_reference"]
        header += [f"{n}_error_mm" for n in self.landmark_names]
        header += [f"{n}_abs_error_mm" for n in self.biometry_pairs]
        rows = []
        for i, case in enumerate(self.case_ids):
            s = self.summary["per_case"][case]
            row = [case] + [s[k] for k in header[1:7]] + [float(e) for e in self.errors[i]]
            if self.biometry_pairs:
                row += [float(e) for e in self.biometry_errors[i]]
            rows.append(row)
        return header, rows

    def per_landmark_rows(self) -> tuple[list, list]:
        """Header and rows of ``per_landmark.csv``: statistics, SDR, missing and presence counts."""
        keys = [threshold_key(t) for t in self.thresholds]
        header = ["landmark", "n_valid", "missing_in_prediction", "missing_in_reference",
                  "mre_mm", "std_mm", "median_mm", "max_mm"] + [f"sdr_{k}mm" for k in keys]
        presence_keys = ["tp", "fp", "fn", "tn", "precision", "recall", "f1"]
        if self.presence is not None:
            header += [f"presence_{k}" for k in presence_keys]
        rows = []
        for name in self.landmark_names:
            s = self.summary["per_landmark"][name]
            row = [name] + [s[k] for k in header[1:8]] + [s["sdr"][k] for k in keys]
            if self.presence is not None:
                row += [self.presence["per_landmark"][name][k] for k in presence_keys]
            rows.append(row)
        return header, rows

    def to_csv(self, directory, overwrite: bool = False) -> tuple[Path, Path]:
        """Write ``per_case.csv`` and ``per_landmark.csv`` into ``directory`` (empty cell = NaN).

        Returns the two paths; refuses to replace existing files unless ``overwrite``.
        """
        directory = Path(directory)
        paths = (directory / "per_case.csv", directory / "per_landmark.csv")
        _check_free(paths, overwrite)
        directory.mkdir(parents=True, exist_ok=True)
        for path, (header, rows) in zip(paths, (self.per_case_rows(), self.per_landmark_rows())):
            with open(path, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(header)
                writer.writerows([[_csv_value(v) for v in row] for row in rows])
        return paths

    def format_table(self) -> str:
        """A readable plain-text report: overall numbers, then per landmark, biometry, presence."""
        o = self.summary["overall"]
        keys = [threshold_key(t) for t in self.thresholds]
        lines = [f"Evaluation: {len(self.case_ids)} cases x {len(self.landmark_names)} landmarks"]
        if self.prediction_dir is not None:
            lines.append(f"  predictions: {self.prediction_dir}")
        if self.reference_dir is not None:
            lines.append(f"  reference:   {self.reference_dir}")
        for label, cases in (("without prediction", self.cases_without_prediction),
                             ("without reference", self.cases_without_reference)):
            listed = (": " + ", ".join(cases)) if cases else ""
            lines.append(f"Cases {label}: {len(cases)}{listed}")
        if self.ignored_files:
            lines.append(f"Ignored files: {', '.join(self.ignored_files)}")
        lines += [
            "",
            f"MRE    {_fmt(o['mre_mm'])} +- {_fmt(o['std_mm'])} mm   median {_fmt(o['median_mm'])}"
            f"   max {_fmt(o['max_mm'])}   ({o['n_valid']} valid errors; missing: "
            f"{o['missing_in_prediction']} in prediction, {o['missing_in_reference']} in reference)",
            "SDR    " + "   ".join(f"{k} mm: {_pct(o['sdr'][k])}" for k in keys),
            "",
        ]
        headers = ["landmark", "n", "MRE +- std (mm)", "median", "max"] \
            + [f"SDR@{k}" for k in keys] + ["miss pred", "miss ref"]
        rows = []
        for name in self.landmark_names:
            s = self.summary["per_landmark"][name]
            rows.append([name, s["n_valid"], f"{_fmt(s['mre_mm'])} +- {_fmt(s['std_mm'])}",
                         _fmt(s["median_mm"]), _fmt(s["max_mm"])]
                        + [_pct(s["sdr"][k]) for k in keys]
                        + [s["missing_in_prediction"], s["missing_in_reference"]])
        rows.append(["ALL", o["n_valid"], f"{_fmt(o['mre_mm'])} +- {_fmt(o['std_mm'])}",
                     _fmt(o["median_mm"]), _fmt(o["max_mm"])]
                    + [_pct(o["sdr"][k]) for k in keys]
                    + [o["missing_in_prediction"], o["missing_in_reference"]])
        lines.append(_table(headers, rows))
        if self.biometry_pairs:
            headers = ["biometry", "landmarks", "n", "|pred-ref| mean +- std (mm)", "median", "max",
                       "missing"]
            rows = [[name, "-".join(self.biometry_pairs[name]), s["n_valid"],
                     f"{_fmt(s['mean_mm'])} +- {_fmt(s['std_mm'])}", _fmt(s["median_mm"]),
                     _fmt(s["max_mm"]), s["n_missing"]]
                    for name, s in self.biometry_summary.items()]
            lines += ["", _table(headers, rows)]
        if self.presence is not None:
            headers = ["presence", "TP", "FP", "FN", "TN", "precision", "recall", "F1"]
            items = list(self.presence["per_landmark"].items()) + [("ALL", self.presence["overall"])]
            rows = [[name, m["tp"], m["fp"], m["fn"], m["tn"], _fmt(m["precision"], 3),
                     _fmt(m["recall"], 3), _fmt(m["f1"], 3)] for name, m in items]
            lines += ["", _table(headers, rows),
                      "(positive = present; MRE above is over true positives only)"]
        return "\n".join(lines)


def _status_and_points(landmarks: Landmarks, names: list) -> tuple[np.ndarray, list]:
    return landmarks.as_array(names), [landmarks.status(n) for n in names]


def _check_thresholds(thresholds) -> tuple:
    """SDR thresholds as floats; each must be a finite, positive number of mm.

    >>> _check_thresholds([2, 4.0])
    (2.0, 4.0)
    """
    values = tuple(float(t) for t in thresholds)
    bad = [t for t in values if not (t > 0 and t != float("inf"))]
    if bad or not values:
        raise InvalidInput(f"--thresholds: SDR thresholds must be positive, finite mm values, got {list(values)}")
    return values


def evaluate(prediction_dir, reference_dir, landmark_names=None,
             thresholds=DEFAULT_THRESHOLDS_MM, biometry=None, output_dir=None,
             overwrite: bool = False) -> EvaluationResult:
    """Compare predicted landmark files with reference annotations.

    Parameters
    ----------
    prediction_dir : path-like
        Folder of ``<case>.json`` prediction files (any format
        :func:`~nnlandmark.data.formats.read_landmarks` reads).
    reference_dir : path-like
        A landmark folder, or a dataset folder whose ``landmarks/`` is used and
        whose ``dataset.json`` supplies ``landmarks`` and ``biometry`` when they are
        not given.
    landmark_names : sequence of str, optional
        Landmarks to evaluate, in this order. Default: ``dataset.json`` order, else
        every name found in the references (then in the predictions) in order of
        appearance.
    thresholds : sequence of float
        SDR thresholds in mm; ``error <= t`` is a success.
    biometry : dict of str to (str, str), optional
        Measurement name -> two landmark names. Default: ``dataset.json``
        ``biometry``, else none.
    output_dir : path-like, optional
        When given, write ``evaluation.json``, ``per_case.csv`` and
        ``per_landmark.csv`` there.
    overwrite : bool
        Allow replacing those files; otherwise :class:`FileExistsError` is raised
        before anything is written.

    Returns
    -------
    EvaluationResult

    Notes
    -----
    Cases are matched by file name without its landmark suffix (``.mrk.json``,
    ``.json``, ``.fcsv``, ``.csv``). A case present on one side only is listed in
    ``cases_without_prediction`` / ``cases_without_reference`` and left out of the
    tables. A landmark without a point (absent, unknown, or not in the file) on
    either side has no error; it is counted per landmark as
    ``missing_in_prediction`` and/or ``missing_in_reference``. When any landmark
    is annotated or predicted absent, presence metrics are computed over the
    entries whose reference state is known (present or absent).
    """
    prediction_dir = Path(prediction_dir)
    landmarks_dir, dataset = resolve_reference(reference_dir)
    pred_files, pred_ignored = list_case_files(prediction_dir)
    ref_files, ref_ignored = list_case_files(landmarks_dir)
    ignored = [f"{prediction_dir / n}" for n in pred_ignored] + [f"{landmarks_dir / n}" for n in ref_ignored]

    thresholds = _check_thresholds(thresholds)
    case_ids = [c for c in ref_files if c in pred_files]
    without_prediction = [c for c in ref_files if c not in pred_files]
    without_reference = [c for c in pred_files if c not in ref_files]
    if not case_ids:
        # nothing to score is a mistake in the paths, not a result of "0 cases"
        raise InvalidInput(f"{prediction_dir}: no prediction matches a case of {landmarks_dir} "
                         f"({len(pred_files)} prediction(s), {len(ref_files)} reference(s); cases are matched by "
                         "file name)")
    if output_dir is not None:
        # fail before the (possibly slow) reading, not after
        _check_free([Path(output_dir) / n for n in OUTPUT_FILES], overwrite)

    preds = {c: read_landmarks(pred_files[c]) for c in case_ids}
    refs = {c: read_landmarks(ref_files[c]) for c in case_ids}

    if landmark_names is None and dataset is not None and dataset.get("landmarks"):
        landmark_names = dataset["landmarks"]
    if landmark_names is None:
        # dict keeps first-appearance order and removes duplicates
        seen = {}
        for source in (refs, preds):
            for c in case_ids:
                seen.update(dict.fromkeys(source[c].names))
        landmark_names = list(seen)
    landmark_names = [str(n) for n in landmark_names]
    if len(set(landmark_names)) != len(landmark_names):
        raise InvalidInput(f"duplicate landmark names: {landmark_names}")

    if biometry is None and dataset is not None:
        # the dataset's measurements that the evaluated landmarks allow (all, unless a subset was asked for)
        biometry = {k: v for k, v in (dataset.get("biometry") or {}).items()
                    if all(p in landmark_names for p in v)}
    biometry = {str(k): tuple(v) for k, v in (biometry or {}).items()}
    for name, pair in biometry.items():
        if len(pair) != 2 or any(p not in landmark_names for p in pair):
            raise InvalidInput(f"biometry {name!r}: {list(pair)} must be two of the evaluated "
                             f"landmarks {landmark_names}")

    n, m = len(case_ids), len(landmark_names)
    pred_points = np.full((n, m, 3), np.nan)
    ref_points = np.full((n, m, 3), np.nan)
    pred_status = np.empty((n, m), dtype=object)
    ref_status = np.empty((n, m), dtype=object)
    for i, c in enumerate(case_ids):
        pred_points[i], pred_status[i] = _status_and_points(preds[c], landmark_names)
        ref_points[i], ref_status[i] = _status_and_points(refs[c], landmark_names)
    pred_status = pred_status.astype(str) if n else np.empty((0, m), dtype=str)
    ref_status = ref_status.astype(str) if n else np.empty((0, m), dtype=str)

    errors = radial_errors(pred_points, ref_points)
    summary = summarize_errors(errors, thresholds, landmark_names=landmark_names, case_ids=case_ids,
                               missing_in_prediction=pred_status != "present",
                               missing_in_reference=ref_status != "present")

    result = EvaluationResult(
        case_ids=case_ids, landmark_names=landmark_names,
        thresholds=tuple(float(t) for t in thresholds), errors=errors,
        prediction_status=pred_status, reference_status=ref_status, summary=summary,
        cases_without_prediction=without_prediction, cases_without_reference=without_reference,
        ignored_files=ignored, prediction_dir=prediction_dir, reference_dir=Path(reference_dir))

    if biometry:
        index_pairs = {k: (landmark_names.index(a), landmark_names.index(b)) for k, (a, b) in biometry.items()}
        result.biometry_pairs = biometry
        result.biometry_errors = biometry_errors(pred_points, ref_points, index_pairs)
        result.biometry_predicted_mm = landmark_distances(pred_points, index_pairs)
        result.biometry_reference_mm = landmark_distances(ref_points, index_pairs)
        result.biometry_summary = summarize_biometry(result.biometry_errors, list(biometry))

    if np.any(pred_status == "absent") or np.any(ref_status == "absent"):
        known = (ref_status == "present") | (ref_status == "absent")
        result.presence = presence_metrics(pred_status == "present", ref_status == "present",
                                           known=known, landmark_names=landmark_names)

    if output_dir is not None:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        result.to_json(output_dir / "evaluation.json", overwrite=overwrite)
        result.to_csv(output_dir, overwrite=overwrite)
    return result
