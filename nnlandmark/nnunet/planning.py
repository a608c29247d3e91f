"""nnU-Net fingerprinting, planning and preprocessing, driven case by case.

We call nnU-Net's own fingerprint extractor, experiment planners and
``DefaultPreprocessor.run_case_save``. Only the loop over cases is ours: nnU-Net's
``DefaultPreprocessor.run`` deletes its output folder first, whereas this loop
skips cases that are already preprocessed (and not re-exported since), so an
interrupted ``prepare`` resumes. Every case is written to a temporary folder and
moved into place, properties file last, so a killed run never leaves a
half-written case behind.
"""
from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path

from tqdm import tqdm

from nnlandmark.geometry import array_to_itk_index, untranspose

CONFIGURATION = "3d_fullres"

#: planner preset -> (nnU-Net planner class path, plans identifier)
PLANNERS = {
    "default": ("nnunetv2.experiment_planning.experiment_planners.default_experiment_planner.ExperimentPlanner",
                "nnUNetPlans"),
    "resenc-m": ("nnunetv2.experiment_planning.experiment_planners.residual_unets."
                 "residual_encoder_unet_planners.nnUNetPlannerResEncM", "nnUNetResEncUNetMPlans"),
    "resenc-l": ("nnunetv2.experiment_planning.experiment_planners.residual_unets."
                 "residual_encoder_unet_planners.nnUNetPlannerResEncL", "nnUNetResEncUNetLPlans"),
}


def _import(path: str):
    module, name = path.rsplit(".", 1)
    return getattr(__import__(module, fromlist=[name]), name)


def extract_fingerprint(dataset_name: str, num_processes: int) -> dict:
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    extractor = DatasetFingerprintExtractor(dataset_name, num_processes, verbose=False)
    return extractor.run(overwrite_existing=False)


def plan(dataset_name: str, planner: str = "default", target_spacing=None) -> dict:
    """Run an nnU-Net planner; returns the plans (also saved in nnUNet_preprocessed).

    ``target_spacing`` (mm, ITK x, y, z order) overrides the spacing nnU-Net
    would pick for 3d_fullres, e.g. 2.5 mm so that a CPU can train in minutes;
    patch size, batch size and topology are still planned for it by nnU-Net.
    """
    if planner not in PLANNERS:
        raise ValueError(f"unknown planner '{planner}', choose from {sorted(PLANNERS)}")
    planner_class = _import(PLANNERS[planner][0])
    kwargs = {}
    if target_spacing is not None:
        # nnU-Net's spacing is in array order (z, y, x) before its own transpose
        kwargs["overwrite_target_spacing"] = [float(s) for s in reversed(target_spacing)]
    return planner_class(dataset_name, suppress_transpose=False, **kwargs).plan_experiment()


def planned_spacing_xyz(plans: dict) -> list:
    """The spacing (mm) the plans resample to, in ITK (x, y, z) order.

    nnU-Net stores it in its transposed array order: entry ``a`` belongs to
    array axis ``transpose_forward[a]``, and array axes are (z, y, x).
    """
    transposed = plans["configurations"][CONFIGURATION]["spacing"]
    return array_to_itk_index(untranspose(transposed, plans["transpose_forward"])).tolist()


def plans_identifier(planner: str) -> str:
    return PLANNERS[planner][1]


def preprocessed_folder(folders, dataset_name: str, plans: dict) -> Path:
    return Path(folders.preprocessed) / dataset_name / plans["configurations"][CONFIGURATION]["data_identifier"]


def _preprocess_one(args) -> str:
    case_id, image_files, label_file, plans, dataset_json, out_dir = args
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    plans_manager = PlansManager(plans)
    configuration = plans_manager.get_configuration(CONFIGURATION)
    out_dir = Path(out_dir)
    tmp = out_dir / f".tmp_{case_id}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    DefaultPreprocessor(verbose=False).run_case_save(str(tmp / case_id), image_files, label_file, plans_manager,
                                                     configuration, dataset_json)
    written = sorted(tmp.iterdir(), key=lambda p: p.suffix == ".pkl")  # properties last marks "done"
    for f in written:
        f.replace(out_dir / f.name)
    tmp.rmdir()
    return case_id


def preprocess(folders, dataset_name: str, plans: dict, num_processes: int = 2, progress: bool = True) -> Path:
    """Preprocess every raw case not yet done; returns the preprocessed folder."""
    raw = Path(folders.raw) / dataset_name
    dataset_json = json.loads((raw / "dataset.json").read_text())
    shutil.copyfile(raw / "dataset.json", Path(folders.preprocessed) / dataset_name / "dataset.json")
    out_dir = preprocessed_folder(folders, dataset_name, plans)
    out_dir.mkdir(parents=True, exist_ok=True)
    ending = dataset_json["file_ending"]
    n_channels = len(dataset_json["channel_names"])
    jobs = []
    for label_file in sorted((raw / "labelsTr").glob(f"*{ending}")):
        case_id = label_file.name[: -len(ending)]
        images = [str(raw / "imagesTr" / f"{case_id}_{c:04d}{ending}") for c in range(n_channels)]
        done = out_dir / f"{case_id}.pkl"
        # done, unless the raw case was re-exported since (a corrected landmark file)
        if done.exists() and done.stat().st_mtime >= max(Path(f).stat().st_mtime for f in [label_file, *images]):
            continue
        jobs.append((case_id, images, str(label_file), plans, dataset_json, str(out_dir)))
    if not jobs:
        return out_dir
    bar = tqdm(total=len(jobs), desc="preprocessing", disable=not progress)
    if num_processes <= 1:
        for job in jobs:
            _preprocess_one(job)
            bar.update()
    else:
        with multiprocessing.get_context("spawn").Pool(min(num_processes, len(jobs))) as pool:
            for _ in pool.imap_unordered(_preprocess_one, jobs):
                bar.update()
    bar.close()
    return out_dir


def read_case_properties(preprocessed_dir: Path, case_id: str) -> dict:
    from batchgenerators.utilities.file_and_folder_operations import load_pickle
    return load_pickle(str(Path(preprocessed_dir) / f"{case_id}.pkl"))
