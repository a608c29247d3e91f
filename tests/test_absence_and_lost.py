"""The softmax preset's "absent" slot (issue 22, item 3) and the per-case "lost" flag (item 2).

Fast: the loss, the targets, the settings, the phantoms with ears left out, the lost rule and its
calibration, the flags in the case JSON and CSV. Slow: a default model trained on phantoms whose
ears are missing in a third of the cases tells present from absent better than chance (by a margin
computed in the test); a model trained on one contrast flags the cases of another as lost and not
those of its own.
"""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nnlandmark.inference.lost import calibrate_lost_rule, default_rule, lost_state
from nnlandmark.training.losses import (present_log_probability, spatial_softmax_absent_cross_entropy,
                                        spatial_softmax_cross_entropy)
from nnlandmark.training.presets import TrainingSettings


def auc(scores, truth) -> float:
    """Probability that a present case scores above an absent one (ties count half)."""
    scores, truth = np.asarray(scores, float), np.asarray(truth, bool)
    pos, neg = scores[truth], scores[~truth]
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


# --- the loss -------------------------------------------------------------------------------------

def test_absent_slot_loss_starts_at_log_voxels_and_reads_empty_targets_as_absent():
    torch.manual_seed(0)
    n = 6 ** 3
    target = torch.zeros(2, 3, 6, 6, 6)
    target[0, 0, 2, 3, 1] = 1.0  # present
    target[1, 1, 4, 4, 4] = 1.0  # present; every other channel empty: absent
    logits = torch.zeros_like(target, requires_grad=True)
    # an untrained network: the slot (logit log N) takes half the mass: log(2N) for a present row,
    # log 2 for an absent one
    loss = float(spatial_softmax_absent_cross_entropy(logits.detach(), target))
    assert loss == pytest.approx((2 * math.log(2 * n) + 4 * math.log(2)) / 6, rel=1e-6)
    # an absent row costs -log p(absent) = softplus(logsumexp z - log N)
    z = torch.randn(1, 1, 6, 6, 6)
    expected = torch.nn.functional.softplus(torch.logsumexp(z.reshape(-1), 0) - math.log(n))
    assert float(spatial_softmax_absent_cross_entropy(z, torch.zeros_like(z))) == pytest.approx(float(expected))
    # a present row: the plain spatial cross-entropy plus log(1 + N / sum exp z), the slot's share
    z = torch.randn(1, 1, 6, 6, 6) + 2
    t = torch.zeros_like(z)
    t[0, 0, 1, 1, 1] = 1.0
    gap = float(spatial_softmax_absent_cross_entropy(z, t) - spatial_softmax_cross_entropy(z, t))
    assert gap == pytest.approx(math.log1p(n * math.exp(-float(torch.logsumexp(z.reshape(-1), 0)))), rel=1e-4)
    assert gap > 0.01
    # an unknown landmark (mask False) gets no gradient; an absent one is pushed down everywhere
    mask = torch.ones(2, 3, dtype=torch.bool)
    mask[1, 2] = False
    spatial_softmax_absent_cross_entropy(logits, target, channel_mask=mask).backward()
    assert logits.grad[1, 2].abs().max() == 0
    assert (logits.grad[0, 1] > 0).all()
    assert float(present_log_probability(torch.zeros(1, n)).exp()) == pytest.approx(0.5)


@pytest.mark.slow  # 100 steps of a tiny network: 13 s on the loaded 2 cores
def test_a_small_network_learns_where_and_whether_with_the_absent_slot():
    """A blob in half of the volumes: the same objective teaches a tiny network to place it and to
    tell the volumes without one apart, in a few hundred steps."""
    torch.manual_seed(0)
    size, n = 8, 32
    centres = torch.randint(2, size - 2, (n, 3))
    present = torch.arange(n) % 2 == 0
    grid = torch.stack(torch.meshgrid(*[torch.arange(size)] * 3, indexing="ij")).float()
    images = torch.randn(n, 1, size, size, size) * 0.3
    targets = torch.zeros(n, 1, size, size, size)
    for i in range(n):
        blob = torch.exp(-((grid - centres[i].float()[:, None, None, None]) ** 2).sum(0) / 2)
        if present[i]:
            images[i, 0] += 2 * blob
            targets[i, 0] = blob
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv3d(4, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 1, 1))
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-2)
    train, test = slice(0, 24), slice(24, n)
    losses = []
    for step in range(100):
        optimizer.zero_grad()
        loss = spatial_softmax_absent_cross_entropy(net(images[train]), targets[train])
        losses.append(float(loss.detach()))
        loss.backward()
        optimizer.step()
    # starts near (log(2N) + log 2) / 2, half the rows present: log(voxels) for the present ones
    assert losses[0] == pytest.approx((math.log(2 * size ** 3) + math.log(2)) / 2, rel=0.1)
    with torch.no_grad():
        logits = net(images[test])[:, 0]
    presence = np.array([float(present_log_probability(l[None]).exp()) for l in logits])
    assert auc(presence, present[test].numpy()) > 0.9
    peaks = np.array([np.unravel_index(int(l.argmax()), l.shape) for l in logits])
    errors = np.linalg.norm(peaks - centres[test].numpy(), axis=1)[present[test].numpy()]
    assert np.median(errors) <= 1.0 and errors.max() <= 2.0  # a blob anywhere: about 3 voxels off


# --- settings and targets ---------------------------------------------------------------------------

def test_absence_is_learned_by_softmax_models_of_datasets_with_absent_annotations():
    from nnlandmark.training.losses import spatial_softmax_kl
    assert TrainingSettings().resolved_absence(True) is True
    assert TrainingSettings().resolved_absence(False) is False  # as before: nothing to learn from
    assert TrainingSettings(absence=False).resolved_absence(True) is False
    assert TrainingSettings(preset="cone").resolved_absence(True) is False  # sigmoid: absence per voxel
    assert TrainingSettings(heatmap="adaptive").resolved_absence(True) is False
    assert TrainingSettings(absence=True).loss_function() is spatial_softmax_absent_cross_entropy
    assert TrainingSettings().loss_function() is spatial_softmax_cross_entropy
    assert TrainingSettings(absence=True, heatmap="adaptive").loss_function(
        TrainingSettings(heatmap="adaptive").learned_sigmas(2)).loss is spatial_softmax_kl


@pytest.mark.parametrize("absence", [False, True])
def test_absent_landmarks_are_supervised_only_with_the_absent_slot(tmp_path, absence):
    from nnlandmark.training.batches import LandmarkBatches
    seg = torch.zeros(1, 1, 12, 12, 12, dtype=torch.int16)
    seg[0, 0, 4:7, 5:8, 3:6] = 1  # landmark 0 present; landmark 1 has no cube: absent
    batches = LandmarkBatches(TrainingSettings(absence=absence, mirror=False), ["a", "b"], [], tmp_path, (0, 1, 2))
    _, target, mask = batches(torch.zeros(1, 1, 12, 12, 12), seg, ["case"])
    assert mask[0, 0] and target[0, 0].sum() > 0
    assert target[0, 1].sum() == 0
    assert bool(mask[0, 1]) is absence  # without the slot an empty target cannot be learned from


# --- phantoms with landmarks left out --------------------------------------------------------------

def test_phantoms_leave_an_ear_out_of_a_third_of_the_cases(tmp_path):
    import SimpleITK as sitk
    from nnlandmark.data.synthetic import make_synthetic_dataset
    plain = make_synthetic_dataset(tmp_path / "plain", n_cases=3, seed=3, shape=(32, 32, 32))
    some = make_synthetic_dataset(tmp_path / "some", n_cases=3, seed=3, shape=(32, 32, 32), absent_fraction=1 / 3)
    absent = {}
    for case in sorted(p.stem for p in (some / "landmarks").glob("*.json")):
        landmarks = json.loads((some / "landmarks" / f"{case}.json").read_text())["landmarks"]
        original = json.loads((plain / "landmarks" / f"{case}.json").read_text())["landmarks"]
        gone = [n for n, v in landmarks.items() if v == "absent"]
        a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(d / "images" / f"{case}.nii.gz"))) for d in (plain, some))
        if gone:
            absent[case] = gone
            assert len(gone) == 1 and gone[0].endswith("_ear")
            assert not np.array_equal(a, b)
        else:
            assert np.array_equal(a, b) and landmarks == original
    assert len(absent) == 1


# --- the lost rule ------------------------------------------------------------------------------------

def test_lost_rule_default_calibration_and_absent_landmarks():
    names = ["a", "b", "c", "d"]
    rule = default_rule(names, voxel_mm=2.0)  # uncertain above 2 voxels = 4 mm; lost above half of them
    assert lost_state({"a": 5.0, "b": 5.0, "c": 1.0, "d": None}, rule)["lost"] is False
    state = lost_state({"a": 5.0, "b": 5.0, "c": 4.5, "d": 1.0}, rule)
    assert state["lost"] and state["n_uncertain"] == 3
    # an absent landmark is never uncertain
    assert not lost_state({"a": 5.0, "b": 5.0, "c": 4.5, "d": 1.0}, rule, {"c": False})["lost"]
    rng = np.random.default_rng(0)
    cv = {n: rng.uniform(0.4, 0.8, 30) for n in names}
    calibrated = calibrate_lost_rule(cv)
    for n in names:
        assert 2 * 0.75 <= calibrated["thresholds_mm"][n] <= 2 * 0.8
    assert calibrated["max_share"] == 0.25 and calibrated["max_share_seen"] == 0.0
    # every cross-validation case stays below the rule; 12-fold spreads are far above it
    assert not any(lost_state({n: cv[n][c] for n in names}, calibrated)["lost"] for c in range(30))
    assert lost_state({n: 12 * 0.6 for n in names}, calibrated)["lost"]


def test_lost_flag_in_the_case_json_and_csv_and_calibration_from_predictions(tmp_path):
    from nnlandmark.evaluation.cross_validation import calibrate_lost
    from nnlandmark.inference.predict import _write_case, write_summary
    decoded = {n: ([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], 0.9) for n in "abcd"}
    rule = default_rule(list("abcd"), voxel_mm=1.0)
    state = _write_case(tmp_path, "far", decoded, {}, {"a": 9.0, "b": 8.0, "c": 7.0, "d": 0.5}, lost_rule=rule)
    assert state["lost"]
    _write_case(tmp_path, "near", decoded, {}, {"a": 0.5, "b": 0.6, "c": 7.0, "d": 0.5}, lost_rule=rule)
    far = json.loads((tmp_path / "far.json").read_text())
    assert [far[n]["uncertain"] for n in "abcd"] == [True, True, True, False]
    assert all(r["case_lost"] is True and r["case_uncertain"] == 3 for r in far.values())
    near = json.loads((tmp_path / "near.json").read_text())
    assert all(r["case_lost"] is False and r["case_uncertain"] == 1 for r in near.values())
    write_summary(tmp_path, ["far", "near"])
    rows = list(csv.DictReader((tmp_path / "predictions.csv").open()))
    assert {(r["case"], r["case_lost"], r["case_uncertain"]) for r in rows} == {("far", "True", "3"),
                                                                              ("near", "False", "1")}
    # calibrated on "near" alone (a cross-validation set): thresholds twice its spreads
    (tmp_path / "far.json").unlink()
    (tmp_path / "far.mrk.json").unlink()
    rule = calibrate_lost(tmp_path, list("abcd"))
    assert rule["thresholds_mm"] == {"a": 1.0, "b": 1.2, "c": 14.0, "d": 1.0}


# --- slow: trained models ---------------------------------------------------------------------------

#: a small U-Net (``small_network``) at full resolution, for 3 minutes: on the loaded 2-core machine
#: a few hundred iterations, enough to place the phantoms' landmarks to a few mm
SCHEDULE = dict(configuration="fullres", time_budget_minutes=3.0)
SMALL = dict(shape=(32, 32, 32), spacing=(3.0, 3.0, 3.0))


def small_network(project_dir) -> None:
    """nnU-Net's 3d_fullres plan with at most 64 features per stage and a 32^3 patch (the whole
    phantom), batch 2: the planned network costs seconds per iteration on the shared CPU."""
    from nnlandmark.planning.project import Project
    project = Project.load(project_dir)
    plans = json.loads(project.plans_file.read_text())
    config = plans["configurations"]["3d_fullres"]
    arch = config["architecture"]["arch_kwargs"]
    arch["features_per_stage"] = [min(8 * 2 ** i, 64) for i in range(len(arch["features_per_stage"]))]
    config["patch_size"], config["batch_size"] = [32, 32, 32], 2
    project.plans_file.write_text(json.dumps(plans, indent=2))


@pytest.fixture(scope="module")
def absent_phantoms_model(tmp_path_factory):
    """A softmax model (the default preset, at full resolution) trained on 12 phantoms, an ear left out
    of 4 of them; 12 test phantoms, an ear left out of 6."""
    from nnlandmark.data.synthetic import make_synthetic_dataset
    from nnlandmark.planning.project import prepare
    from nnlandmark.training.train import train
    root = tmp_path_factory.mktemp("absent_phantoms")
    data = make_synthetic_dataset(root / "train", n_cases=12, seed=5, absent_fraction=1 / 3, **SMALL)
    test = make_synthetic_dataset(root / "test", n_cases=12, seed=6, absent_fraction=1 / 2, **SMALL)
    prepare(data, root / "project", num_processes=1, progress=False)
    small_network(root / "project")
    model = train(root / "project", 0, TrainingSettings(**SCHEDULE), progress=False)
    return model, test


@pytest.mark.slow
def test_default_model_tells_absent_ears_from_present_ones(absent_phantoms_model, tmp_path):
    from nnlandmark.inference.predict import predict
    model, test = absent_phantoms_model
    assert json.loads((model / "nnlandmark.json").read_text())["settings"]["absence"] is True
    out = predict(test / "images", tmp_path / "pred", model, progress=False)
    scores, truth = [], []
    for ref in sorted((test / "landmarks").glob("*.json")):
        landmarks = json.loads(ref.read_text())["landmarks"]
        record = json.loads((out / ref.name).read_text())
        for name in ("left_ear", "right_ear"):
            scores.append(record[name]["score"])
            truth.append(landmarks[name] != "absent")
    scores, truth = np.asarray(scores), np.asarray(truth)
    assert 0 < (~truth).sum() < len(truth)
    observed = auc(scores, truth)
    # chance: the AUC of the same scores against the labels shuffled; the model must beat the
    # 99th percentile of that by a margin
    rng = np.random.default_rng(0)
    null = [auc(scores, rng.permutation(truth)) for _ in range(2000)]
    chance = float(np.quantile(null, 0.99))
    print(f"ear presence AUC {observed:.3f}; chance (99th percentile of shuffled labels) {chance:.3f}")
    assert observed >= chance + 0.05


@pytest.fixture(scope="module")
def one_contrast_model(tmp_path_factory):
    """A default model trained on phantoms of one contrast (no absences), and test phantoms of
    that contrast and of an inverted one (intensities negated: bright bone turns dark)."""
    import SimpleITK as sitk
    from nnlandmark.data.synthetic import make_synthetic_dataset
    from nnlandmark.planning.project import prepare
    from nnlandmark.training.train import train
    root = tmp_path_factory.mktemp("one_contrast")
    data = make_synthetic_dataset(root / "train", n_cases=12, seed=7, **SMALL)
    test = make_synthetic_dataset(root / "test", n_cases=4, seed=8, **SMALL)
    inverted = root / "inverted"
    inverted.mkdir()
    for image in sorted((test / "images").glob("*.nii.gz")):
        read = sitk.ReadImage(str(image))
        array = sitk.GetArrayFromImage(read)
        flipped = sitk.GetImageFromArray(array.max() + array.min() - array)
        flipped.CopyInformation(read)
        sitk.WriteImage(flipped, str(inverted / image.name))
    prepare(data, root / "project", num_processes=1, progress=False)
    small_network(root / "project")
    model = train(root / "project", 0, TrainingSettings(**SCHEDULE), progress=False)
    return model, test / "images", inverted


def _lost_cases(model, own, inverted, out: Path):
    """Predict both test sets; ``({case: lost} own, {case: lost} inverted, warning lines)``."""
    from nnlandmark.inference.predict import predict
    with pytest.warns(UserWarning) as caught:  # at least the inverted cases' lines
        predict(own, out / "own", model, progress=False)
        predict(inverted, out / "inverted", model, progress=False)
    lines = [str(w.message) for w in caught if "may differ from the training scans" in str(w.message)]

    def lost(folder):
        records = {p.name[:-5]: json.loads(p.read_text()) for p in folder.glob("*.json")
                   if not p.name.endswith(".mrk.json") and not p.name.startswith(".")}  # not the manifest
        return {case: next(iter(r.values()))["case_lost"] for case, r in records.items()}

    return lost(out / "own"), lost(out / "inverted"), lines


@pytest.mark.slow
def test_lost_on_an_unseen_contrast_and_not_on_its_own(one_contrast_model, tmp_path):
    """With the default rule, then with the rule evaluate-cv calibrates on the model's own
    cross-validation predictions."""
    from nnlandmark.evaluation.cross_validation import evaluate_cv
    from nnlandmark.inference.lost import LOST_KEY
    model, own, inverted = one_contrast_model
    for rule in ("default", "calibrated"):
        if rule == "calibrated":
            evaluate_cv(model.parents[2], tmp_path / "cv", model_dir=model, progress=False)
            assert json.loads((model / "nnlandmark.json").read_text())[LOST_KEY]["n_cases"] >= 1
        own_lost, inverted_lost, lines = _lost_cases(model, own, inverted, tmp_path / rule)
        print(rule, "own", own_lost, "inverted", inverted_lost, *lines, sep="\n")
        assert not any(own_lost.values())
        assert all(inverted_lost.values()) and len(inverted_lost) == 4
        assert len(lines) == len(inverted_lost)  # one line per lost case, naming it
        assert all(any(line.startswith(f"case {case}: ") for line in lines) for case in inverted_lost)
