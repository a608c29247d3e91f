"""Moved to :mod:`nnlandmark.model.folder` (the model folder's contract sits below training and
inference); these names stay importable from here for code written before the move."""
from nnlandmark.model.folder import (CHECKPOINT_PREFERENCE, MODEL_FILE, ModelFolder, ModelFolderError,  # noqa: F401
                                     export_model, import_model, list_models, resolve_model)
