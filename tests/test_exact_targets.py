"""Training targets sit on each landmark's exact, sub-voxel position, not on its label cube's voxel."""
from __future__ import annotations

import json

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
    from nnlandmark.nnunet.planning import case_grids
    from nnlandmark.nnunet.trainer import LandmarkTrainer
    from nnlandmark.planning.project import Project
    from nnlandmark.training.presets import TrainingSettings
    from nnlandmark.training.train import _landmark_records, _world_points

    project = Project.load(prepared_project)
    records = _landmark_records(project)
    errors = {}
    with nnunet_environment(project.folders):
        dataset_json = json.loads((project.folders.preprocessed / project.dataset_name / "dataset.json").read_text())
        for exact in (True, False):
            plans = project.plans()
            plans["continue_training"] = False
            trainer = LandmarkTrainer(plans, configuration, 0, dataset_json, torch.device("cpu"))
            trainer.configure(TrainingSettings(mirror=False), project.landmarks, tmp_path / "model", {},
                              project.pairs, world_points=_world_points(records) if exact else None)
            from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
            folder = trainer.preprocessed_dataset_folder
            found = []
            for case in ("case_000", "case_003"):
                data, seg, _, properties = infer_dataset_class(folder)(folder, identifiers=[case]).load_case(case)
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
