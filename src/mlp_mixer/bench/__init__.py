"""``mlp-mixer bench``: speed and memory of our Mixer against timm, lucidrains' mlp-mixer-pytorch and the seed.

Every peer is built with the same architecture and loaded with the same weights in one process (outputs are
checked to agree), and timed interleaved: each repeat runs every model once, in a rotating order, so load from
other processes on a shared machine slows them alike and the ratios stay fair. Numbers are medians over repeats.

Tasks: ``infer`` (images/s at ``--batch-size``), ``latency`` (batch 1), ``train`` (forward, backward and an AdamW
step at ``--batch-size``) and ``memory`` (peak memory of that training step, with and without activation
checkpointing). Modes: ``eager`` fp32, ``compile`` (``torch.compile`` fp32; inductor freezing for inference),
``bf16`` (autocast; only where bf16 is native, see :func:`native_bf16`) and ``int8``
(:func:`~mlp_mixer.inference.quantize.quantize_dynamic_int8`, CPU only). ``ours`` computes exact (erf) GELU,
as the peers do,
so that all compute the same function; ``ours-tanh`` is the same model with the official tanh GELU, what
``MLPMixer`` gives by default.

Achieved FLOP rates (``summary.count_macs``, training = 3x forward) are compared with this machine's GEMM rate on
the model's own matrix shapes (one layer's GEMMs, timed in the same interleaved loop as the models), repeat by
repeat; target ratios are likewise medians of per-repeat ratios.

Memory on CPU is the peak of live tensor bytes allocated during one training step above what was live before
it (activations saved for backward, gradients, temporaries): every tensor an operator returns is counted until
it is freed. It leaves out parameters and optimizer state allocated before the step, and scratch space inside
kernels. On CUDA it is ``torch.cuda.max_memory_allocated`` above the allocation before the step.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import functools
import io
import json
import math
import os
import statistics
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from tqdm import tqdm

from ..analysis.plots import save_figure
from ..analysis.summary import count_macs
from ..model.fast_paths import fast_paths
from ..model.mixer import MLPMixer
from ..model.variants import SEED, TINY, variant_config
from ..utils.devices import machine_info, native_bf16, resolve_device
from ..utils.files import write_text
from ..weights.checkpoint import to_timm_state_dict

MODELS = ("ours", "ours-tanh", "timm", "lucidrains", "seed")
MODES = ("eager", "compile", "bf16", "int8")
TASKS = ("infer", "latency", "train", "memory")
# Besides the paper's variants: the seed's configuration (one layer at S/16's widths) and a size for smoke tests.
CONFIGS: dict[str, dict[str, Any]] = {"tiny": dict(TINY), "small": dict(SEED)}


@dataclass
class Case:
    """One block of the plan: every model x mode x task of one configuration."""

    config: str
    models: tuple[str, ...] = MODELS
    modes: tuple[str, ...] = MODES
    tasks: tuple[str, ...] = TASKS
    repeats: int | None = None  # fewer timed calls for the largest sizes; None: the run's --repeats


# The default run: every peer at the small size, then what the targets need at S/16 and B/16 (batch 32 at B/16
# is ~0.8 TFLOP a call), sized so that an idle 2-core CPU finishes in about 18 minutes. The B/16 training step, a
# target, keeps the run's repeats: with 3, two runs gave 1.12x and 0.95x timm (docs/bench.md).
DEFAULT_PLAN = (
    Case("small", MODELS, ("eager", "bf16", "int8")),
    Case("small", ("ours", "timm"), ("compile",), ("infer", "latency", "train")),
    Case("S/16", MODELS, ("eager",), ("infer", "latency")),
    Case("S/16", ("ours", "ours-tanh", "timm"), ("eager",), ("train",)),
    Case("S/16", ("ours", "timm"), ("eager",), ("memory",)),
    Case("S/16", ("ours", "timm"), ("bf16", "int8"), ("infer",)),
    Case("B/16", ("ours", "ours-tanh", "timm"), ("eager", "compile", "bf16"), ("infer",)),
    Case("B/16", ("ours", "timm"), ("eager",), ("latency", "memory"), repeats=3),
    Case("B/16", ("ours", "timm"), ("eager",), ("train",)),
    Case("L/16", ("ours", "timm"), ("eager",), ("latency",), repeats=3),
)


@dataclass
class Row:
    """One measurement: a model in a mode doing a task, with its median and everything derived from it."""

    config: str
    model: str
    mode: str
    task: str
    batch_size: int
    status: str = "ok"  # or "skipped: <why>"
    median_s: float | None = None
    times_s: list[float] = field(default_factory=list)
    first_call_s: float | None = None  # includes compilation for "compile"
    images_per_s: float | None = None
    gflops: float | None = None  # achieved, from counted MACs
    gemm_fraction: float | None = None  # of this machine's GEMM rate on the model's shapes, same dtype
    checkpointing: bool = False
    peak_mib: float | None = None
    max_abs_diff: float | None = None  # logits against ours, same weights, fp32 eager


# ----------------------------------------------------------------------------------------------- the machine


def keep_freed_memory() -> bool:
    """glibc only: keep freed memory in the process for reuse instead of mapping and unmapping it per tensor.

    By default glibc gives every large allocation (above 32 MiB at most: each big activation) fresh pages from
    the OS, and the first touch of each page faults. On a 2-core CPU that is ~10% of a training step and most of
    its run-to-run spread; tcmalloc and jemalloc keep freed memory like this. Returns False without glibc.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    return all(mallopt(option, 2**30) == 1 for option in (m_mmap_threshold, m_trim_threshold))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------------ the models


def bench_config(name: str) -> dict[str, Any]:
    """Constructor arguments for a configuration name: ``tiny``, ``small`` (the seed's) or a paper variant."""
    return dict(CONFIGS[name]) if name in CONFIGS else variant_config(name)


def to_lucidrains_state_dict(model: MLPMixer) -> dict[str, torch.Tensor]:
    """Our weights in the layout of ``mlp_mixer_pytorch.MLPMixer`` (an ``nn.Sequential``, indexed keys).

    Its stem is a Linear on (p1 p2 c)-ordered patches and its token mixing a kernel-1 Conv1d, so the stem kernel
    is permuted and the token-mixing weights gain a trailing axis.
    """
    state, depth = model.state_dict(), model.depth
    out = {
        "1.weight": state["stem.weight"].permute(0, 2, 3, 1).reshape(model.dim, -1),  # (C, c, p, p) -> (C, p p c)
        "1.bias": state["stem.bias"],
        f"{depth + 2}.weight": state["pre_head_layer_norm.weight"],
        f"{depth + 2}.bias": state["pre_head_layer_norm.bias"],
        f"{depth + 4}.weight": state["head.weight"],
        f"{depth + 4}.bias": state["head.bias"],
    }
    for i in range(depth):
        for j, (norm, mlp) in enumerate([("norm1", "token_mixing"), ("norm2", "channel_mixing")]):
            prefix, ours = f"{i + 2}.{j}.", f"blocks.{i}."
            for kind in ("weight", "bias"):
                out[prefix + f"norm.{kind}"] = state[ours + f"{norm}.{kind}"]
                for k, fc in ((0, "fc1"), (3, "fc2")):
                    value = state[ours + f"{mlp}.{fc}.{kind}"]
                    out[prefix + f"fn.{k}.{kind}"] = (
                        value[..., None] if mlp == "token_mixing" and kind == "weight" else value
                    )
    return out


def _peer(name: str, ours: MLPMixer) -> nn.Module:
    """A peer built to ``ours``'s sizes, loaded with its weights; every LayerNorm uses the official eps 1e-6."""
    c = ours.config()
    h, w = c["image_size"]
    if name == "ours-tanh":  # the default model: the official tanh GELU (logits differ from ours by ~1e-4)
        model = MLPMixer(**{**c, "gelu": "tanh"})
        state = ours.state_dict()
    elif name == "timm":
        from timm.models.mlp_mixer import MlpMixer

        model = MlpMixer(
            num_classes=c["num_classes"],
            img_size=(h, w),
            in_chans=c["in_channels"],
            patch_size=c["patch_size"],
            num_blocks=c["depth"],
            embed_dim=c["dim"],
            mlp_ratio=(c["token_dim"] / c["dim"], c["channel_dim"] / c["dim"]),
        )
        state = to_timm_state_dict(ours)
    elif name == "lucidrains":
        from mlp_mixer_pytorch import MLPMixer as LucidrainsMixer

        # Its expansion_factor sizes the token MLP and expansion_factor_token the channel MLP (the names read
        # the other way round), so both are set to the paper's widths explicitly.
        model = LucidrainsMixer(
            image_size=(h, w),
            channels=c["in_channels"],
            patch_size=c["patch_size"],
            dim=c["dim"],
            depth=c["depth"],
            num_classes=c["num_classes"],
            expansion_factor=c["token_dim"] / c["dim"],
            expansion_factor_token=c["channel_dim"] / c["dim"],
        )
        state = to_lucidrains_state_dict(ours)
    elif name == "seed":
        if h != w:
            raise ValueError(f"the seed's Mixer takes square images only, got image_size {(h, w)}")
        from ..model import seed  # needs einops, as the seed's code does

        keys = ("in_channels", "dim", "num_classes", "patch_size", "depth", "token_dim", "channel_dim")
        model = seed.MLPMixer(image_size=h, **{k: c[k] for k in keys})
        state = seed.to_seed_state_dict(ours.state_dict())
    else:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    model.load_state_dict(state)
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            module.eps = 1e-6
    return model


def build_models(
    config: dict[str, Any], names: Iterable[str], device: torch.device, seed: int = 0
) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """Our Mixer and the named peers with the same weights, in eval mode on ``device``.

    Returns:
        The models, and for each peer that could not be built (package missing) why it is skipped.
    """
    torch.manual_seed(seed)
    ours = MLPMixer(**{**config, "gelu": "exact"})
    with torch.no_grad():  # the official init zeroes the head and biases, which would hide a mis-mapped weight
        if isinstance(ours.head, nn.Linear):
            nn.init.normal_(ours.head.weight, std=ours.dim**-0.5)
        for p in ours.parameters():
            if p.ndim == 1:
                p.add_(torch.randn(p.shape) * 0.1)
    models, skipped = {}, {}
    for name in names:
        try:
            models[name] = ours if name == "ours" else _peer(name, ours)
        except ImportError as err:  # a peer's package (or einops, for the seed's code) is not installed
            skipped[name] = f"skipped: {err}"
    return {k: m.to(device).eval() for k, m in models.items()}, skipped


# --------------------------------------------------------------------------------------- modes and measuring


def _autocast(mode: str, device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16) if mode == "bf16" else contextlib.nullcontext()


def mode_skip_reason(mode: str, task: str, device: torch.device) -> str | None:
    """Why a mode cannot run a task here, or None; ``""`` for pairs that mean nothing (int8 training)."""
    if (mode == "int8" and task in ("train", "memory")) or (mode != "eager" and task == "memory"):
        return ""  # int8 is for inference; memory is measured in eager fp32
    if mode == "bf16" and not native_bf16(device):
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
    if mode == "compile":
        compiled = torch.compile(model, dynamic=False)

        def run() -> Any:
            # Freezing folds the weights into the graph as constants, prepacked for MKL/oneDNN on CPU.
            with torch.inference_mode(), torch._inductor.config.patch(freezing=True):
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
    forward = torch.compile(model, dynamic=False) if mode == "compile" else model

    def step() -> None:
        with _autocast(mode, device):
            loss = nn.functional.cross_entropy(forward(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


class TensorMemory(TorchDispatchMode):
    """Counts the bytes of every tensor an operator returns until it is freed; ``peak`` is the most at once.

    Storages already live when the mode starts (parameters, optimizer state) and outputs that alias an input
    (views, in-place ops) are not counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._refs: dict[int, weakref.ref] = {}

    def _release(self, key: int, nbytes: int) -> Callable[[Any], None]:
        def release(_: Any) -> None:
            self.live -= nbytes
            self._refs.pop(key, None)

        return release

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage()._cdata for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage._cdata
            if key in inputs or key in self._refs:
                continue
            nbytes = storage.nbytes()
            self._refs[key] = weakref.ref(storage, self._release(key, nbytes))
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        return out


def peak_memory(step: Callable[[], Any], device: torch.device) -> int:
    """Peak bytes allocated during ``step()`` above what was allocated before it (see the module docstring)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with TensorMemory() as tracker:
        step()
    return tracker.peak


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


# -------------------------------------------------------------------------------------------------- the run


def plan_from_filters(
    configs: list[str] | None, models: list[str] | None, modes: list[str] | None, tasks: list[str] | None
) -> tuple[Case, ...]:
    """The default plan, or the full product of whatever was filtered (unfiltered axes take every value)."""
    for given, valid, option in ((models, MODELS, "--models"), (modes, MODES, "--modes"), (tasks, TASKS, "--tasks")):
        unknown = sorted(set(given or ()) - set(valid))
        if unknown:
            raise ValueError(f"{option}: unknown {', '.join(unknown)}; expected some of {', '.join(valid)}")
    for name in configs or ():
        bench_config(name)  # raises ValueError naming the valid variants
    if not any((configs, models, modes, tasks)):
        return DEFAULT_PLAN
    return tuple(
        Case(name, tuple(models or MODELS), tuple(modes or MODES), tuple(tasks or TASKS))
        for name in configs or dict.fromkeys(case.config for case in DEFAULT_PLAN)
    )


def _images(config: dict[str, Any], batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = (config["image_size"],) * 2 if isinstance(config["image_size"], int) else config["image_size"]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, config["in_channels"], h, w, generator=generator)
    y = torch.randint(0, max(config["num_classes"], 1), (batch_size,), generator=generator)
    return x.to(device), y.to(device)


def run_case(
    case: Case, device: torch.device, batch_size: int, repeats: int, progress: tqdm | None = None
) -> list[Row]:
    """Measure one configuration: check the peers agree, then each task and mode with the models interleaved."""
    repeats = case.repeats or repeats
    config = bench_config(case.config)
    models, skipped = build_models(config, case.models, device)
    rows = [Row(case.config, name, mode, task, batch_size, status) for name, status in skipped.items()
            for task in case.tasks for mode in case.modes]  # fmt: skip
    with torch.device("meta"):  # counting needs shapes only
        skeleton = MLPMixer(**config)
    macs = count_macs(skeleton, (1, config["in_channels"], *skeleton.image_size))[""]
    x_check, _ = _images(config, 2, device)
    with torch.inference_mode():
        reference = models["ours"](x_check).float() if "ours" in models else None
        diffs = {n: (m(x_check).float() - reference).abs().max().item() if reference is not None else None
                 for n, m in models.items()}  # fmt: skip

    for task in case.tasks:
        batch = 1 if task == "latency" else batch_size
        x, y = _images(config, batch, device)
        if task == "memory":
            rows += _memory_rows(case.config, models, x, y, device) if "eager" in case.modes else []
            continue
        # Every model in every mode, and the GEMM reference, in one interleaved loop: all see the same load.
        calls: dict[tuple[str, str], Callable[[], Any]] = {}
        for mode in case.modes:
            reason = mode_skip_reason(mode, task, device)
            if reason is not None:
                rows += [Row(case.config, n, mode, task, batch, reason) for n in models if reason]
                continue
            for name, model in models.items():
                try:
                    if task == "train":
                        calls[name, mode] = train_runner(model, mode, device, x, y)
                    else:
                        calls[name, mode] = inference_runner(model, mode, device, x)
                except ImportError as err:
                    rows.append(Row(case.config, name, mode, task, batch, f"skipped: {err}"))
        if not calls:
            continue
        gemm_flops = {}
        for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            if precision == "fp32" or any(mode == "bf16" for _, mode in calls):
                calls["gemm", precision], gemm_flops[precision] = gemm_call(config, batch, dtype, device)
        first, times = time_interleaved(calls, repeats, device, progress)
        for model in models.values():
            model.eval()
        flops = 2 * macs * batch * (3 if task == "train" else 1)
        for (name, mode), t in times.items():
            median = statistics.median(t)
            if name == "gemm":
                rows.append(Row(case.config, name, mode, task, batch, median_s=median, times_s=t,
                                gflops=gemm_flops[mode] / median / 1e9))  # fmt: skip
                continue
            # Per repeat: this call's FLOP rate over the GEMM rate timed beside it; then the median.
            reference = "bf16" if mode == "bf16" else "fp32"
            fraction = statistics.median(
                (flops / tm) / (gemm_flops[reference] / tg) for tm, tg in zip(t, times["gemm", reference], strict=True)
            )
            rows.append(
                Row(
                    case.config, name, mode, task, batch,
                    median_s=median, times_s=t, first_call_s=first[name, mode],
                    images_per_s=batch / median, gflops=flops / median / 1e9,
                    gemm_fraction=fraction, max_abs_diff=diffs.get(name),
                )
            )  # fmt: skip
    torch._dynamo.reset()  # compiled graphs of this size are not needed again
    return rows


def _memory_rows(
    config: str, models: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, device: torch.device
) -> list[Row]:
    rows = []
    for name, model in models.items():
        for checkpointing in (False, True):
            if checkpointing and not hasattr(model, "set_grad_checkpointing"):
                continue
            if hasattr(model, "set_grad_checkpointing"):
                model.set_grad_checkpointing(checkpointing)
            step = train_runner(model, "eager", device, x, y)
            step()  # the optimizer's state is allocated in the first step, not counted as the step's memory
            peak = peak_memory(step, device)
            rows.append(
                Row(config, name, "eager", "memory", len(x), checkpointing=checkpointing, peak_mib=peak / 2**20)
            )
        if hasattr(model, "set_grad_checkpointing"):
            model.set_grad_checkpointing(False)
        model.eval()
    return rows


# ----------------------------------------------------------------------------------------------- the targets

# name, what is compared, required ratio, the configurations it is defined for (at TARGET_BATCH images a call).
# A target is checked only where it is defined: on a tiny model the same ratios mean something else.
TARGET_BATCH = 32
TARGETS = (
    ("eager_vs_timm", "eager fp32 inference, ours vs timm (x faster)", 1.10, ("S/16",)),
    ("default_vs_timm", "eager fp32 inference, our default (tanh GELU) vs timm's (erf) (x faster)", 1.15, ("S/16",)),
    ("tanh_vs_exact", "eager fp32 inference, our tanh GELU vs our erf GELU (x as fast)", 0.97, ("S/16", "B/16")),
    ("compile_vs_timm", "torch.compile inference, ours vs timm (x faster)", 1.0, ("B/16",)),
    ("compile_gemm", "torch.compile inference, fraction of fp32 GEMM rate", 0.90, ("B/16",)),
    ("bf16_vs_fp32", "bf16 autocast vs our eager fp32 inference (x faster)", 2.0, ("B/16",)),
    ("train_vs_timm", "training step, ours vs timm (x faster)", 1.10, ("S/16", "B/16")),
    ("checkpointing", "activation checkpointing: cut in peak training memory", 0.40, ("S/16",)),
)
# What each target compares: (model, mode, task) of the faster side, then of the slower one (the reference).
_PAIRS = {
    "eager_vs_timm": (("ours", "eager", "infer"), ("timm", "eager", "infer")),
    "default_vs_timm": (("ours-tanh", "eager", "infer"), ("timm", "eager", "infer")),
    "tanh_vs_exact": (("ours-tanh", "eager", "infer"), ("ours", "eager", "infer")),
    "compile_vs_timm": (("ours", "compile", "infer"), ("timm", "compile", "infer")),
    "compile_gemm": (("ours", "compile", "infer"), ("ours", "compile", "infer")),
    "bf16_vs_fp32": (("ours", "bf16", "infer"), ("ours", "eager", "infer")),
    "train_vs_timm": (("ours", "eager", "train"), ("timm", "eager", "train")),
    "checkpointing": (("ours", "eager", "memory"), ("ours", "eager", "memory")),
}


def _find(rows: list[Row], config: str, model: str, mode: str, task: str, checkpointing: bool = False) -> Row | None:
    for row in rows:
        key = (row.config, row.model, row.mode, row.task, row.checkpointing)
        if key == (config, model, mode, task, checkpointing) and row.status == "ok":
            return row
    return None


def _ratios(slow: Row, fast: Row) -> list[float]:
    """Per-repeat time ratios when both were timed in the same interleaved loop, else the ratio of medians."""
    if slow.times_s and len(slow.times_s) == len(fast.times_s):
        return [s / f for s, f in zip(slow.times_s, fast.times_s, strict=True)]
    return [slow.median_s / fast.median_s]


def speedup(slow: Row, fast: Row) -> float:
    """How many times faster ``fast`` is: the median of per-repeat time ratios when both were timed in the same
    interleaved loop (neighbours in time share the load), else the ratio of medians."""
    return statistics.median(_ratios(slow, fast))


def check_targets(rows: list[Row], machine: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target at each configuration it is defined for that this run measured (at ``TARGET_BATCH``), with the
    gap; a target measured nowhere gets one "not run" entry naming where it is defined."""
    results = []
    for name, description, required, configs in TARGETS:
        (fast_key, slow_key), found = _PAIRS[name], []
        for config in configs:
            if name == "checkpointing":
                a, b = _find(rows, config, *fast_key, checkpointing=True), _find(rows, config, *slow_key)
            else:
                a, b = _find(rows, config, *fast_key), _find(rows, config, *slow_key)
            if a is None or b is None or b.batch_size != TARGET_BATCH:
                continue
            spread = None
            if name == "compile_gemm":
                measured = a.gemm_fraction
            elif name == "checkpointing":
                measured = 1 - a.peak_mib / b.peak_mib
            else:
                measured, ratios = speedup(b, a), _ratios(b, a)
                spread = [min(ratios), max(ratios)]
            status = "met" if measured >= required else f"missed by {(required - measured) / required:.0%}"
            found.append((config, measured, spread, status))
        if not found:
            where = " and ".join(configs)
            if name == "bf16_vs_fp32" and not machine["native_bf16"]:
                status = "skipped: no native bf16"
            else:
                status = f"not run (defined for {where} at batch {TARGET_BATCH})"
            found.append((None, None, None, status))
        for config, measured, spread, status in found:
            results.append(dict(target=name, description=description, config=config, required=required,
                                measured=measured, spread=spread, status=status))  # fmt: skip
    return results


# ------------------------------------------------------------------------------------------------- scaling


def scaling(
    resolutions: Iterable[int] = (64, 128, 224, 320, 448),
    device: str | torch.device = "auto",
    batch_size: int = 4,
    repeats: int = 3,
    progress: bool = True,
) -> dict[str, Any]:
    """Mixer-B/16 against timm's ViT-B/16 as the image grows: counted MACs, inference time, activation memory.

    The paper's claim: Mixer's cost is linear in the number of patches S (token mixing is an S x D_S matrix),
    attention's quadratic. ``exponent`` is the measured log-log slope between the two largest sizes (1 = linear,
    2 = quadratic). timm's ViT uses fused attention (``F.scaled_dot_product_attention``), which never stores the
    S x S matrix, so its memory may stay close to linear while its compute does not.

    Args:
        resolutions: square image sizes, multiples of 16.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        batch_size: images per call; memory is per image, of one forward pass with autograd recording.
        repeats: timed calls per model per size (interleaved, medians reported).
        progress: show a tqdm bar.
    """
    import timm

    resolutions = list(resolutions)
    bad = [r for r in resolutions if r <= 0 or r % 16]
    if bad:
        raise ValueError(f"--resolutions must be positive multiples of 16 (the patch size), got {bad}")
    device = resolve_device(device) if isinstance(device, str) else device
    machine = machine_info(device)
    points, models, calls = [], {}, {}
    for size in tqdm(resolutions, desc="scaling: build", unit="size", disable=not progress):
        torch.manual_seed(0)
        x, _ = _images(bench_config("B/16") | {"image_size": size}, batch_size, device)
        for name, model in [
            ("Mixer-B/16", MLPMixer(**variant_config("B/16", image_size=size, gelu="exact"))),
            ("ViT-B/16", timm.create_model("vit_base_patch16_224", pretrained=False, img_size=size)),
        ]:
            fused = [m for m in model.modules() if getattr(m, "fused_attn", False)]
            for m in fused:  # the flop counter has no formula for CPU fused attention: count the plain matmuls
                m.fused_attn = False
            macs = count_macs(model, (1, 3, size, size))[""]
            for m in fused:
                m.fused_attn = True
            models[name, size] = model.to(device).train()
            # What a training forward holds for backward: peak tensor memory of the forward pass with autograd.
            activations = peak_memory(functools.partial(model, x), device) / 2**20 / batch_size
            calls[name, size] = inference_runner(model.eval(), "eager", device, x)
            points.append(dict(model=name, image_size=size, patches=(size // 16) ** 2, gmacs=macs / 1e9,
                               activation_mib=activations))  # fmt: skip
    # Every size of both models in one interleaved loop, so that a change in load does not bend the curves.
    with tqdm(total=len(calls) * (repeats + 1), desc="scaling: time", disable=not progress) as bar:
        _, times = time_interleaved(calls, repeats, device, bar)
    for point in points:
        point["ms_per_image"] = statistics.median(times[point["model"], point["image_size"]]) / batch_size * 1e3
    for name in dict.fromkeys(p["model"] for p in points):
        mine = [p for p in points if p["model"] == name]
        if len(mine) >= 2:
            a, b = mine[-2], mine[-1]
            ratio = math.log(b["patches"] / a["patches"])
            for key in ("gmacs", "ms_per_image", "activation_mib"):
                b[f"exponent_{key}"] = math.log(b[key] / a[key]) / ratio
    machine["loadavg_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return {"machine": machine, "batch_size": batch_size, "repeats": repeats, "points": points}


def format_scaling(result: dict[str, Any]) -> str:
    lines = [
        "| model | image | patches | GMACs/image | ms/image | activation MiB/image |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for p in result["points"]:
        lines.append(
            f"| {p['model']} | {p['image_size']} | {p['patches']} | {p['gmacs']:.1f} | {p['ms_per_image']:.1f}"
            f" | {p['activation_mib']:.1f} |"
        )
    for p in result["points"]:
        if "exponent_gmacs" in p:
            lines.append(
                f"\n{p['model']}: growth exponent in S between the two largest sizes (1 linear, 2 quadratic):"
                f" MACs {p['exponent_gmacs']:.2f}, time {p['exponent_ms_per_image']:.2f},"
                f" memory {p['exponent_activation_mib']:.2f}"
            )
    return "\n".join(lines)


def plot_scaling(result: dict[str, Any], path: Path) -> Path:
    """Three panels against the number of patches: counted GMACs, measured ms/image, activation memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("gmacs", "GMACs / image (counted)"), ("ms_per_image", "ms / image (measured)"),
              ("activation_mib", "activations MiB / image (training forward)")]  # fmt: skip
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for ax, (key, label) in zip(axes, panels, strict=True):
        for name in dict.fromkeys(p["model"] for p in result["points"]):
            mine = [p for p in result["points"] if p["model"] == name]
            ax.plot([p["patches"] for p in mine], [p[key] for p in mine], "o-", label=name)
        ax.set_xlabel("patches S (image size / 16)^2", fontsize=8)
        ax.set_title(label, fontsize=9)
    axes[0].legend(fontsize=8)
    machine = result["machine"]
    fig.suptitle(f"{machine['gpu'] or machine['cpu']}, {machine['threads']} threads", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


# ------------------------------------------------------------------------------------------------ reporting


def format_rows(rows: list[Row]) -> str:
    """A Markdown table of the measurements (skipped ones included, with why)."""
    lines = [
        "| config | model | mode | task | batch | median ms | images/s | GFLOP/s | of GEMM | peak MiB | max diff |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def fmt(value: float | None, spec: str) -> str:
        return "" if value is None else format(value, spec)

    for r in rows:
        if r.status != "ok":
            lines.append(f"| {r.config} | {r.model} | {r.mode} | {r.task} | {r.batch_size} | {r.status} ||||||")
            continue
        task = r.task + (" (checkpointing)" if r.checkpointing else "")
        lines.append(
            f"| {r.config} | {r.model} | {r.mode} | {task} | {r.batch_size}"
            f" | {fmt(r.median_s and r.median_s * 1e3, '.1f')} | {fmt(r.images_per_s, '.1f')}"
            f" | {fmt(r.gflops, '.1f')} | {fmt(r.gemm_fraction, '.0%')}"
            f" | {fmt(r.peak_mib, '.0f')} | {fmt(r.max_abs_diff, '.1e')} |"
        )
    return "\n".join(lines)


def format_report(result: dict[str, Any]) -> str:
    """The machine, the measurements and the targets, as printed by ``mlp-mixer bench``."""
    m = result["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    header = (
        f"{m['gpu'] or m['cpu']} ({m['cpu_capability']}, flags: {' '.join(m['cpu_bf16_flags']) or 'none'}, "
        f"native bf16: {m['native_bf16']}{', our fp32 GEMMs: ' + m['cpu_gemm'] if 'cpu_gemm' in m else ''}), "
        f"{m['threads']} threads of {m['cores']} cores; {versions}; "
        f"malloc: {m.get('malloc', 'default')}; load average {m['loadavg']} before, {m['loadavg_after']} after; "
        f"{m['seconds']} s; "
        f"batch {result['batch_size']}, medians of {result['repeats']} timed calls (fewer where the plan says)"
    )
    rows = [Row(**r) for r in result["rows"]]
    return f"{header}\n\n{format_rows(rows)}\n\n{format_targets(result['targets'])}"


def format_targets(targets: list[dict[str, Any]]) -> str:
    """The targets this run measured as a table; the others in one line that says where they are defined."""
    measured = [t for t in targets if t["measured"] is not None]
    lines = []
    if measured:
        lines += ["| target | config | required | measured (per-repeat range) | status |", "|---|---|---:|---:|---|"]
    for t in measured:
        value = f"{t['measured']:.2f}"
        if t.get("spread"):
            value += f" ({t['spread'][0]:.2f}-{t['spread'][1]:.2f})"
        lines.append(f"| {t['description']} | {t['config']} | {t['required']:.2f} | {value} | {t['status']} |")
    others = [t for t in targets if t["measured"] is None]
    if others:
        configs = " and ".join(dict.fromkeys(c for _, _, _, cs in TARGETS for c in cs))
        lines += [
            "" if measured else None,
            f"Targets are checked only where they are defined ({configs} at batch"
            f" {TARGET_BATCH}; `mlp-mixer bench` with no options measures them all). Not measured here:",
        ]
        lines += [f"- {t['description']}: {t['status']}" for t in others]
    return "\n".join(line for line in lines if line is not None)


def write_results(result: dict[str, Any], output: str | Path, stem: str, plot: bool = True) -> list[Path]:
    """``<stem>.json`` (everything), ``.csv`` (one line per row), ``.md`` (the tables) and ``.png`` (images/s)."""
    output = Path(output)
    paths = [write_text(output / f"{stem}.json", json.dumps(result, indent=1) + "\n")]
    paths.append(write_text(output / f"{stem}.md", format_report(result) + "\n"))
    buffer = io.StringIO()
    names = [f for f in Row.__dataclass_fields__ if f != "times_s"]
    writer = csv.DictWriter(buffer, fieldnames=names, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(result["rows"])
    paths.append(write_text(output / f"{stem}.csv", buffer.getvalue()))
    if plot:
        paths.append(plot_results(result, output / f"{stem}.png"))
    return paths


def plot_results(result: dict[str, Any], path: Path) -> Path:
    """One panel per (config, task): images/s of each model in each mode, grouped bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["status"] == "ok" and r["images_per_s"]]
    panels = list(dict.fromkeys((r["config"], r["task"]) for r in rows))
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(3.2 * max(len(panels), 1), 3.6), squeeze=False)
    for ax, (config, task) in zip(axes[0], panels, strict=False):
        here = [r for r in rows if (r["config"], r["task"]) == (config, task)]
        modes = list(dict.fromkeys(r["mode"] for r in here))
        models = list(dict.fromkeys(r["model"] for r in here))
        width = 0.8 / len(models)
        for j, model in enumerate(models):
            values = [
                next((r["images_per_s"] for r in here if (r["model"], r["mode"]) == (model, m)), 0) for m in modes
            ]
            ax.bar([i + j * width for i in range(len(modes))], values, width, label=model)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(modes))], modes, fontsize=8)
        ax.set_title(f"{config} {task} (batch {here[0]['batch_size']})", fontsize=9)
        ax.set_ylabel("images/s", fontsize=8)
    if panels:
        axes[0][0].legend(fontsize=7)
    machine = result["machine"]
    fig.suptitle(
        f"{machine['gpu'] or machine['cpu']}, {machine['threads']} threads, torch {torch.__version__}", fontsize=9
    )
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def benchmark(
    plan: Iterable[Case],
    device: str | torch.device = "auto",
    batch_size: int = 32,
    repeats: int = 5,
    progress: bool = True,
) -> dict[str, Any]:
    """Run a plan; returns machine info (load before and after), every row, the GEMM rates and the targets.

    Args:
        plan: the cases to measure, e.g. ``DEFAULT_PLAN`` or ``plan_from_filters(...)``.
        device: ``"auto"`` (CUDA if present), ``"cpu"`` or ``"cuda"``.
        batch_size: images per call for ``infer``, ``train`` and ``memory`` (``latency`` uses 1).
        repeats: timed calls per model, after one untimed first call; medians are reported.
        progress: show a tqdm bar of timed calls.
    """
    if batch_size < 1 or repeats < 1:
        raise ValueError(f"--batch-size and --repeats must be at least 1, got {batch_size} and {repeats}")
    device = resolve_device(device) if isinstance(device, str) else device
    plan = tuple(plan)
    machine = machine_info(device)
    if device.type == "cpu":
        machine["cpu_gemm"] = "oneDNN for large channel-mixing GEMMs" if fast_paths().settings.onednn_gemm else "MKL"
    total = sum(
        (len(c.models) * len(c.modes) + 1) * len(set(c.tasks) - {"memory"}) * ((c.repeats or repeats) + 1) for c in plan
    )
    rows: list[Row] = []
    start = time.perf_counter()
    with tqdm(total=total, desc="bench", unit="call", disable=not progress) as bar:
        for case in plan:
            bar.set_postfix_str(case.config)
            rows += run_case(case, device, batch_size, repeats, bar)
    machine["loadavg_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    machine["seconds"] = round(time.perf_counter() - start, 1)
    return {
        "machine": machine,
        "batch_size": batch_size,
        "repeats": repeats,
        "plan": [asdict(c) for c in plan],
        "rows": [asdict(r) for r in rows],
        "targets": check_targets(rows, machine),
    }


# ------------------------------------------------------------------------------------------------------ CLI


def bench(
    *,
    quick: bool = False,
    configs: list[str] | None = None,
    models: list[str] | None = None,
    modes: list[str] | None = None,
    tasks: list[str] | None = None,
    batch_size: int = 32,
    repeats: int = 5,
    device: str = "auto",
    threads: int | None = None,
    output: str | Path = "benchmarks/results",
    plot: bool = True,
    keep_freed: bool = False,
    scaling_study: bool = False,
    resolutions: Sequence[int] = (64, 128, 224, 320, 448),
) -> tuple[dict[str, Any], str, list[Path]]:
    """``mlp-mixer bench``: run the default plan (or the filtered one, or the scaling study) and write the results.

    Args:
        quick: a smoke run: the tiny configuration, batch <= 4, 2 repeats.
        configs, models, modes, tasks: filters of the plan (None: the default plan's).
        keep_freed: glibc only: reuse freed memory (:func:`keep_freed_memory`); results get a ``_kept`` suffix.
        scaling_study: instead, Mixer-B/16 against ViT-B/16 over ``resolutions`` (:func:`scaling`).

    Returns:
        The result, its report as text, and the files written under ``output`` (JSON, CSV/MD, PNG).
    """
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    kept = keep_freed and keep_freed_memory()
    if keep_freed and not kept:
        raise ValueError("--keep-freed-memory needs glibc's mallopt, which this C library does not have")
    suffix = ("_quick" if quick else "") + ("_kept" if kept else "")
    if scaling_study:
        result = scaling(list(resolutions), device, 1 if quick else 4, min(repeats, 3))
        stem = f"scaling_{result['machine']['device'].split(':')[0]}{suffix}"
        paths = [write_text(Path(output) / f"{stem}.json", json.dumps(result, indent=1) + "\n")]
        if plot:
            paths.append(plot_scaling(result, Path(output) / f"{stem}.png"))
        return result, format_scaling(result), paths
    if quick:
        plan = plan_from_filters(configs or ["tiny"], models, modes, tasks)
        batch_size, repeats = min(batch_size, 4), min(repeats, 2)
    else:
        plan = plan_from_filters(configs, models, modes, tasks)
    result = benchmark(plan, device, batch_size, repeats)
    result["machine"]["malloc"] = "glibc, freed memory kept (--keep-freed-memory)" if kept else "default"
    stem = f"bench_{result['machine']['device'].split(':')[0]}{suffix}"
    return result, format_report(result), write_results(result, output, stem, plot=plot)
