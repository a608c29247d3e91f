"""Cross-validation: each fold predicts its own validation cases, evaluated together;
presence thresholds are calibrated on these predictions.

Presence calibration
--------------------
A landmark's score is its heatmap peak. For every landmark that the references
mark present in some cases and ``"absent"`` in others, :func:`calibrate_presence`
picks the score threshold that maximises F1 of the "present" decisions over
the cross-validation predictions (:func:`~nnlandmark.evaluation.metrics.calibrate_presence_threshold`),
and :func:`store_presence_thresholds` writes it into the model folder's
``nnlandmark.json`` (``presence_thresholds``), where prediction applies it.

Why F1 rather than Youden's J: absences are usually rare, and J weighs the two
classes' *rates* equally, so with 5 absent and 95 present cases one absent case
set right is worth as much as 19 present landmarks thrown away. F1 counts
wrong answers instead: a landmark wrongly declared absent costs about as much
as one wrongly declared present, which is what a user of the predictions sees.
Among equally good thresholds the calibration keeps landmarks present, and the
threshold is then moved down to halfway towards the next lower observed score,
or towards 0 when there is none (same decisions on the calibration data, a
margin for new cases).

Landmarks never annotated absent (or never present) get no threshold: there is
nothing to calibrate against, and they stay always present. Unknown (``null``)
references are left out.

Uncertainty calibration
-----------------------
The same predictions calibrate the uncertainty: :func:`calibrate_uncertainty`
turns each present landmark's radial error and raw spread (``uncertainty_mm``)
into a split-conformal scale per landmark, with a pooled fallback
(:mod:`nnlandmark.evaluation.conformal`), for the coverage asked for (0.95 by
default), and :func:`store_uncertainty_calibration` writes it into
``nnlandmark.json`` (``uncertainty_calibration``). Prediction then writes
``radius_95_mm = scale * uncertainty_mm`` for each landmark.

When a case is lost
-------------------
The same predictions' ``uncertainty_mm`` of present landmarks set when a
landmark counts as uncertain and a case as lost (:func:`calibrate_lost`,
:mod:`nnlandmark.inference.lost`), stored as ``lost_calibration``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nnlandmark.errors import InvalidInput, MissingPath, OutputExists
from nnlandmark.files import atomic_write_text

PRESENCE_KEY = "presence_thresholds"
CALIBRATION_FILE = "presence_calibration.json"
UNCERTAINTY_KEY = "uncertainty_calibration"
UNCERTAINTY_FILE = "uncertainty_calibration.json"
LOST_FILE = "lost_calibration.json"


def evaluate_cv(project_dir, output_dir, model_dir=None, device: str = "cpu", decoder: str | None = None,
                overwrite: bool = False, progress: bool = True, calibrate: bool = True, resume: bool = False,
                coverage: float = 0.95):
    """Predict every fold's validation cases with that fold, then evaluate all of them.

    Uses nnU-Net's ``splits_final.json``; folds without a checkpoint are
    reported and skipped. Predictions go to ``output_dir/predictions``. The
    evaluation is of the predictions as made (with the presence thresholds
    the model had at the time, if any). With ``calibrate``, presence thresholds
    are then calibrated on these predictions and stored in the model folder
    (see the module notes), and ``output_dir/presence_calibration.json`` says
    what was done; so is the uncertainty, for ``coverage`` (the fraction of
    cases whose true landmark should lie within the predicted radius), with
    ``output_dir/uncertainty_calibration.json``. Earlier outputs are refused unless ``overwrite`` (which
    removes them first) or ``resume`` (which keeps the cases already predicted).
    """
    from nnlandmark.data.dataset import discover_images
    from nnlandmark.evaluation.evaluate import OUTPUT_FILES, evaluate
    from nnlandmark.model.folder import ModelFolder, ModelFolderError, resolve_model
    from nnlandmark.inference.predict import clear_outputs, previous_outputs, predict, write_summary
    from nnlandmark.nnunet.console import nnunet_log
    from nnlandmark.nnunet.paths import read_splits, splits_file
    from nnlandmark.planning.project import Project
    from nnlandmark.inference.predict import default_decoder
    from nnlandmark.inference.uncertainty import radius_key

    radius_key(coverage)  # refuses a coverage outside (0, 1) before any work
    project = Project.load(project_dir)
    model = ModelFolder(resolve_model(model_dir or project_dir))  # resolved once, for every fold
    model_dir = model.path
    splits = read_splits(project.folders, project.dataset_name)
    if splits is None:
        raise MissingPath(f"{splits_file(project.folders, project.dataset_name)}: no cross-validation split yet "
                          "(train a fold first)")
    images, _ = discover_images(Path(project.dataset_dir) / "images", len(project.channels))
    output_dir = Path(output_dir)
    predictions = output_dir / "predictions"
    if overwrite and resume:
        raise InvalidInput("--overwrite and --continue: choose one")
    if previous_outputs(predictions) and not (overwrite or resume):
        raise OutputExists(f"{predictions}: holds predictions of an earlier run; use --overwrite to replace them "
                           "or --continue to keep them and predict the rest")
    written = [output_dir / n for n in (*OUTPUT_FILES, CALIBRATION_FILE, UNCERTAINTY_FILE, LOST_FILE)
               if (output_dir / n).exists()]
    if written and not (overwrite or resume):
        raise OutputExists(f"{written[0]}: written by an earlier run; use --overwrite to replace it")
    if overwrite:  # once for all folds: each fold's predict adds its own cases
        clear_outputs(predictions)
    folds_done, predicted = [], []
    with nnunet_log(project.log_file):  # nnU-Net's messages beside the training's
        for fold, split in enumerate(splits):
            try:
                model.check([fold])  # every stage of the fold has a checkpoint
            except ModelFolderError:
                print(f"fold {fold}: no checkpoint, skipped")
                continue
            cases = {c: images[c] for c in split["val"]}
            # resume: the folds' cases are disjoint, and the earlier folds' (and, with --continue, an
            # earlier run's) predictions stay
            predict(cases, predictions, model_dir, folds=[fold], device=device, decoder=decoder, resume=True,
                    progress=progress, mix_folds=True)
            folds_done.append(fold)
            predicted += list(cases)
    if not folds_done:
        raise MissingPath(f"{model_dir}: no fold has a checkpoint")
    write_summary(predictions, predicted)  # each fold's predict wrote a summary of its own cases only
    result = evaluate(predictions, project.dataset_dir, output_dir=output_dir, overwrite=overwrite or resume)
    if calibrate:
        thresholds, details = calibrate_presence(predictions, project.dataset_dir, project.landmarks)
        record = {"rule": "max F1 of present, on cross-validation predictions", "folds": folds_done,
                  "n_cases": len(result.case_ids), "landmarks": details}
        store_presence_thresholds(model_dir, thresholds, record)
        atomic_write_text(output_dir / CALIBRATION_FILE, json.dumps(record, indent=2) + "\n")
        for name, threshold in thresholds.items():
            print(f"presence threshold {name}: {threshold:.4f} (F1 {details[name]['f1']:.3f} on "
                  f"{details[name]['n_present']} present, {details[name]['n_absent']} absent)")
        calibration = calibrate_uncertainty(predictions, project.dataset_dir, project.landmarks, coverage)
        calibration.update({"decoder": decoder or default_decoder(model.description),
                            "folds": folds_done, "n_cases": len(result.case_ids)})
        store_uncertainty_calibration(model_dir, calibration)
        atomic_write_text(output_dir / UNCERTAINTY_FILE, json.dumps(calibration, indent=2) + "\n")
        print(describe_uncertainty_calibration(calibration))
        lost = calibrate_lost(predictions, project.landmarks)
        lost.update({"folds": folds_done})
        from nnlandmark.inference.lost import LOST_KEY
        ModelFolder(model_dir).update({LOST_KEY: lost})
        (output_dir / LOST_FILE).write_text(json.dumps(lost, indent=2) + "\n")
        print(f"lost: a case with more than {100 * lost['max_share']:g}% of its landmarks uncertain "
              f"(largest share in these {lost['n_cases']} cases: {100 * lost['max_share_seen']:g}%)")
    return result


def calibrate_lost(prediction_dir, landmark_names) -> dict:
    """When a landmark is uncertain and a case lost, from the ``uncertainty_mm`` of the present
    landmarks of the predictions in ``prediction_dir``
    (:func:`nnlandmark.inference.lost.calibrate_lost_rule`; landmarks with none are never uncertain)."""
    from nnlandmark.data.formats.json_formats import read_prediction_record
    from nnlandmark.evaluation.conformal import record_values
    from nnlandmark.evaluation.evaluate import list_case_files
    from nnlandmark.inference.lost import calibrate_lost_rule
    files, _ = list_case_files(prediction_dir)
    cases = sorted(files)
    spreads = record_values(files, cases, landmark_names, "uncertainty_mm")
    for i, case in enumerate(cases):
        record = read_prediction_record(files[case]) or {}
        for j, name in enumerate(landmark_names):
            if not (record.get(name) or {}).get("present", True):
                spreads[i, j] = np.nan  # an absent landmark's spread says nothing about a lost scan
    return calibrate_lost_rule({n: spreads[:, j] for j, n in enumerate(landmark_names)})


def presence_scores(prediction_dir, reference_dir, landmark_names) -> dict:
    """Scores of predictions whose reference state is known: ``{name: (scores, truth)}``.

    ``truth`` is True where the reference has the landmark, False where it
    is annotated absent; unknown or unmentioned references are left out, as
    are cases without a prediction.
    """
    from nnlandmark.evaluation.evaluate import list_case_files, read_references, resolve_reference

    landmarks_dir, _ = resolve_reference(reference_dir)
    predictions, _ = list_case_files(prediction_dir)
    references, _ = list_case_files(landmarks_dir)
    cases = sorted(set(predictions) & set(references))
    read = read_references(reference_dir, references, cases)
    out = {name: ([], []) for name in landmark_names}
    for case in cases:
        record = json.loads(predictions[case].read_text())  # the predictor's JSON: scores are only here
        reference = read[case]
        for name in landmark_names:
            status = reference.status(name)
            score = (record.get(name) or {}).get("score")
            if status in ("present", "absent") and score is not None:
                out[name][0].append(float(score))
                out[name][1].append(status == "present")
    return {name: (np.asarray(s, float), np.asarray(t, bool)) for name, (s, t) in out.items()}


def calibrate_presence(prediction_dir, reference_dir, landmark_names) -> tuple[dict, dict]:
    """Per-landmark presence thresholds from predictions and references (module notes).

    Returns
    -------
    thresholds : dict
        ``{name: threshold}`` for landmarks with both present and absent references.
    details : dict
        ``{name: {"threshold", "n_present", "n_absent", "f1", "precision", "recall"}}``
        for the same landmarks, the last three on the calibration data.
    """
    from nnlandmark.evaluation.metrics import calibrate_presence_threshold, presence_metrics

    thresholds, details = {}, {}
    for name, (scores, truth) in presence_scores(prediction_dir, reference_dir, landmark_names).items():
        if truth.all() or not truth.any():
            continue
        best = calibrate_presence_threshold(scores, truth)
        below = scores[scores < best]
        # sigmoid peaks are > 0, so 0 is the next lower score when none was observed; a threshold
        # equal to an observed score would flip that case on a last-bit difference at prediction
        threshold = float((best + (below.max() if below.size else 0.0)) / 2)
        m = presence_metrics((scores >= threshold)[:, None], truth[:, None])["overall"]
        thresholds[name] = threshold
        details[name] = {"threshold": threshold, "n_present": int(truth.sum()), "n_absent": int((~truth).sum()),
                         "f1": m["f1"], "precision": m["precision"], "recall": m["recall"]}
    return thresholds, details


def store_presence_thresholds(model_dir, thresholds: dict, record: dict | None = None) -> None:
    """Replace ``presence_thresholds`` (and ``presence_calibration``) in the model's ``nnlandmark.json``."""
    from nnlandmark.model.folder import ModelFolder
    fields = {PRESENCE_KEY: {name: float(t) for name, t in thresholds.items()}}
    if record is not None:
        fields["presence_calibration"] = record
    ModelFolder(model_dir).update(fields)


def calibrate_uncertainty(prediction_dir, reference_dir, landmark_names, coverage: float = 0.95,
                          min_cases: int | None = None) -> dict:
    """Conformal scales of the predictions' ``uncertainty_mm`` (module notes).

    Scores come from every (case, landmark) with a present reference, a predicted point and a
    spread. Returns :func:`~nnlandmark.evaluation.conformal.calibrate_scales`'s dict plus
    ``radius_key`` (the field prediction writes, e.g. ``radius_95_mm``) and ``rule``.
    """
    from nnlandmark.evaluation.conformal import MIN_CASES_PER_LANDMARK, calibrate_scales, record_values
    from nnlandmark.evaluation.evaluate import evaluate, list_case_files
    from nnlandmark.inference.uncertainty import radius_key

    key = radius_key(coverage)
    result = evaluate(prediction_dir, reference_dir, landmark_names=landmark_names)
    files, _ = list_case_files(prediction_dir)
    spreads = record_values(files, result.case_ids, result.landmark_names, "uncertainty_mm")
    present = np.asarray(result.reference_status) == "present"
    errors = np.where(present, result.errors, np.nan)
    calibration = calibrate_scales({n: errors[:, j] for j, n in enumerate(result.landmark_names)},
                                   {n: spreads[:, j] for j, n in enumerate(result.landmark_names)}, coverage,
                                   MIN_CASES_PER_LANDMARK if min_cases is None else min_cases)
    return {"radius_key": key, "rule": "split conformal: scale = the ceil((n+1) coverage)-th smallest radial "
            "error / uncertainty_mm of the cross-validation predictions; per landmark with at least min_cases, "
            "else pooled over all landmarks", **calibration}


def store_uncertainty_calibration(model_dir, calibration: dict) -> None:
    """Replace ``uncertainty_calibration`` in the model's ``nnlandmark.json`` (prediction reads it)."""
    from nnlandmark.model.folder import ModelFolder
    ModelFolder(model_dir).update({UNCERTAINTY_KEY: calibration})


def describe_uncertainty_calibration(calibration: dict) -> str:
    """What :func:`calibrate_uncertainty` found, in a few printed lines.

    >>> print(describe_uncertainty_calibration({"radius_key": "radius_95_mm", "coverage": 0.95,
    ...     "scale": {"a": 2.5, "b": 3.0}, "source": {"a": "landmark", "b": "pooled"}, "n": {"a": 30, "b": 4},
    ...     "pooled_scale": 3.0, "n_pooled": 34, "min_cases": 20}))
    radius_95_mm = scale x uncertainty_mm, for 95% coverage: pooled scale 3.000 from 34 points
      a: 2.500 (its own 30 points)
      b: 3.000 (pooled; 4 points < 20)
    """
    pooled = calibration["pooled_scale"]
    lines = [f"{calibration['radius_key']} = scale x uncertainty_mm, for {100 * calibration['coverage']:g}% "
             f"coverage: pooled scale {'none' if pooled is None else f'{pooled:.3f}'} from "
             f"{calibration['n_pooled']} points"
             + ("" if pooled is not None else " (too few points for this coverage: radii will be null)")]
    for name, scale in calibration["scale"].items():
        value = "none" if scale is None else f"{scale:.3f}"
        n = calibration["n"][name]
        where = (f"its own {n} points" if calibration["source"][name] == "landmark"
                 else f"pooled; {n} points < {calibration['min_cases']}")
        lines.append(f"  {name}: {value} ({where})")
    return "\n".join(lines)
