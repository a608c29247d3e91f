"""``nnlandmark <command>``: a thin layer over the Python API.

Every command maps to one function of :mod:`nnlandmark`; errors about the
user's input are printed as ``error: ...`` lines with exit code 2.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path


def _registries() -> dict:
    """The names each choice flag accepts, read from the registries that define them (none of
    these modules imports torch or nnunetv2 at import time, so ``--help`` stays fast)."""
    from nnlandmark.inference.decoding import DECODERS
    from nnlandmark.nnunet.networks import ARCHITECTURES
    from nnlandmark.nnunet.planning import PLANNERS
    from nnlandmark.training.presets import CONFIGURATIONS, HEATMAPS, PRESETS
    from nnlandmark.data.convert import CONVERTERS
    # heatmap: name -> description (argparse takes the names as choices, the help shows both)
    return {"benchmark": tuple(CONVERTERS), "preset": tuple(PRESETS), "configuration": tuple(CONFIGURATIONS),
            "architecture": tuple(ARCHITECTURES), "decoder": tuple(DECODERS), "planner": tuple(PLANNERS),
            "heatmap": dict(HEATMAPS)}


def _add_training_options(p: argparse.ArgumentParser, choices: dict) -> None:
    p.add_argument("--preset", choices=choices["preset"],
                   help="softmax: Gaussian s=1.5 as a distribution over voxels + softmax cross-entropy + Adam "
                        "(default, learns in minutes); cone: the MIDL method, EDT cone r=15 + top-20%% BCE + SGD; "
                        "v1: Gaussian s=4 + MSE + Adam")
    p.add_argument("--configuration", choices=choices["configuration"],
                   help="cascade: whole scan at a coarse spacing, then full-resolution patches around each "
                        "landmark (default); fullres: full-resolution sliding window (the MIDL method)")
    p.add_argument("--architecture", choices=choices["architecture"],
                   help="unet: the U-Net nnU-Net planned, plain or ResEnc (default); h3de: H3DE-style hybrid "
                        "attention net")
    p.add_argument("--heatmap", choices=tuple(choices["heatmap"]),
                   help="the target's shape (default: the preset's own): "
                        + "; ".join(f"{name}: {text}" for name, text in choices["heatmap"].items()))
    p.add_argument("--sigma", type=float, nargs="+", default=None, metavar="VOXELS",
                   help="the target's spread (standard deviation per axis, in voxels of each stage's grid): one "
                        "value, or one per landmark in dataset.json order (default: the preset's, 1.5 for softmax, "
                        "4 for v1); with --heatmap adaptive, where the learned sigmas start")
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


def _settings(args) -> dict:
    """The training settings the user gave (the API fills in the rest)."""
    return {"preset": args.preset, "architecture": args.architecture, "configuration": args.configuration,
            "epochs": args.epochs, "iterations_per_epoch": args.iterations, "val_iterations": args.val_iterations,
            "time_budget_minutes": args.time_budget, "learning_rate": args.lr, "mirror": _MIRROR[args.mirror],
            "contrast_augmentation": args.contrast_augmentation, "heatmap": args.heatmap,
            "gaussian_sigma": args.sigma}


def _biometry(items):
    """``--biometry width=a,b ...`` as ``{"width": ["a", "b"]}`` (None when not given)."""
    if items is None:
        return None
    out = {}
    for item in items:
        name, _, pair = item.partition("=")
        ends = pair.split(",")
        if not name or len(ends) != 2 or not all(ends):
            from nnlandmark.errors import InvalidInput
            raise InvalidInput(f"--biometry: expected NAME=A,B (two landmark names), got {item!r}")
        out[name] = ends
    return out


def _fold(text: str):
    """``--fold``: 'all' or a fold of nnU-Net's cross-validation (argparse turns the error into a usage message)."""
    from nnlandmark.nnunet.paths import NUM_FOLDS
    if text == "all":
        return "all"
    try:
        fold = int(text)
    except ValueError:
        fold = -1
    if not 0 <= fold < NUM_FOLDS:
        raise argparse.ArgumentTypeError(f"expected {', '.join(map(str, range(NUM_FOLDS)))} or 'all', got {text!r}")
    return fold


def build_parser() -> argparse.ArgumentParser:
    from nnlandmark.nnunet.paths import NUM_FOLDS
    choices = _registries()
    parser = argparse.ArgumentParser(prog="nnlandmark", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="validate a dataset folder without doing any work")
    p.add_argument("dataset")

    p = sub.add_parser("prepare", help="validate, export to nnU-Net, fingerprint, plan and preprocess")
    p.add_argument("dataset", help="dataset folder (docs/dataset_layout.md)")
    p.add_argument("-p", "--project", required=True, help="project folder to write into")
    p.add_argument("--planner", default="default", choices=choices["planner"],
                   help="nnU-Net's planner: default (plain U-Net) or the residual-encoder presets")
    p.add_argument("-np", "--num-processes", type=int, default=2)
    p.add_argument("--spacing", type=float, nargs="+", default=None,
                   help="target spacing in mm (one value, or x y z); default: nnU-Net's choice")

    p = sub.add_parser("train", help="train one fold, or all five with --fold all")
    p.add_argument("project")
    p.add_argument("--fold", default=0, type=_fold, help=f"0-{NUM_FOLDS - 1} or 'all'")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--continue", dest="continue_training", action="store_true",
                   help="resume from the latest checkpoint")
    p.add_argument("--num-gpus", type=int, default=1, metavar="N",
                   help="with --device cuda: train on N GPUs with nnU-Net's DDP (one process per GPU, each "
                        "planned batch split across them)")
    _add_training_options(p, choices)

    p = sub.add_parser("predict", help="predict landmarks of new images, in world coordinates",
                       epilog="Each case gets <case>.json (world LPS mm, voxel index, score, present), <case>.mrk.json "
                              "for 3D Slicer, and a row per landmark in predictions.csv. The score is a confidence "
                              "to rank and threshold, not a calibrated probability: for softmax models the share of "
                              "the landmark's probability within 2 voxels of the point (0-1), for cone and v1 models "
                              "the sigmoid heatmap's peak. 'evaluate-cv' calibrates per-landmark presence "
                              "thresholds on it, which later predictions apply ('present': false below them). "
                              "uncertainty_mm: how far, in mm, the model's own distribution (softmax) or heatmap "
                              "blob (cone, v1) spreads around the point (root-mean-square distance, the width of "
                              "the training target taken out); a relative measure, not a guarantee. radius_95_mm: the radius around the point that holds the "
                              "true landmark in 95% of cases, calibrated by 'evaluate-cv' on the model's "
                              "cross-validation predictions (scale x uncertainty_mm); null until the model is "
                              "calibrated. Both are in the case JSON, predictions.csv and each Slicer control "
                              "point's description.")
    p.add_argument("-i", "--input", required=True, nargs="+", help="image folder or image files")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("-m", "--model", required=True, help="model folder (or a project folder: its only model)")
    p.add_argument("--folds", nargs="+", type=int, default=[0], help="folds whose outputs are averaged")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--step-size", type=float, default=0.5,
                   help="sliding-window step as a fraction of the patch, in (0, 1] (default 0.5)")
    p.add_argument("--decoder", default=None, choices=choices["decoder"],
                   help="how a point is read from each heatmap (default: mass for softmax models, else argmax)")
    p.add_argument("--save-heatmaps", action="store_true",
                   help="also write the (first stage's) heatmaps, placed in world space")
    p.add_argument("--mirror", default="auto", choices=["auto", "on", "off"],
                   help="left-right test-time mirroring (auto: when the model was trained with mirroring)")
    p.add_argument("--no-shape-prior", dest="shape_prior", action="store_false",
                   help="cascade: do not look again for a landmark whose global estimate lies far from where "
                        "the training shapes, fitted to the other landmarks, put it")
    p.add_argument("--spacing", type=float, nargs="+", default=None, metavar="MM",
                   help="pixel spacing of PNG/JPEG inputs, one or two numbers (x y) in mm (default: the "
                        "training dataset's 'spacing', else 1)")
    p.add_argument("--num-parts", type=int, default=1, metavar="N",
                   help="split the cases into N parts (for several machines or GPUs, e.g. a SLURM array); "
                        "with --part-id K this run predicts every N-th case (sorted) from the K-th on")
    p.add_argument("--part-id", type=int, default=0, metavar="K", help="which part this run predicts (0 ... N-1)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--overwrite", action="store_true")
    group.add_argument("--continue", dest="resume", action="store_true", help="skip cases already predicted")

    p = sub.add_parser("merge-predictions", help="rebuild predictions.csv of a prediction folder (after the "
                                                  "parts of a run) and say which cases are still missing")
    p.add_argument("folder")

    p = sub.add_parser("evaluate", help="radial errors, MRE, SDR and biometry against a reference")
    p.add_argument("-p", "--predictions", required=True)
    p.add_argument("-r", "--reference", required=True, help="landmark folder or dataset folder")
    p.add_argument("-o", "--output", help="write evaluation.json, per_case.csv, per_landmark.csv here")
    p.add_argument("--thresholds", nargs="+", type=float, default=[2.0, 2.5, 3.0, 4.0],
                   help="SDR thresholds in mm (default 2 2.5 3 4)")
    p.add_argument("--landmarks", nargs="+", default=None, metavar="NAME",
                   help="evaluate these landmarks (default: the reference dataset's dataset.json, else all found)")
    p.add_argument("--biometry", nargs="+", default=None, metavar="NAME=A,B",
                   help="distances to compare, e.g. width=left_ear,right_ear (default: the dataset's biometry)")
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("evaluate-cv", help="predict each fold's validation cases, evaluate them together, "
                                            "calibrate presence thresholds and the uncertainty radius")
    p.add_argument("project")
    p.add_argument("-m", "--model", help="model folder (default: the project's only model)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--decoder", default=None, choices=choices["decoder"],
                   help="default: mass for softmax models, else argmax")
    p.add_argument("--coverage", type=float, default=0.95, metavar="C",
                   help="fraction of cases whose true landmark the calibrated radius must hold (default 0.95: "
                        "prediction then writes radius_95_mm = scale x uncertainty_mm, the scale per landmark the "
                        "split-conformal quantile of error / uncertainty_mm over the cross-validation predictions)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--overwrite", action="store_true", help="replace an earlier run's outputs")
    group.add_argument("--continue", dest="resume", action="store_true",
                       help="keep the cases an earlier run predicted and predict the rest")

    p = sub.add_parser("export-model", help="zip a model folder (plans, landmark names, checkpoints)")
    p.add_argument("model")
    p.add_argument("zip")
    p = sub.add_parser("import-model", help="unzip an exported model into a folder")
    p.add_argument("zip")
    p.add_argument("folder")

    p = sub.add_parser("convert", help="convert a public benchmark, as downloaded, into the dataset layout")
    p.add_argument("benchmark", choices=choices["benchmark"])
    p.add_argument("src", help="the benchmark's folder as downloaded (never written to)")
    p.add_argument("dst", help="new dataset folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/test split where the benchmark has none")
    p.add_argument("--complete-only", action="store_true", default=None,
                   help="mml: keep only cases with every landmark annotated")
    p.add_argument("--index-base", type=int, choices=[0, 1], default=None,
                   help="fetal-pose: whether the published voxel indices count from 0 or 1 (default 0)")
    p.add_argument("--ground-truth", choices=["mean", "senior", "junior"], default=None,
                   help="isbi2015: the mean of the two doctors' points (default) or one doctor's")

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
    for command in sub.choices.values():
        _add_verbosity_options(command)
    return parser


def _add_verbosity_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true",
                       help="no progress bars, and the line naming nnU-Net's log not shown: results, warnings "
                            "and errors only")
    group.add_argument("-v", "--verbose", action="store_true",
                       help="nnU-Net's own messages on the console (by default they go to a log file, named on "
                            "the console: PROJECT/logs/nnunet.log, or for predict a file in the temporary folder)")


def run(args) -> int:
    import nnlandmark as api
    from nnlandmark.nnunet import console
    with console.at_verbosity(console.QUIET if args.quiet else console.VERBOSE if args.verbose else console.NORMAL):
        return _run(args, api, progress=not args.quiet)


def _run(args, api, progress: bool) -> int:
    if args.command == "check":
        from nnlandmark.planning.project import check_dataset, dataset_warnings, orientation_summary
        ds = check_dataset(args.dataset, progress=progress)  # every check prepare makes, nothing written
        for line in dataset_warnings(ds):
            print(f"warning: {line}", file=sys.stderr)
        print(f"{args.dataset}: OK, {len(ds.cases)} cases, {len(ds.spec.landmarks)} landmarks")
        print(orientation_summary(ds.orientations()))
    elif args.command == "prepare":
        project = api.prepare(args.dataset, args.project, planner=args.planner,
                              num_processes=args.num_processes, target_spacing=args.spacing, progress=progress)
        from nnlandmark.planning.project import orientation_summary
        print(orientation_summary(project.orientations, project.orientation))
        print(f"prepared {project.dataset_name} in {project.root}")
    elif args.command == "train":
        model = api.train(args.project, args.fold, _settings(args), device=args.device,
                          continue_training=args.continue_training, num_gpus=args.num_gpus, progress=progress)
        print(f"model folder: {model}")
    elif args.command == "predict":
        out = api.predict(args.input, args.output, args.model, folds=args.folds,
                          device=args.device, step_size=args.step_size, decoder=args.decoder,
                          save_heatmaps=args.save_heatmaps, overwrite=args.overwrite, resume=args.resume,
                          mirror=_MIRROR[args.mirror], shape_prior=args.shape_prior,
                          num_parts=args.num_parts, part_id=args.part_id,
                          spacing=args.spacing[0] if args.spacing and len(args.spacing) == 1 else args.spacing,
                          progress=progress)
        print(f"predictions in {out}")
    elif args.command == "merge-predictions":
        from nnlandmark.inference.outputs import SUMMARY_FILE, merge_predictions
        listed, missing = merge_predictions(args.folder)
        print(f"{Path(args.folder) / SUMMARY_FILE}: {len(listed)} case(s)")
        if missing:
            print(f"warning: {len(missing)} case(s) of the run not predicted yet: {', '.join(missing[:10])}"
                  + (", ..." if len(missing) > 10 else ""), file=sys.stderr)
            return 1
    elif args.command == "evaluate":
        result = api.evaluate(args.predictions, args.reference, landmark_names=args.landmarks,
                              thresholds=tuple(args.thresholds), biometry=_biometry(args.biometry),
                              output_dir=args.output, overwrite=args.overwrite)
        print(result.format_table())
    elif args.command == "evaluate-cv":
        result = api.evaluate_cv(args.project, args.output, model_dir=args.model, device=args.device,
                                 decoder=args.decoder, overwrite=args.overwrite, resume=args.resume,
                                 coverage=args.coverage, progress=progress)
        print(result.format_table())
    elif args.command == "export-model":
        print(api.export_model(args.model, args.zip))
    elif args.command == "import-model":
        print(api.import_model(args.zip, args.folder))
    elif args.command == "convert":
        from nnlandmark.data.convert import run_converter
        options = {"complete_only": args.complete_only, "index_base": args.index_base,
                   "ground_truth": args.ground_truth}
        print(run_converter(args.benchmark, args.src, args.dst, seed=args.seed,
                            **{k: v for k, v in options.items() if v is not None}))
    elif args.command == "report":
        print(api.qc_report(args.predictions, args.reference, args.output, overwrite=args.overwrite))
    elif args.command == "demo":
        from nnlandmark.demo import run_demo
        run_demo(args.output, device=args.device, budget_minutes=args.time_budget, epochs=args.epochs,
                 iterations=args.iterations, progress=progress)
    return 0


def _error_lines(error: BaseException) -> list:
    """The ``error: ...`` lines for an exception about the user's input or environment."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        # raised by the system (not by us with a message): "path: reason"
        message = f"{error.filename}: {error.strerror}"
    else:
        message = str(error)
    return [f"error: {line}" for line in message.splitlines()] or ["error: unknown error"]


def _is_user_error(error: BaseException) -> bool:
    """Ours (:class:`UserError`), or an error the system raised about a path (missing,
    not writable, disk full), which the user fixes. Anything else is a bug: traceback."""
    from nnlandmark.errors import UserError
    return isinstance(error, UserError) or (isinstance(error, OSError) and error.filename is not None)


_RESUME_HINTS = {
    "prepare": "what is written is kept; run the same command again to finish it",
    "train": "checkpoints written so far are kept; resume with 'nnlandmark train PROJECT --fold N --continue'",
    "predict": "cases already written are kept; resume with the same command and --continue",
    "evaluate-cv": "predictions written so far are kept; run the same command with --overwrite to start again",
    "demo": "what is done is kept; run the same command again to resume",
}


def _show_warning(message, category, filename, lineno, file=None, line=None, _default=warnings.showwarning):
    """nnlandmark's own warnings as ``warning: <message>`` lines, like the errors; other packages'
    warnings as Python shows them (with their source, which may matter)."""
    if str(filename).startswith(str(Path(__file__).parent)):
        print(f"warning: {message}", file=file or sys.stderr)
    else:
        _default(message, category, filename, lineno, file, line)


def main(argv=None) -> int:
    from nnlandmark.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return run(args)
    except KeyboardInterrupt:
        hint = _RESUME_HINTS.get(args.command)
        print("\ninterrupted" + (f": {hint}" if hint else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        if not _is_user_error(e):
            raise
        for line in _error_lines(e):
            print(line, file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
