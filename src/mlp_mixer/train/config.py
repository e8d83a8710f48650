"""The settings of a training run: every field, the recipes and per-data defaults they resolve from, the YAML
file, and the checks that reject a bad value before anything is loaded.

Settings come in layers: a field left ``None`` takes its value from the recipe (:data:`RECIPES`), then from the
data's defaults (:data:`DATA_DEFAULTS`), then from :data:`DEFAULTS`; a YAML file (``--config``) sets fields and
flags override it. The resolved config is saved with the run (``config.yaml``), and ``--config`` reads it back.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..data.shards import is_shards
from ..model.variants import MNIST, SMALL
from ..utils.cores import default_workers


@dataclass
class TrainConfig:
    """Every setting of a run. ``None`` means "not set": :func:`resolve_config` fills it from the recipe, the data's
    defaults and :data:`DEFAULTS`, in that order, so a saved config always holds concrete values."""

    # data
    data: str | None = None  # ImageFolder root, CIFAR python-pickle folder or shards; None: the embedded MNIST
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
    sam: float | None = None  # rho of sharpness-aware minimisation (two passes a step); 0 turns it off
    sam_every: int | None = None  # LookSAM: SAM's second pass every N steps, its flat direction reused between
    sam_alpha: float | None = None  # LookSAM: the reused direction's length, a fraction of the gradient's
    ema: float | None = None  # decay of an exponential moving average of the weights; 0 turns it off
    # augmentation
    affine: list[float] | None = None  # [degrees, translate, scale]: random affine on each image of a batch
    hflip: float | None = None  # probability of a horizontal flip
    crop_scale: float | None = None  # image files: RandomResizedCrop keeps at least this fraction of the area
    randaugment: list[int] | None = None  # [num_ops, magnitude] of torchvision's RandAugment; None: off
    mixup: float | None = None  # alpha of mixup; 0: off
    cutmix: float | None = None  # alpha of cutmix; 0: off
    no_aug_epochs: int | None = None  # the last N epochs train on unaugmented images (YOLOX's no_aug_epochs)
    # system
    amp: bool | None = None  # bf16 autocast
    compile: bool | None = None  # torch.compile the model
    device: str | None = None  # "auto", "cpu", "cuda", "cuda:1", "mps"
    seed: int | None = None
    workers: int | None = None  # DataLoader processes for image files
    threads: int | None = None  # CPU threads for PyTorch; None: its default, one per core (fewer on a busy machine)
    fsdp: bool | None = None  # with torchrun: shard weights, gradients and optimizer state (FSDP2) instead of DDP
    output: str | None = None  # run directory; None: runs/<data name>
    overwrite: bool | None = None  # a fresh run deletes an earlier run in --output instead of moving it aside
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
    sam=0.0,
    sam_every=1,
    sam_alpha=0.2,
    affine=[0.0, 0.0, 0.0],
    hflip=0.5,
    crop_scale=0.35,
    randaugment=None,
    mixup=0.0,
    cutmix=0.0,
    no_aug_epochs=0,
    amp=False,
    compile=False,
    device="auto",
    seed=0,
    workers=default_workers(),
    fsdp=False,
    overwrite=False,
)

# What each kind of data starts from when no model is given: a small Mixer for a CPU (sizes: variants.py).
DATA_DEFAULTS: dict[str, dict[str, Any]] = {
    # The embedded default (README's first command); the recipe is measured in docs/train.md. Digits are not
    # mirror-symmetric: no flips; small rotations, shifts and zooms instead. erf GELU and bf16 autocast (where bf16
    # is native) for speed: ATen's tanh GELU cost a quarter of a step, and bf16 GEMMs run ~2x fp32's on AVX512-BF16.
    "mnist": dict(
        **MNIST,
        gelu="exact",
        epochs=20,
        batch_size=32,
        lr=2e-3,
        amp=True,
        warmup_epochs=2.0,
        weight_decay=0.01,
        affine=[12.0, 0.1, 0.1],
        hflip=0.0,
        no_aug_epochs=3,
    ),
    "cifar10": dict(**SMALL, patch_size=4, image_size=32, affine=[0.0, 0.125, 0.0], epochs=100),
    "cifar100": dict(**SMALL, patch_size=4, image_size=32, affine=[0.0, 0.125, 0.0], epochs=100),
    "folder": dict(**SMALL, patch_size=8, image_size=64),
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


def resolve_config(config: TrainConfig, check_memory: bool = True) -> TrainConfig:
    """Fill every unset field (recipe, then data defaults, then :data:`DEFAULTS`) and check the values
    (``check_memory``: also that the model and batch fit this machine, as the final settings must)."""
    from ..data.sources import data_kind  # the dataset readers: not loaded to read the settings (--help)

    check_types(config)
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
    check_config(resolved, check_memory)
    return resolved


# The type of every setting that is not text (YAML can give a setting any type)
_KINDS: dict[str, type] = {
    **{f.name: float for f in fields(TrainConfig) if "float" in str(f.type)},
    **{f.name: int for f in fields(TrainConfig) if "int" in str(f.type)},
    **{f.name: bool for f in fields(TrainConfig) if "bool" in str(f.type)},
    **{f.name: list for f in fields(TrainConfig) if "list" in str(f.type)},
}


def check_types(c: TrainConfig) -> None:
    """Reject a value of the wrong type (YAML can give a setting any type), naming the setting."""
    for f in fields(c):
        value, kind = getattr(c, f.name), _KINDS.get(f.name, str)
        if value is None or (kind is list and isinstance(value, str)):  # "12,0.1,0.1" is parsed later
            continue
        fits = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            fits = True
        if not fits:
            expected = {int: "an integer", float: "a number", bool: "true or false", list: "a list"}.get(kind, "text")
            raise ValueError(f"--{f.name.replace('_', '-')} must be {expected}, got {value!r}")
    if c.data == "":
        raise ValueError("--data is empty (leave it out for the embedded MNIST digits)")


def check_config(c: TrainConfig, check_memory: bool = True) -> None:
    """Reject values that cannot work, with the option's name, before anything is loaded."""
    for name, allowed in CHOICES.items():
        if getattr(c, name) not in allowed:
            shown = ", ".join(str(a) for a in allowed if a is not None)
            raise ValueError(f"--{name} must be one of {shown}, got {getattr(c, name)!r}")
    for name in ("epochs", "batch_size", "grad_accum"):
        if not isinstance(getattr(c, name), int) or getattr(c, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(c, name)!r}")
    if not isinstance(c.no_aug_epochs, int) or c.no_aug_epochs < 0:  # >= --epochs: every epoch unaugmented
        raise ValueError(f"--no-aug-epochs must be a whole number of epochs, 0 or more, got {c.no_aug_epochs!r}")
    if not isinstance(c.sam_every, int) or isinstance(c.sam_every, bool) or c.sam_every < 1:
        raise ValueError(f"--sam-every must be a whole number of steps, 1 or more, got {c.sam_every!r}")
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
        "sam",
        "sam_alpha",
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
    if c.seed is not None and not 0 <= c.seed < 2**63:  # torch's generators take 64-bit seeds; ours mix 63 bits
        raise ValueError(f"--seed must be between 0 and 2**63 - 1, got {c.seed}")
    _check_augmentation(c)
    if check_memory:
        _check_model_memory(c)


# What each augmentation can take: beyond these, RandAugment indexes past its 31 magnitude bins (IndexError
# mid-run), a zoom of 1 +- scale reaches 0, and a NaN reaches the first step.
AFFINE_RANGES = {"degrees": (0.0, 180.0), "translate": (0.0, 1.0), "scale": (0.0, 0.99)}
RANDAUGMENT_RANGES = {"num_ops": (0, 16), "magnitude": (0, 30)}  # torchvision's num_magnitude_bins is 31


def _check_augmentation(c: TrainConfig) -> None:
    for name, (low, high) in zip(("degrees", "translate", "scale"), AFFINE_RANGES.values(), strict=True):
        value = (c.affine or [0.0, 0.0, 0.0])[list(AFFINE_RANGES).index(name)]
        if not (math.isfinite(value) and low <= value <= high):
            raise ValueError(f"--affine {name} must be a number in [{low:g}, {high:g}], got {value!r}")
    for name, (low, high) in RANDAUGMENT_RANGES.items():
        if c.randaugment is not None:
            value = c.randaugment[list(RANDAUGMENT_RANGES).index(name)]
            if not low <= value <= high:
                raise ValueError(f"--randaugment {name} must be an integer in [{low}, {high}], got {value}")


def _check_model_memory(c: TrainConfig) -> None:
    """A model of explicit sizes (a variant, the flags or the data's defaults) that cannot train on this machine is
    refused before the data is read (the model is checked again when built, with the data's channels and classes)."""
    from ..model.variants import check_model_size, variant_config

    try:
        sizes = {**(variant_config(c.model) if c.model else {}), **{k: getattr(c, k) for k in SIZE_FIELDS
                                                                    if getattr(c, k) is not None}}  # fmt: skip
    except ValueError as err:
        raise ValueError(f"--model: {err}") from err
    if c.init_from is not None or c.resume is not None or not all(k in sizes for k in SIZE_FIELDS):
        return
    for key in SIZE_FIELDS:
        if not isinstance(sizes[key], int) or sizes[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be a positive integer, got {sizes[key]!r}")
    if sizes["image_size"] % sizes["patch_size"]:
        raise ValueError(f"image_size {sizes['image_size']} is not divisible by patch_size {sizes['patch_size']}")
    sizes.update(in_channels=c.in_channels or 3, num_classes=c.num_classes or 0)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)  # under torchrun each process holds its share of a batch
    batch = max(1, c.batch_size // c.grad_accum // max(1, world))
    check_model_size(sizes, "the options", batch_size=batch, training=True)


def _unique_key_loader() -> type:
    """yaml's SafeLoader, refusing a mapping that repeats a key (it would keep the last one silently)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict:
            keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
            repeated = sorted({str(k) for k in keys if keys.count(k) > 1})
            if repeated:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{', '.join(repeated)} given twice", node.start_mark
                )
            return super().construct_mapping(node, deep=deep)

    return Loader


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML (or JSON) mapping of settings; keys may be kebab-case (``batch-size``) or snake_case."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        loaded = yaml.load(path.read_text(), Loader=_unique_key_loader()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"config file {path} is not valid YAML: {err}") from err
    if not isinstance(loaded, dict):
        raise ValueError(f"config file {path} must hold a mapping of settings, got {type(loaded).__name__}")
    # a run's own config.yaml also records what it resolved from the machine and data: informative, not settings
    values = {str(k).replace("-", "_"): v for k, v in loaded.items() if k != "resolved"}
    spelled: dict[str, list[str]] = {}
    for key in loaded:
        spelled.setdefault(str(key).replace("-", "_"), []).append(str(key))
    twice = [" and ".join(keys) for keys in spelled.values() if len(keys) > 1]
    if twice:  # batch-size and batch_size are one setting: which one was meant is not ours to guess
        raise ValueError(f"config file {path} gives a setting twice: {'; '.join(twice)}")
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ValueError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    return values


def default_output(data: str | None) -> str:
    """``runs/mnist`` for the embedded default, else ``runs/<folder name>``; a new run replaces an old one."""
    if data is None:
        return str(Path("runs") / "mnist")
    if data.startswith("hf:"):  # hf:owner/name?options -> runs/name
        return str(Path("runs") / (data[3:].split("?")[0].rstrip("/").split("/")[-1] or "data"))
    if is_shards(data) and not Path(data).is_dir():  # an index or a pattern: the shards' folder
        return str(Path("runs") / (Path(data).resolve().parent.name or "data"))
    return str(Path("runs") / (Path(data).resolve().name or "data"))
