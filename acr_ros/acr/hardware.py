"""What the CPU offers the engine: its model and the instruction sets that decide its speed
(read from /proc/cpuinfo on Linux; elsewhere nothing is known and nothing is claimed)."""
from __future__ import annotations

import os
import platform
from functools import lru_cache

# Report name -> /proc/cpuinfo flag.
INSTRUCTION_SETS = {"AVX2": "avx2", "AVX-512": "avx512f", "AVX512-BF16": "avx512_bf16",
                    "AMX-BF16": "amx_bf16", "AMX-TILE": "amx_tile"}
# Either gives oneDNN native bf16 arithmetic; without them bf16 is emulated (several times slower
# than fp32).
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset]:
    model, flags = "", frozenset()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key == "model name" and not model:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = frozenset(value.split())
                if model and flags:
                    break
    except OSError:
        pass
    return model, flags


def cpu_flags() -> frozenset:
    """The CPU feature flags of the first processor (empty where /proc/cpuinfo is not readable)."""
    return _cpuinfo()[1]


def cpu_model() -> str:
    return _cpuinfo()[0] or platform.processor() or platform.machine()


def instruction_sets() -> dict[str, bool]:
    """{"AVX2": True, "AVX-512": False, ...} for INSTRUCTION_SETS."""
    flags = cpu_flags()
    return {name: flag in flags for name, flag in INSTRUCTION_SETS.items()}


def has_native_bf16() -> bool:
    flags = cpu_flags()
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def describe_cpu() -> str:
    """e.g. "AMD EPYC, 2 cores: AVX2 yes, AVX-512 yes, AVX512-BF16 yes, AMX-BF16 no, AMX-TILE no"."""
    sets = ", ".join(f"{name} {'yes' if present else 'no'}" for name, present in instruction_sets().items())
    return f"{cpu_model()}, {os.cpu_count()} cores: {sets}" if cpu_flags() else f"{cpu_model()} (flags unknown)"
