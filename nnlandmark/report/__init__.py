"""Visual reports: slice QC images, error plots, training curves and the HTML report.

Every figure is drawn on matplotlib's Agg canvas without ``pyplot``, so nothing
here needs a display or changes the global matplotlib backend.
"""
from nnlandmark.report.curves import plot_training_curves
from nnlandmark.report.html import write_report
from nnlandmark.report.plots import plot_error_boxplot, plot_sdr_curve
from nnlandmark.report.slices import plot_landmark_slices

__all__ = ["plot_training_curves", "write_report", "plot_error_boxplot", "plot_sdr_curve",
           "plot_landmark_slices"]
