"""Export a landmark dataset in nnU-Net's raw format.

Each landmark becomes a 3x3x3 voxel cube (label = channel index + 1) at the
voxel nearest to its world point, so that nnU-Net's spatial augmentation moves
it together with the image. The exact world points are kept beside the raw
dataset in ``landmarks_world.json``.

Landmarks closer than a cube's size (their cubes would overlap) go into
separate label maps: the landmarks of a case are coloured greedily so that no
two overlapping cubes share a map, and the label file becomes a 4D image
whose fourth axis is the map (nnU-Net reads it as a segmentation with one
channel per map and crops, resamples and augments every channel alike). The
label value still names the landmark, whichever map holds it. All cases get
the dataset's largest number of maps (nnU-Net batches need equal channel
counts); a dataset without close landmarks keeps a single 3D label map.

Cubes must survive nnU-Net's resampling to the target spacing, which
interpolates each label's mask linearly and keeps voxels >= 0.5: a 3-voxel
cube survives downsampling by up to 3x, but at 4x most vanish (measured: 32
of 40 random cubes lost), and the landmark would silently drop out of
training. So along an axis where the target spacing is ``f`` times the image's,
the cube's half-width is ``max(1, floor(f))`` voxels (:func:`cube_half_widths`):
at least about two target voxels wide. The target spacing is known when the
user sets it; otherwise cases finer than nnU-Net's planned spacing get their
label file rewritten after planning (``prepare`` does both).

Overlap is judged in the voxels of the original image, with the case's cube
size: with a target spacing much coarser than the image's, cubes a few voxels
apart can still merge during nnU-Net's resampling.

The dataset is whatever the layer above loaded (this layer imports nothing of
it), read through these attributes only, as
:class:`nnlandmark.data.dataset.LandmarkDataset` has them:

- ``dataset.spec.landmarks`` (names, the channel order), ``.channels``, ``.name``;
- ``dataset.cases``, each with ``case_id``, ``image_files`` (one per channel),
  ``read_image(channel)`` (a SimpleITK image: files and DICOM series alike),
  ``grid`` (an :class:`nnlandmark.geometry.ImageGrid`) and ``landmarks``
  (``points``: name -> world LPS point; ``status(name)``: ``present``,
  ``absent`` or ``unknown``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from nnlandmark.geometry import itk_to_array_index, nearest_voxel, world_to_index
from nnlandmark.errors import InvalidInput
from nnlandmark.files import atomic_write, atomic_write_text

CUBE_HALF_WIDTH = 1  # 3x3x3 cubes at the target spacing or finer
RAW_FILE_ENDING = ".mha"  # stores any direction matrix exactly, unlike NIfTI's float32 quaternions
#: the slice thickness (mm) nnU-Net is told for a 2D image (a grid of one slice, see
#: :mod:`nnlandmark.data.images`): far coarser than any pixel, so that its planner puts the slice
#: axis first (``transpose_forward``), finds one slice in the median shape and plans the ``2d``
#: configuration only, which never resamples across slices. nnU-Net's own reader gives a 2D
#: file 999 times its largest pixel spacing; one constant keeps every case alike.
PLANAR_SLICE_SPACING = 999.0
SIDECAR = "landmarks_world.json"
LABELS_FOLDER = "labelsTr"
LABEL_MAPS_KEY = "nnlandmark_label_maps"
CUBE_SIZES_KEY = "nnlandmark_cube_half_widths"


def nnunet_image(image: "sitk.Image") -> "sitk.Image":
    """``image`` as nnU-Net reads it from the raw data (and at prediction): a 2D image (a 3D
    image of one slice) with :data:`PLANAR_SLICE_SPACING` as its slice thickness, a copy;
    anything else unchanged. The world position of the slice (index k = 0) does not change.

    >>> flat = sitk.Image([5, 4, 1], sitk.sitkFloat32)
    >>> nnunet_image(flat).GetSpacing(), flat.GetSpacing()
    ((1.0, 1.0, 999.0), (1.0, 1.0, 1.0))
    """
    if image.GetDimension() != 3 or image.GetSize()[2] != 1:
        return image
    image = sitk.Image(image)
    image.SetSpacing((*image.GetSpacing()[:2], PLANAR_SLICE_SPACING))
    return image


def cube_centres(dataset_case, names) -> dict:
    """Nearest array-index voxel (k, j, i) per present landmark of a case."""
    return {name: nearest_voxel(itk_to_array_index(world_to_index(dataset_case.landmarks.points[name],
                                                                  dataset_case.grid)))
            for name in names if name in dataset_case.landmarks.points}


def cube_half_widths(spacing, target_spacing=None) -> np.ndarray:
    """Half-widths (k, j, i) in voxels of a case's landmark cubes.

    Parameters
    ----------
    spacing : (x, y, z) mm
        The case's voxel size (ITK order).
    target_spacing : (x, y, z) mm, optional
        The spacing nnU-Net resamples to; ``None`` gives 3x3x3 cubes; NaN
        along an axis nnU-Net does not resample (the slices of 2D images,
        whose cubes are one voxel thick, cut by the image's one slice).

    Returns
    -------
    numpy.ndarray
        int, array axis order (k, j, i): ``max(1, floor(target / spacing))``.

    Examples
    --------
    >>> cube_half_widths((1.0, 1.0, 1.0), (4.0, 2.5, 1.0)).tolist()
    [1, 2, 4]
    >>> cube_half_widths((1.0, 1.0, 1.0)).tolist()
    [1, 1, 1]
    """
    if target_spacing is None:
        return np.full(3, CUBE_HALF_WIDTH)
    # the small tolerance keeps an exact ratio such as 4.0 from rounding down to 3
    factor = np.asarray(target_spacing, float) / np.asarray(spacing, float)
    factor = np.where(np.isfinite(factor), factor, 1.0)
    return itk_to_array_index(np.maximum(CUBE_HALF_WIDTH, np.floor(factor + 1e-6))).astype(int)


def _cubes_overlap(a, b, half_widths=CUBE_HALF_WIDTH) -> bool:
    return bool(np.all(np.abs(np.asarray(a) - np.asarray(b)) <= 2 * np.asarray(half_widths)))


def find_cube_collisions(centres: dict, half_widths=CUBE_HALF_WIDTH) -> list:
    """Pairs of landmarks whose cubes would overlap (closer than a cube's size along every axis)."""
    names = list(centres)
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
            if _cubes_overlap(centres[a], centres[b], half_widths)]


def assign_label_maps(centres: dict, half_widths=CUBE_HALF_WIDTH) -> dict:
    """Label map index per landmark such that no two overlapping cubes share a map.

    Greedy colouring in the order of ``centres``: each landmark takes the
    lowest map not used by an overlapping landmark already placed, so without
    collisions every landmark is in map 0.

    Examples
    --------
    >>> assign_label_maps({"a": np.array([5, 5, 5]), "b": np.array([5, 5, 6]), "c": np.array([20, 5, 5])})
    {'a': 0, 'b': 1, 'c': 0}
    """
    maps = {}
    for name, centre in centres.items():
        taken = {maps[other] for other in maps if _cubes_overlap(centre, centres[other], half_widths)}
        maps[name] = next(m for m in range(len(taken) + 1) if m not in taken)
    return maps


def label_maps_needed(dataset, target_spacing=None) -> int:
    """The number of label maps the cases of ``dataset`` need (1 without collisions)."""
    names = dataset.spec.landmarks
    return max([1] + [max(assign_label_maps(cube_centres(case, names),
                                            cube_half_widths(case.grid.spacing, target_spacing)).values(),
                          default=0) + 1
                      for case in dataset.cases])


def landmark_label_maps(case, names, n_maps: int, target_spacing=None) -> np.ndarray:
    """Label arrays (n_maps, k, j, i): one cube per present landmark (3x3x3, larger
    where ``target_spacing`` is coarser, see :func:`cube_half_widths`), in the map
    :func:`assign_label_maps` gives it."""
    size = case.grid.array_shape
    centres = cube_centres(case, names)
    half_widths = cube_half_widths(case.grid.spacing, target_spacing)
    maps = assign_label_maps(centres, half_widths)
    if maps and max(maps.values()) >= n_maps:
        raise InvalidInput(f"{case.case_id}: landmark cubes overlap and need {max(maps.values()) + 1} "
                         f"label maps, not {n_maps}")
    labels = np.zeros((n_maps, *size), dtype=np.uint8 if len(names) < 255 else np.uint16)
    for name, centre in centres.items():
        lo = np.maximum(centre - half_widths, 0)
        hi = np.minimum(centre + half_widths + 1, size)
        labels[maps[name], lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = names.index(name) + 1
    return labels


def landmark_label_map(case, names) -> np.ndarray:
    """A single label array (k, j, i) with one 3x3x3 cube per present landmark;
    ValueError when cubes overlap (use :func:`landmark_label_maps`)."""
    return landmark_label_maps(case, names, 1)[0]


def label_image(maps: np.ndarray, reference) -> "sitk.Image":
    """The label file's image: 3D for a single map, else 4D with the map as fourth axis.

    Every map takes the geometry of ``reference`` (the case's image); nnU-Net's
    SimpleITK reader turns a 4D image into channels first, ``(maps, k, j, i)``.
    """
    images = []
    for m in maps:
        image = sitk.GetImageFromArray(m)
        image.CopyInformation(reference)
        images.append(image)
    return images[0] if len(images) == 1 else sitk.JoinSeries(images)


def nnunet_dataset_json(dataset, n_maps: int = 1, cube_sizes: dict | None = None) -> dict:
    labels = {"background": 0}
    labels.update({name: i + 1 for i, name in enumerate(dataset.spec.landmarks)})
    # nnU-Net ignores keys it does not know; LABEL_MAPS_KEY tells a resumed export what was written
    return {"channel_names": {str(i): c for i, c in enumerate(dataset.spec.channels)},
            "labels": labels, "numTraining": len(dataset.cases), "file_ending": RAW_FILE_ENDING,
            "name": dataset.spec.name, "description": "landmarks as label cubes, written by nnlandmark",
            LABEL_MAPS_KEY: n_maps, CUBE_SIZES_KEY: cube_sizes or {}}


def _landmark_record(case, names) -> dict:
    record = {}
    for name in names:
        status = case.landmarks.status(name)
        record[name] = case.landmarks.points[name].tolist() if status == "present" else status
    return record


def write_raw_dataset(dataset, raw_dir: Path, target_spacing=None, progress: bool = True,
                      labels: str = LABELS_FOLDER) -> None:
    """Write imagesTr/, labelsTr/, dataset.json and the world-coordinate sidecar.

    ``target_spacing`` (x, y, z mm; ``None`` = unknown yet) sizes the cubes, see
    :func:`cube_half_widths`. Cases already written (image, label and sidecar
    entry present, same number of label maps, same cube size) are skipped, so
    an interrupted export resumes where it stopped and a second call with the
    planned spacing rewrites only the labels whose cubes grow.

    With another ``labels`` folder (the cascade's global stage, whose coarser
    spacing needs larger cubes) only label files are written there, after the
    images have been exported; what they hold is recorded in ``<labels>.json``
    beside them, as ``dataset.json`` records it for ``labelsTr``.
    """
    raw_dir = Path(raw_dir)
    main_labels = labels == LABELS_FOLDER
    (raw_dir / "imagesTr").mkdir(parents=True, exist_ok=True)
    (raw_dir / labels).mkdir(parents=True, exist_ok=True)
    sidecar_path = raw_dir / SIDECAR
    sidecar = json.loads(sidecar_path.read_text()) if sidecar_path.exists() else {}
    names = dataset.spec.landmarks
    n_maps = label_maps_needed(dataset, target_spacing)
    json_path = raw_dir / ("dataset.json" if main_labels else f"{labels}.json")
    written = json.loads(json_path.read_text()) if json_path.exists() else {}
    written_maps = written.get(LABEL_MAPS_KEY, 1) if written else None
    written_sizes = written.get(CUBE_SIZES_KEY, {})
    written_records = dict(written.get("records", {}))
    cube_sizes = {case.case_id: cube_half_widths(case.grid.spacing, target_spacing).tolist()
                  for case in dataset.cases}
    for case in tqdm(dataset.cases, desc=f"exporting cases ({labels})", disable=not progress):
        label_file = raw_dir / labels / f"{case.case_id}{RAW_FILE_ENDING}"
        image_files = [raw_dir / "imagesTr" / f"{case.case_id}_{c:04d}{RAW_FILE_ENDING}"
                       for c in range(len(case.image_files))]
        record = _landmark_record(case, names)
        same_record = (sidecar if main_labels else written_records).get(case.case_id) == record
        same_cubes = written_sizes.get(case.case_id, [CUBE_HALF_WIDTH] * 3) == cube_sizes[case.case_id]
        if same_record and same_cubes and written_maps == n_maps and label_file.exists() \
                and all(f.exists() for f in image_files):
            continue
        if main_labels and not (same_record and all(f.exists() for f in image_files)):
            for channel, dst in enumerate(image_files):
                _atomic_write_image(nnunet_image(case.read_image(channel)), dst)
        reference = sitk.ReadImage(str(image_files[0]))
        _atomic_write_image(label_image(landmark_label_maps(case, names, n_maps, target_spacing), reference),
                            label_file)
        if main_labels:
            sidecar[case.case_id] = record
            atomic_write_text(sidecar_path, json.dumps(sidecar, indent=1))
        written_records[case.case_id] = record
    record = nnunet_dataset_json(dataset, n_maps, cube_sizes) if main_labels \
        else {LABEL_MAPS_KEY: n_maps, CUBE_SIZES_KEY: cube_sizes, "records": written_records}
    atomic_write_text(json_path, json.dumps(record, indent=2))


def _atomic_write_image(image, path: Path) -> None:
    for key in image.GetMetaDataKeys():  # NIfTI/NRRD header fields MetaImage cannot store
        image.EraseMetaData(key)
    atomic_write(path, lambda tmp: sitk.WriteImage(image, str(tmp)))
