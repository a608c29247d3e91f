"""Plain U-Net vs ResEnc M vs H3DE-style net on held-out synthetic phantoms.

Each architecture goes through the real pipeline with the same short schedule
(same epochs, iterations per epoch, preset and seed):

======================  ==========================  =====================
row                     ``prepare(planner=...)``    ``TrainingSettings``
======================  ==========================  =====================
plain U-Net             ``default``                 ``architecture='unet'``
ResEnc M                ``resenc-m``                ``architecture='unet'``
H3DE-style              ``default``                 ``architecture='h3de'``
======================  ==========================  =====================

then predicts held-out phantoms (a dataset made with another seed, so no case
is shared) and evaluates them in world millimetres. Printed per row: the
network nnU-Net planned (or H3DENet) and its parameter count, the batch and
patch size from the plans, seconds per training iteration, the first and last
epoch's training loss and the mean radial error (MRE) on the held-out
phantoms. The table is also written to ``<out>/architectures.json``.

    python benchmarks/architectures.py --out bench_output/architectures
    python benchmarks/architectures.py --device cuda --target-spacing 2 --epochs 100 --iterations 50

Timing: "s/it step" is the median of ``LandmarkTrainer.train_step`` (forward,
loss, backward, optimiser step; augmentation excluded), timed by wrapping the
method in this process, without the first epoch (allocator warm-up); "s/it
loop" is the wall time from the start of the first training step to the end of
the last, over the number of steps: augmentation, validation and checkpoints
included, start-up (imports, network build, data set-up) not. The batch size is nnU-Net's
choice per planner: the ResEnc presets allow a batch as large as the whole
training set (``max_dataset_covered = 1``), the default planner caps it at 5%
of the dataset (minimum 2), so on small data a ResEnc iteration sees more
samples and seconds per iteration are not per sample.

Defaults are sized for a CPU: 32^3 phantoms of 3 mm planned at 6 mm (16^3
patches) and the cone preset with a 5-voxel radius, i.e. the preset's 30 mm at
its usual 2 mm voxels (``--cone-radius-mm``). Such runs only show that the three
architectures train and predict under identical conditions and what each costs
per iteration; their MREs, after a few dozen iterations on 6 mm voxels, do not
rank the architectures.

Owed: no GPU was lent to the session that wrote this benchmark, so no
GPU-scale numbers (nnU-Net's full-resolution plans, hundreds of epochs) and no
AFIDs comparison exist yet; both are to be run with ``--device cuda``
(and, for AFIDs, a converted dataset via ``--train-data/--test-data``).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

ROWS = (("plain U-Net", "default", "unet"), ("ResEnc M", "resenc-m", "unet"), ("H3DE-style", "default", "h3de"))


class StepTimer:
    """Times every ``LandmarkTrainer.train_step`` call while active (a context manager)."""

    def __init__(self):
        self.seconds: list = []
        self.epochs: list = []
        self.first_start = self.last_end = None

    def __enter__(self):
        import torch
        from nnlandmark.nnunet.trainer import LandmarkTrainer
        self._cls, self._original = LandmarkTrainer, LandmarkTrainer.train_step
        timer = self

        def timed(trainer, batch):
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()  # CUDA runs asynchronously: time the work, not its launch
            start = time.perf_counter()
            out = timer._original(trainer, batch)
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            timer.last_end = time.perf_counter()
            timer.first_start = start if timer.first_start is None else timer.first_start
            timer.seconds.append(timer.last_end - start)
            timer.epochs.append(trainer.current_epoch)
            return out
        LandmarkTrainer.train_step = timed
        return self

    def __exit__(self, *exc):
        self._cls.train_step = self._original

    def median_after_first_epoch(self) -> float:
        first = min(self.epochs)
        later = [s for s, e in zip(self.seconds, self.epochs) if e != first] or self.seconds
        return statistics.median(later)

    def loop_seconds_per_step(self) -> float:
        """Wall time from the first step's start to the last step's end, per step."""
        return (self.last_end - self.first_start) / len(self.seconds)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def count_parameters(model_dir: Path, architecture: str) -> int:
    """Parameters of the network as the predictor rebuilds it from the model folder."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnlandmark.nnunet.networks import build_network
    plans = json.loads((model_dir / "plans.json").read_text())
    description = json.loads((model_dir / "nnlandmark.json").read_text())
    configuration = PlansManager(plans).get_configuration(description["configuration"])
    network = build_network(architecture, configuration, len(description["channels"]),
                            len(description["landmarks"]))
    return sum(p.numel() for p in network.parameters())


def run_row(name, planner, architecture, args, train_data, test_data, out: Path) -> dict:
    from nnlandmark.evaluation.evaluate import evaluate
    from nnlandmark.inference.predict import predict
    from nnlandmark.planning.project import prepare
    from nnlandmark.training.presets import TrainingSettings
    from nnlandmark.training.train import train

    started = time.time()
    project = prepare(train_data, out / f"project_{planner}", planner=planner, num_processes=args.num_processes,
                      target_spacing=args.target_spacing, progress=False)
    prepare_s = time.time() - started
    configuration = project.plans()["configurations"]["3d_fullres"]
    spacing = min(configuration["spacing"])
    settings = TrainingSettings(preset="cone", configuration="fullres", architecture=architecture,
                                epochs=args.epochs, iterations_per_epoch=args.iterations,
                                val_iterations=args.val_iterations, cone_radius=args.cone_radius_mm / spacing,
                                save_every=args.epochs)
    seed_everything(args.seed)
    started = time.time()
    with StepTimer() as timer:
        # continue_training: a rerun in the same --out reuses a finished fold instead of refusing it
        model = train(project.root, 0, settings, device=args.device, continue_training=True, progress=False)
    train_s = time.time() - started
    curves = json.loads((model / "fold_0" / "training_curves.json").read_text())

    predictions = out / f"predictions_{planner}_{architecture}"
    started = time.time()
    predict(Path(test_data) / "images", predictions, model, folds=[0], device=args.device, overwrite=True,
            progress=False)
    predict_s = time.time() - started
    result = evaluate(predictions, test_data)
    overall = result.summary["overall"]
    return {
        "name": name, "planner": planner, "architecture": architecture, "model": str(model),
        "network": "H3DENet" if architecture == "h3de" else
        configuration["architecture"]["network_class_name"].rsplit(".", 1)[-1],
        "parameters": count_parameters(model, architecture),
        "batch_size": configuration["batch_size"], "patch_size": configuration["patch_size"],
        "spacing_mm": configuration["spacing"], "cone_radius_voxels": settings.cone_radius,
        "s_per_iteration_step": timer.median_after_first_epoch() if timer.seconds else None,
        "s_per_iteration_loop": timer.loop_seconds_per_step() if timer.seconds else None,
        "train_loss_first": curves["train_loss"][0], "train_loss_last": curves["train_loss"][-1],
        "mre_mm": overall["mre_mm"], "median_mm": overall["median_mm"], "n_valid": overall["n_valid"],
        "prepare_s": prepare_s, "train_s": train_s, "predict_s": predict_s,
    }


def format_table(rows: list) -> str:
    headers = ["architecture", "network", "params", "batch", "patch", "s/it step", "s/it loop",
               "loss first->last", "MRE mm", "median mm"]
    lines = []
    for r in rows:
        step = "reused" if r["s_per_iteration_step"] is None else f"{r['s_per_iteration_step']:.2f}"
        loop = "reused" if r["s_per_iteration_loop"] is None else f"{r['s_per_iteration_loop']:.2f}"
        lines.append([r["name"], r["network"], f"{r['parameters'] / 1e6:.2f}M", str(r["batch_size"]),
                      "x".join(map(str, r["patch_size"])), step, loop,
                      f"{r['train_loss_first']:.3f}->{r['train_loss_last']:.3f}", f"{r['mre_mm']:.2f}",
                      f"{r['median_mm']:.2f}"])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]

    def fmt(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(headers), rule] + [fmt(line) for line in lines])


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_output/architectures")
    parser.add_argument("--train-data", help="a dataset folder to train on instead of synthetic phantoms")
    parser.add_argument("--test-data", help="its held-out dataset folder (required with --train-data)")
    parser.add_argument("--train-cases", type=int, default=6)
    parser.add_argument("--test-cases", type=int, default=4)
    parser.add_argument("--phantom-size", type=int, default=32, help="phantom side in voxels")
    parser.add_argument("--phantom-spacing", type=float, default=3.0, help="phantom voxel size in mm")
    parser.add_argument("--target-spacing", type=float, default=6.0, help="mm; 0 = nnU-Net's own choice")
    parser.add_argument("--cone-radius-mm", type=float, default=30.0,
                        help="cone radius in mm, converted to voxels of the planned spacing")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--val-iterations", type=int, default=1)
    parser.add_argument("--architectures", nargs="+", default=[r[0] for r in ROWS],
                        choices=[r[0] for r in ROWS])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared machine)")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args(argv)
    if args.target_spacing == 0:
        args.target_spacing = None
    if bool(args.train_data) != bool(args.test_data):
        parser.error("--train-data and --test-data go together")

    import torch
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.train_data:
        train_data, test_data = Path(args.train_data), Path(args.test_data)
    else:
        from nnlandmark.data.synthetic import make_synthetic_dataset
        train_data, test_data = out / "data" / "train", out / "data" / "test"
        phantom = dict(shape=(args.phantom_size,) * 3, spacing=(args.phantom_spacing,) * 3)
        if not (train_data / "dataset.json").exists():
            make_synthetic_dataset(train_data, n_cases=args.train_cases, seed=0, **phantom)
        if not (test_data / "dataset.json").exists():
            make_synthetic_dataset(test_data, n_cases=args.test_cases, seed=1, **phantom)

    started = time.time()
    rows = []
    for name, planner, architecture in ROWS:
        if name in args.architectures:
            rows.append(run_row(name, planner, architecture, args, train_data, test_data, out))
            print(f"{name}: done after {time.time() - started:.0f} s", flush=True)
    table = format_table(rows)
    print(f"\n{args.epochs} epochs x {args.iterations} iterations, seed {args.seed}, device {args.device}, "
          f"torch threads {args.threads}; {len(list((Path(test_data) / 'images').iterdir()))} held-out cases\n")
    print(table)
    print(f"\ntotal {time.time() - started:.0f} s")
    out.mkdir(parents=True, exist_ok=True)
    (out / "architectures.json").write_text(json.dumps({"arguments": vars(args), "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
