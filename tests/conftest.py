"""Shared, session-scoped fixtures: one synthetic dataset, one prepared project, one tiny model.

Preparing (nnU-Net fingerprint + planning + preprocessing) and training cost
tens of seconds on 2 CPU cores, so tests share them. Tests that change a
project or model must work on a copy (``copy_tree``).

Tiers: every test that uses (directly or through another fixture) one of
:data:`SLOW_FIXTURES` is marked ``slow``, as is every test marked so by hand
(those that prepare or train inline). ``pytest -m "not slow"`` is the fast
tier: pure functions and the CLI's refusals; ``pytest -m slow`` the rest.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

TINY_SETTINGS = dict(epochs=2, iterations_per_epoch=2, val_iterations=1)

#: fixtures that prepare a project, train a model or run the demo (seconds to minutes each)
SLOW_FIXTURES = frozenset({
    "prepared_project", "tiny_model",  # this file
    "demo_run",                        # test_end_to_end: the demo's 3-minute training
    "project_for",                     # test_architectures_training: a project per planner
    "absent_project",                  # test_presence: copies of the prepared project and model
    "bench",                           # test_afids_smoke: the AFIDs benchmark runner
    "two_channel_model",               # test_multichannel: prepares and trains its own dataset
})


#: (test id, argv, error lines) of every refusal that ``assert_refused`` saw, for ``--error-catalogue``
REFUSALS: list = []


def pytest_addoption(parser):
    parser.addoption("--error-catalogue", metavar="FILE", default=None,
                     help="write each refused command of the bad-input tests with its error lines to FILE (Markdown)")


def pytest_sessionfinish(session):
    """The bad-input catalogue as Markdown: what was tried (the test and its command) and what was said."""
    target = session.config.getoption("--error-catalogue")
    if not target or not REFUSALS:
        return
    temporary = re.compile(r"\S*/pytest-\d+/[^/\s]+/")  # each test's own temporary folder: said as .../

    def cell(text: str) -> str:
        return temporary.sub(".../", text).replace("|", "\\|")

    lines = ["| test | command | message |", "|---|---|---|"]
    for test, argv, errors in REFUSALS:
        lines.append(f"| {cell(test)} | `{cell(' '.join(argv))}` | {cell(' / '.join(errors))} |")
    Path(target).write_text("\n".join(lines) + "\n")


def pytest_collection_modifyitems(config, items):
    """Mark ``slow`` every test whose fixture closure holds a :data:`SLOW_FIXTURES` member."""
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


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
    from nnlandmark.report.curves import plot_curves_beside
    return train(prepared_project, 0, TrainingSettings(**TINY_SETTINGS), device="cpu", progress=False,
                 on_curves=plot_curves_beside)


def shrink_plans(project_dir: Path) -> None:
    """Plan a tiny U-Net (4 to 32 features) on 24^3 patches, one per batch, for ``3d_fullres`` in
    a project copy: tests of resuming or of options depend on neither, and the planned network on
    48^3 patches costs about a minute per iteration on a shared 2-core CPU."""
    import json
    from nnlandmark.planning.project import Project
    project = Project.load(project_dir)
    plans = json.loads(project.plans_file.read_text())
    config = plans["configurations"]["3d_fullres"]
    arch = config["architecture"]["arch_kwargs"]
    arch["features_per_stage"] = [min(4 * 2 ** i, 32) for i in range(len(arch["features_per_stage"]))]
    config["patch_size"] = [24, 24, 24]  # divisible by the 2^3 of three poolings
    config["batch_size"] = 1
    project.plans_file.write_text(json.dumps(plans, indent=2))
