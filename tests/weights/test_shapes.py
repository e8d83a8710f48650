"""Sizes read off a state dict's shapes."""

import pytest
import torch

from mlp_mixer.weights.shapes import config_from_state_dict


def test_sizes_are_inferred_from_shapes(tiny_model):
    config = config_from_state_dict(tiny_model.state_dict(), gelu="exact")
    shapes = ("in_channels", "dim", "num_classes", "patch_size", "depth", "token_dim", "channel_dim")
    assert config == {**{k: tiny_model.config()[k] for k in shapes}, "image_size": 16, "gelu": "exact"}
    headless = {k: v for k, v in tiny_model.state_dict().items() if not k.startswith("head.")}
    assert config_from_state_dict(headless)["num_classes"] == 0
    with pytest.raises(ValueError, match="not a Mixer's weights"):
        config_from_state_dict({"stem.weight": torch.zeros(4, 3, 2, 2)})
