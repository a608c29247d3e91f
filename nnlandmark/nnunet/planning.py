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
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nnlandmark.geometry import array_to_itk_index, itk_to_array_order, untranspose
from nnlandmark.errors import InvalidInput
from nnlandmark.files import atomic_write_text
from nnlandmark.nnunet.console import captured, console_stream

CONFIGURATION = "3d_fullres"
#: nnU-Net's configuration of 2D images (one slice each): it plans no ``3d_fullres`` for them
PLANAR_CONFIGURATION = "2d"

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
    with captured():  # its own progress bar and its workers' "Using <class ...> as reader/writer"
        extractor = DatasetFingerprintExtractor(dataset_name, num_processes, verbose=False)
        return extractor.run(overwrite_existing=False)


def plan(dataset_name: str, planner: str = "default", target_spacing=None) -> dict:
    """Run an nnU-Net planner; returns the plans (also saved in nnUNet_preprocessed).

    ``target_spacing`` (mm, ITK x, y, z order) overrides the spacing nnU-Net
    would pick for 3d_fullres, e.g. 2.5 mm so that a CPU can train in minutes;
    patch size, batch size and topology are still planned for it by nnU-Net.
    """
    if planner not in PLANNERS:
        raise InvalidInput(f"unknown planner '{planner}', choose from {sorted(PLANNERS)}")
    planner_class = _import(PLANNERS[planner][0])
    kwargs = {}
    if target_spacing is not None:
        # nnU-Net's spacing is in array order (z, y, x) before its own transpose
        kwargs["overwrite_target_spacing"] = itk_to_array_order(target_spacing)
    with _planning_threads(), captured():  # the planner prints each configuration's whole plans dictionary
        return planner_class(dataset_name, suppress_transpose=False, **kwargs).plan_experiment()


@contextmanager
def _planning_threads():
    """nnU-Net's planner sets torch's thread count to ``nnUNet_n_proc_DA`` while it sizes networks, and
    0 (how training runs without augmentation workers) is no thread count: torch raises. Plan with 1."""
    value = os.environ.get("nnUNet_n_proc_DA")
    try:
        low = value is not None and int(value) < 1
    except ValueError:
        raise InvalidInput(f"nnUNet_n_proc_DA: must be a whole number of processes, got {value!r}") from None
    if low:
        os.environ["nnUNet_n_proc_DA"] = "1"
    try:
        yield
    finally:
        if low:
            os.environ["nnUNet_n_proc_DA"] = value


def is_planar(plans: dict) -> bool:
    """True for plans of 2D images: nnU-Net found one slice in the median image and planned
    ``2d`` only (see :data:`nnlandmark.nnunet.raw.PLANAR_SLICE_SPACING`)."""
    return CONFIGURATION not in plans["configurations"] and PLANAR_CONFIGURATION in plans["configurations"]


def full_configuration(plans: dict) -> str:
    """The configuration of a single full-resolution network: ``3d_fullres``, or ``2d`` for 2D images."""
    return PLANAR_CONFIGURATION if is_planar(plans) else CONFIGURATION


def planned_spacing_xyz(plans: dict, configuration: str = CONFIGURATION) -> list:
    """The spacing (mm) the plans resample to, in ITK (x, y, z) order.

    nnU-Net stores it in its transposed array order: entry ``a`` belongs to
    array axis ``transpose_forward[a]``, and array axes are (z, y, x). A ``2d``
    configuration has no entry for the first transposed axis, the slices, which
    it never resamples: NaN there.
    """
    transposed = list(plans["configurations"][configuration]["spacing"])
    if len(transposed) == 2:
        transposed = [float("nan")] + transposed
    return array_to_itk_index(untranspose(transposed, plans["transpose_forward"])).tolist()


def plans_identifier(planner: str) -> str:
    return PLANNERS[planner][1]


def preprocessed_folder(folders, dataset_name: str, plans: dict, configuration: str = CONFIGURATION) -> Path:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    identifier = PlansManager(plans).get_configuration(configuration).data_identifier
    return Path(folders.preprocessed) / dataset_name / identifier


def planned_batch_size(plans: dict, configuration: str = CONFIGURATION) -> int:
    """The batch size nnU-Net planned for ``configuration`` (inherited settings resolved);
    under DDP it is split across the processes."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    return int(PlansManager(plans).get_configuration(configuration).batch_size)


def _preprocess_one(args) -> str:
    case_id, image_files, label_file, plans, dataset_json, out_dir, configuration_name = args
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    plans_manager = PlansManager(plans)
    configuration = plans_manager.get_configuration(configuration_name)
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


def preprocess(folders, dataset_name: str, plans: dict, num_processes: int = 2, progress: bool = True,
               configuration: str = CONFIGURATION, labels: str = "labelsTr") -> Path:
    """Preprocess every raw case not yet done for ``configuration``; returns the preprocessed folder.

    ``labels`` names the raw label folder (the global stage has its own, with
    cubes sized for its coarser spacing).
    """
    raw = Path(folders.raw) / dataset_name
    dataset_json = json.loads((raw / "dataset.json").read_text())
    shutil.copyfile(raw / "dataset.json", Path(folders.preprocessed) / dataset_name / "dataset.json")
    out_dir = preprocessed_folder(folders, dataset_name, plans, configuration)
    out_dir.mkdir(parents=True, exist_ok=True)
    ending = dataset_json["file_ending"]
    n_channels = len(dataset_json["channel_names"])
    jobs = []
    for label_file in sorted((raw / labels).glob(f"*{ending}")):
        case_id = label_file.name[: -len(ending)]
        images = [str(raw / "imagesTr" / f"{case_id}_{c:04d}{ending}") for c in range(n_channels)]
        done = out_dir / f"{case_id}.pkl"
        # done, unless the raw case was re-exported since (a corrected landmark file)
        if done.exists() and done.stat().st_mtime >= max(Path(f).stat().st_mtime for f in [label_file, *images]):
            continue
        jobs.append((case_id, images, str(label_file), plans, dataset_json, str(out_dir), configuration))
    if not jobs:
        return out_dir
    with captured():  # nnU-Net's reader and preprocessor print, in this process and in the workers
        bar = tqdm(total=len(jobs), desc=f"preprocessing {configuration}", disable=not progress,
                   file=console_stream())
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


def case_grids(properties: dict, transpose_forward, preprocessed_shape):
    """``(PreprocessedGrid, ImageGrid)`` of a case from nnU-Net's properties: how its preprocessed
    array maps to the original image, and where that image lies in the world."""
    from nnlandmark.geometry import ImageGrid, PreprocessedGrid, array_to_itk_index
    pgrid = PreprocessedGrid(transpose_forward=transpose_forward,
                             crop_start=[b[0] for b in properties["bbox_used_for_cropping"]],
                             cropped_shape=properties["shape_after_cropping_and_before_resampling"],
                             preprocessed_shape=preprocessed_shape)
    sitk_stuff = properties["sitk_stuff"]
    grid = ImageGrid(size=tuple(int(s) for s in array_to_itk_index(properties["shape_before_cropping"])),
                     spacing=tuple(sitk_stuff["spacing"]), origin=tuple(sitk_stuff["origin"]),
                     direction=np.reshape(sitk_stuff["direction"], (3, 3)))
    return pgrid, grid


def read_case_properties(preprocessed_dir: Path, case_id: str) -> dict:
    from batchgenerators.utilities.file_and_folder_operations import load_pickle
    return load_pickle(str(Path(preprocessed_dir) / f"{case_id}.pkl"))


def case_direction(preprocessed_dir: Path, case_id: str) -> np.ndarray:
    """The 3x3 direction matrix of a preprocessed case's original image (ITK: the
    columns are the world directions of its i, j, k axes)."""
    properties = read_case_properties(preprocessed_dir, case_id)
    return np.reshape(properties["sitk_stuff"]["direction"], (3, 3))


def load_preprocessed_case(preprocessed_dir: Path, case_id: str) -> tuple:
    """``(data, seg, properties)`` of one preprocessed case, as nnU-Net's data loader reads it.

    ``data`` (C, ...) and ``seg`` (label maps, ...) are nnU-Net's lazy arrays
    (blosc2 or memory-mapped): indexing reads them, e.g. ``np.asarray(seg[:])``
    reads the labels without decompressing the image.
    """
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    folder = str(preprocessed_dir)
    data, seg, _, properties = infer_dataset_class(folder)(folder, identifiers=[case_id]).load_case(case_id)
    return data, seg, properties


# --- the coarse-to-fine cascade ------------------------------------------------------------
GLOBAL_CONFIGURATION = "3d_global"
LOCAL_CONFIGURATION = "3d_local"
#: the global stage sees the median scan whole in about this many voxels (48^3) ...
GLOBAL_VOXELS = 48 ** 3
#: ... and no axis longer than this
GLOBAL_MAX_EDGE = 64
#: local patches are centred this many global voxels (at most, per axis) away from the landmark in
#: training, about twice the error a global stage makes once it localises (half a voxel to one voxel)
LOCAL_REACH = 2.0
#: half the local patch's edge, in global voxels: the reach plus as much again for context
LOCAL_HALF_WIDTH = 4.0
LOCAL_MIN_EDGE = 16
#: the global stage's first feature width (nnU-Net's is 32): it sees whole scans at a coarse spacing
#: and only has to place landmarks to a voxel or two, so a narrower network trains about three times
#: more iterations in the same time on a CPU
GLOBAL_BASE_FEATURES = 16
LOCAL_MAX_BATCH = 8
MIN_BATCH = 2  # nnU-Net's smallest batch
DATASET_FRACTION = 0.05  # nnU-Net's rule: one batch holds at most 5 % of the dataset's voxels

# --- the same cascade for 2D images (nnU-Net's '2d' plan): the same rules with in-plane budgets
PLANAR_GLOBAL_CONFIGURATION = "2d_global"
PLANAR_LOCAL_CONFIGURATION = "2d_local"
#: the global stage sees the median 2D image whole in about this many pixels (128^2) ...
GLOBAL_PIXELS = 128 ** 2
#: ... and no edge longer than this
GLOBAL_MAX_EDGE_2D = 192
#: a 2D local stage's pixels are at most this many times finer than the global stage's: finer
#: pixels than that place a landmark no better than the doctors who marked it, on a smaller view
#: (radiographs of 0.1 mm pixels: 0.2 mm, a 64^2 patch of 13 mm; 2 * LOCAL_HALF_WIDTH global pixels)
LOCAL_SUBDIVISION_2D = 8
#: a 2D stage's largest batch (nnU-Net's 5 % rule caps it below that on small datasets): a 64^2
#: patch costs about what a 16^3 one does, and a whole 2D image at 128^2 a seventh of a 48^3 volume
MAX_BATCH_2D = 32


def _global_spacing(spacing, median_shape) -> np.ndarray:
    """Coarse enough that the median scan fits in about GLOBAL_VOXELS, never finer than ``spacing``.

    One isotropic spacing ``(volume / GLOBAL_VOXELS) ** (1/3)`` for the median scan's
    extent, raised per axis where the scan is long (at most GLOBAL_MAX_EDGE voxels)
    or where the full-resolution spacing is coarser already (thick slices stay thick;
    their voxel budget is not re-spread over the other axes).

    >>> _global_spacing([1.0, 1.0, 1.0], [192, 192, 192]).tolist()
    [4.0, 4.0, 4.0]
    >>> _global_spacing([5.0, 0.5, 0.5], [20, 512, 512]).tolist()
    [5.0, 4.0, 4.0]
    >>> _global_spacing([2.0, 2.0, 2.0], [48, 48, 48]).tolist()
    [2.0, 2.0, 2.0]

    A 2D plan (two in-plane axes) gets about GLOBAL_PIXELS, no edge over GLOBAL_MAX_EDGE_2D:

    >>> _global_spacing([0.1, 0.1], [2400, 1935]).tolist()  # a cephalogram: 143 x 115 pixels
    [1.683589, 1.683589]
    >>> _global_spacing([0.1, 0.1], [4000, 1000]).tolist()  # long and narrow: 192 x 64, the long axis coarser
    [2.083333, 1.5625]
    """
    spacing, median_shape = np.asarray(spacing, float), np.asarray(median_shape, float)
    extent = spacing * median_shape
    dims = len(spacing)
    # a 2D plan has two axes (the one slice is never resampled): the same rule in the plane
    budget, max_edge = (GLOBAL_VOXELS, GLOBAL_MAX_EDGE) if dims == 3 else (GLOBAL_PIXELS, GLOBAL_MAX_EDGE_2D)
    isotropic = (np.prod(extent) / budget) ** (1 / dims)
    return np.round(np.maximum.reduce([spacing, np.full(dims, isotropic), extent / max_edge]), 6)


def _stage_architecture(template: dict, spacing, patch_size, base_features: int) -> tuple[dict, tuple]:
    """nnU-Net's topology rules (pooling, kernel sizes) for a stage's spacing and patch.

    Returns the ``architecture`` entry of a configuration (the network class of
    ``template``, nnU-Net's planned one, with per-stage lists re-sized) and the
    patch size padded to what the network can divide.
    """
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props
    _, pool, conv, patch, _ = get_pool_and_conv_props(list(spacing), list(patch_size), 4, 999999)
    n_stages = len(pool)
    kwargs = dict(template["arch_kwargs"])
    full_stages = kwargs["n_stages"]
    max_features = max(kwargs["features_per_stage"])
    kwargs.update(n_stages=n_stages, kernel_sizes=[list(k) for k in conv], strides=[list(p) for p in pool],
                  features_per_stage=[min(base_features * 2 ** i, max_features) for i in range(n_stages)])
    for key, value in template["arch_kwargs"].items():
        # per-stage lists (convs or residual blocks per stage; the decoder has one entry fewer)
        if key in ("features_per_stage", "kernel_sizes", "strides") or not isinstance(value, (list, tuple)):
            continue
        if len(value) == full_stages:
            kwargs[key] = [value[min(i, full_stages - 1)] for i in range(n_stages)]
        elif len(value) == full_stages - 1:
            kwargs[key] = [value[min(i, full_stages - 2)] for i in range(n_stages - 1)]
    return {**template, "arch_kwargs": kwargs}, tuple(int(p) for p in patch)


def cascade_configurations(plans: dict) -> tuple[str, str]:
    """The names of the cascade's ``(global, local)`` configurations in these plans:
    ``3d_global``/``3d_local``, or ``2d_global``/``2d_local`` for 2D images (:func:`is_planar`)."""
    if is_planar(plans):
        return PLANAR_GLOBAL_CONFIGURATION, PLANAR_LOCAL_CONFIGURATION
    return GLOBAL_CONFIGURATION, LOCAL_CONFIGURATION


def _local_spacing(spacing, global_spacing, planar: bool) -> np.ndarray:
    """The local stage's spacing: the full-resolution one, except that 2D pixels are made at most
    LOCAL_SUBDIVISION_2D times finer than the global stage's (full resolution where that is
    already coarse enough). A volume's local patch has a third axis to pay for, so 3D keeps
    full resolution, as nnU-Net planned it.

    >>> _local_spacing([0.1, 0.1], [1.683, 1.683], planar=True).tolist()  # radiographs: ~0.2 mm
    [0.210375, 0.210375]
    >>> _local_spacing([0.8, 0.8], [1.2, 1.2], planar=True).tolist()  # coarse enough already
    [0.8, 0.8]
    """
    spacing = np.asarray(spacing, float)
    if not planar:
        return spacing
    return np.round(np.maximum(spacing, np.asarray(global_spacing, float) / LOCAL_SUBDIVISION_2D), 6)


def _batch(fraction_of: float, patch, smallest: int, largest: int) -> int:
    """nnU-Net's rule: a batch holds at most DATASET_FRACTION of the dataset's voxels
    (``fraction_of``, at the stage's spacing), within ``[smallest, largest]``."""
    return int(np.clip(DATASET_FRACTION * fraction_of / np.prod(patch), smallest, largest))


def plan_cascade(plans: dict, n_cases: int) -> dict:
    """Add the cascade's two configurations to nnU-Net's plans (returns a new dict).

    Both are derived from nnU-Net's full-resolution plan of the dataset
    (``3d_fullres``, or ``2d`` for 2D images: :func:`full_configuration`), by
    rules, with no per-dataset numbers:

    ``3d_global`` (``2d_global``)
        The whole cropped scan in one patch at a coarse spacing
        (:func:`_global_spacing`): the median scan, padded to what the network
        divides, is the patch. Its own preprocessed data (``data_identifier``).
    ``3d_local`` (``2d_local``)
        A small patch of ``2 * LOCAL_HALF_WIDTH`` global voxels per axis (at
        least LOCAL_MIN_EDGE voxels) at the local spacing
        (:func:`_local_spacing`: the full-resolution one, or for 2D images at
        most LOCAL_SUBDIVISION_2D times finer than the global one, then with
        its own preprocessed data), sampled around landmarks with random
        offsets of up to ``LOCAL_REACH`` global voxels
        (``nnlandmark_max_offset``, in local voxels per axis of the
        preprocessed array): wide enough to hold the global stage's error
        twice over, and to see the landmark with context.

    Networks follow nnU-Net's topology rules for each patch and spacing, with
    the full-resolution plan's network class, feature widths and block counts
    (the global stage starts at GLOBAL_BASE_FEATURES features). Batch sizes
    follow nnU-Net's rule that one batch holds at most 5 % of the dataset's
    voxels, at least 2; the local stage takes at most LOCAL_MAX_BATCH, and
    for 2D images both stages take at most MAX_BATCH_2D (a 3D global stage
    keeps 2: a whole volume per sample). Spacings and shapes are in nnU-Net's
    transposed array order, as in its plans (two in-plane axes for ``2d``).
    """
    plans = json.loads(json.dumps(plans))  # a deep copy that also turns tuples into lists
    planar = is_planar(plans)
    full_name = full_configuration(plans)
    global_name, local_name = cascade_configurations(plans)
    full = plans["configurations"][full_name]
    spacing = np.asarray(full["spacing"], float)
    median = np.asarray(full["median_image_size_in_voxels"], float)
    base = int(full["architecture"]["arch_kwargs"]["features_per_stage"][0])

    g_spacing = _global_spacing(spacing, median)
    g_shape = np.maximum(np.ceil(median * spacing / g_spacing), 1)
    g_arch, g_patch = _stage_architecture(full["architecture"], g_spacing, g_shape, min(base, GLOBAL_BASE_FEATURES))
    g_batch = _batch(n_cases * np.prod(g_shape), g_patch, MIN_BATCH, MAX_BATCH_2D) if planar else MIN_BATCH
    plans["configurations"][global_name] = {
        "inherits_from": full_name, "data_identifier": f"{plans['plans_name']}_{global_name}",
        "spacing": g_spacing.tolist(), "patch_size": list(g_patch),
        "median_image_size_in_voxels": g_shape.tolist(), "batch_size": g_batch, "architecture": g_arch}

    l_spacing = _local_spacing(spacing, g_spacing, planar)
    l_median = np.maximum(np.round(median * spacing / l_spacing), 1)
    l_edge = np.maximum(np.ceil(2 * LOCAL_HALF_WIDTH * g_spacing / l_spacing), LOCAL_MIN_EDGE)
    # a 2D local stage is as narrow as the global one: its batches of small patches then cost about
    # what the global stage's do, and it trains as many steps in its share of the budget (at nnU-Net's
    # 32 features it managed a quarter of them on radiographs, and its median error stayed ~1 mm)
    l_arch, l_patch = _stage_architecture(full["architecture"], l_spacing, l_edge,
                                          min(base, GLOBAL_BASE_FEATURES) if planar else base)
    l_batch = _batch(n_cases * np.prod(l_median), l_patch, MIN_BATCH, MAX_BATCH_2D if planar else LOCAL_MAX_BATCH)
    offset = np.round(LOCAL_REACH * g_spacing / l_spacing, 3).tolist()
    local = {"inherits_from": full_name, "patch_size": list(l_patch), "batch_size": l_batch, "architecture": l_arch,
             # per axis of the preprocessed array, which a 2D image's one slice leads (never shifted)
             "nnlandmark_max_offset": [0.0] * planar + offset}
    if not np.allclose(l_spacing, spacing):
        local.update({"data_identifier": f"{plans['plans_name']}_{local_name}", "spacing": l_spacing.tolist(),
                      "median_image_size_in_voxels": l_median.tolist()})
    plans["configurations"][local_name] = local
    return plans


def own_local_data(plans: dict) -> bool:
    """True when the cascade's local stage has preprocessed data (and label cubes) of its own:
    its spacing differs from the full-resolution one (2D images with fine pixels)."""
    _, local_name = cascade_configurations(plans)
    return "data_identifier" in plans["configurations"].get(local_name, {})


GLOBAL_LABELS = "labelsTr_global"  # raw label cubes sized for the global stage's spacing
LOCAL_LABELS = "labelsTr_local"  # ... and for the local stage's, where it has its own (own_local_data)


def ensure_cascade(plans_file: Path, n_cases: int) -> dict:
    """The plans in ``plans_file``, with the cascade's configurations added (and saved) if missing."""
    plans_file = Path(plans_file)
    plans = json.loads(plans_file.read_text())
    if all(name in plans["configurations"] for name in cascade_configurations(plans)):
        return plans
    plans = plan_cascade(plans, n_cases)
    atomic_write_text(plans_file, json.dumps(plans, indent=4))
    return plans
