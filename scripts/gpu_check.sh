#!/usr/bin/env bash
# Proves and measures the GPU path in one command (benchmarks/gpu_check.py says what it runs).
#
#   scripts/gpu_check.sh [--dry-run] [--out DIR] [--budget SECONDS]   # GPU: at most 10 minutes
#   scripts/gpu_check.sh --fetch-wheels     # here, before a device run: wheels the device lacks -> .whl/
#   scripts/prepare_gpu_carry.sh            # here too: the ROS 2 wheels of the ros section -> .gpu_carry/
#
# Needs Python with torch, numpy, OpenCV, pytest, hypothesis, onnx, onnxscript and onnxruntime; no ROS.
# Uses ACR_ROS_PYTHON, else the set-up's venv (ACR_ROS_VENV or .venv) when there is one, else python3
# (the device machine's, which holds CUDA torch). Wheels in .whl/ (carried to the device machine)
# are installed to a temporary folder first; the report goes to --out, else $OUT, else a temp folder.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# What the device machine's image lacks for the engine's tests: smplx (test_mano.py's reference).
DEVICE_WHEELS=(smplx==0.1.28)

if [[ ${1:-} == --fetch-wheels ]]; then
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$ROOT/.whl" "${DEVICE_WHEELS[@]}"
  ls "$ROOT/.whl"
  exit 0
fi

VENV=${ACR_ROS_VENV:-$ROOT/.venv}
if [[ -n ${ACR_ROS_PYTHON:-} ]]; then
  PY=$ACR_ROS_PYTHON
elif [[ -x $VENV/bin/python ]]; then
  PY=$VENV/bin/python
else
  PY=python3
fi

EXTRA=""
if compgen -G "$ROOT/.whl/*.whl" >/dev/null; then
  EXTRA=${TMPDIR:-/tmp}/acr_ros_gpu_check_wheels
  rm -rf "$EXTRA"
  "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$EXTRA" "$ROOT"/.whl/*.whl
fi
# acr_ros from this tree (acr_ros.msg is not needed by the engine), test/support as `support`.
export PYTHONPATH="$ROOT:$ROOT/test${EXTRA:+:$EXTRA}${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
cd "$ROOT"
exec "$PY" benchmarks/gpu_check.py "$@"
