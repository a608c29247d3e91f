"""``nnlandmark demo``: the whole pipeline on synthetic phantoms, on a CPU in minutes.

Twelve training phantoms and four held-out test phantoms (disjoint seeds),
nnU-Net planning and preprocessing, fold 0 of the default model (the
softmax cascade) trained for a few minutes of wall clock, prediction of the
test phantoms in world coordinates, and the evaluation table next to the
no-learning baselines (each landmark at its mean training position; at the
image centre). Rerunning it in the same folder resumes what is already done.
"""
from __future__ import annotations

import time
from pathlib import Path

DEMO_BUDGET_MINUTES = 3.0
N_TRAIN, N_TEST = 12, 4


def run_demo(output="demo_output", device: str = "cpu", budget_minutes: float | None = None,
             epochs: int | None = None, iterations: int | None = None, progress: bool = True):
    """Run the demo in ``output``; returns ``(result, baselines)``: the
    :class:`EvaluationResult` of the test phantoms and ``{baseline: EvaluationResult}``.

    ``budget_minutes`` (default DEMO_BUDGET_MINUTES) is fold 0's training time
    (both stages); ``epochs``/``iterations`` give a fixed schedule instead.
    """
    from nnlandmark.data.synthetic import make_synthetic_dataset
    from nnlandmark.evaluation.baselines import write_baseline_predictions
    from nnlandmark.evaluation.evaluate import evaluate
    from nnlandmark.inference.predict import predict
    from nnlandmark.nnunet.console import nnunet_log
    from nnlandmark.planning.project import prepare
    from nnlandmark.training.presets import TrainingSettings
    from nnlandmark import train  # with the learning-curve plots

    out = Path(output)
    started = time.time()
    train_data, test_data = out / "data" / "train", out / "data" / "test"
    if not (train_data / "dataset.json").exists():
        make_synthetic_dataset(train_data, n_cases=N_TRAIN, seed=0)
    if not (test_data / "dataset.json").exists():
        make_synthetic_dataset(test_data, n_cases=N_TEST, seed=1)
    project = prepare(train_data, out / "project", progress=progress)
    if epochs or iterations:
        settings = TrainingSettings(epochs=epochs or 10, iterations_per_epoch=iterations or 25, val_iterations=2)
    else:
        settings = TrainingSettings(time_budget_minutes=budget_minutes or DEMO_BUDGET_MINUTES, val_iterations=2)
    model = train(out / "project", 0, settings, device=device, continue_training=True, progress=progress)
    with nnunet_log(project.log_file):  # one log for the whole demo
        predict(test_data / "images", out / "predictions", model, folds=[0], device=device, overwrite=True,
                progress=progress)
    result = evaluate(out / "predictions", test_data, output_dir=out / "evaluation", overwrite=True)
    baselines = {name: evaluate(folder, test_data)
                 for name, folder in write_baseline_predictions(train_data, test_data / "images",
                                                                out / "baselines").items()}
    print(result.format_table())
    print("\nheld-out MRE (mm): model {:.2f}".format(result.summary["overall"]["mre_mm"]) + "".join(
        f", {name} (no learning) {b.summary['overall']['mre_mm']:.2f}" for name, b in baselines.items()))
    print(f"demo finished in {time.time() - started:.0f} s; everything is in {out.resolve()}")
    return result, baselines
