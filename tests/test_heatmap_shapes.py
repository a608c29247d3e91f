"""Target shapes (Gaussian, Laplace, learned sigmas) and their settings, down to a trained model.

- the pure functions: peak at the point, one sigma per landmark, the Laplace's exp(-r / b), the spread
  of the normalised targets;
- learned sigmas: the objective moves them where it should (to the network's own spread, held back by
  the penalty), and an optimizer step changes them;
- a tiny training with ``heatmap="adaptive"`` records them in nnlandmark.json and its checkpoints, and
  ``train --continue`` resumes them.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from nnlandmark.errors import InvalidInput
from nnlandmark.training.losses import (SigmaPenalty, mse_on_sigmoid, spatial_softmax_cross_entropy,
                                        spatial_softmax_kl)
from nnlandmark.training.presets import HEATMAPS, TrainingSettings
from nnlandmark.training.targets import LearnedSigmas, gaussian_heatmaps, laplace_heatmaps

NAN = float("nan")


def _moments(target: torch.Tensor):
    """Mean and standard deviation along each axis of a 3D heatmap read as a distribution."""
    q = (target / target.sum()).double()
    means, stds = [], []
    for axis in range(3):
        marginal = q.sum(dim=tuple(a for a in range(3) if a != axis))
        grid = torch.arange(marginal.numel(), dtype=torch.float64)
        mean = float((marginal * grid).sum())
        means.append(mean)
        stds.append(math.sqrt(float((marginal * (grid - mean) ** 2).sum())))
    return means, stds


# --------------------------------------------------------------------------- pure target shapes

def test_gaussian_takes_one_sigma_per_landmark():
    points = torch.tensor([[[5.0, 6.0, 7.0], [4.0, 4.0, 4.0], [NAN, NAN, NAN]]])
    hm = gaussian_heatmaps(points, (14, 14, 14), sigma=[1.0, 3.0, 2.0])
    assert hm[0, 0, 5, 6, 7] == 1.0 and hm[0, 1, 4, 4, 4] == 1.0
    assert hm[0, 0, 6, 6, 7].item() == pytest.approx(math.exp(-0.5))   # d = sigma = 1
    assert hm[0, 1, 4, 4, 7].item() == pytest.approx(math.exp(-0.5))   # d = sigma = 3
    assert hm[0, 1, 4, 4, 5].item() == pytest.approx(math.exp(-1 / 18))
    assert torch.count_nonzero(hm[0, 2]) == 0
    # one value for all landmarks is the list of that value, and a tensor of them the same again
    same = gaussian_heatmaps(points, (14, 14, 14), sigma=2.0)
    assert torch.equal(same, gaussian_heatmaps(points, (14, 14, 14), sigma=[2.0, 2.0, 2.0]))
    torch.testing.assert_close(same, gaussian_heatmaps(points, (14, 14, 14), sigma=torch.full((3,), 2.0)))
    for bad in ([1.0, 2.0], [1.0, 0.0, 1.0], -1.0, [NAN]):
        with pytest.raises(ValueError):
            gaussian_heatmaps(points, (14, 14, 14), sigma=bad)


def test_laplace_decays_as_exp_of_minus_distance_over_b():
    # sigma 2 in 3D: b = sigma / sqrt(3 + 1) = 1
    points = torch.tensor([[[10.0, 10.0, 10.0], [10.0, 10.5, 10.0], [NAN, 0.0, 0.0]]])
    hm = laplace_heatmaps(points, (24, 24, 24), sigma=[2.0, 4.0, 2.0])
    assert hm[0, 0, 10, 10, 10] == 1.0 and hm[0, 0].max() == 1.0
    line = hm[0, 0, 10, 10, 10:20]
    torch.testing.assert_close(line, torch.exp(-torch.arange(10.0)))  # exp(-r / 1) along an axis
    assert hm[0, 0, 13, 14, 10].item() == pytest.approx(math.exp(-5.0))  # off-axis: Euclidean r = 5
    # the second landmark's own sigma (b = 2), measured from its sub-voxel point
    assert hm[0, 1, 10, 10, 10].item() == pytest.approx(math.exp(-0.25))
    assert hm[0, 1, 10, 16, 10].item() == pytest.approx(math.exp(-5.5 / 2))
    assert torch.count_nonzero(hm[0, 2]) == 0


@pytest.mark.parametrize("render", [gaussian_heatmaps, laplace_heatmaps])
def test_normalised_targets_are_centred_on_the_point_with_the_requested_spread(render):
    point = [20.0, 20.3, 19.6]
    for sigma in (1.5, 3.0):
        means, stds = _moments(render(torch.tensor([[point]]), (40, 40, 40), sigma=sigma)[0, 0])
        assert means == pytest.approx(point, abs=0.01)
        assert stds == pytest.approx([sigma] * 3, rel=0.01)


def test_laplace_is_sharper_than_the_gaussian_of_the_same_spread():
    point = torch.tensor([[[12.0, 12.0, 12.0]]])
    gauss = gaussian_heatmaps(point, (24, 24, 24), sigma=1.5)[0, 0]
    laplace = laplace_heatmaps(point, (24, 24, 24), sigma=1.5)[0, 0]
    gauss, laplace = gauss / gauss.sum(), laplace / laplace.sum()
    assert laplace.max() > 2 * gauss.max()          # more mass on the landmark's voxel
    assert laplace[12, 12, 20] > 100 * gauss[12, 12, 20]  # and in the far tail
    # as a softmax target it is a distribution like any other: its own entropy is the best score
    log_q = torch.log(laplace)[None, None]
    entropy = float(-(laplace * torch.log(laplace)).sum())
    assert float(spatial_softmax_cross_entropy(log_q, laplace[None, None])) == pytest.approx(entropy, rel=1e-5)


# --------------------------------------------------------------------------- learned sigmas

SHAPE = (16, 16, 16)
POINTS = torch.tensor([[[8.0, 8.0, 8.0], [7.5, 8.2, 8.7]]])


def _fit_sigmas(loss, logits, initial, steps=80, lr=2e-2):
    """Optimise only the sigmas of ``loss`` against fixed network outputs; the learned sigmas."""
    sigmas = LearnedSigmas(initial)
    loss = SigmaPenalty(loss, sigmas, weight=0.0) if not isinstance(loss, tuple) else \
        SigmaPenalty(loss[0], sigmas, weight=loss[1], per_voxel=loss[2])
    optimizer = torch.optim.Adam(sigmas.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        loss(logits, gaussian_heatmaps(POINTS, SHAPE, sigma=sigmas())).backward()
        optimizer.step()
    return sigmas().tolist()


def _softmax_logits(spread: float) -> torch.Tensor:
    """A network whose per-channel softmax is a Gaussian of ``spread`` voxels at each point."""
    p = gaussian_heatmaps(POINTS, SHAPE, sigma=spread)
    return torch.log(p / p.sum(dim=(2, 3, 4), keepdim=True))


def test_learned_sigma_follows_the_network_spread_under_the_softmax_divergence():
    logits = _softmax_logits(2.0)
    # from below and from above, to the network's own spread
    assert _fit_sigmas(spatial_softmax_kl, logits, [1.2, 3.5]) == pytest.approx([2.0, 2.0], abs=0.02)
    # the penalty holds it below: for a fixed network the minimum of D s^2/2e^2 - D log s + w s^2
    # is at s^2 = 1 / (1 / e^2 + 2 w / D)
    expected = (1 / (1 / 2.0 ** 2 + 2 * 0.2 / 3)) ** 0.5  # 1.62
    assert _fit_sigmas((spatial_softmax_kl, 0.2, False), logits, [1.2, 3.5]) == pytest.approx([expected] * 2, abs=0.02)


def test_cross_entropy_alone_would_shrink_the_learned_sigma():
    """Why the adaptive softmax objective is the divergence: cross-entropy's gradient shrinks sigma
    even where the target is exactly as wide as the network's distribution."""
    sigmas = LearnedSigmas([2.0, 2.0])
    spatial_softmax_cross_entropy(_softmax_logits(2.0), gaussian_heatmaps(POINTS, SHAPE, sigma=sigmas())).backward()
    assert (sigmas.raw.grad > 0).all()  # gradient descent lowers log sigma
    sigmas.raw.grad = None
    spatial_softmax_kl(_softmax_logits(2.0), gaussian_heatmaps(POINTS, SHAPE, sigma=sigmas())).backward()
    assert sigmas.raw.grad.abs().max() < 1e-3  # the divergence is at its minimum


def test_learned_sigma_matches_a_sigmoid_output_under_mse():
    target = gaussian_heatmaps(POINTS, SHAPE, sigma=2.5)
    logits = torch.logit(target.clamp(1e-6, 1 - 1e-6))  # sigmoid(logits) is a peak-1 Gaussian of 2.5
    assert _fit_sigmas((mse_on_sigmoid, 0.0, True), logits, [1.5, 4.0]) == pytest.approx([2.5, 2.5], abs=0.02)


def test_sigma_penalty_counts_each_landmark_by_its_supervised_pairs():
    sigmas = LearnedSigmas([1.0, 3.0])
    zero = lambda logits, target, channel_mask=None: logits.sum() * 0  # noqa: E731
    logits = torch.zeros(2, 2, 4, 4, 4)

    def value(mask=None, **kwargs):
        return SigmaPenalty(zero, sigmas, 0.1, **kwargs)(logits, logits, mask).item()

    assert value() == pytest.approx(0.5)  # the mean of 1 and 9
    mask = torch.tensor([[True, True], [True, False]])  # landmark 0 twice, landmark 1 once
    assert value(mask) == pytest.approx(0.1 * (2 + 9) / 3)
    assert value(per_voxel=True) == pytest.approx(0.5 / 64)


def test_one_optimizer_step_on_the_adaptive_loss_changes_the_sigmas():
    """The settings' adaptive objective sends gradients to the sigmas the targets are rendered with."""
    settings = TrainingSettings(heatmap="adaptive", gaussian_sigma=[1.5, 2.5])
    sigmas = settings.learned_sigmas(2)
    loss = settings.loss_function(sigmas)
    logits = _softmax_logits(3.0).requires_grad_()
    optimizer = torch.optim.Adam([logits, *sigmas.parameters()], lr=1e-3)
    before = sigmas().tolist()
    assert before == pytest.approx([1.5, 2.5])
    loss(logits, settings.make_targets(POINTS, SHAPE, sigma=sigmas())).backward()
    assert sigmas.raw.grad is not None and (sigmas.raw.grad != 0).all()
    optimizer.step()
    after = sigmas().tolist()
    # Adam's first step is lr in raw = log(sigma) / 10, so sigma moves by 1 %, towards where the
    # divergence and the default penalty (0.1) balance for this network: 1 / sqrt(1 / 3^2 + 0.2 / 3) = 2.37
    assert after == pytest.approx([1.5 * math.exp(0.01), 2.5 * math.exp(-0.01)], rel=1e-4)


# --------------------------------------------------------------------------- settings and names

def test_heatmap_settings_dispatch_validate_and_name_models():
    assert set(HEATMAPS) == {"gaussian", "laplace", "adaptive", "cone"}
    assert (TrainingSettings().heatmap, TrainingSettings(preset="cone").heatmap) == ("gaussian", "cone")
    points = torch.tensor([[[4.0, 4.0, 4.0]]])
    laplace = TrainingSettings(heatmap="laplace", gaussian_sigma=2.0).make_targets(points, (8, 8, 8))
    assert laplace[0, 0, 4, 4, 5].item() == pytest.approx(math.exp(-1.0))  # b = 1
    cone = TrainingSettings(preset="cone").make_targets(points, (8, 8, 8))
    assert cone[0, 0, 4, 4, 7].item() == pytest.approx(1 - 3 / 15)
    # the default objective is unchanged; the adaptive one is the divergence plus the penalty
    assert TrainingSettings().loss_function() is spatial_softmax_cross_entropy
    adaptive = TrainingSettings(heatmap="adaptive")
    assert isinstance(adaptive.loss_function(adaptive.learned_sigmas(3)), SigmaPenalty)
    assert adaptive.loss_function(adaptive.learned_sigmas(3)).loss is spatial_softmax_kl
    assert TrainingSettings(heatmap="laplace").learned_sigmas(3) is None

    assert TrainingSettings().model_name("P") == "softmax_unet__P__cascade"  # names of earlier models kept
    assert TrainingSettings(heatmap="gaussian").model_name("P") == "softmax_unet__P__cascade"
    assert TrainingSettings(heatmap="adaptive").model_name("P") == "softmax-adaptive_unet__P__cascade"
    assert TrainingSettings(preset="v1", heatmap="laplace").model_name("P") == "v1-laplace_unet__P__cascade"

    assert TrainingSettings(gaussian_sigma=[2]).gaussian_sigma == 2.0  # one value given as a list
    assert TrainingSettings(gaussian_sigma=(1, 2, 3)).sigmas(3) == [1.0, 2.0, 3.0]
    assert TrainingSettings(gaussian_sigma=2.5).sigmas(2) == [2.5, 2.5]
    with pytest.raises(InvalidInput, match="2 values for 3 landmarks"):
        TrainingSettings(gaussian_sigma=[1.0, 2.0]).sigmas(3)
    for bad in (dict(heatmap="box"), dict(preset="cone", heatmap="adaptive"), dict(gaussian_sigma=0.0),
                dict(gaussian_sigma=[1.0, -1.0]), dict(gaussian_sigma="wide"), dict(sigma_penalty=-1.0)):
        with pytest.raises(InvalidInput):
            TrainingSettings(**bad)


# --------------------------------------------------------------------------- a trained adaptive model

def _small_fullres_project(prepared_project: Path, dst: Path) -> Path:
    """A copy of the prepared project without models, its full-resolution plan shrunk to a tiny U-Net
    on 24^3 patches (what is tested does not depend on the network's size)."""
    from nnlandmark.planning.project import Project
    project_dir = Path(shutil.copytree(prepared_project, dst, ignore=shutil.ignore_patterns("nnUNet_results")))
    project = Project.load(project_dir)
    plans = json.loads(project.plans_file.read_text())
    config = plans["configurations"]["3d_fullres"]
    arch = config["architecture"]["arch_kwargs"]
    arch["features_per_stage"] = [min(4 * 2 ** i, 32) for i in range(len(arch["features_per_stage"]))]
    config["patch_size"], config["batch_size"] = [24, 24, 24], 2
    project.plans_file.write_text(json.dumps(plans, indent=2))
    return project_dir


def test_adaptive_training_records_its_sigmas_and_resumes_them(prepared_project, tmp_path):
    from nnlandmark.cli import main
    from nnlandmark.nnunet.trainer import EXTRA_PARAMETERS_KEY
    from nnlandmark.planning.project import Project
    from nnlandmark.training.train import train

    project_dir = _small_fullres_project(prepared_project, tmp_path / "project")
    landmarks = Project.load(project_dir).landmarks
    initial = [1.5 + 0.5 * i for i in range(len(landmarks))]  # one sigma per landmark
    settings = TrainingSettings(configuration="fullres", heatmap="adaptive", gaussian_sigma=initial,
                                epochs=2, iterations_per_epoch=3, val_iterations=1)
    model = train(project_dir, 0, settings, progress=False)
    assert model.name.startswith("softmax-adaptive_unet__")

    description = json.loads((model / "nnlandmark.json").read_text())
    learned = description["learned_sigmas"]["fold_0"]["fullres"]
    assert list(learned) == landmarks
    # 6 Adam steps of about 1 % each in sigma: every sigma has moved (a landmark the sampled
    # patches seldom hold moves little), on average by more than 0.5 %, none far
    for name, start in zip(landmarks, initial):
        assert learned[name] != pytest.approx(start, abs=1e-6), name
        assert learned[name] == pytest.approx(start, rel=0.1), name
    assert sum(abs(learned[n] / s - 1) for n, s in zip(landmarks, initial)) / len(landmarks) > 0.005
    checkpoint = torch.load(model / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    [state] = checkpoint[EXTRA_PARAMETERS_KEY]
    stored = torch.exp(state["raw"] * state["step_scale"]).tolist()
    assert stored == pytest.approx(list(learned.values()), abs=1e-4)
    assert len(checkpoint["optimizer_state"]["param_groups"]) == 2  # the sigmas' own group

    # an interrupted run: its latest checkpoint, with sigmas no fresh start could have (5 voxels)
    state["raw"] = torch.full_like(state["raw"], math.log(5.0)) / state["step_scale"]
    torch.save(checkpoint, model / "fold_0" / "checkpoint_latest.pth")
    (model / "fold_0" / "checkpoint_final.pth").unlink()
    assert main(["train", str(project_dir), "--continue", "--configuration", "fullres", "--heatmap", "adaptive",
                 "--epochs", "3"]) == 0
    resumed = json.loads((model / "nnlandmark.json").read_text())["learned_sigmas"]["fold_0"]["fullres"]
    assert list(resumed.values()) == pytest.approx([5.0] * len(landmarks), rel=0.05)  # 3 more steps from 5.0
    final = torch.load(model / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["current_epoch"] == 3
