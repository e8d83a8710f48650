"""What the hardware can do: the one check that decides whether bf16 may be used.

On a CPU without native bf16 (AVX2 only, or AVX-512 without AVX512-BF16/AMX) bf16 matmuls are emulated, up to
~100x slower than fp32, so training, prediction, few-shot and the benchmark all ask :func:`native_bf16` first.
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch


def _cpuinfo(field: str) -> str | None:
    """The first ``field`` line of /proc/cpuinfo (None where there is none, e.g. macOS)."""
    path = Path("/proc/cpuinfo")
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.startswith(field):
            return line.split(":", 1)[1].strip()
    return None


def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none)."""
    return set((_cpuinfo("flags") or "").split())


def cpu_model() -> str:
    """The CPU's name, recorded with every timing: /proc/cpuinfo's model name, else what platform says."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 runs natively: CUDA with bf16 support, or a CPU with AVX512-BF16 or AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu" or "AVX512" not in torch.backends.cpu.get_cpu_capability():
        return False
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
