"""Faster kernels for the Mixer's MLP (Linear -> GELU -> Linear), behind one switch: :func:`fast_paths`.

:class:`~mlp_mixer.model.mixer.FeedForward` runs its three modules as written unless :func:`applies` says one of
these may run instead; each computes the same function (tests/model/test_fast_paths.py holds them to the plain form):

- **inference, any device**: the GELU works in place on fc1's output, sparing a second buffer of the widest
  activation (~10% faster on CPU).
- **inference, CPU fp32, channel mixing**: where ``onednn_gelu`` is on (AVX-512), fc1 and its GELU as one oneDNN
  call, the GELU applied to each output tile while it is in cache. Both GELU forms cost the same there, so the
  official tanh GELU does not pay for ATen's slow tanh-GELU kernel (docs/bench.md). Equal to the plain form to fp32
  rounding. Elsewhere fc1 (through :func:`cpu_linear`), then the GELU in place.
- **training, CPU fp32**: :class:`MLPFunction`, the whole MLP as one autograd Function whose backward writes the
  GELU's gradient in place; gradients bit for bit those of the three modules.
- **large CPU fp32 GEMMs of channel mixing** in the two above go to oneDNN instead of MKL where ``onednn_gemm`` is
  on (:func:`cpu_linear`), equal to fp32 rounding.

They step aside whenever something watches the model (:func:`watched`): ``torch.jit.trace``, ``torch.fx``,
``torch.compile`` and ``torch.export``, functorch transforms and forward-mode AD, dispatch modes (FLOP counters,
memory trackers) and module hooks all see the three modules (TorchScript compiles only them: ``FeedForward.forward``
keeps this module out of its scripted branch). The kernels other than the in-place GELU also
step aside under autocast, for other dtypes and devices, without oneDNN, and for MLPs whose modules were replaced
(int8, LoRA, a subclass). :class:`MLPFunction` is once differentiable: for double backward, turn the switch off.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.autograd import forward_ad
from torch.autograd.function import once_differentiable
from torch.fx._symbolic_trace import is_fx_symbolic_tracing
from torch.nn.modules import module as _module
from torch.utils._python_dispatch import _get_current_dispatch_mode

from ..utils.devices import cpu_vendor


def cpu_choices(vendor: str | None, capability: str) -> dict[str, bool]:
    """The CPU kernels measured fastest for a CPU class, by its vendor (``/proc/cpuinfo``'s ``vendor_id``) and the
    instruction set ATen dispatches to (``torch.backends.cpu.get_cpu_capability()``; oneDNN follows the CPU too).

    From interleaved runs of ``benchmarks/cpu_choice_ab.py`` (docs/bench.md, "Per CPU class"). MKL runs the same AVX2
    code on every AMD CPU (``mkl_blas_def_sgemm_kernel_0_zen``), so what differs between classes is oneDNN: with
    AVX-512 its GEMMs beat MKL's by 1.1-1.5x and its GELU post-op is nearly free; held to AVX2 its GEMMs tie MKL's
    or lose (0.8-1.0x at B/16) and the tanh-GELU post-op costs more than fc1 then ATen's GELU in place. Intel CPUs
    keep MKL: on a Xeon with AMX, oneDNN's GEMMs tied with it within the run-to-run noise.
    """
    avx512 = capability.startswith("AVX512")
    return {"onednn_gemm": vendor == "AuthenticAMD" and avx512, "onednn_gelu": avx512}


_CHOICES = cpu_choices(cpu_vendor(), torch.backends.cpu.get_cpu_capability())


@dataclasses.dataclass(frozen=True)
class FastPaths:
    """What the fast paths may do; :func:`fast_paths` changes it. Defaults: :func:`cpu_choices` for this CPU."""

    enabled: bool = True  # off: every MLP runs its three modules as written
    onednn_gemm: bool = _CHOICES["onednn_gemm"]  # large fp32 GEMMs of channel mixing in oneDNN instead of MKL
    # A tie or slower below ~1e8 multiply-adds a GEMM (docs/bench.md).
    onednn_min_macs: int = 2**27  # multiply-adds of one GEMM from which onednn_gemm sends it to oneDNN
    onednn_gelu: bool = _CHOICES["onednn_gelu"]  # inference: channel mixing's fc1 and its GELU as one oneDNN call


_settings = FastPaths()


class fast_paths:  # lowercase, as torch.set_grad_enabled: a call that is also a context manager
    """The one switch of the fast paths. Called, it changes their settings for the process; in a ``with`` block it
    puts the previous ones back on exit. An argument left ``None`` keeps its setting.

    Args:
        enabled: False runs every MLP as its three modules (the plain form).
        onednn_gemm: send channel mixing's large fp32 GEMMs to oneDNN (True) or keep them in MKL (False).
            Default: True on AMD CPUs with AVX-512 (:func:`cpu_choices`).
        onednn_min_macs: multiply-adds from which a GEMM counts as large (default 2**27).
        onednn_gelu: in inference, run channel mixing's fc1 and its GELU as one oneDNN call (True) or fc1 through
            :func:`cpu_linear` and then ATen's GELU in place (False). Default: True with AVX-512.

    ``fast_paths().settings`` is what is in force::

        with fast_paths(False):
            plain = model(x)
        with fast_paths(onednn_gemm=True, onednn_min_macs=0):  # every channel-mixing GEMM in oneDNN
            fast = model(x)
    """

    def __init__(
        self,
        enabled: bool | None = None,
        *,
        onednn_gemm: bool | None = None,
        onednn_min_macs: int | None = None,
        onednn_gelu: bool | None = None,
    ) -> None:
        global _settings
        if onednn_min_macs is not None and (not isinstance(onednn_min_macs, int) or onednn_min_macs < 0):
            raise ValueError(f"onednn_min_macs must be a non-negative integer, got {onednn_min_macs!r}")
        changes = {
            "enabled": enabled,
            "onednn_gemm": onednn_gemm,
            "onednn_min_macs": onednn_min_macs,
            "onednn_gelu": onednn_gelu,
        }
        self.previous = _settings
        _settings = dataclasses.replace(_settings, **{k: v for k, v in changes.items() if v is not None})
        self.settings = _settings

    def __enter__(self) -> FastPaths:
        return self.settings

    def __exit__(self, *exc_info: object) -> None:
        global _settings
        _settings = self.previous


def watched(module: nn.Module) -> bool:
    """Whether something observes the calls inside ``module`` (to its children), so they must run as written: a
    compiler or tracer (checked first: tensors may be proxies then), a functorch transform or forward-mode AD, a
    dispatch mode (FLOP counters, memory trackers), or a forward or backward hook, global or on a child."""
    return (
        torch.compiler.is_compiling()  # torch.compile, torch.export
        or torch.jit.is_tracing()
        or is_fx_symbolic_tracing()
        or torch._C._are_functorch_transforms_active()  # vmap, grad, jacrev: MLPFunction has no rules for them
        or forward_ad._current_level >= 0  # inside forward_ad.dual_level(): MLPFunction has no jvp
        or _get_current_dispatch_mode() is not None
        or bool(_module._global_forward_hooks or _module._global_forward_pre_hooks)
        or bool(_module._global_backward_hooks or _module._global_backward_pre_hooks)
        or any(
            m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
            for m in module._modules.values()  # its children, without children()'s generator
        )
    )


def _needs_grad(mlp: nn.Module, x: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in mlp.parameters()))


def _cpu_fp32(mlp: nn.Module, x: torch.Tensor, token: bool) -> bool:
    """Whether the CPU kernels apply: fp32 on CPU without autocast, with oneDNN, and fc1, act, fc2 the classes
    the kernels reproduce (``nn.Linear``, or ``TokenLinear`` where ``token``, and ``nn.GELU``)."""
    fc1 = mlp.fc1
    return (
        (token or type(fc1) is nn.Linear)
        and type(mlp.fc2) is type(fc1)
        and type(mlp.act) is nn.GELU
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and fc1.weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
    )


def applies(mlp: nn.Module, x: torch.Tensor, token: bool) -> bool:
    """Whether :func:`feed_forward` may run ``mlp`` (a ``FeedForward``; ``token``: its Linears are ``TokenLinear``)
    on ``x`` instead of its three modules."""
    if watched(mlp) or not _settings.enabled:
        return False
    if not _needs_grad(mlp, x):
        return type(mlp.act) is nn.GELU  # at least the GELU in place
    # MLPFunction has no dropout (the official Mixer has none): training with dropout runs the three modules.
    return _cpu_fp32(mlp, x, token) and not (mlp.training and mlp.drop1.p > 0)


def feed_forward(mlp: nn.Module, x: torch.Tensor, token: bool) -> torch.Tensor:
    """``mlp(x)`` by the fastest form that :func:`applies` allows (see the module docstring)."""
    fc1, fc2, approximate = mlp.fc1, mlp.fc2, mlp.act.approximate
    if _needs_grad(mlp, x):
        return MLPFunction.apply(x, fc1.weight, fc1.bias, fc2.weight, fc2.bias, approximate, token)
    if not token and _cpu_fp32(mlp, x, token):
        if _settings.onednn_gelu:  # fc1 and GELU in one call
            x = torch.ops.mkldnn._linear_pointwise(x, fc1.weight, fc1.bias, "gelu", [], approximate)
        else:
            x = cpu_linear(x, fc1.weight, fc1.bias)
            x = nn.functional.gelu(x, approximate=approximate, out=x)
        return mlp.drop2(cpu_linear(mlp.drop1(x), fc2.weight, fc2.bias))
    x = fc1(x)
    return mlp.drop2(fc2(mlp.drop1(nn.functional.gelu(x, approximate=approximate, out=x))))


def cpu_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``nn.functional.linear`` on CPU, in oneDNN where ``onednn_gemm`` is on and the product is large (fp32, at
    least ``onednn_min_macs`` multiply-adds), else in ATen (MKL)."""
    rows = x.numel() // x.shape[-1]
    if _settings.onednn_gemm and x.dtype == torch.float32 and rows * weight.numel() >= _settings.onednn_min_macs:
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight.contiguous(), bias, "none", [], "")
    return nn.functional.linear(x, weight, bias)


class MLPFunction(torch.autograd.Function):
    """Linear -> GELU -> Linear for training on CPU, with the GELU's gradient computed in place.

    Autograd's own backward allocates two new buffers of the widest activation per MLP (dL/da, then dL/dh); here
    dL/dh is written over dL/da (ATen's GELU backward, in place). Above 32 MB glibc maps every new buffer fresh
    from the kernel, so this spares page faults as well as memory: S/16 training steps ~3% faster on one thread
    (docs/bench.md). Saved tensors are not touched, so ``retain_graph`` and gradcheck work; the gradients are bit
    for bit those of the three modules, unless :func:`cpu_linear` sends channel mixing's large GEMMs to oneDNN
    (then equal to fp32 rounding). ``token``: the Linears are ``TokenLinear`` (``W @ x``).
    """

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, approximate: str, token: bool):  # type: ignore[override]
        shape = x.shape
        if token:  # (B, S, C) -> (B, D_S, C) -> (B, S, C)
            h = torch.baddbmm(b1[:, None], w1.expand(len(x), -1, -1), x)
            a = nn.functional.gelu(h, approximate=approximate)
            y = torch.baddbmm(b2[:, None], w2.expand(len(x), -1, -1), a)
        else:  # (..., C) -> (N, D_C) -> (..., C)
            x = x.reshape(-1, shape[-1])
            h = cpu_linear(x, w1, b1)
            a = nn.functional.gelu(h, approximate=approximate)
            y = cpu_linear(a, w2, b2).view(*shape[:-1], -1)
        ctx.save_for_backward(x, w1, w2, h, a)
        ctx.approximate, ctx.token, ctx.shape = approximate, token, shape
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        x, w1, w2, h, a = ctx.saved_tensors
        need_x, need_w1, need_b1, need_w2, need_b2 = ctx.needs_input_grad[:5]
        gx = gw1 = gb1 = gw2 = gb2 = None
        if ctx.token:
            g = grad.contiguous()
            gw2 = torch.bmm(g, a.transpose(1, 2)).sum(0) if need_w2 else None
            gb2 = g.sum((0, 2)) if need_b2 else None
            ga = torch.bmm(w2.t().expand(len(g), -1, -1), g)
            gh = torch.ops.aten.gelu_backward.grad_input(ga, h, approximate=ctx.approximate, grad_input=ga)
            gw1 = torch.bmm(gh, x.transpose(1, 2)).sum(0) if need_w1 else None
            gb1 = gh.sum((0, 2)) if need_b1 else None
            gx = torch.bmm(w1.t().expand(len(g), -1, -1), gh) if need_x else None
        else:
            g = grad.reshape(-1, grad.shape[-1])
            gw2 = g.t().mm(a) if need_w2 else None
            gb2 = g.sum(0) if need_b2 else None
            ga = cpu_linear(g, w2.t())
            gh = torch.ops.aten.gelu_backward.grad_input(ga, h, approximate=ctx.approximate, grad_input=ga)
            gw1 = gh.t().mm(x) if need_w1 else None
            gb1 = gh.sum(0) if need_b1 else None
            gx = cpu_linear(gh, w1.t()).view(ctx.shape) if need_x else None
        return gx, gw1, gb1, gw2, gb2, None, None
