"""The cascade's configurations are planned from nnU-Net's plan of the dataset, by rules."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from nnlandmark.nnunet.planning import (GLOBAL_CONFIGURATION, LOCAL_CONFIGURATION, LOCAL_MIN_EDGE,
                                        plan_cascade)


def _plans(prepared_project, spacing, median_shape) -> dict:
    from nnlandmark.planning.project import Project
    plans = copy.deepcopy(Project.load(prepared_project).plans())
    for key in (GLOBAL_CONFIGURATION, LOCAL_CONFIGURATION):
        plans["configurations"].pop(key, None)
    full = plans["configurations"]["3d_fullres"]
    full["spacing"], full["median_image_size_in_voxels"] = list(spacing), list(median_shape)
    return plans


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (3.0, 0.7, 0.7)])
def test_global_stage_is_coarser_for_a_larger_scan(prepared_project, spacing):
    small = plan_cascade(_plans(prepared_project, spacing, (40, 60, 60)), n_cases=20)
    large = plan_cascade(_plans(prepared_project, spacing, (200, 400, 400)), n_cases=20)
    g_small = np.array(small["configurations"][GLOBAL_CONFIGURATION]["spacing"])
    g_large = np.array(large["configurations"][GLOBAL_CONFIGURATION]["spacing"])
    assert np.all(g_large > g_small)
    for plans in (small, large):
        config = plans["configurations"][GLOBAL_CONFIGURATION]
        g, patch = np.array(config["spacing"]), np.array(config["patch_size"])
        assert np.all(g >= np.array(spacing))  # never finer than full resolution
        median_extent = np.array(plans["configurations"]["3d_fullres"]["median_image_size_in_voxels"]) \
            * np.array(spacing)
        assert np.all(patch * g >= median_extent)  # the median scan fits in one patch
        assert np.prod(patch) <= 2 * 64 ** 3


def test_local_stage_is_full_resolution_and_holds_the_global_error_twice(prepared_project):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    plans = plan_cascade(_plans(prepared_project, (1.0, 1.0, 1.0), (200, 240, 200)), n_cases=30)
    manager = PlansManager(plans)
    full, local = manager.get_configuration("3d_fullres"), manager.get_configuration(LOCAL_CONFIGURATION)
    glob = manager.get_configuration(GLOBAL_CONFIGURATION)
    assert local.spacing == full.spacing and local.data_identifier == full.data_identifier
    assert glob.data_identifier != full.data_identifier
    offset = np.array(plans["configurations"][LOCAL_CONFIGURATION]["nnlandmark_max_offset"])  # local voxels
    patch = np.array(local.patch_size)
    assert np.all(patch >= LOCAL_MIN_EDGE)
    # offsets reach two global voxels, and the patch keeps as much again around the landmark
    assert np.allclose(offset * np.array(full.spacing), 2 * np.array(glob.spacing), atol=1e-3)
    assert np.all(patch / 2 >= 2 * offset)
    # each stage's network divides its patch (nnU-Net's topology rules)
    for config in (glob, local):
        strides = np.array(config.network_arch_init_kwargs["strides"])
        assert np.all(np.array(config.patch_size) % np.prod(strides, axis=0) == 0)
