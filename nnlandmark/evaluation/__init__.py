"""Landmark evaluation: pure metrics (:mod:`.metrics`) and folder evaluation (:mod:`.evaluate`)."""
from nnlandmark.evaluation.evaluate import EvaluationResult, evaluate
from nnlandmark.evaluation.metrics import (
    biometry_errors, calibrate_presence_threshold, landmark_distances, presence_metrics,
    radial_errors, success_detection_rate, summarize_biometry, summarize_errors, youden_threshold,
)

__all__ = [
    "EvaluationResult", "evaluate", "biometry_errors", "calibrate_presence_threshold",
    "landmark_distances", "presence_metrics", "radial_errors", "success_detection_rate",
    "summarize_biometry", "summarize_errors", "youden_threshold",
]
