"""int8: channel mixing and head become dynamic int8, token mixing stays float, outputs stay close to fp32."""

import torch
from torch import nn

from mlp_mixer.inference.quantize import int8_layer_names, quantize_dynamic_int8
from mlp_mixer.model.mixer import TokenLinear


def test_only_plain_linears_are_quantized(model):
    quantized = quantize_dynamic_int8(model)
    names = int8_layer_names(model)
    assert names == [f"blocks.{i}.channel_mixing.fc{j}" for i in range(2) for j in (1, 2)] + ["head"]
    modules = dict(quantized.named_modules())
    for name in names:
        assert isinstance(modules[name], torch.ao.nn.quantized.dynamic.Linear)
        assert modules[name].weight().dtype == torch.qint8
    for i in range(2):
        for fc in ("fc1", "fc2"):
            original = getattr(model.blocks[i].token_mixing, fc)
            kept = modules[f"blocks.{i}.token_mixing.{fc}"]
            assert type(kept) is TokenLinear and torch.equal(kept.weight, original.weight)
    assert all(type(m) is nn.Linear for n, m in model.named_modules() if n in names)  # the original is untouched


def test_outputs_are_close_to_fp32_but_not_equal(model):
    quantized = quantize_dynamic_int8(model)
    x = torch.randn(128, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = model(x), quantized(x)
    error = (got - expected).abs().max()
    assert 0 < error < 0.05 * expected.abs().max()
    assert (got.argmax(1) == expected.argmax(1)).float().mean() >= 0.9
