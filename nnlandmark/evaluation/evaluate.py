"""Evaluate a folder of predicted landmarks against reference annotations.

:func:`evaluate` pairs prediction and reference files by case name, builds the
``(N, L, 3)`` world-point arrays and hands them to :mod:`nnlandmark.evaluation.metrics`.
Nothing is dropped silently: cases found on one side only, landmarks missing in the
prediction or the reference, and files that were skipped are all counted and listed
in the result, its JSON and its printed table.

The result (:class:`~nnlandmark.evaluation.result.EvaluationResult`, imported here
as before), its row model and its text / CSV / JSON renderers live in
:mod:`nnlandmark.evaluation.result`.

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

import json
from pathlib import Path

import numpy as np

from nnlandmark.data.formats import landmark_suffix, read_landmarks
from nnlandmark.data.landmarks import Landmarks
from nnlandmark.evaluation.metrics import (
    DEFAULT_THRESHOLDS_MM, biometry_errors, landmark_distances, radial_errors, summarize_biometry,
)
from nnlandmark.evaluation.result import OUTPUT_FILES, EvaluationResult, write_csv, write_json
from nnlandmark.evaluation.result import check_free as _check_free
from nnlandmark.errors import InvalidInput, MissingPath, check_writable

#: Files that live next to predictions or annotations but are not cases
#: (nnU-Net's prediction folder metadata and our own evaluation outputs).
NON_CASE_FILES = frozenset({
    "dataset.json", "plans.json", "predict_from_raw_data_args.json", "dataset_fingerprint.json",
    "splits_final.json", "summary.json", "evaluation.json", "per_case.csv", "per_landmark.csv",
    "predictions.csv", "splits.json", "conversion_notes.json", "nnlandmark.json", "project.json",
})


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
        read from ``c1.json`` (the twin is not listed as ignored: a prediction
        folder of 150 cases would otherwise list 150 files).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingPath(f"{folder}: folder not found")
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
            files[stem] = folder / (stem + ".json")  # the twin is the same case: not listed as ignored
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
        raise MissingPath(f"{reference_dir}: reference folder not found")
    if (reference_dir / "landmarks").is_dir():
        dataset_json = reference_dir / "dataset.json"
        dataset = json.loads(dataset_json.read_text()) if dataset_json.is_file() else None
        return reference_dir / "landmarks", dataset
    return reference_dir, None


def read_references(reference_dir, ref_files: dict, cases) -> dict:
    """``case -> Landmarks`` in world mm of the reference files ``ref_files`` (from
    :func:`list_case_files` of the reference's landmark folder) of ``cases``.

    A dataset folder whose ``dataset.json`` gives its landmarks in pixels
    (``"landmark_units": "pixel"``) has each case's points placed through its image.
    """
    from nnlandmark.data.dataset import DatasetSpec, discover_images, landmarks_from_pixels
    from nnlandmark.data.images import is_picture, read_image_grid
    refs = {c: read_landmarks(ref_files[c]) for c in cases}
    reference_dir = Path(reference_dir)
    _, dataset = resolve_reference(reference_dir)
    if dataset is None or dataset.get("landmark_units", "mm") == "mm":
        return refs
    spec = DatasetSpec.from_file(reference_dir / "dataset.json")
    images, _ = discover_images(reference_dir / "images", len(spec.channels)) \
        if (reference_dir / "images").is_dir() else ({}, [])
    for c in cases:
        if c not in images:
            raise InvalidInput(f"{ref_files[c]}: landmarks in pixels ({reference_dir / 'dataset.json'}: "
                               f"'landmark_units'), but {reference_dir / 'images'} has no image of case {c!r} "
                               "to place them")
        image = images[c][0]
        refs[c] = landmarks_from_pixels(refs[c], read_image_grid(image, spacing=spec.spacing if is_picture(image)
                                                                 else None))
    return refs


def _status_and_points(landmarks: Landmarks, names: list) -> tuple[np.ndarray, list]:
    return landmarks.as_array(names), [landmarks.status(n) for n in names]


def _warn_planar_against_volume(pred_points, ref_points, prediction_dir, reference_dir) -> None:
    """A hint when one side is 2D (every z exactly 0, as a model of 2D images writes) and the other
    3D: the errors then hold the references' z, and the paths are likely mixed up."""
    def flat(points):
        z = points[..., 2][np.isfinite(points[..., 2])]
        return z.size > 0 and bool(np.all(z == 0))

    def spread(points):
        z = points[..., 2][np.isfinite(points[..., 2])]
        return z.size > 0 and float(np.ptp(z)) > 0

    for planar, volume, a, b in ((pred_points, ref_points, prediction_dir, reference_dir),
                                 (ref_points, pred_points, reference_dir, prediction_dir)):
        if flat(planar) and spread(volume):
            import warnings
            warnings.warn(f"{a}: every point has z = 0 (2D images), but the points of {b} are 3D (z varies); "
                          "the errors include their z: are these the right predictions and references?",
                          stacklevel=3)
            return


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
        check_writable(output_dir)

    preds = {c: read_landmarks(pred_files[c]) for c in case_ids}
    refs = read_references(reference_dir, ref_files, case_ids)

    if landmark_names is not None:  # asked for by name: a typo would come back as 'missing' in every case
        known = set().union(*(refs[c].names for c in case_ids))
        unknown = [str(n) for n in landmark_names if str(n) not in known]
        if unknown:
            raise InvalidInput(f"--landmarks: {unknown} not in any reference file of {landmarks_dir} "
                               f"(its landmarks: {sorted(known)})")
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
        raise InvalidInput(f"--landmarks: duplicate landmark names {landmark_names}")


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

    _warn_planar_against_volume(pred_points, ref_points, prediction_dir, landmarks_dir)
    errors = radial_errors(pred_points, ref_points)
    # the summary, and presence metrics when any landmark is absent on either side
    result = EvaluationResult.from_errors(
        errors, case_ids, landmark_names, thresholds, prediction_status=pred_status,
        reference_status=ref_status, cases_without_prediction=without_prediction,
        cases_without_reference=without_reference, ignored_files=ignored, prediction_dir=prediction_dir,
        reference_dir=Path(reference_dir))
    result.coverage = _radius_coverage(pred_files, case_ids, landmark_names, errors, ref_status)

    if biometry:
        index_pairs = {k: (landmark_names.index(a), landmark_names.index(b)) for k, (a, b) in biometry.items()}
        result.biometry_pairs = biometry
        result.biometry_errors = biometry_errors(pred_points, ref_points, index_pairs)
        result.biometry_predicted_mm = landmark_distances(pred_points, index_pairs)
        result.biometry_reference_mm = landmark_distances(ref_points, index_pairs)
        result.biometry_summary = summarize_biometry(result.biometry_errors, list(biometry))

    if output_dir is not None:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json(result, output_dir / "evaluation.json", overwrite=overwrite)
        write_csv(result, output_dir, overwrite=overwrite)
    return result


def _radius_coverage(pred_files, case_ids, landmark_names, errors, ref_status) -> dict | None:
    """Observed coverage of the calibrated radius (``radius_95_mm``, ...) that prediction records carry,
    or None when they carry none (:func:`nnlandmark.evaluation.conformal.coverage_summary`)."""
    from nnlandmark.evaluation.conformal import coverage_summary, radius_keys, record_values
    from nnlandmark.inference.uncertainty import coverage_of_key
    files = {c: pred_files[c] for c in case_ids}
    keys = radius_keys(files)
    if not keys:
        return None
    # one per calibration; should records of several calibrations be mixed, the highest coverage
    key = max(keys, key=coverage_of_key)
    radii = record_values(files, case_ids, landmark_names, key)
    coverage = coverage_summary(errors, radii, np.asarray(ref_status) == "present", landmark_names)
    return {"radius": key, "target": coverage_of_key(key), **coverage}
