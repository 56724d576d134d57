#!/usr/bin/env bash
# The test command: set-up (idempotent, quick when done), ruff, then the whole suite over real ROS 2.
# Extra arguments go to pytest, e.g. scripts/test.sh -k node.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/setup.sh"
PY=${ACR_ROS_VENV:-$ROOT/.venv}/bin/python
# Lint first (ruff.toml): an unclean tree fails the command before the suite runs.
"$PY" -m ruff check --no-cache "$ROOT"
# DDS stays on this machine; concurrent runs need their own domain.
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$((1 + $$ % 100))}
# Byte-code is cached even where the environment says not to (PYTHONDONTWRITEBYTECODE): each xdist
# worker would otherwise rewrite the asserts of every test module again while collecting (about 2 s
# of CPU a worker).
unset PYTHONDONTWRITEBYTECODE
# Where set-up installed the launch stack, the launch tests must run, not skip (test/conftest.py).
[[ -d $ROOT/../shared/ros/launch_stack ]] && export ACR_ROS_EXPECT_LAUNCH=1
# Test modules run in parallel (pytest-xdist): two workers a CPU (at most 8), as much of the suite
# waits on other processes and on DDS. A module stays on one worker, so its fixtures are built once;
# the modules marked slow start first, the longest first (test/conftest.py). ACR_ROS_TEST_WORKERS=0:
# all in this process.
CPUS=$(nproc 2>/dev/null || echo 2)
WORKERS=${ACR_ROS_TEST_WORKERS:-$(( 2 * CPUS < 8 ? 2 * CPUS : 8 ))}
# Several workers (and the nodes they start) share the CPUs, so OpenMP runs on one thread in each
# process: torch's default, a thread per core in every process, only oversubscribes the cores (on 2
# cores it cost about 16 CPU-seconds a run).
if (( WORKERS > 1 )); then export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}; fi
cd "$ROOT"
exec "$PY" -m pytest -n "$WORKERS" --dist loadscope --no-loadscope-reorder "$@"
