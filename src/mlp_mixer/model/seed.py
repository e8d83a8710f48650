"""The seed's MLP-Mixer (the blog post the project started from), re-typed as a baseline for ``mlp-mixer bench``.

Same three classes, names and einops ``Rearrange`` transposes as the seed; only what the benchmark needs changed:
the seed's ``assert`` is a ValueError, and the torchsummary/tensorboardX demo is left out. ``to_seed_state_dict``
maps our weights onto it, so the benchmark runs both on the same numbers.
"""

from __future__ import annotations

import torch
from einops.layers.torch import Rearrange
from torch import nn


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MixerBlock(nn.Module):
    def __init__(self, dim: int, num_patch: int, token_dim: int, channel_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.token_mixer = nn.Sequential(
            nn.LayerNorm(dim),
            Rearrange("b n d -> b d n"),
            FeedForward(num_patch, token_dim, dropout),
            Rearrange("b d n -> b n d"),
        )
        self.channel_mixer = nn.Sequential(nn.LayerNorm(dim), FeedForward(dim, channel_dim, dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token_mixer(x)
        x = x + self.channel_mixer(x)
        return x


class MLPMixer(nn.Module):
    def __init__(
        self,
        in_channels: int,
        dim: int,
        num_classes: int,
        patch_size: int,
        image_size: int,
        depth: int,
        token_dim: int,
        channel_dim: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not divisible by patch_size {patch_size}")
        self.num_patches = (image_size // patch_size) ** 2
        self.to_embedding = nn.Sequential(
            nn.Conv2d(in_channels=in_channels, out_channels=dim, kernel_size=patch_size, stride=patch_size),
            Rearrange("b c h w -> b (h w) c"),
        )
        self.mixer_blocks = nn.ModuleList(
            [MixerBlock(dim, self.num_patches, token_dim, channel_dim, dropout) for _ in range(depth)]
        )
        self.layer_normal = nn.LayerNorm(dim)
        self.mlp_head = nn.Sequential(nn.Linear(dim, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.to_embedding(x)
        for mixer_block in self.mixer_blocks:
            x = mixer_block(x)
        x = self.layer_normal(x)
        x = x.mean(dim=1)
        return self.mlp_head(x)


def to_seed_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our ``MLPMixer.state_dict()`` in the seed's module names (same shapes: both use (out, in) Linears)."""
    renames = {
        "stem.": "to_embedding.0.",
        "pre_head_layer_norm.": "layer_normal.",
        "head.": "mlp_head.0.",
        "norm1.": "token_mixer.0.",
        "token_mixing.fc1.": "token_mixer.2.net.0.",
        "token_mixing.fc2.": "token_mixer.2.net.3.",
        "norm2.": "channel_mixer.0.",
        "channel_mixing.fc1.": "channel_mixer.1.net.0.",
        "channel_mixing.fc2.": "channel_mixer.1.net.3.",
    }
    out = {}
    for key, value in state.items():
        key = key.replace("blocks.", "mixer_blocks.", 1) if key.startswith("blocks.") else key
        for old, new in renames.items():
            key = key.replace(old, new, 1) if old in key else key
        out[key] = value
    return out
