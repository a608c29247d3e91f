"""``nnlandmark <command>``: a thin layer over the Python API.

Every command maps to one function of :mod:`nnlandmark`; errors about the
user's input are printed as ``error: ...`` lines with exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


# registries, each defined once, mirrored here so that --help needs no torch import
PRESET_CHOICES = ("softmax", "cone", "v1")
CONFIGURATION_CHOICES = ("cascade", "fullres")
ARCHITECTURE_CHOICES = ("unet", "h3de")
DECODER_CHOICES = ("mass", "argmax", "local-mean", "quadratic")


def _add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="softmax", choices=PRESET_CHOICES,
                   help="softmax: Gaussian s=1.5 as a distribution over voxels + softmax cross-entropy + Adam "
                        "(default, learns in minutes); cone: the MIDL method, EDT cone r=15 + top-20%% BCE + SGD; "
                        "v1: Gaussian s=4 + MSE + Adam")
    p.add_argument("--configuration", default="cascade", choices=CONFIGURATION_CHOICES,
                   help="cascade: whole scan at a coarse spacing, then full-resolution patches around each "
                        "landmark (default); fullres: full-resolution sliding window (the MIDL method)")
    p.add_argument("--architecture", default="unet", choices=ARCHITECTURE_CHOICES,
                   help="unet: the U-Net nnU-Net planned (plain or ResEnc); h3de: H3DE-style hybrid attention net")
    p.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                   help="fit the schedule to this wall-clock time per fold (all stages together)")
    p.add_argument("--epochs", type=int, default=None,
                   help="default 1000 (the upper limit with --time-budget), or the resumed run's")
    p.add_argument("--iterations", type=int, default=None,
                   help="training iterations per epoch (default 250, 25 with --time-budget, or the resumed run's)")
    p.add_argument("--val-iterations", type=int, default=None,
                   help="validation iterations per epoch (default 50, 3 with --time-budget, or the resumed run's)")
    p.add_argument("--lr", type=float, default=None, help="initial learning rate (default: the preset's)")
    p.add_argument("--contrast-augmentation", type=float, default=None, metavar="P",
                   help="share of training patches whose intensities are remapped through a random curve, for "
                        "models that must work on other contrasts (default 0: off)")
    p.add_argument("--mirror", default="auto", choices=["auto", "on", "off"],
                   help="left-right mirroring augmentation, pairs swapped (auto: on when the dataset has pairs)")


_MIRROR = {"auto": None, "on": True, "off": False}


def _settings(args):
    """Settings from the options; a resumed run keeps its saved schedule unless overridden."""
    from nnlandmark.training.presets import TrainingSettings
    from nnlandmark.training.train import saved_settings
    given = {"preset": args.preset, "architecture": args.architecture, "configuration": args.configuration,
             "epochs": args.epochs, "iterations_per_epoch": args.iterations, "val_iterations": args.val_iterations,
             "time_budget_minutes": args.time_budget, "learning_rate": args.lr, "mirror": _MIRROR[args.mirror],
             "contrast_augmentation": args.contrast_augmentation}
    given = {k: v for k, v in given.items() if v is not None}
    saved = saved_settings(args.project, args.preset, args.architecture, args.configuration) \
        if args.continue_training else {}
    return TrainingSettings(**{**saved, **given})


def _fold(text: str):
    """``--fold``: 'all' or an integer 0-4 (argparse turns the error into a usage message)."""
    if text == "all":
        return "all"
    try:
        fold = int(text)
    except ValueError:
        fold = -1
    if not 0 <= fold <= 4:
        raise argparse.ArgumentTypeError(f"expected 0, 1, 2, 3, 4 or 'all', got {text!r}")
    return fold


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnlandmark", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="validate a dataset folder without doing any work")
    p.add_argument("dataset")

    p = sub.add_parser("prepare", help="validate, export to nnU-Net, fingerprint, plan and preprocess")
    p.add_argument("dataset", help="dataset folder (docs/dataset_layout.md)")
    p.add_argument("-p", "--project", required=True, help="project folder to write into")
    p.add_argument("--planner", default="default", choices=["default", "resenc-m", "resenc-l"])
    p.add_argument("-np", "--num-processes", type=int, default=2)
    p.add_argument("--spacing", type=float, nargs="+", default=None,
                   help="target spacing in mm (one value, or x y z); default: nnU-Net's choice")

    p = sub.add_parser("train", help="train one fold, or all five with --fold all")
    p.add_argument("project")
    p.add_argument("--fold", default=0, type=_fold, help="0-4 or 'all'")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--continue", dest="continue_training", action="store_true",
                   help="resume from the latest checkpoint")
    _add_training_options(p)

    p = sub.add_parser("predict", help="predict landmarks of new images, in world coordinates")
    p.add_argument("-i", "--input", required=True, nargs="+", help="image folder or image files")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("-m", "--model", required=True, help="model folder (or a project folder: its only model)")
    p.add_argument("--folds", nargs="+", type=int, default=[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--step-size", type=float, default=0.5, help="sliding-window step, fraction of the patch")
    p.add_argument("--decoder", default=None, choices=DECODER_CHOICES,
                   help="how a point is read from each heatmap (default: mass for softmax models, else argmax)")
    p.add_argument("--save-heatmaps", action="store_true",
                   help="also write the (first stage's) heatmaps, placed in world space")
    p.add_argument("--mirror", default="auto", choices=["auto", "on", "off"],
                   help="left-right test-time mirroring (auto: when the model was trained with mirroring)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--overwrite", action="store_true")
    group.add_argument("--continue", dest="resume", action="store_true", help="skip cases already predicted")

    p = sub.add_parser("evaluate", help="radial errors, MRE, SDR and biometry against a reference")
    p.add_argument("-p", "--predictions", required=True)
    p.add_argument("-r", "--reference", required=True, help="landmark folder or dataset folder")
    p.add_argument("-o", "--output", help="write evaluation.json, per_case.csv, per_landmark.csv here")
    p.add_argument("--thresholds", nargs="+", type=float, default=[2.0, 2.5, 3.0, 4.0])
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("evaluate-cv", help="predict each fold's validation cases, evaluate them together, "
                                            "calibrate presence thresholds")
    p.add_argument("project")
    p.add_argument("-m", "--model", help="model folder (default: the project's only model)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--decoder", default=None, choices=DECODER_CHOICES,
                   help="default: mass for softmax models, else argmax")
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("export-model", help="zip a model folder (plans, landmark names, checkpoints)")
    p.add_argument("model")
    p.add_argument("zip")
    p = sub.add_parser("import-model", help="unzip an exported model into a folder")
    p.add_argument("zip")
    p.add_argument("folder")

    p = sub.add_parser("convert", help="convert a public benchmark, as downloaded, into the dataset layout")
    p.add_argument("benchmark", help="afids, mml, pddca, feta, lfc or fetal-pose")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("report", help="QC pictures and an HTML report of predictions against a reference")
    p.add_argument("-p", "--predictions", required=True)
    p.add_argument("-r", "--reference", required=True, help="dataset folder (images/ and landmarks/)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("demo", help="synthetic data -> prepare -> short CPU training -> predict -> evaluate")
    p.add_argument("-o", "--output", default="demo_output")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                   help="training time of fold 0 (default 3 minutes)")
    p.add_argument("--epochs", type=int, default=None, help="a fixed schedule instead of the time budget")
    p.add_argument("--iterations", type=int, default=None)
    return parser


def run(args) -> int:
    import nnlandmark as api
    if args.command == "check":
        from nnlandmark.planning.project import check_dataset
        from nnlandmark.training.train import NUM_FOLDS
        ds = check_dataset(args.dataset)  # every check prepare makes, nothing written
        if len(ds.cases) < NUM_FOLDS:
            print(f"warning: {args.dataset}: {len(ds.cases)} cases; training (5-fold cross-validation) "
                  f"needs at least {NUM_FOLDS}", file=sys.stderr)
        print(f"{args.dataset}: OK, {len(ds.cases)} cases, {len(ds.spec.landmarks)} landmarks")
    elif args.command == "prepare":
        project = api.prepare(args.dataset, args.project, planner=args.planner,
                              num_processes=args.num_processes,
                              target_spacing=args.spacing[0] if args.spacing and len(args.spacing) == 1
                              else args.spacing)
        print(f"prepared {project.dataset_name} in {project.root}")
    elif args.command == "train":
        model = api.train(args.project, args.fold, _settings(args), device=args.device,
                          continue_training=args.continue_training)
        print(f"model folder: {model}")
    elif args.command == "predict":
        out = api.predict(args.input, args.output, api.resolve_model(args.model), folds=args.folds,
                          device=args.device, step_size=args.step_size, decoder=args.decoder,
                          save_heatmaps=args.save_heatmaps, overwrite=args.overwrite, resume=args.resume,
                          mirror=_MIRROR[args.mirror])
        print(f"predictions in {out}")
    elif args.command == "evaluate":
        result = api.evaluate(args.predictions, args.reference, thresholds=tuple(args.thresholds),
                              output_dir=args.output, overwrite=args.overwrite)
        print(result.format_table())
    elif args.command == "evaluate-cv":
        result = api.evaluate_cv(args.project, args.output, model_dir=args.model, device=args.device,
                                 decoder=args.decoder, overwrite=args.overwrite)
        print(result.format_table())
    elif args.command == "export-model":
        print(api.export_model(args.model, args.zip))
    elif args.command == "import-model":
        print(api.import_model(args.zip, args.folder))
    elif args.command == "convert":
        from nnlandmark.data.convert import run_converter
        print(run_converter(args.benchmark, args.src, args.dst, seed=args.seed))
    elif args.command == "report":
        print(api.qc_report(args.predictions, args.reference, args.output, overwrite=args.overwrite))
    elif args.command == "demo":
        from nnlandmark.demo import run_demo
        run_demo(args.output, device=args.device, budget_minutes=args.time_budget, epochs=args.epochs,
                 iterations=args.iterations)
    return 0


def _error_lines(error: BaseException) -> list:
    """The ``error: ...`` lines for an exception about the user's input or environment."""
    if isinstance(error, KeyError) and error.args:
        message = str(error.args[0])
    elif isinstance(error, OSError) and error.filename is not None and error.strerror:
        # an OS error raised by the system (not by us with a message): "path: reason"
        message = f"{error.filename}: {error.strerror}"
    else:
        message = str(error)
    return [f"error: {line}" for line in message.splitlines()] or ["error: unknown error"]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from nnlandmark.data.dataset import DatasetError
    from nnlandmark.data.landmarks import LandmarkFileError
    from nnlandmark.inference.model_folder import ModelFolderError
    # OSError covers unwritable or missing paths (including a path under a regular file,
    # NotADirectoryError), which are the user's to fix, not tracebacks
    user_errors = (DatasetError, LandmarkFileError, ModelFolderError, OSError, KeyError, ValueError)
    try:
        return run(args)
    except user_errors as e:
        for line in _error_lines(e):
            print(line, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
