"""What is timed and how: one call per model, mode and task, the interleaved loop, and the GEMM-rate reference.

Modes: ``eager`` fp32, ``compile`` (``torch.compile`` fp32; inductor freezing for inference), ``bf16`` (autocast;
only where bf16 is native, see :func:`~mlp_mixer.utils.devices.native_bf16`) and ``int8``
(:func:`~mlp_mixer.inference.quantize.quantize_dynamic_int8`, CPU only).

Every call is timed in one loop with the others: each repeat runs every call once, in a rotating order, so load from
other processes on a shared machine slows them alike and the ratios stay fair. Achieved FLOP rates
(``summary.count_macs``, training = 3x forward) are compared with this machine's GEMM rate on the model's own
matrix shapes (:func:`gemm_call`, one layer's GEMMs timed in the same loop), repeat by repeat.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..utils.devices import native_bf16


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(mode: str, device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16) if "bf16" in mode else contextlib.nullcontext()


def mode_skip_reason(mode: str, task: str, device: torch.device) -> str | None:
    """Why a mode cannot run a task here, or None; ``""`` for pairs that mean nothing (int8 training)."""
    if (mode == "int8" and task in ("train", "memory")) or (mode != "eager" and task == "memory"):
        return ""  # int8 is for inference; memory is measured in eager fp32
    if "bf16" in mode and not native_bf16(device):
        capability = torch.backends.cpu.get_cpu_capability() if device.type == "cpu" else device.type
        return f"skipped: no native bf16 ({capability}; bf16 would be emulated, ~100x slower)"
    if mode == "int8" and device.type != "cpu":
        return "skipped: int8 dynamic quantization runs on CPU only"
    return None


def inference_runner(model: nn.Module, mode: str, device: torch.device, x: torch.Tensor) -> Callable[[], Any]:
    """A no-argument call that runs one forward pass of ``model`` in ``mode`` on ``x``."""
    if mode == "int8":
        from ..inference.quantize import quantize_dynamic_int8  # written alongside; a missing module skips the mode

        model = quantize_dynamic_int8(model)
    if mode.startswith("compile"):  # "compile-bf16": compiled under bf16 autocast
        compiled = torch.compile(model, dynamic=False)

        def run() -> Any:
            # Freezing folds the weights into the graph as constants, prepacked for MKL/oneDNN on CPU.
            with torch.inference_mode(), torch._inductor.config.patch(freezing=True), _autocast(mode, device):
                return compiled(x)

        return run

    def run() -> Any:
        with torch.inference_mode(), _autocast(mode, device):
            return model(x)

    return run


def train_runner(
    model: nn.Module, mode: str, device: torch.device, x: torch.Tensor, y: torch.Tensor
) -> Callable[[], Any]:
    """A no-argument call that runs one training step: forward, cross-entropy, backward, AdamW step."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    forward = torch.compile(model, dynamic=False) if mode.startswith("compile") else model

    def step() -> None:
        with _autocast(mode, device):
            loss = nn.functional.cross_entropy(forward(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def time_interleaved(
    calls: dict[Any, Callable[[], Any]], repeats: int, device: torch.device, progress: tqdm | None = None
) -> tuple[dict[Any, float], dict[Any, list[float]]]:
    """First-call seconds and ``repeats`` timed calls of each, every repeat running all of them in turn.

    The order rotates each repeat, so no model always runs right after the same neighbour.
    """
    first, times = {}, {name: [] for name in calls}

    def timed(fn: Callable[[], Any]) -> float:
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        return time.perf_counter() - start

    for name, fn in calls.items():
        first[name] = timed(fn)
        if progress is not None:
            progress.update()
    names = list(calls)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(timed(calls[name]))
            if progress is not None:
                progress.update()
    return first, times


def gemm_call(config: dict[str, Any], batch_size: int, dtype: torch.dtype, device: torch.device) -> tuple[Any, int]:
    """One Mixer layer's GEMMs as a call, and its FLOPs: the machine's GEMM rate on the model's own shapes.

    Channel mixing is ``(B*S, C) @ (C, D_C)`` and back; token mixing the batched ``(D_S, S) @ (S, C)`` and back,
    as the model computes them. Timed in the same interleaved loop as the models, so under the same load.
    """
    h, w = (config["image_size"],) * 2 if isinstance(config["image_size"], int) else config["image_size"]
    s = (h // config["patch_size"]) * (w // config["patch_size"])
    c, ds, dc, b = config["dim"], config["token_dim"], config["channel_dim"], batch_size
    generator = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(device, dtype)

    calls = [functools.partial(torch.mm, rand(m, k), rand(k, n)) for m, k, n in [(b * s, c, dc), (b * s, dc, c)]]
    calls += [functools.partial(torch.bmm, rand(m, k).expand(b, -1, -1), rand(b, k, c)) for m, k in [(ds, s), (s, ds)]]
    flops = 2 * b * s * c * dc * 2 + 2 * b * ds * s * c * 2

    def run() -> None:
        for call in calls:
            call()

    return run, flops
