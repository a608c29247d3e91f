"""A self-contained HTML report of an :class:`~nnlandmark.evaluation.result.EvaluationResult`.

:func:`write_report` writes into ``out_dir``::

    report.html          tables (overall, per landmark, biometry, presence, per case)
    error_boxplot.png    radial error per landmark
    sdr_curve.png        success rate against threshold, 0 to 10 mm
    slices/<case>.png    orthogonal slices through each landmark (when images are given)

The HTML refers to the PNGs by relative path, so the folder can be moved as a whole.
Its numbers come from the result's row model (:mod:`nnlandmark.evaluation.result`); the
per-landmark, biometry and presence tables are the ones the text report prints, in
:data:`HTML` notation.
"""
from __future__ import annotations

import html
from pathlib import Path

from nnlandmark.data.formats import read_landmarks
from nnlandmark.evaluation.evaluate import list_case_files, read_references, resolve_reference
from nnlandmark.evaluation.result import (
    EvaluationResult, Notation, biometry_table, landmark_table, presence_table,
)
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


#: the HTML spelling of the tables shared with the text report
HTML = Notation(pm="&plusmn;", none="&ndash;", total="all", pair=" &ndash; ", minus=" &minus; ",
                compact=False, escape=html.escape)


def _table(headers, rows, total_rows=0) -> str:
    """An HTML table; cells are pre-formatted strings (already escaped), the last
    ``total_rows`` rows are emphasised."""
    out = ["<table>", "<tr>" + "".join(f"<th>{h}</th>" for h in headers) + "</tr>"]
    for r, row in enumerate(rows):
        css = ' class="total"' if r >= len(rows) - total_rows else ""
        out.append(f"<tr{css}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _slice_pngs(result, out_dir: Path, images, predictions_dir, reference_dir) -> dict:
    """Draw ``slices/<case>.png`` for every evaluated case with an image; returns case -> note or path."""
    pred_files, _ = list_case_files(predictions_dir)
    ref_files, _ = list_case_files(resolve_reference(reference_dir)[0])
    references = read_references(reference_dir, ref_files, [c for c in sorted(images) if c in ref_files])
    made = {}
    for case in sorted(images):
        if case not in pred_files:
            made[case] = "no prediction file"
            continue
        reference = references.get(case)
        out = out_dir / "slices" / f"{case}.png"
        plot_landmark_slices(images[case], read_landmarks(pred_files[case]), reference, out,
                             names=result.landmark_names)
        made[case] = out
    return made


def refuse_earlier_report(out_dir, overwrite: bool) -> None:
    """An earlier ``report.html`` in ``out_dir`` is replaced only when asked (``overwrite``)."""
    report = Path(out_dir) / "report.html"
    if report.exists() and not overwrite:
        raise OutputExists(f"{report}: exists; use --overwrite to replace the earlier report")


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
    >>> import tempfile
    >>> from nnlandmark.evaluation.result import EvaluationResult
    >>> result = EvaluationResult.from_errors([[1.0, 2.0]], ["c1"], ["a", "b"], thresholds=(2,))
    >>> text = write_report(result, tempfile.mkdtemp()).read_text()
    >>> "error_boxplot.png" in text
    True
    >>> "<tr><td>b</td><td>1</td><td>2.00 &plusmn; 0.00</td>" in text
    True
    """
    out_dir = Path(out_dir)
    refuse_earlier_report(out_dir, overwrite)
    report = out_dir / "report.html"
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = result.sdr_keys

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

    e, n = html.escape, HTML
    o = result.overall_row()
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
        f"<p>MRE <b>{n.mean_std(o.mre_mm, o.std_mm)} mm</b> (population std), "
        f"median {n.mm(o.median_mm)} mm, max {n.mm(o.max_mm)} mm, over {o.n_valid} valid "
        f"errors; missing: {o.missing_in_prediction} in prediction, "
        f"{o.missing_in_reference} in reference.</p>")
    parts.append(_table([f"SDR@{k} mm" for k in keys], [[n.pct(o.sdr[k]) for k in keys]]))
    parts.append("<p class='note'>A detection succeeds when error &le; threshold.</p>")

    parts.append("<h2>Per landmark</h2>")
    parts.append(_table(*landmark_table(result, n), total_rows=1))
    parts.append("<img src='error_boxplot.png' alt='radial error per landmark'>")
    parts.append("<img src='sdr_curve.png' alt='success detection rate curve'>")

    if result.biometry_pairs:
        parts.append("<h2>Biometry</h2>")
        parts.append(_table(*biometry_table(result, n)))

    if result.presence is not None:
        parts.append("<h2>Presence</h2>")
        parts.append(_table(*presence_table(result, n), total_rows=1))
        parts.append("<p class='note'>Positive = present; the MRE is over true positives only.</p>")

    parts.append("<h2>Per case</h2>")
    rows = []
    for r in result.case_rows():
        shot = slices.get(r.case)
        link = f"<a href='#slices-{e(r.case)}'>slices</a>" if isinstance(shot, Path) else e(shot or "")
        rows.append([e(r.case), n.mm(r.mre_mm), n.mm(r.max_mm), r.n_valid,
                     r.missing_in_prediction, r.missing_in_reference, link])
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
