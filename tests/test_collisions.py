"""Landmarks closer than a label cube: separate label maps, through nnU-Net's pipeline and augmentation."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from nnlandmark.nnunet.raw import assign_label_maps, find_cube_collisions, landmark_label_map
from nnlandmark.training.targets import points_from_label_patch


def test_assign_label_maps_colours_overlapping_cubes_apart():
    centres = {"a": np.array([10, 10, 10]), "b": np.array([10, 10, 11]), "c": np.array([10, 11, 10]),
               "d": np.array([10, 10, 13]), "e": np.array([30, 30, 30])}
    maps = assign_label_maps(centres)
    for x, y in find_cube_collisions(centres):
        assert maps[x] != maps[y], (x, y)
    # a, b, c overlap pairwise: three maps; d overlaps only b (distance 2) and e nothing: lowest free map
    assert sorted(maps[n] for n in "abc") == [0, 1, 2]
    assert maps["d"] == 0 and maps["e"] == 0
    assert set(assign_label_maps({"a": centres["a"], "e": centres["e"]}).values()) == {0}


def test_points_from_label_patch_pools_label_maps():
    seg = torch.zeros(1, 2, 8, 8, 8, dtype=torch.int16)
    seg[0, 0, 2:5, 2:5, 2:5] = 1          # landmark 0 centred on (3, 3, 3) in map 0
    seg[0, 1, 2:5, 2:5, 3:6] = 2          # landmark 1 centred on (3, 3, 4) in map 1: overlaps landmark 0
    points = points_from_label_patch(seg, 2)
    np.testing.assert_allclose(points[0].numpy(), [[3, 3, 3], [3, 3, 4]])


def _close_landmark_project(tmp_path, synthetic_dataset, prepared_project):
    """Copies of the session dataset and project in which every 'vertex' lies one voxel
    (2 mm along x) from the nose tip; the project's fingerprint and plans are reused."""
    data = Path(shutil.copytree(synthetic_dataset, tmp_path / "close"))
    for path in sorted((data / "landmarks").glob("*.json")):
        record = json.loads(path.read_text())
        nose = np.asarray(record["landmarks"]["nose_tip"])
        record["landmarks"]["vertex"] = (nose + [2.0, 0.0, 0.0]).tolist()
        path.write_text(json.dumps(record))
    project = Path(shutil.copytree(prepared_project, tmp_path / "project",
                                   ignore=shutil.ignore_patterns("nnUNet_results")))  # no trained models
    description = json.loads((project / "project.json").read_text())
    description["dataset_dir"] = str(data.resolve())
    (project / "project.json").write_text(json.dumps(description))
    return data, project


def test_landmarks_one_voxel_apart_prepare_train_and_survive_augmentation(tmp_path, synthetic_dataset,
                                                                          prepared_project):
    import blosc2
    from nnlandmark.data.dataset import load_dataset
    from nnlandmark.nnunet.paths import nnunet_environment
    from nnlandmark.planning.project import prepare
    from nnlandmark.training.presets import TrainingSettings
    from nnlandmark.training.train import stage_trainer, train

    data, project_dir = _close_landmark_project(tmp_path, synthetic_dataset, prepared_project)
    dataset = load_dataset(data)
    with pytest.raises(ValueError, match="label maps"):
        landmark_label_map(dataset.cases[0], dataset.spec.landmarks)

    project = prepare(data, project_dir, num_processes=1, progress=False)  # re-exports and re-preprocesses
    assert json.loads((project.raw_dir() / "dataset.json").read_text())["nnlandmark_label_maps"] == 2
    names = project.landmarks
    nose, vertex = names.index("nose_tip"), names.index("vertex")

    # nnU-Net's preprocessing keeps both maps: two full cubes, exactly one voxel apart
    preprocessed = project.folders.preprocessed / project.dataset_name
    seg = blosc2.open(str(preprocessed / "nnUNetPlans_3d_fullres" / "case_000_seg.b2nd"), mode="r")[:]
    assert seg.shape[0] == 2
    assert [int((seg == label + 1).sum()) for label in (nose, vertex)] == [27, 27]
    points = points_from_label_patch(torch.from_numpy(seg[None].astype(np.int16)), len(names))[0]
    assert float(torch.linalg.norm(points[nose] - points[vertex])) == pytest.approx(1.0)

    settings = TrainingSettings(epochs=1, iterations_per_epoch=2, val_iterations=1)
    model = train(project.root, 0, settings, progress=False)
    for stage in ("global", "local"):  # the global stage's larger cubes collide more: it has its own maps
        curves = json.loads((model / "fold_0" / stage / "training_curves.json").read_text())
        assert np.all(np.isfinite(curves["train_loss"])) and (model / "fold_0" / stage / "checkpoint_final.pth").exists()

    # augmented training patches: both landmarks come back as two points about one voxel apart
    with nnunet_environment(project.folders, augmentation_workers=0):
        trainer = stage_trainer(project, 0, "fullres", settings, tmp_path / "inspect")
        trainer.initialize()
        loader, _ = trainer.get_dataloaders()
        distances = []
        for _ in range(3):
            batch = next(loader)
            assert batch["target"].shape[1] == 2
            found = points_from_label_patch(batch["target"], len(names))
            distances += [float(torch.linalg.norm(p[nose] - p[vertex])) for p in found
                          if torch.isfinite(p[[nose, vertex]]).all()]
    assert distances, "no augmented patch held both landmarks"
    # nnU-Net scales patches by 0.7-1.4 and rotates them; the cubes stay apart and whole
    assert all(0.5 < d < 1.6 for d in distances), distances
