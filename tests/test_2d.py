"""2D images (radiographs, ultrasound frames): read as 3D images of one slice, planned by nnU-Net
as its ``2d`` configuration, trained as one full-resolution 2D network, predicted in world mm.

Fast tests: reading pictures (PNG/JPEG, spacing from dataset.json) and 2D NIfTI/NRRD/MHA,
two-coordinate landmarks, the refusals, the nnU-Net export and plans of 2D data, 2D batches
and test-time mirroring of 2D tiles. The slow tests run check -> prepare -> train -> predict ->
evaluate -> report on 2D phantoms and compare with the mean-position atlas.

The end-to-end training is a fixed schedule (2 epochs of 25 iterations, about 80 s on the 2-core
development machine at load 3), not a time budget: under a budget the amount of learning follows
the machine's load, and at load 8 a 90-second budget gave one epoch and a model twice as bad.
Measured: MRE 0.81 mm against 4.25 mm for the atlas.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnlandmark.cli import main
from nnlandmark.data.dataset import load_dataset
from nnlandmark.data.formats import read_landmarks
from nnlandmark.data.images import read_image, read_image_grid
from nnlandmark.data.synthetic import LANDMARK_NAMES_2D, make_synthetic_dataset_2d
from nnlandmark.errors import DatasetError
from nnlandmark.geometry import index_to_world, world_to_index

from test_bad_inputs import assert_refused


def _picture_dataset(root: Path, array: np.ndarray, landmarks_csv: str, spacing=None, suffix=".png") -> Path:
    """A one-landmark-file dataset of one picture (uint8 array (rows, columns) or (rows, columns, 3))."""
    (root / "images").mkdir(parents=True)
    (root / "landmarks").mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=array.ndim == 3), str(root / "images" / f"a{suffix}"))
    (root / "landmarks" / "a.csv").write_text(landmarks_csv)
    spec = {"landmarks": ["p"]}
    if spacing is not None:
        spec["spacing"] = spacing
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


def test_png_reads_as_one_slice_with_the_dataset_spacing(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 255, size=(30, 40), dtype=np.uint8)  # 30 rows (y), 40 columns (x)
    # the landmark at pixel column 10, row 20: (10 * 0.5, 20 * 0.25) mm, given with 2 coordinates
    root = _picture_dataset(tmp_path / "ds", array, "name,x,y\np,5.0,5.0\n", spacing=[0.5, 0.25])
    case = load_dataset(root, progress=False).cases[0]
    assert case.grid.size == (40, 30, 1) and case.grid.is_2d
    assert case.grid.spacing == (0.5, 0.25, 1.0) and case.grid.origin == (0.0, 0.0, 0.0)
    assert case.landmarks.point("p").tolist() == [5.0, 5.0, 0.0] and case.landmarks.planar == ["p"]
    assert world_to_index(case.landmarks.point("p"), case.grid).tolist() == [10.0, 20.0, 0.0]
    image = case.read_image()
    assert image.GetSize() == (40, 30, 1) and image.GetSpacing() == (0.5, 0.25, 1.0)
    assert image[10, 20, 0] == array[20, 10]  # the pixel under the landmark is the file's
    assert index_to_world([39, 29, 0], case.grid).tolist() == [19.5, 7.25, 0.0]


def test_picture_spacing_defaults_to_1_mm_whatever_the_file_says(tmp_path):
    image = sitk.GetImageFromArray(np.zeros((8, 9), np.uint8))
    image.SetSpacing((0.3528, 0.3528))  # ITK writes it as the PNG's pHYs: a print resolution (72 dpi)
    sitk.WriteImage(image, str(tmp_path / "a.png"))
    assert sitk.ReadImage(str(tmp_path / "a.png")).GetSpacing() != (1.0, 1.0)
    assert read_image_grid(tmp_path / "a.png").spacing == (1.0, 1.0, 1.0)
    assert read_image(tmp_path / "a.png").GetSpacing() == (1.0, 1.0, 1.0)
    assert read_image_grid(tmp_path / "a.png", spacing=0.1).spacing == (0.1, 0.1, 1.0)


def test_colour_pictures_read_as_their_luminance(tmp_path):
    array = np.zeros((6, 7, 3), np.uint8)
    array[2, 3] = (255, 0, 0)
    array[4, 5] = (0, 0, 255)
    for suffix in (".png", ".jpg"):
        path = tmp_path / f"rgb{suffix}"
        sitk.WriteImage(sitk.GetImageFromArray(array, isVector=True), str(path))
        image = read_image(path)
        assert image.GetNumberOfComponentsPerPixel() == 1 and image.GetSize() == (7, 6, 1)
        assert read_image_grid(path, read_pixels=True).size == (7, 6, 1)
    assert read_image(tmp_path / "rgb.png")[3, 2, 0] == pytest.approx(0.299 * 255, abs=1e-3)
    assert read_image(tmp_path / "rgb.png")[5, 4, 0] == pytest.approx(0.114 * 255, abs=1e-3)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd", ".nii.gz"])
def test_2d_files_keep_their_spacing_origin_and_direction(tmp_path, suffix):
    image = sitk.GetImageFromArray(np.arange(12 * 10, dtype=np.float32).reshape(12, 10))
    image.SetSpacing((0.3, 0.4))
    image.SetOrigin((5.0, -6.0))
    angle = np.deg2rad(20)
    direction = (np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle))
    image.SetDirection(direction)
    path = tmp_path / f"flat{suffix}"
    sitk.WriteImage(image, str(path))
    grid = read_image_grid(path, read_pixels=True, spacing=0.9)  # a picture spacing does not apply
    assert grid.size == (10, 12, 1) and grid.is_2d
    assert np.allclose(grid.spacing, (0.3, 0.4, 1.0)) and np.allclose(grid.origin, (5.0, -6.0, 0.0))
    assert np.allclose(grid.direction[:2, :2], np.reshape(direction, (2, 2)), atol=1e-6)
    assert np.allclose(grid.direction[:, 2], (0, 0, 1))
    volume = read_image(path)
    assert volume.GetSize() == (10, 12, 1)
    # the same pixel at the same world point, through the 2D file's own geometry
    assert np.allclose(volume.TransformIndexToPhysicalPoint((3, 4, 0))[:2], image.TransformIndexToPhysicalPoint((3, 4)))
    assert np.allclose(index_to_world([3, 4, 0], grid)[:2], image.TransformIndexToPhysicalPoint((3, 4)))


def test_a_3d_file_of_one_slice_is_a_2d_image_with_its_own_plane(tmp_path):
    image = sitk.Image([20, 16, 1], sitk.sitkFloat32)
    image.SetSpacing((0.5, 0.5, 2.0))
    image.SetOrigin((0.0, 0.0, 7.0))
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "landmarks").mkdir()
    sitk.WriteImage(image, str(root / "images" / "a.mha"))
    (root / "dataset.json").write_text('{"landmarks": ["p"]}')
    (root / "landmarks" / "a.csv").write_text("name,x,y,z\np,3.0,4.0,7.0\n")
    case = load_dataset(root, progress=False).cases[0]
    assert case.grid.is_2d and case.grid.spacing == (0.5, 0.5, 2.0)
    (root / "landmarks" / "a.csv").write_text("name,x,y\np,3.0,4.0\n")  # z = 0, off the plane at z = 7
    with pytest.raises(DatasetError, match=r"a\.csv: landmark 'p' .* 7 mm off the plane of its 2D image; "
                                           r"give a point in the image's plane"):
        load_dataset(root, progress=False)


def test_two_coordinate_landmarks_in_each_format(tmp_path):
    files = {
        "a.csv": "name,x,y\np,1.5,2.5\n",
        "b.csv": "# coordinate_system = RAS\nname,x,y,z\np,1.5,2.5,\n",  # z left empty
        "c.json": '{"landmarks": {"p": [1.5, 2.5]}}',
        "d.mrk.json": json.dumps({"markups": [{"coordinateSystem": "LPS",
                                               "controlPoints": [{"label": "p", "position": [1.5, 2.5]}]}]}),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        landmarks = read_landmarks(tmp_path / name)
        expected = [-1.5, -2.5, 0.0] if name == "b.csv" else [1.5, 2.5, 0.0]
        assert landmarks.point("p").tolist() == expected, name
        assert landmarks.planar == ["p"], name
    assert read_landmarks_3d(tmp_path).planar == []


def read_landmarks_3d(folder: Path):
    (folder / "three.csv").write_text("name,x,y,z\np,1,2,0\n")
    return read_landmarks(folder / "three.csv")


@pytest.fixture
def small_2d(tmp_path) -> Path:
    return make_synthetic_dataset_2d(tmp_path / "flat", n_cases=5, seed=2, shape=(48, 40), spacing=(0.5, 0.5))


def _rewrite_csv(path: Path, edit) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")


def test_check_accepts_a_2d_dataset(small_2d, capsys):
    assert main(["check", str(small_2d)]) == 0
    assert f"OK, 5 cases, {len(LANDMARK_NAMES_2D)} landmarks" in capsys.readouterr().out


def test_a_3d_landmark_on_a_2d_image_is_refused(small_2d, capsys):
    _rewrite_csv(small_2d / "landmarks/case_001.csv",
                 lambda lines: ["name,x,y,z"] + [line + (",5.0" if i == 1 else ",") for i, line in
                                                 enumerate(lines[1:], start=1)])
    assert_refused(capsys, ["check", small_2d],
                   ("landmarks/case_001.csv", "'vertex'", "5 mm off the plane of its 2D image",
                    "give z = 0 or only x, y"), watched=[small_2d])


def test_a_landmark_outside_a_2d_image_is_refused(small_2d, capsys):
    _rewrite_csv(small_2d / "landmarks/case_002.csv",
                 lambda lines: [lines[0], "vertex,500.0,3.0"] + lines[2:])
    assert_refused(capsys, ["check", small_2d],
                   ("landmarks/case_002.csv", "'vertex'", "outside its 2D image", "size [48, 40]",
                    "spacing [0.5, 0.5] mm"), watched=[small_2d])


@pytest.mark.parametrize("spacing", [0, [1, 2, 3], "a", [0.5, -1]])
def test_a_bad_picture_spacing_is_refused(small_2d, capsys, spacing):
    spec = json.loads((small_2d / "dataset.json").read_text())
    spec["spacing"] = spacing
    (small_2d / "dataset.json").write_text(json.dumps(spec))
    assert_refused(capsys, ["check", small_2d],
                   ("dataset.json", "'spacing' (of PNG/JPEG images) must be one or two positive numbers"),
                   watched=[small_2d])


def test_raw_export_of_2d_images(small_2d, tmp_path):
    """nnU-Net is told a thick slice (so that it plans '2d'); the label cubes are one voxel thick."""
    from nnlandmark.nnunet.raw import PLANAR_SLICE_SPACING, write_raw_dataset
    dataset = load_dataset(small_2d, progress=False)
    write_raw_dataset(dataset, tmp_path / "raw", progress=False)
    case = dataset.cases[0]
    image = sitk.ReadImage(str(tmp_path / "raw" / "imagesTr" / f"{case.case_id}_0000.mha"))
    assert image.GetSize() == (48, 40, 1) and image.GetSpacing() == (0.5, 0.5, PLANAR_SLICE_SPACING)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "raw" / "labelsTr" / f"{case.case_id}.mha")))
    # (slice, rows, columns), or (maps, slice, rows, columns) where close landmarks' cubes need maps of their own
    labels = labels.reshape(-1, 1, 40, 48)
    for n, name in enumerate(dataset.spec.landmarks, start=1):
        i, j, _ = np.floor(world_to_index(case.landmarks.point(name), case.grid) + 0.5).astype(int)
        rows, columns = np.nonzero((labels == n).any(axis=0)[0])
        assert sorted(set(rows)) == [j - 1, j, j + 1] and sorted(set(columns)) == [i - 1, i, i + 1], name


def test_plans_of_2d_images_have_one_2d_stage_and_a_2d_cascade():
    from nnlandmark.nnunet.planning import full_configuration, is_planar, plan_cascade, planned_spacing_xyz
    from nnlandmark.nnunet.raw import cube_half_widths
    plans = {"plans_name": "nnUNetPlans", "transpose_forward": [0, 1, 2],
             "configurations": {"2d": {"spacing": [0.4, 0.5], "patch_size": [96, 128],
                                       "median_image_size_in_voxels": [96, 128], "architecture": _ARCH_2D}}}
    assert is_planar(plans) and full_configuration(plans) == "2d"
    assert set(plan_cascade(plans, 10)["configurations"]) == {"2d", "2d_global", "2d_local"}
    spacing = planned_spacing_xyz(plans, "2d")
    assert spacing[:2] == [0.5, 0.4] and np.isnan(spacing[2])  # (x, y), and nothing across the slice
    # pixels 4x finer than nnU-Net's spacing get wider cubes in plane; none across the one slice
    assert cube_half_widths((0.125, 0.1, 1.0), spacing).tolist() == [1, 4, 4]


#: nnU-Net's '2d' architecture for a 1000 x 1200 image (as planned here: 8 stages, 32 features first)
_ARCH_2D = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {"n_stages": 8, "features_per_stage": [32, 64, 128, 256, 512, 512, 512, 512],
                            "conv_op": "torch.nn.modules.conv.Conv2d", "kernel_sizes": [[3, 3]] * 8,
                            "strides": [[1, 1]] + [[2, 2]] * 7, "n_conv_per_stage": [2] * 8,
                            "n_conv_per_stage_decoder": [2] * 7, "conv_bias": True,
                            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
                            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                            "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                            "nonlin_kwargs": {"inplace": True}},
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}


def _planar_plans(spacing, median, n_cases):
    from nnlandmark.nnunet.planning import plan_cascade
    plans = {"plans_name": "nnUNetPlans", "transpose_forward": [0, 1, 2],
             "configurations": {"2d": {"spacing": list(spacing), "patch_size": [1024, 896],
                                       "median_image_size_in_voxels": list(median), "architecture": _ARCH_2D}}}
    return plan_cascade(plans, n_cases)["configurations"]


def test_2d_cascade_of_fine_radiographs_plans_a_coarse_whole_image_and_small_patches():
    """Rules, no dataset numbers: ~128^2 global pixels, local pixels at most 8x finer than those."""
    configurations = _planar_plans([0.1, 0.1], [1200, 1000], n_cases=150)
    g, loc = configurations["2d_global"], configurations["2d_local"]
    assert g["inherits_from"] == "2d" and g["data_identifier"] == "nnUNetPlans_2d_global"
    assert g["spacing"][0] == g["spacing"][1] and 0.8 < g["spacing"][0] < 1.0  # 120 x 100 mm in ~128^2 pixels
    shape = np.asarray(g["median_image_size_in_voxels"])
    assert 100 ** 2 < np.prod(shape) < 160 ** 2 and shape.max() <= 192
    assert all(p >= s for p, s in zip(g["patch_size"], shape))  # the whole image is one patch
    assert g["architecture"]["arch_kwargs"]["features_per_stage"][0] == 16
    assert len(g["architecture"]["arch_kwargs"]["kernel_sizes"][0]) == 2  # a 2D network
    assert 2 < g["batch_size"] <= 32  # nnU-Net's 5 % rule: 7 of 150 whole images
    # local: about twice the pixel size of the full resolution, its own data, a 64^2 patch
    assert loc["spacing"] == pytest.approx(np.asarray(g["spacing"]) / 8)
    assert loc["data_identifier"] == "nnUNetPlans_2d_local" and loc["patch_size"] == [64, 64]
    assert loc["batch_size"] == 32  # the 5 % rule allows far more: capped
    # offsets up to LOCAL_REACH global pixels, in local pixels, none across the one slice
    assert loc["nnlandmark_max_offset"] == [0.0, 16.0, 16.0]


def test_2d_cascade_of_coarse_pixels_keeps_full_resolution_locally():
    configurations = _planar_plans([0.8, 0.8], [96, 96], n_cases=16)
    g, loc = configurations["2d_global"], configurations["2d_local"]
    assert g["spacing"] == [0.8, 0.8] and min(g["patch_size"]) >= 96  # already small enough: whole, as it is
    assert g["batch_size"] == 2  # 5 % of 16 images is less than nnU-Net's smallest batch
    # full resolution and the '2d' data and cubes: no spacing, data or labels of its own
    assert "spacing" not in loc and "data_identifier" not in loc
    assert min(loc["patch_size"]) >= 16 and len(loc["nnlandmark_max_offset"]) == 3


def test_2d_batches_give_2d_points():
    from nnlandmark.training.targets import points_from_label_patch
    seg = torch.zeros(2, 1, 12, 10)
    seg[1, 0, 3:6, 6:9] = 2
    points = points_from_label_patch(seg, 2, spatial_dims=2)
    assert points.shape == (2, 2, 2) and points[1, 1].tolist() == [4.0, 7.0]
    assert torch.isnan(points[0]).all() and torch.isnan(points[1, 0]).all()


def test_test_time_mirroring_of_2d_tiles_flips_the_in_plane_left_right_axis():
    """The left-right axis is one of the preprocessed (3D) array; a 2D tile lacks its first axis."""
    from nnlandmark.nnunet.predictor import LandmarkPredictor
    tile = torch.arange(2 * 1 * 4 * 5, dtype=torch.float32).reshape(2, 1, 4, 5)
    network = lambda x: torch.cat([x, 2 * x], dim=1)  # two "landmark" channels, position-dependent
    predictor = SimpleNamespace(network=network, mirror_axis=2, mirror_swap=torch.tensor([1, 0]))
    out = LandmarkPredictor._internal_maybe_mirror_and_predict(predictor, tile)
    # channel 0 averages itself with the flipped prediction's channel 1 (its pair), flipped back
    assert torch.allclose(out[:, 0], (tile[:, 0] + 2 * tile[:, 0]) / 2)
    predictor.mirror_axis = 0  # across the slice: nothing to mirror in a 2D tile
    assert torch.equal(LandmarkPredictor._internal_maybe_mirror_and_predict(predictor, tile), network(tile))


def test_2d_training_rotates_patches_by_at_most_30_degrees():
    """nnU-Net rotates square 2D patches by up to 180 degrees; a left eye must stay a left eye."""
    from nnlandmark.nnunet.trainer import LandmarkTrainer
    trainer = object.__new__(LandmarkTrainer)  # only what the method reads
    trainer.print_to_log_file = lambda *args, **kwargs: None
    for patch, limit in (((96, 96), 30), ((64, 64, 64), 30)):
        trainer.configuration_manager = SimpleNamespace(patch_size=patch)
        rotation, _, initial_patch, mirror_axes = \
            LandmarkTrainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size(trainer)
        assert np.rad2deg(rotation[1]) == pytest.approx(limit) and np.rad2deg(rotation[0]) == pytest.approx(-limit)
        # the patch nnU-Net cuts before augmenting is large enough for the rotation and scaling
        assert mirror_axes is None and len(initial_patch) == len(patch) and min(initial_patch) > min(patch)


def test_the_2d_report_is_one_picture_of_the_whole_image(tmp_path):
    from nnlandmark.data.landmarks import Landmarks
    from nnlandmark.report.slices import plot_landmark_slices
    image = sitk.GetImageFromArray(np.zeros((50, 200), np.float32))  # 200 x 50 pixels of 1 x 1 mm
    reference = Landmarks(points={"a": np.array([20.0, 10.0, 0.0]), "b": np.array([150.0, 40.0, 0.0])})
    predicted = Landmarks(points={"a": np.array([23.0, 14.0, 0.0]), "b": np.array([150.0, 40.0, 0.0])})
    out = plot_landmark_slices(image, predicted, reference, tmp_path / "case.png", dpi=50)
    picture = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    height, width = picture.shape[:2]
    assert width > 2 * height  # one wide picture, not a row of three views per landmark
    volume = sitk.GetImageFromArray(np.zeros((20, 30, 40), np.float32))
    slices = sitk.GetArrayFromImage(sitk.ReadImage(str(plot_landmark_slices(
        volume, Landmarks(points={"a": np.array([5.0, 5.0, 5.0])}), None, tmp_path / "vol.png", dpi=50))))
    assert slices.shape[1] > slices.shape[0]  # the 3D layout: three views side by side


# --------------------------------------------------------------------------- end to end

TRAIN_CASES, TEST_CASES = 16, 4
SHAPE, SPACING = (96, 96), (0.8, 0.8)
SCHEDULE = dict(epochs=2, iterations_per_epoch=25, val_iterations=2)


def _atlas_mre(train_dir: Path, test_dir: Path) -> float:
    """The mean-position baseline: every landmark at its mean training position."""
    train, test = load_dataset(train_dir, progress=False), load_dataset(test_dir, progress=False)
    names = train.spec.landmarks
    atlas = np.mean([case.landmarks.as_array(names) for case in train.cases], axis=0)
    return float(np.mean([np.linalg.norm(case.landmarks.as_array(names) - atlas, axis=1) for case in test.cases]))


@pytest.fixture(scope="module")
def run_2d(tmp_path_factory):
    import time
    import nnlandmark as nl
    root = tmp_path_factory.mktemp("flat")
    train_dir = make_synthetic_dataset_2d(root / "train", TRAIN_CASES, seed=0, shape=SHAPE, spacing=SPACING)
    test_dir = make_synthetic_dataset_2d(root / "test", TEST_CASES, seed=1, shape=SHAPE, spacing=SPACING)
    assert main(["check", str(train_dir)]) == 0
    project = nl.prepare(train_dir, root / "project", num_processes=1, progress=False)
    started = time.time()
    # the full-resolution 2D U-Net (still selectable; the cascade is tested on finer pixels below)
    model = nl.train(project.root, 0, nl.TrainingSettings(configuration="fullres", **SCHEDULE), progress=False)
    seconds = time.time() - started
    predictions = nl.predict(test_dir / "images", root / "predictions", model, folds=[0], progress=False)
    result = nl.evaluate(predictions, test_dir)
    return SimpleNamespace(root=root, train=train_dir, test=test_dir, project=project, model=model,
                           predictions=predictions, result=result, seconds=seconds)


@pytest.mark.slow
def test_2d_model_beats_the_mean_position_atlas_twice(run_2d):
    overall = run_2d.result.summary["overall"]
    atlas = _atlas_mre(run_2d.train, run_2d.test)
    print(f"2D model MRE {overall['mre_mm']:.2f} mm, mean-position atlas {atlas:.2f} mm, "
          f"training {run_2d.seconds:.0f} s")
    assert overall["n_valid"] == TEST_CASES * len(LANDMARK_NAMES_2D) and overall["n_missing"] == 0
    assert 2 * overall["mre_mm"] <= atlas


@pytest.mark.slow
def test_2d_project_plans_and_trains_one_2d_network(run_2d):
    plans = run_2d.project.plans()
    # nnU-Net plans no 3d_fullres for one slice; the cascade is planned from its '2d'
    assert set(plans["configurations"]) == {"2d", "2d_global", "2d_local"}
    assert plans["transpose_forward"][0] == 0  # the slice axis first: '2d' patches drop it
    description = json.loads((run_2d.model / "nnlandmark.json").read_text())
    assert description["stages"] == {"fullres": "2d"} and description["picture_spacing"] == list(SPACING)
    assert run_2d.model.name.endswith("__2d")
    curves = json.loads((run_2d.model / "fold_0" / "training_curves.json").read_text())
    # the softmax loss starts at ln(patch voxels), a uniform guess, and falls towards the targets' entropy
    patch = plans["configurations"]["2d"]["patch_size"]
    assert curves["val_loss"][-1] < np.log(np.prod(patch)) - 1.0
    assert len(curves["val_loss"]) == SCHEDULE["epochs"]


@pytest.mark.slow
def test_2d_predictions_are_world_mm_in_the_image_plane(run_2d):
    test = load_dataset(run_2d.test, progress=False)
    for case in test.cases:
        record = json.loads((run_2d.predictions / f"{case.case_id}.json").read_text())
        for name, r in record.items():
            assert r["world_lps_mm"][2] == 0.0 and r["voxel_index"][2] == 0.0
            # world = pixel index x spacing for a picture
            assert np.allclose(r["world_lps_mm"][:2], np.multiply(r["voxel_index"][:2], SPACING), atol=1e-3)
        markups = read_landmarks(run_2d.predictions / f"{case.case_id}.mrk.json")
        assert set(markups.names) == set(LANDMARK_NAMES_2D)
        # LPS: +x is the patient's left
        assert record["left_eye"]["world_lps_mm"][0] > record["right_eye"]["world_lps_mm"][0]


@pytest.mark.slow
def test_2d_report_has_one_picture_per_case(run_2d, capsys):
    out = run_2d.root / "report"
    assert main(["report", "-p", str(run_2d.predictions), "-r", str(run_2d.test), "-o", str(out)]) == 0
    pictures = sorted(p.name for p in (out / "slices").glob("*.png"))
    assert pictures == [f"case_{i:03d}.png" for i in range(TEST_CASES)]
    assert "slices/case_000.png" in (out / "report.html").read_text()


@pytest.mark.slow
def test_a_2d_model_refuses_3d_images_and_the_other_way_round(run_2d, tmp_path, capsys):
    volume = tmp_path / "volume.nii.gz"
    # with signal: an all-zero image is refused for that first
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).random((20, 20, 20), np.float32)), str(volume))
    out = tmp_path / "out"
    assert_refused(capsys, ["predict", "-i", volume, "-o", out, "-m", run_2d.model],
                   ("volume.nii.gz", "a 3D image, but the model", "was trained on 2D images"), absent=[out])
    picture = run_2d.test / "images" / "case_000.png"
    assert_refused(capsys, ["predict", "-i", picture, "-o", out, "-m", run_2d.model, "--spacing", "0", "1"],
                   ("--spacing", "positive"), absent=[out])


def test_a_3d_model_refuses_a_2d_picture(tiny_model, tmp_path, capsys):
    picture = tmp_path / "xray.png"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).integers(0, 255, (32, 32), np.uint8)), str(picture))
    out = tmp_path / "out"
    assert_refused(capsys, ["predict", "-i", picture, "-o", out, "-m", tiny_model],
                   ("xray.png", "a 2D image, but the model", "was trained on 3D images"), absent=[out])


@pytest.mark.slow
def test_pixels_coarser_than_1_mm_still_plan_2d(tmp_path):
    """nnU-Net puts the coarsest axis first and plans '2d' when the median image has one slice
    there: the slice thickness it is told (PLANAR_SLICE_SPACING) must beat any pixel spacing."""
    from nnlandmark.planning.project import prepare
    data = make_synthetic_dataset_2d(tmp_path / "coarse", n_cases=5, seed=4, shape=(48, 40), spacing=(2.0, 2.5))
    plans = prepare(data, tmp_path / "project", num_processes=1, progress=False).plans()
    assert set(plans["configurations"]) == {"2d", "2d_global", "2d_local"} and plans["transpose_forward"][0] == 0
    assert plans["configurations"]["2d"]["spacing"] == [2.5, 2.0]


# --------------------------------------------------------------------------- the 2D cascade, fine pixels

#: radiograph-like pixels: nnU-Net plans a 1280 x 1024 patch at full resolution, the cascade a whole
#: image of about 128^2 pixels and 64^2 patches of about 0.11 mm
FINE_SHAPE, FINE_SPACING = (1000, 1200), (0.1, 0.1)
FINE_TRAIN, FINE_TEST = 12, 3


@pytest.fixture(scope="module")
def run_2d_cascade(tmp_path_factory):
    import nnlandmark as nl
    root = tmp_path_factory.mktemp("fine")
    train_dir = make_synthetic_dataset_2d(root / "train", FINE_TRAIN, seed=0, shape=FINE_SHAPE, spacing=FINE_SPACING)
    test_dir = make_synthetic_dataset_2d(root / "test", FINE_TEST, seed=1, shape=FINE_SHAPE, spacing=FINE_SPACING)
    project = nl.prepare(train_dir, root / "project", num_processes=1, progress=False)
    # the default configuration (the cascade), a short time budget shared by its two stages
    model = nl.train(project.root, 0, nl.TrainingSettings(time_budget_minutes=5), progress=False)
    predictions = nl.predict(test_dir / "images", root / "predictions", model, folds=[0], progress=False)
    return SimpleNamespace(train=train_dir, test=test_dir, project=project, model=model, predictions=predictions,
                           result=nl.evaluate(predictions, test_dir))


@pytest.mark.slow
def test_the_default_2d_model_is_a_cascade_that_beats_the_mean_position_atlas(run_2d_cascade):
    plans = run_2d_cascade.project.plans()
    description = json.loads((run_2d_cascade.model / "nnlandmark.json").read_text())
    assert description["stages"] == {"global": "2d_global", "local": "2d_local"}
    assert run_2d_cascade.model.name.endswith("__cascade")
    local = plans["configurations"]["2d_local"]
    assert local["patch_size"] == [64, 64] and local["spacing"][0] > FINE_SPACING[0]  # its own, coarser data
    for stage in ("global", "local"):
        assert (run_2d_cascade.model / "fold_0" / stage / "checkpoint_final.pth").is_file()
    overall = run_2d_cascade.result.summary["overall"]
    atlas = _atlas_mre(run_2d_cascade.train, run_2d_cascade.test)
    print(f"2D cascade MRE {overall['mre_mm']:.2f} mm, mean-position atlas {atlas:.2f} mm")
    assert overall["n_valid"] == FINE_TEST * len(LANDMARK_NAMES_2D) and overall["mre_mm"] < atlas


@pytest.mark.slow
def test_2d_cascade_predictions_are_world_mm_in_the_image_plane(run_2d_cascade):
    for case in load_dataset(run_2d_cascade.test, progress=False).cases:
        record = json.loads((run_2d_cascade.predictions / f"{case.case_id}.json").read_text())
        for name, r in record.items():
            assert r["world_lps_mm"][2] == 0.0 and r["voxel_index"][2] == 0.0
            assert np.allclose(r["world_lps_mm"][:2], np.multiply(r["voxel_index"][:2], FINE_SPACING), atol=1e-3)
            # inside the picture: the local patch's point mapped back through geometry.py
            assert all(0 <= v <= n for v, n in zip(r["voxel_index"][:2], FINE_SHAPE)), name
