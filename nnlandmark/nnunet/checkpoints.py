"""Reading checkpoints without running code from them: the one place that calls ``torch.load``.

A checkpoint is a pickle inside a zip archive, and unpickling may call any
function the file names (``__reduce__``): a shared model could run a shell
command when it is loaded. So checkpoints are read with ``torch.load(...,
weights_only=True)``, whose unpickler builds only tensors, containers, numbers
and strings, plus exactly the few extra types that nnU-Net's checkpoints hold
(:data:`CHECKPOINT_TYPES`: numpy scalars in its training log and
``_best_ema``). A file that asks for anything else is refused with one line
naming it (:class:`UnsafeCheckpoint`), before any of it is built.

>>> import io, torch
>>> buffer = io.BytesIO()
>>> torch.save({"network_weights": {"w": torch.ones(2)}, "_best_ema": np.float64(0.5)}, buffer)
>>> _ = buffer.seek(0)
>>> checkpoint = load_checkpoint(buffer)
>>> checkpoint["network_weights"]["w"].tolist(), float(checkpoint["_best_ema"])
([1.0, 1.0], 0.5)
"""
from __future__ import annotations

import pickle

import numpy as np
import torch

from nnlandmark.errors import InvalidInput


def _numpy_types() -> list:
    """numpy's scalar and dtype, as a pickle names them: nnU-Net's training log and ``_best_ema``
    hold numpy floats. ``scalar`` builds a number from a dtype and its bytes; nothing else is called."""
    try:  # numpy 2 keeps it in numpy._core; checkpoints written with numpy 1 name numpy.core
        from numpy._core.multiarray import scalar
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core.multiarray import scalar
    # a pickled dtype is rebuilt through its class (numpy.dtypes.Float64DType, ...): number types only
    dtype_classes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64, np.int32,
                                                 np.int16, np.int8, np.uint8, np.bool_)]
    return [scalar, np.dtype, *dtype_classes, (scalar, "numpy.core.multiarray.scalar")]


#: what a checkpoint may hold beyond what ``weights_only`` allows by itself
CHECKPOINT_TYPES = _numpy_types()


class UnsafeCheckpoint(InvalidInput):
    """A checkpoint whose pickle names a type or function outside :data:`CHECKPOINT_TYPES`."""


def load_checkpoint(path, map_location="cpu", mmap: bool = False) -> dict:
    """The checkpoint at ``path`` (or a file object), read with ``weights_only=True``; a file that
    needs any other type is refused (:class:`UnsafeCheckpoint`, naming it) without building it."""
    try:
        with torch.serialization.safe_globals(CHECKPOINT_TYPES):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        # torch's message is long advice about weights_only=False, which is what must not happen here
        needed = _needed_global(str(e))
        raise UnsafeCheckpoint(f"{path}: refused to load this checkpoint: it asks to build {needed}, which a "
                               "model's weights never need (loading it could run code); use only models from "
                               "sources you trust, or retrain") from None


def _needed_global(message: str) -> str:
    """The name torch's refusal quotes (``Unsupported global: GLOBAL os.system``), else a generic phrase.

    >>> _needed_global("Weights only load failed. ... Unsupported global: GLOBAL posix.system was not ...")
    'posix.system'
    >>> _needed_global("... but got <class 'numpy.dtypes.StrDType'>")
    'numpy.dtypes.StrDType'
    """
    import re
    found = re.search(r"GLOBAL (\S+)|but got <class '([^']+)'>", message)
    if found:
        return found.group(1) or found.group(2)
    return "an object other than tensors and numbers"
