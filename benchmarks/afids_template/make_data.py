"""Real-anatomy landmark data for the AFIDs benchmark, generated from one expert-annotated template.

Source
------
The PyPI wheel ``autoafids==0.1.4`` (MIT licence) ships the MNI152NLin2009cAsym T1w
template at 1 mm (193 x 229 x 193 voxels, whole head) together with two annotations of
the 32 anatomical fiducials (AFIDs) on it, as 3D Slicer ``.fcsv`` files in RAS mm:

* ``..._desc-groundtruth_afids.fcsv``: the set used as ground truth here;
* ``..._T1w.fcsv``: a second annotation of the same points; its distance to the first is
  the human noise floor reported by :func:`noise_floor`.

What a generated case is
------------------------
Every case is the *same anatomy* seen through a different random spatial transform and
intensity change, so the benchmark measures robustness to pose, deformation, field of
view and contrast, not to variation between people. For each case:

1. A random affine ``F_aff`` (template -> case world space): rotation about a random
   axis by up to ``rotation_deg`` degrees, per-axis scaling in ``scale_range``, and a
   per-axis translation of up to ``translation_mm``, all about the template centre.
2. A random smooth displacement field ``u`` in template space: white noise smoothed with
   a Gaussian of ``elastic_sigma_mm``, rescaled so its largest displacement is drawn
   from ``elastic_max_mm``.
3. Resampling. An image is resampled by asking, for every output voxel ``y``, where it
   comes from in the template: ``T(y) = D(A(y))`` with ``A = F_aff^-1`` and
   ``D(z) = z + u(z)`` (one SimpleITK composite transform). The template is first
   smoothed with a Gaussian matched to the output voxel size, so the downsampling does
   not alias.
4. Intensity: gamma, a smooth multiplicative bias field, Gaussian noise and a global
   scale, applied on the output grid; stored as int16 like most MR data.

Landmarks need the opposite direction, template -> case. The elastic part has no
closed-form inverse, so for a template point ``p`` we solve ``z + u(z) = p`` by
fixed-point iteration (``z <- p - u(z)``; it converges because the smoothed field's
gradient is far below 1) and set ``y = F_aff(z)``. Each case then checks the round
trip: ``T(y)`` must land within :data:`MAX_ROUND_TRIP_MM` of ``p``; the residuals are
stored in ``generation.json``.

Output (the nnlandmark dataset layout, ``docs/dataset_layout.md``)
--------------------------------------------------------------------
``images/<case>.nii.gz``, ``landmarks/<case>.json`` (LPS mm), ``dataset.json`` (the 32
AFID acronyms of nnlandmark's AFIDs converter in AFID order 1-32, its left/right ``pairs``
and the AC-PC biometry), ``splits.json``
(``{"train": [...], "test": [...]}``) and ``generation.json`` (source, parameters and
round-trip residual of every case).

Entry points for the benchmark orchestration: :func:`build_dataset` (returns a
:class:`GeneratedDataset`), :func:`read_splits`, :func:`noise_floor`.

CLI::

    python benchmarks/afids_template/make_data.py --out DIR --n-train 24 --n-test 8 \\
        --voxel-mm 2.5 --seed 0
    python benchmarks/afids_template/make_data.py --noise-floor
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import subprocess
import sys
import time
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from nnlandmark.data.convert.afids import AFIDS, BIOMETRY, PAIRS
from nnlandmark.data.formats import read_landmarks, write_landmarks
from nnlandmark.data.landmarks import Landmarks
from nnlandmark.geometry import ImageGrid, index_to_world, world_to_index

HERE = Path(__file__).resolve().parent
#: Gitignored working folder (``/benchmarks/**/work/``) holding the downloaded wheel.
DEFAULT_CACHE = HERE / "work" / "cache"

AUTOAFIDS_VERSION = "0.1.4"
_RESOURCES = "autoafids/resources"
TEMPLATE_IMAGE = f"{_RESOURCES}/tpl-MNI152NLin2009cAsym_res-01_T1w.nii.gz"
#: the same template in T2w contrast (same grid, same anatomy): test cases in a contrast never trained on
TEMPLATE_IMAGES = {"T1w": TEMPLATE_IMAGE, "T2w": f"{_RESOURCES}/tpl-MNI152NLin2009cAsym_res-01_T2w.nii.gz"}
TEMPLATE_GROUND_TRUTH = f"{_RESOURCES}/tpl-MNI152NLin2009cAsym_res-01_desc-groundtruth_afids.fcsv"
TEMPLATE_SECOND_RATER = f"{_RESOURCES}/tpl-MNI152NLin2009cAsym_res-01_T1w.fcsv"

#: Largest allowed distance (mm) between a template landmark and the resampling
#: transform applied to its generated position.
MAX_ROUND_TRIP_MM = 0.05

#: Seed-stream ids of the two splits: train case i draws from SeedSequence(seed,
#: spawn_key=(0, i)) and test case i from (1, i), so the splits never share a stream.
_SPLIT_STREAM = {"train": 0, "test": 1}


# --------------------------------------------------------------------------- source data
def fetch_autoafids(cache_dir: Path | str = DEFAULT_CACHE) -> Path:
    """Return the unpacked ``autoafids`` wheel folder, downloading the wheel once.

    The wheel is fetched with ``pip download --no-deps`` (pure Python, 27 MB) and reused
    from ``cache_dir`` afterwards; only the three resource files are extracted.
    Raises ``RuntimeError`` when pip cannot fetch it.
    """
    cache_dir = Path(cache_dir)
    root = cache_dir / f"autoafids-{AUTOAFIDS_VERSION}"
    members = (*TEMPLATE_IMAGES.values(), TEMPLATE_GROUND_TRUTH, TEMPLATE_SECOND_RATER)
    if all((root / m).is_file() for m in members):
        return root
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache_dir.glob(f"autoafids-{AUTOAFIDS_VERSION}-*.whl"))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               f"autoafids=={AUTOAFIDS_VERSION}", "-d", str(cache_dir)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(cache_dir.glob(f"autoafids-{AUTOAFIDS_VERSION}-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise RuntimeError(f"could not download autoafids=={AUTOAFIDS_VERSION}: "
                               f"{proc.stderr.strip()[-500:]}")
    with zipfile.ZipFile(wheels[0]) as zf:
        for m in members:
            zf.extract(m, root)
    return root


def _fcsv_label_descriptions(path: Path) -> list:
    """``(label, desc)`` of every row of a Slicer fcsv, in file order.

    nnlandmark's reader names points by ``label`` (here "1".."32") and does not keep
    ``desc``, which holds the AFID names (AC, PC, ...). Coordinates are never read here:
    they come from :func:`nnlandmark.data.formats.read_landmarks` (RAS -> LPS).
    """
    rows, columns = [], None
    for line in Path(path).read_text().splitlines():
        if line.startswith("#"):
            if line.lstrip("# ").startswith("columns"):
                columns = [c.strip() for c in line.split("=", 1)[1].split(",")]
            continue
        if line.strip():
            if columns is None or "desc" not in columns or "label" not in columns:
                raise ValueError(f"{path}: no '# columns' header with label and desc")
            fields = next(csv.reader([line]))
            rows.append((fields[columns.index("label")].strip(), fields[columns.index("desc")].strip()))
    return rows


def load_template_landmarks(fcsv: Path) -> tuple[list, np.ndarray, list]:
    """Read an AFIDs fcsv -> (names in AFID order, (32, 3) LPS mm array, raw descriptions).

    Names are the AFID acronyms of nnlandmark's AFIDs converter
    (:data:`nnlandmark.data.convert.afids.AFIDS`: AC, PC, ICS, ..., ROSF, LOSF), looked up by
    the ``label`` column (the AFID number 1-32), so that these data and a converted AFIDs
    release share landmark names. The rows must be AFIDs 1-32 in order.
    """
    lm = read_landmarks(fcsv)
    rows = _fcsv_label_descriptions(fcsv)
    labels = [label for label, _ in rows]
    if labels != [str(i) for i in range(1, len(AFIDS) + 1)]:
        raise ValueError(f"{fcsv}: expected AFID labels 1-{len(AFIDS)} in order, got {labels}")
    # the reader names numbered rows by their description (desc), in file order
    descriptions = [desc for _, desc in rows]
    if lm.names != descriptions or sorted(lm.points) != sorted(descriptions):
        raise ValueError(f"{fcsv}: reader and desc column disagree")
    points = np.array([lm.points[desc] for desc in descriptions], dtype=float)
    return list(AFIDS), points, [desc for _, desc in rows]


def noise_floor(cache_dir: Path | str = DEFAULT_CACHE, verbose: bool = True) -> dict:
    """Distance between the template's two AFID annotations (a human noise floor).

    Returns ``{"per_landmark_mm": {name: d}, "mean_mm", "median_mm", "max_mm"}``; prints a
    table when ``verbose``. Points are matched by position in the file (AFID 1-32).
    """
    root = fetch_autoafids(cache_dir)
    names, gt, descs = load_template_landmarks(root / TEMPLATE_GROUND_TRUTH)
    names2, other, _ = load_template_landmarks(root / TEMPLATE_SECOND_RATER)
    if names2 != names:
        raise ValueError("the two AFID annotation files list different landmarks")
    d = np.linalg.norm(gt - other, axis=1)
    result = {"per_landmark_mm": {n: float(v) for n, v in zip(names, d)},
              "mean_mm": float(d.mean()), "median_mm": float(np.median(d)), "max_mm": float(d.max())}
    if verbose:
        print("AFIDs noise floor: groundtruth_afids.fcsv vs T1w.fcsv on the MNI template")
        for i, (n, desc, v) in enumerate(zip(names, descs, d), start=1):
            print(f"  {i:2d} {n:7s} {desc:32s} {v:5.2f} mm")
        print(f"  mean {result['mean_mm']:.2f} mm, median {result['median_mm']:.2f} mm, "
              f"max {result['max_mm']:.2f} mm")
    return result


# --------------------------------------------------------------------------- generation
@dataclass
class GenerationParams:
    """Ranges of the random transforms; every draw is uniform within its range."""

    voxel_mm: float = 2.5
    rotation_deg: float = 12.0               # about a random axis, |angle| <= this
    scale_range: tuple = (0.9, 1.1)          # per axis
    translation_mm: float = 8.0              # per axis, |t| <= this
    elastic_sigma_mm: float = 16.0           # smoothness of the displacement field
    elastic_max_mm: tuple = (2.0, 4.0)       # largest displacement of a case
    elastic_grid_mm: float = 4.0             # spacing of the displacement-field grid
    fov_margin_mm: tuple = (0.0, 12.0)       # extra field of view per side, varies the position in the array
    gamma_range: tuple = (0.7, 1.5)          # log-uniform
    bias_strength: tuple = (0.0, 0.3)        # max |log bias| of the multiplicative field
    bias_sigma_mm: float = 50.0              # smoothness of the bias field
    noise_std: tuple = (0.01, 0.04)          # relative to the template's 99.5th percentile
    intensity_scale: tuple = (500.0, 2000.0)  # stored value of the normalised intensity 1.0


@dataclass
class CaseRecord:
    """Provenance of one generated case (written to ``generation.json``)."""

    case: str
    split: str
    index: int
    spawn_key: list
    rotation_axis: list
    rotation_deg: float
    scale: list
    translation_mm: list
    elastic_max_mm: float
    gamma: float
    bias_strength: float
    noise_std: float
    intensity_scale: float
    size: list
    round_trip_max_mm: float
    inversion_iterations: int


@dataclass
class GeneratedDataset:
    """What :func:`build_dataset` wrote."""

    root: Path
    names: list
    pairs: list
    train: list
    test: list
    max_round_trip_mm: float
    seconds: float
    records: list = field(default_factory=list)


def _rotation_matrix(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """Rodrigues' formula: rotation by ``angle_rad`` about unit vector ``axis``."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * k + (1 - np.cos(angle_rad)) * (k @ k)


def _world_bounds(grid: ImageGrid) -> np.ndarray:
    """(8, 3) world positions of the outer corners (voxel edges) of an image grid."""
    size = np.asarray(grid.size, float)
    corners = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], float)
    return index_to_world(corners * size - 0.5, grid)


class TemplateSource:
    """The template image (pre-smoothed for one voxel size) and its ground-truth AFIDs."""

    def __init__(self, root: Path, voxel_mm: float, contrast: str = "T1w"):
        image = sitk.ReadImage(str(root / TEMPLATE_IMAGES[contrast]), sitk.sitkFloat32)
        self.grid = ImageGrid.from_image(image)
        self.grid.validate()
        spacing = np.asarray(self.grid.spacing)
        # Gaussian whose FWHM turns the template's voxel into the output voxel
        # (sigma^2 = (out^2 - in^2) / (8 ln 2)): removes detail the coarser grid cannot hold.
        var = np.maximum(voxel_mm ** 2 - spacing ** 2, 0.0) / (8 * np.log(2))
        if np.any(var > 0):
            image = sitk.SmoothingRecursiveGaussian(image, np.sqrt(var).tolist())
        self.image = image
        arr = sitk.GetArrayViewFromImage(image)
        # Robust maximum, to express gamma and noise on a 0..1 scale.
        self.intensity_ref = float(np.percentile(arr, 99.5))
        self.names, self.points, self.descriptions = load_template_landmarks(root / TEMPLATE_GROUND_TRUTH)
        corners = _world_bounds(self.grid)
        self.bounds = np.stack([corners.min(0), corners.max(0)])
        self.center = corners.mean(0)
        for name, p in zip(self.names, self.points):
            if not self.grid.contains_index(world_to_index(p, self.grid), margin=0.0):
                raise ValueError(f"template landmark {name} lies outside the template image")


def _random_displacement_field(rng: np.random.Generator, source: TemplateSource,
                               params: GenerationParams, max_mm: float) -> sitk.Image:
    """A smooth random displacement field over the template's extent (plus a margin).

    White noise per component, smoothed with a Gaussian of ``elastic_sigma_mm``, then
    rescaled so the largest displacement vector is ``max_mm`` long. Returned as a
    float64 vector image in world (LPS) coordinates, as SimpleITK's
    DisplacementFieldTransform needs.
    """
    step = params.elastic_grid_mm
    margin = 2 * params.elastic_sigma_mm
    lo, hi = source.bounds[0] - margin, source.bounds[1] + margin
    size = np.ceil((hi - lo) / step).astype(int) + 1           # x, y, z
    noise = rng.standard_normal((3, *size[::-1]))              # component, z, y, x
    sigma_vox = params.elastic_sigma_mm / step
    field = np.stack([ndimage.gaussian_filter(c, sigma_vox, mode="reflect") for c in noise], axis=-1)
    field *= max_mm / np.linalg.norm(field, axis=-1).max()
    image = sitk.GetImageFromArray(field.astype(np.float64), isVector=True)
    image.SetSpacing([step] * 3)
    image.SetOrigin(lo.tolist())
    image.SetDirection(np.eye(3).ravel().tolist())
    return image


def _invert_displacement(transform: sitk.Transform, target: np.ndarray,
                         tol_mm: float = 1e-6, max_iter: int = 200) -> tuple[np.ndarray, int]:
    """Solve ``z + u(z) = target`` by fixed-point iteration ``z <- target - u(z)``.

    ``u`` is evaluated through the very transform used for resampling (same
    interpolation), so the result is exact up to ``tol_mm`` for that transform.
    Returns the solution and the number of iterations used.
    """
    z = np.array(target, float)
    for it in range(1, max_iter + 1):
        u = np.array(transform.TransformPoint(z.tolist())) - z
        z_new = target - u
        if np.linalg.norm(z_new - z) < tol_mm:
            return z_new, it
        z = z_new
    raise RuntimeError(f"displacement inversion did not converge for {target.tolist()}")


def _smooth_random_field(rng: np.random.Generator, shape_zyx, spacing_mm: float,
                         sigma_mm: float) -> np.ndarray:
    """Smooth noise on an array grid, scaled to max |value| = 1.

    Made on a grid about sigma/4 coarse and upsampled linearly: a large Gaussian on the
    full grid would cost seconds per case for no visible difference.
    """
    factor = max(1, int(sigma_mm / spacing_mm / 4))
    coarse_shape = [max(2, int(np.ceil(s / factor)) + 1) for s in shape_zyx]
    coarse = ndimage.gaussian_filter(rng.standard_normal(coarse_shape),
                                     sigma_mm / (spacing_mm * factor), mode="reflect")
    zoom = [s / c for s, c in zip(shape_zyx, coarse_shape)]
    full = ndimage.zoom(coarse, zoom, order=1, mode="nearest", grid_mode=True)
    full = full[tuple(slice(0, s) for s in shape_zyx)]
    full -= full.mean()
    return full / max(np.abs(full).max(), 1e-12)


def generate_case(source: TemplateSource, params: GenerationParams, seed_seq: np.random.SeedSequence,
                  case: str, split: str, index: int) -> tuple[sitk.Image, Landmarks, CaseRecord]:
    """Draw one random case. Returns (int16 image, LPS landmarks, provenance record)."""
    rng = np.random.default_rng(seed_seq)
    # -- forward affine F_aff(x) = M (x - c) + c + t, template -> case world space
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    angle = rng.uniform(-params.rotation_deg, params.rotation_deg)
    scale = rng.uniform(*params.scale_range, size=3)
    translation = rng.uniform(-params.translation_mm, params.translation_mm, size=3)
    M = _rotation_matrix(axis, np.deg2rad(angle)) @ np.diag(scale)
    c = source.center
    M_inv = np.linalg.inv(M)

    def forward_affine(x):
        return (np.asarray(x) - c) @ M.T + c + translation

    # resampling affine A = F_aff^-1: y -> M^-1 (y - c - t) + c
    affine = sitk.AffineTransform(3)
    affine.SetMatrix(M_inv.ravel().tolist())
    affine.SetTranslation((c - M_inv @ (c + translation)).tolist())

    elastic_max = rng.uniform(*params.elastic_max_mm)
    field_image = _random_displacement_field(rng, source, params, elastic_max)
    displacement = sitk.DisplacementFieldTransform(field_image)
    # ITK composite transforms apply the last-added transform first: T(y) = D(A(y)).
    resampling = sitk.CompositeTransform([displacement, affine])

    # -- landmarks: template p -> z with z + u(z) = p -> y = F_aff(z)
    case_points, iterations = [], 0
    for p in source.points:
        z, it = _invert_displacement(displacement, p)
        iterations = max(iterations, it)
        case_points.append(forward_affine(z))
    case_points = np.array(case_points)
    back = np.array([resampling.TransformPoint(y.tolist()) for y in case_points])
    residual = float(np.linalg.norm(back - source.points, axis=1).max())
    if residual >= MAX_ROUND_TRIP_MM:
        raise RuntimeError(f"{case}: landmark round trip off by {residual:.4f} mm")

    # -- output grid: template direction, isotropic voxels, covering the moved template
    # box (corners moved by the affine, padded by the elastic maximum) plus a random margin.
    direction = source.grid.direction
    moved = forward_affine(_world_bounds(source.grid))
    local = moved @ direction                        # coordinates along the grid axes
    lo = local.min(0) - elastic_max - rng.uniform(*params.fov_margin_mm, size=3)
    hi = local.max(0) + elastic_max + rng.uniform(*params.fov_margin_mm, size=3)
    vox = params.voxel_mm
    size = np.ceil((hi - lo) / vox).astype(int)
    origin = (lo + vox / 2) @ direction.T            # centre of the first voxel, world
    grid = ImageGrid(size=size, spacing=(vox,) * 3, origin=origin, direction=direction)

    reference = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    reference.SetSpacing(grid.spacing)
    reference.SetOrigin(grid.origin)
    reference.SetDirection(grid.direction.ravel().tolist())
    moved_image = sitk.Resample(source.image, reference, resampling, sitk.sitkLinear, 0.0, sitk.sitkFloat32)

    # -- intensity: v in ~0..1, then gamma, bias, noise, global scale
    arr = sitk.GetArrayFromImage(moved_image) / source.intensity_ref
    np.clip(arr, 0.0, None, out=arr)
    gamma = float(np.exp(rng.uniform(*np.log(params.gamma_range))))
    arr **= gamma
    bias_strength = rng.uniform(*params.bias_strength)
    arr *= np.exp(bias_strength * _smooth_random_field(rng, arr.shape, vox, params.bias_sigma_mm))
    noise_std = rng.uniform(*params.noise_std)
    arr += rng.normal(0.0, noise_std, size=arr.shape)
    np.clip(arr, 0.0, None, out=arr)                 # magnitude images are non-negative
    intensity_scale = rng.uniform(*params.intensity_scale)
    arr = np.clip(np.rint(arr * intensity_scale), 0, np.iinfo(np.int16).max).astype(np.int16)
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(moved_image)

    for name, y in zip(source.names, case_points):
        if not grid.contains_index(world_to_index(y, grid), margin=0.0):
            raise RuntimeError(f"{case}: landmark {name} left the field of view")
    landmarks = Landmarks(points={n: np.asarray(y, float) for n, y in zip(source.names, case_points)})
    record = CaseRecord(
        case=case, split=split, index=index, spawn_key=list(seed_seq.spawn_key),
        rotation_axis=axis.round(6).tolist(), rotation_deg=float(angle), scale=scale.tolist(),
        translation_mm=translation.tolist(), elastic_max_mm=float(elastic_max), gamma=gamma,
        bias_strength=float(bias_strength), noise_std=float(noise_std),
        intensity_scale=float(intensity_scale), size=[int(s) for s in size],
        round_trip_max_mm=residual, inversion_iterations=iterations)
    return out, landmarks, record


def case_name(split: str, index: int) -> str:
    """``train_000``, ``test_000``, ..."""
    return f"{split}_{index:03d}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def build_dataset(out_dir: Path | str, n_train: int = 24, n_test: int = 8, voxel_mm: float = 2.5,
                  seed: int = 0, params: GenerationParams | None = None,
                  cache_dir: Path | str = DEFAULT_CACHE, verbose: bool = True,
                  contrast: str = "T1w") -> GeneratedDataset:
    """Generate the dataset into ``out_dir`` (created; existing case files are overwritten).

    ``contrast`` picks the template image (``T1w`` or ``T2w``); with the same seed, the
    cases of both contrasts have the same poses, deformations and intensity changes.

    ``voxel_mm`` overrides ``params.voxel_mm``. Case ``i`` of split ``s`` draws all its randomness from
    ``SeedSequence(seed, spawn_key=(stream[s], i))``, so a case does not depend on how
    many other cases are made, and train and test streams are disjoint.
    """
    t0 = time.perf_counter()
    # voxel_mm always wins over params.voxel_mm; the caller's params are not modified
    params = replace(params or GenerationParams(), voxel_mm=float(voxel_mm))
    root = fetch_autoafids(cache_dir)
    source = TemplateSource(root, params.voxel_mm, contrast)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "landmarks").mkdir(parents=True, exist_ok=True)

    splits = {"train": [], "test": []}
    records = []
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            name = case_name(split, i)
            seq = np.random.SeedSequence(seed, spawn_key=(_SPLIT_STREAM[split], i))
            image, landmarks, record = generate_case(source, params, seq, name, split, i)
            sitk.WriteImage(image, str(out / "images" / f"{name}.nii.gz"), useCompression=True)
            write_landmarks(landmarks, out / "landmarks" / f"{name}.json")
            splits[split].append(name)
            records.append(record)
            if verbose:
                print(f"  {name}: size {record.size}, rot {record.rotation_deg:+5.1f} deg, "
                      f"elastic {record.elastic_max_mm:.1f} mm, round trip {record.round_trip_max_mm:.2e} mm",
                      flush=True)

    pairs = [list(p) for p in PAIRS]
    dataset = {"name": "AFIDsTemplate", "landmarks": source.names, "pairs": pairs,
               "biometry": dict(BIOMETRY), "channels": [contrast]}
    (out / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n")
    (out / "splits.json").write_text(json.dumps(splits, indent=2) + "\n")
    max_rt = max((r.round_trip_max_mm for r in records), default=0.0)
    generation = {
        "source": {"package": f"autoafids=={AUTOAFIDS_VERSION}", "image": TEMPLATE_IMAGES[contrast],
                   "image_sha256": _sha256(root / TEMPLATE_IMAGES[contrast]),
                   "landmarks": TEMPLATE_GROUND_TRUTH,
                   "landmarks_sha256": _sha256(root / TEMPLATE_GROUND_TRUTH)},
        "note": "every case is the same anatomy under a random pose, deformation and contrast",
        "seed": seed, "params": asdict(params),
        "afid_descriptions": dict(zip(source.names, source.descriptions)),
        "max_round_trip_mm": max_rt, "cases": [asdict(r) for r in records],
    }
    (out / "generation.json").write_text(json.dumps(generation, indent=2) + "\n")
    seconds = time.perf_counter() - t0
    if verbose:
        print(f"wrote {n_train} train + {n_test} test cases to {out} in {seconds:.1f} s; "
              f"max landmark round-trip residual {max_rt:.2e} mm")
    return GeneratedDataset(root=out, names=source.names, pairs=pairs, train=splits["train"],
                            test=splits["test"], max_round_trip_mm=max_rt, seconds=seconds,
                            records=records)


def read_splits(dataset_dir: Path | str) -> dict:
    """``{"train": [...], "test": [...]}`` of a generated dataset."""
    return json.loads((Path(dataset_dir) / "splits.json").read_text())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="dataset folder to write")
    ap.add_argument("--n-train", type=int, default=24)
    ap.add_argument("--n-test", type=int, default=8)
    ap.add_argument("--voxel-mm", type=float, default=2.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the autoafids wheel is kept")
    ap.add_argument("--noise-floor", action="store_true", help="print the two-annotation noise floor")
    args = ap.parse_args(argv)
    if not args.out and not args.noise_floor:
        ap.error("give --out DIR and/or --noise-floor")
    if args.noise_floor:
        noise_floor(args.cache)
    if args.out:
        build_dataset(args.out, args.n_train, args.n_test, args.voxel_mm, args.seed, cache_dir=args.cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())
