"""Predict landmarks of new images in world coordinates.

For each case: nnU-Net preprocessing, heatmaps averaged over folds (and, for a
model trained with left-right mirroring, over the image and its mirror image
with paired landmarks swapped), decoding *in the preprocessed grid*, then the
exact map back to the original voxel index and to world LPS millimetres
(:mod:`nnlandmark.geometry`).

A cascade model (the default) predicts in two steps: its global stage sees
the whole scan at a coarse spacing and gives every landmark a first position;
its local stage then sees one full-resolution patch per landmark, centred
there, and places the landmark within it. Only these patches are ever
computed at full resolution. A ``fullres`` model (the MIDL method) runs
nnU-Net's sliding window over the whole scan at full resolution.

The network's output is read as the preset says: a ``softmax`` model's
channels become probability distributions over the voxels (softmax over each
channel), a ``cone``/``v1`` model's sigmoid heatmaps.

Presence: the score of a landmark is what its decoder reports: for the
default ``mass`` decoder of a softmax model, the probability that the
landmark lies within 2 voxels of the peak (for a softmax model that learned
absence, ``settings.absence``, its present probability ``1 - p(absent)``
instead, thresholded at 0.5 until ``evaluate-cv`` calibrates it); for the other decoders, the
heatmap peak (a sigmoid value for cone/v1 models). When
the model folder's ``nnlandmark.json`` has ``presence_thresholds`` (written by
``nnlandmark evaluate-cv``, see :mod:`nnlandmark.evaluation.cross_validation`),
a landmark scoring below its threshold is written as absent: ``present: false``,
no position, the score kept. Landmarks without a threshold are always present.

Outputs per case (written atomically: temporary file, then rename):

``<case>.json``
    ``{name: {"world_lps_mm": [x, y, z], "voxel_index": [i, j, k], "score": s, "present": true,
    "uncertainty_mm": u, "radius_95_mm": r}}``;
    ``voxel_index`` is the continuous ITK index in the input image; an absent
    landmark has ``present: false`` and null position, index and radius.
    ``uncertain``, ``case_lost`` and ``case_uncertain`` (in every landmark's entry: the record
    maps landmark names only) say whether this landmark's spread is far above the usual and
    whether so many of the case's are that the case is lost, which also prints one warning
    naming the case (:mod:`nnlandmark.inference.lost`).
    ``uncertainty_mm`` is the raw spread of the stage that placed the point
    and ``radius_95_mm`` the radius calibrated by ``evaluate-cv --coverage 0.95``
    to hold the true landmark in 95 % of cases (null for an uncalibrated model;
    another coverage gives another name, e.g. ``radius_90_mm``); see
    :mod:`nnlandmark.inference.uncertainty`.
``<case>.mrk.json``
    a 3D Slicer markups file that opens on top of the input image; each
    control point's ``description`` reads ``uncertainty_mm=u; radius_95_mm=r``.
``predictions.csv``
    one row per case and landmark (``uncertainty_mm``, the radius, then ``uncertain``, ``case_lost``,
    ``case_uncertain``).
``<case>_heatmaps.nii.gz`` (``save_heatmaps``)
    the sigmoid heatmaps in the preprocessed grid, one vector component per
    landmark, placed in world space so that they overlay the input in Slicer.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from nnlandmark.data.dataset import CHANNEL_SUFFIX, discover_images
from nnlandmark.data.images import IMAGE_SUFFIXES, canonical_image, image_name, place, read_image, read_image_grid
from nnlandmark.data.pairs import left_right_axis, swap_permutation
from nnlandmark.data.formats.json_formats import write_markups_json
from nnlandmark.data.landmarks import Landmarks
from nnlandmark.errors import DatasetError, InvalidInput, MissingPath, OutputExists
from nnlandmark.geometry import (ImageGrid, canonical_reorientation, is_mirrored, orientation_code,
                                 patch_start, patch_to_preprocessed, shared_patch_starts, preprocessed_image_grid,
                                 preprocessed_to_world, reoriented_grid, world_to_index, world_to_preprocessed)
from nnlandmark.inference.decoding import DECODERS, decode
from nnlandmark.inference.outputs import (SUMMARY_FILE, atomic_write, check_case_names, check_not_inside_inputs,
                                          check_parts, clear_outputs, part_cases, plan_outputs, previous_outputs,
                                          run_identity, write_summary, written_cases)
from nnlandmark.inference.uncertainty import (DEFAULT_COVERAGE, calibrated_radius, coverage_of_key, point_spread,
                                              radial_spread, radius_key, spread_kind, target_sigmas)



def _images_by_case(inputs, n_channels: int) -> dict:
    """case id -> channel files, from a folder (dataset layout), a list of files/folders, or such a dict."""
    if isinstance(inputs, dict):
        return {case: [Path(f) for f in files] for case, files in sorted(inputs.items())}
    inputs = [Path(p) for p in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)]
    cases, problems = {}, []

    def add(case, files):
        if case in cases:  # two inputs, one case name: one prediction would overwrite the other
            problems.append(f"{files[0]}: gives case '{case}' like {cases[case][0]}; rename one of them")
        else:
            cases[case] = files

    for item in inputs:
        name = image_name(item)
        if item.is_dir() and name is None:
            folder = item / "images" if (item / "images").is_dir() else item
            found, p = discover_images(folder, n_channels)
            problems += p or _channel_like_names(folder, found, n_channels)
            for case, files in found.items():
                add(case, files)
        elif item.exists():  # one image: a file, or a folder with a DICOM series
            if n_channels != 1:
                problems.append(f"{item}: the model needs {n_channels} channels; give a folder with "
                                "<case>_0000, <case>_0001, ... images")
            elif name is None:
                problems.append(f"{item}: not a recognised image file ({', '.join(IMAGE_SUFFIXES)})")
            else:
                add(name[0], [item])
        else:
            problems.append(f"{item}: no such file or folder")
    if not cases and not problems:
        problems.append(f"{', '.join(map(str, inputs))}: no images found")
    if problems:
        raise DatasetError(problems)
    return dict(sorted(cases.items()))


def _channel_like_names(folder: Path, cases: dict, n_channels: int) -> list:
    """A problem line when a one-channel model is given a folder whose files read as
    several channels per case (``a_0000``, ``a_0001``, ``b_0000``, ``b_0001``): predicting
    each file as a case of its own would silently ignore what the user meant."""
    if n_channels != 1 or not cases:
        return []
    stems = {}
    for case in cases:
        match = CHANNEL_SUFFIX.match(case)
        if not match:
            return []
        stems.setdefault(match["case"], set()).add(int(match["channel"]))
    counts = {len(channels) for channels in stems.values()}
    complete = all(channels == set(range(len(channels))) for channels in stems.values())
    if not complete or len(counts) != 1 or counts == {1}:
        return []
    k, stem = counts.pop(), next(iter(stems))
    return [f"{folder}: the files read as {k} channels per case ({stem}_0000 ... {stem}_{k - 1:04d}), but the "
            f"model takes 1 channel; if each file is a case of its own, give them as files (-i {folder}/*)"]


def check_inputs(cases: dict, spacing=None, planar: bool | None = None, model=None) -> dict:
    """Every image to predict read whole before any work: ``{case: grid}``, or a
    :class:`DatasetError` listing each unreadable, truncated, non-2D/3D or non-finite image
    and each case whose channel files disagree in geometry.

    ``spacing`` is that of PNG/JPEG inputs (:func:`nnlandmark.data.images.picture_spacing`);
    with ``planar`` (the model's images are 2D: True, 3D: False) an image of the other
    kind is refused, naming the ``model``.
    """
    grids, problems = {}, []
    for case, files in cases.items():
        found = []
        for f in files:
            try:
                found.append(read_image_grid(f, read_pixels=True, finite=True, spacing=spacing))
            except DatasetError as e:
                problems += e.problems
        if found and planar is not None and found[0].is_2d != planar:
            kind, trained = ("a 2D image", "3D images") if found[0].is_2d else ("a 3D image", "2D images")
            problems.append(f"{files[0]}: {kind}, but the model {model or ''} was trained on {trained}")
            continue
        if len(found) == len(files):
            if any(g.size != found[0].size or not np.allclose(g.spacing, found[0].spacing)
                   or not np.allclose(g.origin, found[0].origin) or not np.allclose(g.direction, found[0].direction)
                   for g in found[1:]):
                problems.append(f"{files[0]}: the channel files of case '{case}' differ in size or geometry")
            grids[case] = found[0]
    if problems:
        raise DatasetError(problems)
    return grids


def _atomic(path: Path, write) -> None:
    atomic_write(path, write)  # a unique temporary name: never a file of the user's


def decode_case(heatmaps, pgrid, grid: ImageGrid, names, decoder: str = "argmax") -> dict:
    """Decode heatmaps of one case into ``{name: (world LPS point, ITK index, score)}``."""
    points, scores = decode(heatmaps, decoder)
    world = preprocessed_to_world(points, pgrid, grid)
    return _decoded(world, scores, grid, names)


def _decoded(world, scores, grid: ImageGrid, names) -> dict:
    index = world_to_index(world, grid)
    return {name: (world[i], index[i], float(scores[i])) for i, name in enumerate(names)}


def default_decoder(description) -> str:
    """``mass`` for a softmax model (its channels are distributions), else ``argmax``."""
    return "mass" if _output(description) == "softmax" else "argmax"


def _output(description) -> str:
    """How the model's outputs are read, as its description says (``softmax`` or ``sigmoid``)."""
    from nnlandmark.model.description import ModelDescription
    return ModelDescription.of(description).output


def _maps(logits, output: str):
    """What the decoders read: per-channel softmax distributions, or sigmoid heatmaps (in place)."""
    from nnlandmark.nnunet.predictor import sigmoid_in_place, softmax_in_place
    return softmax_in_place(logits) if output == "softmax" else sigmoid_in_place(logits)


def crop_patches(data, starts, patch_size):
    """Patches (N, C, *patch_size) of ``data`` (C, *spatial) from integer ``starts`` (N, D);
    the parts outside ``data`` are 0 (the mean intensity after nnU-Net's normalisation).

    >>> import torch
    >>> crop_patches(torch.arange(5.0)[None], [[-1], [3]], (3,)).tolist()
    [[[0.0, 0.0, 1.0]], [[3.0, 4.0, 0.0]]]
    """
    import torch
    patch_size = tuple(int(p) for p in patch_size)
    out = torch.zeros((len(starts), data.shape[0], *patch_size), dtype=data.dtype)
    shape = data.shape[1:]
    for n, start in enumerate(np.asarray(starts, dtype=int)):
        lo = np.maximum(start, 0)
        hi = np.minimum(start + patch_size, shape)
        if np.any(hi <= lo):
            continue  # entirely outside: an all-zero patch
        source = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        target = tuple(slice(int(a - s), int(b - s)) for a, b, s in zip(lo, hi, start))
        out[(n, slice(None), *target)] = data[(slice(None), *source)]
    return out


@contextmanager
def _image_files(images, planar: bool = False, spacing=None, reorient: bool = False):
    """The images as files nnU-Net's reader opens: a DICOM series (a folder), every ``planar``
    (2D) image, and with ``reorient`` every image not stored in the canonical order
    (:func:`~nnlandmark.data.images.canonical_image`, as the training images were exported), is
    written to a temporary MetaImage file first, geometry included (a 2D image as nnU-Net's raw
    data holds it, :func:`nnlandmark.nnunet.raw.nnunet_image`; a picture with ``spacing``, in
    grey), and removed afterwards."""
    def rewrite(image) -> bool:
        return planar or Path(image).is_dir() or (
            reorient and not canonical_reorientation(read_image_grid(image, spacing=spacing)).is_identity)

    if not any(rewrite(f) for f in images):
        yield images
        return
    from nnlandmark.nnunet.raw import nnunet_image
    with tempfile.TemporaryDirectory(prefix="nnlandmark_input_") as tmp:
        files = []
        for i, image in enumerate(images):
            if rewrite(image):
                files.append(Path(tmp) / f"channel_{i:04d}.mha")
                read = read_image(image, spacing)
                sitk.WriteImage(nnunet_image(canonical_image(read) if reorient else read), str(files[-1]))
            else:
                files.append(image)
        yield files


def _predict_case(files, grid: ImageGrid, predictors: dict, names, decoder: str, output: str,
                  mirror: bool, target_sigma=None, shape_prior=None,
                  file_grid: ImageGrid | None = None, absence: bool = False) -> tuple[dict, dict, tuple, list]:
    """``{name: (world, index, score)}`` of one case, ``{name: uncertainty_mm}`` from the stage that gave
    the point (``target_sigma``: that stage's target width, :func:`~nnlandmark.inference.uncertainty.target_sigmas`),
    (maps, pgrid) of the first stage for saving, and the names of the landmarks the shape prior moved:
    in a cascade with a ``shape_prior`` (:mod:`nnlandmark.inference.shape`) a global point far from
    where the other landmarks put it is looked for again near there (:func:`_search_near_expected`).
    ``grid`` is that of the ``files`` the networks read; ``index`` is the continuous voxel index in
    ``file_grid``, the user's file (the same grid unless the files were reoriented).
    With ``absence`` (a softmax model that learned it, ``settings.absence``) the score is the first
    stage's present probability, ``1 - p(absent)`` (:func:`present_probabilities`): the stage that
    sees the whole scan says whether the landmark is in it."""
    first = predictors.get("global") or predictors["fullres"]
    read = first.read(files)  # once for both stages of a cascade
    data, pgrid = first.preprocess(files, read)
    axis = left_right_axis(grid.direction, pgrid.transpose_forward) if mirror else None
    logits = first.logits(data, mirror_axis=axis)
    presence = present_probabilities(logits) if absence else None
    maps = _maps(logits, output)
    del data, logits
    points, scores = decode(maps, decoder)
    world = preprocessed_to_world(points, pgrid, grid)
    moved = np.zeros(len(names), dtype=bool)
    found = world
    if "local" in predictors and shape_prior is not None:
        world, moved = _search_near_expected(world, maps, pgrid, grid, shape_prior, predictors["local"], decoder)
    if "local" in predictors:
        world, scores, spreads = _refine_locally(files, grid, world, predictors["local"], decoder, output, mirror,
                                                 read, target_sigma, grouped=found)
    else:
        spreads = _spreads(maps, points, pgrid, grid, output, target_sigma)
    if presence is not None:
        scores = presence
    return (_decoded(world, scores, file_grid or grid, names), dict(zip(names, spreads)), (maps, pgrid),
            [n for n, m in zip(names, moved) if m])


def present_probabilities(logits) -> np.ndarray:
    """``(L,)`` present probability of each channel of a softmax model with an absent slot (logit
    log N for N voxels): ``sigmoid(logsumexp(channel) - log N)``, one channel at a time in float32.

    >>> import torch
    >>> present_probabilities(torch.stack([torch.zeros(3), torch.full((3,), -30.0)])).round(4).tolist()
    [0.5, 0.0]
    """
    import math
    import torch
    log_n = math.log(int(np.prod(logits.shape[1:])))
    return np.array([float(torch.sigmoid(torch.logsumexp(logits[c].float().reshape(-1), dim=0) - log_n))
                     for c in range(logits.shape[0])])


def _search_near_expected(world, maps, pgrid, grid: ImageGrid, prior: dict, local, decoder: str):
    """Global points with each shape outlier replaced by its channel's decoded point within reach of
    the local stage (half its patch) of the position the mean shape, fitted to the other points, expects;
    and the ``(L,)`` mask of the landmarks so moved."""
    from nnlandmark.geometry import preprocessed_distances_mm
    from nnlandmark.inference.shape import expected_positions, shape_outliers
    reach = 0.5 * float(np.min(np.asarray(local.configuration_manager.patch_size)
                               * np.asarray(local.configuration_manager.spacing)))
    expected = expected_positions(world, prior["mean_mm"], prior["spread_mm"])
    flagged = shape_outliers(world, expected, prior["spread_mm"], reach)
    outliers = np.flatnonzero(flagged)
    if len(outliers) == 0:
        return world, flagged
    centres = world_to_preprocessed(expected[outliers], pgrid, grid)
    world = np.array(world, dtype=np.float64)
    for landmark, centre in zip(outliers, centres):
        channel = maps[landmark].float().cpu().numpy()
        near = np.where(preprocessed_distances_mm(centre, pgrid, grid) <= reach, channel, 0.0)
        if near.max() <= 0:  # nothing of the channel there: trust the shape
            world[landmark] = expected[landmark]
            continue
        point, _ = decode(near[None], decoder)
        world[landmark] = preprocessed_to_world(point, pgrid, grid)[0]
    return world, flagged


def _spreads(maps, points, pgrid, grid: ImageGrid, output: str, target_sigma=None) -> np.ndarray:
    """``uncertainty_mm`` per landmark: the spread of the maps about the decoded points, scaled by this
    grid's voxel size (:mod:`nnlandmark.inference.uncertainty`)."""
    from nnlandmark.geometry import preprocessed_voxel_size_mm
    axis = point_spread(maps, points, preprocessed_voxel_size_mm(pgrid, grid), kind=spread_kind(output),
                        target_sigma_voxels=target_sigma)
    return radial_spread(axis)


#: landmarks whose local patches would overlap share one, each landmark within this share of the
#: offsets the local stage was trained with (``nnlandmark_max_offset``) of the shared patch's centre:
#: the other half is left for the global stage's error. 0: one patch per landmark.
SHARED_PATCH_REACH = 0.5


def _refine_locally(files, grid: ImageGrid, world, local, decoder: str, output: str, mirror: bool, read=None,
                    target_sigma=None, share: float = SHARED_PATCH_REACH, grouped=None):
    """The local stage: full-resolution patches at the global estimates, one per landmark, or one
    for several landmarks close together (:func:`~nnlandmark.geometry.shared_patch_starts`, within
    ``share`` of the stage's training offsets of the patch centre): the local network predicts every
    landmark's channel in every patch, as it was trained to.

    The patches are shared as the points ``grouped`` (default ``world``) would share them; a
    landmark whose ``world`` point differs from its ``grouped`` one (the shape prior moved it) gets
    a patch of its own at its ``world`` point. So the prior changes the patches of the landmarks it
    moved, and no other landmark's patch or point.

    A 2D stage's patches (h, w) are cut from the preprocessed array (C, 1, H, W) as (1, h, w)
    and seen by the network without that axis; their maps get it back, so that points,
    spreads and the map to the world are the 3D code's."""
    import torch
    data, pgrid = local.preprocess(files, read)
    axis = left_right_axis(grid.direction, pgrid.transpose_forward) if mirror else None
    patch_size = tuple(int(p) for p in local.configuration_manager.patch_size)
    dropped = data.ndim - 1 - len(patch_size)  # 1 for a 2D stage: the one slice
    array_patch = (1,) * dropped + patch_size
    centres = world_to_preprocessed(world, pgrid, grid)
    offsets = local.configuration_manager.configuration.get("nnlandmark_max_offset") or [0.0] * len(array_patch)
    reach = share * np.asarray(offsets, dtype=float)[-len(array_patch):]
    grouped = centres if grouped is None else world_to_preprocessed(grouped, pgrid, grid)
    starts, patch_of = shared_patch_starts(grouped, array_patch, reach)
    alone = np.flatnonzero(np.any(np.abs(grouped - centres) > 1e-9, axis=1))
    if len(alone):
        starts = np.vstack([starts, [patch_start(centres[n], array_patch) for n in alone]]).astype(int)
        patch_of[alone] = len(starts) - len(alone) + np.arange(len(alone))
    patches = crop_patches(data, starts, array_patch)
    del data
    patches = patches.reshape(*patches.shape[:2], *patch_size)  # (P, C, *patch) as the network takes them
    logits = local.patch_logits(patches, mirror_axis=axis)  # (P patches, L channels, *patch)
    own = logits[torch.as_tensor(patch_of), torch.arange(len(centres))]  # landmark l, in its patch
    own = _maps(own.reshape(len(centres), *array_patch), output)
    points, scores = decode(own, decoder)
    # the patch has the preprocessed grid's voxels, so its spread is in the same millimetres
    spreads = _spreads(own, points, pgrid, grid, output, target_sigma)
    return preprocessed_to_world(patch_to_preprocessed(points, starts[patch_of]), pgrid, grid), scores, spreads


def _write_case(output_dir: Path, case_id: str, decoded: dict, thresholds: dict, uncertainty: dict | None = None,
                scales: dict | None = None, key: str | None = None, moved=(), lost_rule: dict | None = None) -> dict:
    """Write one case; a landmark scoring below ``thresholds[name]`` is written as absent.

    ``uncertainty`` is ``{name: uncertainty_mm}`` and ``scales`` the calibrated ``{name: q}`` of the
    radius field ``key`` (default ``radius_95_mm``), whose value is ``q * uncertainty_mm`` for a
    present landmark with a scale, else null. The landmarks in ``moved`` (by the shape prior) get
    ``"moved_by_shape_prior": true`` and say so in their Slicer description: worth a look.
    With ``lost_rule`` (:mod:`nnlandmark.inference.lost`) each landmark says whether it is
    ``uncertain`` and, with every other, whether the case is lost (``case_lost``) and how many of
    its landmarks are uncertain (``case_uncertain``); returns that state
    (:func:`~nnlandmark.inference.lost.lost_state`).
    """
    from nnlandmark.inference.lost import lost_state
    key = key or radius_key(DEFAULT_COVERAGE)
    uncertainty, scales = uncertainty or {}, scales or {}
    present = {n: s >= thresholds.get(n, -np.inf) for n, (_, _, s) in decoded.items()}
    landmarks = Landmarks(points={n: w for n, (w, _, _) in decoded.items() if present[n]},
                          absent=[n for n in decoded if not present[n]])
    spread = {n: _rounded(uncertainty.get(n)) for n in decoded}
    radius = {n: _rounded(calibrated_radius(spread[n], scales.get(n))) if present[n] else None for n in decoded}
    state = lost_state(spread, lost_rule, present) if lost_rule else None
    record = {n: {"world_lps_mm": [round(float(v), 4) for v in w] if present[n] else None,
                  "voxel_index": [round(float(v), 3) for v in i] if present[n] else None,
                  "score": round(s, 5), "present": bool(present[n]),
                  "uncertainty_mm": spread[n], key: radius[n], "moved_by_shape_prior": n in moved}
              for n, (w, i, s) in decoded.items()}
    if state is not None:  # a flag of the case, repeated in each landmark's entry: the record maps names only
        for n, r in record.items():
            r.update({"uncertain": n in state["uncertain"], "case_lost": state["lost"],
                      "case_uncertain": state["n_uncertain"]})
    # Slicer keeps a control point's description (its control point table shows it): the two numbers go there
    descriptions = {n: f"uncertainty_mm={_text(spread[n])}; {key}={_text(radius[n])}"
                       + ("; moved by the shape prior" if n in moved else "") for n in decoded}
    # <case>.json last: its presence is what --continue takes as "this case is done"
    _atomic(output_dir / f"{case_id}.mrk.json", lambda p: write_markups_json(
        landmarks, p, coordinate_system="LPS", names=list(decoded), descriptions=descriptions))
    _atomic(output_dir / f"{case_id}.json", lambda p: p.write_text(json.dumps(record, indent=2) + "\n"))
    return state


def _rounded(value, digits: int = 4):
    """A finite number rounded for the record, else None (JSON null)."""
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


def _text(value) -> str:
    return "null" if value is None else f"{value:.3f}"


def _save_heatmaps(path: Path, heatmaps, pgrid, grid: ImageGrid) -> None:
    placement = preprocessed_image_grid(pgrid, grid)
    channels = [sitk.GetImageFromArray(heatmaps[c].float().numpy()) for c in range(heatmaps.shape[0])]
    image = place(sitk.Compose(channels) if len(channels) > 1 else channels[0], placement)
    _atomic(path, lambda p: sitk.WriteImage(image, str(p), useCompression=True))


def predict(inputs, output_dir, model_dir, folds=(0,), device: str = "cpu", step_size: float = 0.5,
            decoder: str | None = None, save_heatmaps: bool = False, overwrite: bool = False,
            resume: bool = False, progress: bool = True, mirror: bool | None = None, spacing=None,
            shape_prior: bool = True, num_parts: int = 1, part_id: int = 0, mix_folds: bool = False) -> Path:
    """Predict every landmark of each input image; returns ``output_dir``.

    Parameters
    ----------
    inputs : path, list of paths, or dict
        A folder of images (``<case>.<ext>``, or ``<case>_0000.<ext>`` ... for
        several channels; a dataset folder's ``images/`` is used when present),
        or image files, or ``{case: [channel files]}``.
    model_dir : path
        A model folder written by ``nnlandmark train``, or a project folder
        with exactly one model.
    folds : sequence of int
        Folds whose checkpoints are averaged (logits).
    decoder : {'mass', 'argmax', 'local-mean', 'quadratic'}, optional
        How a point is read from each heatmap (see :mod:`nnlandmark.inference.decoding`);
        default :func:`default_decoder`: ``mass`` for softmax models, else ``argmax``.
    overwrite, resume : bool
        Replace existing outputs, or skip cases already predicted. Without
        either, existing outputs are refused before any work starts.
    mirror : bool, optional
        Test-time mirroring along each case's left-right axis, paired
        landmarks swapped (twice the compute). Default: on when the model was
        trained with mirroring (``"mirror"`` in its ``nnlandmark.json``).
    spacing : float or (x, y), optional
        Pixel spacing (mm) of PNG/JPEG inputs, which have none of their own.
        Default: the training dataset's (``picture_spacing`` in the model's
        ``nnlandmark.json``), else 1 mm. A model of 2D images predicts 2D
        images only (world points at the image's z, 0 for a picture), a model
        of 3D images 3D ones.
    shape_prior : bool
        In a cascade, look again for a landmark whose global estimate lies far
        from where the training shapes, fitted to the other landmarks, put it
        (:mod:`nnlandmark.inference.shape`; models trained before it have no
        prior and predict without).
    num_parts, part_id : int
        Predict only every ``num_parts``-th case of the sorted case list, from the ``part_id``-th
        on; the parts of one run share the output folder (:mod:`nnlandmark.inference.outputs`:
        manifest, locks, ``predictions.csv`` whole once every part is done).
    mix_folds : bool
        For ``evaluate-cv``: runs with other folds of the same model and settings may continue
        in the same folder (each fold predicts its own cases).
    """
    from nnlandmark.data.images import picture_spacing
    from nnlandmark.model.folder import ModelFolder, resolve_model
    # every check before any work or any write: flags, model, inputs, output folder
    if decoder is not None and decoder not in DECODERS:
        raise InvalidInput(f"--decoder: unknown decoder '{decoder}', choose from {sorted(DECODERS)}")
    if not 0 < step_size <= 1:
        raise InvalidInput(f"--step-size: a fraction of the patch in (0, 1], got {step_size}")
    if overwrite and resume:
        raise InvalidInput("--overwrite and --continue: choose one")
    folds = [int(f) for f in folds]
    model = ModelFolder(resolve_model(model_dir))
    description = model.check(folds)
    for line in model.unfinished(folds):  # a fold stopped or killed: its best checkpoint, but say so
        warnings.warn(f"{model.path}: {line}", stacklevel=2)
    decoder = decoder or default_decoder(description)
    output = _output(description)
    names = description["landmarks"]
    n_channels = len(description["channels"])
    cases = _images_by_case(inputs, n_channels)
    check_parts(num_parts, part_id)
    output_dir = Path(output_dir)
    if not isinstance(inputs, dict):
        check_not_inside_inputs(output_dir, [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)
    own = part_cases(cases, num_parts, part_id)  # every case when there is one part
    check_case_names(own)
    try:
        spacing = picture_spacing(spacing if spacing is not None else description.get("picture_spacing"))
    except InvalidInput as e:
        raise InvalidInput(f"--spacing: {e}") from e
    planar = model.planar
    grids = check_inputs({case: cases[case] for case in own}, spacing, planar, model.path)
    mirror = bool(description.get("mirror", False)) if mirror is None else bool(mirror)
    settings = {"decoder": decoder, "step_size": step_size, "shape_prior": shape_prior,
                "mirror": mirror,
                "spacing": list(spacing), "save_heatmaps": save_heatmaps}
    identity = run_identity(model.path, [model.checkpoint(f, stage) for f in folds for stage in model.stages],
                            folds, settings, num_parts, cases)
    todo, _ = plan_outputs(output_dir, identity, own, overwrite, resume, mix_folds)  # refuses before any work

    absence = bool(description["settings"].get("absence"))
    # a model that learned absence scores presence as a probability: 0.5 until evaluate-cv calibrates it
    thresholds = {**({n: 0.5 for n in names} if absence else {}), **(description.get("presence_thresholds") or {})}
    key, scales = _radius_calibration(description, decoder, model.description_file)
    # the spread is the final stage's: the local one of a cascade
    target_sigma = target_sigmas(description, "local" if "local" in model.stages else next(iter(model.stages)), folds)
    prior = description.shape_prior_of(folds) if shape_prior else None
    swap = swap_permutation(names, description.get("pairs") or [])
    predictors = {stage: model.predictor(folds, stage, device=device, step_size=step_size, mirror_swap=swap)
                  for stage in model.stages}
    lost_rule = _lost_rule(description, predictors.get("global") or predictors[next(iter(model.stages))], names)
    reorient = description.get("orientation") is not None
    if not reorient:
        _warn_mirrored_inputs(grids, model.path)
    endings = (".json", ".mrk.json") + (("_heatmaps.nii.gz",) if save_heatmaps else ())
    # the folder's lock is held, and each case recorded in its manifest, while this loop runs
    for case in tqdm(written_cases(output_dir, identity, own, overwrite, resume, endings, mix_folds, num_parts,
                                   part_id), total=len(todo), desc="predicting", disable=not progress):
        grid = grids[case]
        if reorient:  # the network sees the scan in the storage order it was trained in
            grid = reoriented_grid(grid, canonical_reorientation(grid))
        with _image_files(cases[case], planar, spacing, reorient) as files:
            decoded, spreads, (maps, pgrid), moved = _predict_case(files, grid, predictors, names, decoder,
                                                                   output, mirror, target_sigma, prior,
                                                                   file_grid=grids[case], absence=absence)
        if save_heatmaps:  # before the case JSON, which marks the case done for --continue
            _save_heatmaps(output_dir / f"{case}_heatmaps.nii.gz", maps, pgrid, grid)
        state = _write_case(output_dir, case, decoded, thresholds, spreads, scales, key, moved, lost_rule)
        if state["lost"]:
            from nnlandmark.inference.lost import warning_line
            warnings.warn(warning_line(case, state), stacklevel=2)
        del maps
    return output_dir


def _warn_mirrored_inputs(grids: dict, model_path) -> None:
    """One warning when a model trained on images exported as stored (before nnlandmark reoriented
    them) meets images stored in a mirrored voxel order: it may swap or lose left/right landmarks."""
    mirrored = [case for case, grid in grids.items() if is_mirrored(grid.direction)]
    if mirrored:
        example = mirrored[0]
        warnings.warn(f"{model_path}: this model was trained before nnlandmark reoriented scans, and {len(mirrored)} "
                      f"of {len(grids)} input(s) are stored in a mirrored voxel order (e.g. {example}: "
                      f"{orientation_code(grids[example].direction)}); such a model may place left/right landmarks "
                      "wrongly on them. Retrain it (prepare a new project, then train) to predict every storage "
                      "order alike", stacklevel=3)


def _lost_rule(description: dict, first_stage, names) -> dict:
    """When a case is lost (:mod:`nnlandmark.inference.lost`): the rule ``evaluate-cv`` calibrated,
    else the default, in voxels of the first stage (``first_stage``, its predictor)."""
    from nnlandmark.inference.lost import LOST_KEY, default_rule
    calibrated = description.get(LOST_KEY)
    if calibrated:
        return calibrated
    return default_rule(names, float(np.mean(first_stage.configuration_manager.spacing)))


def _radius_calibration(description: dict, decoder: str, source) -> tuple[str, dict]:
    """The radius field and ``{name: scale}`` that ``evaluate-cv`` stored (``uncertainty_calibration``).

    No scales (radii written as null) for an uncalibrated model, and, with a warning, when predicting
    with another decoder than the calibration's: its errors, hence its radii, would differ.
    """
    calibration = description.get("uncertainty_calibration")
    if not calibration:
        return radius_key(DEFAULT_COVERAGE), {}
    key = calibration.get("radius_key") or radius_key(calibration["coverage"])
    calibrated_with = calibration.get("decoder")
    if calibrated_with is not None and calibrated_with != decoder:
        warnings.warn(f"{source}: the uncertainty was calibrated with --decoder {calibrated_with}, this prediction "
                      f"uses {decoder}; {key} is written as null (run evaluate-cv with --decoder {decoder})",
                      stacklevel=3)
        return key, {}
    return key, dict(calibration.get("scale") or {})
