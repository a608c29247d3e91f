#!/usr/bin/env bash
# Regenerates every AFIDs number of the README (about 100 minutes on 2 idle CPU cores):
#   1. nnlandmark (nnU-Net's own plan at the data's 2.5 mm) and landmarker, 25 min of training each;
#   2. nnlandmark planned for 4 mm (`prepare --spacing 4`, the CPU plan), 25 min, on the same data.
# Run from the repository root with the main venv; OUT defaults to bench_output.
set -euo pipefail
OUT=${1:-bench_output}
PY=${PYTHON:-.venv/bin/python}
"$PY" benchmarks/afids_template/run_benchmark.py --out "$OUT/afids" --budget-minutes 25
"$PY" benchmarks/afids_template/run_benchmark.py --out "$OUT/afids_cpu_plan" --budget-minutes 25 \
    --methods nnlandmark --nnlandmark-target-spacing 4
