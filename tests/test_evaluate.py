"""evaluate() on small hand-made folders."""
import csv
import json
import math
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from nnlandmark.data.formats import write_landmarks
from nnlandmark.data.landmarks import Landmarks
from nnlandmark.evaluation.evaluate import case_stem, evaluate, list_case_files


def _write(path, data):
    path.write_text(json.dumps(data))


def _pred(**landmarks):
    """Prediction JSON: a point, or None for 'present': false."""
    return {name: ({"world_lps_mm": p, "voxel_index": None, "score": 0.9, "present": True} if p is not None
                   else {"world_lps_mm": None, "voxel_index": None, "score": 0.1, "present": False})
            for name, p in landmarks.items()}


@pytest.fixture
def dataset(tmp_path):
    """Dataset with landmarks a, b, c and biometry ab; predictions for c1, c2 and c4.

    errors by hand:
      c1: a |(3, 4, 0)| = 5, b |(0, 0, 2)| = 2, c absent in both (true negative)
      c2: a 1, b predicted absent (false negative, missing in prediction), c |(0, 0, 3)| = 3
    c3 has only a reference, c4 only a prediction.
    """
    ds = tmp_path / "Data"
    (ds / "landmarks").mkdir(parents=True)
    _write(ds / "dataset.json", {"name": "T", "landmarks": ["a", "b", "c"],
                                 "biometry": {"ab": ["a", "b"]}})
    _write(ds / "landmarks" / "c1.json", {"coordinate_system": "LPS",
                                          "landmarks": {"a": [0, 0, 0], "b": [10, 0, 0], "c": "absent"}})
    # a Slicer file in RAS: the case name must come out as "c2" and the points as LPS
    write_landmarks(Landmarks(points={"a": np.zeros(3), "b": np.array([0.0, 10.0, 0.0]),
                                      "c": np.array([5.0, 5.0, 5.0])}),
                    ds / "landmarks" / "c2.mrk.json", coordinate_system="RAS")
    _write(ds / "landmarks" / "c3.json", {"landmarks": {"a": [0, 0, 0], "b": [1, 1, 1], "c": [2, 2, 2]}})
    pred = tmp_path / "pred"
    pred.mkdir()
    _write(pred / "c1.json", _pred(a=[3, 4, 0], b=[10, 0, 2], c=None))
    _write(pred / "c2.json", _pred(a=[0, 0, 1], b=None, c=[5, 5, 8]))
    _write(pred / "c4.json", _pred(a=[0, 0, 0], b=[0, 0, 0], c=[0, 0, 0]))
    _write(pred / "plans.json", {"not": "a case"})
    return ds, pred


def test_case_stem_strips_landmark_suffixes():
    assert [case_stem(n) for n in ("a.mrk.json", "b.json", "c.fcsv", "d.csv", "e.nii.gz")] == \
        ["a", "b", "c", "d", None]


def test_evaluate_hand_computed(dataset, tmp_path):
    ds, pred = dataset
    out = tmp_path / "eval"
    result = evaluate(pred, ds, output_dir=out)

    assert result.case_ids == ["c1", "c2"]
    assert result.landmark_names == ["a", "b", "c"]
    assert result.cases_without_prediction == ["c3"]
    assert result.cases_without_reference == ["c4"]
    assert any(f.endswith("plans.json") for f in result.ignored_files)
    np.testing.assert_allclose(result.errors, [[5, 2, np.nan], [1, np.nan, 3]])
    assert result.reference_status.tolist() == [["present", "present", "absent"],
                                                ["present", "present", "present"]]

    o = result.summary["overall"]
    # valid 5, 2, 1, 3: mean 2.75, squared deviations 5.0625 + 0.5625 + 3.0625 + 0.0625 = 8.75
    assert o["mre_mm"] == pytest.approx(2.75)
    assert o["std_mm"] == pytest.approx(math.sqrt(8.75 / 4))
    assert o["sdr"] == {"2": 0.5, "2.5": 0.5, "3": 0.75, "4": 0.75}
    assert (o["n_valid"], o["missing_in_prediction"], o["missing_in_reference"]) == (4, 2, 1)
    c = result.summary["per_landmark"]["c"]
    assert (c["n_valid"], c["missing_in_prediction"], c["missing_in_reference"]) == (1, 1, 1)
    assert result.summary["per_landmark"]["b"]["missing_in_prediction"] == 1

    # biometry ab: c1 reference 10 mm, prediction |(7, -4, 2)| = sqrt(69); c2 has no predicted b
    np.testing.assert_allclose(result.biometry_errors, [[10 - math.sqrt(69)], [np.nan]])
    assert result.biometry_summary["ab"]["n_missing"] == 1

    # presence: a TP TP; b TP FN; c TN TP
    p = result.presence
    assert {k: p["per_landmark"]["b"][k] for k in ("tp", "fp", "fn", "tn")} == \
        {"tp": 1, "fp": 0, "fn": 1, "tn": 0}
    assert (p["per_landmark"]["c"]["tp"], p["per_landmark"]["c"]["tn"]) == (1, 1)
    assert (p["overall"]["tp"], p["overall"]["fn"], p["overall"]["tn"], p["overall"]["fp"]) == (4, 1, 1, 0)
    assert p["overall"]["f1"] == pytest.approx(8 / 9)

    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["summary"]["overall"]["mre_mm"] == pytest.approx(2.75)
    assert saved["per_case"]["c1"]["c"] == {"error_mm": None, "prediction": "absent", "reference": "absent"}
    assert saved["cases_without_prediction"] == ["c3"]
    with open(out / "per_case.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["case"] for r in rows] == ["c1", "c2"]
    assert float(rows[0]["a_error_mm"]) == 5.0 and rows[0]["c_error_mm"] == ""
    assert float(rows[1]["mre_mm"]) == 2.0
    with open(out / "per_landmark.csv") as f:
        rows = {r["landmark"]: r for r in csv.DictReader(f)}
    assert float(rows["a"]["mre_mm"]) == 3.0 and float(rows["a"]["sdr_2.5mm"]) == 0.5
    assert rows["b"]["presence_fn"] == "1"

    table = result.format_table()
    assert "2.75 +- 1.48 mm" in table
    assert "2.5 mm: 50.0%" in table and "3 mm: 75.0%" in table
    assert "without prediction: 1: c3" in table and "without reference: 1: c4" in table
    assert "ab" in table and "presence" in table
    b_row = next(line for line in table.splitlines() if line.startswith("b "))
    assert b_row.split()[-2:] == ["1", "0"]  # missing in prediction, in reference

    with pytest.raises(FileExistsError):
        evaluate(pred, ds, output_dir=out)
    evaluate(pred, ds, output_dir=out, overwrite=True)


def test_evaluate_landmark_folder_without_dataset_json(dataset):
    ds, pred = dataset
    result = evaluate(pred, ds / "landmarks", thresholds=(1.0,))
    # names from the references in order of appearance; no biometry without dataset.json
    assert result.landmark_names == ["a", "b", "c"]
    assert result.biometry_pairs == {}
    assert result.summary["overall"]["sdr"] == {"1": 0.25}


def test_evaluate_without_absent_has_no_presence_and_explicit_names(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "r").mkdir()
    _write(tmp_path / "r" / "x.json", {"landmarks": {"a": [0, 0, 0], "b": [1, 0, 0]}})
    _write(tmp_path / "p" / "x.json", _pred(a=[0, 0, 0.5], b=[1, 0, 0]))
    result = evaluate(tmp_path / "p", tmp_path / "r", landmark_names=["a"], biometry={})
    assert result.presence is None and result.landmark_names == ["a"]
    np.testing.assert_array_equal(result.errors, [[0.5]])
    assert "presence" not in result.format_table()
    with pytest.raises(ValueError, match="biometry"):
        evaluate(tmp_path / "p", tmp_path / "r", landmark_names=["a"], biometry={"d": ["a", "b"]})


def test_duplicate_case_files_are_refused(tmp_path):
    _write(tmp_path / "x.json", {"landmarks": {"a": [0, 0, 0]}})
    (tmp_path / "x.csv").write_text("name,x,y,z\na,0,0,0\n")
    with pytest.raises(ValueError, match="two landmark files"):
        list_case_files(tmp_path)


def test_a_prediction_folder_lists_only_what_is_not_a_case_as_ignored(tmp_path):
    """The predictor writes <case>.json and its Slicer twin <case>.mrk.json: one case, nothing ignored
    (a folder of 150 cases listed 150 twins); predictions.csv is metadata, listed."""
    for case in ("a", "b"):
        write_landmarks(Landmarks(points={"p": [1.0, 2.0, 3.0]}), tmp_path / f"{case}.json")
        write_landmarks(Landmarks(points={"p": [1.0, 2.0, 3.0]}), tmp_path / f"{case}.mrk.json")
    (tmp_path / "predictions.csv").write_text("case,landmark\n")
    files, ignored = list_case_files(tmp_path)
    assert {k: v.name for k, v in files.items()} == {"a": "a.json", "b": "b.json"}
    assert ignored == ["predictions.csv"]


def test_no_case_in_common_or_empty_predictions_is_an_error_naming_the_folder(dataset, tmp_path):
    ds, _ = dataset
    empty = tmp_path / "empty"
    empty.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    _write(other / "zz.json", _pred(a=[0, 0, 0]))
    for folder in (empty, other):
        with pytest.raises(ValueError, match=str(folder)):
            evaluate(folder, ds)


@pytest.mark.parametrize("thresholds", [[-1.0], [float("nan")], [0.0], [float("inf")], []])
def test_bad_sdr_thresholds_are_refused_before_anything_is_written(dataset, tmp_path, thresholds, capsys):
    from nnlandmark.cli import main
    ds, pred = dataset
    with pytest.raises(ValueError, match="--thresholds"):
        evaluate(pred, ds, thresholds=thresholds, output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    if thresholds:
        assert main(["evaluate", "-p", str(pred), "-r", str(ds), "--thresholds", *map(str, thresholds)]) == 2
        assert "--thresholds" in capsys.readouterr().err


class _Tables(HTMLParser):
    """Every ``<table>`` of an HTML page as a list of rows of cell texts (entities decoded)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tables = []
        self._cell = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell.strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _text_rows(table: str, first_header: str) -> dict:
    """Rows of one monospace table of format_table, by their first cell."""
    lines = table.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_header + "  "))
    rows = {}
    for line in lines[start + 2:]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells
    return rows


def test_every_renderer_shows_the_same_numbers(tmp_path):
    """Text table, CSVs, evaluation.json and report.html agree with each other and with the errors."""
    from nnlandmark.evaluation.result import EvaluationResult
    from nnlandmark.report.html import write_report

    nan = np.nan
    errors = np.array([[1.0, 3.0, nan], [2.25, nan, nan], [0.5, 4.0, nan]])
    pred = np.array([["present", "present", "absent"], ["present", "absent", "absent"],
                     ["present", "present", "missing"]])
    ref = np.array([["present", "present", "absent"], ["present", "present", "absent"],
                    ["present", "present", "unknown"]])
    cases, names, thresholds = ["c1", "c2", "c3"], ["a", "b", "zz"], (2.0, 2.5)
    result = EvaluationResult.from_errors(errors, cases, names, thresholds, pred, ref)
    assert result.presence is not None  # "absent" on either side: presence is scored and shown too

    # what every renderer must show, computed here from the errors (NaN where undefined)
    def mean(values):
        values = values[~np.isnan(values)]
        return values.mean() if values.size else nan

    def sdr(values, t):
        values = values[~np.isnan(values)]
        return (values <= t).mean() if values.size else nan

    case_mre = {c: mean(errors[i]) for i, c in enumerate(cases)}
    landmark_mre = {n: mean(errors[:, j]) for j, n in enumerate(names)}
    landmark_sdr = {n: {k: sdr(errors[:, j], t) for k, t in (("2", 2.0), ("2.5", 2.5))}
                    for j, n in enumerate(names)}
    overall_mre, overall_sdr = mean(errors), {k: sdr(errors, t) for k, t in (("2", 2.0), ("2.5", 2.5))}
    assert math.isnan(landmark_mre["zz"]) and overall_mre == pytest.approx(2.15)

    def shown(value, none):  # how the text and HTML tables print a number
        return none if math.isnan(value) else f"{value:.2f}"

    def pct(value, none):
        return none if math.isnan(value) else f"{100 * value:.1f}%"

    def same(value, written):  # CSV cell or JSON value against a number; NaN is "" / null
        if math.isnan(value):
            return written in ("", None)
        return float(written) == pytest.approx(value)

    # text: the per-landmark table (MRE +- std, SDR columns) and the overall lines
    text = result.format_table()
    rows = _text_rows(text, "landmark")
    assert list(rows) == names + ["ALL"]
    for name, mre, s in [(n, landmark_mre[n], landmark_sdr[n]) for n in names] + [("ALL", overall_mre, overall_sdr)]:
        assert rows[name][2].split(" +- ")[0] == shown(mre, "-"), name
        assert rows[name][5:7] == [pct(s["2"], "-"), pct(s["2.5"], "-")], name
    assert f"MRE    {overall_mre:.2f} +- " in text
    assert f"SDR    2 mm: {pct(overall_sdr['2'], '-')}   2.5 mm: {pct(overall_sdr['2.5'], '-')}" in text

    # CSV: per case (MRE and each error) and per landmark (MRE, SDR)
    result.to_csv(tmp_path)
    with open(tmp_path / "per_case.csv") as f:
        per_case = {r["case"]: r for r in csv.DictReader(f)}
    with open(tmp_path / "per_landmark.csv") as f:
        per_landmark = {r["landmark"]: r for r in csv.DictReader(f)}
    assert list(per_case) == cases and list(per_landmark) == names
    for i, c in enumerate(cases):
        assert same(case_mre[c], per_case[c]["mre_mm"]), c
        for j, n in enumerate(names):
            assert same(errors[i, j], per_case[c][f"{n}_error_mm"]), (c, n)
    for n in names:
        assert same(landmark_mre[n], per_landmark[n]["mre_mm"]), n
        for k in ("2", "2.5"):
            assert same(landmark_sdr[n][k], per_landmark[n][f"sdr_{k}mm"]), (n, k, per_landmark[n])

    # JSON: the summary and the per-case errors
    saved = json.loads(result.to_json(tmp_path / "evaluation.json").read_text())
    summary = saved["summary"]
    for i, c in enumerate(cases):
        assert same(case_mre[c], summary["per_case"][c]["mre_mm"]), c
        for j, n in enumerate(names):
            assert same(errors[i, j], saved["per_case"][c][n]["error_mm"]), (c, n)
            assert (saved["per_case"][c][n]["prediction"], saved["per_case"][c][n]["reference"]) == \
                (pred[i, j], ref[i, j])
    for n in names:
        assert same(landmark_mre[n], summary["per_landmark"][n]["mre_mm"]), n
        for k in ("2", "2.5"):
            assert same(landmark_sdr[n][k], summary["per_landmark"][n]["sdr"][k]), (n, k)
    assert same(overall_mre, summary["overall"]["mre_mm"])
    for k in ("2", "2.5"):
        assert same(overall_sdr[k], summary["overall"]["sdr"][k]), k

    # HTML: overall SDR, per-landmark and per-case tables
    parser = _Tables()
    parser.feed(write_report(result, tmp_path / "report").read_text())
    ndash = "\u2013"

    def table(*headers):  # the table whose header row starts with these
        return next(t for t in parser.tables if t[0][:len(headers)] == list(headers))

    assert table("SDR@2 mm", "SDR@2.5 mm")[1] == [pct(overall_sdr["2"], ndash), pct(overall_sdr["2.5"], ndash)]
    landmarks = {r[0]: r for r in table("landmark", "n")[1:]}
    assert list(landmarks) == names + ["all"]
    for name, mre, s in [(n, landmark_mre[n], landmark_sdr[n]) for n in names] + [("all", overall_mre, overall_sdr)]:
        assert landmarks[name][2].split(" \u00b1 ")[0] == shown(mre, ndash), name
        assert landmarks[name][5:7] == [pct(s["2"], ndash), pct(s["2.5"], ndash)], name
    html_cases = {r[0]: r for r in table("case")[1:]}
    assert list(html_cases) == cases
    for c in cases:
        assert html_cases[c][1] == shown(case_mre[c], ndash), c

    # presence: the same counts in the text table, the CSV, the JSON and the HTML
    text_presence = _text_rows(text, "presence")
    html_presence = table("landmark", "TP")
    for n, html_row in zip(names, html_presence[1:]):
        counts = [per_landmark[n][f"presence_{k}"] for k in ("tp", "fp", "fn", "tn")]
        assert text_presence[n][1:5] == html_row[1:5] == counts, n
        assert [str(saved["presence"]["per_landmark"][n][k]) for k in ("tp", "fp", "fn", "tn")] == counts, n
