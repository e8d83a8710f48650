"""The MLP's fast paths (``mlp_mixer.model.fast_paths``) against the plain form, and the cases where they step aside."""

import contextlib
import functools

import pytest
import torch
from helpers import randomize
from torch import nn
from torch.profiler import profile

from mlp_mixer import MLPMixer
from mlp_mixer.model.fast_paths import FastPaths, MLPFunction, cpu_choices, fast_paths
from mlp_mixer.model.mixer import FeedForward, TokenLinear
from mlp_mixer.utils.devices import cpu_vendor


def kernel_calls(run) -> tuple[object, dict[str, int]]:
    """``run()``'s result, and how often it called each fast path's kernel."""
    with profile() as prof:
        out = run()
    counts = {e.key: e.count for e in prof.key_averages()}
    return out, {k: counts.get(k, 0) for k in ("MLPFunction", "mkldnn::_linear_pointwise")}


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


# ------------------------------------------------------------------------------------------------ the switch


def test_switch_sets_and_restores_its_settings():
    """Called, the switch changes the settings; in a ``with`` block it puts them back; None keeps a setting."""
    before = fast_paths().settings
    assert isinstance(before, FastPaths) and before.enabled and before.onednn_min_macs == 2**27
    with fast_paths(False) as inside:
        assert inside == fast_paths().settings and not inside.enabled
        assert inside.onednn_gemm == before.onednn_gemm and inside.onednn_min_macs == before.onednn_min_macs
        with fast_paths(onednn_gemm=not before.onednn_gemm, onednn_min_macs=0, onednn_gelu=False) as nested:
            assert not nested.enabled and nested.onednn_gemm != before.onednn_gemm and nested.onednn_min_macs == 0
            assert not nested.onednn_gelu
        assert fast_paths().settings == inside
    assert fast_paths().settings == before
    switch = fast_paths(False)  # without `with`: for the rest of the process, until set again
    try:
        assert not fast_paths().settings.enabled
    finally:
        switch.__exit__(None, None, None)
    assert fast_paths().settings == before
    with pytest.raises(ValueError, match="onednn_min_macs must be a non-negative integer, got -1"):
        fast_paths(onednn_min_macs=-1)
    assert fast_paths().settings == before


def test_defaults_follow_the_cpu_class():
    """oneDNN's GEMMs only on AMD with AVX-512, its fused GELU only with AVX-512 (the measured table); the
    process's defaults are this CPU's row."""
    assert cpu_choices("AuthenticAMD", "AVX512") == {"onednn_gemm": True, "onednn_gelu": True}
    assert cpu_choices("AuthenticAMD", "AVX2") == {"onednn_gemm": False, "onednn_gelu": False}
    assert cpu_choices("GenuineIntel", "AVX512") == {"onednn_gemm": False, "onednn_gelu": True}
    assert cpu_choices("GenuineIntel", "AVX2") == {"onednn_gemm": False, "onednn_gelu": False}
    assert cpu_choices(None, "DEFAULT") == {"onednn_gemm": False, "onednn_gelu": False}
    here = cpu_choices(cpu_vendor(), torch.backends.cpu.get_cpu_capability())
    assert {k: getattr(FastPaths(), k) for k in here} == here


def test_switch_off_runs_the_three_modules(tiny_config):
    """Off, no fast kernel runs, in training or in inference."""
    model = randomize(MLPMixer(**tiny_config)).train()
    x, y = torch.randn(3, 3, 16, 16), torch.tensor([1, 4, 7])
    with fast_paths(False):
        _, calls = kernel_calls(lambda: train_step(model, x, y))
        assert calls == {"MLPFunction": 0, "mkldnn::_linear_pointwise": 0}
        with torch.no_grad():
            _, calls = kernel_calls(lambda: model.eval()(x))
        assert calls == {"MLPFunction": 0, "mkldnn::_linear_pointwise": 0}


# --------------------------------------------------------------------------------- each against the plain form


@pytest.mark.parametrize("gelu", ["tanh", "exact"])
@pytest.mark.parametrize("onednn_gelu", [True, False])
@pytest.mark.parametrize("onednn_gemm", [True, False])
def test_inference_fast_path_equals_plain_form(tiny_config, gelu, onednn_gelu, onednn_gemm):
    """Without autograd, GELU runs in place; outputs equal the autograd (plain) path and the input is untouched,
    with every choice of kernels (every GEMM counted as large)."""
    model = randomize(MLPMixer(**tiny_config, gelu=gelu)).eval()
    x = torch.randn(3, 3, 16, 16)
    before = x.clone()
    plain = model(x)  # parameters require grad: the out-of-place path
    assert plain.requires_grad
    choice = fast_paths(onednn_gelu=onednn_gelu, onednn_gemm=onednn_gemm, onednn_min_macs=0)
    with choice, torch.no_grad():
        fast = model(x)
        with fast_paths(False):
            switched_off = model(x)
    with choice, torch.inference_mode():
        fast_inference = model(x)
    torch.testing.assert_close(fast, plain.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(fast_inference, plain.detach(), atol=1e-5, rtol=0)
    assert torch.equal(switched_off, plain.detach())  # off, the same kernels as with autograd
    assert torch.equal(x, before)


@pytest.mark.parametrize("gelu", ["tanh", "exact"])
def test_inference_fuses_channel_fc1_and_gelu_unless_watched(tiny_config, gelu):
    """CPU inference runs channel mixing's fc1+GELU as one oneDNN call (the equality above then tests it); hooks,
    FLOP counting and autograd get the unfused modules."""
    from mlp_mixer.analysis.summary import count_macs

    if not torch.backends.mkldnn.is_available():
        pytest.skip("needs oneDNN")
    model = randomize(MLPMixer(**tiny_config, gelu=gelu)).eval()
    x = torch.randn(2, 3, 16, 16)

    def fused_calls(grad: bool = False) -> int:
        with profile() as prof, torch.set_grad_enabled(grad), fast_paths(onednn_gelu=True, onednn_gemm=False):
            model(x)
        return sum(e.count for e in prof.key_averages() if e.key == "mkldnn::_linear_pointwise")

    assert fused_calls() == tiny_config["depth"]  # channel mixing only; token mixing stays a baddbmm
    assert fused_calls(grad=True) == 0
    seen = []
    handle = model.blocks[0].channel_mixing.act.register_forward_hook(lambda m, a, out: seen.append(out.shape))
    with torch.no_grad(), fast_paths(onednn_gelu=True):
        model(x)
    assert seen == [(2, 16, tiny_config["channel_dim"])] and fused_calls() == tiny_config["depth"] - 1
    handle.remove()
    with torch.device("meta"):
        skeleton = MLPMixer(**tiny_config)
    assert count_macs(model, (1, 3, 16, 16)) == count_macs(skeleton, (1, 3, 16, 16))  # fc1 counted


def test_hooked_fc1_output_is_not_overwritten_by_the_gelu(tiny_config):
    """A hook on fc1 keeps what fc1 returned: the GELU does not run in place on a watched MLP."""
    model = randomize(MLPMixer(**tiny_config)).eval()
    mlp = model.blocks[0].token_mixing
    outputs = []
    mlp.fc1.register_forward_hook(lambda m, args, out: outputs.append(out))
    x = torch.randn(2, 16, 32)
    with torch.no_grad():
        mlp(x)
        torch.testing.assert_close(outputs[0], mlp.fc1(x), atol=0, rtol=0)


@pytest.mark.parametrize("gelu", ["tanh", "exact"])
def test_training_mlp_function_gives_autograds_gradients_bit_for_bit(tiny_config, gelu):
    """On CPU each MLP trains through MLPFunction (gradients written over the saved GELU output); loss and every
    gradient equal autograd's through the three modules exactly, and a watched model takes the modules' path."""
    model = randomize(MLPMixer(**tiny_config, gelu=gelu)).train()
    x, y = torch.randn(3, 3, 16, 16), torch.tensor([1, 4, 7])

    def step(fused: bool) -> tuple[torch.Tensor, list[torch.Tensor], int]:
        with fast_paths(fused):
            (loss, grads), calls = kernel_calls(lambda: train_step(model, x, y))
        return loss, grads, calls["MLPFunction"]

    loss, grads, calls = step(fused=True)
    plain_loss, plain_grads, plain_calls = step(fused=False)
    assert calls == 2 * tiny_config["depth"] and plain_calls == 0  # token and channel mixing of every block
    assert torch.equal(loss, plain_loss)
    assert all(torch.equal(g, p) for g, p in zip(grads, plain_grads, strict=True))
    handle = model.blocks[0].token_mixing.fc2.register_forward_hook(lambda *args: None)
    assert step(fused=True)[2] == 2 * tiny_config["depth"] - 1
    handle.remove()


@pytest.mark.parametrize("onednn", [True, False])
def test_large_channel_gemms_follow_onednn_gemm(tiny_config, onednn):
    """With every GEMM counted as large, onednn_gemm sends channel mixing's four training GEMMs (fc1, fc2 and
    the two input gradients) and inference's fc2 to oneDNN; logits and gradients match the modules' MKL path to
    fp32 rounding. Off, no GEMM goes there but inference's fused fc1+GELU."""
    if not torch.backends.mkldnn.is_available():
        pytest.skip("needs oneDNN")
    model = randomize(MLPMixer(**tiny_config)).train()
    x, y = torch.randn(3, 3, 16, 16), torch.tensor([1, 4, 7])

    def onednn_calls(run):
        out, calls = kernel_calls(run)
        return out, calls["mkldnn::_linear_pointwise"]

    with fast_paths(onednn_gemm=onednn, onednn_min_macs=0, onednn_gelu=True):
        (loss, fast), calls = onednn_calls(lambda: train_step(model, x, y))
        assert calls == (4 * tiny_config["depth"] if onednn else 0)
        handles = [m.fc1.register_forward_hook(lambda *args: None) for m in model.modules() if hasattr(m, "fc1")]
        (plain_loss, plain), plain_calls = onednn_calls(lambda: train_step(model, x, y))  # hooks: ATen's GEMMs
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


# --------------------------------------------------------------------------- where they step aside


def test_fx_trace_sees_the_three_modules(tiny_config):
    """torch.fx traces the model: its graph calls fc1, GELU and fc2 of every MLP and equals eager."""
    model = randomize(MLPMixer(**tiny_config)).eval()
    traced = torch.fx.symbolic_trace(model)
    targets = [node.target for node in traced.graph.nodes if node.op == "call_module"]
    assert targets.count("blocks.0.channel_mixing.act") == 1 and "blocks.1.token_mixing.fc2" not in targets
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        _, calls = kernel_calls(lambda: traced(x))
        torch.testing.assert_close(traced(x), model(x), atol=1e-5, rtol=0)
    assert calls == {"MLPFunction": 0, "mkldnn::_linear_pointwise": 0}


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("kind", ["channel", "token"])
def test_jit_script_compiles_the_plain_form(kind):
    """TorchScript compiles an MLP's three modules; the scripted MLP equals the eager one."""
    torch.manual_seed(0)
    mlp = randomize(FeedForward(32, 64) if kind == "channel" else FeedForward(16, 8, linear=TokenLinear)).eval()
    scripted = torch.jit.script(mlp)
    x = torch.randn(2, 16, 32)
    with torch.no_grad():
        _, calls = kernel_calls(lambda: scripted(x))
        torch.testing.assert_close(scripted(x), mlp(x), atol=1e-5, rtol=0)
    assert calls == {"MLPFunction": 0, "mkldnn::_linear_pointwise": 0}


def test_backward_hooks_are_called(tiny_config):
    """A full backward hook on fc1 sees its gradient: the MLP trains through its modules, not MLPFunction."""
    model = randomize(MLPMixer(**tiny_config)).train()
    x, y = torch.randn(3, 3, 16, 16), torch.tensor([1, 4, 7])
    seen = []
    model.blocks[0].channel_mixing.fc1.register_full_backward_hook(lambda m, gin, gout: seen.append(gout[0].shape))
    _, calls = kernel_calls(lambda: train_step(model, x, y))
    assert seen == [(3, 16, tiny_config["channel_dim"])]
    assert calls["MLPFunction"] == 2 * tiny_config["depth"] - 1


@pytest.mark.parametrize("watcher", ["compiling", "dispatch mode", "autocast", "float64", "dropout", "vmap"])
def test_steps_aside_when_watched_or_unsupported(watcher, monkeypatch):
    """Under a compiler, a dispatch mode, autocast, in float64, with dropout in training or under a functorch
    transform, a training MLP runs its three modules; its result equals the plain form's."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Passthrough(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    mlp = randomize(FeedForward(32, 64, dropout=0.5 if watcher == "dropout" else 0.0)).train()
    x = torch.randn(2, 16, 32, requires_grad=True)
    context = contextlib.nullcontext
    if watcher == "compiling":  # what torch.compile and torch.export report while they trace
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    elif watcher == "dispatch mode":
        context = Passthrough
    elif watcher == "autocast":
        context = functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16)
    elif watcher == "float64":
        mlp, x = mlp.double(), x.double()

    def run() -> torch.Tensor:
        torch.manual_seed(1)  # the same dropout masks in both runs
        with context():
            return torch.vmap(mlp)(x) if watcher == "vmap" else mlp(x)

    out, calls = kernel_calls(run)
    assert calls == {"MLPFunction": 0, "mkldnn::_linear_pointwise": 0}
    with fast_paths(False):
        torch.testing.assert_close(out, run(), atol=0, rtol=0)
