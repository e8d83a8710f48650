"""Changing the resolution: the paper's block-diagonal method is exact per sub-grid; interpolation is sane."""

import pytest
import torch
from helpers import save_pretrained

from mlp_mixer import MLPMixer
from mlp_mixer.commands import main
from mlp_mixer.weights.load import load_model
from mlp_mixer.weights.resize import resize_model


def _randomized(config: dict, seed: int = 0) -> MLPMixer:
    """A model whose every parameter (biases, LayerNorms, head included) is random, so copies are visible."""
    torch.manual_seed(seed)
    model = MLPMixer(**config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.ndim == 1 and p.shape[0] == config["dim"] else 0.0))
    return model


def _tiles_to_image(tiles: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """(Kh*Kw, B, C, H, W) tiles, row-major over (a, b) -> one (B, C, Kh*H, Kw*W) image."""
    rows = [torch.cat(list(tiles[a * kw : (a + 1) * kw]), dim=-1) for a in range(kh)]
    return torch.cat(rows, dim=-2)


@pytest.mark.parametrize(("image_size", "factors"), [(16, (2, 2)), ((16, 12), (2, 3)), ((12, 16), (3, 1))])
def test_blockdiag_computes_the_original_function_on_each_tile(tiny_config, image_size, factors):
    config = {**tiny_config, "image_size": image_size}
    model = _randomized(config)
    h, w = model.image_size
    kh, kw = factors
    resized = resize_model(model, (kh * h, kw * w), method="blockdiag")
    assert resized.token_dim == kh * kw * model.token_dim
    assert resized.grid_size == (kh * model.grid_size[0], kw * model.grid_size[1])

    torch.manual_seed(1)
    tiles = torch.randn(kh * kw, 2, 3, h, w)
    image = _tiles_to_image(tiles, kh, kw)
    with torch.no_grad():
        tokens = resized.forward_features(image)  # (B, S', C), S' row-major over the (Kh*gh, Kw*gw) grid
        logits, pooled = resized(image), resized.forward_head(tokens, pre_logits=True)
        tile_tokens = [model.forward_features(t) for t in tiles]
        tile_logits = torch.stack([model(t) for t in tiles])
        tile_pooled = torch.stack([model.forward_head(t, pre_logits=True) for t in tile_tokens])

    gh, gw = model.grid_size
    grid = tokens.reshape(2, kh * gh, kw * gw, -1)
    for a in range(kh):
        for b in range(kw):
            block = grid[:, a * gh : (a + 1) * gh, b * gw : (b + 1) * gw].reshape(2, gh * gw, -1)
            torch.testing.assert_close(block, tile_tokens[a * kw + b], rtol=1e-5, atol=1e-5)
    # Mean pooling over equal-sized tiles: the big image's pooled features and logits are the tiles' mean.
    torch.testing.assert_close(pooled, tile_pooled.mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, tile_logits.mean(0), rtol=1e-5, atol=1e-5)


def _interleave_patches(tiles: torch.Tensor, kh: int, kw: int, patch: int) -> torch.Tensor:
    """(Kh*Kw, B, C, H, W) images -> one image whose patch (i*Kh + a, j*Kw + b) is patch (i, j) of image (a, b)."""
    _, n, c, height, width = tiles.shape
    gh, gw = height // patch, width // patch
    big = tiles.new_zeros(n, c, gh, kh, patch, gw, kw, patch)
    for a in range(kh):
        for b in range(kw):
            big[:, :, :, a, :, :, b, :] = tiles[a * kw + b].reshape(n, c, gh, patch, gw, patch)
    return big.reshape(n, c, gh * kh * patch, gw * kw * patch)


@pytest.mark.parametrize(("image_size", "factors"), [(16, (2, 2)), ((16, 12), (2, 3))])
def test_strided_blockdiag_computes_the_original_function_on_each_interleaved_image(tiny_config, image_size, factors):
    model = _randomized({**tiny_config, "image_size": image_size})
    (h, w), (kh, kw), (gh, gw) = model.image_size, factors, model.grid_size
    resized = resize_model(model, (kh * h, kw * w), method="blockdiag-strided")
    torch.manual_seed(2)
    images = torch.randn(kh * kw, 2, 3, h, w)
    big = _interleave_patches(images, kh, kw, model.patch_size)
    with torch.no_grad():
        tokens = resized.forward_features(big).reshape(2, gh, kh, gw, kw, -1)  # row (i*Kh + a), column (j*Kw + b)
        for a in range(kh):
            for b in range(kw):
                expected = model.forward_features(images[a * kw + b])
                torch.testing.assert_close(
                    tokens[:, :, a, :, b].reshape(2, gh * gw, -1), expected, rtol=1e-5, atol=1e-5
                )
        torch.testing.assert_close(resized(big), torch.stack([model(x) for x in images]).mean(0), rtol=1e-5, atol=1e-5)
        # the two layouts are different functions: tiles are not what the strided model sees as sub-images
        tiled = _tiles_to_image(images, kh, kw)
        assert (resized(tiled) - resize_model(model, (kh * h, kw * w), "blockdiag")(tiled)).abs().max() > 1e-3


def test_blockdiag_keeps_everything_but_the_token_mlp(tiny_config):
    model = _randomized(tiny_config)
    resized = resize_model(model, 32)
    old, new = model.state_dict(), resized.state_dict()
    assert old.keys() == new.keys()
    for key in old:
        if ".token_mixing." not in key:
            torch.testing.assert_close(new[key], old[key], rtol=0, atol=0)
    assert resized.config() == {**model.config(), "image_size": [32, 32], "token_dim": 4 * model.token_dim}
    # the original is untouched, and the resized model is a real (not meta) model
    assert model.image_size == (16, 16) and all(p.device.type == "cpu" for p in resized.parameters())


def test_same_size_is_the_identity_for_both_methods(tiny_config):
    model = _randomized(tiny_config)
    x = torch.randn(2, 3, 16, 16)
    for method in ("blockdiag", "interpolate"):
        resized = resize_model(model, 16, method=method)
        with torch.no_grad():
            torch.testing.assert_close(resized(x), model(x), rtol=1e-6, atol=1e-6)


def test_auto_picks_blockdiag_only_for_integer_ratios(tiny_config):
    model = _randomized(tiny_config)
    assert resize_model(model, 32).token_dim == 4 * model.token_dim
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():  # integer ratios: the strided layout, which measured best (docs/weights.md)
        torch.testing.assert_close(resize_model(model, 32)(x), resize_model(model, 32, "blockdiag-strided")(x))
    assert resize_model(model, (32, 16)).token_dim == 2 * model.token_dim
    assert resize_model(model, 24).token_dim == model.token_dim  # 4x4 -> 6x6 patches: interpolate
    assert resize_model(model, 8).token_dim == model.token_dim  # fewer patches: interpolate
    with pytest.raises(ValueError, match="integer multiple"):
        resize_model(model, 24, method="blockdiag")
    with pytest.raises(ValueError, match="not divisible by the model's patch_size 4"):
        resize_model(model, 18)
    with pytest.raises(ValueError, match="method must be one of"):
        resize_model(model, 32, method="nearest")


def test_interpolate_of_spatially_constant_weights_keeps_the_function_on_uniform_images(tiny_config):
    """Bilinear resampling keeps a constant; fc1's S/S' scale keeps the sum over tokens: exact oracle."""
    model = _randomized(tiny_config)
    with torch.no_grad():
        for block in model.blocks:
            fc1, fc2 = block.token_mixing.fc1, block.token_mixing.fc2
            fc1.weight.copy_(fc1.weight[:, :1].expand_as(fc1.weight))  # (D_S, S): same weight for every token
            fc2.weight.copy_(fc2.weight[:1].expand_as(fc2.weight))  # (S, D_S): same row for every token
            fc2.bias.fill_(0.1)
    pixel = torch.randn(2, 3, 1, 1)
    for size in (24, (28, 12), 8):
        resized = resize_model(model, size, method="interpolate")
        assert resized.token_dim == model.token_dim
        with torch.no_grad():
            expected = model(pixel.expand(2, 3, 16, 16))
            got = resized(pixel.expand(2, 3, *resized.image_size))
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_interpolate_resamples_along_the_right_grid_axes(tiny_config):
    """fc1 weights that vary only along the grid's rows stay row-only after resizing (row-major tokens)."""
    model = _randomized({**tiny_config, "image_size": (16, 12)})  # 4 x 3 patches
    gh, gw = model.grid_size
    rows = torch.arange(gh, dtype=torch.float32).repeat_interleave(gw)  # token i*gw + j -> i
    with torch.no_grad():
        model.blocks[0].token_mixing.fc1.weight.copy_(rows.expand(model.token_dim, -1))
    resized = resize_model(model, (28, 20), method="interpolate")  # 7 x 5 patches
    weight = resized.blocks[0].token_mixing.fc1.weight.reshape(model.token_dim, 7, 5)
    torch.testing.assert_close(weight, weight[:, :, :1].expand_as(weight))  # constant along columns
    column = weight[0, :, 0]
    assert bool((column[1:] >= column[:-1]).all()) and column[-1] > column[0]  # increasing along rows


@pytest.mark.parametrize("suffix", ["", ".pt"])
def test_resize_command_writes_a_loadable_model(tmp_path, tiny_config, suffix, capsys):
    model = _randomized(tiny_config)
    source = save_pretrained(model, tmp_path / "src", classes=[str(i) for i in range(10)])
    out = tmp_path / f"resized{suffix}"
    assert main(["resize", str(source), str(out), "--image-size", "32", "--method", "blockdiag"]) == 0
    assert "token_dim 16 -> 64" in capsys.readouterr().out
    loaded = load_model(out)
    assert loaded.image_size == (32, 32) and loaded.preprocessing.image_size == (32, 32)
    assert loaded.classes == [str(i) for i in range(10)]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), resize_model(model, 32, "blockdiag")(x))


def test_resize_command_reports_bad_sizes(tmp_path, tiny_config, capsys):
    source = save_pretrained(_randomized(tiny_config), tmp_path / "src")
    assert main(["resize", str(source), str(tmp_path / "out"), "--image-size", "24", "--method", "blockdiag"]) == 2
    assert "integer multiple" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
