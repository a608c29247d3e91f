"""Model folders: one owner of their files, and how to find, export and import them.

A model folder holds everything prediction needs: nnU-Net's ``plans.json`` and
``dataset.json``, our ``nnlandmark.json`` (the *description*,
:class:`~nnlandmark.model.description.ModelDescription`: landmark names =
channel order, pairs, stages, training settings, how the output is read,
presence thresholds) and the checkpoints, ``fold_N/`` (full resolution) or
``fold_N/global`` and ``fold_N/local`` (the cascade). :class:`ModelFolder` is
the only code that reads or writes the description, so no command can erase
what another stored.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path

from nnlandmark.errors import InvalidInput, MissingPath, OutputExists
from nnlandmark.files import atomic_write, atomic_write_text
from nnlandmark.model.description import ModelDescription, fold_key

MODEL_FILE = "nnlandmark.json"
_EXPORTED = ("plans.json", "dataset.json", "dataset_fingerprint.json", MODEL_FILE)
_EXPORTED_PER_FOLD = ("checkpoint_best.pth", "checkpoint_final.pth", "training_curves.json", "training_curves.png")
CHECKPOINT_PREFERENCE = ("checkpoint_best.pth", "checkpoint_final.pth", "checkpoint_latest.pth")
#: written into an exported model: whether each fold's stages finished training, and after how many epochs
FOLD_STATES_FILE = "fold_states.json"
#: the members an exported model may have; anything else in an archive is not extracted
_MEMBER = re.compile(r"(?:(?:plans|dataset|dataset_fingerprint|nnlandmark|fold_states)\.json"
                     r"|fold_\d+/(?:(?:global|local)/)?(?:checkpoint_best\.pth|checkpoint_final\.pth"
                     r"|training_curves\.json|training_curves\.png))")
#: what an archive may expand to: a zip bomb expands hundreds of times; checkpoints hardly compress
MAX_EXPANSION_RATIO = 50
MAX_MODEL_BYTES = 64 << 30
MAX_JSON_BYTES = 64 << 20


class ModelFolderError(InvalidInput):
    """A model folder that cannot be used; the message names what is missing."""


class ModelFolder:
    """A model folder on disk (which need not exist yet: training creates it).

    >>> import tempfile
    >>> model = ModelFolder(tempfile.mkdtemp())
    >>> _ = model.update({"landmarks": ["a", "b"], "configuration": "3d_fullres", "output": "softmax"})
    >>> _ = model.update({"presence_thresholds": {"a": 0.5}})   # merged, not replaced
    >>> model.description.landmarks, model.description.presence_thresholds, model.stages
    (['a', 'b'], {'a': 0.5}, {'fullres': '3d_fullres'})
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
    def description(self) -> ModelDescription:
        """``nnlandmark.json`` (also as written by earlier versions); ModelFolderError (naming the
        file) when missing or malformed."""
        path = self.description_file
        if not path.is_file():
            raise ModelFolderError(f"{self.path}: {MODEL_FILE} missing; not a complete nnlandmark model folder")
        try:
            return ModelDescription.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ModelFolderError(f"{path}: not a valid model description ({e})") from e

    def update(self, fields: dict) -> dict:
        """Merge ``fields`` into the description (created if missing) and replace the file atomically:
        training writes what the channels mean, ``evaluate-cv`` its presence thresholds, and
        neither erases the other's."""
        path = self.description_file
        merged = {**(self.description.to_dict() if path.is_file() else {}), **fields}
        if "stages" in fields and "configuration" not in fields:
            merged.pop("configuration", None)  # the stages' own, not the earlier one's
        description = ModelDescription.from_dict(merged)  # refuses to write what could not be read back
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(description.to_dict(), indent=2))
        return description

    @property
    def stages(self) -> dict:
        """stage -> nnU-Net configuration, in the order prediction runs them."""
        return self.description.stages

    @property
    def planar(self) -> bool:
        """True for a model of 2D images: its stages are nnU-Net's ``2d`` configuration, or the
        cascade's ``2d_global`` and ``2d_local``."""
        return any(c == "2d" or c.startswith("2d_") for c in self.stages.values())

    def stage_dir(self, fold: int, stage: str = "fullres") -> Path:
        """Where a stage of a fold keeps its checkpoints."""
        fold_dir = self.path / fold_key(fold)
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
            for stage in description.stages:
                checkpoint = self.checkpoint(fold, stage)
                # torch writes checkpoints as zip archives: a truncated copy has lost the archive's
                # directory at its end, which this reads without loading the weights
                if not zipfile.is_zipfile(checkpoint):
                    raise ModelFolderError(f"{checkpoint}: not a readable checkpoint (truncated or damaged "
                                           "copy?); copy or export the model again")
        return description

    def unfinished(self, folds) -> list:
        """One line per stage of ``folds`` whose training did not finish (no ``checkpoint_final.pth``:
        the fold was stopped or killed), naming the fold, its epochs and the checkpoint used."""
        lines = []
        for fold in folds:
            for stage in self.stages:
                folder = self.stage_dir(fold, stage)
                if (folder / "checkpoint_final.pth").is_file():
                    continue
                epochs = _epochs_done(folder)
                lines.append(f"fold {fold}{'' if stage == 'fullres' else f' ({stage} stage)'} did not finish "
                             f"training (no checkpoint_final.pth, stopped after "
                             f"{'an unknown number of' if epochs is None else epochs} epoch(s)); predicting with "
                             f"{self.checkpoint(fold, stage).name}")
        return lines

    def fold_states(self) -> dict:
        """``{"fold_N": {stage: {"finished": bool, "epochs": n}}}`` of every fold folder."""
        states = {}
        for fold_dir in sorted(self.path.glob("fold_*")):
            if not fold_dir.is_dir() or not fold_dir.name[5:].isdigit():
                continue
            fold = int(fold_dir.name[5:])
            states[fold_dir.name] = {stage: {"finished": (self.stage_dir(fold, stage) / "checkpoint_final.pth").is_file(),
                                             "epochs": _epochs_done(self.stage_dir(fold, stage))}
                                     for stage in self.stages if self.stage_dir(fold, stage).is_dir()}
        return states

    def predictor(self, folds=(0,), stage: str = "fullres", device: str = "cpu", step_size: float = 0.5,
                  mirror_swap=None, progress: bool = False):
        """nnU-Net's sliding-window predictor for one stage, the weights of ``folds`` averaged
        (:class:`nnlandmark.nnunet.predictor.LandmarkPredictor`, which explains ``mirror_swap``)."""
        from nnlandmark.nnunet.predictor import LandmarkPredictor
        description = self.check(folds)
        return LandmarkPredictor(plans=json.loads((self.path / "plans.json").read_text()),
                                 dataset_json=json.loads((self.path / "dataset.json").read_text()),
                                 configuration=description.stages[stage],
                                 architecture=description.settings["architecture"],
                                 num_landmarks=len(description.landmarks),
                                 checkpoints=[self.checkpoint(f, stage) for f in folds],
                                 device=device, step_size=step_size, mirror_swap=mirror_swap, progress=progress)


def _epochs_done(folder: Path):
    """Epochs a stage trained, from its ``training_curves.json`` (one loss per epoch), else None."""
    try:
        return len(json.loads((folder / "training_curves.json").read_text())["train_loss"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


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
    from nnlandmark.planning.project import PROJECT_FILE
    if (path / PROJECT_FILE).is_file():
        models = list_models(path)
        if len(models) == 1:
            return models[0]
        if not models:
            raise MissingPath(f"{path}: project has no trained model yet (run 'nnlandmark train')")
        raise InvalidInput(f"{path}: project has {len(models)} models; pass one of: "
                         + ", ".join(str(m) for m in models))
    raise MissingPath(f"{path}: neither a model folder ({MODEL_FILE}) nor a project folder ({PROJECT_FILE})")


def export_model(model_dir, zip_path) -> Path:
    """Zip the files prediction needs (not the latest/optimizer-only leftovers)."""
    model_dir, zip_path = resolve_model(model_dir), Path(zip_path)
    if zip_path.exists():
        raise OutputExists(f"{zip_path}: already exists")
    folds = sorted(p for p in model_dir.glob("fold_*") if p.is_dir())
    if not folds:
        raise MissingPath(f"{model_dir}: no fold_N folders to export")
    model = ModelFolder(model_dir)
    states = model.fold_states()
    for fold, stages in states.items():
        for stage, state in stages.items():
            if not state["finished"]:
                warnings.warn(f"{model_dir / fold}: the {stage} stage did not finish training (no "
                              f"checkpoint_final.pth, {state['epochs'] if state['epochs'] is not None else '?'} "
                              f"epoch(s)); exported as it is, and {FOLD_STATES_FILE} in the archive says so",
                              stacklevel=2)

    def write(tmp):
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for name in _EXPORTED:
                if (model_dir / name).is_file():
                    z.write(model_dir / name, name)
            z.writestr(FOLD_STATES_FILE, json.dumps(states, indent=1))
            for fold in folds:
                for folder in (fold, fold / "global", fold / "local"):
                    for name in _EXPORTED_PER_FOLD:
                        if (folder / name).is_file():
                            z.write(folder / name, (folder / name).relative_to(model_dir).as_posix())
    atomic_write(zip_path, write)  # a unique temporary name beside it: never a file of the user's
    return zip_path


def import_model(zip_path, folder) -> Path:
    """Unzip an exported model into ``folder`` (which must not exist or be empty).

    Only the members a model has are extracted (:data:`_MEMBER`), after checking that they do
    not expand beyond :data:`MAX_EXPANSION_RATIO` times the archive (a zip bomb) and that the
    plans, dataset and model description are valid JSON of the right shape; the checkpoints are
    read later with ``weights_only`` (:mod:`nnlandmark.nnunet.checkpoints`).
    """
    zip_path, folder = Path(zip_path), Path(os.path.abspath(folder))  # "." has no name to put a sibling beside
    if folder.exists() and any(folder.iterdir()):
        raise OutputExists(f"{folder}: not empty")
    if not zip_path.is_file():
        raise MissingPath(f"{zip_path}: no such file")
    if not zipfile.is_zipfile(zip_path):
        raise InvalidInput(f"{zip_path}: not a zip archive (expected a model written by 'nnlandmark export-model')")
    with zipfile.ZipFile(zip_path) as z:
        infos = z.infolist()
        names = [i.filename for i in infos]
        if MODEL_FILE not in names or "plans.json" not in names:
            raise InvalidInput(f"{zip_path}: not an exported nnlandmark model (no {MODEL_FILE} or plans.json)")
        for name in names:
            if name.startswith("/") or ".." in Path(name).parts:
                raise InvalidInput(f"{zip_path}: unsafe path {name!r} in archive")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise InvalidInput(f"{zip_path}: the archive holds {twice[0]} more than once; not a model written by "
                               "'nnlandmark export-model'")
        kept = [i for i in infos if _MEMBER.fullmatch(i.filename)]
        expanded = sum(i.file_size for i in kept)
        limit = min(MAX_MODEL_BYTES, MAX_EXPANSION_RATIO * zip_path.stat().st_size + (1 << 20))
        if expanded > limit:
            raise InvalidInput(f"{zip_path}: would expand to {expanded / 2**20:.0f} MiB, more than a model of this "
                               f"archive's size can hold ({limit / 2**20:.0f} MiB); refused as a possible zip bomb")
        big = [i for i in kept if i.filename.endswith(".json") and i.file_size > MAX_JSON_BYTES]
        if big:
            raise InvalidInput(f"{zip_path}: {big[0].filename} is {big[0].file_size / 2**20:.0f} MiB, too large "
                               "for a model's JSON file")
        try:
            _check_model_json(zip_path, {i.filename: z.read(i) for i in kept if i.filename.endswith(".json")})
        except (zipfile.BadZipFile, EOFError) as e:
            raise InvalidInput(f"{zip_path}: damaged archive ({e})") from e
        skipped = len(infos) - len(kept)
        if skipped:
            warnings.warn(f"{zip_path}: {skipped} member(s) that are not part of a model were not extracted "
                          f"(e.g. {next(i.filename for i in infos if i not in kept)})", stacklevel=2)
        # unpacked beside the target first, so a failure (disk full, damaged member) leaves no half model;
        # a unique name, never a folder of the user's
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.import-"))
        try:
            for info in kept:
                z.extract(info, tmp)
        except (zipfile.BadZipFile, EOFError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise InvalidInput(f"{zip_path}: damaged archive ({e})") from e
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if folder.exists():
        folder.rmdir()  # empty, checked above
    tmp.replace(folder)
    _warn_unfinished(folder)
    return folder


def _check_model_json(zip_path: Path, files: dict) -> None:
    """Refuse an archive whose plans, dataset or model description is not what they must be
    (``{name: bytes}`` of its JSON members), naming the member."""
    shapes = {"plans.json": ("configurations", dict), "dataset.json": ("channel_names", dict),
              MODEL_FILE: ("landmarks", list)}
    for name, data in files.items():
        try:
            value = json.loads(data)
        except ValueError as e:
            raise InvalidInput(f"{zip_path}: {name} is not valid JSON ({e})") from e
        key, kind = shapes.get(name, (None, None))
        if key is not None and not (isinstance(value, dict) and isinstance(value.get(key), kind)):
            raise InvalidInput(f"{zip_path}: {name} is not a model's {name} (no {key!r} {kind.__name__})")
    if "dataset.json" not in files:
        raise InvalidInput(f"{zip_path}: not an exported nnlandmark model (no dataset.json)")
    try:
        ModelDescription.from_dict(json.loads(files[MODEL_FILE]))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise InvalidInput(f"{zip_path}: {MODEL_FILE} is not a valid model description ({e})") from e


def _warn_unfinished(folder: Path) -> None:
    """Say which folds of an imported model did not finish training (its exporter's record)."""
    try:
        states = json.loads((folder / FOLD_STATES_FILE).read_text())
    except (OSError, ValueError):
        return
    for fold, stages in states.items():
        for stage, state in (stages.items() if isinstance(stages, dict) else ()):
            if isinstance(state, dict) and state.get("finished") is False:
                warnings.warn(f"{folder}: {fold} ({stage} stage) did not finish training "
                              f"({state.get('epochs', '?')} epoch(s)); its predictions may be worse", stacklevel=3)
