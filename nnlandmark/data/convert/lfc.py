"""LFC: fetal cerebellum landmarks on 3D MRI (Gong et al., JBHI 2025; code github.com/lhaof/LFC).

Expected input (the layout read by the benchmark's reference loader)::

    src/<split>/<case>.nii.gz
    src/<split>_label/<case>/<anything>_<n>.mrk.json     six files, n = measurement order

Read from the benchmark's code (github.com/lhaof/LFC: ``dataloader.py``,
``train_3d.py``, ``gestational_age_samples.csv``; the same loader is in
github.com/lhaof/DGMLD) and from the nnLandmark conversion scripts, which ran on
the released files (github.com/MIC-DKFZ/nnLandmark,
``dataset_conversion/nnLandmark/Dataset737_DMGLD_LFC``):

- ``<split>`` is ``train``, ``valid`` and ``test`` in the reference code
  (``training``/``val``/``validation``/``testing`` are accepted too); case
  folders are numbers (``001`` .. ``300`` in the LFC sample list, 120 train /
  60 val / 120 test; unpadded numbers in the DGMLD copy).
- Each annotation file is a Slicer markups JSON (``.mrk.json``) line: two
  control points (start, end) under ``markups[0].controlPoints[*].position``
  and the length under ``markups[0].measurements[0].value``. Sorted by the
  integer after the last ``_`` of their names, the six files are the
  measurements ``CBD, BBD, TCD, FOD, HDV, ADV``; landmarks are
  ``<measurement>_1`` (start) and ``<measurement>_2`` (end) -> 12 landmarks.
- Each markup's ``coordinateSystem`` (LPS or RAS, LPS when absent, as the
  nnLandmark scripts also assume) is honoured. The reference loader ignores it
  and the image direction; we do not.
- A case without exactly six annotation files is skipped (as the reference
  loader does) and listed in the notes. When a file's stored length differs
  from the distance of its two points by more than 0.5 mm, a warning is noted.
- Pairs for mirroring: the transverse measurements CBD, BBD and TCD, whose two
  endpoints lie on opposite sides.

Not published: the annotation files' name prefix (only the ``_<n>`` ending is
read) and which end of a line is "start".

The split is the folder split; when there is no validation folder, a seeded
10 % of the training cases becomes ``val``; a download without a test folder
(the DGMLD copy has ``train``/``valid`` only) gets an empty test split and a
warning.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from nnlandmark.data.convert._common import (
    ConversionError, DatasetWriter, clean_up_on_failure, seeded_split,
)
from nnlandmark.data.formats import read_markups_control_points
from nnlandmark.data.formats.json_formats import load_json
from nnlandmark.data.landmarks import LandmarkFileError, Landmarks

MEASUREMENTS = ("CBD", "BBD", "TCD", "FOD", "HDV", "ADV")
TRANSVERSE = ("CBD", "BBD", "TCD")
NAMES = [f"{m}_{e}" for m in MEASUREMENTS for e in (1, 2)]

_SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                "validation": "val", "test": "test", "testing": "test"}
_TRAILING_INT = re.compile(r"(\d+)$")


def _order_key(path: Path) -> int:
    stem = path.name[: -len(".mrk.json")]
    match = _TRAILING_INT.search(stem)
    if not match:
        raise ConversionError(f"{path}: file name does not end in a measurement number (<name>_<n>.mrk.json)")
    return int(match.group(1))


def _stored_length(path: Path):
    try:
        data = load_json(path)
        return float(data["markups"][0]["measurements"][0]["value"])
    except (LandmarkFileError, KeyError, IndexError, TypeError, ValueError):
        return None


def read_case(folder: Path) -> tuple[Landmarks, list]:
    """The 12 landmarks of one case folder and a list of length-check warnings."""
    files = sorted(folder.glob("*.mrk.json"), key=_order_key)
    if len(files) != len(MEASUREMENTS):
        raise ConversionError(f"{folder}: {len(files)} .mrk.json files, expected {len(MEASUREMENTS)}")
    lm, notes = Landmarks(source=folder), []
    for measurement, path in zip(MEASUREMENTS, files):
        try:
            points = read_markups_control_points(path)
        except LandmarkFileError as err:
            raise ConversionError(str(err)) from None
        if len(points) != 2:
            raise ConversionError(f"{path}: {len(points)} control points, expected 2 (start, end)")
        for end, (_, status, point) in zip((1, 2), points):
            name = f"{measurement}_{end}"
            if status == "present":
                lm.points[name] = point
            else:
                lm.unknown.append(name)
        stored = _stored_length(path)
        if stored is not None and all(f"{measurement}_{e}" in lm.points for e in (1, 2)):
            distance = float(np.linalg.norm(lm.points[f"{measurement}_1"] - lm.points[f"{measurement}_2"]))
            if abs(distance - stored) > 0.5:
                notes.append(f"{path}: stored length {stored:.2f} mm but the points are "
                             f"{distance:.2f} mm apart")
    return lm, notes


@clean_up_on_failure
def convert(src: Path, dst: Path, *, seed: int = 0) -> Path:
    """Convert the LFC benchmark into our layout; return ``dst``."""
    src_resolved = Path(src).expanduser().resolve()
    folders = {}
    for label_dir in sorted(src_resolved.glob("*_label")):
        split_name = label_dir.name[: -len("_label")]
        if label_dir.is_dir() and (src_resolved / split_name).is_dir():
            if split_name.lower() not in _SPLIT_NAMES:
                raise ConversionError(f"{label_dir}: unknown split folder {split_name!r}; expected "
                                      f"one of {sorted(_SPLIT_NAMES)}")
            folders[split_name] = _SPLIT_NAMES[split_name.lower()]
    if not folders:
        raise ConversionError(f"{src_resolved}: expected <split>/ image folders with matching "
                              "<split>_label/ annotation folders (e.g. train/ and train_label/)")
    writer = DatasetWriter(src, dst, name="LFC", landmarks=NAMES,
                           pairs=[[f"{m}_1", f"{m}_2"] for m in TRANSVERSE],
                           biometry={m: [f"{m}_1", f"{m}_2"] for m in MEASUREMENTS},
                           channels=["T2w"], image_suffix=".nii.gz")
    splits = {"train": [], "val": [], "test": []}
    for split_name, split in folders.items():
        for case_folder in sorted(p for p in (src_resolved / f"{split_name}_label").iterdir() if p.is_dir()):
            case = case_folder.name
            image = src_resolved / split_name / f"{case}.nii.gz"
            if not image.is_file():
                writer.skip(case, f"image {image} not found")
                continue
            n_files = len(list(case_folder.glob("*.mrk.json")))
            if n_files != len(MEASUREMENTS):
                writer.skip(case, f"{n_files} annotation files, expected {len(MEASUREMENTS)}")
                continue
            lm, notes = read_case(case_folder)
            for note in notes:
                writer.warn(note)
            splits[split].append(writer.add_case(case, image, lm))
    rule = "official folders"
    if "test" not in folders.values():
        writer.warn(f"{src_resolved}: no test/ folder; the test split is empty")
    if not splits["val"] and len(splits["train"]) > 1:
        carved = seeded_split(splits["train"], seed=seed, fractions=(0.9, 0.1, 0.0))
        splits["train"], splits["val"] = carved["train"], carved["val"]
        rule += f"; val = seeded 10% of train (seed={seed})"
    return writer.finish(splits, split_rule=rule)
