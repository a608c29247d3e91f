"""Where nnU-Net's raw, preprocessed and results folders live for a project."""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
#: nnU-Net's cross-validation: the folds its trainer splits a dataset into (``splits_final.json``), which
#: every project plans and ``--fold all`` trains
NUM_FOLDS = 5


def fold_key(fold: int) -> str:
    """The key of a fold, in the model folder (its checkpoint folder ``fold_N``, as nnU-Net names
    it) and in the model description's per-fold entries (``shape_prior``, ``learned_sigmas``).

    >>> fold_key(3)
    'fold_3'
    """
    return f"fold_{int(fold)}"


@dataclass(frozen=True)
class NnunetFolders:
    raw: Path
    preprocessed: Path
    results: Path

    @classmethod
    def for_project(cls, project_dir) -> "NnunetFolders":
        """Folders inside ``project_dir``, unless the user set nnU-Net's own variables."""
        project_dir = Path(project_dir).resolve()
        defaults = {"nnUNet_raw": project_dir / "nnUNet_raw",
                    "nnUNet_preprocessed": project_dir / "nnUNet_preprocessed",
                    "nnUNet_results": project_dir / "nnUNet_results"}
        chosen = {k: Path(os.environ[k]) if os.environ.get(k) else v for k, v in defaults.items()}
        return cls(chosen["nnUNet_raw"], chosen["nnUNet_preprocessed"], chosen["nnUNet_results"])


def splits_file(folders: NnunetFolders, dataset_name: str) -> Path:
    """Where nnU-Net keeps a dataset's cross-validation split (``splits_final.json``).

    nnU-Net's trainer writes it on the first training of the dataset (five
    folds of the prepared cases); a user may write it beforehand to choose the folds.
    """
    return Path(folders.preprocessed) / dataset_name / "splits_final.json"


def read_splits(folders: NnunetFolders, dataset_name: str) -> list | None:
    """The folds of :func:`splits_file`, ``[{"train": [case ids], "val": [case ids]}, ...]``;
    ``None`` while there is none yet."""
    path = splits_file(folders, dataset_name)
    return json.loads(path.read_text()) if path.is_file() else None


@contextmanager
def nnunet_environment(folders: NnunetFolders, augmentation_workers: int | None = None):
    """Point nnU-Net at ``folders`` for the duration of the block.

    nnunetv2 reads its folders (and ``nnUNet_n_proc_DA``) from the environment
    at call time; this is the one place where nnlandmark sets them, and the
    previous values come back afterwards.
    """
    wanted = {"nnUNet_raw": str(folders.raw), "nnUNet_preprocessed": str(folders.preprocessed),
              "nnUNet_results": str(folders.results)}
    if augmentation_workers is not None:
        wanted["nnUNet_n_proc_DA"] = str(int(augmentation_workers))
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield folders
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
