#!/usr/bin/env bash
# Builds this package's ROS interfaces (acr_ros.msg) and tf2_msgs with rosidl into a virtual
# environment that holds the ROS 2 Jazzy wheels (scripts/requirements-ros.txt): what
# scripts/setup.sh does in its steps (it sources this file), and what the GPU check's ros section
# does on the device machine with the wheels it brought (scripts/prepare_gpu_carry.sh).
#
#   scripts/interfaces.sh VENV      # all three steps below, for the venv's python
#
# Needs cmake and a C/C++ compiler, and the Python headers of the venv's interpreter.
ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}

# The message wheels' exported CMake targets name the include paths of the manylinux build
# machine; point them at this interpreter's (needed to build any interface package).
repoint_cmake_exports() {
  local pyinc npinc
  pyinc=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  npinc=$("$PY" -c 'import numpy; print(numpy.get_include())')
  sed -i -E \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#$npinc#g" \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#$pyinc#g" \
    "$VENV"/share/*/cmake/export_*__rosidl_generator_pyExport.cmake
}

# Builds the ament_cmake package $1 in folder $2 into the venv prefix; further arguments go to cmake.
build_interfaces() {
  local name=$1 src=$2; shift 2
  local build=$VENV/.acr_ros_build/$name
  mkdir -p "$VENV/.acr_ros_build"
  AMENT_PREFIX_PATH=$VENV cmake -S "$src" -B "$build" -Wno-dev \
    -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" \
    -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF "$@" >"$build.log" 2>&1 \
    && AMENT_PREFIX_PATH=$VENV cmake --build "$build" -j"$JOBS" >>"$build.log" 2>&1 \
    && cmake --install "$build" >>"$build.log" 2>&1 \
    || { echo "building $name failed; log: $build.log" >&2; tail -30 "$build.log" >&2; return 1; }
}

build_tf2_msgs() { build_interfaces tf2_msgs "$ROOT/tools/tf2_msgs"; }

# The interfaces land in site-packages/acr_ros; the egg-info that rosidl writes beside them would
# make pip treat them as the acr_ros distribution and delete them when installing the real one.
build_acr_ros_interfaces() {
  build_interfaces acr_ros "$ROOT" -DACR_ROS_INTERFACES_ONLY=ON
  rm -rf "$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"/acr_ros-*.egg-info
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  set -euo pipefail
  VENV=${1:?usage: scripts/interfaces.sh VENV}
  VENV=$(cd "$VENV" && pwd)
  PY=$VENV/bin/python
  repoint_cmake_exports
  build_tf2_msgs
  build_acr_ros_interfaces
fi
