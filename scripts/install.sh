#!/usr/bin/env bash
# Creates .venv with a CPU build of PyTorch and nnlandmark (editable) plus test tools.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, pinned: otherwise nnunetv2 -> timm -> torchvision pulls a multi-GB CUDA torch build
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[test]" -c constraints.txt
.venv/bin/python -c "import torch, nnunetv2, nnlandmark; print('torch', torch.__version__, '- nnlandmark ready')"
