"""A deterministic synthetic "head" dataset for tests, the demo and CI.

Each case is a 3D phantom built analytically in a *canonical* head frame
(LPS millimetres, head centred on the origin, facing anterior = ``-y``):

- an ellipsoidal scalp, a bright skull shell and a grey brain inside it,
- two dark, ventricle-like ellipsoids near the centre,
- two eyes: a dark fat-filled orbit around a bright sphere with a brighter lens
  at its anterior pole (``left_eye`` is on the patient's left, ``+x``),
- a soft-tissue nose bump at the front,
- a small, very dense "ear" on each side, just outside the skull.

Every case gets a random pose (rotation up to 15 degrees about each world axis,
translation of a few millimetres, isotropic scale 0.9 to 1.1) and random
intensities (tissue contrast jitter, gamma, smooth multiplicative bias field,
Gaussian noise, global scale and offset).

The image is rendered by mapping the world position of every voxel back into the
canonical frame through the inverse pose, so the landmarks, obtained by mapping
the canonical landmark points through the forward pose, are exact. Tissue
boundaries get a linear partial-volume ramp one voxel wide.

Landmarks (world LPS millimetres), in the order of :data:`LANDMARK_NAMES`:

``nose_tip``
    Most anterior point of the nose bump.
``left_eye``, ``right_eye``
    Centres of the eye spheres.
``vertex``
    Top of the skull vault, in the middle of the bone.
``left_ear``, ``right_ear``
    Centres of the dense ear spheres.

Examples
--------
>>> image, points = make_synthetic_case(0)
>>> image.GetSize()
(48, 48, 48)
>>> list(points) == list(LANDMARK_NAMES)
True
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from nnlandmark.data.images import to_sitk
from nnlandmark.geometry import (
    ImageGrid,
    array_to_itk_index,
    index_to_world,
)
from nnlandmark.errors import InvalidInput, OutputExists

__all__ = [
    "LANDMARK_NAMES",
    "PAIRS",
    "BIOMETRY",
    "CHANNELS",
    "DATASET_NAME",
    "make_synthetic_case",
    "make_synthetic_dataset",
    "LANDMARK_NAMES_2D",
    "make_synthetic_case_2d",
    "make_synthetic_dataset_2d",
]

DATASET_NAME = "Synthetic"
LANDMARK_NAMES = ("nose_tip", "left_eye", "right_eye", "vertex", "left_ear", "right_ear")
PAIRS = (("left_eye", "right_eye"), ("left_ear", "right_ear"))
BIOMETRY = {"interocular": ("left_eye", "right_eye"), "interaural": ("left_ear", "right_ear")}
# "MR" so that nnU-Net applies z-score normalisation, which the random global
# intensity scale and offset of every case require.
CHANNELS = ("MR",)

SUPPORTED_FILE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")

# Canonical phantom, in units of the head size ``H`` (mm, chosen per grid by
# :func:`_head_size`). LPS: +x patient left, +y posterior, +z superior.
_SCALP = (0.80, 0.94, 0.87)
_SKULL_OUTER = (0.76, 0.90, 0.83)
_SKULL_INNER = (0.68, 0.82, 0.75)
_VENTRICLE_CENTRE = (0.09, 0.02, 0.12)
_VENTRICLE_AXES = (0.06, 0.28, 0.10)
_EYE_CENTRE = (0.30, -0.64, -0.22)
_EYE_RADIUS = 0.14
_ORBIT_RADIUS = 0.19
_LENS_OFFSET = (0.0, -0.11, 0.0)
_LENS_AXES = (0.07, 0.025, 0.07)
_NOSE_CENTRE = (0.0, -0.88, -0.38)
_NOSE_AXES = (0.09, 0.14, 0.17)
_EAR_CENTRE = (0.82, 0.04, -0.12)
_EAR_RADIUS = 0.09

# Radius (units of H) of a ball about the canonical origin holding the whole
# phantom, nose included; it bounds every landmark too.
_PHANTOM_RADIUS = 1.12

# Base intensities before the random contrast jitter; background is 0.
_TISSUE = {
    "soft": 0.30,
    "skull": 1.00,
    "brain": 0.40,
    "csf": 0.12,
    "fat": 0.20,
    "eye": 0.75,
    "lens": 1.00,
    "ear": 1.30,
}

_MAX_ROTATION_DEG = 15.0
_SCALE_RANGE = (0.9, 1.1)
_MAX_TRANSLATION_MM = 4.0
_LANDMARK_MARGIN_VOXELS = 3.0


def _canonical_landmarks(head: float) -> dict:
    """Landmark points in the canonical frame, mm, for head size ``head``."""
    eye = np.array(_EYE_CENTRE)
    ear = np.array(_EAR_CENTRE)
    mirror = np.array([-1.0, 1.0, 1.0])
    nose_tip = np.array(_NOSE_CENTRE) - np.array([0.0, _NOSE_AXES[1], 0.0])
    vertex = np.array([0.0, 0.0, 0.5 * (_SKULL_OUTER[2] + _SKULL_INNER[2])])
    points = {
        "nose_tip": nose_tip,
        "left_eye": eye,
        "right_eye": eye * mirror,
        "vertex": vertex,
        "left_ear": ear,
        "right_ear": ear * mirror,
    }
    return {name: head * points[name] for name in LANDMARK_NAMES}


def _ellipsoid_distance(q: np.ndarray, axes) -> np.ndarray:
    """Approximate signed distance (mm) from offsets ``q`` (3, N) to an ellipsoid centred on 0.

    Exact on the surface and for spheres; elsewhere a first-order estimate
    (``k0 (k0 - 1) / k1``), good enough for a one-voxel partial-volume ramp.
    """
    axes = np.asarray(axes, dtype=float)[:, None]
    k0 = np.sqrt(np.einsum("in,in->n", q / axes, q / axes))
    k1 = np.sqrt(np.einsum("in,in->n", q / axes**2, q / axes**2))
    # k1 vanishes only at the centre, where the distance is -min(axes) anyway
    return np.where(k1 > 1e-12, k0 * (k0 - 1.0) / np.maximum(k1, 1e-12), -axes.min())


def _render_phantom(p: np.ndarray, head: float, edge_mm: float, values: dict, absent=()) -> np.ndarray:
    """Noise-free intensity at canonical points ``p`` (3, N, mm).

    Structures are painted in order, each over the previous ones, with a linear
    ramp of width ``edge_mm`` across their boundary. An ear named in ``absent``
    (``left_ear``, ``right_ear``) is not painted.
    """
    out = np.zeros(p.shape[1])

    def paint(centre, axes, value):
        centre = head * np.asarray(centre, dtype=float)[:, None]
        axes = head * np.asarray(axes, dtype=float)
        # only points in the bounding box of the ramp can change; most structures
        # are small, so this skips most of the volume
        reach = (axes + edge_mm)[:, None]
        inside = np.flatnonzero(np.all(np.abs(p - centre) < reach, axis=0))
        weight = np.clip(0.5 - _ellipsoid_distance(p[:, inside] - centre, axes) / edge_mm, 0.0, 1.0)
        out[inside] += weight * (value - out[inside])

    origin = (0.0, 0.0, 0.0)
    paint(origin, _SCALP, values["soft"])
    paint(_NOSE_CENTRE, _NOSE_AXES, values["soft"])
    paint(origin, _SKULL_OUTER, values["skull"])
    paint(origin, _SKULL_INNER, values["brain"])
    eye = np.array(_EYE_CENTRE)
    for side in (1.0, -1.0):
        flip = np.array([side, 1.0, 1.0])
        paint(np.array(_VENTRICLE_CENTRE) * flip, _VENTRICLE_AXES, values["csf"])
        paint(eye * flip, (_ORBIT_RADIUS,) * 3, values["fat"])
        paint(eye * flip, (_EYE_RADIUS,) * 3, values["eye"])
        paint(eye * flip + np.array(_LENS_OFFSET), _LENS_AXES, values["lens"])
        if ("left_ear" if side > 0 else "right_ear") not in absent:
            paint(np.array(_EAR_CENTRE) * flip, (_EAR_RADIUS,) * 3, values["ear"])
    return out


def _head_size(grid: ImageGrid) -> tuple[float, float]:
    """Head size ``H`` (mm) and the largest translation per axis (mm) for ``grid``.

    Chosen so that, for any pose drawn by :func:`_random_pose`, the whole phantom
    (hence every landmark) lies at least ``_LANDMARK_MARGIN_VOXELS`` voxels inside
    the image along every image axis: a point at distance ``r`` from the image
    centre is at most ``r`` away from it along any axis, whatever the direction
    matrix, and ``r <= sqrt(3) t_max + s_max H _PHANTOM_RADIUS``.
    """
    size = np.asarray(grid.size, dtype=float)
    spacing = np.asarray(grid.spacing, dtype=float)
    available = float(np.min((0.5 * (size - 1) - _LANDMARK_MARGIN_VOXELS) * spacing))
    t_max = min(_MAX_TRANSLATION_MM, 0.1 * max(available, 0.0))
    head = (available - np.sqrt(3.0) * t_max) / (_SCALE_RANGE[1] * _PHANTOM_RADIUS)
    # the eyes (radius 0.14 H) must span a few voxels to be learnable at all
    if head < 3.0 * spacing.max():
        raise InvalidInput(
            f"grid too small for the phantom: size {grid.size}, spacing {grid.spacing} "
            f"leave a head size of {head:.1f} mm, below 3 voxels of {spacing.max()} mm")
    return float(head), float(t_max)


def _random_pose(rng: np.random.Generator, t_max: float):
    """Rotation matrix, translation (mm) and isotropic scale of one case."""
    angles = rng.uniform(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG, size=3)
    rotation = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    translation = rng.uniform(-t_max, t_max, size=3)
    scale = rng.uniform(*_SCALE_RANGE)
    return rotation, translation, float(scale)


def _random_grid(rng: np.random.Generator, shape, spacing, oblique: bool) -> ImageGrid:
    """The image grid; identity direction and zero origin unless ``oblique``."""
    if oblique:
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        angle = np.deg2rad(rng.uniform(15.0, 35.0))
        direction = Rotation.from_rotvec(angle * axis).as_matrix()
        origin = rng.uniform(-120.0, 120.0, size=3)
    else:
        direction = np.eye(3)
        origin = np.zeros(3)
    grid = ImageGrid(size=shape, spacing=spacing, origin=origin, direction=direction)
    grid.validate()
    return grid


def _bias_field(rng: np.random.Generator, array_shape) -> np.ndarray:
    """Smooth multiplicative field: exp of a random quadratic polynomial of the voxel position.

    Tied to the image axes rather than the anatomy, as a coil sensitivity is.
    """
    u = np.meshgrid(*(np.linspace(-1.0, 1.0, n) for n in array_shape), indexing="ij")
    terms = [u[0], u[1], u[2], u[0] * u[1], u[0] * u[2], u[1] * u[2], u[0] ** 2, u[1] ** 2, u[2] ** 2]
    coefficients = rng.normal(0.0, 0.08, size=len(terms))
    return np.exp(sum(c * t for c, t in zip(coefficients, terms)))


def make_synthetic_case(seed: int, shape=(48, 48, 48), spacing=(2.0, 2.0, 2.0),
                        oblique: bool = False, absent=()) -> tuple[sitk.Image, dict]:
    """Render one synthetic head image and its exact landmarks.

    Parameters
    ----------
    seed : int
        Non-negative seed of the case; the same seed (and arguments) gives
        bit-identical output.
    shape : tuple of 3 int, optional
        Image size in ITK order (i, j, k), i.e. ``image.GetSize()``; the NumPy
        array of the image has the reversed shape.
    spacing : tuple of 3 float, optional
        Voxel spacing in mm, ITK order; may be anisotropic.
    oblique : bool, optional
        If True, the image gets a random non-identity rotation as direction
        matrix (15 to 35 degrees about a random axis) and a random non-zero
        origin; otherwise the direction is the identity and the origin is 0.
    absent : sequence of str, optional
        Ears (``left_ear``, ``right_ear``) left out of the image, as if the
        landmark were not in the scan; their points are still returned (where
        they would be) and the rest of the image is unchanged.

    Returns
    -------
    image : SimpleITK.Image
        3D float32 image with the requested geometry.
    landmarks : dict of str to ndarray
        World LPS points (mm), shape (3,), keyed and ordered as
        :data:`LANDMARK_NAMES`. Each lies at least 3 voxels inside the image
        along every image axis.

    Raises
    ------
    ValueError
        If ``seed`` is negative, ``shape`` or ``spacing`` are not 3 positive
        values, or the grid is too small to hold a resolvable phantom.

    Notes
    -----
    The head size scales with the field of view (the smallest physical extent
    of the grid), so all cases of one grid share the same anatomy up to pose
    and the 0.9-1.1 scale.
    """
    seed = int(seed)
    if seed < 0:
        raise InvalidInput(f"seed must be non-negative, got {seed}")
    shape = tuple(int(n) for n in shape)
    spacing = tuple(float(s) for s in spacing)
    if len(shape) != 3 or len(spacing) != 3 or min(shape) < 1 or min(spacing) <= 0:
        raise InvalidInput(f"need 3 positive sizes and spacings, got shape {shape}, spacing {spacing}")
    if not set(absent) <= {"left_ear", "right_ear"}:
        raise InvalidInput(f"only the ears can be left out of a phantom, got {sorted(absent)}")

    rng = np.random.default_rng(seed)
    grid = _random_grid(rng, shape, spacing, oblique)
    head, t_max = _head_size(grid)
    rotation, translation, scale = _random_pose(rng, t_max)
    centre = index_to_world((np.asarray(shape, dtype=float) - 1.0) / 2.0, grid)

    # world = centre + translation + scale * rotation @ canonical
    canonical = _canonical_landmarks(head)
    landmarks = {name: centre + translation + scale * (rotation @ p) for name, p in canonical.items()}

    array_shape = grid.array_shape
    array_index = np.indices(array_shape, dtype=float).reshape(3, -1).T
    world = index_to_world(array_to_itk_index(array_index), grid)
    # inverse pose on row vectors: (w - c - t) @ R == R^T (w - c - t)
    points = np.ascontiguousarray((((world - centre - translation) @ rotation) / scale).T)

    values = {name: v * rng.uniform(0.9, 1.1) for name, v in _TISSUE.items()}
    edge_mm = float(np.mean(spacing)) / scale
    clean = _render_phantom(points, head, edge_mm, values, tuple(absent)).reshape(array_shape)

    gamma = rng.uniform(0.7, 1.4)
    bias = _bias_field(rng, array_shape)
    noise_sigma = rng.uniform(0.01, 0.04)
    intensity_scale = 1000.0 * np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
    offset = rng.uniform(-200.0, 200.0)
    noisy = np.clip(clean, 0.0, None) ** gamma * bias + rng.normal(0.0, noise_sigma, size=array_shape)
    array = (noisy * intensity_scale + offset).astype(np.float32)

    return to_sitk(array, grid), landmarks


def _case_seed(dataset_seed: int, index: int) -> int:
    """Cantor pairing of (dataset seed, case index): distinct pairs give distinct case seeds."""
    total = dataset_seed + index
    return total * (total + 1) // 2 + index


def _clear_previous_cases(out_dir: Path) -> None:
    """Delete files a previous run of :func:`make_synthetic_dataset` may have left."""
    for sub, pattern in (("images", "case_*"), ("landmarks", "case_*.json")):
        folder = out_dir / sub
        if folder.is_dir():
            for path in folder.glob(pattern):
                if path.is_file():
                    path.unlink()


def make_synthetic_dataset(out_dir, n_cases: int = 12, seed: int = 0, shape=(48, 48, 48),
                           spacing=(2.0, 2.0, 2.0), oblique: bool = False,
                           file_ending: str = ".nii.gz", overwrite: bool = False,
                           absent_fraction: float = 0.0) -> Path:
    """Write a synthetic dataset in the layout of ``docs/dataset_layout.md``.

    Writes ``images/case_XXX<file_ending>`` (float32, one channel),
    ``landmarks/case_XXX.json`` (our LPS landmark JSON) and ``dataset.json``.

    Parameters
    ----------
    out_dir : str or Path
        Dataset folder; created if missing.
    n_cases : int, optional
        Number of cases, named ``case_000``, ``case_001``, ...
    seed : int, optional
        Non-negative dataset seed. Case ``i`` uses a seed derived from
        ``(seed, i)`` injectively, so datasets with different seeds share no case.
    shape, spacing, oblique
        Passed to :func:`make_synthetic_case`.
    file_ending : str, optional
        Image extension, one of ``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``, ``.mhd``.
    overwrite : bool, optional
        Allow writing into an existing non-empty folder. The ``case_*`` files of
        ``images/`` and ``landmarks/`` already there are deleted first, so the
        folder holds exactly the new dataset; other files are left alone.
    absent_fraction : float, optional
        Share of the cases (rounded) in which one ear, left or right at
        random, is left out of the image and annotated ``"absent"``; the
        cases and sides are drawn from ``seed`` apart from the images, so
        the other cases are those of the dataset without absences.

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    FileExistsError
        If ``out_dir`` exists and is not empty and ``overwrite`` is False, or is
        a file.
    ValueError
        For a negative seed, ``n_cases < 1`` or an unsupported ``file_ending``.
    """
    out_dir = Path(out_dir)
    seed = int(seed)
    n_cases = int(n_cases)
    if seed < 0:
        raise InvalidInput(f"seed must be non-negative, got {seed}")
    if n_cases < 1:
        raise InvalidInput(f"n_cases must be at least 1, got {n_cases}")
    if file_ending not in SUPPORTED_FILE_ENDINGS:
        raise InvalidInput(f"file_ending must be one of {SUPPORTED_FILE_ENDINGS}, got {file_ending!r}")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise OutputExists(f"{out_dir} exists and is not a folder")
        if any(out_dir.iterdir()):
            if not overwrite:
                raise OutputExists(f"{out_dir}: not empty; give a new or empty folder (or overwrite=True)")
            _clear_previous_cases(out_dir)

    images_dir = out_dir / "images"
    landmarks_dir = out_dir / "landmarks"
    images_dir.mkdir(parents=True, exist_ok=True)
    landmarks_dir.mkdir(parents=True, exist_ok=True)

    if not 0.0 <= float(absent_fraction) <= 1.0:
        raise InvalidInput(f"absent_fraction must be in [0, 1], got {absent_fraction}")
    choice = np.random.default_rng([seed, 2026])  # its own stream: the images do not change
    removed = {int(i): str(choice.choice(["left_ear", "right_ear"]))
               for i in choice.permutation(n_cases)[:int(round(n_cases * float(absent_fraction)))]}
    for i in range(n_cases):
        case = f"case_{i:03d}"
        absent = (removed[i],) if i in removed else ()
        image, points = make_synthetic_case(_case_seed(seed, i), shape=shape, spacing=spacing,
                                            oblique=oblique, absent=absent)
        sitk.WriteImage(image, str(images_dir / f"{case}{file_ending}"))
        record = {
            "coordinate_system": "LPS",
            "landmarks": {name: "absent" if name in absent else [float(v) for v in points[name]]
                          for name in LANDMARK_NAMES},
        }
        (landmarks_dir / f"{case}.json").write_text(json.dumps(record, indent=2) + "\n")

    dataset = {
        "name": DATASET_NAME,
        "landmarks": list(LANDMARK_NAMES),
        "pairs": [list(pair) for pair in PAIRS],
        "biometry": {name: list(pair) for name, pair in BIOMETRY.items()},
        "channels": list(CHANNELS),
    }
    (out_dir / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n")
    return out_dir


# --- 2D phantoms: a frontal "radiograph" of the head ------------------------------------------
#
# In the image plane (x: patient left, y: downwards on the screen), in units of the head size H:
# soft tissue and a bright skull ring (ellipses), a grey inside, two dark orbits with a bright
# "lens" at their centre, a soft nose bump below them and a very dense "incisor" disc further
# down. Same pose and intensity model as in 3D, in the plane: rotation up to 15 degrees,
# translation, scale 0.9-1.1, contrast jitter, gamma, bias field, noise.

LANDMARK_NAMES_2D = ("vertex", "left_eye", "right_eye", "nose_tip", "incisor")
PAIRS_2D = (("left_eye", "right_eye"),)
BIOMETRY_2D = {"interocular": ("left_eye", "right_eye")}
CHANNELS_2D = ("XR",)  # not "CT": nnU-Net z-scores it, as the random intensities need
SUPPORTED_FILE_ENDINGS_2D = (".png", ".jpg", ".nii.gz", ".nrrd", ".mha")

_SOFT_2D = (0.80, 0.98)
_SKULL_OUTER_2D = (0.74, 0.92)
_SKULL_INNER_2D = (0.64, 0.82)
_EYE_CENTRE_2D = (0.30, -0.08)
_ORBIT_RADIUS_2D = 0.15
_LENS_RADIUS_2D = 0.05
_NOSE_CENTRE_2D = (0.0, 0.22)
_NOSE_AXES_2D = (0.08, 0.14)
_INCISOR_CENTRE_2D = (0.0, 0.56)
_INCISOR_RADIUS_2D = 0.06
_PHANTOM_RADIUS_2D = 1.0


def _canonical_landmarks_2d(head: float) -> dict:
    eye = np.array(_EYE_CENTRE_2D)
    points = {"vertex": np.array([0.0, -0.5 * (_SKULL_OUTER_2D[1] + _SKULL_INNER_2D[1])]),
              "left_eye": eye, "right_eye": eye * np.array([-1.0, 1.0]),
              "nose_tip": np.array(_NOSE_CENTRE_2D) + np.array([0.0, _NOSE_AXES_2D[1]]),
              "incisor": np.array(_INCISOR_CENTRE_2D)}
    return {name: head * points[name] for name in LANDMARK_NAMES_2D}


def _render_phantom_2d(p: np.ndarray, head: float, edge_mm: float, values: dict) -> np.ndarray:
    """Noise-free intensity at canonical points ``p`` (2, N, mm)."""
    out = np.zeros(p.shape[1])

    def paint(centre, axes, value):
        centre = head * np.asarray(centre, dtype=float)[:, None]
        axes = head * np.asarray(axes, dtype=float)
        weight = np.clip(0.5 - _ellipsoid_distance(p - centre, axes) / edge_mm, 0.0, 1.0)
        out[:] += weight * (value - out)

    paint((0.0, 0.0), _SOFT_2D, values["soft"])
    paint((0.0, 0.0), _SKULL_OUTER_2D, values["skull"])
    paint((0.0, 0.0), _SKULL_INNER_2D, values["brain"])
    for side in (1.0, -1.0):
        eye = np.array(_EYE_CENTRE_2D) * np.array([side, 1.0])
        paint(eye, (_ORBIT_RADIUS_2D,) * 2, values["fat"])
        paint(eye, (_LENS_RADIUS_2D,) * 2, values["lens"])
    paint(_NOSE_CENTRE_2D, _NOSE_AXES_2D, values["eye"])
    paint(_INCISOR_CENTRE_2D, (_INCISOR_RADIUS_2D,) * 2, values["ear"])
    return out


def make_synthetic_case_2d(seed: int, shape=(96, 96), spacing=(1.0, 1.0)) -> tuple[sitk.Image, dict]:
    """Render one synthetic 2D head image and its exact landmarks.

    Parameters
    ----------
    seed : int
        Non-negative seed; the same seed and arguments give identical output.
    shape : (W, H)
        Image size in pixels (ITK order).
    spacing : (sx, sy)
        Pixel spacing in mm.

    Returns
    -------
    image : SimpleITK.Image
        2D float32 image, origin 0, identity direction, ``spacing``.
    landmarks : dict of str to ndarray
        World points (x, y) in mm, ordered as :data:`LANDMARK_NAMES_2D`, each at
        least 3 pixels inside the image: pixel (i, j) lies at (i sx, j sy).

    Examples
    --------
    >>> image, points = make_synthetic_case_2d(0)
    >>> image.GetSize(), list(points) == list(LANDMARK_NAMES_2D)
    ((96, 96), True)
    """
    seed = int(seed)
    if seed < 0:
        raise InvalidInput(f"seed must be non-negative, got {seed}")
    shape = tuple(int(n) for n in shape)
    spacing = tuple(float(s) for s in spacing)
    if len(shape) != 2 or len(spacing) != 2 or min(shape) < 1 or min(spacing) <= 0:
        raise InvalidInput(f"need 2 positive sizes and spacings, got shape {shape}, spacing {spacing}")
    rng = np.random.default_rng(seed)
    size, step = np.asarray(shape, float), np.asarray(spacing)
    available = float(np.min((0.5 * (size - 1) - _LANDMARK_MARGIN_VOXELS) * step))
    t_max = min(_MAX_TRANSLATION_MM, 0.1 * max(available, 0.0))
    head = (available - np.sqrt(2.0) * t_max) / (_SCALE_RANGE[1] * _PHANTOM_RADIUS_2D)
    if head < 8.0 * step.max():
        raise InvalidInput(f"grid too small for the 2D phantom: size {shape}, spacing {spacing}")
    angle = np.deg2rad(rng.uniform(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    translation = rng.uniform(-t_max, t_max, size=2)
    scale = float(rng.uniform(*_SCALE_RANGE))
    # the picture's grid as the one-slice volume it is read as (origin 0, identity direction)
    grid = ImageGrid(size=(*shape, 1), spacing=(*spacing, 1.0), origin=(0.0, 0.0, 0.0))
    centre = index_to_world([*((size - 1.0) / 2.0), 0.0], grid)[:2]
    landmarks = {name: centre + translation + scale * (rotation @ q)
                 for name, q in _canonical_landmarks_2d(head).items()}

    array_shape = grid.array_shape[1:]  # (j, i)
    array_index = np.indices(grid.array_shape, dtype=float).reshape(3, -1).T
    world = index_to_world(array_to_itk_index(array_index), grid)[:, :2]
    points = np.ascontiguousarray((((world - centre - translation) @ rotation) / scale).T)
    values = {name: v * rng.uniform(0.9, 1.1) for name, v in _TISSUE.items()}
    clean = _render_phantom_2d(points, head, float(np.mean(step)) / scale, values).reshape(array_shape)
    u = np.meshgrid(*(np.linspace(-1.0, 1.0, n) for n in array_shape), indexing="ij")
    bias = np.exp(sum(c * t for c, t in zip(rng.normal(0.0, 0.08, size=5),
                                            (u[0], u[1], u[0] * u[1], u[0] ** 2, u[1] ** 2))))
    gamma = rng.uniform(0.7, 1.4)
    noisy = np.clip(clean, 0.0, None) ** gamma * bias + rng.normal(0.0, rng.uniform(0.01, 0.04), array_shape)
    image = sitk.GetImageFromArray(noisy.astype(np.float32))
    image.SetSpacing(spacing)
    return image, landmarks


def make_synthetic_dataset_2d(out_dir, n_cases: int = 12, seed: int = 0, shape=(96, 96), spacing=(1.0, 1.0),
                              file_ending: str = ".png") -> Path:
    """Write a 2D synthetic dataset in the layout of ``docs/dataset_layout.md``.

    ``images/case_XXX<file_ending>``: 8-bit greyscale pictures for ``.png``/``.jpg``
    (their spacing in ``dataset.json``'s ``spacing``), else float32 2D images
    with the spacing in their header; ``landmarks/case_XXX.csv`` with two
    coordinates per point (``name,x,y``, LPS mm); ``dataset.json`` with the left/right
    eye pair. Case ``i`` has the seed of case ``i`` of :func:`make_synthetic_dataset`
    (distinct datasets for distinct ``seed``). ``out_dir`` must be new or empty.
    """
    out_dir = Path(out_dir)
    if file_ending not in SUPPORTED_FILE_ENDINGS_2D:
        raise InvalidInput(f"file_ending must be one of {SUPPORTED_FILE_ENDINGS_2D}, got {file_ending!r}")
    if int(n_cases) < 1 or int(seed) < 0:
        raise InvalidInput(f"need n_cases >= 1 and seed >= 0, got {n_cases}, {seed}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise OutputExists(f"{out_dir}: exists and is not an empty folder")
    picture = file_ending in (".png", ".jpg")
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "landmarks").mkdir(parents=True, exist_ok=True)
    for index in range(int(n_cases)):
        case = f"case_{index:03d}"
        image, points = make_synthetic_case_2d(_case_seed(int(seed), index), shape, spacing)
        if picture:  # 8 bits, the case's own window
            array = sitk.GetArrayFromImage(image)
            low, high = np.percentile(array, [0.5, 99.5])
            image = sitk.GetImageFromArray(np.clip((array - low) / (high - low) * 255, 0, 255).astype(np.uint8))
        sitk.WriteImage(image, str(out_dir / "images" / f"{case}{file_ending}"))
        rows = ["name,x,y"] + [f"{name},{float(p[0])!r},{float(p[1])!r}" for name, p in points.items()]
        (out_dir / "landmarks" / f"{case}.csv").write_text("\n".join(rows) + "\n")
    dataset = {"name": "Synthetic2D", "landmarks": list(LANDMARK_NAMES_2D),
               "pairs": [list(pair) for pair in PAIRS_2D],
               "biometry": {name: list(pair) for name, pair in BIOMETRY_2D.items()},
               "channels": list(CHANNELS_2D)}
    if picture:
        dataset["spacing"] = [float(s) for s in spacing]
    (out_dir / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n")
    return out_dir
