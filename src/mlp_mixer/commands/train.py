"""``mlp-mixer train``: train and evaluate (:func:`mlp_mixer.train.loop.train`).

Every flag defaults to "unset" so that a ``--config`` file and the recipe can fill it; the help shows the value an
unset flag resolves to, read from :mod:`mlp_mixer.train.config` (the one place those defaults are written).
"""

from __future__ import annotations

import argparse
from typing import Any

from ..train.config import DATA_DEFAULTS, DEFAULTS, FIELDS, RECIPES, TrainConfig, load_config_file, resolve_config

HELP = "train (and evaluate) a Mixer; no arguments: the embedded MNIST default"

_DATA_NAMES = {"mnist": "the embedded MNIST", "cifar10": "CIFAR", "cifar100": "CIFAR", "folder": "image folders"}


def resolved_default(name: str) -> str:
    """What an unset setting becomes, e.g. ``default: 0.005 on the embedded MNIST, 0.001 otherwise``."""

    def show(value: Any) -> str:
        return (
            "off"
            if value is None or value is False
            else ",".join(map(str, value))
            if isinstance(value, list)
            else str(value)
        )

    base = DEFAULTS.get(name)
    per_value: dict[str, list[str]] = {}
    for kind, values in DATA_DEFAULTS.items():
        if name in values and values[name] != base:
            per_value.setdefault(show(values[name]), [])
            if _DATA_NAMES[kind] not in per_value[show(values[name])]:
                per_value[show(values[name])].append(_DATA_NAMES[kind])
    parts = [f"{value} on {' and '.join(kinds)}" for value, kinds in per_value.items()]
    if name in DEFAULTS:
        parts.append(f"{show(base)} otherwise" if parts else show(base))
    recipes = [f"{show(r[name])} with --recipe {n}" for n, r in RECIPES.items() if name in r and r[name] != base]
    return "default: " + ("; ".join(parts) or "set by the data") + (f" ({', '.join(recipes)})" if recipes else "")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """timm-style flags; the help of each says what it resolves to when left out."""

    def option(group: Any, flag: str, help: str, **kwargs: Any) -> None:
        name = flag.removeprefix("--").replace("-", "_")
        if name in FIELDS and "default" not in help:
            help = f"{help} ({resolved_default(name)})"
        group.add_argument(flag, help=help, **kwargs)

    switch = dict(action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--config", help="YAML file of settings (keys as the flags); flags override it (default: none)")
    g = parser.add_argument_group("data")
    option(g, "--data", "ImageFolder root (train/ and val/, or one folder), a CIFAR-10/100 python folder, or shards: "
           "their index.json, its folder or a brace pattern; or a Hugging Face dataset: hf:owner/name, a save_to_disk "
           "folder or Parquet files, options ?split=train&val=test&image=COL&label=COL&streaming=1 (default: the "
           "embedded MNIST digits)")  # fmt: skip
    option(g, "--val-fraction", "share held out of a folder without val/", type=float)
    option(g, "--workers", "DataLoader processes for image files (default: one per core, at most 4)", type=int)
    option(g, "--threads", "CPU threads for PyTorch (default: one per core)", type=int)
    g = parser.add_argument_group("model (sizes: a variant, else the data's small Mixer)")
    option(g, "--model", "a paper variant (S/32 ... H/14); the size flags override it (default: none)")
    for flag in ("--dim", "--depth", "--token-dim", "--channel-dim", "--patch-size", "--image-size"):
        option(g, flag, flag.removeprefix("--").replace("-", "_"), type=int)
    option(g, "--in-channels", "image channels (default: from the data)", type=int)
    option(g, "--num-classes", "head size; must match the data (default: from the data)", type=int)
    option(g, "--gelu", "tanh (official) or exact (timm)")
    option(g, "--dropout", "dropout inside the MLPs", type=float)
    option(g, "--drop-path", "stochastic depth rate", type=float)
    g = parser.add_argument_group("fine-tuning")
    option(g, "--init-from", "start from a checkpoint or pretrained source, with a new zero head (default: none)")
    option(g, "--freeze-backbone", "train the head only", **switch)
    option(g, "--recipe", f"settings to start from: {', '.join(RECIPES)} (flags still override)")
    g = parser.add_argument_group("optimisation")
    option(g, "--epochs", "passes over the training split", type=int)
    option(g, "--batch-size", "images per optimizer step (over all processes)", type=int)
    option(g, "--grad-accum", "split each batch into N micro-batches (same result, less memory)", type=int)
    option(g, "--opt", "adamw or sgd")
    option(g, "--lr", "peak learning rate", type=float)
    option(g, "--weight-decay", "on weights, not on biases and LayerNorms", type=float)
    option(g, "--momentum", "SGD momentum", type=float)
    option(g, "--warmup-epochs", "linear warmup from 0", type=float)
    option(g, "--sched", "decay after warmup: cosine or linear")
    option(g, "--min-lr", "learning rate at the last step", type=float)
    option(g, "--clip-grad", "global-norm clipping (0: off)", type=float)
    option(g, "--smoothing", "label smoothing", type=float)
    option(g, "--ema", "EMA decay of the weights (0: off)", type=float)
    option(g, "--sam", "radius rho of sharpness-aware minimisation, e.g. 0.15 (0: off; two passes a step)", type=float)
    option(g, "--sam-every", "LookSAM: SAM's second pass every N steps, its flat direction reused between", type=int)
    option(g, "--sam-alpha", "LookSAM: the reused direction's length, a fraction of the gradient's", type=float)
    g = parser.add_argument_group("augmentation")
    option(g, "--affine", "DEGREES,TRANSLATE,SCALE random affine per image, e.g. 12,0.1,0.1")
    option(g, "--hflip", "horizontal flip probability", type=float)
    option(g, "--crop-scale", "image files: RandomResizedCrop minimum area fraction", type=float)
    option(g, "--randaugment", "NUM_OPS,MAGNITUDE of torchvision's RandAugment, e.g. 2,9")
    option(g, "--mixup", "mixup alpha (0: off)", type=float)
    option(g, "--cutmix", "cutmix alpha (0: off)", type=float)
    option(g, "--no-aug-epochs", "the last N epochs train on images as held-out sees them (YOLOX's)", type=int)
    g = parser.add_argument_group("system")
    option(g, "--amp", "bf16 autocast (where bf16 is native)", **switch)
    option(g, "--compile", "torch.compile the model (CUDA; on CPU it is slower and stays off, with a note)", **switch)
    option(g, "--device", "auto, cpu, cuda, cuda:N or mps")
    option(g, "--fsdp", "under torchrun: shard the model over the processes (FSDP2, for L/16 and H/14) instead of DDP",
           **switch)  # fmt: skip
    option(g, "--seed", "seeds the weights, the order and every augmentation", type=int)
    option(g, "--output", "run directory (default: runs/mnist, or runs/<data folder name>)")
    option(
        g,
        "--overwrite",
        "delete an earlier run in --output instead of moving it aside to <output>.<n>",
        action="store_true",
        default=None,
    )
    option(g, "--resume", "continue a run exactly: its folder (its last.pt) or a checkpoint (default: none)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Flags over the ``--config`` file over nothing (unset fields are resolved by ``train``)."""
    values = load_config_file(args.config) if getattr(args, "config", None) else {}
    if values:
        try:  # the file's own values first, so that an error in them names the file (the size of the run is
            resolve_config(TrainConfig(**values), check_memory=False)  # checked with the flags over them)
        except (ValueError, TypeError) as err:
            raise ValueError(f"config file {args.config}: {err}") from err
    for name in FIELDS:
        flag = getattr(args, name, None)
        if flag is not None:
            values[name] = flag
    return TrainConfig(**values)


def run(args: argparse.Namespace) -> int:
    from ..train.loop import train

    metrics = train(config_from_args(args))
    return {"completed": 0, "interrupted": 130, "nan": 1}[metrics["status"]]
