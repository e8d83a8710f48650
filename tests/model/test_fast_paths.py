"""The MLP's fast paths against the plain form (moved from tests/test_bench.py)."""

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


@pytest.mark.parametrize("gelu", ["tanh", "exact"])
def test_inference_fuses_channel_fc1_and_gelu_unless_watched(tiny_config, gelu):
    """CPU inference runs channel mixing's fc1+GELU as one oneDNN call (the equality above then tests it); hooks,
    FLOP counting and autograd get the unfused modules."""
    from torch.profiler import profile

    from mlp_mixer.analysis.summary import count_macs

    if not torch.backends.mkldnn.is_available():
        pytest.skip("needs oneDNN")
    model = randomize(MLPMixer(**tiny_config, gelu=gelu)).eval()
    x = torch.randn(2, 3, 16, 16)

    def fused_calls(grad: bool = False) -> int:
        with profile() as prof, torch.set_grad_enabled(grad):
            model(x)
        return sum(e.count for e in prof.key_averages() if e.key == "mkldnn::_linear_pointwise")

    assert fused_calls() == tiny_config["depth"]  # channel mixing only; token mixing stays a baddbmm
    assert fused_calls(grad=True) == 0
    seen = []
    handle = model.blocks[0].channel_mixing.act.register_forward_hook(lambda m, a, out: seen.append(out.shape))
    with torch.no_grad():
        model(x)
    assert seen == [(2, 16, tiny_config["channel_dim"])] and fused_calls() == tiny_config["depth"] - 1
    handle.remove()
    with torch.device("meta"):
        skeleton = MLPMixer(**tiny_config)
    assert count_macs(model, (1, 3, 16, 16)) == count_macs(skeleton, (1, 3, 16, 16))  # fc1 counted


@pytest.mark.parametrize("gelu", ["tanh", "exact"])
def test_training_mlp_function_gives_autograds_gradients_bit_for_bit(tiny_config, gelu):
    """On CPU each MLP trains through MLPFunction (gradients written over the saved GELU output); loss and every
    gradient equal autograd's through the three modules exactly, and a watched model takes the modules' path."""
    from torch.profiler import profile

    from mlp_mixer.model import mixer

    model = randomize(MLPMixer(**tiny_config, gelu=gelu)).train()
    x, y = torch.randn(3, 3, 16, 16), torch.tensor([1, 4, 7])

    def step(fused: bool) -> tuple[torch.Tensor, list[torch.Tensor], int]:
        model.zero_grad()
        predicate = mixer._unobserved_cpu_fp32
        if not fused:
            mixer._unobserved_cpu_fp32 = lambda mlp, x: False
        try:
            with profile() as prof:
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
        finally:
            mixer._unobserved_cpu_fp32 = predicate
        calls = sum(e.count for e in prof.key_averages() if e.key == "MLPFunction")
        return loss.detach(), [p.grad.clone() for p in model.parameters()], calls

    loss, grads, calls = step(fused=True)
    plain_loss, plain_grads, plain_calls = step(fused=False)
    assert calls == 2 * tiny_config["depth"] and plain_calls == 0  # token and channel mixing of every block
    assert torch.equal(loss, plain_loss)
    assert all(torch.equal(g, p) for g, p in zip(grads, plain_grads, strict=True))
    handle = model.blocks[0].token_mixing.fc2.register_forward_hook(lambda *args: None)
    assert step(fused=True)[2] == 2 * tiny_config["depth"] - 1
    handle.remove()


@pytest.mark.parametrize("onednn", [True, False])
def test_large_channel_gemms_follow_onednn_gemm(tiny_config, monkeypatch, onednn):
    """With every GEMM counted as large, ONEDNN_GEMM sends channel mixing's four training GEMMs (fc1, fc2 and
    the two input gradients) and inference's fc2 to oneDNN; logits and gradients match the modules' MKL path to
    fp32 rounding. Off, no GEMM goes there but inference's fused fc1+GELU."""
    from torch.profiler import profile

    from mlp_mixer.model import mixer

    if not torch.backends.mkldnn.is_available():
        pytest.skip("needs oneDNN")
    monkeypatch.setattr(mixer, "ONEDNN_GEMM", onednn)
    monkeypatch.setattr(mixer, "ONEDNN_MIN_MACS", 0)
    model = randomize(MLPMixer(**tiny_config)).train()
    x, y = torch.randn(3, 3, 16, 16), torch.tensor([1, 4, 7])

    def onednn_calls(run):
        with profile() as prof:
            out = run()
        return out, sum(e.count for e in prof.key_averages() if e.key == "mkldnn::_linear_pointwise")

    def grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    (loss, fast), calls = onednn_calls(grads)
    assert calls == (4 * tiny_config["depth"] if onednn else 0)
    handles = [m.fc1.register_forward_hook(lambda *args: None) for m in model.modules() if hasattr(m, "fc1")]
    (plain_loss, plain), plain_calls = onednn_calls(grads)  # hooks: the three modules, ATen's GEMMs
    assert plain_calls == 0
    torch.testing.assert_close(loss, plain_loss)
    for g, p in zip(fast, plain, strict=True):
        torch.testing.assert_close(g, p, rtol=1e-4, atol=1e-6)
    model.eval()
    with torch.no_grad():
        plain_logits = model(x)
        for handle in handles:
            handle.remove()
        logits, calls = onednn_calls(lambda: model(x))
    assert calls == tiny_config["depth"] * (2 if onednn else 1)
    torch.testing.assert_close(logits, plain_logits, rtol=1e-4, atol=1e-5)


def test_mlp_function_passes_gradcheck():
    """The custom backward against finite differences, in float64, for both Linear kinds."""
    from mlp_mixer.model.mixer import MLPFunction

    torch.manual_seed(0)
    d = dict(dtype=torch.float64, requires_grad=True)
    channel = (torch.randn(2, 3, 4, **d), torch.randn(5, 4, **d), torch.randn(5, **d), torch.randn(4, 5, **d))
    token = (torch.randn(2, 3, 4, **d), torch.randn(5, 3, **d), torch.randn(5, **d), torch.randn(3, 5, **d))
    for (x, w1, b1, w2), is_token in [(channel, False), (token, True)]:
        b2 = torch.randn(w2.shape[0], **d)
        for approximate in ("tanh", "none"):
            assert torch.autograd.gradcheck(
                lambda *t, a=approximate, k=is_token: MLPFunction.apply(*t, a, k), (x, w1, b1, w2, b2)
            )


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
