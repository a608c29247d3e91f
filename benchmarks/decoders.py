"""Sub-voxel decoding (and left-right mirroring) on held-out synthetic phantoms.

Trains a short model on synthetic phantoms (or reuses the one already in
``--out``), predicts held-out phantoms once per test-time setting, and decodes
the *same* heatmaps with every decoder, so the decoders are compared on
identical network outputs. Prints the mean radial error (MRE, mm) per decoder
and test-time mirroring setting; also writes it to ``<out>/decoders.json``.

    python benchmarks/decoders.py --out bench_output/decoders --spacing 4
    python benchmarks/decoders.py --out bench_output/decoders_nomirror --spacing 4 --mirror off

The phantoms are 48^3 voxels of 2 mm; ``--spacing`` makes nnU-Net plan a
coarser grid (4 mm: 24^3 voxels, minutes instead of hours on a CPU), where
the heatmaps are decoded. Errors are measured in world mm against the exact
synthetic landmarks.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def heatmaps_per_case(model_dir, images: dict, grids: dict, tta_settings, device: str = "cpu") -> dict:
    """``{tta: {case: (heatmaps, pgrid)}}``: one sliding-window prediction per case and setting."""
    from nnlandmark.data.pairs import left_right_axis, swap_permutation
    from nnlandmark.model.folder import ModelFolder
    description = json.loads((Path(model_dir) / "nnlandmark.json").read_text())
    predictor = ModelFolder(model_dir).predictor([0], device=device,
                                                 mirror_swap=swap_permutation(description["landmarks"], description["pairs"]))
    out = {tta: {} for tta in tta_settings}
    for case, files in images.items():
        data, pgrid = predictor.preprocess(files)
        for tta in tta_settings:
            axis = left_right_axis(grids[case].direction, pgrid.transpose_forward) if tta else None
            out[tta][case] = (predictor.heatmaps(data, mirror_axis=axis), pgrid)
    return out


def radial_errors_mm(heatmaps: dict, grids: dict, references: dict, names, decoder: str) -> np.ndarray:
    """(cases, landmarks) radial errors in mm of one decoder on precomputed heatmaps."""
    from nnlandmark.inference.predict import decode_case
    errors = []
    for case, (hm, pgrid) in heatmaps.items():
        decoded = decode_case(hm, pgrid, grids[case], names, decoder)
        errors.append([np.linalg.norm(decoded[n][0] - references[case].point(n)) for n in names])
    return np.asarray(errors)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_output/decoders")
    parser.add_argument("--train-cases", type=int, default=12)
    parser.add_argument("--test-cases", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--preset", default="cone", choices=["cone", "v1"])
    parser.add_argument("--mirror", default="auto", choices=["auto", "on", "off"],
                        help="left-right mirroring in training (auto: on, the phantoms have pairs)")
    parser.add_argument("--spacing", type=float, default=None, help="target spacing in mm (default: nnU-Net's)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args(argv)

    import nnlandmark as nl
    from nnlandmark.data.dataset import discover_images
    from nnlandmark.data.images import read_image_grid
    from nnlandmark.data.formats import read_landmarks
    from nnlandmark.inference.decoding import DECODERS

    out = Path(args.out)
    started = time.time()
    train_data, test_data = out / "data" / "train", out / "data" / "test"
    if not (train_data / "dataset.json").exists():
        nl.make_synthetic_dataset(train_data, n_cases=args.train_cases, seed=0)
    if not (test_data / "dataset.json").exists():
        nl.make_synthetic_dataset(test_data, n_cases=args.test_cases, seed=1)  # disjoint seeds: held out
    nl.prepare(train_data, out / "project", num_processes=1, target_spacing=args.spacing, progress=False)
    settings = nl.TrainingSettings(preset=args.preset, configuration="fullres", epochs=args.epochs,
                                   iterations_per_epoch=args.iterations,
                                   val_iterations=1,
                                   mirror={"auto": None, "on": True, "off": False}[args.mirror])
    model = nl.train(out / "project", 0, settings, device=args.device, continue_training=True, progress=True)
    trained_with_mirror = json.loads((model / "nnlandmark.json").read_text())["mirror"]
    print(f"model: {model} (trained with mirroring: {trained_with_mirror}); {time.time() - started:.0f} s")

    images, _ = discover_images(test_data / "images", 1)
    grids = {c: read_image_grid(f[0], read_pixels=False) for c, f in images.items()}
    references = {c: read_landmarks(test_data / "landmarks" / f"{c}.json") for c in images}
    names = json.loads((test_data / "dataset.json").read_text())["landmarks"]
    heatmaps = heatmaps_per_case(model, images, grids, (False, True), device=args.device)

    results = {"model": str(model), "trained_with_mirror": trained_with_mirror, "n_test_cases": len(images),
               "mre_mm": {}}
    spacing = json.loads((model / "plans.json").read_text())["configurations"]["3d_fullres"]["spacing"]
    results["decoding_spacing_mm"] = spacing
    print(f"\nMRE (mm) on {len(images)} held-out phantoms, decoded on a {spacing} mm grid; "
          "rows: test-time mirroring")
    print(f"{'TTA':<10}" + "".join(f"{d:>12}" for d in DECODERS))
    for tta, per_case in heatmaps.items():
        row = {d: float(np.mean(radial_errors_mm(per_case, grids, references, names, d))) for d in DECODERS}
        results["mre_mm"]["mirror" if tta else "none"] = row
        print(f"{'mirror' if tta else 'none':<10}" + "".join(f"{row[d]:>12.3f}" for d in DECODERS))
    (out / "decoders.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\ndone in {time.time() - started:.0f} s")
    return results


if __name__ == "__main__":
    main()
