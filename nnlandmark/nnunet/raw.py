"""Export a landmark dataset in nnU-Net's raw format.

Each landmark becomes a 3x3x3 voxel cube (label = channel index + 1) at the
voxel nearest to its world point, so that nnU-Net's spatial augmentation moves
it together with the image. The exact world points are kept beside the raw
dataset in ``landmarks_world.json``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from nnlandmark.data.dataset import DatasetError, LandmarkDataset
from nnlandmark.geometry import itk_to_array_index, nearest_voxel, world_to_index

CUBE_HALF_WIDTH = 1  # 3x3x3 cubes
RAW_FILE_ENDING = ".mha"  # stores any direction matrix exactly, unlike NIfTI's float32 quaternions
SIDECAR = "landmarks_world.json"


def cube_centres(dataset_case, names) -> dict:
    """Nearest array-index voxel (k, j, i) per present landmark of a case."""
    return {name: nearest_voxel(itk_to_array_index(world_to_index(dataset_case.landmarks.points[name],
                                                                  dataset_case.grid)))
            for name in names if name in dataset_case.landmarks.points}


def find_cube_collisions(centres: dict) -> list:
    """Pairs of landmarks whose cubes would overlap (Chebyshev distance < cube size)."""
    names = list(centres)
    clashes = []
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            if np.max(np.abs(centres[names[a]] - centres[names[b]])) <= 2 * CUBE_HALF_WIDTH:
                clashes.append((names[a], names[b]))
    return clashes


def check_cube_collisions(dataset: LandmarkDataset) -> None:
    """Raise DatasetError naming every case whose landmark cubes would overlap."""
    problems = []
    for case in dataset.cases:
        for a, b in find_cube_collisions(cube_centres(case, dataset.spec.landmarks)):
            problems.append(f"{case.landmark_file}: landmarks '{a}' and '{b}' are closer than "
                            f"{2 * CUBE_HALF_WIDTH + 1} voxels; their label cubes would collide")
    if problems:
        raise DatasetError(problems)


def landmark_label_map(case, names) -> np.ndarray:
    """A label array (k, j, i) with one 3x3x3 cube per present landmark."""
    size = case.grid.size[::-1]
    labels = np.zeros(size, dtype=np.uint8 if len(names) < 255 else np.uint16)
    for name, centre in cube_centres(case, names).items():
        lo = np.maximum(centre - CUBE_HALF_WIDTH, 0)
        hi = np.minimum(centre + CUBE_HALF_WIDTH + 1, size)
        labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = names.index(name) + 1
    return labels


def nnunet_dataset_json(dataset: LandmarkDataset) -> dict:
    labels = {"background": 0}
    labels.update({name: i + 1 for i, name in enumerate(dataset.spec.landmarks)})
    return {"channel_names": {str(i): c for i, c in enumerate(dataset.spec.channels)},
            "labels": labels, "numTraining": len(dataset.cases), "file_ending": RAW_FILE_ENDING,
            "name": dataset.spec.name, "description": "landmarks as 3x3x3 cubes, written by nnlandmark"}


def _landmark_record(case, names) -> dict:
    record = {}
    for name in names:
        status = case.landmarks.status(name)
        record[name] = case.landmarks.points[name].tolist() if status == "present" else status
    return record


def write_raw_dataset(dataset: LandmarkDataset, raw_dir: Path, progress: bool = True) -> None:
    """Write imagesTr/, labelsTr/, dataset.json and the world-coordinate sidecar.

    Cases already written (image, label and sidecar entry present) are skipped,
    so an interrupted export resumes where it stopped.
    """
    raw_dir = Path(raw_dir)
    (raw_dir / "imagesTr").mkdir(parents=True, exist_ok=True)
    (raw_dir / "labelsTr").mkdir(parents=True, exist_ok=True)
    sidecar_path = raw_dir / SIDECAR
    sidecar = json.loads(sidecar_path.read_text()) if sidecar_path.exists() else {}
    names = dataset.spec.landmarks
    for case in tqdm(dataset.cases, desc="exporting cases", disable=not progress):
        label_file = raw_dir / "labelsTr" / f"{case.case_id}{RAW_FILE_ENDING}"
        image_files = [raw_dir / "imagesTr" / f"{case.case_id}_{c:04d}{RAW_FILE_ENDING}"
                       for c in range(len(case.image_files))]
        record = _landmark_record(case, names)
        if sidecar.get(case.case_id) == record and label_file.exists() and all(f.exists() for f in image_files):
            continue
        for src, dst in zip(case.image_files, image_files):
            _atomic_write_image(sitk.ReadImage(str(src)), dst)
        reference = sitk.ReadImage(str(case.image_files[0]))
        label = sitk.GetImageFromArray(landmark_label_map(case, names))
        label.CopyInformation(reference)
        _atomic_write_image(label, label_file)
        sidecar[case.case_id] = record
        _atomic_write_text(sidecar_path, json.dumps(sidecar, indent=1))
    _atomic_write_text(raw_dir / "dataset.json", json.dumps(nnunet_dataset_json(dataset), indent=2))


def _atomic_write_image(image, path: Path) -> None:
    for key in image.GetMetaDataKeys():  # NIfTI/NRRD header fields MetaImage cannot store
        image.EraseMetaData(key)
    tmp = path.with_name(f".tmp_{path.name}")
    sitk.WriteImage(image, str(tmp))
    tmp.replace(path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp_{path.name}")
    tmp.write_text(text)
    tmp.replace(path)
