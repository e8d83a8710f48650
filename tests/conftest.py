import pytest
import torch

from mlp_mixer import MLPMixer

# A Mixer small enough for every test: 4x4 patches of a 16x16 image (16 tokens).
TINY = dict(in_channels=3, dim=32, num_classes=10, patch_size=4, image_size=16, depth=2, token_dim=16, channel_dim=64)


@pytest.fixture
def tiny_config() -> dict:
    return dict(TINY)


@pytest.fixture
def tiny_model() -> MLPMixer:
    torch.manual_seed(0)
    return MLPMixer(**TINY)
