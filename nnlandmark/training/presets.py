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
    """

    preset: str = "softmax"
    architecture: str = "unet"
    configuration: str = "cascade"
    epochs: int = 1000
    iterations_per_epoch: int | None = None
    val_iterations: int | None = None
    time_budget_minutes: float | None = None
    cone_radius: float = 15.0
    gaussian_sigma: float | None = None
    topk_fraction: float = 0.2
    learning_rate: float | None = None
    save_every: int = 1
    augmentation_workers: int | None = None
    mirror: bool | None = None
    exact_targets: bool = True
    contrast_augmentation: float = 0.0

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
        if self.gaussian_sigma is None:
            self.gaussian_sigma = PRESETS[self.preset]["sigma"]
        flags = {"epochs": "--epochs", "iterations_per_epoch": "--iterations", "val_iterations": "--val-iterations",
                 "save_every": "save_every"}
        for name, flag in flags.items():
            if getattr(self, name) < 1:
                raise InvalidInput(f"{flag}: must be at least 1, got {getattr(self, name)}")

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

    def make_targets(self, points, spatial_shape):
        """Heatmap targets (B, L, *spatial) for landmark points (B, L, 3)."""
        # imported here: the CLI reads the registries of this module without paying for torch
        from nnlandmark.training.targets import cone_heatmaps, gaussian_heatmaps
        if self.preset == "cone":
            return cone_heatmaps(points, spatial_shape, radius=self.cone_radius)
        return gaussian_heatmaps(points, spatial_shape, sigma=self.gaussian_sigma)

    def loss_function(self):
        """loss(logits, target, channel_mask) for this preset."""
        from nnlandmark.training.losses import mse_on_sigmoid, spatial_softmax_cross_entropy, topk_bce_with_logits
        if self.preset == "cone":
            return partial(topk_bce_with_logits, fraction=self.topk_fraction)
        if self.preset == "softmax":
            return spatial_softmax_cross_entropy
        return mse_on_sigmoid

    @property
    def optimizer(self) -> str:
        return PRESETS[self.preset]["optimizer"]

    def model_name(self, plans_identifier: str) -> str:
        # a full-resolution model keeps the name of nnU-Net's configuration, as before the cascade
        configuration = "3d_fullres" if self.configuration == "fullres" else self.configuration
        return f"{self.preset}_{self.architecture}__{plans_identifier}__{configuration}"

    def to_dict(self) -> dict:
        return asdict(self)


#: target, optimiser, schedule and output of each preset (``sigma``: the Gaussian's, in voxels)
PRESETS = {
    "softmax": {"optimizer": "adam", "lr": 1e-3, "schedule": "poly", "sigma": 1.5, "output": "softmax"},
    "cone": {"optimizer": "sgd", "lr": 1e-2, "schedule": "poly", "sigma": 4.0, "output": "sigmoid"},
    "v1": {"optimizer": "adam", "lr": 5e-4, "schedule": "step", "sigma": 4.0, "output": "sigmoid"},
}
