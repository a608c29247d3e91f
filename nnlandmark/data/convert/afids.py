"""AFIDs: 32 anatomical fiducials on T1-weighted brain MRI.

Expected input: the AFIDs data release, i.e. the ``afids-data`` DataLad
super-dataset (github.com/afids/afids-data, datasets under
``data/datasets/<name>/``) or any of its BIDS datasets on its own
(AFIDs-HCP, AFIDs-OASIS, OpenNeuro ds004470 = SNSX, ds004471 = LHSCPD)::

    src/[data/datasets/<dataset>/]
      sub-<ID>/[ses-<S>/]anat/<image entities>_T1w.nii.gz
      derivatives/afids_groundtruth/sub-<ID>/[ses-<S>/]anat/<entities>_space-T1w_desc-groundtruth_afids.fcsv

Every ``*_desc-groundtruth_afids.fcsv`` below a ``derivatives/afids_groundtruth``
folder is one case (``derivatives/afids_rater`` files are ignored). The image
is looked for in the mirrored ``sub-<ID>/[ses-<S>/]anat`` folder of the dataset
root (the parent of ``derivatives``).

Checked against the published release (file trees of the four dataset
repositories, the ``.fcsv`` files stored in AFIDs-HCP and AFIDs-OASIS, the
``autoafids`` template ``.fcsv`` and the ``afids-utils`` reader):

- The fiducial file does **not** always carry the image's entities: SNSX has
  ``sub-C001_acq-MP2RAGE_run-01_T1w.nii.gz`` with
  ``sub-C001_acq-MP2RAGE_run-01_space-T1w_desc-groundtruth_afids.fcsv``, but
  AFIDs-HCP pairs ``sub-103111_acq-MP2RAGE_T1w.nii.gz`` with
  ``sub-103111_space-T1w_...`` and LHSCPD ``sub-087_run-01_T1w.nii.gz`` with
  ``sub-087_space-T1w_...``. The image is the ``*_T1w.nii[.gz]`` in that folder
  whose entities include every entity of the fiducial file (other than
  ``space``/``desc``); several such images are an error.
- The ``.fcsv`` is Slicer's fiducial CSV (versions 4.6 and 4.10 in the release)
  with ``# CoordinateSystem = 0`` (RAS), which is honoured; the ``label``
  column holds the AFID number 1..32 and ``desc`` a free-text description
  (``AC``, ``infracollicular sulcus`` ...) that differs between datasets
  (AFID 20 is ``splenium of CC`` in AFIDs-HCP, ``splenium`` in AFIDs-OASIS), so
  the AFID is taken from ``label`` only. A label that is already one of the
  acronyms below is accepted too.
- Cases whose image is missing (HCP/OASIS images need a data-use agreement and
  are often absent, or present as unresolved DataLad links) are skipped and
  listed in ``conversion_notes.json``.

There is no official split: the split is seeded and stratified by dataset
(``AFIDs-HCP``, ``AFIDs-OASIS``, ``LHSCPD``, ``SNSX`` ...).
"""
from __future__ import annotations

import csv
from pathlib import Path

from nnlandmark.data.convert._common import (
    ConversionError, DatasetWriter, clean_up_on_failure, seeded_split,
)
from nnlandmark.data.formats import read_landmarks
from nnlandmark.data.formats.text_formats import FCSV_COLUMNS
from nnlandmark.data.landmarks import LandmarkFileError, Landmarks

#: AFID acronyms in protocol order (AFID 1 = AC ... AFID 32 = LOSF).
AFIDS = ("AC", "PC", "ICS", "PMJ", "SIPF", "RSLMS", "LSLMS", "RILMS", "LILMS", "CUL", "IMS",
         "RMB", "LMB", "PG", "RLVAC", "LLVAC", "RLVPC", "LLVPC", "GENU", "SPLE", "RALTH", "LALTH",
         "RSAMTH", "LSAMTH", "RIAMTH", "LIAMTH", "RIGO", "LIGO", "RVOH", "LVOH", "ROSF", "LOSF")

#: Left/right pairs, ``[left, right]``.
PAIRS = [[f"L{a[1:]}", a] for a in AFIDS if a.startswith("R") and f"L{a[1:]}" in AFIDS]

BIOMETRY = {"AC_PC": ["AC", "PC"]}

GROUNDTRUTH_SUFFIX = "_desc-groundtruth_afids.fcsv"


def _afid_name(label: str, path: Path) -> str:
    text = label.strip()
    if text.isdigit() and 1 <= int(text) <= len(AFIDS):
        return AFIDS[int(text) - 1]
    if text.upper() in AFIDS:
        return text.upper()
    raise ConversionError(f"{path}: fiducial label {label!r} is neither an AFID number 1-32 "
                          "nor an AFID acronym")


def _labels_by_name(fcsv: Path) -> dict:
    """``name -> label column`` for every row of an AFIDs ``.fcsv``.

    The generic reader names a point by its ``label`` or, in files that number
    their points in ``label`` and describe them in ``desc`` (as AFIDs files do),
    by its ``desc``. The AFID number is the ``label`` column either way
    (afids-utils reads it so), and the descriptions vary between datasets of
    the release (``splenium of CC`` in AFIDs-HCP, ``splenium`` in AFIDs-OASIS),
    so both spellings map back to the label here.
    """
    columns = FCSV_COLUMNS
    out = {}
    try:
        lines = fcsv.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError):
        return out  # the reader reports the problem
    for line in lines:
        if line.startswith("#"):
            key, sep, value = line[1:].partition("=")
            if sep and key.strip().lower() == "columns":
                columns = tuple(c.strip() for c in value.split(","))
            continue
        if not line.strip() or "label" not in columns:
            continue
        row = next(csv.reader([line]))
        label_at = columns.index("label")
        if label_at >= len(row):
            continue
        label = row[label_at].strip()
        out[label] = label
        desc_at = columns.index("desc") if "desc" in columns else None
        if desc_at is not None and desc_at < len(row) and row[desc_at].strip():
            out.setdefault(row[desc_at].strip(), label)
    return out


def _prefix(fcsv: Path) -> str:
    stem = fcsv.name[: -len(GROUNDTRUTH_SUFFIX)]
    # drop the space-/desc- entities that only the fiducial file carries
    return stem.split("_space-")[0]


def _entities(stem: str) -> set:
    """The ``key-value`` entities of a BIDS file stem (the suffix is left out)."""
    return {part for part in stem.split("_") if "-" in part}


def _find_image(anat: Path, prefix: str):
    """The T1w image of ``anat`` matching the fiducial prefix, or ``(None, reason)``.

    Exact ``<prefix>_T1w.nii[.gz]`` first; otherwise the one ``*_T1w`` image whose
    entities contain all of the prefix's (the release drops ``acq-``/``run-``
    from some fiducial names). Unresolved links count as found, so that the
    caller reports them as missing content rather than as absent files.
    """
    for suffix in (".nii.gz", ".nii"):
        exact = anat / f"{prefix}_T1w{suffix}"
        if exact.exists() or exact.is_symlink():
            return exact, None
    if not anat.is_dir():
        return None, f"folder {anat} not found"
    wanted = _entities(prefix)
    candidates = sorted(p for p in anat.iterdir()
                        if p.name.endswith(("_T1w.nii.gz", "_T1w.nii"))
                        and wanted <= _entities(p.name.split("_T1w.nii")[0]))
    if len(candidates) == 1:
        return candidates[0], None
    if not candidates:
        return None, f"no *_T1w.nii[.gz] in {anat} with entities {sorted(wanted)}"
    raise ConversionError(f"{anat}: several T1w images match {prefix!r} "
                          f"({', '.join(p.name for p in candidates)}); cannot tell which was annotated")


@clean_up_on_failure
def convert(src: Path, dst: Path, *, seed: int = 0) -> Path:
    """Convert an AFIDs release (see the module docstring) into our layout; return ``dst``."""
    src_resolved = Path(src).expanduser().resolve()
    writer = DatasetWriter(src, dst, name="AFIDs", landmarks=AFIDS, pairs=PAIRS,
                           biometry=BIOMETRY, channels=["T1w"], image_suffix=".nii.gz")
    fcsvs = sorted(p for p in src_resolved.rglob(f"*{GROUNDTRUTH_SUFFIX}")
                   if "afids_groundtruth" in p.parts and "derivatives" in p.parts)
    if not fcsvs:
        raise ConversionError(f"no derivatives/afids_groundtruth/**/*{GROUNDTRUTH_SUFFIX} under {src_resolved}")
    strata = {}
    for fcsv in fcsvs:
        parts = fcsv.relative_to(src_resolved).parts
        d = len(parts) - 1 - parts[::-1].index("derivatives")
        dataset_root = src_resolved.joinpath(*parts[:d])
        mirrored = parts[d + 2:-1]  # sub-XX[/ses-YY]/anat
        prefix = _prefix(fcsv)
        dataset = dataset_root.name if dataset_root != src_resolved else src_resolved.name
        case = prefix if dataset_root == src_resolved else f"{dataset}_{prefix}"
        image, reason = _find_image(dataset_root.joinpath(*mirrored), prefix)
        if image is None:
            writer.skip(case, f"image not found: {reason}")
            continue
        if not image.is_file():
            writer.skip(case, f"image {image} not found (or an unresolved link)")
            continue
        try:
            raw = read_landmarks(fcsv)
        except LandmarkFileError as err:
            raise ConversionError(str(err)) from None
        labels = _labels_by_name(fcsv)
        lm = Landmarks(source=fcsv)
        for label in raw.names:
            name = _afid_name(labels.get(label, label), fcsv)
            if name in lm.points or name in lm.unknown:
                raise ConversionError(f"{fcsv}: AFID {name} appears twice")
            if raw.status(label) == "present":
                lm.points[name] = raw.points[label]
            else:
                lm.unknown.append(name)
        case_id = writer.add_case(case, image, lm)
        strata[case_id] = dataset
    splits = seeded_split(writer.cases, seed=seed, strata=strata)
    return writer.finish(splits, split_rule=f"seeded split (seed={seed}, fractions 0.7/0.1/0.2) "
                                            "stratified by dataset",
                         extra_notes={"strata": strata})
