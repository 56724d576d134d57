#!/usr/bin/env bash
# Prepares, on a machine with network access, what the GPU check's ros section brings to the device
# machine (CPython 3.12, CUDA torch, OpenCV, no ROS and no network there): the ROS 2 Jazzy wheels
# of scripts/requirements-ros.txt for cp312 manylinux x86_64 (colcon left out: the interfaces are
# built with cmake by scripts/interfaces.sh) and the node's own dependencies the device lacks
# (rosbags, tqdm), in .gpu_carry/ros (ignored by git). numpy is left out: the device's torch brings it.
#
#   scripts/prepare_gpu_carry.sh          # then carry .gpu_carry (and .whl) with the device call
#
# The device call carries at most 64 MiB of ignored paths: the script fails when the wheels
# (with .whl) come to more, naming the size.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CARRY=$ROOT/.gpu_carry/ros
LIMIT_MIB=64
PYTHON_VERSION=${ACR_ROS_DEVICE_PYTHON:-3.12}
ABI=cp${PYTHON_VERSION/./}

rm -rf "$CARRY"
mkdir -p "$CARRY"
requirements=$CARRY/requirements.txt
{ grep -v -e '^#' -e '^colcon' "$ROOT/scripts/requirements-ros.txt"; grep -e '^rosbags' -e '^tqdm' "$ROOT/scripts/requirements.txt"; } >"$requirements"
# EmPy and lark-parser (rosidl's templates and parser) are published as sources only; pure Python.
python3 -m pip wheel --quiet --no-deps -w "$CARRY" empy==4.2.1 lark-parser==0.12.0
platforms=()
for tag in manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_27_x86_64 manylinux_2_28_x86_64 \
           manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64 manylinux_2_39_x86_64 any; do
  platforms+=(--platform "$tag")
done
python3 -m pip download --quiet --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp \
  --abi "$ABI" "${platforms[@]}" --find-links "$CARRY" -d "$CARRY" -r "$requirements"
rm -f "$CARRY"/numpy-*.whl
bytes=$(cat "$CARRY"/*.whl | wc -c)
others=0
if compgen -G "$ROOT/.whl/*" >/dev/null; then others=$(cat "$ROOT"/.whl/* | wc -c); fi
mib() { echo "$(( ($1 + (1 << 19)) >> 20 ))"; }
echo "$CARRY: $(ls "$CARRY"/*.whl | wc -l) wheels, $(mib "$bytes") MiB (with .whl: $(mib $((bytes + others))) MiB;" \
  "the device call carries at most $LIMIT_MIB MiB)"
if (( bytes + others > LIMIT_MIB << 20 )); then
  echo "prepare_gpu_carry: the wheels do not fit the $LIMIT_MIB MiB a device call carries" >&2
  exit 1
fi
