"""``nnlandmark demo``: the whole pipeline on synthetic phantoms, on a CPU in minutes.

Twelve training phantoms and four held-out test phantoms (disjoint seeds),
nnU-Net planning and preprocessing, a short training schedule of fold 0,
prediction of the test phantoms in world coordinates, and the evaluation
table. Rerunning it in the same folder resumes what is already done.
"""
from __future__ import annotations

import time
from pathlib import Path

DEMO_EPOCHS = 25
DEMO_ITERATIONS = 10
N_TRAIN, N_TEST = 12, 4


def run_demo(output="demo_output", device: str = "cpu", epochs: int | None = None,
             iterations: int | None = None, progress: bool = True):
    """Run the demo in ``output``; returns the :class:`EvaluationResult` of the test phantoms."""
    from nnlandmark.data.synthetic import make_synthetic_dataset
    from nnlandmark.evaluation.evaluate import evaluate
    from nnlandmark.inference.predict import predict
    from nnlandmark.planning.project import prepare
    from nnlandmark.training.presets import TrainingSettings
    from nnlandmark.training.train import train

    out = Path(output)
    started = time.time()
    train_data, test_data = out / "data" / "train", out / "data" / "test"
    if not (train_data / "dataset.json").exists():
        make_synthetic_dataset(train_data, n_cases=N_TRAIN, seed=0)
    if not (test_data / "dataset.json").exists():
        make_synthetic_dataset(test_data, n_cases=N_TEST, seed=1)
    prepare(train_data, out / "project", progress=progress)
    settings = TrainingSettings(epochs=epochs or DEMO_EPOCHS, iterations_per_epoch=iterations or DEMO_ITERATIONS,
                                val_iterations=2)
    model = train(out / "project", 0, settings, device=device, continue_training=True, progress=progress)
    predict(test_data / "images", out / "predictions", model, folds=[0], device=device, overwrite=True,
            progress=progress)
    result = evaluate(out / "predictions", test_data, output_dir=out / "evaluation", overwrite=True)
    print(result.format_table())
    print(f"\ndemo finished in {time.time() - started:.0f} s; everything is in {out.resolve()}")
    return result
