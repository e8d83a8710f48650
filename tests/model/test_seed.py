"""The seed's code (``mlp_mixer.model.seed``) against our model: the SEED size builds the seed's own network."""

import pytest
import torch
from helpers import randomize
from torch import nn

from mlp_mixer import SEED, MLPMixer


def test_seed_constant_builds_the_seeds_own_model():
    """SEED against the seed's code (re-typed in mlp_mixer.model.seed): same parameters, same logits."""
    pytest.importorskip("einops")
    from mlp_mixer.model.seed import MLPMixer as SeedMixer
    from mlp_mixer.model.seed import to_seed_state_dict

    ours = MLPMixer(**{**SEED, "gelu": "exact"}).eval()  # the seed's nn.GELU() is the erf form
    randomize(ours)
    seed = SeedMixer(**SEED).eval()
    seed.load_state_dict(to_seed_state_dict(ours.state_dict()))
    for module in seed.modules():
        if isinstance(module, nn.LayerNorm):
            module.eps = 1e-6  # the seed uses torch's 1e-5; ours is the official 1e-6
    assert sum(p.numel() for p in seed.parameters()) == sum(p.numel() for p in ours.parameters()) == 3_110_316
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), seed(x), atol=1e-4, rtol=1e-4)
