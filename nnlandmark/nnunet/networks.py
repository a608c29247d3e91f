"""Build the network for a configuration: nnU-Net's planned U-Net or the H3DE-style net."""
from __future__ import annotations


def build_network(architecture: str, configuration_manager, num_input_channels: int, num_landmarks: int):
    """One output channel per landmark, no deep supervision.

    ``unet`` is whatever nnU-Net planned (PlainConvUNet for the default
    planner, ResidualEncoderUNet for the ResEnc M/L presets).
    """
    if architecture == "unet":
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
        return get_network_from_plans(configuration_manager.network_arch_class_name,
                                      configuration_manager.network_arch_init_kwargs,
                                      configuration_manager.network_arch_init_kwargs_req_import,
                                      num_input_channels, num_landmarks, allow_init=True, deep_supervision=False)
    if architecture == "h3de":
        from nnlandmark.architectures import build_h3de_from_plans
        return build_h3de_from_plans(configuration_manager.network_arch_init_kwargs, num_input_channels,
                                     num_landmarks, patch_size=tuple(configuration_manager.patch_size))
    raise ValueError(f"unknown architecture '{architecture}'")
