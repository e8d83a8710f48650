"""The one table of model sizes: the paper's Table 1, the seed's configuration, the main job's small Mixer and the
tiny test model. It imports nothing of ours: every other module (CLI, docs, tests, benchmarks) reads sizes here.

Names are the paper's ``"B/16"``; ``"Mixer-B/16"``, ``"B_16"``, ``"b16"`` and timm's ``"mixer_b16_224"`` are
accepted too. The constructor's names are the seed's; :data:`TIMM_NAMES` lists timm's spelling of each, which
:func:`seed_names` translates (the model, ``create_model`` and the loaders accept both).
"""

from __future__ import annotations

import re
from typing import Any

# name: (depth, patch_size, dim, token_dim, channel_dim)        -- Table 1 of arXiv 2105.01601
_TABLE = {
    "S/32": (8, 32, 512, 256, 2048),
    "S/16": (8, 16, 512, 256, 2048),
    "B/32": (12, 32, 768, 384, 3072),
    "B/16": (12, 16, 768, 384, 3072),
    "L/32": (24, 32, 1024, 512, 4096),
    "L/16": (24, 16, 1024, 512, 4096),
    "H/14": (32, 14, 1280, 640, 5120),
}
VARIANTS: dict[str, dict[str, Any]] = {
    name: dict(
        depth=d, patch_size=p, dim=c, token_dim=ds, channel_dim=dc, image_size=224, in_channels=3, num_classes=1000
    )
    for name, (d, p, c, ds, dc) in _TABLE.items()
}
PAPER_VARIANTS = tuple(_TABLE)

# The blog post the project started from: one Mixer layer of S/16's widths (3,110,316 parameters).
SEED = dict(
    in_channels=3, dim=512, num_classes=1000, patch_size=16, image_size=224, depth=1, token_dim=256, channel_dim=2048
)
# The main job's Mixer (README's first command): 4x4 patches of 7x7 pixels of a 28x28 digit; the data fixes
# in_channels and num_classes (1 and 10 for MNIST: 419,306 parameters). 16 tokens train in half the time of
# 4x4-pixel patches' 49 at the same held-out accuracy (docs/train.md).
MNIST = dict(dim=128, depth=6, token_dim=64, channel_dim=256, patch_size=7, image_size=28)
# PAPER.md's 0.67M-parameter CIFAR Mixer: the start for CIFAR and image folders on a CPU (patch and image size
# follow the data).
SMALL = dict(dim=128, depth=8, token_dim=64, channel_dim=256)
# Small enough for every test and for `mlp-mixer bench --quick`: 4x4 patches of a 16x16 image (16 tokens).
TINY = dict(in_channels=3, dim=32, num_classes=10, patch_size=4, image_size=16, depth=2, token_dim=16, channel_dim=64)


# timm's keyword -> ours, for the arguments both have. timm's ``drop_rate`` is the dropout before the head and its
# ``proj_drop_rate`` the dropout inside the MLPs (the seed's ``dropout``).
TIMM_NAMES = {
    "in_chans": "in_channels",
    "img_size": "image_size",
    "embed_dim": "dim",
    "num_blocks": "depth",
    "proj_drop_rate": "dropout",
    "drop_rate": "head_dropout",
    "drop_path_rate": "drop_path",
}


def seed_names(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with timm's names (:data:`TIMM_NAMES`) renamed to ours; a value given under both names is an error.

    Raises:
        ValueError: naming both spellings, e.g. ``in_channels`` and timm's ``in_chans``.
    """
    out = {k: v for k, v in kwargs.items() if k not in TIMM_NAMES}
    for timm_name, ours in TIMM_NAMES.items():
        if timm_name in kwargs:
            if ours in kwargs:
                raise ValueError(
                    f"{ours} is given twice: as {ours}={kwargs[ours]!r} and as timm's {timm_name}={kwargs[timm_name]!r}"
                )
            out[ours] = kwargs[timm_name]
    return out


def canonical_name(name: str) -> str:
    """Map any accepted spelling (``"Mixer-B/16"``, ``"b16"``, ``"mixer_b16_224"``) to ``"B/16"``."""
    match = re.fullmatch(r"(?:mixer[-_]?)?([sblh])[/_-]?(\d+)(?:_\d+)?", name.strip(), flags=re.IGNORECASE)
    if match:
        canonical = f"{match.group(1).upper()}/{match.group(2)}"
        if canonical in VARIANTS:
            return canonical
    raise ValueError(f"unknown variant {name!r}; valid names: {', '.join(VARIANTS)}")


def variant_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The constructor arguments of a named variant, with ``overrides`` (ours or timm's names) applied."""
    return {**VARIANTS[canonical_name(name)], **seed_names(overrides)}


def variant_name(config: dict[str, Any]) -> str | None:
    """The paper variant whose architecture ``config`` has (image size, channels and classes aside), or None."""
    keys = ("depth", "patch_size", "dim", "token_dim", "channel_dim")
    return next((n for n, v in VARIANTS.items() if all(v[k] == config.get(k) for k in keys)), None)


# What a model of given sizes can be before it is built: a size read from any file or option is checked here first,
# so a 272-byte config.json saying depth 10**7 is refused at once instead of building blocks for hours.
MAX_DEPTH = 1024  # 32x H/14's 32 layers; each block costs ~30 KB of Python objects and ~1.5 ms to build
MODULE_BYTES = 32 * 2**10  # that per-block overhead, in the estimate below


def machine_memory() -> int:
    """Physical memory in bytes (what a model's estimate is held against); 0 where the OS does not say."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def memory_estimate(config: dict[str, Any], batch_size: int = 1, training: bool = False) -> dict[str, int]:
    """Bytes a Mixer of ``config``'s sizes needs, per part: fp32 weights (x4 when training: gradients and AdamW's
    two moments), the activations of ``batch_size`` images (the largest tensor of a block, kept per block when
    training) and the modules' own objects. Each part names the sizes that make it, for the error message."""
    h, w = (config["image_size"],) * 2 if isinstance(config["image_size"], int) else config["image_size"]
    depth, dim, patch = config["depth"], config["dim"], config["patch_size"]
    tokens = (h // patch) * (w // patch)
    token_weights = depth * 2 * tokens * config["token_dim"]
    channel_weights = depth * 2 * dim * config["channel_dim"]
    other_weights = config["in_channels"] * patch * patch * dim + dim * config["num_classes"]
    per_image = max(tokens * dim, tokens * config["channel_dim"], dim * config["token_dim"])
    states = 4 if training else 1
    return {
        "image_size and patch_size (token-mixing weights)": 4 * states * token_weights,
        "dim and channel_dim (channel-mixing weights)": 4 * states * channel_weights,
        "dim, in_channels and num_classes (stem and head weights)": 4 * states * other_weights,
        "image_size (activations)": 4 * batch_size * per_image * (4 * depth if training else 3),
        "depth (modules)": MODULE_BYTES * depth,
    }


def check_model_size(
    config: dict[str, Any],
    source: str = "",
    batch_size: int = 1,
    training: bool = False,
    memory: int | None = None,
) -> None:
    """Raise ValueError when a Mixer of ``config``'s sizes cannot be built and run on this machine: depth over
    :data:`MAX_DEPTH`, or the :func:`memory_estimate` over the machine's memory (``memory``, default
    :func:`machine_memory`). The message names ``source``, the size at fault and the numbers."""
    prefix = f"{source}: " if source else ""
    if config["depth"] > MAX_DEPTH:
        raise ValueError(f"{prefix}depth {config['depth']:,} is over the limit of {MAX_DEPTH} layers")
    parts = memory_estimate(config, batch_size, training)
    memory = machine_memory() if memory is None else memory
    if memory and sum(parts.values()) > memory:
        worst = max(parts, key=parts.__getitem__)
        sizes = ", ".join(f"{k} {config[k]}" for k in ("dim", "depth", "token_dim", "channel_dim", "patch_size",
                                                          "image_size", "num_classes") if k in config)  # fmt: skip
        what = f"training on batches of {batch_size}" if training else "one image"
        raise ValueError(
            f"{prefix}a Mixer with {sizes} needs about {sum(parts.values()) / 2**30:,.1f} GiB for {what}, more than "
            f"this machine's {memory / 2**30:.1f} GiB; most of it from {worst}"
        )
