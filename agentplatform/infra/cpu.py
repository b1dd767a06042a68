"""What CPU this process runs on: which native builds run here and which kernels pay.

Read from /proc/cpuinfo (Linux); elsewhere only the architecture is known.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

# The flags that decide which builds run (x86-64-v3 needs avx2, fma, bmi2) and which
# kernels are fast (VNNI: int8 dot products; asimddp/i8mm: the arm64 equivalents).
DECISIVE_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "asimddp", "i8mm")


@functools.cache
def _cpuinfo() -> str:
    path = Path("/proc/cpuinfo")
    return path.read_text(errors="replace") if path.exists() else ""


def model() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def flags() -> frozenset[str]:
    for line in _cpuinfo().splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def summary() -> str:
    """`AMD EPYC; avx2 fma`: the model and its decisive flags."""
    present = [flag for flag in DECISIVE_FLAGS if flag in flags()]
    return f"{model()}; {' '.join(present) or 'none of ' + ' '.join(DECISIVE_FLAGS[:2])}"
