"""The MLP-Mixer model (Tolstikhin et al., 2021, arXiv 2105.01601), as the paper and the official code define it.

Vocabulary: the public names are the seed's constructor arguments. In the paper's symbols,
``dim`` = C (hidden width), ``token_dim`` = D_S (token-mixing MLP width), ``channel_dim`` = D_C
(channel-mixing MLP width), ``depth`` = number of Mixer layers, and S = number of patches.

Numerics follow the official JAX code (``vit_jax/models_mixer.py``): LayerNorm eps 1e-6, tanh-approximate
GELU (flax's default), lecun-normal init with zero biases and a zero head. ``gelu="exact"`` gives timm's
erf GELU instead; the two differ by ~1e-4 in the logits, so official checkpoints need ``"tanh"``.
Faster kernels for the same MLPs (CPU mostly) live in :mod:`.fast_paths`, behind one switch.
"""

# No `from __future__ import annotations` here: torch.fx copies forward()'s annotations into the code it generates,
# and TorchScript cannot read them back as strings (scripting an fx-traced model).
import contextlib
import math
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import fast_paths
from .pretrained import Preprocessing, Pretrained
from .timm_api import GLOBAL_POOLS, TimmApi, accepts_timm_names, traced
from .variants import check_model_size, variant_config

LAYER_NORM_EPS = 1e-6  # flax nn.LayerNorm default, used by every official checkpoint
GELU_FORMS = {"tanh": "tanh", "exact": "none"}  # our name -> torch's nn.GELU(approximate=...)


class TokenLinear(nn.Linear):
    """A Linear applied across tokens: ``(B, S, C) -> (B, out, C)`` as ``W @ x + b``.

    Same parameters as ``nn.Linear(S, out)`` (checkpoints and summaries line up), but it multiplies the
    untransposed activations, so token mixing needs no transpose and no copy.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # b[:, None] + (out, S) @ (B, S, C) -> (B, out, C), as one batched GEMM with the bias fused in.
        # The weight is broadcast over the batch by expand (a view); torch.matmul would instead fold
        # (B, S, C) into (B*C, S), copying the activations on the way in and out.
        return torch.baddbmm(self.bias[:, None], self.weight.expand(x.shape[0], -1, -1), x)


class FeedForward(nn.Module):
    """The paper's MLP: Linear -> GELU -> Linear, with optional dropout (official: ``MlpBlock``)."""

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        dropout: float = 0.0,
        gelu: str = "tanh",
        linear: type[nn.Linear] = nn.Linear,
    ) -> None:
        super().__init__()
        self.fc1 = linear(dim, hidden_dim)  # official: Dense_0
        self.act = nn.GELU(approximate=GELU_FORMS[gelu])
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = linear(hidden_dim, dim)  # official: Dense_1
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # TorchScript compiles the plain form only
            token = type(self.fc1) is TokenLinear
            if fast_paths.applies(self, x, token):  # the same function in fewer, faster kernels, unless watched
                return fast_paths.feed_forward(self, x, token)
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class TokenMixing(FeedForward):
    """The token-mixing MLP: the paper's MLP across patches, ``(B, S, C) -> (B, S, C)``, for every channel."""

    def __init__(self, num_patch: int, token_dim: int, dropout: float = 0.0, gelu: str = "tanh") -> None:
        super().__init__(num_patch, token_dim, dropout, gelu, linear=TokenLinear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # TorchScript has no super(): the plain form, written out
            return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))
        elif not torch.compiler.is_compiling() or torch.compiler.is_exporting():
            return super().forward(x)  # eager, and exported graphs (ONNX runs W @ x well; int8 keeps it float)
        # Under torch.compile the paper's transposed form is faster: inductor folds both transposes into the
        # neighbouring LayerNorm and residual add, and runs one (B*C, S) GEMM with MKL's packed weights.
        # (Calling nn.Linear.forward skips fc1/fc2's own hooks, which only eager-mode tools use.)
        x = self.drop1(self.act(nn.Linear.forward(self.fc1, x.transpose(1, 2))))  # (B, S, C) -> (B, C, D_S)
        return self.drop2(nn.Linear.forward(self.fc2, x)).transpose(1, 2)  # (B, C, S) -> (B, S, C)


class MixerBlock(nn.Module):
    """One Mixer layer: token mixing across patches, then channel mixing within each patch."""

    def __init__(
        self,
        dim: int,
        num_patch: int,
        token_dim: int,
        channel_dim: int,
        dropout: float = 0.0,
        drop_path: float = 0.0,
        gelu: str = "tanh",
        drop_path_rescale: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)  # official: LayerNorm_0
        self.token_mixing = TokenMixing(num_patch, token_dim, dropout, gelu)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)  # official: LayerNorm_1
        self.channel_mixing = FeedForward(dim, channel_dim, dropout, gelu)
        self.drop_path = DropPath(drop_path, drop_path_rescale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, S, C) -> (B, S, C)
        # The paper's two equations. token_mixing acts on the S axis of (B, S, C) directly,
        # which equals MLP(LN(x)^T)^T without materialising the transpose.
        x = x + self.drop_path(self.token_mixing(self.norm1(x)))
        x = x + self.drop_path(self.channel_mixing(self.norm2(x)))
        return x


class MLPMixer(nn.Module, TimmApi, Pretrained):
    """MLP-Mixer: per-patch linear stem, ``depth`` Mixer layers, pre-head LayerNorm, mean pool, linear head.

    Args:
        in_channels: image channels (3 for RGB, 1 for grayscale).
        dim: C, the width of every token.
        num_classes: size of the head; 0 makes the model return the pooled features.
        patch_size: P; the stem is a P x P convolution with stride P.
        image_size: input size, an int or (height, width); each must be divisible by ``patch_size``.
        depth: number of Mixer layers.
        token_dim: D_S, hidden width of the token-mixing MLP.
        channel_dim: D_C, hidden width of the channel-mixing MLP.
        dropout: dropout inside both MLPs (the official Mixer has none).
        drop_path: stochastic depth rate; block i drops with probability ``i / (depth - 1) * drop_path``.
        gelu: ``"tanh"`` (official/flax, default) or ``"exact"`` (timm, ``nn.GELU()``).
        drop_path_rescale: rescale kept branches by 1/(1-p) as timm does (big_vision does not).
        head_dropout: dropout on the pooled features before the head (timm's ``drop_rate``).
        global_pool: ``"avg"`` (the paper's mean over tokens) or ``""`` (no pooling: the head sees every token).

    timm's names are accepted too (``in_chans``, ``img_size``, ``embed_dim``, ``num_blocks``, ``proj_drop_rate``,
    ``drop_rate``, ``drop_path_rate``; :data:`~.variants.TIMM_NAMES`), and :class:`~.timm_api.TimmApi` adds timm's
    model API. Besides the weights, a model carries what is needed to use them (set by the loaders, saved by
    ``save_pretrained``): ``classes`` (names of the head's outputs), ``preprocessing`` and ``source``.
    """

    @accepts_timm_names
    def __init__(
        self,
        in_channels: int,
        dim: int,
        num_classes: int,
        patch_size: int,
        image_size: int | tuple[int, int],
        depth: int,
        token_dim: int,
        channel_dim: int,
        dropout: float = 0.0,
        *,
        drop_path: float = 0.0,
        gelu: str = "tanh",
        drop_path_rescale: bool = False,
        head_dropout: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        h, w = _check_arguments(locals())
        self.in_channels, self.dim, self.num_classes = in_channels, dim, num_classes
        self.patch_size, self.image_size, self.depth = patch_size, (h, w), depth
        self.token_dim, self.channel_dim, self.gelu = token_dim, channel_dim, gelu
        self.dropout, self.drop_path, self.drop_path_rescale = dropout, drop_path, drop_path_rescale
        self.global_pool = global_pool
        self.grid_size = (h // patch_size, w // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]  # S
        self.grad_checkpointing = False

        self.stem = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        rates = [i / (depth - 1) * drop_path if depth > 1 else 0.0 for i in range(depth)]
        self.blocks = nn.ModuleList(
            MixerBlock(dim, self.num_patches, token_dim, channel_dim, dropout, rate, gelu, drop_path_rescale)
            for rate in rates
        )
        self.pre_head_layer_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.head_drop = nn.Dropout(head_dropout)
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()
        init_weights(self)

        self.classes: list[str] = []
        self.preprocessing = Preprocessing.official(self.image_size, in_channels)
        self.source: str | None = None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, in_channels, H, W) -> patch tokens (B, S, C), row-major (h outer) as the official code."""
        if not torch.jit.is_scripting():  # TorchScript compiles only this branch's absence
            if not traced():  # tracers see no concrete shapes
                self._check_input(x)
        x = self.stem(x)  # (B, C, H/P, W/P)
        # (B, C, h, w) -> (B, h*w, C), in one copy: residual adds keep their first operand's layout, so a transposed
        # stream would make every LayerNorm copy it again.
        return x.flatten(2).transpose(1, 2).contiguous()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, in_channels, H, W) -> normalised tokens (B, S, C)."""
        x = self.embed(x)
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled() and not torch.jit.is_scripting():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.pre_head_layer_norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, S, C) -> logits (B, num_classes), or pooled features (B, C) with ``pre_logits``."""
        if self.global_pool == "avg":
            x = x.mean(dim=1)  # global average pool over tokens: (B, S, C) -> (B, C)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def config(self) -> dict:
        """The constructor arguments that rebuild this architecture (stored with checkpoints)."""
        return {
            "in_channels": self.in_channels,
            "dim": self.dim,
            "num_classes": self.num_classes,
            "patch_size": self.patch_size,
            "image_size": list(self.image_size),
            "depth": self.depth,
            "token_dim": self.token_dim,
            "channel_dim": self.channel_dim,
            "dropout": self.dropout,
            "drop_path": self.drop_path,
            "gelu": self.gelu,
            "drop_path_rescale": self.drop_path_rescale,
            "head_dropout": self.head_drop.p,
            "global_pool": self.global_pool,
        }

    @torch.jit.ignore
    def _check_input(self, x: torch.Tensor) -> None:
        expected = (self.in_channels, *self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected input of shape (batch, {', '.join(map(str, expected))}), got {tuple(x.shape)}")


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch per example with probability ``p`` during training.

    Like big_vision, kept branches are not rescaled by 1/(1-p) (timm rescales); ``rescale=True`` gives timm's.
    """

    def __init__(self, p: float = 0.0, rescale: bool = False) -> None:
        super().__init__()
        self.p, self.rescale = p, rescale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device, dtype=x.dtype)  # (B, 1, ..., 1)
        keep.bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p) if self.rescale else x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}, rescale={self.rescale}"


@torch.no_grad()
def init_weights(model: MLPMixer) -> None:
    """The official init: lecun-normal stem and Dense kernels, zero biases, zero head, unit LayerNorms."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)) and module.weight.device.type != "meta":
            lecun_normal_(module.weight)
            nn.init.zeros_(module.bias)
    if isinstance(model.head, nn.Linear) and model.head.weight.device.type != "meta":
        nn.init.zeros_(model.head.weight)


def lecun_normal_(tensor: torch.Tensor) -> torch.Tensor:
    """flax's ``lecun_normal``: truncated normal at +-2 std with variance 1/fan_in (fan_in excludes out dim)."""
    fan_in = tensor[0].numel()  # Linear (out, in) -> in; Conv (out, in, k, k) -> in*k*k
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978  # stddev of a unit normal truncated at +-2
    return nn.init.trunc_normal_(tensor, std=std, a=-2 * std, b=2 * std)


def create_model(name: str, *, device: str | torch.device | None = None, **overrides: Any) -> MLPMixer:
    """Build a named variant (``"S/32"`` ... ``"H/14"``); any constructor argument can be overridden.

    ``device="meta"`` builds the architecture without allocating its weights (for counting parameters).
    """
    config = variant_config(name, **overrides)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        return MLPMixer(**config)


def count_parameters(model: nn.Module, head: bool = True) -> int:
    """Number of parameters, optionally without the classification head (as Table 1 counts them)."""
    total = sum(p.numel() for p in model.parameters())
    if not head and hasattr(model, "head"):
        total -= sum(p.numel() for p in model.head.parameters())
    return total


def _pair(size: int | tuple[int, int], name: str) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h <= 0 or w <= 0:
        raise ValueError(f"{name} must be positive, got {size}")
    return int(h), int(w)


def _check_arguments(args: dict[str, Any]) -> tuple[int, int]:
    """Raise ValueError naming the first bad constructor argument of :class:`MLPMixer`; return (height, width)."""
    for name in ("in_channels", "dim", "patch_size", "depth", "token_dim", "channel_dim"):
        if not isinstance(args[name], int) or args[name] <= 0:
            raise ValueError(f"{name} must be a positive integer, got {args[name]!r}")
    if not isinstance(args["num_classes"], int) or args["num_classes"] < 0:
        raise ValueError(f"num_classes must be a non-negative integer, got {args['num_classes']!r}")
    for name in ("dropout", "drop_path", "head_dropout"):
        if not isinstance(args[name], int | float) or not 0.0 <= args[name] < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {args[name]!r}")
    if args["global_pool"] not in GLOBAL_POOLS:
        raise ValueError(f"global_pool must be one of {GLOBAL_POOLS}, got {args['global_pool']!r}")
    if args["gelu"] not in GELU_FORMS:
        raise ValueError(f"gelu must be one of {sorted(GELU_FORMS)}, got {args['gelu']!r}")
    image_size, patch_size = args["image_size"], args["patch_size"]
    h, w = _pair(image_size, "image_size")
    if h % patch_size or w % patch_size:
        raise ValueError(f"image_size {image_size} is not divisible by patch_size {patch_size}")
    check_model_size({**args, "image_size": (h, w)})  # before a block is built: depth 10**7 would take hours
    return h, w
