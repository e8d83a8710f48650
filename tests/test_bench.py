"""The benchmark's plumbing and the model's fast paths; never speed (speed targets live in the benchmark output)."""

import pytest
import torch
from torch import nn

from mlp_mixer import MLPMixer


def randomize(model: nn.Module, seed: int = 1) -> nn.Module:
    """Random values everywhere: the official init zeroes the head, which would hide any difference."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model


@pytest.mark.parametrize("gelu", ["tanh", "exact"])
def test_inference_fast_path_equals_plain_form(tiny_config, gelu):
    """Without autograd, GELU runs in place; outputs equal the autograd (plain) path and the input is untouched."""
    model = randomize(MLPMixer(**tiny_config, gelu=gelu)).eval()
    x = torch.randn(3, 3, 16, 16)
    before = x.clone()
    plain = model(x)  # parameters require grad: the out-of-place path
    assert plain.requires_grad
    with torch.no_grad():
        fast = model(x)
    with torch.inference_mode():
        fast_inference = model(x)
    torch.testing.assert_close(fast, plain.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(fast_inference, plain.detach(), atol=1e-5, rtol=0)
    assert torch.equal(x, before)


def test_fast_path_block_equals_transposed_form(tiny_model):
    """A block under no_grad equals the seed's form: LayerNorm, transpose, Linear-GELU-Linear, transpose back."""
    randomize(tiny_model).eval()
    block = tiny_model.blocks[0]
    x = torch.randn(2, 16, 32)
    f = nn.functional

    def mlp(mlp_module, y):
        y = f.gelu(f.linear(y, mlp_module.fc1.weight, mlp_module.fc1.bias), approximate="tanh")
        return f.linear(y, mlp_module.fc2.weight, mlp_module.fc2.bias)

    y = x + mlp(block.token_mixing, block.norm1(x).transpose(1, 2)).transpose(1, 2)
    expected = y + mlp(block.channel_mixing, block.norm2(y))
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected.detach(), atol=1e-5, rtol=0)


def test_residual_stream_is_contiguous(tiny_model):
    """The stem's tokens are made contiguous once, so no LayerNorm copies a transposed stream."""
    seen = []
    tiny_model.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous()))
    tiny_model(torch.randn(1, 3, 16, 16))
    assert seen == [True]
