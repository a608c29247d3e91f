"""Summary plots of landmark errors: box plot per landmark and success-rate curve.

Figures are drawn on matplotlib's Agg canvas directly (no ``pyplot``), so the
functions work headless and leave the global matplotlib state untouched.

Examples
--------
>>> import numpy as np, tempfile, pathlib
>>> errors = np.array([[1.0, 2.0], [3.0, np.nan]])
>>> out = pathlib.Path(tempfile.mkdtemp())
>>> plot_error_boxplot(errors, ["a", "b"], out / "box.png").stat().st_size > 0
True
>>> plot_sdr_curve(errors, out / "sdr.png").stat().st_size > 0
True
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nnlandmark.evaluation.metrics import success_detection_rate


def new_figure(width: float, height: float) -> Figure:
    """A figure bound to an Agg canvas (independent of the pyplot backend)."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, out_png, dpi: int = 100) -> Path:
    """Save ``fig`` as PNG, creating the parent folder; returns the path."""
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=dpi, format="png")
    return out_png


def plot_error_boxplot(errors, landmark_names, out_png, title: str | None = None) -> Path:
    """Box plot of the valid radial errors of each landmark.

    Parameters
    ----------
    errors : array_like, shape (N, L)
        Radial errors in mm; NaN entries are left out (a landmark without any
        valid error gets an empty slot, its label says ``n=0``).
    landmark_names : sequence of str
        The L landmark names, used as labels together with the count of valid errors.
    out_png : path-like
        Output PNG.
    title : str, optional

    Returns
    -------
    Path of the PNG.
    """
    errors = np.asarray(errors, dtype=float).reshape(-1, len(landmark_names))
    data = [col[~np.isnan(col)] for col in errors.T]
    labels = [f"{name} (n={d.size})" for name, d in zip(landmark_names, data)]
    fig = new_figure(max(6.0, 0.45 * len(labels) + 2.0), 4.5)
    ax = fig.add_subplot()
    ax.boxplot(data, tick_labels=labels, showmeans=True)
    ax.set_ylabel("radial error (mm)")
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    ax.tick_params(axis="x", labelrotation=60)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.set_title(title or "Radial error per landmark (triangle = mean)")
    fig.tight_layout()
    return save_figure(fig, out_png)


def plot_sdr_curve(errors, out_png, landmark_names=None, max_mm: float = 10.0,
                   marked_thresholds=(), title: str | None = None) -> Path:
    """Success detection rate against threshold, 0 to ``max_mm`` in 0.05 mm steps.

    The rate at ``t`` is the fraction of valid errors with ``error <= t``
    (:func:`~nnlandmark.evaluation.metrics.success_detection_rate`), pooled over all
    cases and landmarks (thick line); with ``landmark_names`` each landmark adds a
    thin line (legend only up to 12 landmarks).

    Parameters
    ----------
    errors : array_like, shape (N, L)
        Radial errors in mm, NaN for missing.
    out_png : path-like
    landmark_names : sequence of str, optional
    max_mm : float
        Upper end of the threshold axis.
    marked_thresholds : sequence of float
        Thresholds drawn as dotted vertical lines (e.g. the reported SDR thresholds).
    title : str, optional

    Returns
    -------
    Path of the PNG.
    """
    errors = np.asarray(errors, dtype=float)
    grid = np.linspace(0.0, max_mm, int(round(max_mm / 0.05)) + 1)
    fig = new_figure(6.5, 4.5)
    ax = fig.add_subplot()
    if landmark_names is not None:
        errors = errors.reshape(-1, len(landmark_names))
        for j, name in enumerate(landmark_names):
            ax.plot(grid, 100 * success_detection_rate(errors[:, j], grid), lw=0.8, alpha=0.6,
                    label=name if len(landmark_names) <= 12 else None)
    ax.plot(grid, 100 * success_detection_rate(errors, grid), color="black", lw=2.2, label="all")
    for t in marked_thresholds:
        ax.axvline(float(t), color="grey", ls=":", lw=0.8)
    ax.set_xlim(0, max_mm)
    ax.set_ylim(0, 101)
    ax.set_xlabel("threshold (mm)")
    ax.set_ylabel("success rate (%)  [error <= threshold]")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    ax.set_title(title or "Success detection rate")
    fig.tight_layout()
    return save_figure(fig, out_png)
