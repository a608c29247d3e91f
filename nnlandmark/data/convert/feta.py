"""FeTA 2024 biometry: five fetal-brain measurements on super-resolved T2w MRI.

Expected input: the FeTA 2.4 training release (Synapse syn25649159, University
Children's Hospital Zurich; the Vienna data has the same BIDS form), whose
biometry is also published on its own on Zenodo (doi 10.5281/zenodo.11192452)::

    src/[feta_2.4/]
      sub-<ID>/anat/sub-<ID>_rec-<rec>_T2w.nii.gz
      participants.tsv                                    participant_id, Gestational age, Pathology
      derivatives/biometry/biometry.tsv                   reference lengths (mm), optional
      derivatives/biometry/sub-<ID>/anat/sub-<ID>_rec-<rec>_meas.nii.gz
      derivatives/biometry/sub-<ID>/anat/sub-<ID>_rec-<rec>_trf.txt

What the release's README (Zenodo record above) says, and the converter follows:

- ``_meas.nii.gz`` is a mask holding the two end points of each measurement,
  with values ``{"LCC": 1, "HV": 2, "bBIP": 3, "sBIP": 4, "TCD": 5}`` (the
  same README's numbered list puts HV first; the mapping above is the one its
  "Data format" section gives and the one a public loader (MedVision's FeTA24
  script) uses). Override with ``label_order``.
- The mask is **in the re-aligned space** in which clinicians measured, not in
  the T2w image's space. ``_trf.txt`` is an ITK transform "mapping the original
  image to the re-aligned space": the release's example code re-aligns an image
  with ``sitk.Resample(image, image, transform)``, so a re-aligned point ``p``
  shows the original image at ``transform(p)``. Each end point is therefore
  mapped with ``transform.TransformPoint`` into the T2w image's space; a case
  without its transform is skipped.
- The ends are whole voxels ("rounded to integer values"), normally exactly two
  voxels per label; two separate blobs are also accepted (their centroids).
  A label that is absent (some measurements could not be made) leaves both
  ends unknown; any other shape is an error.
- ``biometry.tsv`` holds the lengths measured in the re-aligned space. When it
  is present, each converted length is compared with it and a difference over
  2 mm is noted as a warning (the README quotes up to 0.45 mm for the rounding
  of the ends).

Endpoint naming (``<m>_1``, ``<m>_2``) is ours; the release gives no order. The
ends are ordered anatomically in the re-aligned space (the measuring planes):
transverse measurements (bBIP, sBIP, TCD) right then left, LCC anterior then
posterior, HV superior then inferior; a measurement of another name falls
back to the image axis on which its ends differ most. The transverse pairs
are declared for mirroring.

No official test labels are public, so the split is seeded and stratified by
reconstruction method (``rec-`` entity) and by pathology when
``participants.tsv`` has a ``Pathology`` column; the reconstructions of one
subject stay in one split.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from nnlandmark.data.convert._common import (
    ConversionError, DatasetWriter, clean_up_on_failure, seeded_split,
)
from nnlandmark.data.landmarks import Landmarks
from nnlandmark.geometry import GeometryError, ImageGrid, array_to_itk_index, index_to_world

#: Measurements by label value (1..5) of the ``_meas`` mask, from the release's README.
MEASUREMENTS = ("LCC", "HV", "bBIP", "sBIP", "TCD")
TRANSVERSE = ("bBIP", "sBIP", "TCD")
#: ``measurement -> (LPS axis, sign)``: ``<m>_1`` is the end with the larger ``sign * coordinate``
#: in the re-aligned space (LPS: +x left, +y posterior, +z superior).
FIRST_END = {"bBIP": (0, -1), "sBIP": (0, -1), "TCD": (0, -1),  # right end first
             "LCC": (1, -1),                                     # anterior end first
             "HV": (2, 1)}                                       # superior end first
#: Difference (mm) between a converted length and ``biometry.tsv`` that is noted as a warning.
LENGTH_TOLERANCE_MM = 2.0


def landmark_names(measurements=MEASUREMENTS) -> list:
    """``["LCC_1", "LCC_2", "HV_1", ...]``."""
    return [f"{m}_{e}" for m in measurements for e in (1, 2)]


def _read_transform(path: Path):
    try:
        return sitk.ReadTransform(str(path))
    except RuntimeError as err:
        raise ConversionError(f"{path}: cannot read ITK transform "
                              f"({str(err).strip().splitlines()[-1]})") from None


def _ends(mask: np.ndarray, path: Path, measurement: str, value: int) -> np.ndarray:
    """The two end points of one label as ITK ``(i, j, k)`` indices (array of shape (2, 3))."""
    voxels = np.argwhere(mask)
    if len(voxels) == 2:
        return array_to_itk_index(voxels.astype(float))
    components, count = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if count != 2:
        raise ConversionError(f"{path}: measurement {measurement} (label {value}) has {len(voxels)} "
                              f"voxel(s) in {count} region(s); expected its two end points")
    return array_to_itk_index(np.array(ndimage.center_of_mass(mask, components, [1, 2])))


def _order(measurement: str, realigned: np.ndarray, itk: np.ndarray) -> list:
    if measurement in FIRST_END:
        axis, sign = FIRST_END[measurement]
        return list(np.argsort(-sign * realigned[:, axis], kind="stable"))
    axis = int(np.argmax(np.abs(itk[0] - itk[1])))
    return list(np.argsort(itk[:, axis], kind="stable"))


def endpoints_from_label_map(path, label_order=MEASUREMENTS, transform=None):
    """The end points of every measurement drawn in a ``_meas`` mask.

    Parameters
    ----------
    path : path-like
        Label image; value ``i + 1`` marks measurement ``label_order[i]``.
    label_order : sequence of str
        Measurements by label value.
    transform : SimpleITK transform, optional
        Maps a re-aligned point to the T2w image's space (the release's
        ``_trf.txt``); None when the mask is already in the image's space.

    Returns
    -------
    (Landmarks, dict)
        ``<m>_1``/``<m>_2`` per measurement (LPS, image space; both unknown when
        the label is absent) and ``measurement -> length in mm`` measured in the
        mask's own (re-aligned) space.
    """
    path = Path(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise ConversionError(f"{path}: cannot read label map ({str(err).strip().splitlines()[-1]})") from None
    grid = ImageGrid.from_image(image)
    try:
        grid.validate()
    except GeometryError as err:
        raise ConversionError(f"{path}: {err}") from None
    array = sitk.GetArrayFromImage(image)
    stray = sorted(int(v) for v in np.unique(array) if v != 0 and not 1 <= v <= len(label_order))
    if stray:
        raise ConversionError(f"{path}: label value(s) {stray} are not measurements 1..{len(label_order)}")
    lm, lengths = Landmarks(source=path), {}
    for value, measurement in enumerate(label_order, start=1):
        names = [f"{measurement}_1", f"{measurement}_2"]
        mask = array == value
        if not mask.any():
            lm.unknown.extend(names)
            continue
        itk = _ends(mask, path, measurement, value)
        realigned = np.array([index_to_world(i, grid) for i in itk])
        lengths[measurement] = float(np.linalg.norm(realigned[0] - realigned[1]))
        for name, row in zip(names, _order(measurement, realigned, itk)):
            point = realigned[row]
            if transform is not None:
                point = np.asarray(transform.TransformPoint([float(c) for c in point]), dtype=float)
            lm.points[name] = point
    return lm, lengths


def _read_tsv(path: Path) -> list:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def _participants(src: Path) -> dict:
    """``participant_id -> pathology`` from every ``participants.tsv`` under ``src``."""
    out = {}
    for tsv in sorted(src.rglob("participants.tsv")):
        for row in _read_tsv(tsv):
            fields = {k.strip().lower(): k for k in row if k}
            if "participant_id" not in fields or "pathology" not in fields:
                break
            out[(row[fields["participant_id"]] or "").strip()] = (row[fields["pathology"]] or "").strip()
    return out


def _reference_lengths(src: Path, measurements) -> dict:
    """``subject -> {measurement: mm}`` from every ``biometry.tsv`` under ``src`` (first column = subject).

    The column layout beyond the measurement names is not documented; rows whose
    first field is not a ``sub-`` identifier and non-numeric cells are ignored.
    """
    out = {}
    for tsv in sorted(src.rglob("biometry.tsv")):
        for row in _read_tsv(tsv):
            keys = [k for k in row if k]
            if not keys:
                continue
            subject = (row[keys[0]] or "").strip()
            if not subject.startswith("sub-"):
                continue
            for m in measurements:
                try:
                    out.setdefault(subject, {})[m] = float(row.get(m) or "nan")
                except ValueError:
                    continue
    return out


def _dataset_root(meas: Path, src: Path) -> Path:
    parts = meas.relative_to(src).parts
    if "derivatives" in parts:
        return src.joinpath(*parts[: len(parts) - 1 - parts[::-1].index("derivatives")])
    return src


@clean_up_on_failure
def convert(src: Path, dst: Path, *, seed: int = 0, landmark_suffix: str = "_meas.nii.gz",
            transform_suffix: str = "_trf.txt", label_order=MEASUREMENTS) -> Path:
    """Convert FeTA 2024 biometry data into our layout; return ``dst``."""
    src_resolved = Path(src).expanduser().resolve()
    label_order = tuple(label_order)
    # only the release's masks: derivatives/biometry/, not e.g. the biometry_mapped/ output of its
    # example code, which holds the same file names in the original space
    masks = sorted(p for p in src_resolved.rglob(f"sub-*{landmark_suffix}")
                   if p.is_file() and "biometry" in p.relative_to(src_resolved).parts)
    if not masks:
        raise ConversionError(f"no sub-*{landmark_suffix} biometry masks under {src_resolved} "
                              "(expected derivatives/biometry/sub-<ID>/anat/)")
    names = landmark_names(label_order)
    writer = DatasetWriter(src, dst, name="FeTA-biometry", landmarks=names,
                           pairs=[[f"{m}_1", f"{m}_2"] for m in label_order if m in TRANSVERSE],
                           biometry={m: [f"{m}_1", f"{m}_2"] for m in label_order},
                           channels=["T2w"], image_suffix=".nii.gz")
    pathology = _participants(src_resolved)
    reference = _reference_lengths(src_resolved, label_order)
    strata, groups, length_warnings = {}, {}, 0
    for meas in masks:
        prefix = meas.name[: -len(landmark_suffix)]
        subject = prefix.split("_")[0]
        root = _dataset_root(meas, src_resolved)
        image = root / subject / "anat" / f"{prefix}_T2w.nii.gz"
        if not image.is_file():
            writer.skip(prefix, f"no T2w image {image} for {meas.name}")
            continue
        trf = meas.with_name(prefix + transform_suffix)
        if not trf.is_file():
            writer.skip(prefix, f"no transform {trf.name} next to {meas.name} (the mask is in the "
                                "re-aligned space and cannot be placed without it)")
            continue
        lm, lengths = endpoints_from_label_map(meas, label_order, _read_transform(trf))
        for m, length in lengths.items():
            ref = reference.get(subject, {}).get(m, float("nan"))
            if np.isfinite(ref) and abs(ref - length) > LENGTH_TOLERANCE_MM:
                length_warnings += 1
                writer.warn(f"{prefix}: {m} ends are {length:.2f} mm apart but biometry.tsv says "
                            f"{ref:.2f} mm (check label_order)")
        rec = next((part[4:] for part in prefix.split("_") if part.startswith("rec-")), "")
        case_id = writer.add_case(prefix, image, lm)
        strata[case_id] = f"{rec}|{pathology.get(subject, '')}"
        groups[case_id] = subject
    # one subject reconstructed twice must not straddle splits
    splits = seeded_split(writer.cases, seed=seed, strata=strata, groups=groups)
    return writer.finish(splits, split_rule=f"seeded split (seed={seed}, fractions 0.7/0.1/0.2) "
                                            "stratified by reconstruction method and pathology",
                         extra_notes={"strata": strata, "label_order": list(label_order),
                                      "length_checks": {"reference_subjects": len(reference),
                                                        "warnings": length_warnings}})
