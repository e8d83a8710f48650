"""Dynamic int8 quantization for CPU inference: int8 weights, activations quantized on the fly per batch.

The path is PyTorch's own ``torch.ao.quantization.quantize_dynamic``: on torch 2.14 it still works (x86 and
qnnpack kernels) though it warns that it is deprecated in favour of torchao. It needs no calibration data and no
new dependency. The ONNX route (onnxruntime's quantizer) is ``mlp-mixer export --format onnx --int8``.

Which layers: every plain ``nn.Linear`` (channel mixing and the head, most of the compute). ``TokenLinear``, the
token-mixing Linear that multiplies ``W @ x`` across tokens, stays float: a quantized Linear computes ``x @ W.T``
over the last axis, so swapping it in would mix channels instead of tokens. Only exact ``nn.Linear`` modules
are named for quantization, so a subclass is never swapped by accident.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn


def int8_layer_names(model: nn.Module) -> list[str]:
    """The modules that ``quantize_dynamic_int8`` quantizes: exactly ``nn.Linear``, not its subclasses."""
    return [name for name, module in model.named_modules() if type(module) is nn.Linear]


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    """A CPU copy of ``model`` with its ``nn.Linear`` layers in dynamic int8; the original is left untouched.

    Args:
        model: a float model, e.g. ``MLPMixer``; it is copied, moved to CPU and put in eval mode (the int8
            kernels run on CPU only and quantization is for inference).

    Returns:
        The quantized copy; it takes and returns float tensors like the original.
    """
    if torch.backends.quantized.engine == "none":
        raise ValueError(
            f"this PyTorch build has no quantized CPU engine (supported: {torch.backends.quantized.supported_engines})"
        )
    model = copy.deepcopy(model).cpu().eval()
    spec = {name: torch.ao.quantization.default_dynamic_qconfig for name in int8_layer_names(model)}
    with warnings.catch_warnings():
        # The deprecation notices of torch.ao and quantized tensors: this is the path chosen on purpose (see above).
        warnings.filterwarnings("ignore", message=r".*(torch\.ao\.quantization|quantized tensor).*deprecated")
        warnings.filterwarnings("ignore", message=r".*deprecated.*", module=r"torch\.ao\..*")
        return torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8)
