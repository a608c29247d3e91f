"""Missing vs absent landmarks: training targets and loss mask, presence calibration, absent predictions."""
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnlandmark.evaluation.cross_validation import calibrate_presence


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_calibrate_presence_by_hand(tmp_path):
    """F1-maximising threshold, moved halfway to the next lower score; unknown references and
    landmarks that are never absent are left out."""
    scores = {"c1": (0.9, 0.8), "c2": (0.7, 0.6), "c3": (0.3, 0.95), "c4": (0.5, 0.2), "c5": (0.65, 0.1)}
    refs = {"c1": [1, 2, 3], "c2": [1, 2, 3], "c3": "absent", "c4": "absent", "c5": None}
    for case, (a, b) in scores.items():
        _write_json(tmp_path / "pred" / f"{case}.json",
                    {"a": {"world_lps_mm": [0, 0, 0], "score": a, "present": True},
                     "b": {"world_lps_mm": [0, 0, 0], "score": b, "present": True}})
        _write_json(tmp_path / "ref" / f"{case}.json",
                    {"coordinate_system": "LPS", "landmarks": {"a": refs[case], "b": [0, 0, 0]}})
    thresholds, details = calibrate_presence(tmp_path / "pred", tmp_path / "ref", ["a", "b"])
    # a: present 0.9, 0.7; absent 0.3, 0.5 (c5 is unknown: its 0.65 does not count).
    # F1 is 1 from 0.7 down to just above 0.5: threshold halfway between 0.7 and 0.5.
    assert thresholds == {"a": pytest.approx(0.6)}
    assert details["a"]["n_present"] == 2 and details["a"]["n_absent"] == 2 and details["a"]["f1"] == 1.0


def test_calibrated_threshold_keeps_a_margin_below_the_lowest_score(tmp_path):
    """When the best threshold is the lowest observed score (here the absent case scores higher than the
    present one, so F1 keeps both present), it moves halfway to 0: a threshold equal to an observed
    score would flip that case on a last-bit difference when the model predicts it again."""
    for case, (score, ref) in {"c1": (0.4, [1, 2, 3]), "c2": (0.8, "absent")}.items():
        _write_json(tmp_path / "pred" / f"{case}.json", {"a": {"world_lps_mm": [0, 0, 0], "score": score,
                                                                "present": True}})
        _write_json(tmp_path / "ref" / f"{case}.json", {"coordinate_system": "LPS", "landmarks": {"a": ref}})
    thresholds, details = calibrate_presence(tmp_path / "pred", tmp_path / "ref", ["a"])
    assert thresholds == {"a": pytest.approx(0.2)}
    assert details["a"]["recall"] == 1.0 and details["a"]["precision"] == 0.5


@pytest.fixture(scope="module")
def absent_project(tmp_path_factory, synthetic_dataset, prepared_project, tiny_model):
    """Copies of the session dataset and project (with its tiny model) where, of fold 0's two
    validation cases, 'left_ear' is annotated absent in the one where the model scores it lower
    and 'vertex' unknown in the other.

    The choice makes the calibration's outcome definite: the absent ear scores below the one
    present ear, so the F1-best threshold separates them (the model, trained on the unedited
    project, scores the images the same whatever their annotations say)."""
    from nnlandmark.inference.predict import predict
    root = tmp_path_factory.mktemp("absent")
    data = Path(shutil.copytree(synthetic_dataset, root / "data"))
    project = Path(shutil.copytree(prepared_project, root / "project"))
    description = json.loads((project / "project.json").read_text())
    description["dataset_dir"] = str(data.resolve())
    (project / "project.json").write_text(json.dumps(description))
    splits = next(project.glob("nnUNet_preprocessed/*/splits_final.json"))
    val = json.loads(splits.read_text())[0]["val"]
    assert len(val) == 2
    images = {c: [next((synthetic_dataset / "images").glob(f"{c}.*"))] for c in val}
    scored = predict(images, root / "scores", tiny_model, progress=False)
    scores = {c: json.loads((scored / f"{c}.json").read_text())["left_ear"]["score"] for c in val}
    absent, unknown = sorted(val, key=scores.get)
    # predictions keep 5 decimals of a score: two that close could not be told apart
    assert scores[unknown] - scores[absent] > 1e-4, scores
    for case, name, value in ((absent, "left_ear", "absent"), (unknown, "vertex", None)):
        path = data / "landmarks" / f"{case}.json"
        record = json.loads(path.read_text())
        record["landmarks"][name] = value
        path.write_text(json.dumps(record))
    return SimpleNamespace(data=data, project=project, absent_case=absent, unknown_case=unknown,
                           model=Path(tiny_model).resolve().relative_to(Path(prepared_project).resolve()))


def test_absent_trains_to_zero_and_unknown_is_masked(absent_project, tmp_path):
    from nnlandmark.data.dataset import load_dataset
    from nnlandmark.nnunet.paths import nnunet_environment
    from nnlandmark.nnunet.raw import write_raw_dataset
    from nnlandmark.planning.project import Project
    from nnlandmark.training.presets import TrainingSettings
    from nnlandmark.training.train import _landmark_records, _unknown_landmarks, stage_trainer

    project = Project.load(absent_project.project)
    names = project.landmarks
    ear, vertex = names.index("left_ear"), names.index("vertex")
    a, u = absent_project.absent_case, absent_project.unknown_case
    write_raw_dataset(load_dataset(absent_project.data), project.raw_dir(), progress=False)

    # the raw export: no cube for either, the sidecar tells them apart
    sidecar = json.loads((project.raw_dir() / "landmarks_world.json").read_text())
    assert sidecar[a]["left_ear"] == "absent" and sidecar[u]["vertex"] == "unknown"
    labels = {c: sitk.GetArrayFromImage(sitk.ReadImage(str(project.raw_dir() / "labelsTr" / f"{c}.mha")))
              for c in (a, u)}
    assert not (labels[a] == ear + 1).any() and (labels[a] == vertex + 1).sum() == 27
    assert not (labels[u] == vertex + 1).any() and (labels[u] == ear + 1).sum() == 27
    unknown = _unknown_landmarks(_landmark_records(project))
    assert unknown[u] == ["vertex"] and unknown[a] == []

    with nnunet_environment(project.folders):
        # the unknown landmarks come from the sidecar; targets on the cubes' centroids, so that their peaks are 1
        trainer = stage_trainer(project, 0, "fullres", TrainingSettings(preset="cone", epochs=1, exact_targets=False),
                                tmp_path / "model")
    seg = torch.from_numpy(np.stack([labels[a], labels[u]])[:, None].astype(np.int16))
    batch = {"data": torch.zeros(2, 1, *seg.shape[2:]), "target": seg, "keys": [a, u]}
    _, target, mask = trainer._inputs(batch)
    assert target[0, ear].max() == 0 and mask[0, ear]          # absent: an empty target that counts
    assert target[1, ear].max() == 1 and mask[1, ear]
    assert target[1, vertex].max() == 0 and not mask[1, vertex]  # unknown: out of the loss
    assert mask.sum() == 2 * len(names) - 1

    logits = torch.zeros(target.shape, requires_grad=True)
    trainer.loss_fn(logits, target, channel_mask=mask).backward()
    assert logits.grad[1, vertex].abs().max() == 0             # unknown: no gradient at all
    assert logits.grad[0, ear].abs().max() > 0                 # absent: pushed towards zero


def test_calibrated_thresholds_make_predictions_absent_and_evaluation_reports_presence(absent_project, tmp_path):
    from nnlandmark.evaluation.evaluate import evaluate
    from nnlandmark.evaluation.cross_validation import evaluate_cv
    from nnlandmark.inference.predict import predict

    model = absent_project.project / absent_project.model
    a, u = absent_project.absent_case, absent_project.unknown_case
    cv = evaluate_cv(absent_project.project, tmp_path / "cv", model_dir=model, progress=False)
    # as predicted (no thresholds yet): the absent left ear is a false "present"
    assert cv.presence["per_landmark"]["left_ear"]["fp"] == 1

    preds = {c: json.loads((tmp_path / "cv" / "predictions" / f"{c}.json").read_text()) for c in cv.case_ids}
    summary = (tmp_path / "cv" / "predictions" / "predictions.csv").read_text().splitlines()[1:]
    assert {row.split(",")[0] for row in summary} == set(cv.case_ids) == {a, u}
    s_absent, s_present = preds[a]["left_ear"]["score"], preds[u]["left_ear"]["score"]
    assert s_absent < s_present  # as the fixture chose the cases
    description = json.loads((model / "nnlandmark.json").read_text())
    thresholds = description["presence_thresholds"]
    # the only landmark annotated both present and absent; F1 is 1 for any threshold in
    # (s_absent, s_present], and the threshold is put halfway down to the next lower score
    assert thresholds == {"left_ear": pytest.approx((s_absent + s_present) / 2, abs=1e-9)}
    assert thresholds == calibrate_presence(tmp_path / "cv" / "predictions", absent_project.data,
                                            description["landmarks"])[0]
    calibration = description["presence_calibration"]["landmarks"]["left_ear"]
    assert (calibration["n_present"], calibration["n_absent"], calibration["f1"]) == (1, 1, 1.0)

    images = {c: [next((absent_project.data / "images").glob(f"{c}.*"))] for c in cv.case_ids}
    out = predict(images, tmp_path / "again", model, progress=False)
    record = json.loads((out / f"{a}.json").read_text())["left_ear"]
    uncertainty = record.pop("uncertainty_mm")  # the spread is kept for an absent landmark, like its score
    assert uncertainty > 0
    assert isinstance(record.pop("moved_by_shape_prior"), bool)  # whether depends on the tiny model's training
    assert record.pop("uncertain") is False  # an absent landmark is never uncertain
    assert isinstance(record.pop("case_lost"), bool) and isinstance(record.pop("case_uncertain"), int)
    # no radius without a point (and with 12 calibration points no finite 95 % radius at all)
    assert record == {"world_lps_mm": None, "voxel_index": None, "score": s_absent, "present": False,
                      "radius_95_mm": None}
    kept = json.loads((out / f"{u}.json").read_text())["left_ear"]
    assert kept["present"] is True and kept["world_lps_mm"] == preds[u]["left_ear"]["world_lps_mm"]

    result = evaluate(out, absent_project.data)
    ear = result.presence["per_landmark"]["left_ear"]
    assert (ear["tp"], ear["fn"], ear["tn"], ear["fp"]) == (1, 0, 1, 0)
    assert ear["f1"] == 1.0
    # unknown references are in no presence count; MRE is over true positives only
    vertex = result.presence["per_landmark"]["vertex"]
    assert vertex["n"] == len(cv.case_ids) - 1
    column = result.landmark_names.index("left_ear")
    assert np.isnan(result.errors[result.case_ids.index(a), column])
    assert "presence" in result.format_table()


def test_training_another_fold_keeps_the_stored_presence_thresholds(prepared_project, tmp_path):
    """evaluate-cv stores thresholds in nnlandmark.json; training (another fold, or continuing)
    rewrites the description and must keep them."""
    from nnlandmark.evaluation.cross_validation import store_presence_thresholds
    from nnlandmark.planning.project import Project
    from nnlandmark.training.presets import TrainingSettings
    from nnlandmark.training.train import write_model_description
    project = Project.load(prepared_project)
    model = tmp_path / "model"
    write_model_description(project, TrainingSettings(), model)
    store_presence_thresholds(model, {"vertex": 0.25}, {"folds": [0]})
    write_model_description(project, TrainingSettings(epochs=7), model)
    description = json.loads((model / "nnlandmark.json").read_text())
    assert description["presence_thresholds"] == {"vertex": 0.25}
    assert description["presence_calibration"] == {"folds": [0]}
    assert description["settings"]["epochs"] == 7 and description["landmarks"] == project.landmarks
