#!/usr/bin/env bash
# Reads our markups files with 3D Slicer's own storage nodes (benchmarks/slicer_roundtrip/).
# slicer-core (Slicer's MRML libraries with VTK, ~190 MB download, ~1 GB installed) goes into its
# own venv, .venv-slicer, never into the project's: it pins numpy/VTK versions of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv-slicer/bin/python ] || "$PYTHON" -m venv .venv-slicer
.venv-slicer/bin/python -m pip install --quiet "slicer-core==5.12.4.0"
.venv/bin/python benchmarks/slicer_roundtrip/run.py --slicer-python .venv-slicer/bin/python
