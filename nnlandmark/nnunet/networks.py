"""Build the network for a configuration: nnU-Net's planned U-Net or the H3DE-style net.

The trainer (``LandmarkTrainer.build_network_architecture``) and the predictor
(``LandmarkPredictor``) both call :func:`build_network`, so a checkpoint's
weights always meet the module layout they were saved from: the architecture
comes from the model's ``nnlandmark.json`` and every size from its
``plans.json``.
"""
from __future__ import annotations

import math

ARCHITECTURES = ("unet", "h3de")


def total_stride(configuration_manager) -> tuple:
    """Product of the planned per-stage strides, per axis (array order)."""
    strides = configuration_manager.network_arch_init_kwargs["strides"]
    n_stages = len(configuration_manager.network_arch_init_kwargs["features_per_stage"])
    if isinstance(strides, int):
        strides = [[strides] * 3] * n_stages
    strides = [[s] * 3 if isinstance(s, int) else list(s) for s in strides]
    return tuple(math.prod(s[axis] for s in strides) for axis in range(len(strides[0])))


def build_network(architecture: str, configuration_manager, num_input_channels: int, num_landmarks: int):
    """The network of ``architecture`` for one nnU-Net configuration.

    Both architectures have one output channel per landmark (raw logits) and
    deep supervision switched off, so ``forward`` returns a single tensor of
    shape ``(B, num_landmarks, *input spatial shape)``.

    Parameters
    ----------
    architecture : {'unet', 'h3de'}
        ``unet``: the network nnU-Net planned, built by nnU-Net's own
        ``get_network_from_plans`` (``PlainConvUNet`` for the default planner,
        ``ResidualEncoderUNet`` for the ResEnc M/L presets).
        ``h3de``: :class:`nnlandmark.architectures.H3DENet`, sized from the
        same plans (stages, features, strides, kernels, conv counts) and from
        the patch size, which decides where attention fits
        (:func:`nnlandmark.architectures.build_h3de_from_plans`).
    configuration_manager : nnunetv2 ``ConfigurationManager``
        The planned configuration (``3d_fullres``).
    num_input_channels : int
        Image channels.
    num_landmarks : int
        Output channels.

    Raises
    ------
    ValueError
        For an unknown architecture, or (``unet``) a patch size that is not a
        multiple of the total stride: nnU-Net's U-Nets cannot crop skip
        connections, and a hand-edited plan would otherwise fail only at the
        first training step, inside ``torch.cat``. H3DENet pads and crops, so
        it takes any size.
    """
    if architecture == "unet":
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
        patch, stride = tuple(configuration_manager.patch_size), total_stride(configuration_manager)
        if any(p % s for p, s in zip(patch, stride)):
            raise ValueError(f"patch size {list(patch)} is not a multiple of the U-Net's total stride "
                             f"{list(stride)}; nnU-Net plans always are: use the planned patch size")
        return get_network_from_plans(configuration_manager.network_arch_class_name,
                                      configuration_manager.network_arch_init_kwargs,
                                      configuration_manager.network_arch_init_kwargs_req_import,
                                      num_input_channels, num_landmarks, allow_init=True, deep_supervision=False)
    if architecture == "h3de":
        from nnlandmark.architectures import build_h3de_from_plans
        return build_h3de_from_plans(configuration_manager.network_arch_init_kwargs, num_input_channels,
                                     num_landmarks, patch_size=tuple(configuration_manager.patch_size))
    raise ValueError(f"unknown architecture '{architecture}', choose from {list(ARCHITECTURES)}")
