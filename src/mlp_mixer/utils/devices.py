"""The machine: which device to run on, whether bf16 is native, and the description recorded with every figure.

On a CPU without native bf16 (AVX2 only, or AVX-512 without AVX512-BF16/AMX) bf16 matmuls are emulated, up to
~100x slower than fp32, so training, prediction, few-shot and the benchmark all ask :func:`native_bf16` first.
"""

from __future__ import annotations

import contextlib
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from .cores import default_workers as default_workers  # its home imports no torch


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


def cpu_vendor() -> str | None:
    """/proc/cpuinfo's vendor_id ("GenuineIntel", "AuthenticAMD"; None where there is none)."""
    return _cpuinfo("vendor_id")


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


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA if available, else MPS, else CPU. An unavailable device is an error, before any work."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"--device {name!r} is not a device name (auto, cpu, cuda, cuda:N, mps)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"--device {name}: MPS is not available on this machine (use --device cpu)")
    return device


def loadavg() -> list[float] | None:
    """The 1/5/15-minute load averages (None where the OS has none): how busy the machine was."""
    with contextlib.suppress(OSError, AttributeError):
        return [round(x, 2) for x in os.getloadavg()]
    return None


def machine_info(device: torch.device | None = None) -> dict[str, Any]:
    """What a figure depends on: CPU/GPU model, capability, bf16 support, threads, versions and the load now."""
    device = device or torch.device("cpu")
    versions = {"python": platform.python_version(), "torch": str(torch.__version__)}
    for package in ("mlp-mixer", "timm", "mlp-mixer-pytorch", "einops"):
        with contextlib.suppress(PackageNotFoundError):
            versions[package] = version(package)
    flags = cpu_flags()
    return {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": cpu_model(),
        "cpu_vendor": cpu_vendor(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16_flags": sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile", "amx_int8", "avx512f"}),
        "native_bf16": native_bf16(device),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "versions": versions,
        "loadavg": loadavg(),
    }
