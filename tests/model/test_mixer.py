"""The model (``mlp_mixer.model.mixer``) against the seed's table, the paper's equations and an independent numpy
reference."""

import math

import numpy as np
import pytest
import torch
from helpers import randomize
from torch import nn

from mlp_mixer import SEED, MLPMixer
from mlp_mixer.model.mixer import init_weights


def numpy_gelu(x: np.ndarray, form: str) -> np.ndarray:
    if form == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    from scipy.special import erf

    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def numpy_layer_norm(x, scale, bias, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def numpy_block(x, block, form):
    """The official MixerBlock written from the paper, in float64 numpy with explicit transposes."""
    p = {k: v.detach().double().numpy() for k, v in block.state_dict().items()}
    y = numpy_layer_norm(x, p["norm1.weight"], p["norm1.bias"])
    y = np.swapaxes(y, 1, 2)  # (B, S, C) -> (B, C, S)
    y = numpy_gelu(y @ p["token_mixing.fc1.weight"].T + p["token_mixing.fc1.bias"], form)
    y = y @ p["token_mixing.fc2.weight"].T + p["token_mixing.fc2.bias"]
    x = x + np.swapaxes(y, 1, 2)
    y = numpy_layer_norm(x, p["norm2.weight"], p["norm2.bias"])
    y = numpy_gelu(y @ p["channel_mixing.fc1.weight"].T + p["channel_mixing.fc1.bias"], form)
    return x + y @ p["channel_mixing.fc2.weight"].T + p["channel_mixing.fc2.bias"]


@pytest.mark.parametrize("form", ["tanh", "exact"])
def test_block_matches_numpy_reference(tiny_config, form):
    model = randomize(MLPMixer(**tiny_config, gelu=form)).double().eval()
    x = torch.randn(3, 16, 32, dtype=torch.float64)
    ours = model.blocks[0](x).detach().numpy()
    np.testing.assert_allclose(ours, numpy_block(x.numpy(), model.blocks[0], form), atol=1e-6, rtol=0)


def test_full_model_matches_numpy_reference(tiny_config):
    model = randomize(MLPMixer(**tiny_config)).double().eval()
    images = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    p = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    # Stem as a per-patch linear map, tokens row-major (h outer, w inner) as in the official code.
    patches = images.numpy().reshape(2, 3, 4, 4, 4, 4).transpose(0, 2, 4, 1, 3, 5).reshape(2, 16, 48)
    x = patches @ p["stem.weight"].reshape(32, 48).T + p["stem.bias"]
    for block in model.blocks:
        x = numpy_block(x, block, "tanh")
    x = numpy_layer_norm(x, p["pre_head_layer_norm.weight"], p["pre_head_layer_norm.bias"]).mean(1)
    expected = x @ p["head.weight"].T + p["head.bias"]
    np.testing.assert_allclose(model(images).detach().numpy(), expected, atol=1e-6, rtol=0)


def test_tanh_and_exact_gelu_differ_but_are_close(tiny_config):
    tanh = randomize(MLPMixer(**tiny_config, gelu="tanh")).eval()
    exact = MLPMixer(**tiny_config, gelu="exact").eval()
    exact.load_state_dict(tanh.state_dict())
    x = torch.randn(4, 3, 16, 16)
    diff = (tanh(x) - exact(x)).abs().max().item()
    assert 1e-6 < diff < 1e-1
    assert tanh.blocks[0].token_mixing.act.approximate == "tanh"
    assert exact.blocks[0].token_mixing.act.approximate == "none"


def test_layer_norm_eps_is_flax_default(tiny_model):
    norms = [m for m in tiny_model.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 2 * 2 + 1 and all(m.eps == 1e-6 for m in norms)


def test_seed_call_and_parameter_table():
    model = MLPMixer(**SEED, dropout=0.1)  # the blog's call: the same keywords and values
    block = model.blocks[0]
    counts = {
        "stem": model.stem,
        "norm1": block.norm1,
        "token_fc1": block.token_mixing.fc1,
        "token_fc2": block.token_mixing.fc2,
        "norm2": block.norm2,
        "channel_fc1": block.channel_mixing.fc1,
        "channel_fc2": block.channel_mixing.fc2,
        "pre_head": model.pre_head_layer_norm,
        "head": model.head,
    }
    counts = {k: sum(p.numel() for p in m.parameters()) for k, m in counts.items()}
    assert counts == {
        "stem": 393_728,
        "norm1": 1_024,
        "token_fc1": 50_432,
        "token_fc2": 50_372,
        "norm2": 1_024,
        "channel_fc1": 1_050_624,
        "channel_fc2": 1_049_088,
        "pre_head": 1_024,
        "head": 513_000,
    }
    assert sum(p.numel() for p in model.parameters()) == 3_110_316
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_token_mixing_equals_transposed_linear(tiny_model):
    """The fast path (matmul on untransposed tokens) equals the plain form nn.Linear on (B, C, S)."""
    randomize(tiny_model)
    fc1 = tiny_model.blocks[0].token_mixing.fc1
    x = torch.randn(2, 16, 32)
    plain = nn.functional.linear(x.transpose(1, 2), fc1.weight, fc1.bias).transpose(1, 2)
    torch.testing.assert_close(fc1(x), plain, atol=1e-6, rtol=1e-6)


def test_tokens_are_row_major(tiny_config):
    """Token k comes from patch row k // w, column k % w (official: n h w c -> n (h w) c)."""
    model = MLPMixer(**{**tiny_config, "image_size": (8, 16)})
    with torch.no_grad():
        model.stem.weight.zero_()
        model.stem.weight[0, 0, 0, 0] = 1.0  # channel 0 of a token = top-left pixel of its patch
        model.stem.bias.zero_()
    image = torch.zeros(1, 3, 8, 16)
    image[0, 0, 4, 8] = 1.0  # patch row 1, column 2 of a 2 x 4 grid -> token 1 * 4 + 2 = 6
    seen = []  # the tokens forward_features hands to the first block, (B, S, C)
    model.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    model.forward_features(image)
    assert seen[0].shape == (1, 8, 32)
    assert seen[0][0, :, 0].nonzero().flatten().tolist() == [6]


def test_residual_stream_is_contiguous(tiny_model):
    """The stem's tokens are made contiguous once, so no LayerNorm copies a transposed stream."""
    seen = []
    tiny_model.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous()))
    tiny_model(torch.randn(1, 3, 16, 16))
    assert seen == [True]


@pytest.mark.parametrize("in_channels,image_size,num_classes", [(1, 16, 10), (3, (8, 16), 7), (4, (16, 8), 2)])
def test_shapes(tiny_config, in_channels, image_size, num_classes):
    model = MLPMixer(
        **{**tiny_config, "in_channels": in_channels, "image_size": image_size, "num_classes": num_classes}
    )
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    x = torch.randn(2, in_channels, h, w)
    assert model(x).shape == (2, num_classes)
    assert model.forward_features(x).shape == (2, h * w // 16, 32)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 32)


def test_num_classes_zero_returns_pooled_features(tiny_config):
    model = randomize(MLPMixer(**{**tiny_config, "num_classes": 0})).eval()
    x = torch.randn(2, 3, 16, 16)
    assert model(x).shape == (2, 32)
    torch.testing.assert_close(model(x), model.forward_features(x).mean(1))


def test_official_init(tiny_config):
    torch.manual_seed(0)
    model = MLPMixer(**{**tiny_config, "dim": 256, "channel_dim": 1024})
    assert model.head.weight.abs().sum() == 0 and model.head.bias.abs().sum() == 0
    for linear in (model.blocks[0].channel_mixing.fc1, model.blocks[0].token_mixing.fc1):
        assert linear.bias.abs().sum() == 0
        fan_in = linear.weight.shape[1]
        std = linear.weight.std().item()
        assert abs(std - fan_in**-0.5) < 0.1 * fan_in**-0.5  # lecun normal: variance 1 / fan_in
        assert linear.weight.abs().max().item() <= 2 * fan_in**-0.5 / 0.87962566103423978 + 1e-6  # truncated


def test_grad_checkpointing_gives_same_gradients(tiny_config):
    grads = []
    for enable in (False, True):
        model = randomize(MLPMixer(**tiny_config))
        model.set_grad_checkpointing(enable)
        model(torch.ones(2, 3, 16, 16)).square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


def test_stochastic_depth_rates_and_behaviour(tiny_config):
    model = MLPMixer(**{**tiny_config, "depth": 3}, drop_path=0.5)
    assert [b.drop_path.p for b in model.blocks] == [0.0, 0.25, 0.5]
    x = torch.randn(64, 16, 32)
    block = model.blocks[2].train()
    torch.manual_seed(0)
    dropped = block.drop_path(x)
    kept = (dropped == x).flatten(1).all(1)
    assert 0 < kept.sum() < 64 and (dropped[~kept] == 0).all()  # per example, no rescaling
    assert torch.equal(block.eval().drop_path(x), x)


def test_dropout_only_in_training(tiny_config):
    model = randomize(MLPMixer(**tiny_config, dropout=0.5))
    x = torch.randn(2, 3, 16, 16)
    assert not torch.equal(model.train()(x), model.train()(x))
    assert torch.equal(model.eval()(x), model.eval()(x))


@pytest.mark.parametrize(
    "override,message",
    [
        ({"image_size": 18}, "image_size 18 is not divisible by patch_size 4"),
        ({"image_size": (16, 10)}, "not divisible by patch_size 4"),
        ({"dim": 0}, "dim must be a positive integer, got 0"),
        ({"depth": -1}, "depth must be a positive integer"),
        ({"patch_size": 0}, "patch_size must be a positive integer"),
        ({"image_size": 0}, "image_size must be positive"),
        ({"num_classes": -2}, "num_classes must be a non-negative integer"),
        ({"gelu": "relu"}, "gelu must be one of"),
        ({"dropout": 1.5}, "dropout must be in [0, 1), got 1.5"),
        ({"drop_path": -0.1}, "drop_path must be in [0, 1)"),
        ({"head_dropout": 1.0}, "head_dropout must be in [0, 1)"),
        ({"global_pool": "max"}, "global_pool must be one of ('avg', '')"),
    ],
)
def test_constructor_errors(tiny_config, override, message):
    with pytest.raises(ValueError) as info:
        MLPMixer(**{**tiny_config, **override})
    assert message in str(info.value)


@pytest.mark.parametrize(
    "shape,message",
    [
        ((1, 3, 32, 32), "expected input of shape (batch, 3, 16, 16), got (1, 3, 32, 32)"),
        ((1, 1, 16, 16), "expected input of shape (batch, 3, 16, 16), got (1, 1, 16, 16)"),
        ((3, 16, 16), "got (3, 16, 16)"),
    ],
)
def test_forward_errors(tiny_model, shape, message):
    with pytest.raises(ValueError) as info:
        tiny_model(torch.randn(*shape))
    assert message in str(info.value)


def test_init_weights_is_deterministic_under_seed(tiny_config):
    a, b = MLPMixer(**tiny_config), MLPMixer(**tiny_config)
    torch.manual_seed(3)
    init_weights(a)
    torch.manual_seed(3)
    init_weights(b)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("inference", [True, False])
def test_compiles_to_one_graph_equal_to_eager(tiny_config, inference):
    """torch.compile sees the whole model (no graph break) and its transposed token-mixing form equals eager."""
    torch.manual_seed(0)
    model = randomize(MLPMixer(**tiny_config)).eval()
    x = torch.randn(2, tiny_config["in_channels"], *[tiny_config["image_size"]] * 2)
    with torch.inference_mode(inference):
        explained = torch._dynamo.explain(model)(x)
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)(x)
        expected = model(x)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert "baddbmm" not in explained.graphs[0].code  # inductor gets plain linears it can pack and fuse around
    torch.testing.assert_close(compiled, expected, atol=1e-5, rtol=1e-5)
