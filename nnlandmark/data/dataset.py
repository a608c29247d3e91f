"""A landmark dataset on disk: discovery and validation.

The layout is documented in ``docs/dataset_layout.md``. :func:`load_dataset`
checks everything that can be checked before long work starts and raises one
:class:`DatasetError` listing every problem, each line naming the file.
It only reads: nothing is ever written into the dataset folder.

Example
-------
>>> import tempfile, pathlib
>>> from nnlandmark.data.synthetic import make_synthetic_dataset
>>> tmp = tempfile.TemporaryDirectory()
>>> folder = make_synthetic_dataset(pathlib.Path(tmp.name) / "syn", n_cases=2)
>>> ds = load_dataset(folder, progress=False)
>>> ds.spec.landmarks, len(ds.cases)
(['nose_tip', 'left_eye', 'right_eye', 'vertex', 'left_ear', 'right_ear'], 2)
>>> tmp.cleanup()
"""
from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nnlandmark.data.formats import LANDMARK_SUFFIXES
from nnlandmark.data.images import (DICOM_SERIES, IMAGE_SUFFIXES, canonical_image, dicom_series_ids,
                                    dicom_volume_slices, image_name, is_picture, picture_spacing, read_image,
                                    read_image_grid, split_suffix)
from nnlandmark.data.landmarks import LandmarkFileError, Landmarks
from nnlandmark.errors import DatasetError, InvalidInput
from nnlandmark.geometry import (ImageGrid, canonical_reorientation, index_to_world, orientation_code,
                                 reoriented_grid, world_to_index)

CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
#: values of ``landmark_units`` in dataset.json ("voxel" is "pixel" for 3D images)
LANDMARK_UNITS = ("mm", "pixel", "voxel")


def landmarks_from_pixels(landmarks: Landmarks, grid: ImageGrid) -> Landmarks:
    """``landmarks`` whose coordinates are 0-based pixel (voxel) indices ``(i, j[, k])`` of the
    image on ``grid``, as world LPS points: pixel (i, j) of a picture of spacing (sx, sy) is
    (i sx, j sy, 0) mm; a file with a geometry of its own places it by its origin and direction.

    >>> grid = ImageGrid(size=(30, 40, 1), spacing=(0.1, 0.2, 1.0), origin=(0.0, 0.0, 0.0), direction=np.eye(3))
    >>> landmarks_from_pixels(Landmarks(points={"sella": np.array([10.0, 5.0, 0.0])}), grid).point("sella").tolist()
    [1.0, 1.0, 0.0]
    """
    points = {name: index_to_world(point, grid) for name, point in landmarks.points.items()}
    return dataclasses.replace(landmarks, points=points, order=list(landmarks.order), planar=list(landmarks.planar))


@dataclass
class DatasetSpec:
    """The contents of ``dataset.json``."""

    name: str
    landmarks: list
    pairs: list = field(default_factory=list)
    biometry: dict = field(default_factory=dict)
    channels: list = field(default_factory=lambda: ["image"])
    #: pixel spacing (x, y mm) of PNG/JPEG images, which have none of their own (None: 1 mm)
    spacing: list | None = None
    #: what the landmark files' coordinates are: world ``"mm"`` (the default), or 0-based
    #: ``"pixel"`` indices (column, row[, slice]; ``"voxel"`` is the same), placed through each
    #: case's image (:func:`landmarks_from_pixels`)
    landmark_units: str = "mm"

    @classmethod
    def from_file(cls, path: Path) -> "DatasetSpec":
        path = Path(path)
        if not path.is_file():
            raise DatasetError(f"{path}: dataset.json not found")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(raw, dict):
            raise DatasetError(f"{path}: must hold a JSON object with 'landmarks' (and optionally 'pairs', "
                               f"'biometry', 'channels'), not a {type(raw).__name__}")
        problems = []
        names = raw.get("landmarks")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise DatasetError(f"{path}: 'landmarks' must be a non-empty list of landmark names")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            problems.append(f"{path}: duplicate landmark names {dupes}")

        def two_names(pair) -> bool:
            return isinstance(pair, list) and len(pair) == 2 and all(isinstance(n, str) and n in names
                                                                     for n in pair)

        pairs, biometry = raw.get("pairs", []), raw.get("biometry", {})
        if not isinstance(pairs, list):
            problems.append(f"{path}: 'pairs' must be a list of [left, right] landmark name lists")
            pairs = []
        for pair in pairs:
            if not two_names(pair):
                problems.append(f"{path}: pair {json.dumps(pair)} must name two landmarks from 'landmarks'")
        if not isinstance(biometry, dict):
            problems.append(f"{path}: 'biometry' must map each measurement to two landmark names, e.g. "
                            f'{{"width": ["{names[0]}", "{names[-1]}"]}}')
            biometry = {}
        for key, pair in biometry.items():
            if not two_names(pair):
                problems.append(f"{path}: biometry '{key}' must name two landmarks from 'landmarks', "
                                f"got {json.dumps(pair)}")
        channels = raw.get("channels", ["image"])
        if not isinstance(channels, list) or not channels:
            problems.append(f"{path}: 'channels' must be a non-empty list")
        spacing = raw.get("spacing")
        if spacing is not None:
            try:
                spacing = list(picture_spacing(spacing))
            except InvalidInput:
                problems.append(f"{path}: 'spacing' (of PNG/JPEG images) must be one or two positive numbers "
                                f"(mm per pixel along x and y), got {json.dumps(spacing)}")
        units = raw.get("landmark_units", "mm")
        if units not in LANDMARK_UNITS:
            problems.append(f"{path}: 'landmark_units' must be one of {', '.join(map(json.dumps, LANDMARK_UNITS))}, "
                            f"got {json.dumps(units)}")
        if problems:
            raise DatasetError(problems)
        return cls(name=str(raw.get("name", path.parent.name)), landmarks=names, pairs=[list(p) for p in pairs],
                   biometry={k: list(v) for k, v in biometry.items()}, channels=channels, spacing=spacing,
                   landmark_units=units)

    def to_dict(self) -> dict:
        out = {"name": self.name, "landmarks": self.landmarks, "pairs": self.pairs,
               "biometry": self.biometry, "channels": self.channels}
        if self.spacing is not None:
            out["spacing"] = self.spacing
        if self.landmark_units != "mm":
            out["landmark_units"] = self.landmark_units
        return out


@dataclass
class Case:
    """One validated case: its image file(s) per channel, landmarks and grid."""

    case_id: str
    image_files: list
    landmark_file: Path
    landmarks: Landmarks
    grid: ImageGrid
    #: the dataset's picture spacing (PNG/JPEG), None for images that carry their own
    spacing: list | None = None
    #: images are read in the canonical storage order (:meth:`LandmarkDataset.canonical`), and
    #: ``grid`` is that order's grid
    canonical_order: bool = False

    def read_image(self, channel: int = 0):
        """The SimpleITK image of one channel (a file or a DICOM series; a 2D image as one slice)."""
        image = read_image(self.image_files[channel], self.spacing)
        return canonical_image(image) if self.canonical_order else image


@dataclass
class LandmarkDataset:
    root: Path
    spec: DatasetSpec
    cases: list

    def canonical(self) -> "LandmarkDataset":
        """The same dataset with every case seen in the canonical storage order
        (:func:`nnlandmark.data.images.canonical_image`): what nnU-Net is given. Landmarks are world
        points, the same in any storage order.

        >>> import tempfile, pathlib, SimpleITK as sitk
        >>> from nnlandmark.data.synthetic import make_synthetic_dataset
        >>> folder = make_synthetic_dataset(pathlib.Path(tempfile.mkdtemp()) / "syn", n_cases=1)
        >>> file = load_dataset(folder, progress=False).cases[0].image_files[0]
        >>> sitk.WriteImage(sitk.Flip(sitk.ReadImage(str(file)), [True, False, True]), str(file))  # stored RPI
        >>> stored = load_dataset(folder, progress=False)
        >>> stored.orientations(), stored.canonical().cases[0].read_image().GetDirection()[::4]
        ({'RPI': 1}, (1.0, 1.0, 1.0))
        """
        cases = []
        for case in self.cases:
            grid = reoriented_grid(case.grid, canonical_reorientation(case.grid))
            cases.append(replace(case, grid=grid, canonical_order=True))
        return replace(self, cases=cases)

    def orientations(self) -> dict:
        """``{code: number of cases}``: the storage orders of the cases' images
        (:func:`nnlandmark.geometry.orientation_code`), most frequent first, then alphabetical."""
        counts = Counter(orientation_code(case.grid.direction) for case in self.cases)
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def discover_images(images_dir: Path, n_channels: int) -> tuple[dict, list]:
    """Map case id -> image files ordered by channel; plus problems found.

    With several channels every file must be named ``<case>_NNNN.<ext>``. With
    one channel, ``<case>.<ext>`` is the case itself, so an id such as
    ``patient_0001`` stays whole; only when *every* file ends in ``_0000``
    (nnU-Net's naming) is that suffix read as the channel.
    """
    problems, stems, strays = [], [], []
    for path in sorted(images_dir.iterdir()):
        split = image_name(path)
        if split is None:
            if not path.name.startswith("."):
                strays.append(path)
            continue
        stems.append((path, split))
    if sum(suffix == ".dcm" for _, (_, suffix) in stems) > 1:
        # .dcm files are single images (radiographs), unless they are the slices of one volume
        slices = dicom_volume_slices(images_dir)
        strays += sorted(slices)
        stems = [(path, split) for path, split in stems if path not in slices]
    if len(strays) > 1 and dicom_series_ids(images_dir):
        # slices of a series side by side: one line for all, not one per slice
        problems.append(f"{images_dir}: holds {len(strays)} DICOM slice files; put each series in a folder of "
                        f"its own ({images_dir}/<case>/), which is read as one image")
    else:
        problems += [f"{path}: not a recognised image file ({', '.join(IMAGE_SUFFIXES)}) or a folder with one "
                     f"{DICOM_SERIES}" for path in strays]
    nnunet_single = bool(stems) and all(stem.endswith("_0000") for _, (stem, _) in stems)
    by_case = {}
    for path, (stem, suffix) in stems:
        match = CHANNEL_SUFFIX.match(stem)
        if n_channels > 1 or nnunet_single:
            if not match:
                problems.append(f"{path}: {n_channels} channels expected, so image files must be named "
                                f"<case>_0000{suffix} ... <case>_{n_channels - 1:04d}{suffix}")
                continue
            case, channel = match["case"], int(match["channel"])
        else:
            case, channel = stem, 0
        earlier = by_case.setdefault(case, {}).get(channel)
        if earlier is not None:
            problems.append(f"{path}: same case and channel as {earlier.name} (case '{case}'); keep one of them")
            continue
        by_case[case][channel] = path
    cases = {}
    for case, channels in by_case.items():
        if sorted(channels) != list(range(n_channels)):
            problems.append(f"{images_dir / case}: expected {n_channels} channel file(s) "
                            f"{case}_0000..{case}_{n_channels - 1:04d}, found "
                            f"{[f'{case}_{c:04d}' for c in sorted(channels)]}")
            continue
        cases[case] = [channels[c] for c in range(n_channels)]
    return cases, problems


def discover_landmark_files(landmarks_dir: Path) -> tuple[dict, list]:
    problems, files = [], {}
    for path in sorted(landmarks_dir.iterdir()):
        split = split_suffix(path, LANDMARK_SUFFIXES)
        if split is None:
            if not path.name.startswith("."):
                problems.append(f"{path}: not a recognised landmark file ({', '.join(LANDMARK_SUFFIXES)})")
            continue
        if split[0] in files:
            problems.append(f"{path}: a second landmark file for case '{split[0]}' ({files[split[0]].name})")
            continue
        files[split[0]] = path
    return files, problems


NAMES_DIFFER = "landmark names differ from dataset.json"


def _some(names, shown: int = 6) -> str:
    """A list of names cut to a readable length: ``['a', 'b', ... (32 in all)]``."""
    if len(names) <= shown:
        return str(list(names))
    return str(list(names[:shown]))[:-1] + f", ... ({len(names)} in all)]"


def _once_for_all_files(problems: list) -> list:
    """The same name mismatch in many landmark files (a dataset.json that names the landmarks
    differently from every file) said once, with how many files share it."""
    by_detail = {}
    for line in problems:
        path, sep, detail = line.partition(f": {NAMES_DIFFER} ")
        if sep:
            by_detail.setdefault(detail, []).append(path)
    out = []
    for line in problems:
        path, sep, detail = line.partition(f": {NAMES_DIFFER} ")
        if not sep:
            out.append(line)
        elif by_detail[detail][0] == path:
            paths = by_detail[detail]
            more = f" (and {len(paths) - 1} more landmark files, the same way)" if len(paths) > 1 else ""
            out.append(f"{path}{more}: {NAMES_DIFFER} {detail}")
    return out


def check_case_landmarks(landmarks: Landmarks, spec: DatasetSpec, grid: ImageGrid, path: Path) -> list:
    """Problems with one case's landmarks: name set and position inside the image."""
    problems = []
    expected, found = set(spec.landmarks), set(landmarks.names)
    if expected != found:
        missing, extra = sorted(expected - found), sorted(found - expected)
        detail = "; ".join(s for s in (f"missing {_some(missing)}" if missing else "",
                                       f"not in dataset.json {_some(extra)}" if extra else "") if s)
        problems.append(f"{path}: {NAMES_DIFFER} ({detail})")
    if grid.is_2d:
        return problems + _check_planar_landmarks(landmarks, grid, path)
    if landmarks.planar:
        problems.append(f"{path}: landmark(s) {_some(landmarks.planar)} have 2 coordinates, but the image is 3D; "
                        "give x, y, z")
    for name, point in landmarks.points.items():
        index = world_to_index(point, grid)
        if not grid.contains_index(index):
            problems.append(f"{path}: landmark '{name}' at {np.round(point, 2).tolist()} mm (LPS) lies outside "
                            f"its image (voxel {np.round(index, 1).tolist()}, size {list(grid.size)})")
    return problems


#: how far (mm) a landmark of a 2D image may lie off the image's plane (rounding in files)
PLANE_TOLERANCE_MM = 1e-3


def _check_planar_landmarks(landmarks: Landmarks, grid: ImageGrid, path: Path) -> list:
    """Problems with the landmarks of a 2D image: each in the image's plane, inside the image."""
    problems = []
    plane_z = float(grid.origin[2])
    for name, point in landmarks.points.items():
        off = float(grid.plane_offset_mm(point))
        if abs(off) > PLANE_TOLERANCE_MM:
            where = "z = 0 or only x, y" if np.allclose(grid.direction[:, 2], [0, 0, 1]) and plane_z == 0 \
                else "a point in the image's plane"
            problems.append(f"{path}: landmark '{name}' at {np.round(point, 3).tolist()} mm (LPS) is a 3D point "
                            f"{abs(off):.3g} mm off the plane of its 2D image; give {where}")
            continue
        index = world_to_index(point, grid)
        if not grid.contains_index(index[:2].tolist() + [0.0]):
            problems.append(f"{path}: landmark '{name}' at {np.round(point, 2).tolist()} mm (LPS) lies outside "
                            f"its 2D image (pixel {np.round(index[:2], 1).tolist()}, size {list(grid.size[:2])}, "
                            f"spacing {list(grid.spacing[:2])} mm)")
    return problems


def _picture_spacing_problems(root: Path, spec: DatasetSpec, images: dict) -> list:
    """A dataset.json ``spacing`` is for pictures only: formats with a spacing of their own keep it."""
    if spec.spacing is None:
        return []
    others = [files[0] for files in images.values() if not is_picture(files[0])]
    if not others:
        return []
    return [f"{root / 'dataset.json'}: 'spacing' is for PNG/JPEG images only, and {others[0]} carries its own; "
            "remove 'spacing'"]


def load_dataset(root, read_pixels: bool = True, progress: bool = True) -> LandmarkDataset:
    """Discover and validate a dataset folder; raise :class:`DatasetError` listing every problem.

    Checks: dataset.json; an image for every landmark file and the reverse;
    readable 3D scalar images with positive spacing and an orthonormal
    direction, or 2D images (one slice), not both in one dataset; one geometry
    for all channels of a case; readable landmark files with exactly the
    dataset's names, finite coordinates, inside the image (on a 2D image: in
    its plane, as z = 0 or two coordinates; on a 3D image: three coordinates);
    one image file extension for the whole dataset; ``spacing`` in
    dataset.json only for pictures (PNG/JPEG).
    """
    from nnlandmark.data.formats import read_landmarks  # formats import this module's neighbours

    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    spec = DatasetSpec.from_file(root / "dataset.json")
    problems = []
    for sub in ("images", "landmarks"):
        if not (root / sub).is_dir():
            problems.append(f"{root / sub}: folder not found (see docs/dataset_layout.md)")
    if problems:
        raise DatasetError(problems)
    images, p1 = discover_images(root / "images", len(spec.channels))
    landmark_files, p2 = discover_landmark_files(root / "landmarks")
    problems += p1 + p2
    for case in sorted(set(images) - set(landmark_files)):
        problems.append(f"{images[case][0]}: image has no landmark file landmarks/{case}.<json|mrk.json|fcsv|csv>")
    for case in sorted(set(landmark_files) - set(images)):
        problems.append(f"{landmark_files[case]}: landmark file has no image images/{case}.<ext>")
    endings = {image_name(f[0])[1] for f in images.values()}
    if len(endings) > 1:
        problems.append(f"{root / 'images'}: mixed image file types {sorted(endings)}; use one")
    case_ids = sorted(set(images) & set(landmark_files))
    if not case_ids and not problems:
        problems.append(f"{root}: empty dataset (no image with a landmark file)")
    problems += _picture_spacing_problems(root, spec, images)

    cases, dimensions = [], {}
    for case in tqdm(case_ids, desc="checking cases", disable=not progress, leave=False):
        spacing = spec.spacing if is_picture(images[case][0]) else None
        try:
            grids = [read_image_grid(f, read_pixels, spacing=spacing) for f in images[case]]
        except DatasetError as e:
            problems += e.problems
            continue
        dimensions.setdefault(2 if grids[0].is_2d else 3, []).append(images[case][0])
        for f, g in zip(images[case][1:], grids[1:]):
            if g.size != grids[0].size or not np.allclose(g.spacing, grids[0].spacing) or \
                    not np.allclose(g.origin, grids[0].origin, atol=1e-3) or \
                    not np.allclose(g.direction, grids[0].direction, atol=1e-5):
                problems.append(f"{f}: geometry differs from channel 0 ({images[case][0].name})")
        try:
            landmarks = read_landmarks(landmark_files[case])
        except LandmarkFileError as e:
            problems.append(str(e))
            continue
        if spec.landmark_units != "mm":
            landmarks = landmarks_from_pixels(landmarks, grids[0])
        problems += check_case_landmarks(landmarks, spec, grids[0], landmark_files[case])
        cases.append(Case(case, images[case], landmark_files[case], landmarks, grids[0], spacing))
    if len(dimensions) > 1:
        fewer, more = sorted(dimensions, key=lambda d: (len(dimensions[d]), d))
        problems.append(f"{dimensions[fewer][0]}: a {fewer}D image in a dataset of {more}D images (such as "
                        f"{dimensions[more][0].name}; {len(dimensions[fewer])} {fewer}D, {len(dimensions[more])} "
                        f"{more}D); a dataset is either 2D or 3D")
    if problems:
        raise DatasetError(_once_for_all_files(problems))
    return LandmarkDataset(root=root, spec=spec, cases=cases)
