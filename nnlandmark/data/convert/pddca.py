"""PDDCA 1.4.1: head-and-neck CT (RTOG 0522) with five bony landmarks.

Expected input (the three ``PDDCA-1.4.1_part*.zip`` archives extracted in one
folder, in any sub-folder depth)::

    src/.../0522c0001/img.nrrd
    src/.../0522c0001/**/<anything>.fcsv        exactly one landmark file per case
    src/.../0522c0001/structures/*.nrrd         (organ masks, ignored)

Assumptions (the landmark file's location and names are not documented in
material we could check; only the fiducial-CSV format is):

- Each case folder (name ``0522c<4 digits>``) holds ``img.nrrd`` and one
  Slicer ``.fcsv``; its ``# CoordinateSystem`` header (RAS/LPS or the legacy
  ``0``/``1``) is honoured, and a file without it is read as RAS (Slicer's
  default before 4.11).
- Landmarks are named by the ``.fcsv`` ``label`` column. The dataset's landmark
  order is the first case's order, extended by names first seen later; a name a
  case lacks is *unknown* for it. Left/right pairs are inferred from ``L``/``R``
  (``left``/``right``) name tokens.
- A case folder without a ``.fcsv`` is skipped and listed in the notes.

Official split, by the case-number ranges of the MICCAI 2015 challenge packages:
``train`` 0001-0328 -> train; ``train_additional`` 0329-0479 -> val;
``test_offsite`` 0555-0746 and ``test_onsite`` 0788-0878 -> test. A case
outside these ranges is an error.
"""
from __future__ import annotations

import re
from pathlib import Path

from nnlandmark.data.convert._common import (
    ConversionError, DatasetWriter, clean_up_on_failure, infer_lr_pairs,
)
from nnlandmark.data.formats import read_landmarks
from nnlandmark.data.landmarks import LandmarkFileError

#: (first, last) case number of each official package and the split it maps to.
OFFICIAL_RANGES = (((1, 328), "train"), ((329, 479), "val"), ((555, 746), "test"), ((788, 878), "test"))

_CASE = re.compile(r"^0522c(\d{4})$")


def official_split(case: str) -> str:
    """The split of a PDDCA case name such as ``0522c0555``.

    Examples
    --------
    >>> official_split("0522c0001"), official_split("0522c0330"), official_split("0522c0878")
    ('train', 'val', 'test')
    """
    match = _CASE.match(case)
    if not match:
        raise ConversionError(f"{case!r} is not a PDDCA case name (0522cNNNN)")
    number = int(match.group(1))
    for (first, last), split in OFFICIAL_RANGES:
        if first <= number <= last:
            return split
    raise ConversionError(f"case {case} is outside every official PDDCA package range")


@clean_up_on_failure
def convert(src: Path, dst: Path, *, seed: int = 0) -> Path:
    """Convert PDDCA 1.4.1 into our layout; return ``dst``. ``seed`` is unused (official split)."""
    del seed
    src_resolved = Path(src).expanduser().resolve()
    case_dirs = sorted((d for d in src_resolved.rglob("0522c*") if d.is_dir() and _CASE.match(d.name)),
                       key=lambda d: d.name)
    if not case_dirs:
        raise ConversionError(f"no PDDCA case folders (0522cNNNN) under {src_resolved}")
    seen = {}
    for d in case_dirs:
        if d.name in seen:
            raise ConversionError(f"case {d.name} found twice: {seen[d.name]} and {d}")
        seen[d.name] = d
    read, skipped, names = [], {}, []
    for d in case_dirs:
        image = d / "img.nrrd"
        fcsvs = sorted(d.rglob("*.fcsv"))
        if not image.is_file():
            skipped[d.name] = f"{image} not found"
            continue
        if not fcsvs:
            skipped[d.name] = "no .fcsv landmark file"
            continue
        if len(fcsvs) > 1:
            raise ConversionError(f"{d}: several .fcsv files ({', '.join(p.name for p in fcsvs)}); "
                                  "expected one landmark file per case")
        try:
            lm = read_landmarks(fcsvs[0])
        except LandmarkFileError as err:
            raise ConversionError(str(err)) from None
        split = official_split(d.name)
        names.extend(n for n in lm.names if n not in names)
        read.append((d.name, image, lm, split))
    if not read:
        raise ConversionError(f"no PDDCA case under {src_resolved} has both img.nrrd and a .fcsv "
                              f"(skipped: {skipped})")
    writer = DatasetWriter(src, dst, name="PDDCA", landmarks=names, pairs=infer_lr_pairs(names),
                           channels=["CT"], image_suffix=".nrrd")
    for case, reason in skipped.items():
        writer.skip(case, reason)
    splits = {"train": [], "val": [], "test": []}
    for case, image, lm, split in read:
        splits[split].append(writer.add_case(case, image, lm))
    return writer.finish(splits, split_rule="official MICCAI 2015 packages: train=train, "
                                            "train_additional=val, test_offsite+test_onsite=test")
