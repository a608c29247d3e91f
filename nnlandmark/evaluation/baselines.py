"""Predictions made without learning, to read a model's errors against.

A trained model that does not beat these has learned little:

``mean position`` (an atlas)
    every landmark at its mean world position over the training cases;
``image centre``
    every landmark at the centre of the test image's field of view.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nnlandmark.geometry import index_to_world

BASELINES = ("mean position", "image centre")


def mean_positions(dataset_dir) -> dict:
    """``{name: mean world LPS point}`` of each landmark over the cases where it is present."""
    from nnlandmark.data.dataset import load_dataset
    dataset = load_dataset(dataset_dir, progress=False)
    return {name: np.mean([c.landmarks.points[name] for c in dataset.cases if name in c.landmarks.points], axis=0)
            for name in dataset.spec.landmarks
            if any(name in c.landmarks.points for c in dataset.cases)}


def write_baseline_predictions(train_dir, test_images, out_dir, spacing=None) -> dict:
    """Write each baseline's predictions of the images in ``test_images`` (a folder), one
    ``<case>.json`` each, into ``out_dir/<baseline>/``; returns ``{baseline: folder}``.
    ``spacing`` is that of PNG/JPEG test images (their dataset's ``spacing``; default 1 mm)."""
    from nnlandmark.data.images import image_name, read_image_grid
    from nnlandmark.data.formats.json_formats import write_prediction_json
    from nnlandmark.data.landmarks import Landmarks
    atlas = mean_positions(train_dir)
    folders = {name: Path(out_dir) / name.replace(" ", "_") for name in BASELINES}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    for image_file in sorted(Path(test_images).iterdir()):
        split = image_name(image_file)
        if split is None:
            continue
        grid = read_image_grid(image_file, spacing=spacing)
        centre = index_to_world((np.asarray(grid.size) - 1) / 2.0, grid)
        write_prediction_json(Landmarks(points=dict(atlas)), folders["mean position"] / f"{split[0]}.json")
        write_prediction_json(Landmarks(points={n: centre for n in atlas}),
                              folders["image centre"] / f"{split[0]}.json")
    return folders
