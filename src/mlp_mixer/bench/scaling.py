"""``mlp-mixer bench --scaling``: Mixer-B/16 against timm's ViT-B/16 as the image grows (counted MACs, measured
time, activation memory), the paper's claim that Mixer's cost is linear in the number of patches."""

from __future__ import annotations

import functools
import math
import os
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..analysis.plots import save_figure
from ..analysis.summary import count_macs
from ..model.mixer import MLPMixer
from ..model.variants import variant_config
from ..utils.devices import machine_info, resolve_device
from .memory import peak_memory
from .peers import _images, bench_config
from .timing import inference_runner, time_interleaved


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
    """The study as a Markdown table, then each model's growth exponents between its two largest sizes."""
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
