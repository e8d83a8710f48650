"""The scaling study: Mixer's cost linear in the patches, attention's not."""

import pytest


@pytest.mark.slow
def test_scaling_counts_mixer_linear_in_patches(tmp_path):
    from mlp_mixer.bench.scaling import scaling

    result = scaling([64, 128], "cpu", batch_size=1, repeats=1, progress=False)
    mixer64, vit64, mixer, vit = result["points"]
    assert mixer["model"] == "Mixer-B/16" and mixer["patches"] == 64 and vit["model"] == "ViT-B/16"
    assert 0.95 < mixer["exponent_gmacs"] <= 1.0  # linear in S, less the fixed head
    # Per token, Mixer's cost is constant (the head aside) while attention's grows with S (+1: ViT's class token).
    assert mixer["gmacs"] / 64 <= mixer64["gmacs"] / 16
    assert vit["gmacs"] / 65 > 1.01 * vit64["gmacs"] / 17
    assert all(p["ms_per_image"] > 0 and p["activation_mib"] > 0 for p in result["points"])
