"""Every architecture through the real pipeline: build, prepare -> train -> predict.

* ``build_network`` on plans-like configurations with non-cubic patch sizes
  whose bottleneck is odd (5 x 7 x 5): nnU-Net's PlainConvUNet and
  ResidualEncoderUNet and the H3DE-style net each return one logit channel per
  landmark at the input size, and gradients reach the whole network.
* A short CPU training of each of plain U-Net (default planner), ResEnc M
  (``planner='resenc-m'``) and H3DE-style (``architecture='h3de'``, default
  plans) lowers the training loss, records planner and plans in the model
  folder, and predicts a held-out phantom from the saved checkpoint: every point
  at the peak of that network's heatmap, as a forward pass in the test computes it.

To stay short on two shared CPU cores the phantoms are 32^3 voxels of 3 mm,
planned at a 6 mm target spacing (16^3 patches), and the cone radius is 5
voxels: the cone preset's 15 voxels are 30 mm at nnU-Net's usual 2 mm for
these phantoms, and 30 mm is 5 voxels of 6 mm. With the preset's 15 voxels a
16^3 patch would lie entirely inside every cone.
"""
from __future__ import annotations

import json
import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nnlandmark.geometry import preprocessed_to_world, world_to_preprocessed
from nnlandmark.nnunet.networks import build_network

N_LANDMARKS = 6


@pytest.fixture(autouse=True)
def _one_thread():
    # The CPU is shared with other jobs; with two OpenMP threads on a loaded
    # machine each conv waits for a second core and gets slower, not faster.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# --------------------------------------------------------------------------- #
# build_network on plans-like configurations
# --------------------------------------------------------------------------- #
PLAIN = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
RESENC = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
ODD_PATCH = (20, 56, 40)  # total stride (4, 8, 8) -> bottleneck 5 x 7 x 5


def _configuration(network_class: str, patch_size=ODD_PATCH):
    """A ConfigurationManager shaped like an anisotropic 3d_fullres plan (small features)."""
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager
    kwargs = {
        "n_stages": 4,
        "features_per_stage": [8, 16, 32, 32],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
        "n_conv_per_stage_decoder": [1, 1, 1],
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    # nnU-Net's ResEnc planners call the encoder depth n_blocks_per_stage
    kwargs["n_blocks_per_stage" if network_class == RESENC else "n_conv_per_stage"] = [1, 2, 2, 2]
    return ConfigurationManager({
        "patch_size": list(patch_size),
        "batch_size": 2,
        "spacing": [3.0, 1.0, 1.0],
        "architecture": {"network_class_name": network_class, "arch_kwargs": kwargs,
                         "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
    })


@pytest.mark.parametrize("architecture,network_class", [("unet", PLAIN), ("unet", RESENC), ("h3de", PLAIN)],
                         ids=["plain-unet", "resenc-unet", "h3de"])
def test_build_network_odd_patch_forward_backward(architecture, network_class):
    torch.manual_seed(0)
    net = build_network(architecture, _configuration(network_class), 2, N_LANDMARKS)
    x = torch.randn(2, 2, *ODD_PATCH)
    y = net(x)
    assert isinstance(y, torch.Tensor)  # no deep-supervision list
    assert y.shape == (2, N_LANDMARKS, *ODD_PATCH)
    y.square().mean().backward()
    grads = {name: p.grad for name, p in net.named_parameters()}
    first = next(iter(grads))  # the first encoder conv: the gradient went all the way back
    assert grads[first] is not None and grads[first].abs().sum() > 0
    # nnU-Net's decoders keep one seg head per stage even without deep supervision
    # (only the last is used); everything else must be trained.
    untrained = [n for n, g in grads.items() if g is None and "seg_layers" not in n and "ds_heads" not in n]
    assert not untrained


def test_build_network_h3de_any_input_size():
    # The sliding window only feeds patch-sized windows, but H3DENet pads and crops any size.
    torch.manual_seed(0)
    net = build_network("h3de", _configuration(PLAIN), 1, N_LANDMARKS)
    with torch.no_grad():
        assert net(torch.randn(1, 1, 21, 45, 37)).shape == (1, N_LANDMARKS, 21, 45, 37)


def test_nnunet_deep_supervision_switch_reaches_h3de():
    # nnU-Net's trainer toggles deep supervision through network.decoder.deep_supervision.
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    net = build_network("h3de", _configuration(PLAIN), 1, N_LANDMARKS)
    trainer = SimpleNamespace(is_ddp=False, network=net)
    x = torch.randn(1, 1, *ODD_PATCH)
    with torch.no_grad():
        nnUNetTrainer.set_deep_supervision_enabled(trainer, True)
        outputs = net(x)
        assert isinstance(outputs, list)
        assert [tuple(o.shape[2:]) for o in outputs] == [ODD_PATCH, (20, 28, 20), (10, 14, 10)]
        nnUNetTrainer.set_deep_supervision_enabled(trainer, False)
        assert net(x).shape == (1, N_LANDMARKS, *ODD_PATCH)


def test_build_network_rejects_bad_input():
    with pytest.raises(ValueError, match="total stride"):
        build_network("unet", _configuration(PLAIN, patch_size=(20, 52, 40)), 1, N_LANDMARKS)
    with pytest.raises(ValueError, match="unknown architecture"):
        build_network("vit", _configuration(PLAIN), 1, N_LANDMARKS)


# --------------------------------------------------------------------------- #
# prepare -> train -> predict
# --------------------------------------------------------------------------- #
TARGET_SPACING_MM = 6.0
CONE_RADIUS_VOXELS = 5.0
SCHEDULE = dict(epochs=3, iterations_per_epoch=5, val_iterations=1)
# Over this schedule (seed 0) the last epoch's mean training loss was 0.63-0.71 of the
# first's for all three; 0.9 leaves room for the noise of so few iterations.
LOSS_RATIO = 0.9
PLANNED_CLASS = {"default": PLAIN, "resenc-m": RESENC}
PLANS_IDENTIFIER = {"default": "nnUNetPlans", "resenc-m": "nnUNetResEncUNetMPlans"}


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """Five training phantoms and one held-out phantom (another dataset seed)."""
    from nnlandmark.data.synthetic import make_synthetic_dataset
    base = tmp_path_factory.mktemp("architectures")
    kwargs = dict(shape=(32, 32, 32), spacing=(3.0, 3.0, 3.0))
    return SimpleNamespace(train=make_synthetic_dataset(base / "train", n_cases=5, seed=0, **kwargs),
                           test=make_synthetic_dataset(base / "test", n_cases=1, seed=7, **kwargs),
                           base=base)


@pytest.fixture(scope="module")
def project_for(small_data):
    """planner -> prepared project folder, prepared once per module."""
    from nnlandmark.planning.project import prepare
    projects = {}

    def get(planner: str):
        if planner not in projects:
            projects[planner] = prepare(small_data.train, small_data.base / f"project_{planner}", planner=planner,
                                        num_processes=1, target_spacing=TARGET_SPACING_MM, progress=False).root
        return projects[planner]
    return get


@pytest.mark.parametrize("planner,architecture", [("default", "unet"), ("resenc-m", "unet"), ("default", "h3de")],
                         ids=["plain-unet", "resenc-m", "h3de"])
def test_short_training_lowers_loss_and_predicts(project_for, small_data, planner, architecture):
    from nnlandmark.inference.predict import predict
    from nnlandmark.training.presets import TrainingSettings
    from nnlandmark.training.train import train

    project = project_for(planner)
    plans = json.loads((project / "project.json").read_text())
    assert plans["planner"] == planner
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    settings = TrainingSettings(preset="cone", configuration="fullres", architecture=architecture,
                                cone_radius=CONE_RADIUS_VOXELS, **SCHEDULE)
    model = train(project, 0, settings, device="cpu", progress=False)

    # the model folder says which planner, plans and architecture it was trained with
    assert model.name == f"cone_{architecture}__{PLANS_IDENTIFIER[planner]}__3d_fullres"
    description = json.loads((model / "nnlandmark.json").read_text())
    assert description["planner"] == planner
    assert description["plans_identifier"] == PLANS_IDENTIFIER[planner]
    assert description["settings"]["architecture"] == architecture
    model_plans = json.loads((model / "plans.json").read_text())
    assert model_plans["plans_name"] == PLANS_IDENTIFIER[planner]
    configuration = model_plans["configurations"]["3d_fullres"]
    assert configuration["architecture"]["network_class_name"] == PLANNED_CLASS[planner]

    curves = json.loads((model / "fold_0" / "training_curves.json").read_text())
    losses = curves["train_loss"]
    assert len(losses) == SCHEDULE["epochs"] and all(math.isfinite(v) for v in losses)
    print(f"{planner}/{architecture}: batch {configuration['batch_size']}, patch {configuration['patch_size']}, "
          f"train loss per epoch {[round(v, 4) for v in losses]}")
    assert losses[-1] < LOSS_RATIO * losses[0], losses

    # the saved checkpoint is rebuilt through build_network and predicts a held-out phantom: each
    # point is the peak of the trained network's own heatmap, computed here from nnU-Net's
    # preprocessing of the phantom and a plain forward pass (one 16^3 tile covers the phantom)
    image = small_data.test / "images" / "case_000.nii.gz"
    out = predict([image], small_data.base / f"pred_{planner}_{architecture}", model, folds=[0], device="cpu",
                  decoder="argmax", mirror=False, progress=False)
    record = json.loads((out / "case_000.json").read_text())
    assert list(record) == description["landmarks"]
    predicted = np.array([record[n]["world_lps_mm"] for n in record])
    logits, pgrid, grid = _forward_pass(model, architecture, image)
    peaks = [np.unravel_index(np.argmax(channel), channel.shape) for channel in logits]
    found = np.rint(world_to_preprocessed(predicted, pgrid, grid)).astype(int)
    for c, name in enumerate(record):
        # the sliding window sums in float16: a near-tie may resolve to another voxel within its rounding
        assert logits[c][tuple(found[c])] >= logits[c].max() - 4e-3 * max(1.0, abs(logits[c].max())), name
    # and mostly it is exactly the float32 peak (world points from the geometry, here)
    exact = np.linalg.norm(predicted - preprocessed_to_world(np.array(peaks, float), pgrid, grid), axis=1) < 1e-3
    assert exact.sum() >= N_LANDMARKS - 1, exact


def _forward_pass(model, architecture, image):
    """float32 logits (L, *preprocessed) of fold 0's best checkpoint on nnU-Net's own preprocessing of
    ``image`` (its DefaultPreprocessor.run_case, not nnlandmark's), and the grids that place them."""
    import SimpleITK as sitk
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnlandmark.geometry import ImageGrid, PreprocessedGrid
    plans = PlansManager(json.loads((model / "plans.json").read_text()))
    configuration = plans.get_configuration("3d_fullres")
    dataset_json = json.loads((model / "dataset.json").read_text())
    data, _, properties = DefaultPreprocessor(verbose=False).run_case([str(image)], None, plans, configuration,
                                                                       dataset_json)
    assert tuple(data.shape[1:]) == tuple(configuration.patch_size)  # one tile: no sliding-window weights
    network = build_network(architecture, configuration, 1, N_LANDMARKS)
    weights = torch.load(model / "fold_0" / "checkpoint_best.pth", map_location="cpu", weights_only=False)
    network.load_state_dict(weights["network_weights"])
    network.eval()
    with torch.no_grad():
        logits = network(torch.from_numpy(np.asarray(data, dtype=np.float32))[None])[0].numpy()
    pgrid = PreprocessedGrid(plans.transpose_forward, [b[0] for b in properties["bbox_used_for_cropping"]],
                             properties["shape_after_cropping_and_before_resampling"], data.shape[1:])
    return logits, pgrid, ImageGrid.from_image(sitk.ReadImage(str(image)))
