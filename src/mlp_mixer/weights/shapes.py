"""A Mixer's sizes read off its weights: what lets the official and timm converters build the model they fill.

A state dict in our names (``MLPMixer.state_dict()``; the converters rename theirs first) holds every size but the
input resolution and the GELU form: the stem gives ``dim``, ``in_channels`` and the patch, the first token-mixing
layer ``token_dim`` and the number of patches S, the first channel-mixing layer ``channel_dim``, the head the
classes, and the count of blocks ``depth``. S is taken as a square grid unless the caller says the input size.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch


def config_from_state_dict(
    state: Mapping[str, torch.Tensor],
    image_size: int | tuple[int, int] | None = None,
    gelu: str = "tanh",
    source: str | Path = "state dict",
) -> dict[str, Any]:
    """The constructor arguments that fit a state dict in our layout, inferred from its shapes.

    Args:
        state: weights named as ``MLPMixer.state_dict()`` names them.
        image_size: the input size; by default the token-mixing width S is taken as a square grid.
        gelu: the GELU the weights were trained with (not visible in the shapes).
        source: named in errors.
    """
    try:
        dim, in_channels, patch_h, patch_w = state["stem.weight"].shape
        token_dim, num_patches = state["blocks.0.token_mixing.fc1.weight"].shape
        channel_dim = state["blocks.0.channel_mixing.fc1.weight"].shape[0]
        num_classes = state["head.weight"].shape[0] if "head.weight" in state else 0
    except (KeyError, ValueError, IndexError, AttributeError) as err:
        raise ValueError(f"{source} is not a Mixer's weights (missing or misshapen {err})") from err
    if patch_h != patch_w:
        raise ValueError(f"{source}: patches must be square, got {patch_h}x{patch_w}")
    depth = sum(1 for key in state if re.fullmatch(r"blocks\.\d+\.norm1\.weight", key))
    if image_size is None:
        side = math.isqrt(num_patches)
        if side * side != num_patches:
            raise ValueError(
                f"{source}: its token-mixing layer takes {num_patches} patches, not a square grid, so the input "
                "size cannot be inferred; give it (image_size= in Python, --image-size with mlp-mixer convert)"
            )
        image_size = side * patch_h
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if (h // patch_h) * (w // patch_h) != num_patches:
        raise ValueError(f"{source}: image_size {image_size} with patch {patch_h} does not give {num_patches} patches")
    return dict(
        in_channels=in_channels,
        dim=dim,
        num_classes=num_classes,
        patch_size=patch_h,
        image_size=image_size,
        depth=depth,
        token_dim=token_dim,
        channel_dim=channel_dim,
        gelu=gelu,
    )
