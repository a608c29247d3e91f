"""Network architectures usable inside nnU-Net's training pipeline."""
from nnlandmark.architectures.h3de import H3DENet, build_h3de_from_plans

__all__ = ["H3DENet", "build_h3de_from_plans"]
