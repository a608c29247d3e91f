"""ISBI 2015 cephalometric challenge: 19 landmarks on 400 lateral cephalograms (Wang et al. 2016).

Expected input (the challenge's published layout)::

    src/[one sub-folder/]
      RawImage/TrainingData/001.bmp .. 150.bmp     (or .jpg/.jpeg/.png)
      RawImage/Test1Data/151.bmp .. 300.bmp
      RawImage/Test2Data/301.bmp .. 400.bmp
      AnnotationsByMD/400_senior/001.txt .. 400.txt
      AnnotationsByMD/400_junior/001.txt .. 400.txt

Each annotation file starts with 19 lines ``x,y``: the landmarks in the order
of :data:`NAMES` (the challenge paper's numbering 1-19), in pixels of the
1935 x 2400 image, x along the columns (to the right), y along the rows
(down), 0-based, at 0.1 mm per pixel (:data:`PIXEL_SPACING_MM`). Lines after
the 19th (the original release adds classification labels there) are
ignored. Pixel ``(x, y)`` is the world point ``(0.1 x, 0.1 y, 0)`` mm, the
point :mod:`nnlandmark.data.images` gives that pixel of a picture with
``spacing`` 0.1. Checked on the real files: drawn on the images, the points
land on their anatomy (sella in the sella turcica, menton at the lowest point
of the chin, ...).

The ground truth (``ground_truth``) is the mean of the two doctors
(``"mean"``, what most papers since 2019 use), or one doctor's points
(``"senior"``, ``"junior"``).

Output: three datasets, one per challenge folder, so that ``prepare`` sees
only the training images::

    dst/train/   150 cases (TrainingData): dataset.json, images/, landmarks/, splits.json (all "train")
    dst/test1/   150 cases (Test1Data)     ... splits.json (all "test")
    dst/test2/   100 cases (Test2Data)
    dst/<split>/doctors/{senior,junior}/<case>.json   each doctor's own points (our JSON, mm)
    dst/conversion_notes.json

Images stay pictures: JPEG and PNG files are copied byte for byte (a JPEG
re-encoded losslessly would be larger and no better), BMP files (which
nnlandmark does not read) are written as lossless PNG, grey when their three
colour channels are equal. Their spacing is ``dataset.json``'s ``spacing``
(0.1 mm), which a model keeps for the pictures it predicts.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from nnlandmark.data.convert._common import (
    ConversionError, DatasetWriter, clean_up_on_failure, prepare_destination,
)
from nnlandmark.data.formats import write_landmarks
from nnlandmark.data.landmarks import Landmarks

#: The 19 landmarks in the order of the annotation files (Wang et al. 2016, Table 1).
NAMES = ("sella", "nasion", "orbitale", "porion", "subspinale", "supramentale", "pogonion", "menton",
         "gnathion", "gonion", "lower_incisal_incision", "upper_incisal_incision", "upper_lip", "lower_lip",
         "subnasale", "soft_tissue_pogonion", "posterior_nasal_spine", "anterior_nasal_spine", "articulare")
#: The challenge's pixel size (mm), the same along both axes.
PIXEL_SPACING_MM = 0.1
#: challenge image folder -> our dataset folder and its split
FOLDERS = {"TrainingData": ("train", "train"), "Test1Data": ("test1", "test"), "Test2Data": ("test2", "test")}
#: doctor -> annotation folder
DOCTORS = {"senior": "400_senior", "junior": "400_junior"}
GROUND_TRUTHS = ("mean", "senior", "junior")
_SOURCE_SUFFIXES = (".bmp", ".jpg", ".jpeg", ".png")
_POINT = re.compile(r"^\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*$")


def read_annotation(path: Path) -> np.ndarray:
    """The ``(19, 2)`` pixel coordinates ``(x, y)`` of one annotation file.

    Raises
    ------
    ConversionError
        Fewer than 19 leading ``x,y`` lines, or a coordinate that is not a
        finite number.
    """
    try:
        lines = Path(path).read_text().splitlines()
    except UnicodeDecodeError:
        raise ConversionError(f"{path}: not a text file of 'x,y' lines") from None
    points = []
    for number, line in enumerate(lines[: len(NAMES)], start=1):
        match = _POINT.match(line)
        try:
            xy = [float(match.group(1)), float(match.group(2))] if match else None
        except ValueError:
            xy = None
        if xy is None or not np.all(np.isfinite(xy)):
            raise ConversionError(f"{path}: line {number} is {line.strip()!r}, expected 'x,y' pixel coordinates")
        points.append(xy)
    if len(points) < len(NAMES):
        raise ConversionError(f"{path}: {len(points)} 'x,y' lines, expected {len(NAMES)} (one per landmark)")
    return np.asarray(points)


def pixels_to_landmarks(pixels: np.ndarray, source=None) -> Landmarks:
    """Landmarks in LPS mm of ``(19, 2)`` pixel coordinates: ``(0.1 x, 0.1 y, 0)``.

    Examples
    --------
    >>> lm = pixels_to_landmarks(np.tile([[835.0, 990.0]], (19, 1)))
    >>> lm.point("sella").tolist()
    [83.5, 99.0, 0.0]
    """
    return Landmarks(points={name: np.array([x * PIXEL_SPACING_MM, y * PIXEL_SPACING_MM, 0.0])
                             for name, (x, y) in zip(NAMES, pixels)}, source=source)


def _root(src: Path) -> Path:
    def looks_right(folder: Path) -> bool:
        return (folder / "RawImage").is_dir() and (folder / "AnnotationsByMD").is_dir()
    if looks_right(src):
        return src
    candidates = [d for d in sorted(src.iterdir()) if d.is_dir() and looks_right(d)]
    if len(candidates) == 1:
        return candidates[0]
    raise ConversionError(f"{src}: expected the challenge layout RawImage/{{TrainingData,Test1Data,Test2Data}}/ and "
                          "AnnotationsByMD/{400_senior,400_junior}/ (optionally inside one sub-folder)")


def _images(folder: Path) -> dict:
    """case -> image file of one challenge folder; two images of one case are an error."""
    found = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in _SOURCE_SUFFIXES:
            if path.stem in found:
                raise ConversionError(f"{folder}: case {path.stem!r} has two images, {found[path.stem].name} "
                                      f"and {path.name}")
            found[path.stem] = path
    return found


@clean_up_on_failure
def convert(src: Path, dst: Path, *, seed: int = 0, ground_truth: str = "mean") -> Path:
    """Convert the ISBI 2015 cephalometric challenge data into three datasets; return ``dst``.

    ``seed`` is unused (the split is the challenge's) and kept for a uniform signature.
    """
    del seed
    if ground_truth not in GROUND_TRUTHS:
        raise ConversionError(f"--ground-truth: {ground_truth!r} is not one of {', '.join(GROUND_TRUTHS)}")
    src_root = _root(Path(src).expanduser().resolve())
    annotations = {doctor: src_root / "AnnotationsByMD" / folder for doctor, folder in DOCTORS.items()}
    needed = list(DOCTORS) if ground_truth == "mean" else [ground_truth]
    for doctor in needed:
        if not annotations[doctor].is_dir():
            raise ConversionError(f"{annotations[doctor]}: folder not found (the {doctor} doctor's annotations, "
                                  f"needed for --ground-truth {ground_truth})")
    present = {name: src_root / "RawImage" / name for name in FOLDERS if (src_root / "RawImage" / name).is_dir()}
    if not present:
        raise ConversionError(f"{src_root / 'RawImage'}: none of the folders {', '.join(FOLDERS)}")
    images = {name: _images(folder) for name, folder in present.items()}
    suffixes = {p.suffix.lower() for found in images.values() for p in found.values()}
    if not suffixes:
        raise ConversionError(f"{src_root / 'RawImage'}: no .bmp, .jpg or .png image in {', '.join(present)}")
    # one extension per dataset: JPEG and PNG are kept, BMP becomes PNG; a mix is all written as PNG
    out_suffix = ".jpg" if suffixes <= {".jpg", ".jpeg"} else ".png"
    _, dst_root = prepare_destination(src, dst, subfolders=False)

    written, all_warnings = {}, []
    for challenge_folder, (name, split) in FOLDERS.items():
        if challenge_folder not in images:
            all_warnings.append(f"{src_root / 'RawImage' / challenge_folder}: not found; no {name}/ dataset")
            continue
        writer = DatasetWriter(src, dst_root / name, name=f"ISBI2015_{name}", landmarks=NAMES,
                               channels=["radiograph"], image_suffix=out_suffix, spacing=PIXEL_SPACING_MM)
        doctor_points = {}
        for case, image in images[challenge_folder].items():
            files = {d: annotations[d] / f"{case}.txt" for d in DOCTORS}
            lacking = [str(files[d]) for d in needed if not files[d].is_file()]
            if lacking:
                writer.skip(case, f"no annotation file {', '.join(lacking)}")
                continue
            pixels = {d: read_annotation(f) for d, f in files.items() if f.is_file()}
            gt = (pixels["senior"] + pixels["junior"]) / 2.0 if ground_truth == "mean" else pixels[ground_truth]
            case_id = writer.add_case(case, image, pixels_to_landmarks(gt, source=files[needed[0]]))
            doctor_points[case_id] = pixels
        for case_id, pixels in doctor_points.items():
            for doctor, xy in pixels.items():
                out = writer.dst / "doctors" / doctor / f"{case_id}.json"
                out.parent.mkdir(parents=True, exist_ok=True)
                write_landmarks(pixels_to_landmarks(xy), out)
        splits = {"train": [], "val": [], "test": []}
        splits[split] = list(writer.cases)
        rule = f"the challenge's {challenge_folder} folder"
        writer.finish(splits, split_rule=rule, extra_notes={
            "ground_truth": ground_truth, "pixel_spacing_mm": PIXEL_SPACING_MM,
            "verified_against_real_data": True})
        written[name] = {"challenge_folder": challenge_folder, "cases": len(writer.cases),
                         "skipped": writer.skipped}
        all_warnings += writer.warnings
    if not any(w["cases"] for w in written.values()):
        raise ConversionError(f"{src_root}: no case could be converted")
    notes = {"source": str(src_root), "benchmark": "ISBI 2015 cephalometric challenge (Wang et al. 2016)",
             "ground_truth": ground_truth, "pixel_spacing_mm": PIXEL_SPACING_MM,
             "images": ("copied byte for byte" if suffixes == {out_suffix} or suffixes <= {".jpg", ".jpeg"}
                        else f"{', '.join(sorted(suffixes))} written as lossless PNG (PNG copied)"),
             "datasets": written, "doctors": "each dataset's doctors/senior and doctors/junior hold both doctors' "
                                             "points (mm)",
             "warnings": all_warnings, "verified_against_real_data": True}
    (dst_root / "conversion_notes.json").write_text(json.dumps(notes, indent=2) + "\n")
    return dst_root

