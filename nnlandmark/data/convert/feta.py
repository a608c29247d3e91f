"""FeTA 2024 biometry: five fetal-brain measurements on super-resolved T2w MRI.

Expected input (the FeTA 2024 training data, BIDS-like, one folder per institution)::

    src/**/sub-<ID>/anat/sub-<ID>_rec-<method>_T2w.nii.gz
    src/**/sub-<ID>/anat/sub-<ID>_rec-<method>_meas.nii.gz     biometry landmark map
    src/**/participants.tsv                                     optional (pathology)

The challenge describes the biometry annotation as "a file with the
corresponding landmark in the space of the image"; we take it to be a label
image on which each measurement is two marked voxels (or two small blobs).

Assumptions (not checked against the real files):

- The landmark map is the file next to the T2w image whose name ends in
  ``_meas.nii.gz`` (override with ``landmark_suffix``); cases without one are
  skipped and listed in the notes.
- Label values follow the order of the challenge's data description:
  1 = bBIP (brain biparietal diameter), 2 = sBIP (skull biparietal diameter),
  3 = HV (height of the vermis), 4 = LCC (length of the corpus callosum),
  5 = TCD (transverse cerebellar diameter); override with ``label_order``.
- Each label forms exactly two connected components (26-connectivity); each
  endpoint is its component's centroid in world space. A label that is absent
  leaves both endpoints unknown; any other component count is an error.
- Endpoint naming: the challenge gives no endpoint order. The two endpoints are
  ordered along the image axis on which they differ most (smaller voxel index =
  ``<m>_1``). With the released volumes reoriented to a standard viewing plane
  this gives a consistent anatomical order; the pairs declared for mirroring are
  the transverse measurements (bBIP, sBIP, TCD).

The reoriented-space transform shipped with the biometry is not needed: the
landmarks are in the image's own space. No official test labels are public, so
the split is seeded and stratified by reconstruction method (``rec-`` entity,
a proxy for institution) and by pathology when ``participants.tsv`` has a
``pathology`` column.
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

MEASUREMENTS = ("bBIP", "sBIP", "HV", "LCC", "TCD")
TRANSVERSE = ("bBIP", "sBIP", "TCD")


def landmark_names(measurements=MEASUREMENTS) -> list:
    """``["bBIP_1", "bBIP_2", "sBIP_1", ...]``."""
    return [f"{m}_{e}" for m in measurements for e in (1, 2)]


def endpoints_from_label_map(path, label_order=MEASUREMENTS) -> Landmarks:
    """The two world endpoints of every measurement drawn in a label map.

    Parameters
    ----------
    path : path-like
        Label image; value ``i + 1`` marks measurement ``label_order[i]``.
    label_order : sequence of str
        Measurement names by label value.

    Returns
    -------
    Landmarks
        ``<m>_1`` and ``<m>_2`` per measurement (LPS), ordered along the image
        axis of largest index difference; both unknown when the label is absent.
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
    lm = Landmarks(source=path)
    for value, measurement in enumerate(label_order, start=1):
        names = [f"{measurement}_1", f"{measurement}_2"]
        mask = array == value
        if not mask.any():
            lm.unknown.extend(names)
            continue
        components, count = ndimage.label(mask, structure=np.ones((3, 3, 3)))
        if count != 2:
            raise ConversionError(f"{path}: measurement {measurement} (label {value}) has {count} "
                                  "marked region(s); expected its two endpoints")
        centres = np.array(ndimage.center_of_mass(mask, components, [1, 2]))
        itk = array_to_itk_index(centres)
        axis = int(np.argmax(np.abs(itk[0] - itk[1])))
        order = np.argsort(itk[:, axis], kind="stable")
        for name, row in zip(names, order):
            lm.points[name] = index_to_world(itk[row], grid)
    return lm


def _participants(src: Path) -> dict:
    """``participant_id -> pathology`` from every ``participants.tsv`` under ``src``."""
    out = {}
    for tsv in sorted(src.rglob("participants.tsv")):
        with open(tsv, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            fields = {f.lower(): f for f in (reader.fieldnames or [])}
            if "participant_id" not in fields or "pathology" not in fields:
                continue
            for row in reader:
                out[row[fields["participant_id"]].strip()] = row[fields["pathology"]].strip()
    return out


@clean_up_on_failure
def convert(src: Path, dst: Path, *, seed: int = 0, landmark_suffix: str = "_meas.nii.gz",
            label_order=MEASUREMENTS) -> Path:
    """Convert FeTA 2024 biometry data into our layout; return ``dst``."""
    src_resolved = Path(src).expanduser().resolve()
    label_order = tuple(label_order)
    images = sorted(src_resolved.rglob("sub-*_T2w.nii.gz"))
    if not images:
        raise ConversionError(f"no sub-*_T2w.nii.gz images under {src_resolved}")
    names = landmark_names(label_order)
    writer = DatasetWriter(src, dst, name="FeTA-biometry", landmarks=names,
                           pairs=[[f"{m}_1", f"{m}_2"] for m in label_order if m in TRANSVERSE],
                           biometry={m: [f"{m}_1", f"{m}_2"] for m in label_order},
                           channels=["T2w"], image_suffix=".nii.gz")
    pathology = _participants(src_resolved)
    strata, groups = {}, {}
    for image in images:
        prefix = image.name[: -len("_T2w.nii.gz")]
        landmark_map = image.with_name(prefix + landmark_suffix)
        if not landmark_map.is_file():
            found = sorted(image.parent.glob(f"*{landmark_suffix}"))
            if len(found) != 1:
                writer.skip(prefix, f"no *{landmark_suffix} landmark map next to {image.name}")
                continue
            landmark_map = found[0]
        lm = endpoints_from_label_map(landmark_map, label_order)
        subject = prefix.split("_")[0]
        rec = next((part[4:] for part in prefix.split("_") if part.startswith("rec-")), "")
        case_id = writer.add_case(prefix, image, lm)
        strata[case_id] = f"{rec}|{pathology.get(subject, '')}"
        groups[case_id] = subject
    # one subject reconstructed twice must not straddle splits
    splits = seeded_split(writer.cases, seed=seed, strata=strata, groups=groups)
    return writer.finish(splits, split_rule=f"seeded split (seed={seed}, fractions 0.7/0.1/0.2) "
                                            "stratified by reconstruction method and pathology",
                         extra_notes={"strata": strata, "label_order": list(label_order)})
