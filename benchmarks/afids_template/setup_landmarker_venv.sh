#!/usr/bin/env bash
# Create the separate virtual environment in which the landmarker baseline runs.
#
# Usage: bash benchmarks/afids_template/setup_landmarker_venv.sh [VENV_DIR]
#   VENV_DIR defaults to benchmarks/afids_template/work/venv_landmarker (gitignored).
#
# Why a separate venv: landmarker pins its own dependency set (MONAI, torchvision, ...),
# and we do not want it to change the main environment's packages.
# Why the order and the constraint file: pip would otherwise resolve landmarker's
# torchvision to a version that drags in a ~6 GB CUDA torch; installing the CPU
# torch first and pinning it keeps the environment at CPU size.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${1:-$HERE/work/venv_landmarker}"
PY="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"

mkdir -p "$(dirname "$VENV")"
"$PY" -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"

CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
echo "torch==${TORCH_VERSION}" > "$CONSTRAINTS"

pip install "torch==${TORCH_VERSION}"
# nibabel: landmarker does not declare it, but without it MONAI cannot read .nii.gz.
# SimpleITK: the runner reads our images and their geometry with it.
pip install -c "$CONSTRAINTS" "landmarker==0.4.1" nibabel SimpleITK
# nnlandmark itself (editable, without its nnU-Net dependencies) for geometry and
# landmark I/O, so both sides of the benchmark convert coordinates with the same code.
pip install --no-deps -e "$REPO"

python - <<'PY'
import torch, monai, landmarker, SimpleITK, nnlandmark.geometry
print("torch", torch.__version__, "| monai", monai.__version__,
      "| landmarker", getattr(landmarker, "__version__", "?"), "| SimpleITK", SimpleITK.Version_VersionString())
PY
echo "landmarker venv ready: $VENV"
