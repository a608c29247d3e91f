"""``nnlandmark report``: evaluation plus pictures, in one folder."""
from __future__ import annotations

from pathlib import Path


def qc_report(prediction_dir, dataset_dir, output_dir, overwrite: bool = False) -> Path:
    """Evaluate predictions against a dataset and write ``report.html`` with per-case slice PNGs."""
    from nnlandmark.data.dataset import DatasetSpec, discover_images
    from nnlandmark.evaluation.evaluate import evaluate
    from nnlandmark.report.html import write_report

    dataset_dir = Path(dataset_dir)
    result = evaluate(prediction_dir, dataset_dir)
    spec = DatasetSpec.from_file(dataset_dir / "dataset.json")
    images, _ = discover_images(dataset_dir / "images", len(spec.channels))
    return write_report(result, output_dir, images={c: files[0] for c, files in images.items()},
                        predictions_dir=prediction_dir, reference_dir=dataset_dir, overwrite=overwrite)
