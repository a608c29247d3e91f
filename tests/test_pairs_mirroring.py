"""Left/right pairs: name matching, the left-right axis, mirroring augmentation and test-time mirroring."""
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy.spatial.transform import Rotation

from nnlandmark.data.pairs import left_right_axis, propose_pairs, swap_permutation
from nnlandmark.geometry import ImageGrid, PreprocessedGrid, preprocessed_to_world
from nnlandmark.training.presets import TrainingSettings
from nnlandmark.training.targets import mirror_samples, points_from_label_patch


@pytest.mark.parametrize("names, expected", [
    (["left_eye", "right_eye"], [("left_eye", "right_eye")]),
    (["Eye_R", "nose", "Eye_L"], [("Eye_L", "Eye_R")]),          # order: first name of the pair
    (["l_ear", "r_ear", "L-hand", "R-hand"], [("l_ear", "r_ear"), ("L-hand", "R-hand")]),
    (["LeftEye", "RightEye", "eyeL", "eyeR"], [("LeftEye", "RightEye"), ("eyeL", "eyeR")]),
    (["Left Ear", "right ear"], [("Left Ear", "right ear")]),   # case-insensitive
    (["Lt_knee", "Rt_knee"], [("Lt_knee", "Rt_knee")]),
    (["LEye", "REye"], [("LEye", "REye")]),                      # camelCase prefix
    (["condyle_l", "condyle_right"], []),                        # forms do not mix
    (["L1", "R1", "Lateral", "Rateral"], []),                    # no token boundary after the letter
    (["LSLMS", "RSLMS"], []),                                    # glued capitals: too ambiguous
    (["eye_l", "eye_r", "EYE_L"], []),                           # two candidates: ambiguous
    (["left_eye_inner", "right_eye_inner", "left_x", "x_right"], [("left_eye_inner", "right_eye_inner")]),
])
def test_propose_pairs(names, expected):
    assert propose_pairs(names) == expected


def test_swap_permutation_and_its_checks():
    names = ["nose", "left_eye", "right_eye", "left_ear", "right_ear"]
    perm = swap_permutation(names, [["left_eye", "right_eye"], ["right_ear", "left_ear"]])
    assert perm == [0, 2, 1, 4, 3]
    assert [perm[p] for p in perm] == list(range(5))  # its own inverse
    for bad in ([["left_eye", "chin"]], [["left_eye", "left_eye"]], [["left_eye", "right_eye"], ["left_eye", "nose"]]):
        with pytest.raises(ValueError):
            swap_permutation(names, bad)


@pytest.mark.parametrize("transpose", [(0, 1, 2), (2, 0, 1), (1, 2, 0)])
def test_left_right_axis_follows_direction_and_transpose(transpose):
    """The returned axis is the preprocessed axis whose unit step points most along world x."""
    rng = np.random.default_rng(4)
    for _ in range(5):
        direction = Rotation.from_rotvec(rng.normal(size=3) * 0.5).as_matrix()[:, rng.permutation(3)]
        grid = ImageGrid(size=(30, 40, 50), spacing=(1.0, 1.5, 2.0), origin=(3.0, -2.0, 7.0), direction=direction)
        pgrid = PreprocessedGrid(transpose, crop_start=(2, 3, 4), cropped_shape=(20, 30, 25),
                                 preprocessed_shape=(40, 33, 25))
        origin = preprocessed_to_world(np.zeros(3), pgrid, grid)
        steps = [preprocessed_to_world(np.eye(3)[a], pgrid, grid) - origin for a in range(3)]
        expected = int(np.argmax([abs(d[0]) / np.linalg.norm(d) for d in steps]))
        assert left_right_axis(direction, transpose) == expected
        assert left_right_axis(direction.ravel().tolist(), transpose) == expected  # SimpleITK's flat tuple


def test_mirroring_setting_defaults_to_pairs():
    assert TrainingSettings().mirroring([["a", "b"]]) is True
    assert TrainingSettings().mirroring([]) is False
    assert TrainingSettings(mirror=True).mirroring([]) is True
    assert TrainingSettings(mirror=False).mirroring([["a", "b"]]) is False


def test_mirror_samples_equals_flipping_the_label_patch_with_swapped_labels():
    """Mirroring points analytically gives what flipping the label map and swapping labels gives."""
    rng = np.random.default_rng(0)
    seg = torch.zeros(2, 1, 12, 10, 9, dtype=torch.int16)
    for b in range(2):
        for label in (1, 2, 3):
            c = rng.integers(2, 7, size=3)
            seg[b, 0, c[0] - 1:c[0] + 2, c[1] - 1:c[1] + 2, c[2]:c[2] + 2] = label
    swap = [0, 2, 1]   # landmark 1 <-> 2
    data = torch.randn(2, 1, 12, 10, 9)
    points = points_from_label_patch(seg, 3)
    mask = torch.tensor([[True, True, False], [True, False, True]])
    flip, axes = [True, True], [2, 0]
    new_data, new_points, new_mask = mirror_samples(data, points, mask, flip, axes, swap)
    lut = torch.tensor([0, 1, 3, 2], dtype=torch.int16)   # label l + 1 -> swap[l] + 1
    for b in range(2):
        flipped_seg = lut[torch.flip(seg[b:b + 1], (axes[b] + 2,)).long()]
        np.testing.assert_allclose(new_points[b].numpy(), points_from_label_patch(flipped_seg, 3)[0].numpy())
        assert torch.equal(new_data[b], torch.flip(data[b], (axes[b] + 1,)))
        assert new_mask[b].tolist() == mask[b, swap].tolist()
    # unflipped samples and the inputs are left alone
    same = mirror_samples(data, points, mask, [False, False], axes, swap)
    assert torch.equal(same[1].nan_to_num(-1), points.nan_to_num(-1))
    assert not torch.equal(new_points, points)


def test_trainer_reads_each_cases_left_right_axis(prepared_project, tmp_path):
    from nnlandmark.nnunet.paths import nnunet_environment
    from nnlandmark.planning.project import Project
    from nnlandmark.training.train import stage_trainer
    project = Project.load(shutil.copytree(prepared_project, tmp_path / "project"))
    with nnunet_environment(project.folders):
        # targets on the label cubes' centroids (no sub-voxel correction), so that their peaks are 1
        trainer = stage_trainer(project, 0, "fullres", TrainingSettings(epochs=1, exact_targets=False),
                                tmp_path / "model")
    batches = trainer.recipe.prepare_batch
    assert batches.mirror
    # the synthetic images have an identity direction: world x is ITK i, the last array axis
    assert batches.left_right_axis("case_000") == list(project.plans()["transpose_forward"]).index(2)
    # a batch of eight samples, each holding only the left eye's cube (label 2) at one place;
    # mirroring flips about half of them (the seed gives both kinds), each checked for what it is
    n, size, axis = 8, 48, batches.left_right_axis("case_000")
    batch = {"data": torch.randn(n, 1, size, size, size), "target": torch.zeros(n, 1, size, size, size,
                                                                                   dtype=torch.int16),
             "keys": ["case_000", "case_001"] * (n // 2)}
    batch["target"][:, 0, 10:13, 20:23, 30:33] = 2
    left, right = project.landmarks.index("left_eye"), project.landmarks.index("right_eye")
    centre = np.array([11, 21, 31])
    mirrored_centre = centre.copy()
    mirrored_centre[axis] = size - 1 - centre[axis]
    torch.manual_seed(0)
    data, target, mask = trainer._inputs(batch, augment=True)
    flipped = [not torch.equal(data[b], batch["data"][b]) for b in range(n)]
    assert 0 < sum(flipped) < n, flipped
    for b in range(n):
        peak = lambda c: np.unravel_index(int(torch.argmax(target[b, c])), target.shape[2:])
        if flipped[b]:  # mirrored along the left-right axis: the left eye became the right eye
            assert torch.equal(data[b], torch.flip(batch["data"][b], (axis + 1,)))
            assert target[b, left].max() == 0 and target[b, right].max() == 1, b
            np.testing.assert_array_equal(peak(right), mirrored_centre)
            assert mask[b, right], b  # the eye in the patch is supervised
        else:
            assert torch.equal(data[b], batch["data"][b])
            assert target[b, left].max() == 1 and target[b, right].max() == 0, b
            np.testing.assert_array_equal(peak(left), centre)
            assert mask[b, left], b


def _mirrored_copy(image: sitk.Image) -> sitk.Image:
    """The image mirrored along ITK axis i (world x for an identity direction), same geometry."""
    mirrored = sitk.GetImageFromArray(sitk.GetArrayFromImage(image)[:, :, ::-1].copy())
    mirrored.CopyInformation(image)
    return mirrored


def test_test_time_mirroring_is_equivariant_with_swapped_pairs(tiny_model, synthetic_dataset, tmp_path):
    """A mirrored input gives the mirrored prediction with left and right landmarks exchanged,
    in each stage of the model: the whole-scan sliding window and the local patches."""
    from nnlandmark.data.images import read_image_grid
    from nnlandmark.geometry import patch_start
    from nnlandmark.model.folder import ModelFolder
    from nnlandmark.inference.predict import crop_patches
    description = json.loads((tiny_model / "nnlandmark.json").read_text())
    assert description["mirror"] is True  # the synthetic dataset has pairs
    assert list(ModelFolder(tiny_model).stages) == ["global", "local"]
    names = description["landmarks"]
    swap = swap_permutation(names, description["pairs"])
    original = next((synthetic_dataset / "images").iterdir())
    mirrored = tmp_path / "mirrored.nii.gz"
    sitk.WriteImage(_mirrored_copy(sitk.ReadImage(str(original))), str(mirrored))

    for stage in ModelFolder(tiny_model).stages:
        predictor = ModelFolder(tiny_model).predictor([0], stage, mirror_swap=swap)
        x, pgrid = predictor.preprocess([original])
        xm, _ = predictor.preprocess([mirrored])
        axis = left_right_axis(read_image_grid(original, read_pixels=False).direction, pgrid.transpose_forward)
        # the left-right axis found from the geometry is the axis nnU-Net's array is mirrored along
        np.testing.assert_allclose(xm.numpy(), torch.flip(x, (axis + 1,)).numpy(), atol=1e-4)
        if stage == "local":
            patch = tuple(predictor.configuration_manager.patch_size)
            start = patch_start([s / 3 for s in x.shape[1:]], patch)  # off-centre, so mirroring moves it
            start_m = start.copy()
            start_m[axis] = x.shape[axis + 1] - start[axis] - patch[axis]  # the same patch, mirrored
            h = predictor.patch_logits(crop_patches(x, [start], patch), mirror_axis=axis)[0]
            hm = predictor.patch_logits(crop_patches(xm, [start_m], patch), mirror_axis=axis)[0]
            atol = 2e-4
        else:
            h = predictor.heatmaps(x, mirror_axis=axis).float()
            hm = predictor.heatmaps(xm, mirror_axis=axis).float()
            atol = 2e-3
        expected = torch.flip(h, (axis + 1,))[swap]
        np.testing.assert_allclose(hm.numpy(), expected.numpy(), atol=atol, err_msg=stage)
        # without the swap the mirrored prediction would put left landmarks in right channels
        left, right = names.index("left_eye"), names.index("right_eye")
        assert not torch.allclose(hm[left], torch.flip(h, (axis + 1,))[left], atol=atol), stage
        assert not torch.allclose(h[left], h[right], atol=atol), stage
