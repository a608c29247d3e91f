"""The adapter layer: the only package that imports nnunetv2, and the bottom layer.

Everything nnlandmark needs from nnU-Net v2 (raw dataset format, fingerprint,
planners, preprocessing, data loading and augmentation, the trainer base
class, sliding-window prediction) is reached through these modules, so an
nnunetv2 upgrade is a change here and nowhere else. Tested with nnunetv2 2.8.x
only, which is why ``pyproject.toml`` pins ``nnunetv2>=2.8,<2.9`` (2.8 moved
``continue_training`` into the trainer's plans, see :func:`trainer.make_trainer`;
widen the pin only after running the tests against another version).

It is also the bottom of nnlandmark's layers: nothing here imports from
``nnlandmark.data``, ``training``, ``inference``, ``evaluation``, ``planning`` or
``report`` (``tests/test_layering.py`` checks it). Only leaf modules are used:
:mod:`nnlandmark.geometry`, :mod:`nnlandmark.errors`, :mod:`nnlandmark.files` and the networks of
:mod:`nnlandmark.architectures`. The layers above pass down what is theirs, as
plain values and callables: the landmark dataset to export (duck-typed, see
:mod:`.raw`), the loss, batch preparation and curve plotting of a training
run (:class:`trainer.TrainingRecipe`), a model's plans, weights and channel
swap (:class:`predictor.LandmarkPredictor`). The verbs they use:

- :func:`raw.write_raw_dataset`; :mod:`.planning` (fingerprint, plans, preprocessing);
- :func:`trainer.make_trainer` and :meth:`trainer.LandmarkTrainer.configure`, ``run_training``;
- :func:`distributed.spawn` (nnU-Net's multi-GPU DDP path: one process per GPU, each running a
  function of the training layer);
- :func:`paths.read_splits` (nnU-Net's cross-validation folds);
- :func:`planning.load_preprocessed_case`, :func:`planning.case_direction`, :func:`planning.case_grids`;
- :class:`predictor.LandmarkPredictor` (preprocess a case, predict logits).

Nothing here looks up trainers by name (``recursive_find_python_class`` over
nnU-Net's trainer folder imports timm -> torchvision, which fails next to a CPU
build of torch): we construct trainer, network and predictor ourselves.
"""


def nnunetv2_version() -> str:
    """The installed nnunetv2's version, recorded in every model folder."""
    from importlib.metadata import version
    return version("nnunetv2")
