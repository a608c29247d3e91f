"""Shared machinery of the benchmark converters.

Every converter reads a benchmark *as downloaded* under ``src`` (never writing
there) and builds our dataset layout under ``dst``::

    dst/
      dataset.json            landmark order, pairs, biometry, channels
      images/<case>.<ext>
      landmarks/<case>.json   our JSON format, LPS millimetres
      splits.json             {"train": [...], "val": [...], "test": [...]}
      conversion_notes.json   source, split rule, assumptions, skipped cases, warnings

:class:`DatasetWriter` does the writing and checks; :func:`seeded_split` makes
reproducible (optionally stratified and grouped) splits.
"""
from __future__ import annotations

import functools
import json
import re
import shutil
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnlandmark.data.formats import write_landmarks
from nnlandmark.data.images import (  # noqa: F401 (read_image_grid: for the converters)
    IMAGE_SUFFIXES, grey_if_equal_channels, is_picture, picture_spacing, read_image_grid, split_suffix,
)
from nnlandmark.data.landmarks import Landmarks
from nnlandmark.errors import InvalidInput
from nnlandmark.geometry import GeometryError, ImageGrid, world_to_index


#: Default train/val/test fractions of a seeded split.
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)


class ConversionError(InvalidInput):
    """The benchmark under ``src`` does not have the expected layout or content."""


def clean_up_on_failure(convert):
    """Decorate a ``convert(src, dst, ...)``: check ``src`` first, leave no partial ``dst``.

    Only output this run created is removed on failure: when ``dst`` already
    held files the converter refuses to start, and nothing is deleted.
    """
    @functools.wraps(convert)
    def wrapper(src, dst, *args, **kwargs):
        if not Path(src).expanduser().is_dir():
            raise ConversionError(f"source folder {src} does not exist or is not a folder")
        dst_path = Path(dst).expanduser()
        existed = dst_path.exists()
        was_empty_dir = existed and dst_path.is_dir() and not any(dst_path.iterdir())
        try:
            return convert(src, dst, *args, **kwargs)
        except BaseException:
            if (not existed or was_empty_dir) and dst_path.is_dir():
                for child in list(dst_path.iterdir()):
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
                if not existed:
                    dst_path.rmdir()
            raise
    return wrapper


def image_suffix(path) -> str | None:
    """The image suffix of ``path`` (``.nii.gz`` before ``.gz``), or None."""
    split = split_suffix(path, IMAGE_SUFFIXES)
    return split[1] if split else None


def safe_case_id(text: str) -> str:
    """A case identifier usable as a file name: runs of other characters become ``_``.

    Examples
    --------
    >>> safe_case_id("AFIDs-HCP/sub 103111")
    'AFIDs-HCP_sub_103111'
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def prepare_destination(src, dst, subfolders: bool = True) -> tuple[Path, Path]:
    """Check ``src`` and ``dst`` and create ``dst`` (with ``images/`` and ``landmarks/``
    unless ``subfolders`` is False: a converter that writes several datasets under ``dst``).

    Raises
    ------
    ConversionError
        ``src`` is not a folder, ``dst`` exists and is not an empty folder, or one
        of the two lies inside the other (writing into ``src`` is never allowed).
    """
    src = Path(src).expanduser().resolve()
    dst = Path(dst).expanduser().resolve()
    if not src.is_dir():
        raise ConversionError(f"source folder {src} does not exist or is not a folder")
    if dst == src or src in dst.parents:
        raise ConversionError(f"destination {dst} lies inside the source {src}; choose a folder "
                              "outside the downloaded benchmark")
    if dst in src.parents:
        raise ConversionError(f"source {src} lies inside the destination {dst}")
    if dst.exists():
        if not dst.is_dir():
            raise ConversionError(f"destination {dst} exists and is not a folder")
        if any(dst.iterdir()):
            raise ConversionError(f"destination {dst} is not empty; refusing to write into it")
    dst.mkdir(parents=True, exist_ok=True)
    if subfolders:
        (dst / "images").mkdir(exist_ok=True)
        (dst / "landmarks").mkdir(exist_ok=True)
    return src, dst


def with_spacing(grid: ImageGrid, spacing) -> ImageGrid:
    """``grid`` with its spacing replaced (origin and direction kept)."""
    return ImageGrid(size=grid.size, spacing=tuple(float(s) for s in spacing),
                     origin=grid.origin, direction=grid.direction)


def seeded_split(cases, *, seed: int = 0, fractions=DEFAULT_FRACTIONS, strata=None,
                 groups=None) -> dict:
    """A reproducible train/val/test split.

    Parameters
    ----------
    cases : sequence of str
        Case identifiers.
    seed : int
        Seed of the shuffle; the same inputs and seed give the same split.
    fractions : (float, float, float)
        Target train/val/test fractions (normalised).
    strata : dict, optional
        ``case -> stratum``; each stratum is split on its own so that every
        split keeps the strata proportions (rounded per stratum).
    groups : dict, optional
        ``case -> group``; cases of one group (e.g. frames of one subject) land
        in the same split. A group takes the stratum of its first case.

    Returns
    -------
    dict
        ``{"train": [...], "val": [...], "test": [...]}``, each sorted.

    Examples
    --------
    >>> s = seeded_split([f"c{i}" for i in range(10)], seed=1)
    >>> [len(s[k]) for k in ("train", "val", "test")]
    [7, 1, 2]
    """
    cases = sorted(set(cases))
    strata = strata or {}
    groups = groups or {}
    frac = np.asarray(fractions, dtype=float)
    if frac.shape != (3,) or np.any(frac < 0) or frac.sum() <= 0:
        raise ValueError(f"fractions must be three non-negative numbers, got {fractions}")
    frac = frac / frac.sum()
    members = defaultdict(list)
    for case in cases:
        members[str(groups.get(case, case))].append(case)
    by_stratum = defaultdict(list)
    for group, group_cases in members.items():
        by_stratum[str(strata.get(group_cases[0], ""))].append(group)
    rng = np.random.default_rng(seed)
    out = {"train": [], "val": [], "test": []}
    for stratum in sorted(by_stratum):
        units = sorted(by_stratum[stratum])
        order = [units[i] for i in rng.permutation(len(units))]
        n = len(order)
        n_test = int(round(n * frac[2]))
        n_val = int(round(n * frac[1]))
        if n_test + n_val >= n:
            # small strata keep at least one training unit
            n_test = min(n_test, max(n - 1, 0))
            n_val = min(n_val, max(n - 1 - n_test, 0))
        for i, unit in enumerate(order):
            key = "test" if i < n_test else "val" if i < n_test + n_val else "train"
            out[key].extend(members[unit])
    return {k: sorted(v) for k, v in out.items()}


def check_splits(splits: dict, cases) -> None:
    """Raise :class:`ConversionError` unless ``splits`` partitions ``cases`` exactly."""
    seen = {}
    for key in ("train", "val", "test"):
        for case in splits.get(key, []):
            if case in seen:
                raise ConversionError(f"case {case!r} is in both {seen[case]!r} and {key!r}")
            seen[case] = key
    missing = sorted(set(cases) - set(seen))
    extra = sorted(set(seen) - set(cases))
    if missing or extra:
        raise ConversionError(f"split does not match the converted cases (missing {missing}, "
                              f"unknown {extra})")


class DatasetWriter:
    """Write one converted dataset under ``dst`` (see the module docstring).

    Parameters
    ----------
    src, dst : path-like
        Benchmark folder (read only) and output folder (must be absent or empty).
    name : str
        ``dataset.json`` name.
    landmarks : sequence of str
        Landmark order (output channel order).
    pairs, biometry, channels
        Optional ``dataset.json`` entries.
    image_suffix : str
        Extension of every written image (``.nii.gz``, ``.nrrd``, ``.png`` ...).
    spacing : float or (float, float), optional
        Pixel spacing (mm) of the dataset's PNG/JPEG images, written to
        ``dataset.json`` as ``spacing`` (pictures carry none of their own).
    """

    def __init__(self, src, dst, *, name: str, landmarks, pairs=(), biometry=None,
                 channels=None, image_suffix: str = ".nii.gz", spacing=None):
        self.src, self.dst = prepare_destination(src, dst)
        self.name = name
        self.landmark_names = list(landmarks)
        if len(set(self.landmark_names)) != len(self.landmark_names):
            raise ConversionError(f"duplicate landmark names in {self.landmark_names}")
        self.pairs = [list(p) for p in pairs]
        self.biometry = dict(biometry or {})
        self.channels = list(channels) if channels else None
        self.image_suffix = image_suffix
        self.picture_spacing = None if spacing is None else list(picture_spacing(spacing))
        self.cases: list[str] = []
        self.skipped: dict[str, str] = {}
        self.warnings: list[str] = []
        self.notes: dict = {"source": str(self.src)}

    # ----------------------------------------------------------------- cases
    def warn(self, message: str) -> None:
        """Record a warning in the notes and emit it."""
        self.warnings.append(message)
        warnings.warn(message, stacklevel=3)

    def skip(self, case: str, reason: str) -> None:
        """Record a source case that was left out, with the reason."""
        self.skipped[case] = reason
        self.warn(f"skipped {case}: {reason}")

    def add_case(self, case: str, image, landmarks: Landmarks, *, spacing=None,
                 grid: ImageGrid | None = None) -> str:
        """Write one case's image and landmarks; returns the case identifier.

        Parameters
        ----------
        case : str
            Identifier (sanitised with :func:`safe_case_id`, must be unique).
        image : path-like
            Source image file, copied byte for byte when its suffix matches and
            ``spacing`` is None, otherwise re-written with SimpleITK.
        landmarks : Landmarks
            LPS points; names outside the dataset's list raise, names not
            mentioned are written as unknown (``null``).
        spacing : sequence of 3 floats, optional
            Spacing that replaces the image header's (when the benchmark
            documents the true spacing separately).
        grid : ImageGrid, optional
            Grid of the written image, when the caller already read it; used
            for the inside-the-image check.
        """
        case_id = safe_case_id(case)
        if not case_id:
            raise ConversionError(f"empty case identifier from {case!r}")
        if case_id in self.cases:
            raise ConversionError(f"two source cases map to the same identifier {case_id!r}")
        unknown_names = [n for n in landmarks.names if n not in self.landmark_names]
        if unknown_names:
            raise ConversionError(f"case {case_id}: landmark(s) {unknown_names} are not in the "
                                  f"dataset's landmark list")
        image = Path(image)
        out_image = self.dst / "images" / f"{case_id}{self.image_suffix}"
        same_format = image_suffix(image) == self.image_suffix or \
            {image_suffix(image), self.image_suffix} == {".jpg", ".jpeg"}  # one format, two spellings
        if spacing is None and same_format:
            shutil.copyfile(image, out_image)
        else:
            try:
                img = sitk.ReadImage(str(image))
            except RuntimeError as err:
                raise ConversionError(f"{image}: cannot read image "
                                      f"({str(err).strip().splitlines()[-1]})") from None
            if spacing is not None:
                img.SetSpacing(tuple(float(s) for s in spacing))
            if is_picture(out_image):
                img = grey_if_equal_channels(img)
            sitk.WriteImage(img, str(out_image), useCompression=True)
        out = Landmarks(points={n: np.asarray(p, float) for n, p in landmarks.points.items()},
                        absent=[n for n in landmarks.absent if n not in landmarks.points],
                        unknown=[n for n in self.landmark_names
                                 if landmarks.status(n) in ("unknown", "missing")])
        write_landmarks(out, self.dst / "landmarks" / f"{case_id}.json")
        if grid is None:
            grid = read_image_grid(out_image, spacing=self.picture_spacing)
        self._check_inside(case_id, out, grid)
        self.cases.append(case_id)
        return case_id

    def _check_inside(self, case_id: str, landmarks: Landmarks, grid: ImageGrid) -> None:
        try:
            grid.validate()
        except GeometryError as err:
            raise ConversionError(f"case {case_id}: {err}") from None
        for name, point in landmarks.points.items():
            # a few voxels of slack: annotations on the last slice, rounding of voxel centres
            if not grid.contains_index(world_to_index(point, grid), margin=2.0):
                self.warn(f"case {case_id}: landmark {name!r} at {np.round(point, 2).tolist()} mm "
                          "lies outside the image (check the coordinate system)")

    # ----------------------------------------------------------------- finish
    def finish(self, splits: dict, *, split_rule: str, extra_notes: dict | None = None) -> Path:
        """Write ``dataset.json``, ``splits.json`` and ``conversion_notes.json``; return ``dst``."""
        if not self.cases:
            raise ConversionError(f"no case could be converted from {self.src}"
                                  + (f"; skipped: {self.skipped}" if self.skipped else ""))
        splits = {k: sorted(safe_case_id(c) for c in splits.get(k, [])) for k in ("train", "val", "test")}
        check_splits(splits, self.cases)
        dataset = {"name": self.name, "landmarks": self.landmark_names}
        if self.pairs:
            dataset["pairs"] = self.pairs
        if self.biometry:
            dataset["biometry"] = self.biometry
        if self.channels:
            dataset["channels"] = self.channels
        if self.picture_spacing is not None:
            dataset["spacing"] = self.picture_spacing
        (self.dst / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n")
        (self.dst / "splits.json").write_text(json.dumps(splits, indent=2) + "\n")
        notes = dict(self.notes)
        notes.update({"split_rule": split_rule, "n_cases": len(self.cases),
                      "skipped": self.skipped, "warnings": self.warnings,
                      "verified_against_real_data": False})
        notes.update(extra_notes or {})
        (self.dst / "conversion_notes.json").write_text(json.dumps(notes, indent=2) + "\n")
        return self.dst
