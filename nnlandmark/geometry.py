"""Every conversion between voxel indices, the preprocessed grid and world space.

One convention inside nnlandmark: **world coordinates are millimetres in ITK/LPS
order (x, y, z)**. RAS only exists at file boundaries (3D Slicer), via
:func:`ras_to_lps` / :func:`lps_to_ras`.

Three index spaces appear in the pipeline:

``itk index`` (i, j, k)
    SimpleITK's continuous index, fastest axis first. ``world = origin +
    direction @ (spacing * index)``.
``array index`` (k, j, i)
    The same voxel in a NumPy array from ``sitk.GetArrayFromImage`` (reversed axes).
``preprocessed index``
    A voxel of nnU-Net's preprocessed array: array axes transposed by the plans'
    ``transpose_forward``, cropped to the non-zero bounding box, then resampled
    to the target spacing with pixel-centre alignment (``align_corners=False``,
    the convention of ``skimage.transform.resize`` and of nnU-Net's
    ``map_coordinates`` path).

Nothing else in the package may do these conversions by hand.

Examples
--------
>>> import numpy as np
>>> grid = ImageGrid(size=(10, 20, 30), spacing=(1.0, 2.0, 3.0),
...                  origin=(5.0, 0.0, 0.0), direction=np.eye(3))
>>> index_to_world([1, 1, 1], grid)
array([6., 2., 3.])
>>> world_to_index([6.0, 2.0, 3.0], grid)
array([1., 1., 1.])
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nnlandmark.errors import InvalidInput

_LPS_RAS_FLIP = np.array([-1.0, -1.0, 1.0])


def ras_to_lps(points) -> np.ndarray:
    """Convert RAS points (..., 3) to LPS: negate x and y. Self-inverse."""
    return np.asarray(points, dtype=float) * _LPS_RAS_FLIP


def lps_to_ras(points) -> np.ndarray:
    """Convert LPS points (..., 3) to RAS: negate x and y. Self-inverse."""
    return np.asarray(points, dtype=float) * _LPS_RAS_FLIP


class GeometryError(InvalidInput):
    """An image grid that cannot map voxels to world space."""


@dataclass(frozen=True)
class ImageGrid:
    """Where an image's voxels lie in world space (ITK/LPS order throughout).

    ``size`` and ``spacing`` are in ITK axis order (i, j, k); ``direction`` is a
    3x3 matrix whose columns are the world directions of the i, j, k axes.
    """

    size: tuple
    spacing: tuple
    origin: tuple
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self):
        object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(s) for s in self.origin))
        object.__setattr__(self, "direction", np.asarray(self.direction, dtype=float).reshape(3, 3))

    @classmethod
    def from_image(cls, image) -> "ImageGrid":
        """The grid of a 3D SimpleITK image."""
        if image.GetDimension() != 3:
            raise GeometryError(f"expected a 3D image, got {image.GetDimension()}D")
        return cls(size=image.GetSize(), spacing=image.GetSpacing(), origin=image.GetOrigin(),
                   direction=np.array(image.GetDirection()).reshape(3, 3))

    @property
    def is_2d(self) -> bool:
        """True for a 2D image: one slice along the third axis (see :mod:`nnlandmark.data.images`).

        >>> ImageGrid(size=(64, 48, 1), spacing=(0.1, 0.1, 1.0), origin=(0, 0, 0)).is_2d
        True
        """
        return self.size[2] == 1

    def plane_offset_mm(self, point) -> np.ndarray:
        """Signed distance (mm, ``(...)``) of world points from the plane of the grid's slice
        k = 0 (for a 2D image: how far a point is off the image).

        >>> grid = ImageGrid(size=(64, 48, 1), spacing=(0.1, 0.1, 1.0), origin=(0, 0, 2.0))
        >>> float(grid.plane_offset_mm([3.0, 1.0, 5.0]))
        3.0
        """
        return world_to_index(point, self)[..., 2] * self.spacing[2]

    @property
    def array_shape(self) -> tuple:
        """The shape of this grid's voxels as a numpy array from SimpleITK: (k, j, i), the
        reverse of ``size``."""
        return self.size[::-1]

    def validate(self) -> None:
        """Raise :class:`GeometryError` for non-positive spacing or a non-orthonormal direction."""
        spacing = np.asarray(self.spacing)
        if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
            raise GeometryError(f"spacing must be positive, got {tuple(float(s) for s in spacing)}")
        d = self.direction
        if not np.all(np.isfinite(d)) or not np.allclose(d.T @ d, np.eye(3), atol=1e-4):
            raise GeometryError(f"direction matrix is not orthonormal: {d.ravel().round(5).tolist()}")

    def contains_index(self, index, margin: float = 0.5) -> bool:
        """True when a continuous ITK index lies inside the image (voxel edges included)."""
        index = np.asarray(index, dtype=float)
        return bool(np.all(index >= -margin) and np.all(index <= np.asarray(self.size) - 1 + margin))


def index_to_world(index, grid: ImageGrid) -> np.ndarray:
    """Continuous ITK index (..., 3) -> world LPS mm (..., 3)."""
    index = np.asarray(index, dtype=float)
    scaled = index * np.asarray(grid.spacing)
    return scaled @ grid.direction.T + np.asarray(grid.origin)


def world_to_index(point, grid: ImageGrid) -> np.ndarray:
    """World LPS mm (..., 3) -> continuous ITK index (..., 3)."""
    point = np.asarray(point, dtype=float)
    # direction is orthonormal (validated), so its inverse is its transpose
    return ((point - np.asarray(grid.origin)) @ grid.direction) / np.asarray(grid.spacing)


def itk_to_array_index(index) -> np.ndarray:
    """ITK index (i, j, k) -> NumPy array index (k, j, i), both continuous."""
    return np.asarray(index, dtype=float)[..., ::-1]


def array_to_itk_index(index) -> np.ndarray:
    """NumPy array index (k, j, i) -> ITK index (i, j, k)."""
    return np.asarray(index, dtype=float)[..., ::-1]


def itk_to_array_axis(axis: int) -> int:
    """The NumPy array axis of ITK axis ``axis`` (arrays from SimpleITK are (k, j, i)).

    >>> [itk_to_array_axis(a) for a in (0, 1, 2)]
    [2, 1, 0]
    """
    return 2 - int(axis)


def itk_to_array_order(values) -> list:
    """Per-axis values (spacing, sizes) from ITK order (x, y, z) to NumPy array order (z, y, x),
    the order nnU-Net takes them in before its own transpose.

    >>> itk_to_array_order((0.5, 0.6, 2.0))
    [2.0, 0.6, 0.5]
    """
    return [float(v) for v in values][::-1]


def nearest_voxel(index) -> np.ndarray:
    """Round a continuous index to the nearest integer voxel."""
    return np.floor(np.asarray(index, dtype=float) + 0.5).astype(int)


@dataclass(frozen=True)
class PreprocessedGrid:
    """How nnU-Net turned an image array into its preprocessed array.

    All fields are in *array* axis order after transposition, as nnU-Net stores
    them in its case properties:

    transpose_forward
        Axis permutation applied to the (k, j, i) array first.
    crop_start
        First voxel of the crop, per transposed axis.
    cropped_shape
        Shape after cropping, before resampling.
    preprocessed_shape
        Shape of the preprocessed array (spatial axes only).
    """

    transpose_forward: tuple
    crop_start: tuple
    cropped_shape: tuple
    preprocessed_shape: tuple

    def __post_init__(self):
        for name in ("transpose_forward", "crop_start", "cropped_shape", "preprocessed_shape"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))

    @property
    def scale(self) -> np.ndarray:
        """Cropped voxels per preprocessed voxel, per transposed axis."""
        return np.asarray(self.cropped_shape, float) / np.asarray(self.preprocessed_shape, float)


def untranspose(values, transpose_forward) -> np.ndarray:
    """Values (..., 3) per transposed axis -> per array axis (k, j, i), e.g. nnU-Net's planned spacing.

    >>> untranspose([1.0, 2.0, 3.0], (2, 0, 1)).tolist()
    [2.0, 3.0, 1.0]
    """
    values = np.asarray(values, dtype=float)
    array_order = np.empty_like(values)
    # transposed axis a came from original array axis transpose_forward[a]
    array_order[..., list(transpose_forward)] = values
    return array_order


def preprocessed_to_array_index(index, grid: PreprocessedGrid) -> np.ndarray:
    """Preprocessed index (..., 3) -> continuous array index (k, j, i) of the original image."""
    index = np.asarray(index, dtype=float)
    cropped = (index + 0.5) * grid.scale - 0.5
    return untranspose(cropped + np.asarray(grid.crop_start, float), grid.transpose_forward)


def array_to_preprocessed_index(index, grid: PreprocessedGrid) -> np.ndarray:
    """Continuous array index (k, j, i) of the original image -> preprocessed index."""
    index = np.asarray(index, dtype=float)
    transposed = index[..., list(grid.transpose_forward)]
    cropped = transposed - np.asarray(grid.crop_start, float)
    return (cropped + 0.5) / grid.scale - 0.5


def preprocessed_to_world(index, pgrid: PreprocessedGrid, grid: ImageGrid) -> np.ndarray:
    """Preprocessed index -> world LPS mm."""
    return index_to_world(array_to_itk_index(preprocessed_to_array_index(index, pgrid)), grid)


def world_to_preprocessed(point, pgrid: PreprocessedGrid, grid: ImageGrid) -> np.ndarray:
    """World LPS mm -> preprocessed index."""
    return array_to_preprocessed_index(itk_to_array_index(world_to_index(point, grid)), pgrid)


def preprocessed_voxel_size_mm(pgrid: PreprocessedGrid, grid: ImageGrid) -> np.ndarray:
    """Edge lengths (mm) of one preprocessed voxel, per transposed axis."""
    array_spacing = np.asarray(grid.spacing)[::-1]
    return array_spacing[list(pgrid.transpose_forward)] * pgrid.scale


def preprocessed_distances_mm(point, pgrid: PreprocessedGrid, grid: ImageGrid) -> np.ndarray:
    """World distance (mm) from the preprocessed index ``point`` to every voxel of the preprocessed
    array, shape ``pgrid.preprocessed_shape`` (the grid's axes are orthogonal, so per-axis millimetres
    add in quadrature).

    >>> pg = PreprocessedGrid((0, 1, 2), (0, 0, 0), (4, 4, 4), (2, 2, 2))  # 2x downsampled
    >>> g = ImageGrid(size=(4, 4, 4), spacing=(1.0, 1.0, 3.0), origin=(0, 0, 0))
    >>> preprocessed_distances_mm([0, 0, 0], pg, g)[1, 0, 1].round(3)  # 6 mm along k, 2 mm along i
    np.float64(6.325)
    """
    voxel = preprocessed_voxel_size_mm(pgrid, grid)
    axes = np.indices(pgrid.preprocessed_shape, dtype=np.float64)
    return np.sqrt(sum(((a - float(c)) * v) ** 2 for a, c, v in zip(axes, np.asarray(point, float), voxel)))


def preprocessed_image_grid(pgrid: PreprocessedGrid, grid: ImageGrid) -> ImageGrid:
    """The world placement of a preprocessed array saved with ``sitk.GetImageFromArray``.

    Lets heatmaps computed in the preprocessed grid open in 3D Slicer on top of
    the original image without resampling them.
    """
    origin = preprocessed_to_world(np.zeros(3), pgrid, grid)
    columns = []  # world step per ITK axis of the saved array = reversed preprocessed axes
    for axis in (2, 1, 0):
        step = np.zeros(3)
        step[axis] = 1.0
        columns.append(preprocessed_to_world(step, pgrid, grid) - origin)
    columns = np.stack(columns, axis=1)
    spacing = np.linalg.norm(columns, axis=0)
    return ImageGrid(size=tuple(pgrid.preprocessed_shape[::-1]), spacing=tuple(spacing), origin=tuple(origin),
                     direction=columns / spacing)


def patch_start(centre, patch_size) -> np.ndarray:
    """First voxel (int) of the patch of ``patch_size`` whose centre is nearest ``centre``.

    ``centre`` is a continuous index (..., D) of the array the patch is cut
    from; the patch's own index ``p`` is the array's ``start + p``. For an
    even size the centre lies between the two middle voxels.

    >>> patch_start([10.2, 3.0, 0.0], (4, 5, 16)).tolist()
    [9, 1, -8]
    """
    half = (np.asarray(patch_size, dtype=float) - 1) / 2
    return np.rint(np.asarray(centre, dtype=float) - half).astype(int)


def shared_patch_starts(centres, patch_size, reach) -> tuple[np.ndarray, np.ndarray]:
    """Patches shared by nearby points: ``(starts (P, D), patch_of (N,))``.

    Each of the ``centres`` (N, D) (continuous indices, as for :func:`patch_start`)
    is given one patch of ``patch_size``, ``starts[patch_of[n]]``; points close
    together share one, centred on their bounding box, as long as every point of
    the group lies within ``reach`` voxels (per axis, plus the half voxel that
    rounding the start may add) of its patch's centre. Greedy: the first point
    without a patch opens one, and the others join it nearest first while the
    group's extent stays within ``2 * reach`` on every axis. ``reach`` 0 gives
    every point its own patch (points at the same voxel aside), exactly
    :func:`patch_start` of each. ``reach`` may be a number or one per axis.

    >>> starts, patch_of = shared_patch_starts([[10.0, 10.0], [12.0, 11.0], [40.0, 10.0]], (8, 8), reach=2)
    >>> starts.tolist(), patch_of.tolist()
    ([[8, 7], [36, 6]], [0, 0, 1])
    >>> shared_patch_starts([[10.0, 10.0], [12.0, 11.0]], (8, 8), reach=0)[1].tolist()
    [0, 1]
    """
    centres = np.atleast_2d(np.asarray(centres, dtype=float))
    reach = np.broadcast_to(np.asarray(reach, dtype=float), centres.shape[1:])
    patch_of = np.full(len(centres), -1, dtype=int)
    starts = []
    for first in range(len(centres)):
        if patch_of[first] >= 0:
            continue
        lo = hi = centres[first]
        members = [first]
        others = [n for n in range(len(centres)) if patch_of[n] < 0 and n != first]
        for n in sorted(others, key=lambda n: float(np.max(np.abs(centres[n] - centres[first])))):
            new_lo, new_hi = np.minimum(lo, centres[n]), np.maximum(hi, centres[n])
            if np.all(new_hi - new_lo <= 2 * reach):
                lo, hi = new_lo, new_hi
                members.append(n)
        patch_of[members] = len(starts)
        starts.append(patch_start((lo + hi) / 2, patch_size))
    return np.asarray(starts, dtype=int).reshape(-1, centres.shape[1]), patch_of


def patch_to_preprocessed(index, start) -> np.ndarray:
    """Index (..., D) inside a patch -> index in the preprocessed array it was cut from at ``start``."""
    return np.asarray(index, dtype=float) + np.asarray(start, dtype=float)


#: The anatomical frame every image is reoriented to before nnU-Net sees it: ITK axis i points
#: towards the patient's Left, j Posterior, k Superior (the identity direction in LPS world
#: coordinates). Letters name where an axis *points*, as in nibabel's axis codes and
#: SimpleITK's ``DICOMOrientImageFilter`` (a NIfTI stored "RAS" has direction diag(-1, -1, 1)).
CANONICAL_ORIENTATION = "LPS"
_POSITIVE, _NEGATIVE = "LPS", "RAI"


def orientation_code(direction) -> str:
    """Three letters: the anatomical direction each ITK axis (i, j, k) points closest to.

    >>> orientation_code(np.eye(3)), orientation_code(np.diag([-1.0, -1.0, 1.0]))
    ('LPS', 'RAS')
    >>> orientation_code([[-1, 0, 0], [0, 0, -1], [0, 1, 0]])  # coronal slices, stored RSA
    'RSA'
    """
    direction = np.asarray(direction, dtype=float).reshape(3, 3)
    code = ""
    for column in direction.T:
        world_axis = int(np.argmax(np.abs(column)))
        code += (_POSITIVE if column[world_axis] > 0 else _NEGATIVE)[world_axis]
    return code


def is_mirrored(direction) -> bool:
    """True for a left-handed storage order (determinant -1), such as LAS or RAI: the voxels are
    a mirror image of the anatomy unless their direction is taken into account.

    >>> is_mirrored(np.diag([-1.0, 1.0, 1.0])), is_mirrored(np.diag([-1.0, -1.0, 1.0]))
    (True, False)
    """
    return bool(np.linalg.det(np.asarray(direction, dtype=float).reshape(3, 3)) < 0)


@dataclass(frozen=True)
class Reorientation:
    """A permutation and flips of a grid's voxel axes (a new storage order of the same voxels).

    New ITK axis ``a`` is old ITK axis ``axes[a]``, reversed when ``flips[a]``: new index
    ``n`` is old index ``o`` with ``o[axes[a]] = size[axes[a]] - 1 - n[a]`` if ``flips[a]``
    else ``n[a]``. Nothing is resampled.
    """

    axes: tuple = (0, 1, 2)
    flips: tuple = (False, False, False)

    def __post_init__(self):
        object.__setattr__(self, "axes", tuple(int(a) for a in self.axes))
        object.__setattr__(self, "flips", tuple(bool(f) for f in self.flips))
        if sorted(self.axes) != [0, 1, 2] or len(self.flips) != 3:
            raise ValueError(f"not a reorientation of three axes: {self.axes}, {self.flips}")

    @property
    def is_identity(self) -> bool:
        return self.axes == (0, 1, 2) and not any(self.flips)


def canonical_reorientation(grid: ImageGrid) -> Reorientation:
    """The permutation and flips that bring ``grid``'s voxel axes closest to :data:`CANONICAL_ORIENTATION`.

    Among the 6 permutations, the one whose axes line up best with world x, y, z (the
    largest sum of absolute direction cosines) wins, the identity on a tie; an axis
    pointing against its world axis is flipped. What remains is the scan's own oblique
    rotation, at most 45 degrees about any axis. A 2D image (one slice, see
    :attr:`ImageGrid.is_2d`) keeps its slice axis third and unflipped.

    >>> canonical_reorientation(ImageGrid((4, 5, 6), (1, 1, 1), (0, 0, 0), np.diag([-1.0, -1.0, 1.0])))
    Reorientation(axes=(0, 1, 2), flips=(True, True, False))
    >>> coronal = np.array([[-1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # RSA
    >>> canonical_reorientation(ImageGrid((4, 5, 6), (1, 1, 1), (0, 0, 0), coronal))
    Reorientation(axes=(0, 2, 1), flips=(True, True, False))
    """
    from itertools import permutations
    direction = np.asarray(grid.direction, dtype=float)
    candidates = [(0, 1, 2), (1, 0, 2)] if grid.is_2d else list(permutations(range(3)))
    best = max(candidates, key=lambda axes: sum(abs(direction[a, axes[a]]) for a in range(3)) - 1e-9 * (axes != (0, 1, 2)))
    flips = [direction[a, best[a]] < 0 for a in range(3)]
    if grid.is_2d:
        flips[2] = False
    return Reorientation(best, tuple(flips))


def reoriented_grid(grid: ImageGrid, reorientation: Reorientation) -> ImageGrid:
    """The grid of the same voxels stored in the order ``reorientation`` gives; every voxel keeps
    its world position.

    >>> g = ImageGrid((4, 5, 6), (1.0, 2.0, 3.0), (0, 0, 0), np.diag([-1.0, -1.0, 1.0]))  # RAS
    >>> r = reoriented_grid(g, canonical_reorientation(g))
    >>> r.origin, r.spacing, orientation_code(r.direction)
    ((-3.0, -8.0, 0.0), (1.0, 2.0, 3.0), 'LPS')
    """
    axes, flips = list(reorientation.axes), np.array(reorientation.flips)
    signs = np.where(flips, -1.0, 1.0)
    size = np.asarray(grid.size)[axes]
    first = np.zeros(3)  # the old index of the new voxel 0
    first[axes] = np.where(flips, size - 1, 0)
    return ImageGrid(size=tuple(size), spacing=tuple(np.asarray(grid.spacing)[axes]),
                     origin=tuple(index_to_world(first, grid)), direction=grid.direction[:, axes] * signs)


def reorient_array(array: np.ndarray, reorientation: Reorientation) -> np.ndarray:
    """The voxels of ``array`` (NumPy order (k, j, i, ...), as from ``sitk.GetArrayFromImage``;
    trailing axes such as vector components are kept) in the order ``reorientation`` gives.

    >>> a = np.arange(6).reshape(1, 2, 3)  # (k, j, i)
    >>> reorient_array(a, Reorientation((1, 0, 2), (True, False, False)))[0].tolist()
    [[3, 0], [4, 1], [5, 2]]
    """
    axes, flips = reorientation.axes, reorientation.flips
    flipped = np.flip(array, axis=[itk_to_array_axis(axes[a]) for a in range(3) if flips[a]])
    # new array axis b is new ITK axis 2 - b, i.e. old ITK axis axes[2 - b]
    order = [itk_to_array_axis(axes[2 - b]) for b in range(3)] + list(range(3, array.ndim))
    return np.ascontiguousarray(np.transpose(flipped, order))


def original_index(index, grid: ImageGrid, reorientation: Reorientation) -> np.ndarray:
    """Continuous ITK index (..., 3) in the reoriented grid -> the same point's index in ``grid``
    (the original storage order).

    >>> g = ImageGrid((4, 5, 6), (1, 1, 1), (0, 0, 0), np.eye(3))
    >>> original_index([0.5, 1.0, 2.0], g, Reorientation((2, 0, 1), (False, True, False))).tolist()
    [2.0, 2.0, 0.5]
    """
    index = np.asarray(index, dtype=float)
    out = np.empty_like(index)
    for a, (axis, flip) in enumerate(zip(reorientation.axes, reorientation.flips)):
        out[..., axis] = grid.size[axis] - 1 - index[..., a] if flip else index[..., a]
    return out
