"""landmarker 0.4.1 baseline on a dataset written by ``make_data.py``.

Runs in the separate landmarker virtual environment (``setup_landmarker_venv.sh``), not in
nnlandmark's: landmarker, MONAI and CPU torch are installed there, plus nnlandmark itself
without dependencies for coordinate conversion and landmark I/O.

What is landmarker's and what is ours
-------------------------------------
The set-up follows landmarker's own 3D heatmap-regression example (whole volume resized to
one fixed array size, Gaussian target heatmaps, a MONAI 3D U-Net, binary cross-entropy on the
logits, coordinates decoded from ``sigmoid(logits)``):

* targets: :class:`landmarker.heatmap.GaussianHeatmapGenerator` (3D, fixed ``sigma`` voxels,
  ``gamma=None`` so every peak is 1);
* network: :class:`monai.networks.nets.UNet` (3D, channels 16-256, 2 residual units);
* decoding: :func:`landmarker.heatmap.decoder.heatmap_to_coord`, by default with
  ``local_soft_argmax`` (sub-voxel; applied to sigmoid outputs in 0..1, where its
  ``exp(10 * h)`` cannot overflow, unlike softmax on raw logits); ``--decoder argmax`` is
  the example's choice;
* metrics: :func:`landmarker.metrics.point_error` and :func:`landmarker.metrics.sdr`.

Ours (with the reason):

* Data loading and resizing. ``landmarker.data`` imports torchvision, which fails next to CPU
  torch, and its 3D ``resize_with_pad`` pads the image by half the amount it shifts the
  landmarks by (checked with 0.4.1: a bright voxel and its landmark end up 2.5 voxels apart
  after padding a 40x80x80 volume to 64^3). So every case is resampled here with SimpleITK
  onto a fixed-size, aspect-preserving grid (isotropic spacing, same orientation, centred on
  the image) and landmarks are mapped with ``nnlandmark.geometry``: exact, no torchvision.
* Augmentation: the fixed grid is given a random pose per training sample (rotation about a
  random axis up to 15 degrees, per-axis scale 0.9-1.1, shift up to 10 voxels; the ranges of
  landmarker's 2D tutorials' ``RandAffined``), so image and landmarks move together exactly.
* Targets are evaluated by the generator only in a cube of half-width ``ceil(4 sigma)``
  around each landmark and pasted into a zero volume: the full-volume call costs seconds per
  sample on CPU, and the Gaussian is below exp(-8) outside the cube.
* Optimiser: Adam (lr 1e-3) with a polynomial decay over the wall-clock budget, because
  training stops at a time limit rather than after a number of epochs.

Outputs (``--out``)
-------------------
``predictions/<case>.json``
    nnlandmark's prediction format: ``{name: {"world_lps_mm", "voxel_index", "score",
    "present"}}``; ``voxel_index`` is the nearest voxel of the case's own image,
    ``score`` the peak of ``sigmoid(logits)``.
``timings.json``
    training seconds and iterations, prediction seconds per case, peak resident memory.
``metrics.json``
    landmarker's point error (MRE) and SDR on the test split, from world coordinates (mm).
``model.pt``
    the trained weights.
``predictions_<decoder>/<case>.json``
    with ``--extra-decoders``: the same heatmaps read by another decoder (same format).

Usage::

    benchmarks/afids_template/work/venv_landmarker/bin/python \\
        benchmarks/afids_template/run_landmarker.py --data DATA --out OUT --budget-minutes 30
    ... --smoke   # 2 train cases, 1 test case, 32x48x32 grid, about a minute
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    import torch
    from landmarker.heatmap import GaussianHeatmapGenerator
    from landmarker.heatmap.decoder import heatmap_to_coord
    from landmarker.metrics import point_error, sdr
    from monai.networks.nets import UNet
except ImportError as exc:  # pragma: no cover - wrong interpreter
    sys.exit(f"run_landmarker.py needs the landmarker venv (setup_landmarker_venv.sh): {exc}")

import SimpleITK as sitk

from nnlandmark.data.formats import read_landmarks, write_prediction_json
from nnlandmark.data.landmarks import Landmarks
from nnlandmark.geometry import (ImageGrid, array_to_itk_index, index_to_world, itk_to_array_index,
                                 nearest_voxel, world_to_index)

#: Radii (mm) at which the success detection rate is reported.
SDR_RADII_MM = (2.0, 2.5, 3.0, 4.0, 8.0)


@dataclass
class Case:
    """One case in memory: its image, its grid and its landmarks (LPS mm, NaN if missing)."""

    name: str
    image: sitk.Image
    grid: ImageGrid
    points: np.ndarray  # (n_landmarks, 3)


def load_cases(data_dir: Path, names: list, case_names: list) -> list:
    """Read images (``images/<case>.*``) and landmarks (``landmarks/<case>.json``)."""
    cases = []
    for case in case_names:
        matches = sorted((data_dir / "images").glob(f"{case}.*"))
        if not matches:
            raise FileNotFoundError(f"no image for case {case} in {data_dir / 'images'}")
        image = sitk.ReadImage(str(matches[0]), sitk.sitkFloat32)
        lm_path = data_dir / "landmarks" / f"{case}.json"
        points = read_landmarks(lm_path).as_array(names) if lm_path.is_file() \
            else np.full((len(names), 3), np.nan)
        cases.append(Case(case, image, ImageGrid.from_image(image), points))
    return cases


# --------------------------------------------------------------------------- fixed grid
def fit_grid(grid: ImageGrid, dim_zyx) -> ImageGrid:
    """A grid of array shape ``dim_zyx`` holding the whole image, aspect ratio preserved.

    Same orientation as the image; isotropic spacing just large enough for the image's
    largest extent relative to ``dim``; centred on the image centre. This is what
    landmarker's resize-with-pad intends, done in world space.
    """
    size = np.asarray(dim_zyx, float)[::-1]                      # ITK order (i, j, k)
    extent = np.asarray(grid.size, float) * np.asarray(grid.spacing)
    spacing = float(np.max(extent / size))
    centre_index = (np.asarray(grid.size, float) - 1) / 2
    centre = index_to_world(centre_index, grid)
    origin = centre - grid.direction @ (spacing * (size - 1) / 2)
    return ImageGrid(size=size.astype(int), spacing=(spacing,) * 3, origin=origin,
                     direction=grid.direction)


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix by ``angle`` (radians) about unit vector ``axis`` (Rodrigues)."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def augment_grid(grid: ImageGrid, rng: np.random.Generator, max_rotation_deg: float = 15.0,
                 scale_range=(0.9, 1.1), max_shift_voxels: float = 10.0) -> ImageGrid:
    """Random pose of a sampling grid about its centre (rotation, per-axis scale, shift).

    Sampling the image on a moved grid is the same as moving the image the other way; as the
    landmarks are mapped through the same grid, they stay exact.
    """
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    rot = _rotation(axis, np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg)))
    spacing = np.asarray(grid.spacing) * rng.uniform(*scale_range, size=3)
    direction = rot @ grid.direction
    centre_index = (np.asarray(grid.size, float) - 1) / 2
    centre = index_to_world(centre_index, grid)
    shift = grid.direction @ (rng.uniform(-max_shift_voxels, max_shift_voxels, size=3) * np.asarray(grid.spacing))
    origin = centre + shift - direction @ (spacing * centre_index)
    return ImageGrid(size=grid.size, spacing=spacing, origin=origin, direction=direction)


def sample(case: Case, grid: ImageGrid) -> np.ndarray:
    """The case's image on ``grid`` as a (D, H, W) float32 array scaled to 0..1.

    Linear interpolation, 0 outside the image; min-max scaling like landmarker's example
    (MONAI ``ScaleIntensity``).
    """
    ref = sitk.Image([int(s) for s in grid.size], sitk.sitkFloat32)
    ref.SetSpacing(grid.spacing)
    ref.SetOrigin(grid.origin)
    ref.SetDirection(grid.direction.ravel().tolist())
    out = sitk.Resample(case.image, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(out)
    lo, hi = float(arr.min()), float(arr.max())
    return (arr - lo) / max(hi - lo, 1e-6)


def points_to_array_index(points: np.ndarray, grid: ImageGrid) -> np.ndarray:
    """LPS points (n, 3) -> continuous array indices (z, y, x) on ``grid`` (landmarker's order)."""
    return itk_to_array_index(world_to_index(points, grid))


def array_index_to_points(index: np.ndarray, grid: ImageGrid) -> np.ndarray:
    """Array indices (z, y, x) on ``grid`` -> LPS points."""
    return index_to_world(array_to_itk_index(index), grid)


# --------------------------------------------------------------------------- targets
class LocalHeatmaps:
    """Gaussian target heatmaps from landmarker's generator, evaluated near each landmark.

    The generator is built for a cube of side ``2r + 1``, ``r = ceil(4 sigma)``; every
    landmark's Gaussian is computed in the cube around its nearest voxel and pasted into the
    (clipped) full volume. Values outside the cube (< exp(-8)) are left at 0. Landmarks that
    are missing (NaN) give an all-zero channel.
    """

    def __init__(self, n_landmarks: int, sigma: float, dim_zyx):
        self.r = int(math.ceil(4 * sigma))
        self.side = 2 * self.r + 1
        self.dim = tuple(int(d) for d in dim_zyx)
        self.generator = GaussianHeatmapGenerator(
            nb_landmarks=n_landmarks, sigmas=sigma, gamma=None,
            heatmap_size=(self.side,) * 3, learnable=False)

    def __call__(self, index_zyx: np.ndarray) -> torch.Tensor:
        n = index_zyx.shape[0]
        out = torch.zeros((n, *self.dim))
        valid = np.all(np.isfinite(index_zyx), axis=1)
        base = np.where(valid[:, None], np.floor(np.nan_to_num(index_zyx) + 0.5).astype(int) - self.r, 0)
        local = torch.as_tensor(np.nan_to_num(index_zyx) - base, dtype=torch.float32)
        with torch.no_grad():
            cubes = self.generator(local.unsqueeze(0))[0]            # (n, side, side, side)
        for c in np.flatnonzero(valid):
            lo = base[c]
            src, dst = [], []
            for axis in range(3):
                a, b = max(lo[axis], 0), min(lo[axis] + self.side, self.dim[axis])
                if a >= b:
                    break
                dst.append(slice(a, b))
                src.append(slice(a - lo[axis], b - lo[axis]))
            else:
                out[(c, *dst)] = cubes[(c, *src)]
        return out


# --------------------------------------------------------------------------- model
def build_model(n_landmarks: int) -> torch.nn.Module:
    """MONAI's 3D U-Net: 5 levels (16-256 channels), 2 residual units, instance norm."""
    return UNet(spatial_dims=3, in_channels=1, out_channels=n_landmarks,
                channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2,
                norm="instance")


def train(model, cases: list, names: list, args, rng: np.random.Generator) -> dict:
    """Train until the wall-clock budget is used up; returns a summary of the run."""
    targets = LocalHeatmaps(len(names), args.sigma, args.dim)
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    criterion = torch.nn.BCEWithLogitsLoss()
    fixed = [fit_grid(c.grid, args.dim) for c in cases]
    budget = args.budget_minutes * 60.0
    losses, iteration = [], 0
    model.train()
    t0 = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - t0
        if iteration > 0 and elapsed >= budget:
            break
        for group in optimiser.param_groups:        # poly decay over the time budget
            group["lr"] = args.lr * (1 - min(elapsed / budget, 0.99)) ** 0.9
        images, heatmaps = [], []
        for i in rng.choice(len(cases), size=args.batch_size, replace=len(cases) < args.batch_size):
            grid = augment_grid(fixed[i], rng) if args.augment else fixed[i]
            images.append(torch.from_numpy(sample(cases[i], grid))[None])
            heatmaps.append(targets(points_to_array_index(cases[i].points, grid)))
        x, y = torch.stack(images), torch.stack(heatmaps)
        optimiser.zero_grad(set_to_none=True)
        loss = criterion(model(x), y)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        iteration += 1
        if iteration % args.log_every == 0 or iteration == 1:
            print(f"  it {iteration:5d}  {time.perf_counter() - t0:7.1f} s  loss {np.mean(losses[-args.log_every:]):.5f}",
                  flush=True)
    seconds = time.perf_counter() - t0
    return {"train_seconds": seconds, "iterations": iteration,
            "seconds_per_iteration": seconds / max(iteration, 1),
            "final_loss": float(np.mean(losses[-10:])) if losses else None}


def decode_heatmaps(prob: torch.Tensor, grid: ImageGrid, case: Case, names: list, decoder: str) -> tuple[Landmarks, dict]:
    """Sigmoid heatmaps (1, n, z, y, x) on ``grid`` -> (LPS landmarks, nearest voxel of the case's image)."""
    coords = heatmap_to_coord(prob, method=decoder, spatial_dims=3)[0].numpy()   # (n, 3) z, y, x
    world = array_index_to_points(coords.astype(float), grid)
    points = {n: world[i] for i, n in enumerate(names)}
    voxel = {n: nearest_voxel(world_to_index(world[i], case.grid)) for i, n in enumerate(names)}
    return Landmarks(points=points), voxel


@torch.no_grad()
def predict_case(model, case: Case, names: list, args) -> tuple[Landmarks, dict, dict, tuple]:
    """Predict one case -> (LPS landmarks, nearest voxel of the case's image, peak score, (heatmaps, grid)).

    The heatmaps and their grid are returned so that ``--extra-decoders`` can decode them
    again without a second forward pass.
    """
    grid = fit_grid(case.grid, args.dim)
    x = torch.from_numpy(sample(case, grid))[None, None]
    prob = torch.sigmoid(model(x))
    landmarks, voxel = decode_heatmaps(prob, grid, case, names, args.decoder)
    score = prob.flatten(2).max(-1).values[0].numpy()
    scores = {n: float(score[i]) for i, n in enumerate(names)}
    return landmarks, voxel, scores, (prob, grid)


def evaluate(truth: np.ndarray, pred: np.ndarray, names: list) -> dict:
    """landmarker's point error and SDR from world coordinates (mm), NaN truths skipped."""
    t = torch.as_tensor(truth, dtype=torch.float32)
    p = torch.as_tensor(pred, dtype=torch.float32)
    per = point_error(t, p, reduction="none").numpy()                # (cases, landmarks)
    rates = sdr(list(SDR_RADII_MM), t, p, nanmean=True)
    return {"mre_mm": float(np.nanmean(per)), "median_mm": float(np.nanmedian(per)),
            "max_mm": float(np.nanmax(per)),
            "sdr": {f"{r:g}mm": float(v) for r, v in rates.items()},
            "per_landmark_mre_mm": {n: float(np.nanmean(per[:, i])) for i, n in enumerate(names)}}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="dataset written by make_data.py")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--budget-minutes", type=float, default=30.0, help="wall-clock training time")
    ap.add_argument("--dim", type=int, nargs=3, default=(96, 112, 96), metavar=("D", "H", "W"),
                    help="fixed array size (z y x) every case is resampled to; multiples of 16")
    ap.add_argument("--sigma", type=float, default=2.0, help="target Gaussian sigma, voxels of the fixed grid")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--decoder", default="local_soft_argmax", choices=["local_soft_argmax", "argmax"])
    ap.add_argument("--extra-decoders", nargs="*", default=[], choices=["local_soft_argmax", "argmax"],
                    help="also write predictions_<decoder>/ decoded from the same heatmaps "
                         "(not timed separately, not in metrics.json)")
    ap.add_argument("--no-augment", dest="augment", action="store_false")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--smoke", action="store_true",
                    help="2 train cases, 1 test case, 32x48x32 grid, 0.5 min budget")
    args = ap.parse_args(argv)
    if any(d % 16 for d in args.dim):
        ap.error("--dim values must be multiples of 16 (four 2x downsamplings)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.smoke:
        args.dim, args.budget_minutes, args.log_every = (32, 48, 32), min(args.budget_minutes, 0.5), 5
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    dataset = json.loads((args.data / "dataset.json").read_text())
    splits = json.loads((args.data / "splits.json").read_text())
    names = dataset["landmarks"]
    train_names, test_names = splits["train"], splits["test"]
    if args.smoke:
        train_names, test_names = train_names[:2], test_names[:1]
    out = args.out
    (out / "predictions").mkdir(parents=True, exist_ok=True)

    print(f"landmarker baseline: {len(train_names)} train / {len(test_names)} test cases, "
          f"grid {tuple(args.dim)}, budget {args.budget_minutes} min, {torch.get_num_threads()} threads")
    train_cases = load_cases(args.data, names, train_names)
    model = build_model(len(names))
    summary = train(model, train_cases, names, args, rng)
    torch.save(model.state_dict(), out / "model.pt")
    del train_cases

    model.eval()
    predict_seconds, truths, preds = {}, [], []
    for case in load_cases(args.data, names, test_names):
        t0 = time.perf_counter()
        landmarks, voxel, scores, (prob, grid) = predict_case(model, case, names, args)
        write_prediction_json(landmarks, out / "predictions" / f"{case.name}.json",
                              voxel_index=voxel, score=scores)
        predict_seconds[case.name] = time.perf_counter() - t0
        for decoder in args.extra_decoders:          # after the timing: it is the primary decoder's
            extra, extra_voxel = decode_heatmaps(prob, grid, case, names, decoder)
            (out / f"predictions_{decoder}").mkdir(exist_ok=True)
            write_prediction_json(extra, out / f"predictions_{decoder}" / f"{case.name}.json",
                                  voxel_index=extra_voxel, score=scores)
        truths.append(case.points)
        preds.append(landmarks.as_array(names))

    metrics = evaluate(np.stack(truths), np.stack(preds), names) if truths else {}
    timings = {
        **summary,
        "predict_seconds": predict_seconds,
        "predict_seconds_mean": float(np.mean(list(predict_seconds.values()))) if predict_seconds else None,
        # ru_maxrss is in kilobytes on Linux
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "threads": torch.get_num_threads(), "device": "cpu",
        "config": {"dim": list(args.dim), "sigma_voxels": args.sigma, "lr": args.lr,
                   "batch_size": args.batch_size, "decoder": args.decoder,
                   "extra_decoders": list(args.extra_decoders), "augment": args.augment,
                   "budget_minutes": args.budget_minutes, "seed": args.seed, "smoke": args.smoke,
                   "n_train": len(train_names), "n_test": len(test_names)},
    }
    (out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if metrics:
        sdr_text = ", ".join(f"{k} {v:.2f}" for k, v in metrics["sdr"].items())
        print(f"test MRE {metrics['mre_mm']:.2f} mm (median {metrics['median_mm']:.2f}, "
              f"max {metrics['max_mm']:.2f}); SDR {sdr_text}")
    print(f"train {summary['train_seconds']:.1f} s / {summary['iterations']} it, "
          f"predict {timings['predict_seconds_mean']:.2f} s/case, peak RSS {timings['peak_rss_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
