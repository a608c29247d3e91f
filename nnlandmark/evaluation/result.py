"""The data of an evaluation, its one row model, and the text / CSV / JSON renderers.

:class:`EvaluationResult` holds what :func:`~nnlandmark.evaluation.evaluate.evaluate`
measured (cases, landmarks, thresholds, errors, statuses, summaries) and
turns it into typed rows, defined once:

- :meth:`~EvaluationResult.case_rows`: one :class:`CaseRow` per case (its
  statistics, and a :class:`LandmarkCell` / :class:`BiometryCell` per landmark /
  measurement);
- :meth:`~EvaluationResult.landmark_rows` and :meth:`~EvaluationResult.overall_row`:
  a :class:`LandmarkRow` per landmark and one over every error, each with its
  :class:`Presence` counts when presence was scored;
- :meth:`~EvaluationResult.biometry_rows`: a :class:`BiometryRow` per measurement.

Every renderer is a plain function of the result that reads only those rows:
:func:`format_table` (the printed report), :func:`per_case_csv` /
:func:`per_landmark_csv` / :func:`write_csv` (``per_case.csv``,
``per_landmark.csv``), :func:`to_json_dict` / :func:`write_json`
(``evaluation.json``) and :func:`nnlandmark.report.html.write_report`
(``report.html``). The tables that the text and the HTML report share
(:func:`landmark_table`, :func:`biometry_table`, :func:`presence_table`) list
their columns once and differ only in :class:`Notation`.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field, fields
from operator import attrgetter
from pathlib import Path
from typing import Callable

import numpy as np

from nnlandmark.errors import OutputExists
from nnlandmark.evaluation.metrics import (
    DEFAULT_THRESHOLDS_MM, presence_metrics, summarize_errors, threshold_key,
)

#: the files :func:`write_json` and :func:`write_csv` write into an evaluation folder
OUTPUT_FILES = ("evaluation.json", "per_case.csv", "per_landmark.csv")


# ---------------------------------------------------------------- the row model

@dataclass(frozen=True)
class Presence:
    """Presence confusion counts of one landmark (or of all): positive = present.

    Ratios with a zero denominator are NaN; ``n`` counts the entries whose
    reference state is known.
    """

    tp: int
    fp: int
    fn: int
    tn: int
    precision: float
    recall: float
    f1: float
    n: int


@dataclass(frozen=True)
class LandmarkRow:
    """Statistics of one landmark over the cases, or (``landmark`` None) of every error.

    The fields from ``mre_mm`` to ``missing_in_reference`` are the statistics of
    :func:`~nnlandmark.evaluation.metrics.summarize_errors`, under its names;
    ``sdr`` maps :func:`~nnlandmark.evaluation.metrics.threshold_key` to a fraction.
    """

    landmark: str | None
    mre_mm: float
    std_mm: float
    median_mm: float
    max_mm: float
    sdr: dict
    n_valid: int
    n_missing: int
    missing_in_prediction: int
    missing_in_reference: int
    presence: Presence | None = None

    def stats(self) -> dict:
        """The statistics as :func:`~nnlandmark.evaluation.metrics.summarize_errors` keys and orders them."""
        return {k: getattr(self, k) for k in _LANDMARK_STATS}


@dataclass(frozen=True)
class LandmarkCell:
    """One landmark of one case: its radial error (NaN without both points) and both states."""

    error_mm: float
    prediction: str
    reference: str


@dataclass(frozen=True)
class BiometryCell:
    """One measurement of one case: both distances and ``|predicted - reference|``."""

    predicted_mm: float
    reference_mm: float
    abs_error_mm: float


@dataclass(frozen=True)
class CaseRow:
    """One case: statistics over its landmarks, then one cell per landmark and per measurement."""

    case: str
    mre_mm: float
    std_mm: float
    max_mm: float
    n_valid: int
    n_missing: int
    missing_in_prediction: int
    missing_in_reference: int
    landmarks: dict = field(default_factory=dict)  # name -> LandmarkCell
    biometry: dict = field(default_factory=dict)   # measurement -> BiometryCell

    def stats(self) -> dict:
        """The statistics as the ``per_case`` part of ``summarize_errors`` keys and orders them."""
        return {k: getattr(self, k) for k in _CASE_STATS}


@dataclass(frozen=True)
class BiometryRow:
    """Statistics of ``|predicted - reference|`` of one measurement (a distance between two landmarks)."""

    measurement: str
    landmarks: tuple
    mean_mm: float
    std_mm: float
    median_mm: float
    max_mm: float
    n_valid: int
    n_missing: int

    def stats(self) -> dict:
        """The statistics as :func:`~nnlandmark.evaluation.metrics.summarize_biometry` keys them."""
        return {k: getattr(self, k) for k in _BIOMETRY_STATS}


def _names(cls, *skip) -> tuple:
    return tuple(f.name for f in fields(cls) if f.name not in skip)


_LANDMARK_STATS = _names(LandmarkRow, "landmark", "presence")
_CASE_STATS = _names(CaseRow, "case", "landmarks", "biometry")
_BIOMETRY_STATS = _names(BiometryRow, "measurement", "landmarks")


# ---------------------------------------------------------------- the data

@dataclass
class EvaluationResult:
    """The outcome of :func:`~nnlandmark.evaluation.evaluate.evaluate`: data and its rows.

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
    prediction_dir, reference_dir : Path or None
        Where the predictions and the reference were read from.

    Every table is made of the rows of :meth:`case_rows`, :meth:`landmark_rows`,
    :meth:`overall_row` and :meth:`biometry_rows`; the renderers of this module and
    :func:`nnlandmark.report.html.write_report` read nothing else of the statistics.

    Examples
    --------
    >>> import numpy as np
    >>> result = EvaluationResult.from_errors(np.array([[1.0, 3.0], [2.0, np.nan]]),
    ...                                       ["c1", "c2"], ["a", "b"], thresholds=(2,))
    >>> [(r.case, r.mre_mm, r.landmarks["b"].error_mm) for r in result.case_rows()]
    [('c1', 2.0, 3.0), ('c2', 2.0, nan)]
    >>> [(r.landmark, r.mre_mm, r.sdr, r.missing_in_prediction) for r in result.landmark_rows()]
    [('a', 1.5, {'2': 1.0}, 0), ('b', 3.0, {'2': 0.0}, 1)]
    >>> o = result.overall_row()
    >>> o.landmark, o.mre_mm, o.sdr, o.n_valid, o.presence
    (None, 2.0, {'2': 0.6666666666666666}, 3, None)
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
    #: observed coverage of the predictions' calibrated radius (``radius_95_mm``), None when they carry
    #: none: :func:`nnlandmark.evaluation.conformal.coverage_summary` plus ``radius`` and ``target``
    coverage: dict | None = None

    @classmethod
    def from_errors(cls, errors, case_ids, landmark_names, thresholds=DEFAULT_THRESHOLDS_MM,
                    prediction_status=None, reference_status=None, **data) -> "EvaluationResult":
        """A result from a table of radial errors, with its summary and presence metrics.

        Parameters
        ----------
        errors : array_like, shape (N, L)
            Radial errors in mm, NaN where there is none.
        case_ids, landmark_names : sequence of str
            Names of the N rows and the L columns.
        thresholds : sequence of float
            SDR thresholds in mm.
        prediction_status, reference_status : array_like of str, shape (N, L), optional
            Default: ``"present"`` where ``errors`` has a number, ``"missing"`` where NaN.
            A landmark is missing on a side where its status is not ``"present"``;
            presence metrics are computed when either side has an ``"absent"``.
        **data
            Any other field (``cases_without_prediction``, ``prediction_dir``, ...).
        """
        errors = np.asarray(errors, dtype=float)
        default = np.where(np.isnan(errors), "missing", "present")
        pred = default if prediction_status is None else np.asarray(prediction_status, dtype=str)
        ref = default if reference_status is None else np.asarray(reference_status, dtype=str)
        case_ids, landmark_names = list(case_ids), list(landmark_names)
        thresholds = tuple(float(t) for t in thresholds)
        summary = summarize_errors(errors, thresholds, landmark_names=landmark_names, case_ids=case_ids,
                                   missing_in_prediction=pred != "present",
                                   missing_in_reference=ref != "present")
        if "presence" not in data and (np.any(pred == "absent") or np.any(ref == "absent")):
            known = (ref == "present") | (ref == "absent")
            data["presence"] = presence_metrics(pred == "present", ref == "present", known=known,
                                                landmark_names=landmark_names)
        return cls(case_ids, landmark_names, thresholds, errors, pred, ref, summary, **data)

    @property
    def sdr_keys(self) -> list:
        """The keys of every ``sdr`` dict, one per threshold: ``["2", "2.5", ...]``."""
        return [threshold_key(t) for t in self.thresholds]

    # -- the row model: every renderer reads these and nothing else of the statistics

    def case_rows(self) -> list:
        """One :class:`CaseRow` per case of :attr:`case_ids`."""
        rows = []
        for i, case in enumerate(self.case_ids):
            s = self.summary["per_case"][case]
            cells = {name: LandmarkCell(float(self.errors[i, j]), str(self.prediction_status[i, j]),
                                        str(self.reference_status[i, j]))
                     for j, name in enumerate(self.landmark_names)}
            biometry = {name: BiometryCell(float(self.biometry_predicted_mm[i, p]),
                                           float(self.biometry_reference_mm[i, p]),
                                           float(self.biometry_errors[i, p]))
                        for p, name in enumerate(self.biometry_pairs)}
            rows.append(CaseRow(case=case, **{k: s[k] for k in _CASE_STATS}, landmarks=cells,
                                biometry=biometry))
        return rows

    def _landmark_row(self, name, stats, presence) -> LandmarkRow:
        values = {k: stats[k] for k in _LANDMARK_STATS}
        values["sdr"] = dict(values["sdr"])
        return LandmarkRow(landmark=name, **values,
                           presence=None if presence is None else Presence(**presence))

    def landmark_rows(self) -> list:
        """One :class:`LandmarkRow` per landmark of :attr:`landmark_names`."""
        presence = (self.presence or {}).get("per_landmark", {})
        return [self._landmark_row(name, self.summary["per_landmark"][name],
                                   None if self.presence is None else presence[name])
                for name in self.landmark_names]

    def overall_row(self) -> LandmarkRow:
        """The :class:`LandmarkRow` over every (case, landmark) error; ``landmark`` is None."""
        return self._landmark_row(None, self.summary["overall"],
                                  None if self.presence is None else self.presence["overall"])

    def biometry_rows(self) -> list:
        """One :class:`BiometryRow` per measurement of :attr:`biometry_pairs`."""
        return [BiometryRow(measurement=name, landmarks=tuple(pair),
                            **{k: self.biometry_summary[name][k] for k in _BIOMETRY_STATS})
                for name, pair in self.biometry_pairs.items()]

    # -- renderers, kept as methods for existing callers

    def format_table(self) -> str:
        """See :func:`format_table`."""
        return format_table(self)

    def to_dict(self) -> dict:
        """See :func:`to_json_dict`."""
        return to_json_dict(self)

    def to_json(self, path, overwrite: bool = False) -> Path:
        """See :func:`write_json`."""
        return write_json(self, path, overwrite=overwrite)

    def to_csv(self, directory, overwrite: bool = False) -> tuple:
        """See :func:`write_csv`."""
        return write_csv(self, directory, overwrite=overwrite)


# ---------------------------------------------------------------- shared by the renderers

def check_free(paths, overwrite: bool) -> None:
    """Refuse (:class:`~nnlandmark.errors.OutputExists`) when any of ``paths`` exists, unless ``overwrite``."""
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not overwrite:
        raise OutputExists(f"{', '.join(existing)}: already written by an earlier evaluation; use --overwrite "
                           "to replace them")


def _columns(columns: list, rows: list) -> tuple:
    """``(headers, cells)`` of a table given as ``[(header, row -> cell), ...]``."""
    return [h for h, _ in columns], [[cell(row) for _, cell in columns] for row in rows]


@dataclass(frozen=True)
class Notation:
    """How a renderer spells the cells of the tables the text and the HTML report share.

    ``compact`` tables (the monospace text) have short headers and name the table
    in the first one, since there is no heading above it.
    """

    pm: str = "+-"             # between a mean and its std
    none: str = "-"            # an undefined value (NaN or None)
    total: str = "ALL"         # label of the overall row
    pair: str = "-"            # between the two landmarks of a measurement
    minus: str = "-"           # in |pred-ref|
    compact: bool = True
    escape: Callable = str     # applied to names

    def mm(self, value, digits: int = 2) -> str:
        """A number with ``digits`` decimals, or :attr:`none`."""
        return self.none if value is None or math.isnan(value) else f"{value:.{digits}f}"

    def pct(self, value) -> str:
        """A fraction as a percentage with one decimal, or :attr:`none`."""
        return self.none if value is None or math.isnan(value) else f"{100 * value:.1f}%"

    def mean_std(self, mean, std) -> str:
        return f"{self.mm(mean)} {self.pm} {self.mm(std)}"

    def label(self, name) -> str:
        """A row's name; the overall row (name None) is :attr:`total`."""
        return self.total if name is None else self.escape(name)


#: the plain-text spelling
TEXT = Notation()


def landmark_table(result: EvaluationResult, notation: Notation = TEXT) -> tuple:
    """Headers and cells of the per-landmark table: each landmark, then the overall row."""
    n = notation
    columns = [
        ("landmark", lambda r: n.label(r.landmark)),
        ("n", attrgetter("n_valid")),
        (f"MRE {n.pm} std (mm)", lambda r: n.mean_std(r.mre_mm, r.std_mm)),
        ("median", lambda r: n.mm(r.median_mm)),
        ("max", lambda r: n.mm(r.max_mm)),
        *[(f"SDR@{k}", lambda r, k=k: n.pct(r.sdr[k])) for k in result.sdr_keys],
        ("miss pred" if n.compact else "missing in prediction", attrgetter("missing_in_prediction")),
        ("miss ref" if n.compact else "missing in reference", attrgetter("missing_in_reference")),
    ]
    return _columns(columns, result.landmark_rows() + [result.overall_row()])


def biometry_table(result: EvaluationResult, notation: Notation = TEXT) -> tuple:
    """Headers and cells of the biometry table: one row per measurement."""
    n = notation
    columns = [
        ("biometry" if n.compact else "measurement", lambda r: n.escape(r.measurement)),
        ("landmarks", lambda r: n.pair.join(n.escape(x) for x in r.landmarks)),
        ("n", attrgetter("n_valid")),
        (f"|pred{n.minus}ref| mean {n.pm} std (mm)", lambda r: n.mean_std(r.mean_mm, r.std_mm)),
        ("median", lambda r: n.mm(r.median_mm)),
        ("max", lambda r: n.mm(r.max_mm)),
        ("missing", attrgetter("n_missing")),
    ]
    return _columns(columns, result.biometry_rows())


def presence_table(result: EvaluationResult, notation: Notation = TEXT) -> tuple:
    """Headers and cells of the presence table: each landmark, then the overall row."""
    n = notation
    columns = [
        ("presence" if n.compact else "landmark", lambda r: n.label(r.landmark)),
        ("TP", lambda r: r.presence.tp), ("FP", lambda r: r.presence.fp),
        ("FN", lambda r: r.presence.fn), ("TN", lambda r: r.presence.tn),
        ("precision", lambda r: n.mm(r.presence.precision, 3)),
        ("recall", lambda r: n.mm(r.presence.recall, 3)),
        ("F1", lambda r: n.mm(r.presence.f1, 3)),
    ]
    return _columns(columns, result.landmark_rows() + [result.overall_row()])


# ---------------------------------------------------------------- text

def _text_table(headers: list, rows: list) -> str:
    """Monospace table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[c])) for r in [headers] + rows) for c in range(len(headers))]

    def line(cells):
        return "  ".join(str(v).ljust(w) if c == 0 else str(v).rjust(w)
                         for c, (v, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def format_table(result: EvaluationResult) -> str:
    """A readable plain-text report: overall numbers, then per landmark, biometry, presence.

    Examples
    --------
    >>> import numpy as np
    >>> result = EvaluationResult.from_errors([[1.0, 3.0], [2.0, np.nan]], ["c1", "c2"], ["a", "b"],
    ...                                       thresholds=(2,))
    >>> print(format_table(result))
    Evaluation: 2 cases x 2 landmarks
    Cases without prediction: 0
    Cases without reference: 0
    <BLANKLINE>
    MRE    2.00 +- 0.82 mm   median 2.00   max 3.00   (3 valid errors; missing: 1 in prediction, 1 in reference)
    SDR    2 mm: 66.7%
    <BLANKLINE>
    landmark  n  MRE +- std (mm)  median   max   SDR@2  miss pred  miss ref
    --------  -  ---------------  ------  ----  ------  ---------  --------
    a         2     1.50 +- 0.50    1.50  2.00  100.0%          0         0
    b         1     3.00 +- 0.00    3.00  3.00    0.0%          1         1
    ALL       3     2.00 +- 0.82    2.00  3.00   66.7%          1         1
    """
    n = TEXT
    o = result.overall_row()
    lines = [f"Evaluation: {len(result.case_ids)} cases x {len(result.landmark_names)} landmarks"]
    if result.prediction_dir is not None:
        lines.append(f"  predictions: {result.prediction_dir}")
    if result.reference_dir is not None:
        lines.append(f"  reference:   {result.reference_dir}")
    for label, cases in (("without prediction", result.cases_without_prediction),
                         ("without reference", result.cases_without_reference)):
        listed = (": " + ", ".join(cases)) if cases else ""
        lines.append(f"Cases {label}: {len(cases)}{listed}")
    if result.ignored_files:
        lines.append(f"Ignored files: {', '.join(result.ignored_files)}")
    lines += [
        "",
        f"MRE    {n.mean_std(o.mre_mm, o.std_mm)} mm   median {n.mm(o.median_mm)}"
        f"   max {n.mm(o.max_mm)}   ({o.n_valid} valid errors; missing: "
        f"{o.missing_in_prediction} in prediction, {o.missing_in_reference} in reference)",
        "SDR    " + "   ".join(f"{k} mm: {n.pct(o.sdr[k])}" for k in result.sdr_keys),
        "",
        _text_table(*landmark_table(result, n)),
    ]
    if result.biometry_pairs:
        lines += ["", _text_table(*biometry_table(result, n))]
    if result.presence is not None:
        lines += ["", _text_table(*presence_table(result, n)),
                  "(positive = present; MRE above is over true positives only)"]
    if result.coverage is not None:
        from nnlandmark.evaluation.conformal import format_coverage
        lines += ["", format_coverage(result.coverage)]
    return "\n".join(lines)


# ---------------------------------------------------------------- CSV

_PRESENCE_CSV = ("tp", "fp", "fn", "tn", "precision", "recall", "f1")


def per_case_csv(result: EvaluationResult) -> tuple:
    """Header and rows of ``per_case.csv``: case MRE, counts, each error and biometry error."""
    columns = [("case", attrgetter("case"))]
    columns += [(k, attrgetter(k)) for k in ("mre_mm", "std_mm", "max_mm", "n_valid",
                                             "missing_in_prediction", "missing_in_reference")]
    columns += [(f"{name}_error_mm", lambda r, name=name: r.landmarks[name].error_mm)
                for name in result.landmark_names]
    columns += [(f"{name}_abs_error_mm", lambda r, name=name: r.biometry[name].abs_error_mm)
                for name in result.biometry_pairs]
    return _columns(columns, result.case_rows())


def per_landmark_csv(result: EvaluationResult) -> tuple:
    """Header and rows of ``per_landmark.csv``: statistics, SDR, missing and presence counts.

    Examples
    --------
    >>> import numpy as np
    >>> result = EvaluationResult.from_errors([[1.0, 3.0], [2.0, np.nan]], ["c1", "c2"], ["a", "b"],
    ...                                       thresholds=(2,))
    >>> header, rows = per_landmark_csv(result)
    >>> header[:4]
    ['landmark', 'n_valid', 'missing_in_prediction', 'missing_in_reference']
    >>> header[4:]
    ['mre_mm', 'std_mm', 'median_mm', 'max_mm', 'sdr_2mm']
    >>> rows[1]
    ['b', 1, 1, 1, 3.0, 0.0, 3.0, 3.0, 0.0]
    """
    columns = [("landmark", attrgetter("landmark"))]
    columns += [(k, attrgetter(k)) for k in ("n_valid", "missing_in_prediction", "missing_in_reference",
                                             "mre_mm", "std_mm", "median_mm", "max_mm")]
    columns += [(f"sdr_{k}mm", lambda r, k=k: r.sdr[k]) for k in result.sdr_keys]
    if result.presence is not None:
        columns += [(f"presence_{k}", lambda r, k=k: getattr(r.presence, k)) for k in _PRESENCE_CSV]
    return _columns(columns, result.landmark_rows())


def _csv_value(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def write_csv(result: EvaluationResult, directory, overwrite: bool = False) -> tuple:
    """Write ``per_case.csv`` and ``per_landmark.csv`` into ``directory`` (empty cell = NaN).

    Returns the two paths; refuses to replace existing files unless ``overwrite``.
    """
    directory = Path(directory)
    paths = (directory / "per_case.csv", directory / "per_landmark.csv")
    check_free(paths, overwrite)
    directory.mkdir(parents=True, exist_ok=True)
    for path, (header, rows) in zip(paths, (per_case_csv(result), per_landmark_csv(result))):
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows([[_csv_value(v) for v in row] for row in rows])
    return paths


# ---------------------------------------------------------------- JSON

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


def to_json_dict(result: EvaluationResult) -> dict:
    """The content of ``evaluation.json``, in JSON types (NaN becomes None)."""
    cases, landmarks, overall = result.case_rows(), result.landmark_rows(), result.overall_row()
    biometry = None
    if result.biometry_pairs:
        rows = result.biometry_rows()
        biometry = {
            "pairs": {r.measurement: list(r.landmarks) for r in rows},
            "summary": {r.measurement: r.stats() for r in rows},
            "per_case": {c.case: {name: asdict(cell) for name, cell in c.biometry.items()} for c in cases}}
    presence = None
    if result.presence is not None:
        presence = {"overall": asdict(overall.presence),
                    "per_landmark": {r.landmark: asdict(r.presence) for r in landmarks}}
    return _json_safe({
        "prediction_dir": result.prediction_dir, "reference_dir": result.reference_dir,
        "landmarks": result.landmark_names, "thresholds_mm": list(result.thresholds),
        "cases": result.case_ids,
        "cases_without_prediction": result.cases_without_prediction,
        "cases_without_reference": result.cases_without_reference,
        "ignored_files": result.ignored_files,
        "summary": {"thresholds_mm": list(result.thresholds), "overall": overall.stats(),
                    "per_landmark": {r.landmark: r.stats() for r in landmarks},
                    "per_case": {c.case: c.stats() for c in cases}},
        "per_case": {c.case: {name: asdict(cell) for name, cell in c.landmarks.items()} for c in cases},
        "biometry": biometry, "presence": presence, "coverage": result.coverage,
    })


def write_json(result: EvaluationResult, path, overwrite: bool = False) -> Path:
    """Write :func:`to_json_dict` as indented JSON; refuse to replace a file unless ``overwrite``."""
    path = Path(path)
    check_free([path], overwrite)
    path.write_text(json.dumps(to_json_dict(result), indent=2) + "\n")
    return path
