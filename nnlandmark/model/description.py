"""``nnlandmark.json``, typed: what a model folder's networks are and how to read them.

Training writes it (landmarks, stages, settings, how the output is read, the
shape prior, learned sigmas), ``evaluate-cv`` adds presence thresholds and the
uncertainty calibration, prediction and evaluation read it. Every reader goes
through :class:`ModelDescription`, which also reads the files earlier versions
wrote (without ``stages``: one full-resolution stage; without ``output``: the
rule their preset had, :data:`LEGACY_PRESETS`).

>>> old = {"landmarks": ["a", "b"], "configuration": "3d_fullres", "settings": {"preset": "cone"}}
>>> d = ModelDescription.from_dict(old)
>>> d.stages, d.output, d.configuration
({'fullres': '3d_fullres'}, 'sigmoid', '3d_fullres')
>>> d["landmarks"], d.get("presence_thresholds")   # readers not yet typed see the dict they knew
(['a', 'b'], {})
>>> fold_key(3)
'fold_3'
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

# defined beside NUM_FOLDS: the nnU-Net layer names the fold folders too
from nnlandmark.nnunet.paths import fold_key  # noqa: F401

#: how a network's output channel becomes what the decoders read: a distribution over the voxels
#: (``softmax`` per channel) or a heatmap in 0-1 per voxel (``sigmoid``)
OUTPUTS = ("softmax", "sigmoid")
#: what each preset meant when descriptions did not say it themselves (before 2026-12: no ``output``;
#: earlier still, no ``heatmap`` or ``gaussian_sigma`` in the settings). Frozen as those files were
#: written: new presets store their rule, and prediction never asks training's presets
LEGACY_PRESETS = {"softmax": {"output": "softmax", "heatmap": "gaussian", "sigma": 1.5},
                  "cone": {"output": "sigmoid", "heatmap": "cone", "sigma": 4.0},
                  "v1": {"output": "sigmoid", "heatmap": "gaussian", "sigma": 4.0}}
#: the preset of descriptions that name none (the default preset then and now)
LEGACY_DEFAULT_PRESET = "softmax"


@dataclass(eq=True)
class ModelDescription(Mapping):
    """The contents of ``nnlandmark.json``. Also a read-only mapping of :meth:`to_dict`, so code
    that reads it as the dict it used to be keeps working."""

    #: landmark names = output channel order
    landmarks: list
    #: stage -> nnU-Net configuration, in the order prediction runs them
    stages: dict
    #: the training settings (``TrainingSettings.to_dict()``)
    settings: dict
    #: how the output is read: one of :data:`OUTPUTS`
    output: str
    pairs: list = field(default_factory=list)
    biometry: dict = field(default_factory=dict)
    #: input channel names (one image file each)
    channels: list = field(default_factory=lambda: ["image"])
    #: the training dataset's picture spacing (PNG/JPEG, x and y mm); None: 1 mm, or images with their own
    picture_spacing: list | None = None
    planner: str | None = None
    plans_identifier: str | None = None
    #: whether training mirrored left-right (test-time mirroring follows it by default)
    mirror: bool = False
    #: the storage order scans were reoriented to (None: a model trained on scans as stored)
    orientation: str | None = None
    nnunetv2_version: str | None = None
    #: fold key -> the training shapes' mean and spread (:func:`nnlandmark.model.shape.fit_shape_prior`)
    shape_prior: dict = field(default_factory=dict)
    #: fold key -> stage -> landmark -> sigma (``--heatmap adaptive``)
    learned_sigmas: dict = field(default_factory=dict)
    #: landmark -> score below which a point is written as absent (``evaluate-cv``)
    presence_thresholds: dict = field(default_factory=dict)
    presence_calibration: dict | None = None
    #: ``evaluate-cv``'s radius calibration (coverage, scale per landmark, decoder)
    uncertainty_calibration: dict | None = None
    #: fields this version does not know (a newer nnlandmark's), kept as they were
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.landmarks, list) or not all(isinstance(n, str) for n in self.landmarks):
            raise TypeError("expected a 'landmarks' list of names")
        if not isinstance(self.stages, dict) or not self.stages \
                or not all(isinstance(c, str) for c in self.stages.values()):
            raise TypeError("expected 'stages' (stage -> nnU-Net configuration) or 'configuration'")
        if self.output not in OUTPUTS:
            raise ValueError(f"'output' must be one of {', '.join(OUTPUTS)}, got {self.output!r}")

    @classmethod
    def from_dict(cls, data) -> "ModelDescription":
        """Today's files and earlier ones; TypeError, KeyError or ValueError for what is not a description."""
        if not isinstance(data, Mapping):
            raise TypeError("expected an object")
        data = dict(data)
        landmarks = data.pop("landmarks")
        configuration = data.pop("configuration", None)
        # models written before the cascade have one full-resolution stage
        stages = data.pop("stages", None) or {"fullres": configuration}
        settings = data.pop("settings", None) or {}
        if not isinstance(settings, dict):
            raise TypeError("'settings' must be an object")
        output = data.pop("output", None)
        if output is None or settings.get("heatmap") is None or settings.get("gaussian_sigma") is None:
            legacy = LEGACY_PRESETS.get(settings.get("preset", LEGACY_DEFAULT_PRESET))
            if legacy is None:
                raise ValueError(f"no 'output' (or target), and a preset this version does not know: "
                                 f"{settings.get('preset')!r}")
            output = output or legacy["output"]
            settings = {**settings, "heatmap": settings.get("heatmap") or legacy["heatmap"],
                        "gaussian_sigma": legacy["sigma"] if settings.get("gaussian_sigma") is None
                        else settings["gaussian_sigma"]}
        optional = {f.name: f for f in dataclasses.fields(cls)
                    if f.name not in ("landmarks", "stages", "settings", "output", "extra")}
        given = {name: data.pop(name) for name in list(data) if name in optional}
        # null where this type keeps an empty collection (a field written as null by hand or by an old version)
        given = {k: v for k, v in given.items() if v is not None or optional[k].default_factory is dataclasses.MISSING}
        return cls(landmarks=landmarks, stages=stages, settings=settings, output=output, **given, extra=data)

    def to_dict(self) -> dict:
        """The JSON object written to ``nnlandmark.json`` (with ``configuration``, the last stage's,
        for readers older than ``stages``)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        data["configuration"] = self.configuration
        return {**data, **self.extra}

    @property
    def configuration(self) -> str:
        """The last stage's nnU-Net configuration."""
        return list(self.stages.values())[-1]

    @classmethod
    def of(cls, description) -> "ModelDescription":
        """``description`` typed: itself, or read from the dict (``nnlandmark.json``'s contents)."""
        return description if isinstance(description, cls) else cls.from_dict(description)

    @property
    def preset(self) -> str:
        return self.settings.get("preset", LEGACY_DEFAULT_PRESET)

    @property
    def heatmap(self) -> str:
        """The training target's shape (``gaussian``, ``laplace``, ``adaptive``, ``cone``)."""
        return self.settings["heatmap"]

    def learned_sigmas_of(self, fold: int, stage: str) -> dict | None:
        """landmark -> sigma that ``--heatmap adaptive`` learned for a stage of a fold, or None."""
        return (self.learned_sigmas.get(fold_key(fold)) or {}).get(stage)

    def shape_prior_of(self, folds) -> dict | None:
        """The first of ``folds`` with a shape prior, or None."""
        return next((self.shape_prior[fold_key(f)] for f in folds if fold_key(f) in self.shape_prior), None)

    # a read-only mapping of to_dict(), for readers of the dict this used to be
    def __getitem__(self, key):
        return self.to_dict()[key]

    def __iter__(self):
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())
