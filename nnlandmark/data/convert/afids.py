"""AFIDs: 32 anatomical fiducials on T1-weighted brain MRI.

Expected input (the BIDS-like layout of the AFIDs data release, e.g. the
``afids-data`` super-dataset or one of its datasets such as OpenNeuro ds004470)::

    src/[<dataset>/]
      sub-<ID>/[ses-<S>/]anat/<prefix>_T1w.nii.gz
      derivatives/afids_groundtruth/sub-<ID>/[ses-<S>/]anat/<prefix>_space-T1w_desc-groundtruth_afids.fcsv

``<prefix>`` is the BIDS entity string of the image (``sub-C001_acq-MP2RAGE_run-01``).
Every ``*_desc-groundtruth_afids.fcsv`` found below a
``derivatives/afids_groundtruth`` folder is one case; its image is looked up at
the mirrored path under the dataset root (the parent of ``derivatives``).

Assumptions (from the AFIDs template ``.fcsv`` and the afids-utils reader):

- The ``.fcsv`` is Slicer's fiducial CSV; its ``# CoordinateSystem`` header is
  honoured (AFIDs files use ``0``/RAS).
- The ``label`` column holds the AFID number 1..32 (the ``desc`` column a
  description); a label that is already one of the acronyms below is accepted.
- Cases whose image is missing (HCP/OASIS images need a data-use agreement and
  are often absent, or present as unresolved DataLad links) are skipped and
  listed in ``conversion_notes.json``.

There is no official split: the split is seeded and stratified by dataset
(``AFIDs-HCP``, ``AFIDs-OASIS``, ``LHSCPD``, ``SNSX`` ...).
"""
from __future__ import annotations

from pathlib import Path

from nnlandmark.data.convert._common import (
    ConversionError, DatasetWriter, clean_up_on_failure, seeded_split,
)
from nnlandmark.data.formats import read_landmarks
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


def _prefix(fcsv: Path) -> str:
    stem = fcsv.name[: -len(GROUNDTRUTH_SUFFIX)]
    # drop the space-/desc- entities that only the fiducial file carries
    return stem.split("_space-")[0]


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
        image = dataset_root.joinpath(*mirrored, f"{prefix}_T1w.nii.gz")
        if not image.exists():
            alternative = image.with_name(f"{prefix}_T1w.nii")
            image = alternative if alternative.exists() else image
        dataset = dataset_root.name if dataset_root != src_resolved else src_resolved.name
        case = prefix if dataset_root == src_resolved else f"{dataset}_{prefix}"
        if not image.is_file():
            writer.skip(case, f"image {image} not found (or an unresolved link)")
            continue
        try:
            raw = read_landmarks(fcsv)
        except LandmarkFileError as err:
            raise ConversionError(str(err)) from None
        lm = Landmarks(source=fcsv)
        for label in raw.names:
            name = _afid_name(label, fcsv)
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
