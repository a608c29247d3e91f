"""Training settings and the two method presets.

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

from nnlandmark.training.losses import mse_on_sigmoid, topk_bce_with_logits
from nnlandmark.training.targets import cone_heatmaps, gaussian_heatmaps

ARCHITECTURES = ("unet", "h3de")


@dataclass
class TrainingSettings:
    """Everything about a training run that is not in nnU-Net's plans.

    ``epochs`` x ``iterations_per_epoch`` is nnU-Net's 1000 x 250 by default;
    on a CPU use a few epochs of a few iterations (one default epoch takes
    about 7 minutes on 2 cores for a 48^3 patch).

    ``mirror``: flip training patches along the patient's left-right axis
    (half of them, paired landmarks swapped) and average the prediction with
    its mirror image at test time. Mirroring assumes roughly symmetric
    anatomy, which declared left/right ``pairs`` signal, so ``None`` (the
    default) means "on when the dataset has pairs"; set True for a symmetric
    dataset whose landmarks all lie on the mid-plane, False for asymmetric
    anatomy that still has pairs.
    """

    preset: str = "cone"
    architecture: str = "unet"
    epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations: int = 50
    cone_radius: float = 15.0
    gaussian_sigma: float = 4.0
    topk_fraction: float = 0.2
    learning_rate: float | None = None
    save_every: int = 1
    augmentation_workers: int | None = None
    mirror: bool | None = None

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset '{self.preset}', choose from {sorted(PRESETS)}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture '{self.architecture}', choose from {list(ARCHITECTURES)}")
        for name in ("epochs", "iterations_per_epoch", "val_iterations", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    @property
    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else PRESETS[self.preset]["lr"]

    def mirroring(self, pairs) -> bool:
        """Whether to mirror left-right for a dataset with these ``pairs`` (see ``mirror``)."""
        return bool(pairs) if self.mirror is None else bool(self.mirror)

    def make_targets(self, points, spatial_shape):
        """Heatmap targets (B, L, *spatial) for landmark points (B, L, 3)."""
        if self.preset == "cone":
            return cone_heatmaps(points, spatial_shape, radius=self.cone_radius)
        return gaussian_heatmaps(points, spatial_shape, sigma=self.gaussian_sigma)

    def loss_function(self):
        """loss(logits, target, channel_mask) for this preset."""
        if self.preset == "cone":
            return partial(topk_bce_with_logits, fraction=self.topk_fraction)
        return mse_on_sigmoid

    @property
    def optimizer(self) -> str:
        return PRESETS[self.preset]["optimizer"]

    def model_name(self, plans_identifier: str, configuration: str) -> str:
        return f"{self.preset}_{self.architecture}__{plans_identifier}__{configuration}"

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    "cone": {"optimizer": "sgd", "lr": 1e-2},
    "v1": {"optimizer": "adam", "lr": 5e-4},
}
