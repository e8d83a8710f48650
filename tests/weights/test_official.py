"""The official layout: .npz files written from the documented shapes against a float64 numpy oracle, big_vision's
older layout, round trips through ``mlp-mixer convert``, and errors that name the file."""

import json
import math

import numpy as np
import pytest
import torch

from mlp_mixer import VARIANTS, MLPMixer
from mlp_mixer.commands import main
from mlp_mixer.weights.official import load_official_npz, official_to_state_dict

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
        channel_dim=128, dropout=0.0, drop_path=0.0, gelu="tanh", drop_path_rescale=False, head_dropout=0.0,
        global_pool="avg",
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
    assert config["gelu"] == "tanh" and config["token_dim"] == 32  # every constructor argument at the top
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


@pytest.mark.slow
def test_convert_to_timm_layout_is_loaded_by_timm(tmp_path):
    """S/32 widths and depth (timm's mixer_s32_224 fixes them) at 64x64: timm itself reads what we write."""
    timm = pytest.importorskip("timm")

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


# ------------------------------------------------------------------ what an .npz may expand into (issue 25)


def peak_mib(call) -> float:
    """Peak MiB that Python and numpy allocated (both report to tracemalloc) while ``call()`` ran or raised."""
    import tracemalloc

    tracemalloc.start()
    try:
        call()
    except ValueError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 2**20


@pytest.mark.parametrize("where", ["a key outside the layout", "a misshapen kernel"])
def test_an_npz_is_checked_from_its_headers_before_any_array_is_inflated(tmp_path, where):
    """A 1 MB .npz cost 0.9 GB before it was refused: every array was inflated, then the layout checked. The
    layout and every shape are now checked on the meta device from the .npy headers; nothing is inflated."""
    params = make_official()
    zeros = np.zeros((4096, 4096), np.float32)  # 64 MiB, deflated to ~64 KB
    if where == "a key outside the layout":
        params["Transformer/posembed_input/pos_embedding"] = zeros
        message = "1 keys are not in the official Mixer layout"
    else:
        params["MixerBlock_1/channel_mixing/Dense_0/kernel"] = zeros
        message = "do not match a Mixer with"
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, **params)
    assert path.stat().st_size < 2**20
    with pytest.raises(ValueError, match=f"bomb.npz.*{message}"):
        load_official_npz(path)
    assert peak_mib(lambda: load_official_npz(path)) < 16  # 64 MiB before


def test_npz_object_arrays_and_the_budget_are_named(official_npz, tmp_path, monkeypatch):
    path, params = official_npz
    objects = tmp_path / "objects.npz"
    np.savez(objects, **params, extra=np.array([{"a": 1}], dtype=object))  # was reported as "not a zip archive"
    with pytest.raises(ValueError, match=r"objects.npz cannot be read as an .npz checkpoint: array 'extra' holds Py"):
        load_official_npz(objects)
    monkeypatch.setattr("mlp_mixer.utils.limits.MAX_WEIGHT_BYTES", 2**16)
    with pytest.raises(ValueError, match=r"Mixer-T_4.npz expands to 0.2 MiB of tensors, over the limit of 0.1 MiB"):
        load_official_npz(path)
    monkeypatch.setattr("mlp_mixer.utils.limits.MAX_TENSORS", 10)
    with pytest.raises(ValueError, match=r"Mixer-T_4.npz holds 30 tensors, over the limit of 10"):
        load_official_npz(path)
