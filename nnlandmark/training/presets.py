"""Training settings and the method presets.

``softmax`` (the default): a Gaussian of sigma 1.5 voxels per landmark,
normalised to sum 1, as the target of a per-channel softmax over all voxels of
the patch (cross-entropy, :func:`~nnlandmark.training.losses.spatial_softmax_cross_entropy`);
Adam 1e-3 with poly decay. It learns to localise in a few hundred iterations,
which is what makes training on a CPU, and the cascade, work.

``cone`` (the MIDL 2026 nnLandmark method): a Euclidean-distance cone of radius
15 voxels per landmark, BCE over the hardest 20% voxels per (sample, channel),
nnU-Net's SGD with poly learning-rate decay.

``v1`` (the earlier variant): a Gaussian of sigma 4 voxels, MSE on the sigmoid
output, Adam 5e-4 with step decay (halved every quarter of the schedule; the
reference names the decay, not its steps, so this is our choice).

Each preset has its own target shape, and ``heatmap`` picks another
(:data:`HEATMAPS`): a Gaussian, a Laplace of the same spread, a Gaussian
whose per-landmark sigma is learned with the network (``adaptive``), or the
cone.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial

from nnlandmark.nnunet.networks import ARCHITECTURES
from nnlandmark.errors import InvalidInput

#: ``cascade``: a global stage on the whole scan at a coarse spacing, then a local stage at full
#: resolution around each landmark (planned by :func:`nnlandmark.nnunet.planning.plan_cascade`);
#: ``fullres``: one network at full resolution, sliding window over the scan (the MIDL method)
CONFIGURATIONS = ("cascade", "fullres")
STAGES = {"cascade": ("global", "local"), "fullres": ("fullres",)}
#: share of a fold's time budget given to each stage of the cascade
#: (the global stage learns the harder task, where a landmark is at all, at about 2 s per iteration on
#: 2 CPU cores; the local stage converges in a few hundred iterations of a fraction of that)
STAGE_BUDGET_SHARE = {"global": 2 / 3, "local": 1 / 3, "fullres": 1.0}


@dataclass
class TrainingSettings:
    """Everything about a training run that is not in nnU-Net's plans.

    ``epochs`` x ``iterations_per_epoch`` is nnU-Net's 1000 x 250 by default;
    on a CPU use a few epochs of a few iterations (one default epoch takes
    about 7 minutes on 2 cores for a 48^3 patch), or a time budget:
    ``time_budget_minutes`` (per fold, all stages together) fits the number
    of epochs to the wall clock as training goes, with short epochs (25
    iterations, 3 validation iterations, unless given).

    ``exact_targets``: targets centred on each landmark's exact, sub-voxel
    position, not on its label cube's voxel (see
    :meth:`nnlandmark.training.batches.LandmarkBatches.subvoxel_offsets`).

    ``contrast_augmentation``: the share of training patches whose intensities
    are remapped through a random curve on top of nnU-Net's augmentation
    (:func:`nnlandmark.training.intensity.random_intensity_remap`), so that the
    model also finds landmarks in contrasts it was not trained on. Off by
    default: it makes the task harder and costs accuracy on the training
    contrast when training is short (AFIDs benchmark, 4 minutes: 1.2 mm
    without, 8.7 mm with 0.5); see the benchmark for what it buys.

    ``mirror``: flip training patches along the patient's left-right axis
    (half of them, paired landmarks swapped) and average the prediction with
    its mirror image at test time. Mirroring assumes roughly symmetric
    anatomy, which declared left/right ``pairs`` signal, so ``None`` (the
    default) means "on when the dataset has pairs"; set True for a symmetric
    dataset whose landmarks all lie on the mid-plane, False for asymmetric
    anatomy that still has pairs.

    ``heatmap``: the target's shape, one of :data:`HEATMAPS`; None (the
    default) means the preset's own (``gaussian`` for softmax and v1,
    ``cone`` for cone). A model of another shape than its preset's is named
    after both (``softmax-laplace_unet__...``).

    ``gaussian_sigma``: the target's spread in voxels of each stage's grid,
    one value for every landmark or a list of one per landmark (in the
    dataset's order); None means the preset's (1.5 voxels for softmax, 4 for
    v1). It is the standard deviation along each axis of the target read as
    a distribution, for the Laplace shape too (:func:`nnlandmark.training.targets.laplace_scale`),
    and the starting value of learned sigmas. The cone ignores it
    (``cone_radius``).

    ``sigma_penalty``: with ``heatmap="adaptive"``, the weight of the penalty
    on large learned sigmas (:class:`nnlandmark.training.losses.SigmaPenalty`),
    per squared voxel. The softmax objective is then the divergence from the
    normalised target (:func:`nnlandmark.training.losses.spatial_softmax_kl`)
    instead of the cross-entropy: it has the same gradient for the network,
    and a minimum in sigma where the target is as wide as the network's own
    distribution. The learned sigmas are written to the model's description
    at the end of each stage (``learned_sigmas``: fold -> stage -> landmark
    -> sigma in that stage's voxels) and kept in its checkpoints.

    ``absence``: the softmax preset learns whether a landmark is there: each
    channel's softmax runs over the voxels plus one "absent" slot
    (:func:`nnlandmark.training.losses.spatial_softmax_absent_cross_entropy`),
    trained towards the slot for landmarks annotated absent and for landmarks
    outside the patch; prediction scores presence as ``1 - p(absent)``. None
    (the default) means "when the dataset has absent annotations" (resolved by
    ``train``: :meth:`resolved_absence`); without absent annotations the
    preset trains exactly as before and every landmark is written present. Not
    with ``heatmap="adaptive"`` (its divergence objective has no slot) nor with
    sigmoid presets, which learn absence per voxel anyway.
    """

    preset: str = "softmax"
    architecture: str = "unet"
    configuration: str = "cascade"
    epochs: int = 1000
    iterations_per_epoch: int | None = None
    val_iterations: int | None = None
    time_budget_minutes: float | None = None
    cone_radius: float = 15.0
    gaussian_sigma: float | list | None = None
    heatmap: str | None = None
    sigma_penalty: float = 0.1
    topk_fraction: float = 0.2
    learning_rate: float | None = None
    save_every: int = 1
    augmentation_workers: int | None = None
    mirror: bool | None = None
    exact_targets: bool = True
    contrast_augmentation: float = 0.0
    absence: bool | None = None

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise InvalidInput(f"unknown preset '{self.preset}', choose from {sorted(PRESETS)}")
        if self.architecture not in ARCHITECTURES:
            raise InvalidInput(f"unknown architecture '{self.architecture}', choose from {list(ARCHITECTURES)}")
        if self.configuration not in CONFIGURATIONS:
            raise InvalidInput(f"unknown configuration '{self.configuration}', choose from {list(CONFIGURATIONS)}")
        if self.time_budget_minutes is not None and not self.time_budget_minutes > 0:
            raise InvalidInput(f"--time-budget: a positive number of minutes, got {self.time_budget_minutes}")
        # a time budget fits the number of epochs, so epochs are kept short to fit it closely
        budgeted = self.time_budget_minutes is not None
        if self.iterations_per_epoch is None:
            self.iterations_per_epoch = 25 if budgeted else 250
        if self.val_iterations is None:
            self.val_iterations = 3 if budgeted else 50
        if not 0.0 <= self.contrast_augmentation <= 1.0:
            raise InvalidInput(f"--contrast-augmentation: a probability in [0, 1], got {self.contrast_augmentation}")
        if self.heatmap is None:
            self.heatmap = PRESETS[self.preset]["heatmap"]
        if self.heatmap not in HEATMAPS:
            raise InvalidInput(f"unknown heatmap '{self.heatmap}', choose from {list(HEATMAPS)}")
        if self.heatmap == "adaptive" and self.preset == "cone":
            # the per-voxel BCE of the cone preset has no minimum in a target's width: it would
            # widen the target wherever the logits are positive, not match the network's spread
            raise InvalidInput("heatmap 'adaptive' learns sigmas with the softmax or v1 objective, "
                               "not with the cone preset's top-k BCE")
        if not self.sigma_penalty >= 0:
            raise InvalidInput(f"sigma_penalty must be >= 0, got {self.sigma_penalty}")
        self.gaussian_sigma = _sigma_setting(
            PRESETS[self.preset]["sigma"] if self.gaussian_sigma is None else self.gaussian_sigma)
        flags = {"epochs": "--epochs", "iterations_per_epoch": "--iterations", "val_iterations": "--val-iterations",
                 "save_every": "save_every"}
        for name, flag in flags.items():
            if getattr(self, name) < 1:
                raise InvalidInput(f"{flag}: must be at least 1, got {getattr(self, name)}")

    def resolved_absence(self, has_absent_annotations: bool) -> bool:
        """Whether this run learns absence (``absence``) for a dataset with or without absent annotations."""
        if self.output != "softmax" or self.heatmap == "adaptive":
            return False
        return bool(has_absent_annotations) if self.absence is None else bool(self.absence)

    @property
    def stages(self) -> tuple:
        """The networks a fold trains, in order (their folders inside ``fold_N``)."""
        return STAGES[self.configuration]

    @property
    def output(self) -> str:
        """How the network output is read: ``softmax`` over each channel's voxels, or ``sigmoid`` per voxel."""
        return PRESETS[self.preset]["output"]

    @property
    def schedule(self) -> str:
        return PRESETS[self.preset]["schedule"]

    @property
    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else PRESETS[self.preset]["lr"]

    def mirroring(self, pairs) -> bool:
        """Whether to mirror left-right for a dataset with these ``pairs`` (see ``mirror``)."""
        return bool(pairs) if self.mirror is None else bool(self.mirror)

    def sigmas(self, num_landmarks: int) -> list:
        """One target sigma per landmark (``gaussian_sigma``); InvalidInput when a list of them
        does not have one per landmark."""
        sigma = self.gaussian_sigma
        if isinstance(sigma, list):
            if len(sigma) != num_landmarks:
                raise InvalidInput(f"gaussian_sigma (--sigma) has {len(sigma)} values for {num_landmarks} "
                                   "landmarks: give one value, or one per landmark in the dataset's order")
            return list(sigma)
        return [sigma] * num_landmarks

    def learned_sigmas(self, num_landmarks: int):
        """The sigmas a stage learns (:class:`nnlandmark.training.targets.LearnedSigmas`, starting at
        :meth:`sigmas`) with ``heatmap="adaptive"``, else None."""
        if self.heatmap != "adaptive":
            return None
        from nnlandmark.training.targets import LearnedSigmas
        return LearnedSigmas(self.sigmas(num_landmarks))

    def make_targets(self, points, spatial_shape, sigma=None):
        """Heatmap targets (B, L, *spatial) for landmark points (B, L, 3); ``sigma``, e.g. learned
        sigmas (an (L,) tensor in their autograd graph), replaces ``gaussian_sigma``."""
        # imported here: the CLI reads the registries of this module without paying for torch
        from nnlandmark.training.targets import cone_heatmaps, gaussian_heatmaps, laplace_heatmaps
        if self.heatmap == "cone":
            return cone_heatmaps(points, spatial_shape, radius=self.cone_radius)
        sigma = self.gaussian_sigma if sigma is None else sigma
        if self.heatmap == "laplace":
            return laplace_heatmaps(points, spatial_shape, sigma=sigma)
        return gaussian_heatmaps(points, spatial_shape, sigma=sigma)  # gaussian, adaptive

    def loss_function(self, learned_sigmas=None):
        """loss(logits, target, channel_mask) for this preset; with ``learned_sigmas`` (see
        :meth:`learned_sigmas`) the objective that learns them too."""
        from nnlandmark.training.losses import (SigmaPenalty, mse_on_sigmoid, spatial_softmax_absent_cross_entropy,
                                                spatial_softmax_cross_entropy, spatial_softmax_kl,
                                                topk_bce_with_logits)
        if self.preset == "cone":
            loss = partial(topk_bce_with_logits, fraction=self.topk_fraction)
        elif self.preset == "softmax" and self.absence and learned_sigmas is None:
            loss = spatial_softmax_absent_cross_entropy
        elif self.preset == "softmax":
            loss = spatial_softmax_cross_entropy if learned_sigmas is None else spatial_softmax_kl
        else:
            loss = mse_on_sigmoid
        if learned_sigmas is None:
            return loss
        return SigmaPenalty(loss, learned_sigmas, self.sigma_penalty, per_voxel=self.output != "softmax")

    @property
    def optimizer(self) -> str:
        return PRESETS[self.preset]["optimizer"]

    def model_name(self, plans_identifier: str, full_configuration: str = "3d_fullres") -> str:
        # a full-resolution model keeps the name of nnU-Net's configuration (``2d`` for 2D images),
        # as before the cascade
        configuration = full_configuration if self.configuration == "fullres" else self.configuration
        # the preset's own target keeps the names models had before the choice of shapes
        method = self.preset if self.heatmap == PRESETS[self.preset]["heatmap"] else f"{self.preset}-{self.heatmap}"
        return f"{method}_{self.architecture}__{plans_identifier}__{configuration}"

    def to_dict(self) -> dict:
        return asdict(self)


#: target, optimiser, schedule and output of each preset (``sigma``: the target's, in voxels)
PRESETS = {
    "softmax": {"optimizer": "adam", "lr": 1e-3, "schedule": "poly", "sigma": 1.5, "output": "softmax",
                "heatmap": "gaussian"},
    "cone": {"optimizer": "sgd", "lr": 1e-2, "schedule": "poly", "sigma": 4.0, "output": "sigmoid",
             "heatmap": "cone"},
    "v1": {"optimizer": "adam", "lr": 5e-4, "schedule": "step", "sigma": 4.0, "output": "sigmoid",
           "heatmap": "gaussian"},
}

#: target shapes (``TrainingSettings.heatmap``, ``train --heatmap``), each rendered by
#: :mod:`nnlandmark.training.targets`; the softmax objective normalises any of them to a distribution
HEATMAPS = {
    "gaussian": "exp(-d^2 / 2 sigma^2)",
    "laplace": "exp(-d / b), b = sigma / 2: the Gaussian's spread, a sharper peak, heavier tails",
    "adaptive": "a Gaussian whose per-landmark sigma is learned with the network, large sigmas penalised "
                "(Thaler et al. 2021); softmax and v1 presets",
    "cone": "max(0, 1 - d / cone_radius), radius 15 voxels: the cone preset's",
}


def _sigma_setting(sigma):
    """``gaussian_sigma`` as one float, or a list of one float per landmark; InvalidInput unless positive."""
    values = list(sigma) if isinstance(sigma, (list, tuple)) else [sigma]
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        raise InvalidInput(f"gaussian_sigma must be a number or a list of numbers, got {sigma!r}") from None
    if not values or not all(v > 0 for v in values):  # refuses NaN too
        raise InvalidInput(f"gaussian_sigma must be positive (voxels), got {sigma!r}")
    return values[0] if len(values) == 1 else values
