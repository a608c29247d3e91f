"""The model folder's contract: one room, below training, inference and evaluation.

A model folder is what training leaves and what prediction, ``evaluate-cv``,
export and import read: nnU-Net's plans and dataset description, the
checkpoints (``fold_N/``, or ``fold_N/global`` and ``fold_N/local`` for the
cascade) and ``nnlandmark.json``. Here are

- :mod:`.folder`: :class:`~.folder.ModelFolder`, the one reader and writer of the folder, and
  finding, exporting and importing models;
- :mod:`.description`: :class:`~.description.ModelDescription`, ``nnlandmark.json`` typed (models
  written by earlier versions read into it), and :func:`~.description.fold_key`;
- :mod:`.shape`: the shape prior that training fits and prediction uses.

It imports neither training, inference, evaluation nor report (``tests/test_layering.py``):
those layers import it.
"""
