"""The models compared: ours and each peer (timm, lucidrains' mlp-mixer-pytorch, the seed's code) built to one
configuration and loaded with the same weights, and the inputs they are timed on.

Helpers that exist only for a peer (the converter to lucidrains' layout) live here, never in the library.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..model.mixer import MLPMixer
from ..model.variants import SEED, TINY, variant_config
from ..weights.timm_format import to_timm_state_dict
from .options import MODELS

# Besides the paper's variants: the seed's configuration (one layer at S/16's widths) and a size for smoke tests.
CONFIGS: dict[str, dict[str, Any]] = {"tiny": dict(TINY), "small": dict(SEED)}


def bench_config(name: str) -> dict[str, Any]:
    """Constructor arguments for a configuration name: ``tiny``, ``small`` (the seed's) or a paper variant."""
    return dict(CONFIGS[name]) if name in CONFIGS else variant_config(name)


def _images(config: dict[str, Any], batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random images and labels at a configuration's shape: every model and every run sees the same batch."""
    h, w = (config["image_size"],) * 2 if isinstance(config["image_size"], int) else config["image_size"]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, config["in_channels"], h, w, generator=generator)
    y = torch.randint(0, max(config["num_classes"], 1), (batch_size,), generator=generator)
    return x.to(device), y.to(device)


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
