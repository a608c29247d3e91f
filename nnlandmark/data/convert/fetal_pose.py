"""Fetal pose: 15 fetal body keypoints on volumetric (EPI time-series) MRI.

Keypoints follow the fetal-pose work of Xu et al. (MICCAI 2019; github.com/daviddmc/fetal-pose).

Expected input (one volume per time frame, with a JSON annotation of the same stem)::

    src/[<subject>/]<frame>.nii.gz            (or .nii)
    src/[<subject>/]<frame>.json              {"landmarks": ..., "spacing": [sx, sy, sz]}

``landmarks`` is either an object ``{name: [i, j, k] | null}`` or a list of 15
``[i, j, k]`` rows in the keypoint order below. Coordinates are **voxel
indices**; ``spacing`` is the voxel size in mm.

Assumptions (not checked against released files; the original repository ships
``.mat`` arrays of shape ``(T, 3, 15)``, which this converter does not read):

- Voxel indices are in the NIfTI array order as loaded by nibabel, i.e. ITK's
  ``(i, j, k)``, and 0-based (pass ``index_base=1`` for MATLAB-style indices).
- ``null`` (or a row with a negative or NaN entry) means the keypoint is not
  annotated in that frame -> unknown.
- When ``spacing`` disagrees with the image header, the image is re-written
  with the JSON spacing (origin and direction kept).
- Frames of one subject (same parent folder) always land in the same split;
  the split is seeded (no official split is published).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nnlandmark.data.convert._common import (
    ConversionError, DatasetWriter, clean_up_on_failure, image_suffix, read_image_grid,
    seeded_split, with_spacing,
)
from nnlandmark.data.landmarks import Landmarks
from nnlandmark.geometry import index_to_world

KEYPOINTS = ("ankle_l", "ankle_r", "knee_l", "knee_r", "bladder", "elbow_l", "elbow_r", "eye_l",
             "eye_r", "hip_l", "hip_r", "shoulder_l", "shoulder_r", "wrist_l", "wrist_r")
PAIRS = [[k, k[:-1] + "r"] for k in KEYPOINTS if k.endswith("_l")]


def _annotation(path: Path, index_base: int):
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConversionError(f"{path}: invalid JSON ({err})") from None
    if not isinstance(data, dict) or "landmarks" not in data or "spacing" not in data:
        raise ConversionError(f"{path}: expected an object with 'landmarks' and 'spacing'")
    spacing = np.asarray(data["spacing"], dtype=float) if isinstance(data["spacing"], list) else None
    if spacing is None or spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ConversionError(f"{path}: 'spacing' must be 3 positive numbers, got {data['spacing']!r}")
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


@clean_up_on_failure
def convert(src: Path, dst: Path, *, seed: int = 0, index_base: int = 0) -> Path:
    """Convert fetal-pose frames (see the module docstring) into our layout; return ``dst``."""
    if index_base not in (0, 1):
        raise ValueError(f"index_base must be 0 or 1, got {index_base}")
    src_resolved = Path(src).expanduser().resolve()
    pairs = []
    for annotation in sorted(src_resolved.rglob("*.json")):
        stem = annotation.name[: -len(".json")]
        images = [annotation.with_name(stem + s) for s in (".nii.gz", ".nii")]
        image = next((p for p in images if p.is_file()), None)
        if image is not None:
            pairs.append((annotation, image))
    if not pairs:
        raise ConversionError(f"no <frame>.nii.gz + <frame>.json pairs under {src_resolved}")
    suffix = ".nii.gz" if any(image_suffix(i) == ".nii.gz" for _, i in pairs) else ".nii"
    writer = DatasetWriter(src, dst, name="FetalPose", landmarks=KEYPOINTS, pairs=PAIRS,
                           channels=["MR"], image_suffix=suffix)
    groups = {}
    for annotation, image in pairs:
        voxels, spacing = _annotation(annotation, index_base)
        rel = annotation.relative_to(src_resolved)
        subject = rel.parts[0] if len(rel.parts) > 1 else rel.name[: -len(".json")]
        case = "_".join(rel.parts[:-1] + (rel.name[: -len(".json")],))
        header = read_image_grid(image)
        grid = with_spacing(header, spacing)
        override = None if np.allclose(header.spacing, spacing, rtol=1e-4, atol=1e-6) else spacing
        lm = Landmarks(source=annotation)
        for name, voxel in voxels.items():
            if voxel is None:
                lm.unknown.append(name)
            else:
                lm.points[name] = index_to_world(voxel, grid)
        case_id = writer.add_case(case, image, lm, spacing=override, grid=grid)
        groups[case_id] = subject
    splits = seeded_split(writer.cases, seed=seed, groups=groups)
    return writer.finish(splits, split_rule=f"seeded split (seed={seed}, fractions 0.7/0.1/0.2) "
                                            "grouped by subject",
                         extra_notes={"groups": groups, "index_base": index_base})
