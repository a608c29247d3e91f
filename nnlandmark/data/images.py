"""Reading images: the one place that knows image files, DICOM series and their geometry.

An image is a file with one of :data:`IMAGE_SUFFIXES` (NIfTI, NRRD, MetaImage,
a single DICOM file, and the 2D picture formats PNG, JPEG and TIFF) or a folder holding one DICOM series
(read with SimpleITK's GDCM series reader, which orders the slices by position
and takes the geometry from their headers). Every error names the file or
folder and is a :class:`DatasetError` (one line per problem).

**2D images** (X-ray radiographs, ultrasound frames) are 3D images of one slice
inside nnlandmark: a 2D file of W x H pixels reads as a grid of size (W, H, 1)
with spacing (sx, sy, 1), origin (ox, oy, 0) and its 2x2 direction in the upper
left of an otherwise identity direction (:func:`read_image`,
:func:`read_image_grid`), so that geometry, landmarks (z = 0) and evaluation are
the same code as in 3D. A 3D file with one slice (size (W, H, 1)) is a 2D image
too, with the geometry it declares. Pictures (:data:`PICTURE_SUFFIXES`) have no
spacing of their own (a PNG's ``pHYs`` is a print resolution): theirs is given
by the caller (a dataset's ``spacing`` in ``dataset.json``), else
:data:`DEFAULT_PICTURE_SPACING`; their origin is 0 and their direction the
identity, so pixel (i, j) lies at (i sx, j sy, 0) mm. Pictures keep their pixel
type (8 or 16 bits); grey stored as RGB is read as that grey, other colour
pictures as their luminance (0.299 R + 0.587 G + 0.114 B; an alpha channel is
ignored). A single DICOM file (``.dcm``: a DX or CR radiograph, or any
one-frame image) is a 2D image whose spacing comes from its Pixel Spacing, else
its Imager Pixel Spacing tag (:func:`dicom_pixel_spacing`).

Examples
--------
>>> import tempfile, numpy as np, SimpleITK as sitk
>>> from pathlib import Path
>>> from nnlandmark.geometry import ImageGrid
>>> grid = ImageGrid(size=(4, 5, 6), spacing=(1.0, 2.0, 3.0), origin=(10.0, 0.0, 0.0), direction=np.eye(3))
>>> image = to_sitk(np.zeros(grid.array_shape, np.float32), grid)
>>> path = Path(tempfile.mkdtemp()) / "scan.nrrd"
>>> sitk.WriteImage(image, str(path))
>>> read_image_grid(path, read_pixels=True).size, image_name(path)
((4, 5, 6), ('scan', '.nrrd'))
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnlandmark.errors import DatasetError, InvalidInput
from nnlandmark.geometry import (GeometryError, ImageGrid, canonical_reorientation, reorient_array,
                                 reoriented_grid)

#: 2D picture formats: no spacing, origin or direction of their own (a TIFF's resolution tags,
#: like a PNG's ``pHYs``, are a print resolution and are ignored)
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: one DICOM file: a 2D radiograph (DX, CR, ...), its spacing from its tags (:func:`dicom_pixel_spacing`)
DICOM_FILE_SUFFIXES = (".dcm",)
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd") + PICTURE_SUFFIXES + DICOM_FILE_SUFFIXES
#: the pixel spacing (mm; x, y) of a picture whose dataset gives none
DEFAULT_PICTURE_SPACING = (1.0, 1.0)
#: what a folder of DICOM slices is called in messages and in ``image_name``
DICOM_SERIES = "DICOM series"


def split_suffix(path, suffixes) -> tuple[str, str] | None:
    """(stem, suffix) for the first matching (multi-part, case-insensitive) suffix, else None.

    >>> split_suffix(Path("a/case_01.NII.GZ"), IMAGE_SUFFIXES)
    ('case_01', '.nii.gz')
    """
    name = Path(path).name
    for suffix in suffixes:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)], suffix
    return None


def is_picture(path) -> bool:
    """True for a PNG, JPEG or TIFF file (:data:`PICTURE_SUFFIXES`), whose spacing is not its own.

    >>> is_picture("a/ceph_001.PNG"), is_picture("a/ceph_002.tif"), is_picture("a/scan.nii.gz")
    (True, True, False)
    """
    return split_suffix(path, PICTURE_SUFFIXES) is not None


def picture_spacing(spacing=None) -> tuple:
    """A picture's pixel spacing (x, y) in mm from one number or two, or the default.

    >>> picture_spacing(0.1), picture_spacing([0.1, 0.2]), picture_spacing()
    ((0.1, 0.1), (0.1, 0.2), (1.0, 1.0))
    """
    if spacing is None:
        return DEFAULT_PICTURE_SPACING
    values = [spacing] * 2 if isinstance(spacing, (int, float)) else list(spacing)
    if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
                                   and v > 0 for v in values):
        raise InvalidInput(f"picture spacing must be one or two positive numbers (mm), got {spacing!r}")
    return float(values[0]), float(values[1])


def dicom_series_ids(folder) -> tuple:
    """The DICOM series found directly in ``folder`` (empty when none, or not a folder)."""
    folder = Path(folder)
    if not folder.is_dir() or not any(_is_dicom_file(f) for f in folder.iterdir()):
        return ()  # GDCM would print a warning for every folder without a series
    return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def dicom_volume_slices(folder) -> set:
    """The DICOM files directly in ``folder`` that are slices of a volume: files of one series,
    more than one, placed in space (Image Position (Patient)). Radiographs (DX, CR) carry no
    position and stay single images even when they share a series."""
    slices = set()
    for series in dicom_series_ids(folder):
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series)
        if len(files) < 2:
            continue
        reader = sitk.ImageFileReader()
        reader.SetFileName(files[0])
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            continue
        if reader.HasMetaDataKey("0020|0032"):
            slices.update(Path(f) for f in files)
    return slices


def _is_dicom_file(path: Path) -> bool:
    """A DICOM part-10 file: ``DICM`` after the 128-byte preamble (how DICOM files announce themselves)."""
    if not path.is_file():
        return False
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def image_name(path) -> tuple[str, str] | None:
    """``(case stem, kind)`` of an image: its suffix for a file, :data:`DICOM_SERIES` for a
    folder holding a DICOM series; None for anything else."""
    path = Path(path)
    if path.is_dir():
        return (path.name, DICOM_SERIES) if dicom_series_ids(path) else None
    return split_suffix(path, IMAGE_SUFFIXES)


def _series_files(folder: Path) -> list:
    series = dicom_series_ids(folder)
    if not series:
        raise DatasetError(f"{folder}: folder holds no DICOM series")
    if len(series) > 1:
        raise DatasetError(f"{folder}: folder holds {len(series)} DICOM series; put each in a folder of its own")
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))
    check_slice_positions(folder, _slice_geometry(files))
    return files


def _slice_geometry(files) -> list:
    """``(file name, position, orientation)`` of each slice with Image Position and Orientation
    (Patient), in the reader's order; slices without them (radiographs) are left out."""
    found = []
    reader = sitk.ImageFileReader()
    for f in files:
        reader.SetFileName(str(f))
        try:
            reader.ReadImageInformation()
            position = [float(v) for v in reader.GetMetaData("0020|0032").split("\\")]
            orientation = [float(v) for v in reader.GetMetaData("0020|0037").split("\\")]
        except (RuntimeError, ValueError):  # a tag missing or malformed: GDCM's own geometry decides
            continue
        if len(position) == 3 and len(orientation) == 6:
            found.append((Path(f).name, np.array(position), np.array(orientation)))
    return found


def check_slice_positions(folder, slices, tolerance: float = 0.01) -> None:
    """Refuse a series whose slices do not lie evenly along one normal: ITK's series reader
    would read a series with a missing slice as a volume of fewer, thicker slices (every
    position after the gap shifts) and merely warn. ``slices`` are ``(name, position (3,),
    orientation (6,))``; positions may be apart by their median step within ``tolerance``
    of it (relative). DatasetError naming ``folder`` and the slices around the problem.

    >>> z = lambda k: (f"s{k}.dcm", np.array([0.0, 0.0, 3.0 * k]), np.array([1.0, 0, 0, 0, 1, 0]))
    >>> check_slice_positions("series", [z(0), z(1), z(2), z(3)])
    >>> check_slice_positions("series", [z(0), z(1), z(3), z(4)])
    Traceback (most recent call last):
    ...
    nnlandmark.errors.DatasetError: series: DICOM slice positions are not evenly spaced: 6 mm between s1.dcm and s3.dcm where the other slices are 3 mm apart (a missing slice?)
    """
    if len(slices) < 2:
        return
    names = [name for name, _, _ in slices]
    orientations = np.array([o for _, _, o in slices])
    odd = np.flatnonzero(np.abs(orientations - orientations[0]).max(axis=1) > 1e-3)
    if len(odd):
        raise DatasetError(f"{folder}: DICOM slices with different orientations ({names[0]} and "
                           f"{names[odd[0]]}); put each orientation in a series folder of its own")
    normal = np.cross(orientations[0][:3], orientations[0][3:])
    depth = np.array([p for _, p, _ in slices]) @ normal
    order = np.argsort(depth, kind="stable")
    steps = np.diff(depth[order])
    step = float(np.median(steps))
    duplicate = np.flatnonzero(steps <= tolerance * max(step, 1e-6))
    if len(duplicate):
        a, b = order[duplicate[0]], order[duplicate[0] + 1]
        raise DatasetError(f"{folder}: DICOM slices {names[a]} and {names[b]} have the same position "
                           f"({depth[a]:.4g} mm along the slice normal); remove the duplicate")
    uneven = np.flatnonzero(np.abs(steps - step) > tolerance * step)
    if len(uneven):
        k = int(uneven[np.argmax(np.abs(steps[uneven] - step))])
        a, b = order[k], order[k + 1]
        hint = " (a missing slice?)" if steps[k] > step else ""
        raise DatasetError(f"{folder}: DICOM slice positions are not evenly spaced: {steps[k]:.4g} mm between "
                           f"{names[a]} and {names[b]} where the other slices are {step:.4g} mm apart{hint}")


def dicom_pixel_spacing(tags: dict):
    r"""The (x, y) pixel spacing in mm of a 2D DICOM image from its tags, or None without one.

    ``tags`` maps ``"gggg|eeee"`` to values, as SimpleITK reads them. Pixel Spacing
    (0028,0030), when present, is the spacing in the patient (calibrated, or as the
    modality defines it); else Imager Pixel Spacing (0018,1164), the spacing at the
    detector, which a projection radiograph (DX, CR) often gives alone (it includes the
    geometric magnification). Both are written "row spacing\column spacing", i.e.
    (y, x). GDCM, which SimpleITK reads DICOM with, prefers Imager Pixel Spacing for
    DX and CR files; we follow the standard's order.

    >>> dicom_pixel_spacing({"0028|0030": "0.15\\0.1", "0018|1164": ".2\\.2"})
    (0.1, 0.15)
    >>> dicom_pixel_spacing({"0018|1164": "0.139\\0.143"}), dicom_pixel_spacing({})
    ((0.143, 0.139), None)
    """
    for tag in ("0028|0030", "0018|1164"):
        value = str(tags.get(tag, "")).strip()
        if not value:
            continue
        try:
            row, column = (float(v) for v in value.split("\\"))
        except ValueError:
            continue  # malformed: the next tag, or none
        if row > 0 and column > 0 and np.isfinite(row) and np.isfinite(column):
            return column, row
    return None


def _dicom_file_spacing(reader, size) -> tuple | None:
    """The spacing (x, y, 1) of a one-slice DICOM file read by ``reader`` (header read), else None."""
    if len(size) == 3 and size[2] != 1:
        return None  # a multi-frame volume: GDCM's own geometry
    tags = {key: reader.GetMetaData(key) for key in ("0028|0030", "0018|1164") if reader.HasMetaDataKey(key)}
    planar = dicom_pixel_spacing(tags)
    return None if planar is None else (*planar, 1.0)


def read_image(path, spacing=None) -> sitk.Image:
    """The image at ``path`` (a file, or a folder with one DICOM series), pixels and geometry.

    A 2D image comes back as a 3D image of one slice, a picture as its
    luminance with ``spacing`` (see the module notes and :func:`picture_spacing`;
    ``spacing`` is ignored for formats that carry their own).
    """
    path = Path(path)
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(_series_files(path))
            return reader.Execute()
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        image = reader.Execute()
    except RuntimeError as e:
        image = _grey_alpha_picture(path)  # SimpleITK cannot read grey + alpha PNGs
        if image is None:
            raise DatasetError(f"{path}: image cannot be read ({_itk_reason(e)})") from e
    if is_picture(path):
        image = _picture(image, spacing)
    elif split_suffix(path, DICOM_FILE_SUFFIXES):
        dicom_spacing = _dicom_file_spacing(reader, image.GetSize())
        if dicom_spacing is not None:
            image.SetSpacing(dicom_spacing[: image.GetDimension()])
    return as_volume(image)


def grey_if_equal_channels(image: sitk.Image) -> sitk.Image:
    """A colour picture whose red, green and blue are equal everywhere (grey stored as RGB,
    as radiographs often are) as its one grey channel, in its own pixel type; any other
    image unchanged.

    >>> rgb = sitk.Compose(*[sitk.Image(3, 2, sitk.sitkUInt8) + 7] * 3)
    >>> grey = grey_if_equal_channels(rgb)
    >>> grey.GetNumberOfComponentsPerPixel(), grey.GetPixelIDTypeAsString(), grey[1, 1]
    (1, '8-bit unsigned integer', 7)
    """
    if image.GetNumberOfComponentsPerPixel() < 3:
        return image
    pixels = sitk.GetArrayViewFromImage(image)
    if not (np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 0], pixels[..., 2])):
        return image
    grey = sitk.VectorIndexSelectionCast(image, 0)
    grey.CopyInformation(image)
    return grey


def _picture(image: sitk.Image, spacing=None) -> sitk.Image:
    """A picture as a scalar 2D image with ``spacing``, origin 0 and identity direction."""
    image = grey_if_equal_channels(image)  # exact grey values, not a float luminance
    components = image.GetNumberOfComponentsPerPixel()
    if components >= 3:  # RGB or RGBA: luminance, alpha ignored
        channels = [sitk.Cast(sitk.VectorIndexSelectionCast(image, c), sitk.sitkFloat32) for c in range(3)]
        image = channels[0] * 0.299 + channels[1] * 0.587 + channels[2] * 0.114
    elif components == 2:  # grey and alpha
        image = sitk.VectorIndexSelectionCast(image, 0)
    if image.GetDimension() == 2:
        image.SetSpacing(picture_spacing(spacing))
        image.SetOrigin((0.0, 0.0))
        image.SetDirection((1.0, 0.0, 0.0, 1.0))
    return image


def as_volume(image: sitk.Image) -> sitk.Image:
    """A 2D image as a 3D image of one slice (spacing 1 and origin 0 along the third axis,
    its direction the third column of the identity); other images unchanged.

    >>> flat = sitk.Image(4, 3, sitk.sitkFloat32)
    >>> flat.SetSpacing((0.5, 0.25)); flat.SetOrigin((10.0, 20.0))
    >>> volume = as_volume(flat)
    >>> volume.GetSize(), volume.GetSpacing(), volume.GetOrigin()
    ((4, 3, 1), (0.5, 0.25, 1.0), (10.0, 20.0, 0.0))
    """
    if image.GetDimension() != 2:
        return image
    volume = sitk.JoinSeries(image)
    volume.SetDirection([float(v) for v in _planar_direction(image.GetDirection()).ravel()])
    return volume


def _planar_direction(direction_2d) -> np.ndarray:
    """A 2D image's 2x2 direction in the upper left of a 3x3 identity."""
    direction = np.eye(3)
    direction[:2, :2] = np.reshape(direction_2d, (2, 2))
    return direction


def to_sitk(array: np.ndarray, grid: ImageGrid) -> sitk.Image:
    """A SimpleITK image of ``array`` (numpy order z, y, x: ``grid.array_shape``) placed on ``grid``."""
    return place(sitk.GetImageFromArray(array), grid)


def place(image: sitk.Image, grid: ImageGrid) -> sitk.Image:
    """``image`` (scalar or vector) given the spacing, origin and direction of ``grid``; returned."""
    image.SetSpacing([float(s) for s in grid.spacing])
    image.SetOrigin([float(o) for o in grid.origin])
    image.SetDirection([float(d) for d in np.asarray(grid.direction).ravel()])
    return image


def canonical_image(image: sitk.Image) -> sitk.Image:
    """``image`` with its voxels stored in the canonical order (:data:`nnlandmark.geometry.CANONICAL_ORIENTATION`):
    axes permuted and flipped, nothing resampled, every voxel at the same world position; the image
    itself when it is stored that way already. Networks see only canonical images, so a scan stored
    mirrored (LAS, RAI, ...) or in coronal slices shows them the anatomy the way the training scans did.

    >>> rai = sitk.GetImageFromArray(np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    >>> rai.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, -1))
    >>> lps = canonical_image(rai)
    >>> lps.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0), lps.GetOrigin()
    (True, (-3.0, 0.0, -1.0))
    >>> rai.TransformIndexToPhysicalPoint((3, 0, 1)) == lps.TransformIndexToPhysicalPoint((0, 0, 0))
    True
    """
    grid = ImageGrid.from_image(image)
    reorientation = canonical_reorientation(grid)
    if reorientation.is_identity:
        return image
    array = reorient_array(sitk.GetArrayViewFromImage(image), reorientation)
    return to_sitk(array, reoriented_grid(grid, reorientation))


def write_dicom_series(image: sitk.Image, folder, modality: str = "MR") -> Path:
    """Write a 3D image as a DICOM series, one file per slice along its third axis, with the
    position and orientation tags that carry its geometry (oblique directions included);
    voxels are stored as 16-bit integers. For tests and for handing scans to DICOM tools.

    >>> import tempfile, numpy as np, SimpleITK as sitk
    >>> image = sitk.GetImageFromArray(np.arange(60, dtype=np.int16).reshape(3, 4, 5))
    >>> image.SetSpacing((0.5, 0.6, 2.0))
    >>> folder = write_dicom_series(image, Path(tempfile.mkdtemp()) / "series")
    >>> read_image_grid(folder).spacing
    (0.5, 0.6, 2.0)
    """
    import time
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(image, sitk.sitkInt16)
    d = image.GetDirection()
    uid = f"1.2.826.0.1.3680043.2.1125.{int(time.time() * 1e6)}"  # a UID root for locally made series
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetSize()[2]):
        plane = image[:, :, k]
        tags = {"0008|0060": modality, "0020|000d": uid + ".1", "0020|000e": uid + ".2",
                "0020|0013": str(k + 1), "0018|0050": f"{image.GetSpacing()[2]:.6f}",
                "0008|0018": f"{uid}.3.{k + 1}",
                # row and column direction cosines: the first two columns of the direction matrix
                "0020|0037": "\\".join(f"{v:.9f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
                "0020|0032": "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k)))}
        for key, value in tags.items():
            plane.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice_{k:04d}.dcm"))
        writer.Execute(plane)
    return folder


def _itk_reason(error: RuntimeError) -> str:
    """The informative part of a SimpleITK exception, without source locations and object addresses.

    ITK appends ``Reason: <strerror>`` from a stale ``errno`` (often "No such
    file or directory" for a file that exists); that line is dropped because it
    misleads more than it helps.
    """
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    kept = []
    for line in lines:
        if line.startswith("Exception thrown in SimpleITK") or line.startswith("Reason: "):
            continue
        line = re.sub(r"^(ITK ERROR|sitk::ERROR):\s*(\w+\(0x[0-9a-fA-F]+\):\s*)?", "", line)
        kept.append(line)
    return " ".join(kept) or "unknown error"


def _check_nifti_complete(path: Path) -> None:
    """Raise DatasetError when a NIfTI file holds less voxel data than its header declares.

    ITK's NIfTI reader silently fills a truncated ``.nii``/``.nii.gz`` with
    zeros, so the check is ours: the byte count after the header's voxel
    offset must cover the declared shape, and a gzip stream must end properly
    with a valid checksum.
    """
    import gzip
    import zlib

    import nibabel
    try:
        proxy = nibabel.load(str(path)).dataobj
        expected = int(proxy.offset) + int(np.prod(proxy.shape)) * proxy.dtype.itemsize
    except Exception:  # nibabel is stricter than ITK about some headers; ITK has read this file already
        return
    if path.name.lower().endswith(".gz"):
        actual = 0
        try:
            with gzip.open(path, "rb") as f:
                while chunk := f.read(1 << 24):
                    actual += len(chunk)
        except (EOFError, OSError, zlib.error) as e:
            raise DatasetError(f"{path}: compressed image data are truncated or corrupt ({e})") from e
    else:
        actual = path.stat().st_size
    if actual < expected:
        raise DatasetError(f"{path}: image file is truncated: {actual} bytes where its header needs {expected}")


def read_image_grid(path, read_pixels: bool = False, finite: bool = False, spacing=None) -> ImageGrid:
    """The 3D grid of an image (a file, or a folder with one DICOM series); raises
    DatasetError naming the file. A 2D image's grid has one slice (see the
    module notes); ``spacing`` is a picture's (:func:`picture_spacing`), ignored
    for formats that carry their own.

    The grid is taken from the header exactly as written (ITK's pixel reader
    would silently turn a negative spacing into a flipped direction). With
    ``read_pixels`` the whole file is decoded as well, so truncated or corrupt
    data are caught here and not hours later; with ``finite`` too, NaN or
    infinite voxels are refused (nnU-Net's normalisation would spread them, and
    a model would still answer with confident points), and so is an image whose
    voxels all have one value (:func:`check_signal`; a NIfTI's voxels as nibabel
    reads them, NaN kept).
    """
    path = Path(path)
    if path.is_dir():
        return _read_series_grid(path, finite)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        grey = _grey_alpha_picture(path)
        if grey is None:
            raise DatasetError(f"{path}: cannot read image header, not an image file or corrupt "
                               f"({_itk_reason(e)})") from e
        return _picture_grid(path, grey, spacing, finite)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        _warn_exif_orientation(path)
    dim, components = reader.GetDimension(), reader.GetNumberOfComponents()
    size, origin, direction = reader.GetSize(), reader.GetOrigin(), reader.GetDirection()
    picture = is_picture(path)
    if picture:
        if dim != 2:
            raise DatasetError(f"{path}: a {dim}D picture (size {tuple(size)}; a multi-page TIFF?); expected "
                               "one 2D picture")
        try:
            pixel_spacing = picture_spacing(spacing)
        except InvalidInput as e:
            raise DatasetError(f"{path}: {e}") from e
    else:
        pixel_spacing = reader.GetSpacing()
        if split_suffix(path, DICOM_FILE_SUFFIXES):
            pixel_spacing = _dicom_file_spacing(reader, size) or pixel_spacing
    if dim == 4 and size[3] == 1:
        raise DatasetError(f"{path}: 4D image with a single volume; save it as 3D")
    if dim not in (2, 3):
        raise DatasetError(f"{path}: expected a 2D or 3D image, got {dim}D (size {tuple(size)})")
    if components != 1 and not (picture and components <= 4):
        raise DatasetError(f"{path}: expected a scalar image, got {components} components per voxel; "
                           "store channels as separate files <case>_0000, <case>_0001, ...")
    if min(size[:2]) < 2:
        raise DatasetError(f"{path}: image of size {tuple(size)} is neither a 3D volume nor a 2D image")
    if dim == 2:
        if picture:
            origin, direction = (0.0, 0.0), (1.0, 0.0, 0.0, 1.0)
        grid = ImageGrid(size=(*size, 1), spacing=(*pixel_spacing, 1.0), origin=(*origin, 0.0),
                         direction=_planar_direction(direction))
    else:
        grid = ImageGrid(size=size, spacing=pixel_spacing, origin=origin, direction=np.array(direction).reshape(3, 3))
    try:
        grid.validate()
    except GeometryError as e:
        raise DatasetError(f"{path}: {e}") from e
    if read_pixels or finite:
        try:
            image = reader.Execute()
        except RuntimeError as e:
            raise DatasetError(f"{path}: image data cannot be read, the file is truncated or corrupt "
                               f"({_itk_reason(e)})") from e
        if path.name.lower().endswith((".nii", ".nii.gz")):
            _check_nifti_complete(path)
        if finite:
            voxels = sitk.GetArrayViewFromImage(image)
            if path.name.lower().endswith((".nii", ".nii.gz")):
                voxels = _nifti_voxels(path, voxels)
            check_signal(path, voxels)
    return grid


def _nifti_voxels(path: Path, fallback: np.ndarray) -> np.ndarray:
    """A NIfTI file's voxels as nibabel reads them: SimpleITK reads NaN voxels of a NIfTI as 0
    (FSL and ANTs write NaN outside the field of view), which would hide an image with no signal."""
    import nibabel
    try:
        return np.asanyarray(nibabel.load(str(path)).dataobj)
    except Exception:  # nibabel is stricter than ITK about some headers; ITK has read this file already
        return fallback


def check_signal(path, voxels: np.ndarray) -> None:
    """Refuse voxels that are NaN or infinite, or all one value (an image with no signal, which a
    model would still answer with confident points); DatasetError naming ``path``.

    >>> check_signal("a.nii.gz", np.array([1.0, 2.0]))
    >>> check_signal("a.nii.gz", np.full(8, 3.0))
    Traceback (most recent call last):
    ...
    nnlandmark.errors.DatasetError: a.nii.gz: every voxel has the value 3; an image with no signal
    >>> check_signal("a.nii.gz", np.array([np.nan, np.nan]))
    Traceback (most recent call last):
    ...
    nnlandmark.errors.DatasetError: a.nii.gz: 2 of 2 voxels are NaN or infinite (all of them: an image with no signal)
    """
    voxels = np.asarray(voxels)
    if voxels.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(voxels)))
        if bad:
            raise DatasetError(f"{path}: {bad} of {voxels.size} voxels are NaN or infinite"
                               + (" (all of them: an image with no signal)" if bad == voxels.size else ""))
    if voxels.size and voxels.min() == voxels.max():
        raise DatasetError(f"{path}: every voxel has the value {voxels.flat[0]:g}; an image with no signal")


def _grey_alpha_picture(path: Path) -> sitk.Image | None:
    """A grey + alpha picture (PNG mode ``LA``, which SimpleITK cannot read) as its grey channel,
    read with Pillow; None for anything else (the caller's error stands)."""
    if not is_picture(path):
        return None
    try:
        from PIL import Image
        with Image.open(path) as picture:
            if picture.mode not in ("LA", "La"):
                return None
            return sitk.GetImageFromArray(np.asarray(picture.getchannel(0)))
    except Exception:  # not a picture Pillow reads either: SimpleITK's error is the one to show
        return None


def _picture_grid(path: Path, image: sitk.Image, spacing, finite: bool) -> ImageGrid:
    """The grid of a picture read by :func:`_grey_alpha_picture` (as :func:`read_image_grid` makes it)."""
    try:
        pixel_spacing = picture_spacing(spacing)
    except InvalidInput as e:
        raise DatasetError(f"{path}: {e}") from e
    if finite:
        check_signal(path, sitk.GetArrayViewFromImage(image))
    return ImageGrid(size=(*image.GetSize(), 1), spacing=(*pixel_spacing, 1.0), origin=(0.0, 0.0, 0.0),
                     direction=np.eye(3))


def _warn_exif_orientation(path: Path) -> None:
    """Say once per file when a JPEG's EXIF orientation asks viewers to rotate or mirror it:
    nnlandmark reads (and places landmarks on) the pixels as stored, as SimpleITK does."""
    import warnings
    try:
        from PIL import Image
        with Image.open(path) as picture:
            orientation = picture.getexif().get(0x0112, 1)
    except Exception:
        return
    if orientation not in (None, 1):
        warnings.warn(f"{path}: its EXIF orientation ({orientation}) asks viewers to rotate or mirror it; "
                      "nnlandmark reads the pixels as stored, without it: landmark pixel coordinates must be "
                      "of the stored image (save it without the tag, e.g. rotated, to avoid the doubt)",
                      stacklevel=3)


def _read_series_grid(folder: Path, finite: bool) -> ImageGrid:
    """A DICOM series' grid: the slices are read whole (their positions make the geometry)."""
    image = read_image(folder)
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DatasetError(f"{folder}: expected a 3D scalar DICOM series, got {image.GetDimension()}D with "
                           f"{image.GetNumberOfComponentsPerPixel()} components")
    if min(image.GetSize()) < 2:
        raise DatasetError(f"{folder}: DICOM series of size {image.GetSize()} is not a 3D volume")
    grid = ImageGrid.from_image(image)
    try:
        grid.validate()
    except GeometryError as e:
        raise DatasetError(f"{folder}: {e}") from e
    if finite:
        check_signal(folder, sitk.GetArrayViewFromImage(image))
    return grid


