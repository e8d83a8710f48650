"""The peers built with our weights: the same logits, the paper's widths."""

import torch

from mlp_mixer.model.variants import TINY


def test_peers_agree_on_the_same_weights():
    """timm, lucidrains and the seed's einops code, loaded with our weights, give our logits."""
    from mlp_mixer import bench

    models, skipped = bench.build_models(TINY, bench.MODELS, torch.device("cpu"))
    assert skipped == {} and set(models) == set(bench.MODELS)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        ours = models["ours"](x)
        assert ours.abs().max() > 0.1  # a zero head would make any two models agree
        for name in ("timm", "lucidrains", "seed"):
            torch.testing.assert_close(models[name](x), ours, atol=1e-5, rtol=0, msg=name)
    assert all(p.abs().sum() > 0 for p in models["ours"].parameters() if p.ndim == 1)  # biases mapped, not zeros


def test_lucidrains_has_the_papers_widths_not_its_swapped_defaults():
    from mlp_mixer import bench

    models, _ = bench.build_models(TINY, ["ours", "lucidrains"], torch.device("cpu"))
    lucid = models["lucidrains"]
    token_fc1, channel_fc1 = lucid[2][0].fn[0], lucid[2][1].fn[0]
    assert (token_fc1.in_channels, token_fc1.out_channels) == (16, TINY["token_dim"])
    assert (channel_fc1.in_features, channel_fc1.out_features) == (32, TINY["channel_dim"])
    assert sum(p.numel() for p in lucid.parameters()) == sum(p.numel() for p in models["ours"].parameters())
