"""``nnlandmark report``: evaluation plus pictures, in one folder."""
from __future__ import annotations

from pathlib import Path


def qc_report(prediction_dir, dataset_dir, output_dir, overwrite: bool = False) -> Path:
    """Evaluate predictions against a dataset and write ``report.html`` with per-case slice PNGs."""
    from nnlandmark.data.dataset import DatasetSpec, discover_images
    from nnlandmark.data.images import is_picture, read_image
    from nnlandmark.errors import check_writable
    from nnlandmark.evaluation.evaluate import evaluate
    from nnlandmark.report.html import refuse_earlier_report, write_report

    dataset_dir = Path(dataset_dir)
    refuse_earlier_report(output_dir, overwrite)  # before the evaluation and the pictures
    check_writable(output_dir)
    result = evaluate(prediction_dir, dataset_dir)
    spec = DatasetSpec.from_file(dataset_dir / "dataset.json")
    images, _ = discover_images(dataset_dir / "images", len(spec.channels))
    # pictures (PNG/JPEG) take the dataset's spacing, which is not in their files; they are small
    images = {c: read_image(files[0], spec.spacing) if is_picture(files[0]) else files[0]
              for c, files in images.items()}
    return write_report(result, output_dir, images=images,
                        predictions_dir=prediction_dir, reference_dir=dataset_dir, overwrite=overwrite)
