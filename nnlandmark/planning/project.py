"""A project folder: one dataset, planned and preprocessed, plus its trained models.

``prepare`` validates the dataset (nothing is written anywhere until it passes),
exports it in nnU-Net's raw format, and runs nnU-Net's fingerprint, planner and
preprocessor. All three steps skip work already done, so a rerun resumes.

Layout::

    PROJECT/
      project.json            what was prepared, from where, with which planner
      logs/nnunet.log         what nnU-Net printed while preparing and training (nnlandmark.nnunet.console)
      nnUNet_raw/DatasetNNN_<name>/          (or $nnUNet_raw when set)
      nnUNet_preprocessed/DatasetNNN_<name>/ (or $nnUNet_preprocessed)
      nnUNet_results/DatasetNNN_<name>/<model>/  model folders (or $nnUNet_results)
"""
from __future__ import annotations

import math
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nnlandmark.data.dataset import load_dataset
from nnlandmark.nnunet import planning
from nnlandmark.nnunet.console import LOG_FILE_NAME, nnunet_log
from nnlandmark.nnunet.paths import NUM_FOLDS, NnunetFolders, nnunet_environment
from nnlandmark.nnunet.raw import PLANAR_SLICE_SPACING, write_raw_dataset
from nnlandmark.files import atomic_write_text
from nnlandmark.errors import DatasetError, InvalidInput, MissingPath, OutputExists, check_writable
from nnlandmark.geometry import CANONICAL_ORIENTATION

PROJECT_FILE = "project.json"
FIRST_DATASET_ID = 701  # clear of the ids nnU-Net's public datasets use


@dataclass
class Project:
    root: Path
    dataset_dir: str
    dataset_id: int
    dataset_name: str
    landmarks: list
    pairs: list = field(default_factory=list)
    biometry: dict = field(default_factory=dict)
    channels: list = field(default_factory=lambda: ["image"])
    planner: str = "default"
    target_spacing: list | None = None
    cases: list | None = None  # case ids exported, so a rerun can tell that the dataset changed
    #: the dataset's picture spacing (PNG/JPEG, x and y mm; None: 1 mm or images with their own)
    spacing: list | None = None
    #: the storage order every image was reoriented to before export (``CANONICAL_ORIENTATION``);
    #: None for projects prepared before nnlandmark reoriented images (exported as stored)
    orientation: str | None = None
    #: ``{code: cases}``: the storage orders the dataset's images came in
    orientations: dict = field(default_factory=dict)

    @property
    def folders(self) -> NnunetFolders:
        return NnunetFolders.for_project(self.root)

    @property
    def plans_identifier(self) -> str:
        return planning.plans_identifier(self.planner)

    @property
    def plans_file(self) -> Path:
        return self.folders.preprocessed / self.dataset_name / f"{self.plans_identifier}.json"

    def plans(self) -> dict:
        return json.loads(self.plans_file.read_text())

    @property
    def log_file(self) -> Path:
        """Where nnU-Net's own output goes while this project is prepared and trained."""
        return self.root / "logs" / LOG_FILE_NAME

    def raw_dir(self) -> Path:
        return self.folders.raw / self.dataset_name

    def save(self) -> None:
        data = {k: v for k, v in asdict(self).items() if k != "root"}  # a project folder may be moved
        atomic_write_text(self.root / PROJECT_FILE, json.dumps(data, indent=2))

    @classmethod
    def load(cls, root) -> "Project":
        root = Path(root)
        path = root / PROJECT_FILE
        if not path.is_file():
            raise MissingPath(f"{root}: not an nnlandmark project (no {PROJECT_FILE}; run 'nnlandmark prepare')")
        return cls(root=root.resolve(), **json.loads(path.read_text()))


def _sanitise(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "", name) or "Landmarks"


def _free_dataset_id(folders: NnunetFolders) -> int:
    used = set()
    for base in (folders.raw, folders.preprocessed, folders.results):
        if base.is_dir():
            used |= {int(m[1]) for p in base.iterdir() if (m := re.match(r"Dataset(\d+)_", p.name))}
    candidate = FIRST_DATASET_ID
    while candidate in used:
        candidate += 1
    return candidate


def check_dataset(dataset_dir, progress: bool = True):
    """Every check ``prepare`` makes before it writes anything; returns the dataset.

    :func:`~nnlandmark.data.dataset.load_dataset` with all pixels decoded
    (landmarks closer than a label cube need no check: the nnU-Net export puts
    them in separate label maps). Raises :class:`DatasetError` listing the
    problems; only reads.
    """
    dataset = load_dataset(dataset_dir, read_pixels=True, progress=progress)
    return dataset


def dataset_warnings(dataset) -> list:
    """What a valid dataset may still fall short of, one line each naming the folder
    (``check`` and ``prepare`` print these; they stop nothing: a small set is a fine test set)."""
    if len(dataset.cases) < NUM_FOLDS:
        return [f"{dataset.root}: {len(dataset.cases)} cases; training ({NUM_FOLDS}-fold cross-validation) "
                f"needs at least {NUM_FOLDS}"]
    return []


def orientation_summary(orientations: dict, reoriented_to: str | None = CANONICAL_ORIENTATION) -> str:
    """The line ``check`` and ``prepare`` print about the storage orders they saw.

    >>> orientation_summary({"RAS": 24, "LPS": 4, "LAS": 2})
    'orientations: 24 RAS, 4 LPS, 2 LAS; all reoriented to LPS'
    >>> orientation_summary({"RAS": 3}, None)
    'orientations: 3 RAS; exported as stored (project prepared before reorientation)'
    """
    seen = ", ".join(f"{n} {code}" for code, n in orientations.items())
    done = f"all reoriented to {reoriented_to}" if reoriented_to else \
        "exported as stored (project prepared before reorientation)"
    return f"orientations: {seen}; {done}"


def prepare(dataset_dir, project_dir, planner: str = "default", num_processes: int = 2,
            target_spacing=None, progress: bool = True) -> Project:
    """Validate, export, fingerprint, plan and preprocess a landmark dataset.

    Parameters
    ----------
    dataset_dir : path
        A dataset in the layout of ``docs/dataset_layout.md``. Only read.
    project_dir : path
        Where everything is written. A rerun on the same project resumes.
    planner : {'default', 'resenc-m', 'resenc-l'}
        nnU-Net's default planner or its residual-encoder M/L presets.
    num_processes : int
        Worker processes for fingerprinting and preprocessing.
    target_spacing : float or (x, y, z) mm, optional
        Overrides the spacing nnU-Net plans (coarser = faster on a CPU).

    Raises
    ------
    DatasetError
        Listing every problem with the dataset, before anything is written; also
        when a rerun finds that the dataset's cases differ from those the
        project was prepared with (a changed landmark file is re-exported and
        re-preprocessed; added or removed cases need a new project).
    """
    if planner not in planning.PLANNERS:
        raise InvalidInput(f"unknown planner '{planner}', choose from {sorted(planning.PLANNERS)}")
    if target_spacing is not None:
        target_spacing = [float(target_spacing)] if isinstance(target_spacing, (int, float)) \
            else [float(s) for s in target_spacing]
        if len(target_spacing) == 1:  # one value for every axis
            target_spacing = target_spacing * 3
        if len(target_spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in target_spacing):
            raise InvalidInput(f"--spacing: one or three positive numbers (mm), got {target_spacing}")
    if not (isinstance(num_processes, int) and num_processes >= 1):
        raise InvalidInput(f"--num-processes: must be a whole number of at least 1, got {num_processes}")
    dataset_dir, project_dir = Path(dataset_dir).resolve(), Path(project_dir).resolve()
    if project_dir.exists() and not project_dir.is_dir():
        raise InvalidInput(f"{project_dir}: is a file; the project needs a folder (a new path, or an earlier project)")
    if project_dir.is_dir() and any(project_dir.iterdir()) and not (project_dir / PROJECT_FILE).exists():
        raise OutputExists(f"{project_dir}: not empty and not an nnlandmark project; give a new or empty folder")
    check_writable(project_dir)
    if project_dir == dataset_dir or dataset_dir in project_dir.parents:
        raise DatasetError(f"{project_dir}: the project folder must not be inside the dataset folder")
    dataset = check_dataset(dataset_dir, progress=progress)
    case_ids = sorted(c.case_id for c in dataset.cases)

    if (project_dir / PROJECT_FILE).exists():
        project = Project.load(project_dir)
        if Path(project.dataset_dir) != dataset_dir:
            raise DatasetError(f"{project_dir}: project was prepared from {project.dataset_dir}, not {dataset_dir}")
        if project.plans_file.exists() and (project.planner, project.target_spacing) != (planner, target_spacing):
            raise DatasetError(f"{project_dir}: already planned with planner '{project.planner}' and target "
                               f"spacing {project.target_spacing}; use a new project folder to plan differently")
        if project.cases is not None and project.cases != case_ids:
            # the fingerprint, plans and cross-validation splits were made for the old cases;
            # exporting a different set into them would train on stale or missing cases
            added, removed = sorted(set(case_ids) - set(project.cases)), sorted(set(project.cases) - set(case_ids))
            raise DatasetError(f"{project_dir}: the dataset's cases changed since this project was prepared "
                               f"(added {added}, removed {removed}); prepare a new project folder")
        if project.spacing != dataset.spec.spacing:
            raise DatasetError(f"{dataset_dir / 'dataset.json'}: 'spacing' is {dataset.spec.spacing}, but the project "
                               f"was prepared with {project.spacing}; prepare a new project folder")
        project.planner, project.target_spacing = planner, target_spacing
    else:
        project_dir.mkdir(parents=True, exist_ok=True)
        folders = NnunetFolders.for_project(project_dir)
        dataset_id = _free_dataset_id(folders)
        project = Project(root=project_dir, dataset_dir=str(dataset_dir), dataset_id=dataset_id,
                          dataset_name=f"Dataset{dataset_id:03d}_{_sanitise(dataset.spec.name)}",
                          landmarks=dataset.spec.landmarks, pairs=dataset.spec.pairs,
                          biometry=dataset.spec.biometry, channels=dataset.spec.channels, planner=planner,
                          target_spacing=target_spacing, cases=case_ids, spacing=dataset.spec.spacing,
                          orientation=CANONICAL_ORIENTATION)
    project.orientations = dataset.orientations()
    project.save()
    if project.orientation:  # the network sees every scan in one storage order (see geometry.py)
        dataset = dataset.canonical()

    folders = project.folders
    planar = dataset.cases[0].grid.is_2d  # a dataset is 2D or 3D throughout (load_dataset checks)
    nnunet_spacing = target_spacing
    if planar and target_spacing is not None:
        # 2D images: the spacing is the pixels'; nnU-Net never resamples across their one slice
        nnunet_spacing = target_spacing[:2] + [PLANAR_SLICE_SPACING]
    # cube sizes follow the spacing the cases will be resampled to, when it is known already
    if project.plans_file.exists():
        known_spacing = planning.planned_spacing_xyz(project.plans(), planning.full_configuration(project.plans()))
    else:
        known_spacing = None if target_spacing is None else target_spacing[:2] + [
            float("nan") if planar else target_spacing[2]]
    write_raw_dataset(dataset, project.raw_dir(), known_spacing, progress=progress)
    with nnunet_environment(folders), nnunet_log(project.log_file):
        planning.extract_fingerprint(project.dataset_name, num_processes)
        if not project.plans_file.exists():
            planning.plan(project.dataset_name, planner, nnunet_spacing)
        # 2D images: nnU-Net plans '2d' only; the cascade is planned from it (2d_global, 2d_local)
        plans = planning.ensure_cascade(project.plans_file, len(case_ids))
        full = planning.full_configuration(plans)
        # cubes in cases much finer than the planned spacing would vanish in resampling: enlarge them
        write_raw_dataset(dataset, project.raw_dir(), planning.planned_spacing_xyz(plans, full), progress=False)
        planning.preprocess(folders, project.dataset_name, plans, num_processes, progress, configuration=full)
        global_name, local_name = planning.cascade_configurations(plans)
        stages = [(global_name, planning.GLOBAL_LABELS)]
        if planning.own_local_data(plans):  # 2D images with pixels much finer than the global stage's
            stages.append((local_name, planning.LOCAL_LABELS))
        for configuration, labels in stages:
            if configuration in plans["configurations"]:
                # a cascade stage with its own, coarser spacing has its own (larger) cubes
                write_raw_dataset(dataset, project.raw_dir(), planning.planned_spacing_xyz(plans, configuration),
                                  progress=False, labels=labels)
                planning.preprocess(folders, project.dataset_name, plans, num_processes, progress,
                                    configuration=configuration, labels=labels)
    return project
