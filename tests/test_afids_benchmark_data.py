"""The AFIDs-template benchmark data generator (benchmarks/afids_template/make_data.py).

Needs the ``autoafids`` wheel (fetched once with pip into the benchmark's gitignored
``work/cache``); every test skips when it cannot be fetched (offline machine).
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnlandmark.data.dataset import load_dataset
from nnlandmark.data.formats import read_landmarks
from nnlandmark.geometry import ImageGrid, array_to_itk_index, index_to_world, world_to_index

MAKE_DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "afids_template" / "make_data.py"


@pytest.fixture(scope="module")
def md():
    spec = importlib.util.spec_from_file_location("afids_make_data", MAKE_DATA)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module        # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    try:
        module.fetch_autoafids()
    except RuntimeError as err:
        pytest.skip(f"autoafids wheel not available: {err}")
    return module


@pytest.fixture(scope="module")
def source(md):
    return md.TemplateSource(md.fetch_autoafids(), voxel_mm=4.0)


def test_noise_floor_matches_the_two_annotations(md):
    nf = md.noise_floor(verbose=False)
    assert len(nf["per_landmark_mm"]) == 32
    assert 0.7 < nf["mean_mm"] < 0.85 and nf["max_mm"] < 3.0


def test_dataset_layout_and_exact_landmarks(md, tmp_path):
    ds = md.build_dataset(tmp_path, n_train=1, n_test=1, voxel_mm=6.0, seed=3, verbose=False)
    assert ds.max_round_trip_mm < md.MAX_ROUND_TRIP_MM
    load_dataset(tmp_path, progress=False)                 # nnlandmark's own layout validation
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta["landmarks"][:2] == ["AC", "PC"] and len(meta["landmarks"]) == 32
    assert all(a in meta["landmarks"] and b in meta["landmarks"] for a, b in meta["pairs"])
    assert json.loads((tmp_path / "splits.json").read_text()) == {"train": ["train_000"], "test": ["test_000"]}
    for case in ds.train + ds.test:
        image = sitk.ReadImage(str(tmp_path / "images" / f"{case}.nii.gz"))
        grid = ImageGrid.from_image(image)
        assert np.allclose(grid.spacing, 6.0)
        lm = read_landmarks(tmp_path / "landmarks" / f"{case}.json")
        assert list(lm.points) == meta["landmarks"]
        for p in lm.points.values():
            assert grid.contains_index(world_to_index(p, grid), margin=0.0)


def test_cases_are_reproducible_and_splits_independent(md, source):
    params = md.GenerationParams(voxel_mm=4.0)

    def draw(stream, i):
        seq = np.random.SeedSequence(0, spawn_key=(stream, i))
        return md.generate_case(source, params, seq, "x", "train", i)[1].as_array(source.names)

    assert np.array_equal(draw(0, 0), draw(0, 0))
    assert np.abs(draw(0, 0) - draw(1, 0)).max() > 1.0


def test_image_content_follows_the_landmarks(md, source):
    """A Gaussian blob drawn at a template landmark ends up at the generated landmark."""
    k = source.names.index("PC")
    grid = source.grid
    # the blob (sigma 4 mm) is drawn in a 49-voxel cube around the point; it is < 1e-7 beyond
    centre = np.floor(world_to_index(source.points[k], grid) + 0.5).astype(int)
    lo = np.maximum(centre - 24, 0)
    hi = np.minimum(centre + 25, np.asarray(grid.size))
    idx = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1)
    world = index_to_world(idx.astype(float), grid)              # (i, j, k, 3)
    blob = np.zeros(grid.size, np.float32)                        # ITK axis order (i, j, k)
    blob[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = np.exp(
        -((world - source.points[k]) ** 2).sum(-1) / (2 * 4.0 ** 2))
    blob_image = sitk.GetImageFromArray(np.transpose(blob, (2, 1, 0)))
    blob_image.CopyInformation(source.image)
    original, ref = source.image, source.intensity_ref
    source.image, source.intensity_ref = blob_image, 1.0
    try:
        params = md.GenerationParams(voxel_mm=4.0, gamma_range=(1.0, 1.0), bias_strength=(0.0, 0.0),
                                     noise_std=(0.0, 0.0), intensity_scale=(10000.0, 10000.0))
        seq = np.random.SeedSequence(5, spawn_key=(1, 2))
        image, lm, record = md.generate_case(source, params, seq, "blob", "test", 2)
    finally:
        source.image, source.intensity_ref = original, ref
    assert abs(record.rotation_deg) > 1.0 and record.elastic_max_mm > 1.0
    a = sitk.GetArrayFromImage(image).astype(float)
    a[a < 0.3 * a.max()] = 0.0
    centroid = (np.argwhere(a > 0) * a[a > 0][:, None]).sum(0) / a.sum()
    found = index_to_world(array_to_itk_index(centroid), ImageGrid.from_image(image))
    assert np.linalg.norm(found - lm.points["PC"]) < 0.75
