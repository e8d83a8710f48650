"""Weights: official .npz and timm layouts against independent oracles, the HF layout, downloads and errors."""

import io
import json
import math
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import save_pretrained

import mlp_mixer
from mlp_mixer import VARIANTS, MLPMixer
from mlp_mixer.commands import main
from mlp_mixer.weights.checkpoint import (
    Preprocessing,
    atomic_save,
    config_from_state_dict,
    from_timm_state_dict,
    load_model,
    load_official_npz,
    official_to_state_dict,
    to_timm_state_dict,
)

timm_mlp_mixer = pytest.importorskip("timm.models.mlp_mixer")

# ------------------------------------------------------------------ the official layout, written from PAPER.md


def make_official(depth=2, dim=64, patch=4, grid=(4, 4), token_dim=32, channel_dim=128, in_ch=3, classes=10, seed=0):
    """Random params in the official flat layout (keys joined by '/'), written straight from the documented shapes."""
    rng = np.random.default_rng(seed)
    s = grid[0] * grid[1]

    def normal(std, *shape):
        return rng.normal(0, std, shape).astype(np.float32)

    def dense(fan_in, fan_out):
        return {"kernel": normal(1 / math.sqrt(fan_in), fan_in, fan_out), "bias": normal(0.1, fan_out)}

    def norm():
        return {"scale": 1 + normal(0.2, dim), "bias": normal(0.1, dim)}

    tree = {
        "stem": {
            "kernel": normal(1 / math.sqrt(patch * patch * in_ch), patch, patch, in_ch, dim),
            "bias": normal(0.1, dim),
        },
        "pre_head_layer_norm": norm(),
        "head": dense(dim, classes),
    }
    for i in range(depth):
        tree[f"MixerBlock_{i}"] = {
            "LayerNorm_0": norm(),
            "token_mixing": {"Dense_0": dense(s, token_dim), "Dense_1": dense(token_dim, s)},
            "LayerNorm_1": norm(),
            "channel_mixing": {"Dense_0": dense(dim, channel_dim), "Dense_1": dense(channel_dim, dim)},
        }

    def flatten(node, prefix=""):
        flat = {}
        for name, value in node.items():
            flat.update(flatten(value, f"{prefix}{name}/") if isinstance(value, dict) else {prefix + name: value})
        return flat

    return flatten(tree)


def numpy_forward(p, images):
    """The official equations in float64 numpy, straight from the npz arrays (NHWC images, row-major tokens)."""
    p = {k: v.astype(np.float64) for k, v in p.items()}

    def ln(x, prefix):  # flax LayerNorm, eps 1e-6
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-6) * p[prefix + "/scale"] + p[prefix + "/bias"]

    def gelu(x):  # flax nn.gelu: the tanh approximation
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))

    def mlp(x, prefix):
        y = gelu(x @ p[prefix + "/Dense_0/kernel"] + p[prefix + "/Dense_0/bias"])
        return y @ p[prefix + "/Dense_1/kernel"] + p[prefix + "/Dense_1/bias"]

    kernel = p["stem/kernel"]  # (P, P, in, C)
    patch, n, (height, width, c) = kernel.shape[0], images.shape[0], images.shape[1:]
    h, w = height // patch, width // patch
    patches = images.reshape(n, h, patch, w, patch, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, h * w, -1)
    x = patches @ kernel.reshape(-1, kernel.shape[-1]) + p["stem/bias"]  # 'n h w c -> n (h w) c'
    depth = len({k.split("/")[0] for k in p if k.startswith("MixerBlock_")})
    for i in range(depth):
        b = f"MixerBlock_{i}"
        x = x + mlp(ln(x, b + "/LayerNorm_0").swapaxes(1, 2), b + "/token_mixing").swapaxes(1, 2)
        x = x + mlp(ln(x, b + "/LayerNorm_1"), b + "/channel_mixing")
    x = ln(x, "pre_head_layer_norm").mean(1)
    return x @ p["head/kernel"] + p["head/bias"] if "head/kernel" in p else x


@pytest.fixture
def official_npz(tmp_path):
    params = make_official()
    path = tmp_path / "Mixer-T_4.npz"
    np.savez(path, **params)
    return path, params


def test_converted_official_model_follows_the_official_equations(official_npz):
    path, params = official_npz
    loaded = load_official_npz(path)
    model = loaded
    assert model.config() == dict(
        in_channels=3, dim=64, num_classes=10, patch_size=4, image_size=[16, 16], depth=2, token_dim=32,
        channel_dim=128, gelu="tanh",
    )  # fmt: skip
    assert loaded.preprocessing.mean == (0.5, 0.5, 0.5) and loaded.preprocessing.std == (0.5, 0.5, 0.5)
    images = np.random.default_rng(1).normal(size=(3, 16, 16, 3))
    expected = numpy_forward(params, images)
    with torch.no_grad():
        got = model(torch.from_numpy(images).permute(0, 3, 1, 2).float()).double().numpy()
        exact = MLPMixer(**{**model.config(), "image_size": 16, "gelu": "exact"}).eval()
        exact.load_state_dict(model.state_dict())
        got_exact = exact(torch.from_numpy(images).permute(0, 3, 1, 2).float()).double().numpy()
    assert np.abs(got - expected).max() <= 2e-5 * max(1.0, np.abs(expected).max())
    # The check can tell the GELU forms apart: exact GELU misses the official numbers by far more.
    assert np.abs(got_exact - expected).max() > 10 * np.abs(got - expected).max()


def test_non_square_grid_needs_image_size_and_keeps_row_major_tokens(tmp_path):
    params = make_official(grid=(4, 3))
    path = tmp_path / "wide.npz"
    np.savez(path, **params)
    with pytest.raises(ValueError, match="takes 12 patches, not a square grid, so the input size cannot be inferred"):
        load_official_npz(path)
    model = load_official_npz(path, image_size=(16, 12))
    images = np.random.default_rng(2).normal(size=(2, 16, 12, 3))
    with torch.no_grad():
        got = model(torch.from_numpy(images).permute(0, 3, 1, 2).float()).double().numpy()
    np.testing.assert_allclose(got, numpy_forward(params, images), atol=1e-4)


def test_official_npz_round_trips_through_convert_and_back(official_npz, tmp_path, capsys):
    path, params = official_npz
    out = tmp_path / "converted"
    assert main(["convert", str(path), str(out)]) == 0
    assert '"gelu": "tanh"' in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["model_config"]["gelu"] == "tanh" and config["model_config"]["token_dim"] == 32
    back = tmp_path / "back.npz"
    assert main(["convert", str(out), str(back), "--to", "npz"]) == 0
    with np.load(back) as data:
        assert sorted(data.files) == sorted(params)
        for key in params:
            assert data[key].shape == params[key].shape, key
            np.testing.assert_array_equal(data[key], params[key], err_msg=key)


def _old_big_vision_layout(params):
    """The same weights in big_vision's older layout, with pre-Linen numbering and unsqueezed biases."""
    old = {}
    for key, value in params.items():
        parts = key.split("/")
        if parts[0] == "stem":
            old["embedding/" + parts[1]] = value
        elif parts[0] == "pre_head_layer_norm":
            old["Mixer/encoder_norm/" + parts[1]] = value
        elif parts[0] == "head":
            old[key] = value
        else:
            block = "Mixer/encoderblock_" + parts[0].removeprefix("MixerBlock_")
            if parts[1].startswith("LayerNorm"):  # pre-Linen numbering counts every submodule: 0 and 2
                old[f"{block}/LayerNorm_{2 * int(parts[1][-1])}/{parts[2]}"] = value
            else:
                n = int(parts[2][-1]) + 1
                old[f"{block}/{parts[1]}_phase_0/{parts[3]}{n}"] = value[None] if parts[3] == "bias" else value
    return {"params/" + key: value for key, value in old.items()}


def test_big_vision_older_layout_converts_to_the_same_weights():
    params = make_official(depth=11)  # 11 blocks: natural order (encoderblock_10 after _9) matters
    old = _old_big_vision_layout(params)
    assert any(k.endswith("encoderblock_10/token_mixing_phase_0/bias1") and v.ndim == 2 for k, v in old.items())
    new_state, old_state = official_to_state_dict(params), official_to_state_dict(old)
    assert new_state.keys() == old_state.keys()
    for key in new_state:
        torch.testing.assert_close(old_state[key], new_state[key], rtol=0, atol=0)


def test_official_errors_name_the_file(official_npz, tmp_path):
    path, params = official_npz
    with pytest.raises(FileNotFoundError, match="missing.npz does not exist"):
        load_official_npz(tmp_path / "missing.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated.npz cannot be read"):
        load_official_npz(truncated)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, **params, **{"Transformer/encoder_norm/scale": np.ones(4, np.float32)})
    with pytest.raises(ValueError, match="foreign.npz: 1 keys are not in the official Mixer layout"):
        load_official_npz(foreign)
    mismatched = tmp_path / "mismatched.npz"
    bad = dict(params)
    bad["MixerBlock_1/token_mixing/Dense_0/kernel"] = np.zeros((16, 8), np.float32)  # token_dim 8 in block 1
    np.savez(mismatched, **bad)
    with pytest.raises(ValueError, match="mismatched.npz do not match a Mixer with"):
        load_official_npz(mismatched)
    assert main(["convert", str(tmp_path / "missing.npz"), str(tmp_path / "out")]) == 2


# ------------------------------------------------------------------ timm


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


@pytest.mark.slow
def test_convert_to_timm_layout_is_loaded_by_timm(tmp_path):
    """S/32 widths and depth (timm's mixer_s32_224 fixes them) at 64x64: timm itself reads what we write."""
    import timm

    v = VARIANTS["S/32"]
    params = make_official(
        depth=v["depth"], dim=v["dim"], patch=32, grid=(2, 2), token_dim=v["token_dim"], channel_dim=v["channel_dim"]
    )
    np.savez(tmp_path / "s32.npz", **params)
    assert main(["convert", str(tmp_path / "s32.npz"), str(tmp_path / "timm_dir"), "--to", "timm"]) == 0
    timm_model = timm.create_model(f"local-dir:{tmp_path / 'timm_dir'}", pretrained=True).eval()
    ours = load_official_npz(tmp_path / "s32.npz")
    exact = MLPMixer(**{**ours.config(), "image_size": 64, "gelu": "exact"}).eval()  # timm computes exact GELU
    exact.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (timm_model(x) - exact(x)).abs().max() <= 1e-5
    assert tuple(timm_model.pretrained_cfg["mean"]) == (0.5, 0.5, 0.5)


# ------------------------------------------------------------------ our layouts, and their errors


def test_save_pretrained_round_trip_in_the_hf_layout(tiny_model, tmp_path):
    from safetensors import safe_open

    with torch.no_grad():
        tiny_model.head.weight.normal_()
    preprocessing = Preprocessing((16, 16), (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), 0.9, "bicubic")
    tiny_model.classes, tiny_model.preprocessing = [f"k{i}" for i in range(10)], preprocessing
    directory = tmp_path / "pretrained"
    tiny_model.save_pretrained(directory)  # a method, from huggingface_hub's PyTorchModelHubMixin
    # config.json + model.safetensors, and the mixin's model card
    assert sorted(p.name for p in directory.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert "library_name: mlp-mixer" in (directory / "README.md").read_text()
    with safe_open(str(directory / "model.safetensors"), "pt") as f:  # plain safetensors, as the Hub expects
        assert set(f.keys()) == set(tiny_model.state_dict())
    x = torch.randn(2, 3, 16, 16)
    # the module function (any source) and the class method (our layout) both return the model itself
    for loaded in (mlp_mixer.from_pretrained(directory), MLPMixer.from_pretrained(directory)):
        assert type(loaded) is MLPMixer and not loaded.training
        assert loaded.classes == [f"k{i}" for i in range(10)] and loaded.preprocessing == preprocessing
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), tiny_model.eval()(x), rtol=0, atol=0)
    assert callable(loaded.push_to_hub)


def test_push_to_hub_uploads_the_save_pretrained_folder(tiny_model, tmp_path, monkeypatch):
    """push_to_hub (the mixin's) saves through our _save_pretrained into a folder and uploads that folder."""
    from huggingface_hub import HfApi

    uploaded = {}

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        uploaded.update(repo_id=repo_id, files=sorted(p.name for p in Path(folder_path).iterdir()))
        uploaded["config"] = json.loads((Path(folder_path) / "config.json").read_text())
        return "https://huggingface.co/you/tiny/commit/0"

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: type("R", (), {"repo_id": repo_id})())
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    tiny_model.classes = [f"k{i}" for i in range(10)]
    tiny_model.push_to_hub("you/tiny")
    assert uploaded["repo_id"] == "you/tiny"
    assert uploaded["files"] == ["README.md", "config.json", "model.safetensors"]
    assert uploaded["config"]["classes"] == tiny_model.classes
    assert uploaded["config"]["model_config"] == tiny_model.config()


def test_pretrained_directory_errors_name_the_file(tiny_model, tmp_path):
    directory = save_pretrained(tiny_model, tmp_path / "p")
    weights = (directory / "model.safetensors").read_bytes()
    (directory / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ValueError, match=r"model.safetensors cannot be read \(truncated"):
        mlp_mixer.from_pretrained(directory)
    (directory / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors does not exist"):
        mlp_mixer.from_pretrained(directory)
    directory = save_pretrained(tiny_model, tmp_path / "q")
    config = json.loads((directory / "config.json").read_text())
    config["model_config"]["dim"] = 48
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="weights in .*model.safetensors do not match"):
        mlp_mixer.from_pretrained(directory)
    (directory / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not a valid"):
        mlp_mixer.from_pretrained(directory)
    (directory / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json does not exist"):
        mlp_mixer.from_pretrained(directory)


class NotAWeight:
    """An arbitrary object: ``torch.load(weights_only=True)`` must refuse to unpickle it."""


def test_training_checkpoint_errors_and_weights_only(tiny_model, tmp_path):
    checkpoint = {"model": tiny_model.state_dict(), "model_config": tiny_model.config(), "classes": ["a"] * 10}
    path = atomic_save(checkpoint, tmp_path / "ckpt.pt")
    assert load_model(path).classes == ["a"] * 10
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="ckpt.pt cannot be read"):
        load_model(path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_model(tmp_path / "missing.pt")
    atomic_save({**checkpoint, "model_config": {**tiny_model.config(), "depth": 3}}, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match="mismatch.pt do not match"):
        load_model(tmp_path / "mismatch.pt")
    torch.save({**checkpoint, "extra": NotAWeight()}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="pickled.pt cannot be read"):
        load_model(tmp_path / "pickled.pt")


def test_sizes_are_inferred_from_shapes(tiny_model):
    config = config_from_state_dict(tiny_model.state_dict(), gelu="exact")
    assert config == {**tiny_model.config(), "image_size": 16, "gelu": "exact"}
    headless = {k: v for k, v in tiny_model.state_dict().items() if not k.startswith("head.")}
    assert config_from_state_dict(headless)["num_classes"] == 0
    with pytest.raises(ValueError, match="not a Mixer's weights"):
        config_from_state_dict({"stem.weight": torch.zeros(4, 3, 2, 2)})


# ------------------------------------------------------------------ Hub ids and URLs (no network here: simulated)

URL = "https://storage.googleapis.com/mixer_models/imagenet1k/Mixer-B_16.npz"


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("network is unreachable")


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


def test_hub_id_offline_says_what_to_fetch(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # the real client, offline
    with pytest.raises(FileNotFoundError) as err:
        mlp_mixer.from_pretrained("timm/mixer_b16_224.goog_in21k_ft_in1k", cache_dir=tmp_path)
    message = str(err.value)
    assert "Offline?" in message and "hf download timm/mixer_b16_224.goog_in21k_ft_in1k config.json" in message
    with pytest.raises(FileNotFoundError, match="no/such/dir does not exist"):
        mlp_mixer.from_pretrained(str(tmp_path / "no" / "such" / "dir"))


def test_url_is_downloaded_once_into_the_cache(official_npz, tmp_path, monkeypatch):
    path, _ = official_npz
    payload = path.read_bytes()
    calls = []

    def fake_urlopen(url, timeout):
        calls.append(url)
        response = io.BytesIO(payload)
        response.headers = {"Content-Length": str(len(payload))}
        return response

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    loaded = mlp_mixer.from_pretrained(URL, cache_dir=tmp_path / "cache")
    cached = tmp_path / "cache" / "storage.googleapis.com" / "mixer_models" / "imagenet1k" / "Mixer-B_16.npz"
    assert cached.read_bytes() == payload and calls == [URL]
    assert loaded.gelu == "tanh" and loaded.token_dim == 32
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)  # cached: no network needed, gs:// too
    gs = "gs://mixer_models/imagenet1k/Mixer-B_16.npz"
    assert mlp_mixer.from_pretrained(gs, cache_dir=tmp_path / "cache").depth == 2


def test_url_offline_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    monkeypatch.setenv("MLP_MIXER_CACHE", str(tmp_path / "cache"))
    target = tmp_path / "cache" / "storage.googleapis.com" / "mixer_models" / "imagenet1k" / "Mixer-B_16.npz"
    with pytest.raises(FileNotFoundError) as err:
        load_model(URL)
    assert f"put it at {target}" in str(err.value) and f"curl -L -o Mixer-B_16.npz {URL}" in str(err.value)
    assert not target.exists() and not list(target.parent.glob(".*tmp"))  # no partial file left behind
