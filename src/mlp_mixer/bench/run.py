"""A run: every case of the plan measured (the peers checked to agree, then each task and mode interleaved), the
targets judged, and ``bench()``, the function under ``mlp-mixer bench``."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..analysis.summary import count_macs
from ..model.fast_paths import fast_paths
from ..model.mixer import MLPMixer
from ..utils.devices import machine_info, resolve_device
from ..utils.files import write_text
from .memory import keep_freed_memory, peak_memory
from .peers import _images, bench_config, build_models
from .plan import Case, Row, plan_from_filters
from .report import format_report, write_results
from .scaling import format_scaling, plot_scaling, scaling
from .targets import check_targets, find_targets, load_targets
from .timing import gemm_call, inference_runner, mode_skip_reason, time_interleaved, train_runner


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
            if precision == "fp32" or any("bf16" in mode for _, mode in calls):
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
            reference = "bf16" if "bf16" in mode else "fp32"
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


def benchmark(
    plan: Iterable[Case],
    device: str | torch.device = "auto",
    batch_size: int = 32,
    repeats: int = 5,
    progress: bool = True,
    targets: str | Path | None = None,
) -> dict[str, Any]:
    """Run a plan; returns machine info (load before and after), every row, the GEMM rates and the targets.

    Args:
        plan: the cases to measure, e.g. ``DEFAULT_PLAN`` or ``plan_from_filters(...)``.
        device: ``"auto"`` (CUDA if present), ``"cpu"`` or ``"cuda"``.
        batch_size: images per call for ``infer``, ``train`` and ``memory`` (``latency`` uses 1).
        repeats: timed calls per model, after one untimed first call; medians are reported.
        progress: show a tqdm bar of timed calls.
        targets: the targets file to judge (:func:`~.targets.find_targets`: None reads the source checkout's
            ``benchmarks/targets.toml`` where there is one, else judges none). Read before measuring, so that a
            wrong file fails at once.
    """
    if batch_size < 1 or repeats < 1:
        raise ValueError(f"--batch-size and --repeats must be at least 1, got {batch_size} and {repeats}")
    targets_file = find_targets(targets)
    defined = load_targets(targets_file) if targets_file else []
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
        "targets_file": None if targets_file is None else str(targets_file),
        "targets": check_targets(rows, machine, defined),
    }


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
    targets: str | Path | None = None,
) -> tuple[dict[str, Any], str, list[Path]]:
    """``mlp-mixer bench``: run the default plan (or the filtered one, or the scaling study) and write the results.

    Args:
        quick: a smoke run: the tiny configuration, batch <= 4, 2 repeats.
        configs, models, modes, tasks: filters of the plan (None: the default plan's).
        keep_freed: glibc only: reuse freed memory (:func:`keep_freed_memory`); results get a ``_kept`` suffix.
        scaling_study: instead, Mixer-B/16 against ViT-B/16 over ``resolutions`` (:func:`scaling`).
        targets: the targets file to judge (None: ``benchmarks/targets.toml`` of the source checkout, if any).

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
    result = benchmark(plan, device, batch_size, repeats, targets=targets)
    result["machine"]["malloc"] = "glibc, freed memory kept (--keep-freed-memory)" if kept else "default"
    stem = f"bench_{result['machine']['device'].split(':')[0]}{suffix}"
    return result, format_report(result), write_results(result, output, stem, plot=plot)
