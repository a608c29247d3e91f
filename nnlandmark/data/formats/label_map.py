"""Landmarks stored as an integer label image: label ``i + 1`` marks ``names[i]``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnlandmark.data.landmarks import Landmarks
from nnlandmark.data.formats._common import build_landmarks, fail
from nnlandmark.geometry import (
    GeometryError, ImageGrid, array_to_itk_index, index_to_world, itk_to_array_index, nearest_voxel,
    world_to_index,
)
from nnlandmark.errors import InvalidInput


def _read_image(path) -> sitk.Image:
    path = Path(path)
    if not path.is_file():
        raise fail(path, "no such file")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise fail(path, f"cannot read image ({str(err).strip().splitlines()[-1]})") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise fail(path, f"expected a 3D single-channel label image, got {image.GetDimension()}D "
                         f"with {image.GetNumberOfComponentsPerPixel()} component(s)")
    return image


def _grid(image: sitk.Image, path) -> ImageGrid:
    grid = ImageGrid.from_image(image)
    try:
        grid.validate()
    except GeometryError as err:
        raise fail(path, str(err)) from None
    return grid


def read_landmarks_from_label_map(image_path, names) -> Landmarks:
    """Landmarks as the world centroids of labels ``1 .. len(names)``.

    Parameters
    ----------
    image_path : path-like
        3D integer label image (anything SimpleITK reads).
    names : sequence of str
        ``names[i]`` is marked by label value ``i + 1``; 0 is background.

    Returns
    -------
    Landmarks
        LPS centroid of each label's voxels (voxel centres); names whose label
        does not occur are unknown.

    Raises
    ------
    LandmarkFileError
        Unreadable image, non-integer voxel values, or label values above
        ``len(names)`` (a names list that does not match the image).
    """
    path = Path(image_path)
    names = list(names)
    if len(set(names)) != len(names):
        raise InvalidInput(f"duplicate names in {names}")
    image = _read_image(path)
    grid = _grid(image, path)
    array = sitk.GetArrayFromImage(image)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise fail(path, "label image has non-integer values")
        array = array.astype(np.int64)
    values = np.unique(array)
    stray = [int(v) for v in values if v < 0 or v > len(names)]
    if stray:
        raise fail(path, f"label value(s) {stray} have no landmark name ({len(names)} names given)")
    entries = []
    for label, name in enumerate(names, start=1):
        voxels = np.argwhere(array == label)
        if len(voxels) == 0:
            entries.append((name, "unknown", None))
            continue
        centroid_itk = array_to_itk_index(voxels.mean(axis=0))
        entries.append((name, "present", index_to_world(centroid_itk, grid)))
    return build_landmarks(entries, path)


def write_label_map(landmarks: Landmarks, names, reference_image, path) -> None:
    """Write a label image on ``reference_image``'s grid, one voxel per present landmark.

    Label ``i + 1`` is placed at the voxel nearest to ``names[i]``'s point.
    Absent, unknown and unmentioned names are not written.

    Raises
    ------
    ValueError
        A landmark outside the reference image, or two landmarks on the same voxel
        (one would silently overwrite the other).
    """
    names = list(names)
    if isinstance(reference_image, sitk.Image):
        reference = reference_image
        grid = ImageGrid.from_image(reference)
        grid.validate()
    else:
        reference = _read_image(reference_image)
        grid = _grid(reference, reference_image)
    dtype, pixel = (np.uint8, sitk.sitkUInt8) if len(names) < 256 else (np.uint16, sitk.sitkUInt16)
    array = np.zeros(grid.array_shape, dtype=dtype)
    occupied = {}
    for label, name in enumerate(names, start=1):
        point = landmarks.point(name)
        if point is None:
            continue
        index = world_to_index(point, grid)
        if not grid.contains_index(index):
            raise InvalidInput(f"landmark {name!r} at {np.round(point, 3).tolist()} mm lies outside "
                             f"the reference image (index {np.round(index, 2).tolist()})")
        voxel = tuple(int(v) for v in np.clip(nearest_voxel(index), 0, np.asarray(grid.size) - 1))
        if voxel in occupied:
            raise InvalidInput(f"landmarks {occupied[voxel]!r} and {name!r} fall on the same voxel {voxel}")
        occupied[voxel] = name
        array[tuple(itk_to_array_index(voxel).astype(int))] = label
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(reference)
    sitk.WriteImage(sitk.Cast(out, pixel), str(path), useCompression=True)
