"""timm's layout: logits equal to timm's MlpMixer on the same weights, its Hub snapshots and bare state dicts, and
Hub ids fetched through huggingface_hub (network simulated)."""

import pytest
import torch

import mlp_mixer
from mlp_mixer import VARIANTS
from mlp_mixer.model.pretrained import Preprocessing
from mlp_mixer.weights.load import load_model
from mlp_mixer.weights.timm_format import from_timm_state_dict, to_timm_state_dict

timm_mlp_mixer = pytest.importorskip("timm.models.mlp_mixer")


def _timm_model(dim, token_ratio, channel_ratio, patch, image, depth, classes=10, seed=0):
    torch.manual_seed(seed)
    model = timm_mlp_mixer.MlpMixer(
        num_classes=classes,
        img_size=image,
        patch_size=patch,
        num_blocks=depth,
        embed_dim=dim,
        mlp_ratio=(token_ratio, channel_ratio),
    ).eval()
    with torch.no_grad():  # timm's init leaves the head zero and biases ~1e-6: randomise so mapping errors show
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("variant", ["S/16", "B/16", "L/16"])
def test_logits_match_timm_with_the_same_weights(variant):
    v = VARIANTS[variant]
    dim, patch = v["dim"], v["patch_size"]
    timm_model = _timm_model(dim, v["token_dim"] / dim, v["channel_dim"] / dim, patch, 2 * patch, depth=2)
    ours = from_timm_state_dict(timm_model.state_dict()).eval()  # exact GELU, as timm
    assert (ours.dim, ours.token_dim, ours.channel_dim, ours.depth) == (dim, v["token_dim"], v["channel_dim"], 2)
    assert ours.gelu == "exact" and ours.image_size == (2 * patch, 2 * patch)
    x = torch.randn(2, 3, 2 * patch, 2 * patch)
    with torch.no_grad():
        expected, got = timm_model(x), ours(x)
        assert (got - expected).abs().max().item() <= 1e-5
        assert expected.abs().max() > 0.1  # the logits are not trivially zero
        back = _timm_model(dim, v["token_dim"] / dim, v["channel_dim"] / dim, patch, 2 * patch, depth=2, seed=1)
        back.load_state_dict(to_timm_state_dict(ours))  # strict: every name and shape lines up
        torch.testing.assert_close(back(x), expected, rtol=0, atol=0)


def _timm_hub_dir(tmp_path, tag="goog_in21k_ft_in1k"):
    """A directory exactly as timm writes it for the Hub (save_for_hf), of a small Mixer."""
    from timm.models._hub import save_for_hf

    model = _timm_model(64, 0.5, 4.0, 4, 16, depth=2)
    model.pretrained_cfg = {
        "architecture": "mixer_b16_224",
        "tag": tag,
        "input_size": (3, 16, 16),
        "interpolation": "bicubic",
        "crop_pct": 0.875,
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "num_classes": 10,
    }
    directory = tmp_path / "timm_snapshot"
    save_for_hf(
        model, str(directory), model_config={"label_names": [f"c{i}" for i in range(10)]}, safe_serialization=True
    )
    return model, directory


def test_timm_hub_snapshot_loads_with_its_preprocessing_and_gelu(tmp_path):
    timm_model, directory = _timm_hub_dir(tmp_path)
    loaded = mlp_mixer.from_pretrained(directory)
    assert loaded.gelu == "tanh"  # goog_* weights are the official JAX ones
    assert loaded.classes == [f"c{i}" for i in range(10)]
    assert loaded.preprocessing == Preprocessing((16, 16), (0.5,) * 3, (0.5,) * 3, 0.875, "bicubic")
    for key, value in to_timm_state_dict(loaded).items():
        torch.testing.assert_close(value, timm_model.state_dict()[key], rtol=0, atol=0)
    _, other = _timm_hub_dir(tmp_path / "miil", tag="miil_in21k_ft_in1k")
    assert mlp_mixer.from_pretrained(other).gelu == "exact"  # trained in PyTorch with exact GELU


def test_bare_timm_state_dict_files_load(tmp_path):
    from safetensors.torch import save_file

    timm_model = _timm_model(64, 0.5, 4.0, 4, 16, depth=2)
    torch.save(timm_model.state_dict(), tmp_path / "timm.pth")
    save_file(timm_model.state_dict(), str(tmp_path / "timm.safetensors"))
    x = torch.randn(1, 3, 16, 16)
    for name in ("timm.pth", "timm.safetensors"):
        model = load_model(tmp_path / name)
        with torch.no_grad():
            assert (model(x) - timm_model(x)).abs().max() <= 1e-5


def test_hub_ids_are_parsed_and_fetched_through_huggingface_hub(tmp_path, monkeypatch):
    import huggingface_hub

    _, directory = _timm_hub_dir(tmp_path)
    calls = []

    def fake_download(repo_id, filename, cache_dir=None, **kwargs):
        calls.append((repo_id, filename))
        return str(directory / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr("mlp_mixer.model.pretrained._hub_reachable", lambda: True)
    for name in ("timm/mixer_b16_224.goog_in21k_ft_in1k", "hf-hub:timm/mixer_b16_224.goog_in21k_ft_in1k"):
        loaded = mlp_mixer.from_pretrained(name)
        assert loaded.gelu == "tanh" and loaded.preprocessing.interpolation == "bicubic"
    repo = "timm/mixer_b16_224.goog_in21k_ft_in1k"
    assert calls == [(repo, "config.json"), (repo, "model.safetensors")] * 2
