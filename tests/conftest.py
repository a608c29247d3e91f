"""Shared, session-scoped fixtures: one synthetic dataset, one prepared project, one tiny model.

Preparing (nnU-Net fingerprint + planning + preprocessing) and training cost
tens of seconds on 2 CPU cores, so tests share them. Tests that change a
project or model must work on a copy (``copy_tree``).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

TINY_SETTINGS = dict(epochs=2, iterations_per_epoch=2, val_iterations=1)


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> Path:
    from nnlandmark.data.synthetic import make_synthetic_dataset
    return make_synthetic_dataset(tmp_path_factory.mktemp("data") / "synthetic", n_cases=10, seed=0)


@pytest.fixture(scope="session")
def prepared_project(synthetic_dataset, tmp_path_factory) -> Path:
    from nnlandmark.planning.project import prepare
    root = tmp_path_factory.mktemp("projects") / "synthetic"
    prepare(synthetic_dataset, root, num_processes=1, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_model(prepared_project) -> Path:
    """A model folder with fold 0 trained for 2 x 2 iterations (weights barely trained)."""
    from nnlandmark.training.presets import TrainingSettings
    from nnlandmark.training.train import train
    return train(prepared_project, 0, TrainingSettings(**TINY_SETTINGS), device="cpu", progress=False)
