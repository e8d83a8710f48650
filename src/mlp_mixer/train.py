"""Train a Mixer (``mlp-mixer train``): the embedded MNIST default, CIFAR folders or your own images.

``mlp-mixer train`` with no arguments trains the small Mixer of :data:`DATA_DEFAULTS` ``["mnist"]`` on the 4,000
embedded MNIST training digits and evaluates it on the 1,000 held-out ones (see ``docs/train.md`` for what it
reaches and how long it takes). :func:`train` is the same thing from Python::

    from mlp_mixer.train import TrainConfig, train
    metrics = train(TrainConfig(data="photos/", epochs=20, output="runs/photos"))

The loop is linear, as torchvision's reference script: :func:`train_one_epoch`, :func:`evaluate_model`,
:func:`train`. Settings come in layers: a field left ``None`` takes its value from the recipe
(:data:`RECIPES`), then from the data's defaults (:data:`DATA_DEFAULTS`), then from :data:`DEFAULTS`; a YAML file
(``--config``) sets fields and flags override it. The resolved config is saved with the run.

Nothing is lost: checkpoints are written atomically; Ctrl-C finishes the current step, saves and exits; every
random draw is a function of (seed, step) (the sample order of an epoch, each sample's augmentation, dropout),
so ``--resume`` continues exactly where the run stopped, even within an epoch.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import data as datalib
from . import distributed
from .devices import cpu_model, native_bf16
from .distributed import all_reduce_sum, any_process, is_main_process
from .evaluate import EvalResult, evaluate_model, write_report
from .model import MLPMixer
from .variants import count_parameters, variant_config
from .weights import Preprocessing, _atomic_write, atomic_save, load_checkpoint, model_from_config

# ---------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class TrainConfig:
    """Every setting of a run. ``None`` means "not set": :func:`resolve_config` fills it from the recipe, the data's
    defaults and :data:`DEFAULTS`, in that order, so a saved config always holds concrete values."""

    # data
    data: str | None = None  # ImageFolder root or CIFAR python-pickle folder; None: the embedded MNIST digits
    val_fraction: float | None = None  # held out of a folder without val/ (per class, fixed seed)
    # model: a paper variant and/or explicit sizes; in_channels, image_size, num_classes follow the data
    model: str | None = None
    dim: int | None = None
    depth: int | None = None
    token_dim: int | None = None
    channel_dim: int | None = None
    patch_size: int | None = None
    image_size: int | None = None
    in_channels: int | None = None
    num_classes: int | None = None
    gelu: str | None = None
    dropout: float | None = None
    drop_path: float | None = None
    # fine-tuning
    init_from: str | None = None  # a checkpoint or save_pretrained directory; the head is replaced by a zero head
    freeze_backbone: bool | None = None  # train the head only
    recipe: str | None = None  # "scratch" or "finetune" (the official fine-tuning recipe)
    # optimisation
    epochs: int | None = None
    batch_size: int | None = None  # images per optimizer step (split into grad_accum micro-batches)
    grad_accum: int | None = None
    opt: str | None = None  # "adamw" or "sgd" (with momentum, nesterov off)
    lr: float | None = None
    weight_decay: float | None = None  # on weights only, not on biases and LayerNorms (as big_vision)
    momentum: float | None = None
    warmup_epochs: float | None = None
    sched: str | None = None  # "cosine" or "linear" decay to min_lr after the linear warmup
    min_lr: float | None = None
    clip_grad: float | None = None  # global-norm clipping; 0 turns it off
    smoothing: float | None = None  # label smoothing
    ema: float | None = None  # decay of an exponential moving average of the weights; 0 turns it off
    # augmentation
    affine: list[float] | None = None  # [degrees, translate, scale]: random affine on each image of a batch
    hflip: float | None = None  # probability of a horizontal flip
    crop_scale: float | None = None  # image files: RandomResizedCrop keeps at least this fraction of the area
    randaugment: list[int] | None = None  # [num_ops, magnitude] of torchvision's RandAugment; None: off
    mixup: float | None = None  # alpha of mixup; 0: off
    cutmix: float | None = None  # alpha of cutmix; 0: off
    # system
    amp: bool | None = None  # bf16 autocast
    compile: bool | None = None  # torch.compile the model
    device: str | None = None  # "auto", "cpu", "cuda", "cuda:1", "mps"
    seed: int | None = None
    workers: int | None = None  # DataLoader processes for image files
    threads: int | None = None  # CPU threads for PyTorch; None: its default, one per core (fewer on a busy machine)
    fsdp: bool | None = None  # with torchrun: shard weights, gradients and optimizer state (FSDP2) instead of DDP
    output: str | None = None  # run directory; None: runs/<data name>
    resume: str | None = None  # a checkpoint (or run directory) to continue exactly

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


FIELDS = [f.name for f in fields(TrainConfig)]
SIZE_FIELDS = ("dim", "depth", "token_dim", "channel_dim", "patch_size", "image_size")  # what a variant fixes

# Settings for any data, from scratch. AdamW with warmup and cosine decay, label smoothing and clipping at 1 is
# big_vision's from-scratch recipe (Adam, clip 1), scaled to small data.
DEFAULTS: dict[str, Any] = dict(
    val_fraction=0.1,
    gelu="tanh",
    dropout=0.0,
    drop_path=0.0,
    freeze_backbone=False,
    recipe="scratch",
    epochs=30,
    batch_size=128,
    grad_accum=1,
    opt="adamw",
    lr=1e-3,
    weight_decay=0.05,
    momentum=0.9,
    warmup_epochs=2.0,
    sched="cosine",
    min_lr=1e-5,
    clip_grad=1.0,
    smoothing=0.1,
    ema=0.0,
    affine=[0.0, 0.0, 0.0],
    hflip=0.5,
    crop_scale=0.35,
    randaugment=None,
    mixup=0.0,
    cutmix=0.0,
    amp=False,
    compile=False,
    device="auto",
    seed=0,
    workers=min(4, os.cpu_count() or 1),
    fsdp=False,
)

# What each kind of data starts from when no model is given: a small Mixer for a CPU.
SMALL_MIXER = dict(dim=128, depth=8, token_dim=64, channel_dim=256)  # PAPER.md's 0.67M-parameter CIFAR Mixer
DATA_DEFAULTS: dict[str, dict[str, Any]] = {
    # The embedded default (README's first command). 7x7 patches of 4x4 pixels; the recipe is measured in
    # docs/train.md. Digits are not mirror-symmetric: no flips; small rotations, shifts and zooms instead.
    "mnist": dict(
        dim=128,
        depth=6,
        token_dim=64,
        channel_dim=256,
        patch_size=4,
        image_size=28,
        epochs=40,
        lr=5e-3,
        warmup_epochs=3.0,
        affine=[12.0, 0.1, 0.1],
        hflip=0.0,
    ),
    "cifar10": dict(**SMALL_MIXER, patch_size=4, image_size=32, affine=[0.0, 0.125, 0.0], epochs=100),
    "cifar100": dict(**SMALL_MIXER, patch_size=4, image_size=32, affine=[0.0, 0.125, 0.0], epochs=100),
    "folder": dict(**SMALL_MIXER, patch_size=8, image_size=64),
}

# Named recipes; explicit settings (YAML or flags) still override them.
RECIPES: dict[str, dict[str, Any]] = {
    "scratch": {},
    # The official fine-tuning recipe (vit_jax): SGD momentum 0.9, no weight decay, clip 1, warmup then cosine.
    # Official lr 0.03 is for batch 512; 0.01 suits the smaller batches used here.
    "finetune": dict(
        opt="sgd",
        momentum=0.9,
        weight_decay=0.0,
        lr=0.01,
        warmup_epochs=1.0,
        sched="cosine",
        min_lr=0.0,
        clip_grad=1.0,
        smoothing=0.0,
        mixup=0.0,
        cutmix=0.0,
        epochs=10,
    ),
}

CHOICES = {
    "opt": ("adamw", "sgd"),
    "sched": ("cosine", "linear"),
    "gelu": ("tanh", "exact", None),
    "recipe": tuple(RECIPES),
}


def data_kind(data: str | None) -> str:
    """``"mnist"`` (the embedded default), ``"cifar10"``, ``"cifar100"`` or ``"folder"``."""
    if data is None:
        return "mnist"
    return datalib.cifar_kind(data) or "folder"


def _as_list(value: Any, name: str, kind: type, length: int) -> list | None:
    """``"12,0.1,0.1"`` or ``[12, 0.1, 0.1]`` -> a list of ``length`` numbers; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    try:
        values = [kind(v) for v in value]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be {length} comma-separated numbers, got {value!r}") from err
    if len(values) != length:
        raise ValueError(f"{name} must be {length} comma-separated numbers, got {value!r}")
    return values


def resolve_config(config: TrainConfig) -> TrainConfig:
    """Fill every unset field (recipe, then data defaults, then :data:`DEFAULTS`) and check the values."""
    recipe = config.recipe or DEFAULTS["recipe"]
    if recipe not in RECIPES:
        raise ValueError(f"--recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    kind = data_kind(config.data)
    # Model sizes come from a variant, the checkpoint being fine-tuned or resumed, or else the data's defaults.
    layers = [RECIPES[recipe]]
    if config.model is None and config.init_from is None:
        layers.append(DATA_DEFAULTS[kind])
    else:
        layers.append({k: v for k, v in DATA_DEFAULTS[kind].items() if k not in SIZE_FIELDS})
    layers.append(DEFAULTS)
    values = {}
    for name in FIELDS:
        value = getattr(config, name)
        for layer in layers:
            if value is not None:
                break
            value = layer.get(name)
        values[name] = value
    values["recipe"] = recipe
    if config.init_from is not None and config.gelu is None:
        values["gelu"] = None  # the checkpoint's GELU
    values["affine"] = _as_list(values["affine"], "--affine", float, 3)
    values["randaugment"] = _as_list(values["randaugment"], "--randaugment", int, 2)
    resolved = TrainConfig(**values)
    check_config(resolved)
    return resolved


def check_config(c: TrainConfig) -> None:
    """Reject values that cannot work, with the option's name, before anything is loaded."""
    for name, allowed in CHOICES.items():
        if getattr(c, name) not in allowed:
            raise ValueError(f"--{name} must be one of {', '.join(allowed)}, got {getattr(c, name)!r}")
    for name in ("epochs", "batch_size", "grad_accum"):
        if not isinstance(getattr(c, name), int) or getattr(c, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(c, name)!r}")
    if c.grad_accum > c.batch_size:
        raise ValueError(f"--grad-accum {c.grad_accum} is larger than --batch-size {c.batch_size}")
    for name in (
        "lr",
        "weight_decay",
        "momentum",
        "warmup_epochs",
        "min_lr",
        "clip_grad",
        "smoothing",
        "mixup",
        "cutmix",
        "dropout",
        "drop_path",
    ):
        value = getattr(c, name)
        if not isinstance(value, (int, float)) or value < 0 or not math.isfinite(value):
            raise ValueError(f"--{name.replace('_', '-')} must be a non-negative number, got {value!r}")
    if c.lr == 0:
        raise ValueError("--lr must be positive")
    if not 0 <= c.ema < 1:
        raise ValueError(f"--ema must be in [0, 1), got {c.ema}")
    if not 0 < c.crop_scale <= 1:
        raise ValueError(f"--crop-scale must be in (0, 1], got {c.crop_scale}")
    if not 0 <= c.hflip <= 1:
        raise ValueError(f"--hflip must be in [0, 1], got {c.hflip}")
    if not 0 < c.val_fraction < 1:
        raise ValueError(f"--val-fraction must be between 0 and 1, got {c.val_fraction}")
    if c.smoothing >= 1:
        raise ValueError(f"--smoothing must be below 1, got {c.smoothing}")
    if c.freeze_backbone and c.init_from is None and c.resume is None:
        raise ValueError("--freeze-backbone needs --init-from (a trained backbone to keep)")
    if c.gelu is None and c.init_from is None:
        raise ValueError("--gelu must be tanh or exact")
    if c.threads is not None and c.threads < 1:
        raise ValueError(f"--threads must be 1 or more, got {c.threads}")
    if c.workers < 0:
        raise ValueError(f"--workers must be 0 or more, got {c.workers}")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML (or JSON) mapping of settings; keys may be kebab-case (``batch-size``) or snake_case."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"config file {path} is not valid YAML: {err}") from err
    if not isinstance(loaded, dict):
        raise ValueError(f"config file {path} must hold a mapping of settings, got {type(loaded).__name__}")
    values = {str(k).replace("-", "_"): v for k, v in loaded.items()}
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ValueError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    return values


# ---------------------------------------------------------------------------------------------------------------
# Where DDP will slot in (issue 6): the device, the sampler, metric reduction and who writes files.


def setup_device(name: str) -> torch.device:
    """``"auto"``: CUDA if available, else MPS, else CPU. An unavailable device is an error before training."""
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
    return device


def epoch_batches(num_samples: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch: a permutation drawn from (seed, epoch) only, cut into full batches.

    The last partial batch is dropped (unless it is the only one), so every step sees ``batch_size`` images.
    """
    generator = torch.Generator().manual_seed(_mix(seed, 1, epoch))
    order = torch.randperm(num_samples, generator=generator).tolist()
    full = max(1, num_samples // batch_size)
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(full)]


def seed_global(seed: int, device: torch.device) -> None:
    """Seed the global generators that dropout, drop-path and mixup draw from: the CPU one and, on CUDA, that
    device's. (``torch.manual_seed`` would also queue seeds for every uninitialised accelerator backend, which
    costs milliseconds per call: too much for once per step.)"""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)


def _mix(*values: int) -> int:
    """A 63-bit seed from a tuple of ints (distinct tuples give unrelated seeds)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


# ---------------------------------------------------------------------------------------------------------------
# Data


def open_data(config: TrainConfig) -> datalib.DataSplits:
    """The train and held-out splits of ``config.data`` (no transforms yet); fails with one line if unusable."""
    return datalib.load_splits(config.data, config.val_fraction, config.in_channels)


def attach_transforms(splits: datalib.DataSplits, config: TrainConfig, preprocessing: Preprocessing) -> None:
    """Per-sample transforms (in workers): image files get a random resized crop (train) or the eval resize and
    crop (held-out); RandAugment on request. Everything else happens on whole batches (:class:`BatchAugment`)."""
    files = splits.native_size is None
    size = tuple(preprocessing.image_size)
    ra = tuple(config.randaugment) if config.randaugment else None
    splits.train.transform = datalib.train_geometry(size if files else None, config.crop_scale, ra)
    splits.val.transform = datalib.eval_geometry(preprocessing) if files else None


class BatchAugment:
    """Training augmentation on a float batch in [0, 1] (before normalising): random affine and flips."""

    def __init__(self, config: TrainConfig) -> None:
        self.degrees, self.translate, self.scale = config.affine
        self.hflip = config.hflip
        self.rows = distributed.batch_rows(config.batch_size)  # several processes: draw as for the whole batch

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images = datalib.random_affine(images, generator, self.degrees, self.translate, self.scale, rows=self.rows)
        return datalib.random_hflip(images, generator, self.hflip, rows=self.rows)


def mixing(config: TrainConfig, num_classes: int) -> Callable | None:
    """torchvision v2 MixUp / CutMix (one of the two per batch when both are on), or None."""
    from torchvision.transforms import v2

    chosen = []
    if config.mixup > 0:
        chosen.append(v2.MixUp(alpha=config.mixup, num_classes=num_classes))
    if config.cutmix > 0:
        chosen.append(v2.CutMix(alpha=config.cutmix, num_classes=num_classes))
    if not chosen:
        return None
    return chosen[0] if len(chosen) == 1 else v2.RandomChoice(chosen)


# ---------------------------------------------------------------------------------------------------------------
# Model


def _sizes_from(config: TrainConfig) -> dict[str, Any]:
    base = variant_config(config.model) if config.model else {}
    for key in SIZE_FIELDS:
        if getattr(config, key) is not None:
            base[key] = getattr(config, key)
    missing = [k for k in SIZE_FIELDS if k not in base]
    if missing:
        raise ValueError(f"the model needs {', '.join('--' + m.replace('_', '-') for m in missing)} (or --model)")
    return base


def build_model(
    config: TrainConfig, splits: datalib.DataSplits, checkpoint: dict[str, Any] | None = None
) -> tuple[MLPMixer, Preprocessing, list[str]]:
    """The model to train, its preprocessing and notes for the user.

    From scratch: a variant or explicit sizes, with in_channels and num_classes from the data. ``--init-from``:
    the stored model with a zero head for the data's classes, optionally at a new ``--image-size``
    (:func:`mlp_mixer.resize.resize_model`). ``--resume``: exactly the checkpoint's model.
    """
    notes = []
    num_classes = len(splits.classes)
    if config.num_classes is not None and config.num_classes != num_classes:
        raise ValueError(
            f"--num-classes {config.num_classes} does not match the data: {num_classes} classes "
            f"({_names(splits.classes)})"
        )
    extra = dict(dropout=config.dropout, drop_path=config.drop_path)
    if checkpoint is not None:  # --resume
        model = model_from_config({**checkpoint["model_config"], **extra})
        stored = list(checkpoint.get("classes", []))
        if stored != splits.classes:
            raise ValueError(
                f"checkpoint {config.resume} was trained on {len(stored)} classes ({_names(stored)}), the data has "
                f"{num_classes} ({_names(splits.classes)})"
            )
        _check_sizes(config, checkpoint["model_config"], f"checkpoint {config.resume}")
        preprocessing = Preprocessing.from_dict(checkpoint["preprocessing"])
        return model, preprocessing, notes
    if config.init_from is not None:
        from .weights import load_model

        loaded = load_model(config.init_from)
        stored_config = loaded.model.config()
        _check_sizes(config.replace(image_size=None), stored_config, f"--init-from {config.init_from}")
        model = model_from_config({**stored_config, **extra})
        model.load_state_dict(loaded.model.state_dict())
        if config.image_size is not None and (config.image_size, config.image_size) != tuple(model.image_size):
            from .resize import resize_model  # imported here: only fine-tuning at a new resolution needs it

            model = resize_model(model, config.image_size, method="auto")
            notes.append(f"resized the model from {stored_config['image_size']} to {list(model.image_size)}")
        model.reset_classifier(num_classes)
        preprocessing = dataclasses.replace(loaded.preprocessing, image_size=tuple(model.image_size))
        notes.append(f"initialised from {config.init_from}; new zero head for {num_classes} classes")
        return model, preprocessing, notes
    sizes = _sizes_from(config)
    in_channels = config.in_channels or splits.in_channels
    model = MLPMixer(
        in_channels=in_channels,
        num_classes=num_classes,
        gelu=config.gelu,
        **{k: sizes[k] for k in SIZE_FIELDS},
        **extra,
    )
    files = splits.native_size is None
    preprocessing = Preprocessing(
        image_size=tuple(model.image_size),
        mean=(0.5,) * in_channels,  # pixels to [-1, 1], as the official checkpoints
        std=(0.5,) * in_channels,
        crop_pct=0.875 if files else 1.0,  # in-memory datasets are already framed: resize the whole image
    )
    return model, preprocessing, notes


def _names(classes: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(classes[:limit])
    return shown + (f", ... ({len(classes)} in all)" if len(classes) > limit else "")


def _check_sizes(config: TrainConfig, stored: dict[str, Any], source: str) -> None:
    """Explicit size options must agree with a checkpoint's model (fine-tuning changes only head and resolution)."""
    for key in (*SIZE_FIELDS, "in_channels", "gelu"):
        wanted = getattr(config, key)
        have = stored[key]
        if key == "image_size" and wanted is not None:
            wanted = [wanted, wanted]
        if wanted is not None and (list(have) if isinstance(have, (list, tuple)) else have) != wanted:
            raise ValueError(f"{source} holds a model with {key} {have}, but the options ask for {key} {wanted}")
    if config.model is not None:
        variant = variant_config(config.model)
        for key in SIZE_FIELDS[:-1]:  # a variant's image size is a default, not part of its architecture
            if variant[key] != stored[key]:
                raise ValueError(
                    f"{source} holds a model with {key} {stored[key]}, not --model {config.model}'s {variant[key]}"
                )


# ---------------------------------------------------------------------------------------------------------------
# Optimizer and schedule


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices and conv kernels only; none on biases and LayerNorm parameters (as big_vision)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    groups = param_groups(model, config.weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    if config.opt == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    # The fused kernel updates all parameters in one pass (CPU and CUDA): several times faster for small models.
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.999), fused=fused)


def lr_factor(step: int, total: int, warmup: int, sched: str, floor: float) -> float:
    """Multiplier of the peak lr at optimizer step ``step``: linear warmup from 0, then cosine or linear decay
    to ``floor`` (= min_lr / lr) at the last step."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    decay = 0.5 * (1 + math.cos(math.pi * progress)) if sched == "cosine" else 1 - progress
    return floor + (1 - floor) * decay


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    total = config.epochs * steps_per_epoch
    warmup = min(total - 1, round(config.warmup_epochs * steps_per_epoch))
    floor = min(1.0, config.min_lr / config.lr)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup, config.sched, floor)
    )


class EMA:
    """An exponential moving average of the weights (evaluated and saved as the model when enabled)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = model_from_config(model.config()).to(next(model.parameters()).device).eval()
        self.model.load_state_dict(model.state_dict())
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        mine, theirs = list(self.model.parameters()), list(model.parameters())
        torch._foreach_lerp_(mine, theirs, 1 - self.decay)


# ---------------------------------------------------------------------------------------------------------------
# One epoch


class NonFiniteLoss(RuntimeError):
    """The loss (or the weights) stopped being finite."""


class Interrupt:
    """Ctrl-C (SIGINT) asks the loop to stop after the current step and save; a second Ctrl-C aborts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> Interrupt:
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\ninterrupted: saving a checkpoint after this step (Ctrl-C again to abort without saving)",
            file=sys.stderr,
            flush=True,
        )


@dataclass
class EpochStats:
    loss: float = 0.0
    top1: float = 0.0
    images: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # CPU time of this process (all threads): what the epoch costs on a quiet machine
    skipped: list[str] = field(default_factory=list)
    stopped: bool = False  # interrupted before the end of the epoch


def train_one_epoch(
    model: nn.Module,
    forward: Callable[[torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    batches: Iterator[datalib.Batch],
    config: TrainConfig,
    preprocessing: Preprocessing,
    device: torch.device,
    state: dict[str, int],
    interrupt: Interrupt,
    ema: EMA | None = None,
    progress: Any = None,
    mix: Callable | None = None,
) -> EpochStats:
    """One pass over ``batches``; ``state`` (``step``, ``batch``) advances with every optimizer step.

    Randomness is drawn per step from (seed, step): the batch augmentation from its own generator, dropout,
    drop-path and mixup from the global generator reseeded here. A resumed run therefore repeats exactly.
    """
    model.train()
    augment = BatchAugment(config)
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, images
    stats = EpochStats()
    start, cpu_start = time.perf_counter(), time.process_time()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp)
    params = [p for p in model.parameters() if p.requires_grad]
    for batch in batches:
        stats.skipped += batch.skipped
        step = state["step"]
        seed_global(_mix(config.seed, 2, step) + distributed.rank(), device)  # other processes: other dropout masks
        generator = torch.Generator(device).manual_seed(_mix(config.seed, 3, step))
        n = len(batch.labels)
        if n > 0:
            labels = batch.labels.to(device, non_blocking=True)
            images = datalib.to_input(
                batch.images, preprocessing, model.in_channels, device, augment=lambda x, g=generator: augment(x, g)
            )
            targets: torch.Tensor = labels
            if mix is not None and n > 1:
                images, targets = mix(images, labels)
            optimizer.zero_grad(set_to_none=True)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device)
            for chunk_x, chunk_t, chunk_y in zip(
                images.tensor_split(config.grad_accum),
                targets.tensor_split(config.grad_accum),
                labels.tensor_split(config.grad_accum),
                strict=True,
            ):
                if len(chunk_y) == 0:
                    continue
                with autocast:
                    logits = forward(chunk_x)
                    loss = F.cross_entropy(logits.float(), chunk_t, label_smoothing=config.smoothing)
                (loss * (len(chunk_y) / n)).backward()
                loss_sum += loss.detach() * len(chunk_y)
                correct += (logits.detach().argmax(1) == chunk_y).sum()
            if any_process(not torch.isfinite(loss_sum)):
                raise NonFiniteLoss(f"the loss became {loss_sum.item()} at step {step}")
            if config.clip_grad > 0:
                nn.utils.clip_grad_norm_(params, config.clip_grad)
            optimizer.step()
            if ema is not None:
                ema.update(model)
            totals += torch.stack([loss_sum.double().cpu(), correct.double().cpu(), torch.tensor(float(n))])
        scheduler.step()
        state["step"] += 1
        state["batch"] += 1
        if progress is not None:
            elapsed = time.perf_counter() - start
            seen = max(1.0, totals[2].item())
            progress.set_postfix(
                loss=f"{totals[0].item() / seen:.4f}",
                acc=f"{100 * totals[1].item() / seen:.1f}%",
                img_s=f"{totals[2].item() / max(elapsed, 1e-9):.0f}",
                refresh=False,
            )
            progress.update(1)
        if any_process(interrupt.requested):  # all processes stop after the same step
            stats.stopped = True
            break
    totals = all_reduce_sum(totals)
    stats.images = int(totals[2].item())
    stats.loss = totals[0].item() / max(1, stats.images)
    stats.top1 = totals[1].item() / max(1, stats.images)
    stats.seconds = time.perf_counter() - start
    stats.cpu_seconds = time.process_time() - cpu_start
    return stats


# ---------------------------------------------------------------------------------------------------------------
# Files of a run


def _write_atomic(path: Path, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text.encode()))


class RunFiles:
    """Everything a run writes, in one place (and only on the main process): resolved config, per-epoch CSV,
    TensorBoard scalars, the curves PNG, checkpoints and ``metrics.json``."""

    CSV_FIELDS = (
        "epoch",
        "step",
        "lr",
        "train_loss",
        "train_top1",
        "val_loss",
        "val_top1",
        "val_top5",
        "epoch_seconds",
        "epoch_cpu_seconds",
        "images_per_second",
        "skipped",
    )

    def __init__(self, output: Path, fresh: bool, purge_step: int | None = None) -> None:
        self.output = output
        self.enabled = is_main_process()
        self.tb = None
        if not self.enabled:
            return
        output.mkdir(parents=True, exist_ok=True)
        if fresh:  # a new run in an old directory: its files are replaced, TensorBoard events too
            shutil.rmtree(output / "tb", ignore_errors=True)
            for name in (
                "last.pt",
                "best.pt",
                "log.csv",
                "metrics.json",
                "eval.json",
                "curves.png",
                "confusion_matrix.png",
                "config.yaml",
            ):
                (output / name).unlink(missing_ok=True)
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(output / "tb"), purge_step=purge_step)

    def config(self, config: TrainConfig, extra: dict[str, Any]) -> None:
        if self.enabled:
            import yaml

            _write_atomic(
                self.output / "config.yaml", yaml.safe_dump({**dataclasses.asdict(config), **extra}, sort_keys=False)
            )

    def epoch(self, history: list[dict[str, Any]]) -> None:
        if not self.enabled:
            return
        row = history[-1]
        for key in ("lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "images_per_second"):
            self.tb.add_scalar(
                key.replace("_", "/", 1) if key.startswith(("train_", "val_")) else key, row[key], row["step"]
            )
        self.tb.flush()
        lines = [",".join(self.CSV_FIELDS)]
        lines += [",".join(_csv_value(r.get(k)) for k in self.CSV_FIELDS) for r in history]
        _write_atomic(self.output / "log.csv", "\n".join(lines) + "\n")

    def curves(self, history: list[dict[str, Any]]) -> None:
        """The PNG of the curves, once at the end (drawing takes seconds; TensorBoard shows them live)."""
        if self.enabled and history:
            plot_curves(history, self.output / "curves.png")

    def json(self, name: str, data: dict[str, Any]) -> None:
        if self.enabled:
            _write_atomic(self.output / name, json.dumps(data, indent=2) + "\n")

    def checkpoint(self, name: str, checkpoint: dict[str, Any]) -> None:
        if self.enabled:
            atomic_save(checkpoint, self.output / name)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _csv_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The per-epoch rows of a run's ``log.csv``, with numbers as numbers."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in rows]


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    """Loss and accuracy per epoch, train and held-out, as one PNG (matplotlib without a display)."""
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(10, 4))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.9, wspace=0.22)
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, [r["train_loss"] for r in history], label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], label="held-out")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.plot(epochs, [100 * r["train_top1"] for r in history], label="train (augmented)")
    ax_acc.plot(epochs, [100 * r["val_top1"] for r in history], label="held-out top-1")
    ax_acc.set(xlabel="epoch", ylabel="%", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints


def rng_states(device: torch.device) -> dict[str, Any]:
    states: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states: dict[str, Any], device: torch.device) -> None:
    if "torch" in states:
        torch.set_rng_state(states["torch"])
    if "cuda" in states and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)


def make_checkpoint(
    model: MLPMixer,
    ema: EMA | None,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    config: TrainConfig,
    classes: list[str],
    preprocessing: Preprocessing,
    epoch: int,
    state: dict[str, int],
    history: list[dict[str, Any]],
    best: dict[str, Any],
    device: torch.device,
) -> dict[str, Any]:
    """The plain dict of ``weights.py``'s layout. ``model`` holds the weights to use (the EMA when enabled);
    ``train_model`` the raw training weights when they differ."""
    checkpoint = {
        "model": distributed.full_state_dict(ema.model if ema is not None else model),
        "model_config": model.config(),
        "classes": list(classes),
        "preprocessing": preprocessing.to_dict(),
        "optimizer": distributed.full_optimizer_state(optimizer),  # FSDP: gathered, as one process has it
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,  # completed epochs
        "batch": state["batch"],  # optimizer steps done in the next epoch (non-zero after an interruption)
        "step": state["step"],
        "rng": rng_states(device),
        "config": dataclasses.asdict(config),
        "history": history,
        "best": best,
    }
    if ema is not None:
        checkpoint["train_model"] = distributed.full_state_dict(model)
    return checkpoint


def _all_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def resume_path(path: str | Path) -> Path:
    """A checkpoint file, or a run directory (its ``last.pt``)."""
    path = Path(path)
    return path / "last.pt" if path.is_dir() else path


# ---------------------------------------------------------------------------------------------------------------
# The run


def machine_info() -> dict[str, Any]:
    info = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
    }
    with contextlib.suppress(OSError, AttributeError):
        info["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    return info


def train(config: TrainConfig, on_epoch_end: Callable[[dict[str, Any]], bool | None] | None = None) -> dict[str, Any]:
    """Train and evaluate; returns the metrics written to ``metrics.json``.

    Args:
        config: the settings; unset fields are resolved (recipe, data defaults, :data:`DEFAULTS`).
        on_epoch_end: called with each epoch's log row; returning True stops the run as Ctrl-C does (a
            checkpoint is saved and the run can be resumed).

    Returns:
        ``val_top1``, ``val_top5``, ``val_loss`` of the final weights on the held-out split, ``epochs``,
        ``train_seconds``, ``best_val_top1``, ``status`` (``"completed"``, ``"interrupted"`` or ``"nan"``) and more.

    Raises:
        ValueError, FileNotFoundError: the run cannot start (bad option, data or checkpoint); nothing was trained.
    """
    checkpoint = None
    if config.resume is not None:
        if config.init_from is not None:
            raise ValueError("--init-from and --resume cannot be combined: --resume already holds the weights")
        path = resume_path(config.resume)
        checkpoint = load_checkpoint(path)
        if "optimizer" not in checkpoint or "config" not in checkpoint:
            raise ValueError(f"checkpoint {path} holds weights only (no optimizer state): use --init-from")
        stored = TrainConfig(**{k: v for k, v in checkpoint["config"].items() if k in FIELDS})
        overrides = {k: getattr(config, k) for k in FIELDS if getattr(config, k) is not None}
        config = stored.replace(**{**overrides, "resume": str(path), "output": config.output or str(path.parent)})
    config = resolve_config(config)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = setup_device(config.device)
    distributed.init_from_env(device)  # under torchrun: join the other processes (nothing happens otherwise)
    device = distributed.process_device(device)  # cuda -> cuda:LOCAL_RANK
    splits = open_data(config)
    distributed.check_config(config.batch_size, config.grad_accum, len(splits.train), config.fsdp, config.ema)
    torch.manual_seed(config.seed)  # the initial weights too (torch's default seed differs in every process)
    model, preprocessing, notes = build_model(config, splits, checkpoint)
    if config.freeze_backbone:
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith("head.")
    attach_transforms(splits, config, preprocessing)
    val_part = distributed.shard_dataset(splits.val)  # each process evaluates its share; the counts are summed
    busy = _busy_note(device, config.threads)
    if busy:
        notes.append(busy)
    if config.amp and not native_bf16(device):
        notes.append(f"--amp: this {device.type.upper()} has no native bf16; training in fp32 instead")
        config = config.replace(amp=False)
    if config.compile and device.type == "cpu":
        # Measured with `mlp-mixer bench` (benchmarks/results/bench_cpu.md): a compiled CPU training step of the
        # small config took 673 ms against 611 ms eager, so the flag would slow down the run it was meant to speed up.
        notes.append("--compile: on CPU a compiled training step is slower than eager (docs/train.md); training eager")
        config = config.replace(compile=False)
    if config.fsdp and distributed.world_size() == 1:
        notes.append("--fsdp: one process, nothing to shard (start several with torchrun); training unsharded")
    torch.manual_seed(config.seed)
    model.to(device)
    forward = distributed.wrap_model(model, device, fsdp=config.fsdp)  # DDP or FSDP2 under torchrun
    forward = torch.compile(forward) if config.compile else forward
    steps_per_epoch = len(epoch_batches(len(splits.train), config.batch_size, config.seed, 0))
    optimizer = build_optimizer(model, config, device)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch)
    ema = EMA(model, config.ema) if config.ema > 0 else None
    output = Path(config.output or default_output(config.data))
    state = {"step": 0, "batch": 0}
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"val_top1": -1.0, "epoch": 0}
    start_epoch = 0
    if checkpoint is not None:
        distributed.load_model_state(model, checkpoint.get("train_model", checkpoint["model"]))
        if ema is not None:
            ema.model.load_state_dict(checkpoint["model"])
        try:
            distributed.load_optimizer_state(optimizer, checkpoint["optimizer"])
        except (ValueError, KeyError) as err:
            raise ValueError(f"the optimizer state in {config.resume} does not fit --opt {config.opt}: {err}") from err
        scheduler.load_state_dict(checkpoint["scheduler"])
        set_rng_states(checkpoint.get("rng", {}), device)
        start_epoch, history, best = checkpoint["epoch"], list(checkpoint["history"]), dict(checkpoint["best"])
        state = {"step": checkpoint["step"], "batch": checkpoint["batch"]}
        if start_epoch >= config.epochs:
            raise ValueError(
                f"{config.resume} already finished {start_epoch} epochs; pass --epochs N > {start_epoch}"
                " to train longer"
            )
    files = RunFiles(output, fresh=checkpoint is None, purge_step=state["step"] if checkpoint else None)
    info = {
        "parameters": count_parameters(model),
        "device": str(device),
        "machine": machine_info(),
        "data_kind": splits.kind,
        "classes": splits.classes,
    }
    files.config(config, {"resolved": info})
    say = print if is_main_process() else (lambda *a, **k: None)
    model_desc = ", ".join(f"{k} {v}" for k, v in model.config().items() if k != "gelu")
    say(
        f"data: {splits.kind} {config.data or '(embedded MNIST digits)'}: {len(splits.train)} train / "
        f"{len(splits.val)} held-out images, {len(splits.classes)} classes"
    )
    for note in splits.notes + notes:
        say(f"note: {note}")
    say(f"model: {model_desc}; {info['parameters']:,} parameters on {device}")
    say(
        f"run: {config.epochs} epochs of {steps_per_epoch} steps, batch {config.batch_size}, {config.opt} lr "
        f"{config.lr:g}, output in {output}" + (f" (resuming at epoch {start_epoch + 1})" if checkpoint else "")
    )

    mix = mixing(config, model.num_classes)
    skipped: list[str] = []
    status = "completed"
    last_eval: EvalResult | None = None
    stats = EpochStats()
    train_seconds = sum(r.get("epoch_seconds", 0.0) + r.get("eval_seconds", 0.0) for r in history)
    epoch = start_epoch

    def save(epoch_done: int) -> dict[str, Any]:  # the state now (history and best as they are at the call)
        return make_checkpoint(
            model,
            ema,
            optimizer,
            scheduler,
            config,
            splits.classes,
            preprocessing,
            epoch_done,
            state,
            history,
            best,
            device,
        )

    def evaluate_held_out() -> EvalResult:
        eval_model = ema.model if ema is not None else model
        with distributed.unsharded(eval_model):  # FSDP: whole weights, so the shares need not match
            return evaluate_model(
                eval_model,
                val_part,
                preprocessing,
                device,
                config.batch_size * 2,
                config.workers,
                amp=config.amp,
                reduce=all_reduce_sum,
            )

    try:
        with Interrupt() as interrupt:
            for epoch in range(start_epoch, config.epochs):
                batches = epoch_batches(len(splits.train), config.batch_size, config.seed, epoch)[state["batch"] :]
                batches = [distributed.shard_batch(b) for b in batches]  # this process's part of each batch
                splits.train.epoch_seed = _mix(config.seed, 4, epoch)
                progress = _progress(len(batches), f"epoch {epoch + 1}/{config.epochs}")
                try:
                    stats = train_one_epoch(
                        model,
                        forward,
                        optimizer,
                        scheduler,
                        datalib.iterate_batches(splits.train, batches, config.workers, device),
                        config,
                        preprocessing,
                        device,
                        state,
                        interrupt,
                        ema,
                        progress,
                        mix,
                    )
                finally:
                    if progress is not None:
                        progress.close()
                skipped += stats.skipped
                if not _all_finite(model):
                    raise NonFiniteLoss(f"the weights stopped being finite in epoch {epoch + 1}")
                if stats.stopped:
                    status = "interrupted"
                    files.checkpoint("last.pt", save(epoch))
                    break
                eval_start = time.perf_counter()
                last_eval = evaluate_held_out()
                skipped += last_eval.skipped
                eval_seconds = time.perf_counter() - eval_start
                train_seconds += stats.seconds + eval_seconds
                state["batch"] = 0
                row = dict(
                    epoch=epoch + 1,
                    step=state["step"],
                    lr=optimizer.param_groups[0]["lr"],
                    train_loss=stats.loss,
                    train_top1=stats.top1,
                    val_loss=last_eval.loss,
                    val_top1=last_eval.top1,
                    val_top5=last_eval.top5,
                    epoch_seconds=stats.seconds,
                    epoch_cpu_seconds=stats.cpu_seconds,
                    eval_seconds=eval_seconds,
                    images_per_second=stats.images / max(stats.seconds, 1e-9),
                    skipped=len(stats.skipped) + len(last_eval.skipped),
                )
                history.append(row)
                improved = last_eval.top1 > best["val_top1"]
                if improved:
                    best = {"val_top1": last_eval.top1, "epoch": epoch + 1}
                checkpoint_now = save(epoch + 1)
                files.checkpoint("last.pt", checkpoint_now)
                if improved:
                    files.checkpoint("best.pt", checkpoint_now)
                files.epoch(history)
                say(
                    f"epoch {epoch + 1}/{config.epochs}  loss {stats.loss:.4f}  train {100 * stats.top1:.2f}%  "
                    f"held-out {100 * last_eval.top1:.2f}% (top-5 {100 * last_eval.top5:.2f}%)  "
                    f"lr {row['lr']:.2e}  {stats.seconds:.1f}s  {row['images_per_second']:.0f} img/s",
                    flush=True,
                )
                if on_epoch_end is not None and any_process(bool(on_epoch_end(row))):
                    status = "interrupted"
                    break
    except NonFiniteLoss as err:
        status = "nan"
        say(
            f"error: {err}; stopped. The last good checkpoint is kept: {output / 'last.pt'}"
            f" (epoch {history[-1]['epoch'] if history else 0})",
            file=sys.stderr,
        )
    except KeyboardInterrupt:
        files.close()
        raise

    skipped = distributed.gather_list(skipped)
    completed = len(history)
    metrics: dict[str, Any] = {
        "status": status,
        "epochs": completed,
        "step": state["step"],
        "train_seconds": round(train_seconds, 2),
        "seconds_per_epoch": round(train_seconds / completed, 2) if completed else None,
        "train_cpu_seconds": round(sum(r.get("epoch_cpu_seconds", 0.0) for r in history), 2),
        "best_val_top1": best["val_top1"] if completed else None,
        "best_epoch": best["epoch"] if completed else None,
        "skipped_images": len(set(skipped)),
        **info,
    }
    if last_eval is None and history:  # stopped in the first epoch after resuming: evaluate what there is
        last_eval = evaluate_held_out()
    if last_eval is not None and status != "nan":
        metrics.update(
            val_top1=last_eval.top1, val_top5=last_eval.top5, val_loss=last_eval.loss, val_images=last_eval.count
        )
        if is_main_process():
            write_report(last_eval, splits.classes, output, source=f"{output / 'last.pt'}", split="held-out")
    metrics["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    files.json("metrics.json", metrics)
    files.curves(history)
    files.close()
    if skipped:
        say(f"skipped {len(set(skipped))} unreadable image(s) (listed in {output / 'skipped.txt'}):")
        for reason in sorted(set(skipped))[:10]:
            say(f"  {reason}")
        if is_main_process():
            _write_atomic(output / "skipped.txt", "\n".join(sorted(set(skipped))) + "\n")
    if status == "interrupted":
        say(
            f"stopped at epoch {epoch + 1}, step {state['step']}; continue with: mlp-mixer train --resume "
            f"{output / 'last.pt'}"
        )
    elif status == "completed" and last_eval is not None:
        say(
            f"held-out top-1 {100 * last_eval.top1:.2f}% (top-5 {100 * last_eval.top5:.2f}%) after {completed} "
            f"epochs, {train_seconds:.0f} s of training; run in {output}"
        )
    distributed.barrier()  # the other processes return once the main one has written the run's files
    return metrics


def default_output(data: str | None) -> str:
    """``runs/mnist`` for the embedded default, else ``runs/<folder name>``; a new run replaces an old one."""
    if data is None:
        return str(Path("runs") / "mnist")
    return str(Path("runs") / (Path(data).resolve().name or "data"))


def _progress(total: int, desc: str) -> Any:
    if not is_main_process():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, disable=None, unit="step")


def _busy_note(device: torch.device, threads: int | None) -> str | None:
    """A hint when other processes already keep the cores busy: PyTorch's threads then wait on each other, and
    one thread can be several times faster than one per core. (Not changed automatically: the thread count
    changes the order of floating-point sums, and the same command should give the same numbers.)"""
    if device.type != "cpu" or threads is not None or not hasattr(os, "getloadavg"):
        return None
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if torch.get_num_threads() > 1 and load > cores - 0.5:
        return (
            f"the machine is busy (load average {load:.1f} on {cores} cores): --threads 1 may train several "
            "times faster"
        )
    return None


# ---------------------------------------------------------------------------------------------------------------
# Command line


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """timm-style flags; every default is None ("unset") so that a --config file and the recipe can fill it."""
    from .cli import add_model_arguments

    parser.add_argument("--config", help="YAML file of settings (keys as the flags); flags override it")
    g = parser.add_argument_group("data")
    g.add_argument(
        "--data",
        help="ImageFolder root (train/ and val/, or one folder) or a CIFAR-10/100 python folder;"
        " default: the embedded MNIST digits",
    )
    g.add_argument("--val-fraction", type=float, help="held out of a folder without val/ (default 0.1)")
    g.add_argument("--workers", type=int, help="data loading processes for image files")
    g.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: one per core)")
    add_model_arguments(parser, variant=False)
    g = parser.add_argument_group("model")
    g.add_argument("--model", help="a paper variant (S/32 ... H/14); the size flags override it")
    g.add_argument("--dropout", type=float)
    g.add_argument("--drop-path", type=float, help="stochastic depth rate")
    g = parser.add_argument_group("fine-tuning")
    g.add_argument("--init-from", help="start from a checkpoint or save_pretrained directory (new zero head)")
    g.add_argument("--freeze-backbone", action=argparse.BooleanOptionalAction, default=None, help="train the head only")
    g.add_argument("--recipe", help=f"settings to start from: {', '.join(RECIPES)} (flags still override)")
    g = parser.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--grad-accum", type=int, help="split each batch into N micro-batches (same result, less memory)")
    g.add_argument("--opt", help="adamw or sgd")
    g.add_argument("--lr", type=float)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--momentum", type=float)
    g.add_argument("--warmup-epochs", type=float)
    g.add_argument("--sched", help="cosine or linear")
    g.add_argument("--min-lr", type=float)
    g.add_argument("--clip-grad", type=float, help="global-norm clipping (0: off)")
    g.add_argument("--smoothing", type=float, help="label smoothing")
    g.add_argument("--ema", type=float, help="EMA decay of the weights (0: off)")
    g = parser.add_argument_group("augmentation")
    g.add_argument("--affine", help="DEGREES,TRANSLATE,SCALE random affine per image, e.g. 12,0.1,0.1")
    g.add_argument("--hflip", type=float, help="horizontal flip probability")
    g.add_argument("--crop-scale", type=float, help="image files: RandomResizedCrop minimum area fraction")
    g.add_argument("--randaugment", help="NUM_OPS,MAGNITUDE of torchvision's RandAugment, e.g. 2,9")
    g.add_argument("--mixup", type=float, help="mixup alpha (0: off)")
    g.add_argument("--cutmix", type=float, help="cutmix alpha (0: off)")
    g = parser.add_argument_group("system")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile the model")
    g.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    g.add_argument(
        "--fsdp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="under torchrun: shard the model over the processes (FSDP2, for L/16 and H/14) instead of DDP",
    )
    g.add_argument("--seed", type=int)
    g.add_argument("--output", help="run directory (default: runs/mnist, or runs/<data folder name>)")
    g.add_argument("--resume", help="continue a run exactly: its last.pt or its directory")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Flags over the ``--config`` file over nothing (unset fields are resolved later)."""
    values = load_config_file(args.config) if getattr(args, "config", None) else {}
    for name in FIELDS:
        flag = getattr(args, name, None)
        if flag is not None:
            values[name] = flag
    return TrainConfig(**values)


def run_train(args: argparse.Namespace) -> int:
    metrics = train(config_from_args(args))
    return {"completed": 0, "interrupted": 130, "nan": 1}[metrics["status"]]
