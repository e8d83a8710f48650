"""The one table of model sizes: the paper's Table 1, plus the seed's configuration and a tiny test size.

Every size in the project (CLI, docs, tests) is read from ``VARIANTS``. Names are the paper's ``"B/16"``;
``"Mixer-B/16"``, ``"B_16"``, ``"b16"`` and timm's ``"mixer_b16_224"`` are accepted too.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import torch

from .model import MLPMixer

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
# The blog post the project started from: one Mixer layer of S/16's widths (3,110,316 parameters).
SEED = dict(
    in_channels=3, dim=512, num_classes=1000, patch_size=16, image_size=224, depth=1, token_dim=256, channel_dim=2048
)

PAPER_VARIANTS = tuple(_TABLE)


def canonical_name(name: str) -> str:
    """Map any accepted spelling (``"Mixer-B/16"``, ``"b16"``, ``"mixer_b16_224"``) to ``"B/16"``."""
    match = re.fullmatch(r"(?:mixer[-_]?)?([sblh])[/_-]?(\d+)(?:_\d+)?", name.strip(), flags=re.IGNORECASE)
    if match:
        canonical = f"{match.group(1).upper()}/{match.group(2)}"
        if canonical in VARIANTS:
            return canonical
    raise ValueError(f"unknown variant {name!r}; valid names: {', '.join(VARIANTS)}")


def variant_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The constructor arguments of a named variant, with ``overrides`` applied."""
    return {**VARIANTS[canonical_name(name)], **overrides}


def create_model(name: str, *, device: str | torch.device | None = None, **overrides: Any) -> MLPMixer:
    """Build a named variant (``"S/32"`` ... ``"H/14"``); any constructor argument can be overridden.

    ``device="meta"`` builds the architecture without allocating its weights (for counting parameters).
    """
    config = variant_config(name, **overrides)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        return MLPMixer(**config)


def count_parameters(model: torch.nn.Module, head: bool = True) -> int:
    """Number of parameters, optionally without the classification head (as Table 1 counts them)."""
    total = sum(p.numel() for p in model.parameters())
    if not head and hasattr(model, "head"):
        total -= sum(p.numel() for p in model.head.parameters())
    return total
