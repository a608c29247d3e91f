"""Fetal pose: 15 fetal body keypoints on volumetric (EPI time-series) MRI.

Two input forms are read.

1. **The published release** of the fetal-pose work of Xu et al. (MICCAI 2019,
   2020; README of github.com/daviddmc/fetal-pose, whose ``data.py`` reads it)::

       src/.../<data_folder>/<subject>/<subject>_0000.nii.gz, _0001.nii.gz ...   one file per frame
       src/.../<label_folder>/<subject>.mat                                    array joint_coord (T, 3, 15)

   Frame ``t`` is the ``t``-th ``.nii.gz`` of the subject folder in name order.
   ``joint_coord[t, :, k]`` is keypoint ``k`` as ``(x, y, z)`` **1-based**, where
   ``x`` runs along the volume's second array axis and ``y`` along its first
   ("``v(y, x, z)`` retrieves the intensity" in MATLAB): the ITK index is
   ``(y - 1, x - 1, z - 1)``. Spacing is the NIfTI header's. A coordinate below
   1 or not finite marks the keypoint as unknown in that frame (how the release
   marks a missing keypoint is not documented). A ``.mat`` whose frame count
   differs from the subject's volumes is an error.

2. **Per-frame JSON** (the form our brief gave; the nnLandmark scripts,
   github.com/MIC-DKFZ/nnLandmark ``Dataset734_Fetal_pose``/``Dataset739_Fposev2``,
   read a form like it from an unpublished copy: ``volumes/<case>.nii.gz`` with
   ``landmark_anno/<case>_landmark.json`` holding ``landmarks`` (name -> voxel
   index into the nibabel array), a scalar ``spacing`` and ``spacing_unit``)::

       src/[<subject>/]<frame>.nii.gz (or .nii)  +  <frame>.json or <frame>_landmark.json
           next to it, or anywhere under src (matched by name)

   ``landmarks`` is an object ``{name: [i, j, k] | null}`` with the names below
   or a list of 15 ``[i, j, k]`` rows in keypoint order; ``spacing`` is one
   number (isotropic) or three, in mm (``spacing_unit``, when given, must be
   ``mm``). Indices are in the NIfTI array order as loaded by nibabel, i.e.
   ITK's ``(i, j, k)``, 0-based (pass ``index_base=1`` for MATLAB-style
   indices). ``null``, a negative or a NaN entry means unknown. When
   ``spacing`` disagrees with the image header, the image is re-written with
   the JSON spacing (origin and direction kept). Not checked against real
   files: the keypoint names of those files are not published.

Keypoints, in the release's order: ankle, knee (left, right), bladder, elbow,
eye, hip, shoulder, wrist (left, right). Frames of one subject always land in
the same split (JSON frames found in a separate annotation folder have no
known subject and are grouped by themselves); the split is seeded (the
release names no split, its ``data_partition.yml`` is left to the user).
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from nnlandmark.data.convert._common import (
    ConversionError, DatasetWriter, clean_up_on_failure, image_suffix, read_image_grid,
    seeded_split, with_spacing,
)
from nnlandmark.data.landmarks import Landmarks
from nnlandmark.errors import InvalidInput
from nnlandmark.geometry import index_to_world

KEYPOINTS = ("ankle_l", "ankle_r", "knee_l", "knee_r", "bladder", "elbow_l", "elbow_r", "eye_l",
             "eye_r", "hip_l", "hip_r", "shoulder_l", "shoulder_r", "wrist_l", "wrist_r")
PAIRS = [[k, k[:-1] + "r"] for k in KEYPOINTS if k.endswith("_l")]
_NII = (".nii.gz", ".nii")


def _stem(path: Path) -> str:
    suffix = image_suffix(path) or path.suffix
    return path.name[: -len(suffix)] if suffix else path.name


# ----------------------------------------------------------------- release (.mat)

def _load_joint_coord(path: Path) -> np.ndarray:
    from scipy.io import loadmat  # only needed for this form

    try:
        data = loadmat(str(path))
    except NotImplementedError:
        raise ConversionError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; "
                              "re-save it with save(..., '-v7')") from None
    except (ValueError, OSError, TypeError) as err:
        raise ConversionError(f"{path}: cannot read .mat file ({err})") from None
    if "joint_coord" not in data:
        raise ConversionError(f"{path}: no 'joint_coord' array (keys: {sorted(k for k in data if not k.startswith('__'))})")
    coords = np.asarray(data["joint_coord"], dtype=float)
    if coords.ndim == 2:
        coords = coords[None]
    if coords.ndim != 3 or coords.shape[1:] != (3, len(KEYPOINTS)):
        raise ConversionError(f"{path}: joint_coord has shape {coords.shape}, expected (T, 3, {len(KEYPOINTS)})")
    return coords


def _subject_folder(src: Path, subject: str, mat: Path) -> Path:
    found = [d for d in src.rglob(subject) if d.is_dir() and any(d.glob("*.nii.gz"))]
    if len(found) != 1:
        raise ConversionError(f"{mat}: expected one folder {subject}/ with its .nii.gz frames under {src}, "
                              f"found {len(found)}")
    return found[0]


def _release_frames(src: Path, mat: Path):
    """``(frame image, {keypoint: itk index or None})`` for every frame of one subject."""
    subject = mat.stem
    folder = _subject_folder(src, subject, mat)
    frames = sorted(p for p in folder.iterdir() if p.name.endswith(".nii.gz"))
    coords = _load_joint_coord(mat)
    if len(coords) != len(frames):
        raise ConversionError(f"{mat}: joint_coord has {len(coords)} frames but {folder} has "
                              f"{len(frames)} .nii.gz volumes")
    out = []
    for frame, xyz in zip(frames, coords):
        voxels = {}
        for name, (x, y, z) in zip(KEYPOINTS, xyz.T):
            ok = np.all(np.isfinite([x, y, z])) and min(x, y, z) >= 1
            voxels[name] = np.array([y - 1.0, x - 1.0, z - 1.0]) if ok else None
        out.append((frame, voxels))
    return subject, out


# ----------------------------------------------------------------- per-frame JSON

def _parse_spacing(value, path: Path) -> np.ndarray:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        spacing = np.full(3, float(value))
    elif isinstance(value, list):
        try:
            spacing = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            spacing = None
    else:
        spacing = None
    if spacing is None or spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ConversionError(f"{path}: 'spacing' must be a positive number or 3 positive numbers, got {value!r}")
    return spacing


def _annotation(path: Path, index_base: int):
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConversionError(f"{path}: invalid JSON ({err})") from None
    if not isinstance(data, dict) or "landmarks" not in data or "spacing" not in data:
        raise ConversionError(f"{path}: expected an object with 'landmarks' and 'spacing'")
    unit = data.get("spacing_unit", "mm")
    if str(unit).strip().lower() not in ("mm", "millimeter", "millimetre"):
        raise ConversionError(f"{path}: spacing_unit {unit!r} is not mm")
    spacing = _parse_spacing(data["spacing"], path)
    raw = data["landmarks"]
    if isinstance(raw, list):
        if len(raw) != len(KEYPOINTS):
            raise ConversionError(f"{path}: 'landmarks' list has {len(raw)} rows, expected {len(KEYPOINTS)}")
        raw = dict(zip(KEYPOINTS, raw))
    if not isinstance(raw, dict):
        raise ConversionError(f"{path}: 'landmarks' must be an object or a list")
    unknown_names = sorted(set(raw) - set(KEYPOINTS))
    if unknown_names:
        raise ConversionError(f"{path}: unknown keypoint name(s) {unknown_names}; expected {list(KEYPOINTS)}")
    voxels = {}
    for name, value in raw.items():
        if value is None:
            voxels[name] = None
            continue
        try:
            row = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            raise ConversionError(f"{path}: keypoint {name!r} has non-numeric coordinates {value!r}") from None
        if row.shape != (3,):
            raise ConversionError(f"{path}: keypoint {name!r} needs 3 voxel coordinates, got {value!r}")
        row = row - index_base
        voxels[name] = None if (np.any(np.isnan(row)) or np.any(row < 0)) else row
    return voxels, spacing


def _json_pairs(src: Path, skip_folders: set):
    """``(annotation, image, beside)`` for every image that has a JSON annotation."""
    by_name = defaultdict(list)
    for p in src.rglob("*.json"):
        by_name[p.name].append(p)
    out = []
    for image in sorted(p for p in src.rglob("*") if image_suffix(p) in _NII and p.is_file()):
        if image.parent in skip_folders:
            continue
        stem = _stem(image)
        beside = [image.with_name(f"{stem}{s}") for s in (".json", "_landmark.json")]
        annotation = next((p for p in beside if p.is_file()), None)
        if annotation is not None:
            out.append((annotation, image, True))
            continue
        elsewhere = by_name.get(f"{stem}_landmark.json", []) + by_name.get(f"{stem}.json", [])
        if len(elsewhere) > 1:
            raise ConversionError(f"{image}: several annotations match ({', '.join(map(str, elsewhere))})")
        if elsewhere:
            out.append((elsewhere[0], image, False))
    return out


# ----------------------------------------------------------------- convert

@clean_up_on_failure
def convert(src: Path, dst: Path, *, seed: int = 0, index_base: int = 0) -> Path:
    """Convert fetal-pose data (see the module docstring) into our layout; return ``dst``.

    ``index_base`` applies to the per-frame JSON form only; the release's ``.mat``
    files are 1-based by definition.
    """
    if index_base not in (0, 1):
        raise InvalidInput(f"index_base must be 0 or 1, got {index_base}")
    src_resolved = Path(src).expanduser().resolve()
    release = [_release_frames(src_resolved, mat) for mat in sorted(src_resolved.rglob("*.mat"))]
    release_folders = {frame.parent for _, frames in release for frame, _ in frames}
    json_pairs = _json_pairs(src_resolved, release_folders)
    if not release and not json_pairs:
        raise ConversionError(f"no fetal-pose data under {src_resolved}: expected <subject>.mat label "
                              "files with <subject>/ frame folders, or <frame>.nii.gz + <frame>.json")
    images = [f for _, frames in release for f, _ in frames] + [i for _, i, _ in json_pairs]
    suffix = ".nii.gz" if any(image_suffix(i) == ".nii.gz" for i in images) else ".nii"
    writer = DatasetWriter(src, dst, name="FetalPose", landmarks=KEYPOINTS, pairs=PAIRS,
                           channels=["MR"], image_suffix=suffix)
    groups = {}

    def add(case, image, voxels, grid, override, subject):
        lm = Landmarks(source=image)
        for name, voxel in voxels.items():
            if voxel is None:
                lm.unknown.append(name)
            else:
                lm.points[name] = index_to_world(voxel, grid)
        case_id = writer.add_case(case, image, lm, spacing=override, grid=grid)
        groups[case_id] = subject

    for subject, frames in release:
        for frame, voxels in frames:
            add(_stem(frame), frame, voxels, read_image_grid(frame), None, subject)
    for annotation, image, beside in json_pairs:
        voxels, spacing = _annotation(annotation, index_base)
        rel = image.relative_to(src_resolved)
        if beside:
            subject = rel.parts[0] if len(rel.parts) > 1 else _stem(image)
            case = "_".join(rel.parts[:-1] + (_stem(image),))
        else:  # separate annotation folder: the subject is not known
            subject = case = _stem(image)
        header = read_image_grid(image)
        override = None if np.allclose(header.spacing, spacing, rtol=1e-4, atol=1e-6) else spacing
        add(case, image, voxels, with_spacing(header, spacing), override, subject)
    splits = seeded_split(writer.cases, seed=seed, groups=groups)
    return writer.finish(splits, split_rule=f"seeded split (seed={seed}, fractions 0.7/0.1/0.2) "
                                            "grouped by subject",
                         extra_notes={"groups": groups, "index_base": index_base,
                                      "release_subjects": [s for s, _ in release]})
