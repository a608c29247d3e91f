"""MML / MMLD: mandibular molar landmarks on CT (YOLOL benchmark, Sichuan University).

Expected input (the released ``mmld_dataset`` archive, as described in the
benchmark's README, github.com/ithet1007/mmld_code)::

    src/[mmld_dataset/]
      train/<case>_volume.nrrd  <case>_label.npy  <case>_spacing.npy   (458 cases)
      val/...                                                          (100 cases)
      test/...                                                         (100 cases)

Read from the benchmark's own code (mmld_code: ``data_utils/dataloader.py``,
``data_utils/transforms.py``, ``utils.py``, ``main_yolol.py``) and from the public
nnLandmark conversion scripts (github.com/MIC-DKFZ/nnLandmark,
``dataset_conversion/nnLandmark/Dataset733_MML``); no format specification exists:

- The volume is read with pynrrd's default (Fortran) index order and
  ``<case>_label.npy`` is a ``(14, 3)`` array of **voxel indices into that
  array**, i.e. ITK's ``(i, j, k)``, 0-based (the loaders crop the volume and
  paint label cubes at ``[x, y, z]`` directly; the MRE multiplies index
  differences by ``<case>_spacing.npy`` axis by axis).
- A landmark that does not exist (tooth or root missing) is marked by "a very
  small value" (the transforms skip rows whose mean is below -100; the metric
  counts rows whose mean is positive). Any row with a negative entry becomes
  *absent*. NaN rows are rejected.
- ``<case>_spacing.npy`` holds the voxel spacing ``(sx, sy, sz)`` in mm used
  for the benchmark's MRE. When it disagrees with the NRRD header the image is
  re-written with this spacing (origin and direction kept) so that images and
  landmarks agree.
- Landmark names are the ones of the benchmark's result table, in label order:
  ``L0, La .. Lf`` (left molars) and ``R0, Ra .. Rf`` (right molars). The
  anatomical meaning of each letter is not documented. ``L<x>``/``R<x>`` are
  declared as left/right pairs.

The official split is kept (folders ``train``/``val``/``test``). The 'complete'
subset (cases with every landmark present, the reference loader's ``full``
data type) is listed in ``conversion_notes.json`` under ``subsets``; pass
``complete_only=True`` to convert only those cases.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nnlandmark.data.convert._common import (
    ConversionError, DatasetWriter, clean_up_on_failure, read_image_grid, with_spacing,
)
from nnlandmark.data.landmarks import Landmarks
from nnlandmark.geometry import index_to_world

#: Landmark names in label-row order, as printed by the benchmark's test code
#: (mmld_code ``main_yolol.py``/``main_baseline.py``).
NAMES = ("L0", "La", "Lb", "Lc", "Ld", "Le", "Lf", "R0", "Ra", "Rb", "Rc", "Rd", "Re", "Rf")
N_LANDMARKS = len(NAMES)
#: Left/right pairs, ``[left, right]``.
PAIRS = [[n, "R" + n[1:]] for n in NAMES if n.startswith("L")]
SPLITS = ("train", "val", "test")


def landmark_names() -> list:
    """The 14 landmark names in the order of the rows of ``<case>_label.npy``."""
    return list(NAMES)


def _root(src: Path) -> Path:
    if all((src / s).is_dir() for s in SPLITS):
        return src
    candidates = [d for d in sorted(src.iterdir()) if d.is_dir() and all((d / s).is_dir() for s in SPLITS)]
    if len(candidates) == 1:
        return candidates[0]
    raise ConversionError(f"{src}: expected folders train/, val/ and test/ (optionally inside one "
                          "sub-folder such as mmld_dataset/)")


def _load_npy(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise ConversionError(f"{path}: missing {what} file")
    try:
        return np.asarray(np.load(path, allow_pickle=False), dtype=float)
    except (ValueError, OSError) as err:
        raise ConversionError(f"{path}: cannot read {what} ({err})") from None


@clean_up_on_failure
def convert(src: Path, dst: Path, *, seed: int = 0, complete_only: bool = False) -> Path:
    """Convert the MMLD release into our layout; return ``dst``.

    ``seed`` is unused (the split is official) and kept for a uniform signature.
    """
    del seed
    root = _root(Path(src).expanduser().resolve())
    names = landmark_names()
    writer = DatasetWriter(src, dst, name="MML", landmarks=names, pairs=PAIRS, channels=["CT"],
                           image_suffix=".nrrd")
    splits = {s: [] for s in SPLITS}
    complete = []
    for split in SPLITS:
        for volume in sorted((root / split).glob("*_volume.nrrd")):
            stem = volume.name[: -len("_volume.nrrd")]
            label = _load_npy(volume.with_name(f"{stem}_label.npy"), "landmark")
            spacing = _load_npy(volume.with_name(f"{stem}_spacing.npy"), "spacing").ravel()
            label_path = volume.with_name(f"{stem}_label.npy")
            if label.ndim != 2 or label.shape != (N_LANDMARKS, 3):
                raise ConversionError(f"{label_path}: expected shape ({N_LANDMARKS}, 3), got {label.shape}")
            if not np.all(np.isfinite(label)):
                raise ConversionError(f"{label_path}: NaN or infinite coordinates")
            if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
                raise ConversionError(f"{volume.with_name(stem + '_spacing.npy')}: expected 3 positive "
                                      f"spacings, got {spacing.tolist()}")
            header = read_image_grid(volume)
            override = None if np.allclose(header.spacing, spacing, rtol=1e-4, atol=1e-6) else spacing
            grid = with_spacing(header, spacing)
            lm = Landmarks(source=label_path)
            for name, row in zip(names, label):
                if np.any(row < 0):
                    lm.absent.append(name)
                else:
                    lm.points[name] = index_to_world(row, grid)
            is_complete = not lm.absent
            if complete_only and not is_complete:
                continue
            if override is not None:
                writer.warn(f"{stem}: NRRD spacing {tuple(round(s, 5) for s in header.spacing)} replaced "
                            f"by {stem}_spacing.npy {tuple(round(float(s), 5) for s in spacing)}")
            case_id = writer.add_case(stem, volume, lm, spacing=override, grid=grid)
            splits[split].append(case_id)
            if is_complete:
                complete.append(case_id)
    return writer.finish(splits, split_rule="official train/val/test folders",
                         extra_notes={"subsets": {"complete": sorted(complete)},
                                      "complete_only": complete_only})
