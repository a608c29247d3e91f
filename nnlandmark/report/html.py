"""A self-contained HTML report of an :class:`~nnlandmark.evaluation.evaluate.EvaluationResult`.

:func:`write_report` writes into ``out_dir``::

    report.html          tables (overall, per landmark, biometry, presence, per case)
    error_boxplot.png    radial error per landmark
    sdr_curve.png        success rate against threshold, 0 to 10 mm
    slices/<case>.png    orthogonal slices through each landmark (when images are given)

The HTML refers to the PNGs by relative path, so the folder can be moved as a whole.
"""
from __future__ import annotations

import html
import math
from pathlib import Path

from nnlandmark.data.formats import read_landmarks
from nnlandmark.evaluation.evaluate import EvaluationResult, list_case_files, resolve_reference
from nnlandmark.evaluation.metrics import threshold_key
from nnlandmark.report.plots import plot_error_boxplot, plot_sdr_curve
from nnlandmark.report.slices import plot_landmark_slices
from nnlandmark.errors import InvalidInput, OutputExists

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f0f0; }
tr.total td { font-weight: bold; }
.note { color: #666; font-size: 0.9em; }
img { max-width: 100%; }
"""


def _num(value, digits: int = 2) -> str:
    return "&ndash;" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}f}"


def _pct(value) -> str:
    return "&ndash;" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def _table(headers, rows, total_rows=0) -> str:
    """An HTML table; cells are pre-formatted strings (already escaped), the last
    ``total_rows`` rows are emphasised."""
    out = ["<table>", "<tr>" + "".join(f"<th>{h}</th>" for h in headers) + "</tr>"]
    for r, row in enumerate(rows):
        css = ' class="total"' if r >= len(rows) - total_rows else ""
        out.append(f"<tr{css}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _landmark_rows(result: EvaluationResult, keys):
    def row(name, s):
        return ([html.escape(name), s["n_valid"], f"{_num(s['mre_mm'])} &plusmn; {_num(s['std_mm'])}",
                 _num(s["median_mm"]), _num(s["max_mm"])] + [_pct(s["sdr"][k]) for k in keys]
                + [s["missing_in_prediction"], s["missing_in_reference"]])
    rows = [row(n, result.summary["per_landmark"][n]) for n in result.landmark_names]
    return rows + [row("all", result.summary["overall"])]


def _slice_pngs(result, out_dir: Path, images, predictions_dir, reference_dir) -> dict:
    """Draw ``slices/<case>.png`` for every evaluated case with an image; returns case -> note or path."""
    pred_files, _ = list_case_files(predictions_dir)
    ref_files, _ = list_case_files(resolve_reference(reference_dir)[0])
    made = {}
    for case in sorted(images):
        if case not in pred_files:
            made[case] = "no prediction file"
            continue
        reference = read_landmarks(ref_files[case]) if case in ref_files else None
        out = out_dir / "slices" / f"{case}.png"
        plot_landmark_slices(images[case], read_landmarks(pred_files[case]), reference, out,
                             names=result.landmark_names)
        made[case] = out
    return made


def write_report(result: EvaluationResult, out_dir, images: dict | None = None,
                 predictions_dir=None, reference_dir=None, *, overwrite: bool = False,
                 title: str = "nnlandmark evaluation") -> Path:
    """Write ``report.html`` with tables, an error box plot, an SDR curve and slice images.

    Parameters
    ----------
    result : EvaluationResult
        From :func:`~nnlandmark.evaluation.evaluate.evaluate`.
    out_dir : path-like
        Report folder (created when needed).
    images : dict of str to path-like or SimpleITK.Image, optional
        Case -> image. For each case a ``slices/<case>.png`` is drawn with
        :func:`~nnlandmark.report.slices.plot_landmark_slices` and shown in the report.
    predictions_dir, reference_dir : path-like, optional
        Where to read the landmark files for the slice images; default the folders
        ``result`` was computed from. ``reference_dir`` may be a dataset folder.
    overwrite : bool
        Allow replacing an existing ``report.html``; otherwise :class:`FileExistsError`.
    title : str
        Page title.

    Returns
    -------
    Path of ``report.html``.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> from nnlandmark.evaluation.evaluate import EvaluationResult
    >>> from nnlandmark.evaluation.metrics import summarize_errors
    >>> errors = np.array([[1.0, 2.0]])
    >>> status = np.array([["present", "present"]])
    >>> result = EvaluationResult(["c1"], ["a", "b"], (2.0,), errors, status, status,
    ...     summarize_errors(errors, [2.0], landmark_names=["a", "b"], case_ids=["c1"],
    ...                      missing_in_prediction=status != "present",
    ...                      missing_in_reference=status != "present"))
    >>> out = write_report(result, tempfile.mkdtemp())
    >>> "error_boxplot.png" in out.read_text()
    True
    """
    out_dir = Path(out_dir)
    report = out_dir / "report.html"
    if report.exists() and not overwrite:
        raise OutputExists(f"{report}: exists; use --overwrite to replace the earlier report")
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = [threshold_key(t) for t in result.thresholds]

    plot_error_boxplot(result.errors, result.landmark_names, out_dir / "error_boxplot.png")
    plot_sdr_curve(result.errors, out_dir / "sdr_curve.png", landmark_names=result.landmark_names,
                   marked_thresholds=result.thresholds)
    slices = {}
    if images:
        predictions_dir = predictions_dir if predictions_dir is not None else result.prediction_dir
        reference_dir = reference_dir if reference_dir is not None else result.reference_dir
        if predictions_dir is None or reference_dir is None:
            raise InvalidInput("slice images need predictions_dir and reference_dir")
        slices = _slice_pngs(result, out_dir, images, predictions_dir, reference_dir)

    e = html.escape
    o = result.summary["overall"]
    parts = [f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{e(title)}</title>"
             f"<style>{_STYLE}</style></head><body>", f"<h1>{e(title)}</h1>", "<ul>"]
    if result.prediction_dir is not None:
        parts.append(f"<li>predictions: <code>{e(str(result.prediction_dir))}</code></li>")
    if result.reference_dir is not None:
        parts.append(f"<li>reference: <code>{e(str(result.reference_dir))}</code></li>")
    parts.append(f"<li>{len(result.case_ids)} cases evaluated, {len(result.landmark_names)} landmarks</li>")
    for label, cases in (("without prediction", result.cases_without_prediction),
                         ("without reference", result.cases_without_reference)):
        listed = (": " + e(", ".join(cases))) if cases else ""
        parts.append(f"<li>cases {label}: {len(cases)}{listed}</li>")
    if result.ignored_files:
        parts.append(f"<li>ignored files: {e(', '.join(map(str, result.ignored_files)))}</li>")
    parts.append("</ul>")

    parts.append("<h2>Overall</h2>")
    parts.append(
        f"<p>MRE <b>{_num(o['mre_mm'])} &plusmn; {_num(o['std_mm'])} mm</b> (population std), "
        f"median {_num(o['median_mm'])} mm, max {_num(o['max_mm'])} mm, over {o['n_valid']} valid "
        f"errors; missing: {o['missing_in_prediction']} in prediction, "
        f"{o['missing_in_reference']} in reference.</p>")
    parts.append(_table([f"SDR@{k} mm" for k in keys], [[_pct(o["sdr"][k]) for k in keys]]))
    parts.append("<p class='note'>A detection succeeds when error &le; threshold.</p>")

    parts.append("<h2>Per landmark</h2>")
    parts.append(_table(["landmark", "n", "MRE &plusmn; std (mm)", "median", "max"]
                        + [f"SDR@{k}" for k in keys] + ["missing in prediction", "missing in reference"],
                        _landmark_rows(result, keys), total_rows=1))
    parts.append("<img src='error_boxplot.png' alt='radial error per landmark'>")
    parts.append("<img src='sdr_curve.png' alt='success detection rate curve'>")

    if result.biometry_pairs:
        parts.append("<h2>Biometry</h2>")
        rows = [[e(n), " &ndash; ".join(e(x) for x in result.biometry_pairs[n]),
                 s["n_valid"], f"{_num(s['mean_mm'])} &plusmn; {_num(s['std_mm'])}",
                 _num(s["median_mm"]), _num(s["max_mm"]), s["n_missing"]]
                for n, s in result.biometry_summary.items()]
        parts.append(_table(["measurement", "landmarks", "n", "|pred &minus; ref| mean &plusmn; std (mm)",
                             "median", "max", "missing"], rows))

    if result.presence is not None:
        parts.append("<h2>Presence</h2>")
        items = list(result.presence["per_landmark"].items()) + [("all", result.presence["overall"])]
        rows = [[e(n), m["tp"], m["fp"], m["fn"], m["tn"], _num(m["precision"], 3),
                 _num(m["recall"], 3), _num(m["f1"], 3)] for n, m in items]
        parts.append(_table(["landmark", "TP", "FP", "FN", "TN", "precision", "recall", "F1"],
                            rows, total_rows=1))
        parts.append("<p class='note'>Positive = present; the MRE is over true positives only.</p>")

    parts.append("<h2>Per case</h2>")
    rows = []
    for case in result.case_ids:
        s = result.summary["per_case"][case]
        shot = slices.get(case)
        link = f"<a href='#slices-{e(case)}'>slices</a>" if isinstance(shot, Path) else e(shot or "")
        rows.append([e(case), _num(s["mre_mm"]), _num(s["max_mm"]), s["n_valid"],
                     s["missing_in_prediction"], s["missing_in_reference"], link])
    parts.append(_table(["case", "MRE (mm)", "max (mm)", "n", "missing in prediction",
                         "missing in reference", "QC"], rows))

    if slices:
        parts.append("<h2>Slices</h2><p class='note'>Green circle: reference; red cross: "
                     "prediction (both projected onto the slice).</p>")
        for case, shot in slices.items():
            if isinstance(shot, Path):
                rel = shot.relative_to(out_dir).as_posix()
                parts.append(f"<details id='slices-{e(case)}'><summary>{e(case)}</summary>"
                             f"<a href='{e(rel)}'><img src='{e(rel)}' alt='{e(case)}'></a></details>")
            else:
                parts.append(f"<p>{e(case)}: {e(shot)}</p>")
    parts.append("</body></html>\n")
    report.write_text("\n".join(parts), encoding="utf-8")
    return report
