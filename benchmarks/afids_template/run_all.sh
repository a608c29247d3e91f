#!/usr/bin/env bash
# Regenerates every AFIDs number of the README on 2 idle CPU cores (no other job running):
#   1. the default model (softmax cascade), trained for 4, 10 and 30 minutes, and with contrast
#      augmentation for 30 minutes, tested on the T1w test cases, their T2w versions and strong poses
#      (run_cascade.py; about 85 minutes);
#   2. the MIDL method (cone preset, full resolution) at nnU-Net's own 2.5 mm plan, and landmarker,
#      25 minutes of training each (run_benchmark.py; about 1 hour);
#   3. the MIDL method planned for 4 mm (`prepare --spacing 4`, the CPU plan), 25 min;
#   4. the heatmap shapes of the default model at equal budgets: Gaussian (the default), Laplace of
#      the same spread and learned per-landmark sigmas (adaptive), each trained for 4 and 10 minutes,
#      budget by budget (run_cascade.py --heatmaps; about 50 minutes: 42 of training, the rest data,
#      preparation and prediction).
# All on the same data (same configuration and seed). Run from the repository root with the main
# venv; OUT defaults to bench_output.
set -euo pipefail
OUT=${1:-bench_output}
PY=${PYTHON:-.venv/bin/python}
"$PY" benchmarks/afids_template/run_cascade.py --out "$OUT/afids_cascade" --budgets 4 10 30
"$PY" benchmarks/afids_template/run_cascade.py --out "$OUT/afids_cascade" --budgets 30 --methods softmax:cascade:0.5
# coverage of the calibrated radius_95_mm of each of these models (evaluate-cv on a copy; a few minutes)
"$PY" benchmarks/afids_template/run_uncertainty.py --out "$OUT/afids_cascade"
"$PY" benchmarks/afids_template/run_benchmark.py --out "$OUT/afids" --budget-minutes 25
"$PY" benchmarks/afids_template/run_benchmark.py --out "$OUT/afids_cpu_plan" --budget-minutes 25 \
    --methods nnlandmark --nnlandmark-target-spacing 4
"$PY" benchmarks/afids_template/run_cascade.py --out "$OUT/afids_heatmaps" --budgets 4 10 \
    --heatmaps gaussian laplace adaptive
# 5. a second data seed at 4 minutes (Gaussian and Laplace), and the cascade's shape prior off and on
#    for those two models (same weights; results/shape_prior_4min_seed1.md; about 15 minutes)
"$PY" benchmarks/afids_template/run_cascade.py --out "$OUT/afids_seed1" --budgets 4 --methods softmax:cascade \
    --heatmaps gaussian laplace --seed 1 --decoders mass
"$PY" benchmarks/afids_template/run_shape_prior.py --out "$OUT/afids_seed1"
