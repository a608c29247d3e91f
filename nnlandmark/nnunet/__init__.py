"""The adapter layer: the only package that imports nnunetv2.

Everything nnlandmark needs from nnU-Net v2 (raw dataset format, fingerprint,
planners, preprocessing, data loading and augmentation, the trainer base
class, sliding-window prediction) is reached through these modules, so an
nnunetv2 upgrade is a change here and nowhere else. Tested with nnunetv2 2.8.x.

Nothing here looks up trainers by name (``recursive_find_python_class`` over
nnU-Net's trainer folder imports timm -> torchvision, which fails next to a CPU
build of torch): we construct trainer, network and predictor ourselves.
"""
