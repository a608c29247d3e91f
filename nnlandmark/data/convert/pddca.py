"""PDDCA 1.4.1: head-and-neck CT (RTOG 0522) with five bony landmarks.

Expected input (the three ``PDDCA-1.4.1_part*.zip`` archives extracted in one
folder, at any depth)::

    src/.../0522c0001/img.nrrd
    src/.../0522c0001/<name>.fcsv               the landmark file(s) of the case
    src/.../0522c0001/structures/*.nrrd         (organ masks, ignored)

What is published: the dataset page (imagenglab.com/newsite/pddca) says 48
CTs "together with manual segmentation of ... and manual identification of
bony landmarks", details being in ``pddca.odt`` (not available to us). The
layout ``0522cNNNN/img.nrrd`` + ``structures/<organ>.nrrd`` is used by public
loaders (e.g. torch_em's PDDCA loader). The landmark files were read by the
nnLandmark conversion scripts (github.com/MIC-DKFZ/nnLandmark,
``dataset_conversion/nnLandmark/Dataset740_PDDCA``): they take every ``*.fcsv``
directly inside a case folder (merging several), name points by the ``label``
column, read coordinates as Slicer RAS, and found landmarks for 33 cases, all
in the ``train`` and ``train_additional`` packages (their published split
lists only 0522c0001-0479).

Assumptions (the landmark names and the ``.fcsv`` file names are not documented):

- Each case folder (name ``0522c<4 digits>``) holds ``img.nrrd`` and one or more
  Slicer ``.fcsv`` files (searched at any depth inside the case folder), merged;
  a name found in two files is an error. Their ``# CoordinateSystem`` header
  (RAS/LPS or the legacy ``0``/``1``) is honoured, and a file without it is read
  as RAS (Slicer's default before 4.11).
- Landmarks are named by the ``.fcsv`` ``label`` column. The dataset's landmark
  order is the first case's order, extended by names first seen later; a name a
  case lacks is *unknown* for it. Left/right pairs are inferred from ``L``/``R``
  (``left``/``right``) name tokens.
- A case folder without a ``.fcsv`` is skipped and listed in the notes.

Split, by the case-number ranges of the MICCAI 2015 challenge packages:
``train`` 0001-0328 -> train; ``train_additional`` 0329-0479 -> val;
``test_offsite`` 0555-0746 and ``test_onsite`` 0788-0878 -> test. A case
outside these ranges is an error. When no test-package case has landmarks
(as the nnLandmark scripts indicate for the release), a seeded 20 % of the
``train`` package becomes ``test`` and the notes say so.
"""
from __future__ import annotations

import re
from pathlib import Path

from nnlandmark.data.convert._common import (
    ConversionError, DatasetWriter, clean_up_on_failure, seeded_split,
)
from nnlandmark.data.formats import read_landmarks
from nnlandmark.data.landmarks import LandmarkFileError, Landmarks
from nnlandmark.data.pairs import propose_pairs

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
    """Convert PDDCA 1.4.1 into our layout; return ``dst``.

    ``seed`` only matters when the test packages have no landmarks (see the module docstring).
    """
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
        lm = Landmarks(source=d)
        for fcsv in fcsvs:
            try:
                part = read_landmarks(fcsv)
            except LandmarkFileError as err:
                raise ConversionError(str(err)) from None
            twice = [n for n in part.names if n in lm.names]
            if twice:
                raise ConversionError(f"{d}: landmark(s) {twice} appear in more than one .fcsv file "
                                      f"({', '.join(p.name for p in fcsvs)})")
            lm.points.update(part.points)
            lm.absent.extend(part.absent)
            lm.unknown.extend(part.unknown)
        split = official_split(d.name)
        names.extend(n for n in lm.names if n not in names)
        read.append((d.name, image, lm, split))
    if not read:
        raise ConversionError(f"no PDDCA case under {src_resolved} has both img.nrrd and a .fcsv "
                              f"(skipped: {skipped})")
    writer = DatasetWriter(src, dst, name="PDDCA", landmarks=names,
                           pairs=[list(p) for p in propose_pairs(names)],
                           channels=["CT"], image_suffix=".nrrd")
    for case, reason in skipped.items():
        writer.skip(case, reason)
    splits = {"train": [], "val": [], "test": []}
    for case, image, lm, split in read:
        splits[split].append(writer.add_case(case, image, lm))
    rule = "official MICCAI 2015 packages: train=train, train_additional=val, test_offsite+test_onsite=test"
    if not splits["test"] and len(splits["train"]) > 1:
        carved = seeded_split(splits["train"], seed=seed, fractions=(0.8, 0.0, 0.2))
        splits["train"], splits["test"] = carved["train"], carved["test"]
        rule += (f"; no test-package case has landmarks, so test = seeded 20% of the train package "
                 f"(seed={seed})")
        writer.warn("PDDCA: no case of the test packages (0555-0878) has a landmark file; "
                    f"test is a seeded 20% of the train package (seed={seed})")
    return writer.finish(splits, split_rule=rule)
