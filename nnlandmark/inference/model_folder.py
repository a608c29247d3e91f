"""Find, export and import self-contained model folders.

A model folder holds everything prediction needs: nnU-Net's ``plans.json`` and
``dataset.json``, our ``nnlandmark.json`` (landmark names = channel order,
pairs, training settings) and ``fold_N/checkpoint_*.pth``.
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


def update_description(model_dir, fields: dict) -> dict:
    """Merge ``fields`` into the model's ``nnlandmark.json`` (created if missing), atomically.

    The one writer of that file: training writes what the channels mean,
    ``evaluate-cv`` its presence thresholds, and neither erases the other's.
    """
    path = Path(model_dir) / MODEL_FILE
    description = {**(json.loads(path.read_text()) if path.is_file() else {}), **fields}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp_{path.name}")
    tmp.write_text(json.dumps(description, indent=2))
    tmp.replace(path)
    return description


def stage_dir(model_dir, fold: int, stage: str = "fullres") -> Path:
    """Where a stage of a fold keeps its checkpoints: ``fold_N`` for a full-resolution
    model, ``fold_N/global`` and ``fold_N/local`` for the cascade's stages."""
    fold_dir = Path(model_dir) / f"fold_{fold}"
    return fold_dir if stage == "fullres" else fold_dir / stage


def model_stages(description: dict) -> dict:
    """stage -> nnU-Net configuration of a model description (models written before the
    cascade have one full-resolution stage)."""
    return description.get("stages") or {"fullres": description["configuration"]}


def fold_checkpoint(model_dir: Path, fold: int, stage: str = "fullres") -> Path:
    folder = stage_dir(model_dir, fold, stage)
    for name in CHECKPOINT_PREFERENCE:
        path = folder / name
        if path.is_file():
            return path
    raise ModelFolderError(f"{folder}: no checkpoint for fold {fold}"
                           f"{'' if stage == 'fullres' else f' ({stage} stage)'} "
                           f"(looked for {', '.join(CHECKPOINT_PREFERENCE)})")


def check_model_folder(model_dir: Path, folds) -> dict:
    """The model description; raises ModelFolderError for missing plans, description or folds."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelFolderError(f"{model_dir}: model folder not found")
    for name in ("plans.json", "dataset.json", "nnlandmark.json"):
        if not (model_dir / name).is_file():
            raise ModelFolderError(f"{model_dir}: {name} missing; not a complete nnlandmark model folder")
    try:
        description = json.loads((model_dir / MODEL_FILE).read_text())
        stages = model_stages(description)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ModelFolderError(f"{model_dir / MODEL_FILE}: not a valid model description ({e})") from e
    for fold in folds:
        for stage in stages:
            checkpoint = fold_checkpoint(model_dir, fold, stage)
            # torch writes checkpoints as zip archives: a truncated copy has lost the archive's
            # directory at its end, which this reads without loading the weights
            if not zipfile.is_zipfile(checkpoint):
                raise ModelFolderError(f"{checkpoint}: not a readable checkpoint (truncated or damaged "
                                       "copy?); copy or export the model again")
    return description


def load_predictor(model_dir, folds=(0,), device: str = "cpu", step_size: float = 0.5, mirror_swap=None,
                   progress: bool = False, stage: str = "fullres"):
    """nnU-Net's sliding-window predictor for one stage of a model folder, the weights of
    ``folds`` averaged (:class:`nnlandmark.nnunet.predictor.LandmarkPredictor`; ``mirror_swap``
    is explained there). Raises ModelFolderError like :func:`check_model_folder`."""
    from nnlandmark.nnunet.predictor import LandmarkPredictor
    model_dir = Path(model_dir)
    description = check_model_folder(model_dir, folds)
    return LandmarkPredictor(plans=json.loads((model_dir / "plans.json").read_text()),
                             dataset_json=json.loads((model_dir / "dataset.json").read_text()),
                             configuration=model_stages(description)[stage],
                             architecture=description["settings"]["architecture"],
                             num_landmarks=len(description["landmarks"]),
                             checkpoints=[fold_checkpoint(model_dir, f, stage) for f in folds],
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
