"""Train one fold (or all five) of a prepared project."""
from __future__ import annotations

import dataclasses
import json
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch

from nnlandmark.model.description import fold_key
from nnlandmark.model.folder import ModelFolder
from nnlandmark.nnunet import nnunetv2_version
from nnlandmark.nnunet.console import nnunet_log
from nnlandmark.nnunet.paths import NUM_FOLDS, nnunet_environment, read_splits, splits_file
from nnlandmark.nnunet.planning import (CONFIGURATION, GLOBAL_CONFIGURATION, LOCAL_CONFIGURATION,
                                        cascade_configurations, full_configuration, is_planar,
                                        preprocessed_folder)
from nnlandmark.nnunet.raw import SIDECAR
from nnlandmark.planning.project import Project
from nnlandmark.training.presets import STAGE_BUDGET_SHARE, TrainingSettings
from nnlandmark.errors import InvalidInput, MissingPath, OutputExists

#: the nnU-Net configuration each stage trains
STAGE_CONFIGURATIONS = {"fullres": CONFIGURATION, "global": GLOBAL_CONFIGURATION, "local": LOCAL_CONFIGURATION}

#: a schedule this long (iterations per stage) takes a day or more on a CPU: train warns
CPU_DAYS_ITERATIONS = 50_000
CPU_SECONDS_PER_ITERATION = 1.5  # nnU-Net on 2 CPU cores, 48^3 patch, batch 2: 1.38 s measured


def stage_configuration(plans: dict, stage: str) -> str:
    """The nnU-Net configuration a stage trains: the cascade's own (``3d_global``/``3d_local``, or
    ``2d_global``/``2d_local`` for 2D images), or for ``fullres`` nnU-Net's full-resolution one
    (``3d_fullres``, or ``2d``)."""
    if stage == "fullres":
        return full_configuration(plans)
    return dict(zip(("global", "local"), cascade_configurations(plans)))[stage]


def project_settings(project: Project, settings: TrainingSettings) -> TrainingSettings:
    """``settings`` as this project trains them: a project of 2D images (nnU-Net planned ``2d``)
    trains nnU-Net's 2D U-Net in every stage (the cascade by default, ``fullres`` when asked).
    Unchanged for 3D projects and for projects not planned yet (:func:`check_folds` refuses those)."""
    if not project.plans_file.is_file() or not is_planar(project.plans()):
        return settings
    if settings.architecture != "unet":
        raise InvalidInput(f"--architecture {settings.architecture}: a 3D network; the 2D images of "
                           f"{project.root} train nnU-Net's planned 2D U-Net (--architecture unet)")
    return settings


def model_dir_for(project: Project, settings: TrainingSettings) -> Path:
    full = full_configuration(project.plans()) if project.plans_file.is_file() else CONFIGURATION
    return project.folders.results / project.dataset_name / settings.model_name(project.plans_identifier, full)


def settings_for(project_dir, given: dict, continue_training: bool) -> TrainingSettings:
    """The settings of a run from the fields ``given``: the rest are the defaults, or, when a
    run continues, what the earlier run of that model (same preset, architecture,
    configuration and heatmap) saved, so that it resumes with its own schedule."""
    given = {k: v for k, v in given.items() if v is not None}
    saved = {}
    if continue_training:
        identity = {k: given[k] for k in ("preset", "architecture", "configuration", "heatmap") if k in given}
        project = Project.load(project_dir)
        model = ModelFolder(model_dir_for(project, project_settings(project, TrainingSettings(**identity))))
        if model.description_file.is_file():
            saved = model.description.settings
    return TrainingSettings(**{**saved, **given})


def resolve_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("--device cuda was asked for, but torch sees no CUDA device")
    if device not in ("cpu", "cuda"):
        raise InvalidInput(f"device must be 'cpu' or 'cuda', got '{device}'")
    return torch.device(device)


def write_model_description(project: Project, settings: TrainingSettings, model_dir: Path) -> None:
    """The part of a model folder nnU-Net does not write: what the channels mean.

    What other commands stored there (``evaluate-cv``'s presence thresholds)
    is kept; the file is replaced atomically.
    """
    plans = project.plans()
    stages = {stage: stage_configuration(plans, stage) for stage in settings.stages}
    description = {"landmarks": project.landmarks, "pairs": project.pairs, "biometry": project.biometry,
                   "channels": project.channels, "picture_spacing": project.spacing, "planner": project.planner,
                   "plans_identifier": project.plans_identifier, "configuration": stages[settings.stages[-1]],
                   "stages": stages, "settings": settings.to_dict(), "output": settings.output,
                   "mirror": settings.mirroring(project.pairs),
                   "orientation": project.orientation, "nnunetv2_version": nnunetv2_version()}
    ModelFolder(model_dir).update(description)


def _landmark_records(project: Project) -> dict:
    """case id -> {name: world LPS point, or "absent"/"unknown"}, as exported for nnU-Net."""
    return json.loads((project.raw_dir() / SIDECAR).read_text())


def _unknown_landmarks(records: dict) -> dict:
    return {case: [n for n, v in record.items() if v == "unknown"] for case, record in records.items()}


def _world_points(records: dict) -> dict:
    return {case: {n: v for n, v in record.items() if isinstance(v, list)} for case, record in records.items()}


def check_folds(project: Project, folds, settings: TrainingSettings | None = None) -> None:
    """Refuse, before any work, folds that nnU-Net's cross-validation cannot make.

    Without a ``splits_final.json`` nnU-Net splits the prepared cases into five
    folds, which needs at least five cases (and with fewer it would fail deep
    inside scikit-learn). With one, each fold must be listed in it (a fold
    beyond the list would silently become a random 80:20 split).
    """
    if not project.plans_file.is_file():
        raise MissingPath(f"{project.root}: not fully prepared ({project.plans_file.name} missing); "
                                "rerun 'nnlandmark prepare' to finish it")
    plans = project.plans()
    prepared = None
    for stage in (settings or TrainingSettings()).stages:
        configuration = stage_configuration(plans, stage)
        if configuration not in plans["configurations"]:
            raise MissingPath(f"{project.plans_file}: has no '{configuration}' configuration (prepared by an "
                                    "older nnlandmark); rerun 'nnlandmark prepare' on the project to add it")
        folder = preprocessed_folder(project.folders, project.dataset_name, plans, configuration)
        found = {p.name[:-len(".pkl")] for p in folder.glob("*.pkl")} if folder.is_dir() else set()
        prepared = found if prepared is None else prepared & found
    splits = read_splits(project.folders, project.dataset_name)
    if splits is not None:
        path = splits_file(project.folders, project.dataset_name)
        for f in folds:
            if f >= len(splits) or not splits[f].get("train"):
                raise InvalidInput(f"{path}: has no training cases for fold {f} "
                                 f"({len(splits)} folds defined)")
            unknown = sorted((set(splits[f]["train"]) | set(splits[f].get("val", []))) - prepared)
            if unknown:
                raise InvalidInput(f"{path}: fold {f} lists cases that are not prepared: {unknown}")
        return
    n_cases = len(prepared)
    if n_cases < NUM_FOLDS:
        raise InvalidInput(f"{project.root}: {n_cases} prepared case(s); training fold {folds[0]} of the "
                         f"{NUM_FOLDS}-fold cross-validation needs at least {NUM_FOLDS} cases")


def train(project_dir, fold=0, settings: TrainingSettings | dict | None = None, device: str = "cpu",
          continue_training: bool = False, progress: bool = True, num_gpus: int = 1,
          ddp_on_cpu: bool = False, on_curves=None) -> Path:
    """Train ``fold`` (0-4, or ``"all"`` for the five folds in turn); returns the model folder.

    With ``continue_training`` a fold resumes from its latest checkpoint (a
    finished fold is left as it is); without it, an existing fold is refused.
    ``settings`` given as a dict of some fields, or None, takes the other
    fields from the earlier run when continuing (its schedule), else the
    defaults (:func:`settings_for`).

    ``num_gpus`` > 1 (with ``device="cuda"``) trains every stage on that many
    GPUs with nnU-Net's data-parallel path: one process per GPU (NCCL), each
    planned batch split across them, rank 0 alone printing and writing
    (:mod:`nnlandmark.nnunet.distributed`). ``ddp_on_cpu`` is for tests: with
    ``device="cpu"`` the ``num_gpus`` processes run on the CPU with the gloo
    backend, the same code path, no faster (they share the cores). The processes are
    started with ``spawn``: a script calling this needs the ``if __name__ == "__main__":`` guard.

    ``on_curves(curves, folder)`` is called after every epoch with the stage's learning curves
    (those of ``training_curves.json``); :func:`nnlandmark.train` and the CLI pass
    :func:`nnlandmark.report.curves.plot_curves_beside`, which draws ``training_curves.png``
    (this layer imports no report).
    """
    check_num_gpus(num_gpus, device, ddp_on_cpu)
    if not isinstance(settings, TrainingSettings):
        settings = settings_for(project_dir, settings or {}, continue_training)
    project = Project.load(project_dir)
    settings = project_settings(project, settings)
    # the softmax preset learns absence where the dataset annotates some (settings.absence); the
    # resolved value is what nnlandmark.json keeps, so prediction knows how to read the model
    absent = any(v == "absent" for record in _landmark_records(project).values() for v in record.values())
    settings = dataclasses.replace(settings, absence=settings.resolved_absence(absent))
    folds = list(range(NUM_FOLDS)) if fold == "all" else [int(fold)]
    model_dir = model_dir_for(project, settings)
    for f in folds:
        if not 0 <= f < NUM_FOLDS:
            raise InvalidInput(f"fold must be 0-{NUM_FOLDS - 1} or 'all', got {f}")
    check_folds(project, folds, settings)
    settings.sigmas(len(project.landmarks))  # one sigma, or one per landmark
    torch_device = resolve_device(device)  # before anything is written
    iterations = settings.epochs * settings.iterations_per_epoch
    if torch_device.type == "cpu" and settings.time_budget_minutes is None and iterations >= CPU_DAYS_ITERATIONS:
        # nnU-Net's schedule is made for GPUs: on a CPU it is days of work, which a user should choose knowingly
        hours = iterations * len(settings.stages) * CPU_SECONDS_PER_ITERATION / 3600
        warnings.warn(f"{settings.epochs} epochs x {settings.iterations_per_epoch} iterations for each of "
                      f"{len(settings.stages)} stage(s) on the CPU: about {hours:.0f} hours at "
                      f"{CPU_SECONDS_PER_ITERATION} s per iteration (2 CPU cores); --time-budget MINUTES fits "
                      f"the schedule to the time you have")
    if num_gpus > 1:
        check_batch_split(project, settings, num_gpus)
    for f in folds:
        fold_dir = model_dir / fold_key(f)
        if not continue_training and any(fold_dir.glob("checkpoint_*.pth")):
            raise OutputExists(f"{fold_dir}: already has checkpoints; use --continue to resume it "
                                  "or choose another model")
    write_model_description(project, settings, model_dir)
    with nnunet_log(project.log_file):  # the processes of a multi-GPU run inherit it
        if num_gpus > 1:
            from nnlandmark.nnunet.distributed import spawn
            spawn(_train_folds, (project.root, folds, settings, torch_device.type, model_dir, continue_training,
                                 progress, on_curves), num_gpus, backend="nccl" if torch_device.type == "cuda" else "gloo")
        else:
            for f in folds:
                _train_fold(project, f, settings, torch_device, model_dir, continue_training, progress, on_curves)
    for f in folds:
        record_shape_prior(project, f, model_dir)
    return model_dir


def check_num_gpus(num_gpus, device: str, ddp_on_cpu: bool = False) -> None:
    """Refuse a ``--num-gpus`` that cannot run, before any work."""
    if isinstance(num_gpus, bool) or not isinstance(num_gpus, int) or num_gpus < 1:
        raise InvalidInput(f"--num-gpus must be a whole number of at least 1, got {num_gpus!r}")
    if num_gpus == 1:
        return
    if device != "cuda":
        if device == "cpu" and ddp_on_cpu:
            return
        raise InvalidInput(f"--num-gpus {num_gpus} trains on {num_gpus} GPUs, one process each; it needs "
                           f"--device cuda (got --device {device})")
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if visible < num_gpus:
        raise InvalidInput(f"--num-gpus {num_gpus}: torch sees {visible} CUDA device(s) "
                           "(CUDA_VISIBLE_DEVICES decides which it sees)")


def check_batch_split(project: Project, settings: TrainingSettings, num_gpus: int) -> None:
    """nnU-Net's DDP splits each stage's planned batch across the processes: every process
    needs at least one sample."""
    from nnlandmark.nnunet.planning import planned_batch_size
    plans = project.plans()
    for stage in settings.stages:
        batch = planned_batch_size(plans, stage_configuration(plans, stage))
        if batch < num_gpus:
            raise InvalidInput(f"--num-gpus {num_gpus}: the {stage} stage's planned batch size is {batch}, and "
                               f"nnU-Net splits each batch across the GPUs; use at most {batch} GPUs")


def _train_folds(project_dir, folds, settings, device: str, model_dir, continue_training, progress,
                 on_curves=None) -> None:
    """What each process of a multi-GPU run does (:func:`nnlandmark.nnunet.distributed.spawn`):
    every stage of every fold, in step with the others."""
    project = Project.load(project_dir)
    for f in folds:
        _train_fold(project, f, settings, torch.device(device), model_dir, continue_training, progress, on_curves)


def _train_fold(project, fold, settings, device, model_dir, continue_training, progress, on_curves=None) -> None:
    for stage in settings.stages:
        _train_stage(project, fold, stage, settings, device, model_dir, continue_training, progress, on_curves)


def _train_stage(project, fold, stage, settings, device, model_dir, continue_training, progress,
                 on_curves=None) -> None:
    fold_dir = ModelFolder(model_dir).stage_dir(fold, stage)
    if continue_training and (fold_dir / "checkpoint_final.pth").exists():
        print(f"{fold_dir}: already finished")
        return
    workers = settings.augmentation_workers
    if workers is None:
        workers = 0 if device.type == "cpu" else 4  # on CPU, augmentation workers compete with the model for cores
    budget = None if settings.time_budget_minutes is None \
        else 60 * settings.time_budget_minutes * STAGE_BUDGET_SHARE[stage]
    with nnunet_environment(project.folders, augmentation_workers=workers):
        trainer = stage_trainer(project, fold, stage, settings, model_dir, device, output_folder=fold_dir,
                                continue_training=continue_training, time_budget_s=budget, on_curves=on_curves)
        if continue_training:
            # latest is written every save_every epochs; best may be the only one when a run
            # was killed between two of those
            resume_from = next((fold_dir / n for n in ("checkpoint_latest.pth", "checkpoint_best.pth")
                                if (fold_dir / n).is_file()), None)
            if resume_from is not None:
                trainer.load_checkpoint(str(resume_from))
        trainer.run_training(progress=progress)


def stage_trainer(project: Project, fold: int, stage: str, settings: TrainingSettings, model_dir, device="cpu", *,
                  output_folder=None, continue_training: bool = False, time_budget_s: float | None = None,
                  on_curves=None):
    """nnU-Net's trainer for one stage of a fold, set up for this project's landmarks and ``settings``.

    Call it inside :func:`nnlandmark.nnunet.paths.nnunet_environment` (nnU-Net
    finds its folders there). Checkpoints go to ``output_folder`` (default
    ``model_dir/fold_N``); see :meth:`nnlandmark.nnunet.trainer.LandmarkTrainer.configure`.
    """
    from nnlandmark.nnunet.trainer import make_trainer
    from nnlandmark.training.batches import LandmarkBatches
    plans = project.plans()
    configuration = stage_configuration(plans, stage)
    records = _landmark_records(project)
    learned = settings.learned_sigmas(len(project.landmarks))  # None unless heatmap="adaptive"
    batches = LandmarkBatches(settings, project.landmarks, project.pairs,
                              preprocessed_folder(project.folders, project.dataset_name, plans, configuration),
                              plans["transpose_forward"], unknown_landmarks=_unknown_landmarks(records),
                              world_points=_world_points(records) if settings.exact_targets else None,
                              learned_sigmas=learned)
    trainer = make_trainer(project.folders, project.dataset_name, plans, configuration, fold, device,
                           continue_training=continue_training)
    on_end = None if learned is None else partial(record_learned_sigmas, model_dir, fold, stage, project.landmarks,
                                                  learned)
    trainer.configure(training_recipe(settings, len(project.landmarks), batches, learned, on_end, on_curves), model_dir,
                      stage=stage, time_budget_s=time_budget_s, output_folder=output_folder)
    return trainer


def training_recipe(settings: TrainingSettings, num_landmarks: int, prepare_batch, learned_sigmas=None,
                    on_end=None, on_curves=None):
    """What nnU-Net's trainer needs of ``settings``, as plain values and callables
    (:class:`nnlandmark.nnunet.trainer.TrainingRecipe`); ``learned_sigmas`` (the same module
    ``prepare_batch`` renders its targets with) are learned with the network."""
    from nnlandmark.nnunet.trainer import TrainingRecipe
    return TrainingRecipe(num_landmarks=num_landmarks, architecture=settings.architecture, epochs=settings.epochs,
                          iterations_per_epoch=settings.iterations_per_epoch, val_iterations=settings.val_iterations,
                          save_every=settings.save_every, lr=settings.lr, optimizer=settings.optimizer,
                          schedule=settings.schedule, loss=settings.loss_function(learned_sigmas),
                          prepare_batch=prepare_batch, on_curves=on_curves,
                          extra_parameters=() if learned_sigmas is None else (learned_sigmas,), on_end=on_end)


def record_learned_sigmas(model_dir, fold: int, stage: str, landmark_names, learned_sigmas, folder=None) -> dict:
    """Write a stage's learned sigmas into the model's description and return them:
    ``learned_sigmas`` -> ``fold_N`` -> stage -> landmark -> sigma in that stage's voxels
    (other folds' and stages' entries are kept). ``folder`` (the stage's checkpoint folder,
    as the trainer's ``on_end`` passes it) is not needed."""
    model = ModelFolder(model_dir)
    recorded = model.description.learned_sigmas if model.description_file.is_file() else {}
    values = learned_sigmas().detach().cpu().tolist()
    recorded.setdefault(fold_key(fold), {})[stage] = {n: round(v, 4) for n, v in zip(landmark_names, values)}
    model.update({"learned_sigmas": recorded})
    return recorded


def record_shape_prior(project: Project, fold: int, model_dir) -> dict | None:
    """Write the shape prior of fold ``fold``'s training cases (:func:`~nnlandmark.model.shape.fit_shape_prior`)
    into the model's description: ``shape_prior`` -> ``fold_N`` (other folds' entries are kept);
    nothing when the landmarks are too few for one."""
    from nnlandmark.model.shape import fit_shape_prior
    splits = read_splits(project.folders, project.dataset_name)
    if splits is None or fold >= len(splits):
        return None
    points = _world_points(_landmark_records(project))
    shapes = [[points[case].get(name, [np.nan] * 3) for name in project.landmarks]
              for case in splits[fold]["train"] if case in points]
    prior = fit_shape_prior(shapes)
    if prior is None:
        return None
    model = ModelFolder(model_dir)
    recorded = model.description.shape_prior
    recorded[fold_key(fold)] = prior
    model.update({"shape_prior": recorded})
    return prior
