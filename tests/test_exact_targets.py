"""Training targets sit on each landmark's exact, sub-voxel position, not on its label cube's voxel."""
from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.mark.parametrize("configuration", ["3d_fullres", "3d_global"])
def test_target_peaks_land_on_the_exact_world_points(prepared_project, tmp_path, configuration):
    """A patch cut from a preprocessed case (no augmentation) goes through the trainer's
    target building; the centre of each target Gaussian, mapped back through geometry,
    is the annotated world point, far closer than the label cube's voxel puts it."""
    from nnlandmark.geometry import patch_to_preprocessed, preprocessed_to_world
    from nnlandmark.inference.decoding import decode_mass
    from nnlandmark.nnunet.paths import nnunet_environment
    from nnlandmark.nnunet.planning import case_grids, load_preprocessed_case, preprocessed_folder
    from nnlandmark.planning.project import Project
    from nnlandmark.training.presets import TrainingSettings
    from nnlandmark.training.train import _landmark_records, stage_trainer

    project = Project.load(prepared_project)
    records = _landmark_records(project)
    errors = {}
    stage = {"3d_fullres": "fullres", "3d_global": "global"}[configuration]
    plans = project.plans()
    folder = preprocessed_folder(project.folders, project.dataset_name, plans, configuration)
    with nnunet_environment(project.folders):
        for exact in (True, False):
            trainer = stage_trainer(project, 0, stage, TrainingSettings(mirror=False, exact_targets=exact),
                                    tmp_path / "model")
            found = []
            for case in ("case_000", "case_003"):
                data, seg, properties = load_preprocessed_case(folder, case)
                data, seg = np.asarray(data[:]), np.asarray(seg[:])
                start = np.array([2, 1, 3])  # a patch that is not the whole array
                window = tuple(slice(int(s), None) for s in start)
                batch = {"data": torch.from_numpy(data[(slice(None), *window)].copy()),
                         "target": torch.from_numpy(seg[(slice(None), *window)].astype(np.int16)),
                         "keys": [case]}
                batch = {k: v[None] if k != "keys" else v for k, v in batch.items()}
                _, target, mask = trainer._inputs(batch)
                q = target[0] / target[0].sum(dim=tuple(range(1, target.ndim - 1)), keepdim=True)
                points, _ = decode_mass(q.numpy(), radius=4)
                pgrid, grid = case_grids(properties, plans["transpose_forward"], seg.shape[1:])
                world = preprocessed_to_world(patch_to_preprocessed(points, start), pgrid, grid)
                for i, name in enumerate(project.landmarks):
                    if mask[0, i] and isinstance(records[case][name], list):
                        found.append(np.linalg.norm(world[i] - np.asarray(records[case][name])))
            errors[exact] = np.array(found)
    voxel = float(np.mean(np.asarray(plans["configurations"][configuration].get(
        "spacing", plans["configurations"]["3d_fullres"]["spacing"]))))
    assert len(errors[True]) >= 8
    # a symmetric window of a sampled Gaussian recovers its centre to a few hundredths of a voxel
    assert errors[True].max() < 0.05 * voxel, errors[True]
    # the cube's voxel alone is off by a good part of a voxel
    assert errors[False].mean() > 4 * errors[True].mean()
