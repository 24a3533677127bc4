"""What machine a measurement ran on, for benchmark and study results: one definition for all of bench/.

Timings only compare within one CPU model (the same ratio differs by 1.5x between an AVX-512/AMX Xeon and an
EPYC), so every result records the CPU's model name and its matrix features, not just ``x86_64``.
"""
from __future__ import annotations

import os
import platform

MATRIX_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def _cpuinfo_field(name: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith(name)), None)
    except OSError:
        return None


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows where that file does not exist."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The CPU's matrix features among :data:`MATRIX_FLAGS` (bf16 autocast is fast only with AMX or avx512_bf16)."""
    flags = (_cpuinfo_field("flags") or "").split()
    return sorted(f for f in flags if f in MATRIX_FLAGS)


def describe() -> dict[str, object]:
    """The fields every result file records about its machine."""
    return {"cpu": cpu_name(), "cpus": os.cpu_count(), "cpu_flags": cpu_flags(), "platform": platform.platform(),
            "python": platform.python_version()}
