"""Model folders: one owner of their files, and how to find, export and import them.

A model folder holds everything prediction needs: nnU-Net's ``plans.json`` and
``dataset.json``, our ``nnlandmark.json`` (the *description*: landmark names =
channel order, pairs, stages, training settings, presence thresholds) and the
checkpoints, ``fold_N/`` (full resolution) or ``fold_N/global`` and
``fold_N/local`` (the cascade). :class:`ModelFolder` is the only code that
reads or writes the description, so no command can erase what another stored.
"""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

from nnlandmark.errors import InvalidInput, MissingPath, OutputExists

MODEL_FILE = "nnlandmark.json"
_EXPORTED = ("plans.json", "dataset.json", "dataset_fingerprint.json", MODEL_FILE)
_EXPORTED_PER_FOLD = ("checkpoint_best.pth", "checkpoint_final.pth", "training_curves.json", "training_curves.png")
CHECKPOINT_PREFERENCE = ("checkpoint_best.pth", "checkpoint_final.pth", "checkpoint_latest.pth")


class ModelFolderError(InvalidInput):
    """A model folder that cannot be used; the message names what is missing."""


class ModelFolder:
    """A model folder on disk (which need not exist yet: training creates it).

    >>> import tempfile
    >>> model = ModelFolder(tempfile.mkdtemp())
    >>> _ = model.update({"landmarks": ["a", "b"], "configuration": "3d_fullres"})
    >>> _ = model.update({"presence_thresholds": {"a": 0.5}})   # merged, not replaced
    >>> model.description["landmarks"], model.stages
    (['a', 'b'], {'fullres': '3d_fullres'})
    >>> model.stage_dir(2, "local").relative_to(model.path).as_posix()
    'fold_2/local'
    """

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"ModelFolder({str(self.path)!r})"

    @property
    def description_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def description(self) -> dict:
        """``nnlandmark.json``; ModelFolderError (naming the file) when missing or malformed."""
        path = self.description_file
        if not path.is_file():
            raise ModelFolderError(f"{self.path}: {MODEL_FILE} missing; not a complete nnlandmark model folder")
        try:
            description = json.loads(path.read_text())
            if not isinstance(description, dict) or not isinstance(description["landmarks"], list):
                raise TypeError("expected an object with a 'landmarks' list")
            self._stages_of(description)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ModelFolderError(f"{path}: not a valid model description ({e})") from e
        return description

    def update(self, fields: dict) -> dict:
        """Merge ``fields`` into the description (created if missing) and replace the file atomically:
        training writes what the channels mean, ``evaluate-cv`` its presence thresholds, and
        neither erases the other's."""
        path = self.description_file
        description = {**(self.description if path.is_file() else {}), **fields}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp_{path.name}")
        tmp.write_text(json.dumps(description, indent=2))
        tmp.replace(path)
        return description

    @staticmethod
    def _stages_of(description: dict) -> dict:
        # models written before the cascade have one full-resolution stage
        return description.get("stages") or {"fullres": description["configuration"]}

    @property
    def stages(self) -> dict:
        """stage -> nnU-Net configuration, in the order prediction runs them."""
        return self._stages_of(self.description)

    @property
    def planar(self) -> bool:
        """True for a model of 2D images: its stages are nnU-Net's ``2d`` configuration, or the
        cascade's ``2d_global`` and ``2d_local``."""
        return any(c == "2d" or c.startswith("2d_") for c in self.stages.values())

    def stage_dir(self, fold: int, stage: str = "fullres") -> Path:
        """Where a stage of a fold keeps its checkpoints."""
        fold_dir = self.path / f"fold_{fold}"
        return fold_dir if stage == "fullres" else fold_dir / stage

    def checkpoint(self, fold: int, stage: str = "fullres") -> Path:
        """The checkpoint prediction uses (best, else final, else latest)."""
        folder = self.stage_dir(fold, stage)
        for name in CHECKPOINT_PREFERENCE:
            if (folder / name).is_file():
                return folder / name
        raise ModelFolderError(f"{folder}: no checkpoint for fold {fold}"
                               f"{'' if stage == 'fullres' else f' ({stage} stage)'} "
                               f"(looked for {', '.join(CHECKPOINT_PREFERENCE)})")

    def check(self, folds) -> dict:
        """The description, after checking that everything prediction with ``folds`` reads is
        there and readable; ModelFolderError naming the first file that is not."""
        if not self.path.is_dir():
            raise ModelFolderError(f"{self.path}: model folder not found")
        for name in ("plans.json", "dataset.json"):
            if not (self.path / name).is_file():
                raise ModelFolderError(f"{self.path}: {name} missing; not a complete nnlandmark model folder")
        description = self.description
        for fold in folds:
            for stage in self._stages_of(description):
                checkpoint = self.checkpoint(fold, stage)
                # torch writes checkpoints as zip archives: a truncated copy has lost the archive's
                # directory at its end, which this reads without loading the weights
                if not zipfile.is_zipfile(checkpoint):
                    raise ModelFolderError(f"{checkpoint}: not a readable checkpoint (truncated or damaged "
                                           "copy?); copy or export the model again")
        return description

    def predictor(self, folds=(0,), stage: str = "fullres", device: str = "cpu", step_size: float = 0.5,
                  mirror_swap=None, progress: bool = False):
        """nnU-Net's sliding-window predictor for one stage, the weights of ``folds`` averaged
        (:class:`nnlandmark.nnunet.predictor.LandmarkPredictor`, which explains ``mirror_swap``)."""
        from nnlandmark.nnunet.predictor import LandmarkPredictor
        description = self.check(folds)
        return LandmarkPredictor(plans=json.loads((self.path / "plans.json").read_text()),
                                 dataset_json=json.loads((self.path / "dataset.json").read_text()),
                                 configuration=self._stages_of(description)[stage],
                                 architecture=description["settings"]["architecture"],
                                 num_landmarks=len(description["landmarks"]),
                                 checkpoints=[self.checkpoint(f, stage) for f in folds],
                                 device=device, step_size=step_size, mirror_swap=mirror_swap, progress=progress)


def list_models(project_dir) -> list:
    """Model folders of a project."""
    from nnlandmark.planning.project import Project
    project = Project.load(project_dir)
    base = project.folders.results / project.dataset_name
    return sorted(p for p in base.iterdir() if (p / MODEL_FILE).is_file()) if base.is_dir() else []


def resolve_model(path) -> Path:
    """A model folder given either itself or a project folder with exactly one model."""
    path = Path(path)
    if (path / MODEL_FILE).is_file():
        return path
    if (path / "project.json").is_file():
        models = list_models(path)
        if len(models) == 1:
            return models[0]
        if not models:
            raise MissingPath(f"{path}: project has no trained model yet (run 'nnlandmark train')")
        raise InvalidInput(f"{path}: project has {len(models)} models; pass one of: "
                         + ", ".join(str(m) for m in models))
    raise MissingPath(f"{path}: neither a model folder ({MODEL_FILE}) nor a project folder (project.json)")


def export_model(model_dir, zip_path) -> Path:
    """Zip the files prediction needs (not the latest/optimizer-only leftovers)."""
    model_dir, zip_path = resolve_model(model_dir), Path(zip_path)
    if zip_path.exists():
        raise OutputExists(f"{zip_path}: already exists")
    folds = sorted(p for p in model_dir.glob("fold_*") if p.is_dir())
    if not folds:
        raise MissingPath(f"{model_dir}: no fold_N folders to export")
    tmp = zip_path.with_name(f".tmp_{zip_path.name}")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name in _EXPORTED:
            if (model_dir / name).is_file():
                z.write(model_dir / name, name)
        for fold in folds:
            for folder in (fold, fold / "global", fold / "local"):
                for name in _EXPORTED_PER_FOLD:
                    if (folder / name).is_file():
                        z.write(folder / name, (folder / name).relative_to(model_dir).as_posix())
    tmp.replace(zip_path)
    return zip_path


def import_model(zip_path, folder) -> Path:
    """Unzip an exported model into ``folder`` (which must not exist or be empty)."""
    zip_path, folder = Path(zip_path), Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise OutputExists(f"{folder}: not empty")
    if not zip_path.is_file():
        raise MissingPath(f"{zip_path}: no such file")
    if not zipfile.is_zipfile(zip_path):
        raise InvalidInput(f"{zip_path}: not a zip archive (expected a model written by 'nnlandmark export-model')")
    with zipfile.ZipFile(zip_path) as z:
        names = z.namelist()
        if MODEL_FILE not in names or "plans.json" not in names:
            raise InvalidInput(f"{zip_path}: not an exported nnlandmark model (no {MODEL_FILE} or plans.json)")
        for name in names:
            if name.startswith("/") or ".." in Path(name).parts:
                raise InvalidInput(f"{zip_path}: unsafe path {name!r} in archive")
        # unpacked beside the target first, so a failure (disk full, damaged member) leaves no half model
        tmp = folder.with_name(f".tmp_{folder.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            z.extractall(tmp)
        except (zipfile.BadZipFile, EOFError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise InvalidInput(f"{zip_path}: damaged archive ({e})") from e
    if folder.exists():
        folder.rmdir()  # empty, checked above
    tmp.replace(folder)
    return folder
