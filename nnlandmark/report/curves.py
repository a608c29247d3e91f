"""Training curves (losses, learning rate, validation metrics) per epoch.

Examples
--------
>>> import tempfile, pathlib
>>> log = {"train_loss": [1.0, 0.6, 0.4], "val_loss": [1.1, 0.8, 0.7], "lr": [1e-2, 5e-3, 1e-3]}
>>> out = pathlib.Path(tempfile.mkdtemp()) / "curves.png"
>>> plot_training_curves(log, out).stat().st_size > 0
True
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from nnlandmark.report.plots import new_figure, save_figure


def _is_lr(key: str) -> bool:
    key = key.lower()
    return key == "lr" or key.endswith("_lr") or key.startswith("lr_") or "learning_rate" in key


def plot_training_curves(log: Mapping[str, Sequence[float]], out_png, title: str | None = None) -> Path:
    """Plot per-epoch training logs, one panel per kind of quantity.

    Keys containing ``"loss"`` share the first panel; learning-rate keys (``lr``,
    ``*_lr``, ``lr_*``, ``*learning_rate*``) get a panel with a logarithmic axis
    (when all values are positive); every other key (e.g. ``val_mre_mm``) goes to a
    third panel. Panels without keys are left out. Epoch ``e`` is the ``e``-th entry
    of a list, so series may differ in length; ``None`` entries are gaps.

    Parameters
    ----------
    log : mapping of str to sequence of float
        Series per name, one value per epoch.
    out_png : path-like
        Output PNG.
    title : str, optional
        Figure title.

    Returns
    -------
    Path of the PNG.

    Raises
    ------
    ValueError
        When ``log`` has no non-empty series.
    """
    series = {str(k): np.array([np.nan if v is None else float(v) for v in values], dtype=float)
              for k, values in log.items() if len(values) > 0}
    if not series:
        raise ValueError("training log has no non-empty series")
    groups = {"loss": [k for k in series if "loss" in k.lower()]}
    groups["learning rate"] = [k for k in series if _is_lr(k) and k not in groups["loss"]]
    taken = set(groups["loss"]) | set(groups["learning rate"])
    groups["other"] = [k for k in series if k not in taken]
    groups = {g: keys for g, keys in groups.items() if keys}

    fig = new_figure(7.0, 2.8 * len(groups) + 0.4)
    axes = fig.subplots(len(groups), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (group, keys) in zip(axes, groups.items()):
        for key in keys:
            y = series[key]
            # a lone value between gaps would vanish as a line, so mark points too
            ax.plot(np.arange(y.size), y, marker="." if y.size <= 50 else None, label=key)
        values = np.concatenate([series[k] for k in keys])
        if group == "learning rate" and np.all(values[~np.isnan(values)] > 0):
            ax.set_yscale("log")
        ax.set_ylabel(group)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    axes[-1].set_xlabel("epoch")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out_png)


def plot_curves_beside(curves: dict, folder) -> Path:
    """``training_curves.png`` in ``folder``, beside the trainer's ``training_curves.json``: the
    ``on_curves`` that :func:`nnlandmark.train` passes down to training, called after every epoch."""
    return plot_training_curves(curves, Path(folder) / "training_curves.png")
