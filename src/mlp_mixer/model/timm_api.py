"""timm's model API around the paper's model, kept out of :mod:`.mixer` so that the model file reads like the paper.

:class:`TimmApi` is what timm's tools and its users expect of a model, as timm's own ``MlpMixer`` has it:
``num_features`` / ``head_hidden_size``, ``pretrained_cfg`` (derived from the :class:`~.pretrained.Preprocessing`
that travels with the weights, so ``timm.data.resolve_data_config(model=...)`` normalises as the weights need),
``get_classifier`` / ``reset_classifier``, ``group_matcher`` (layer-wise lr decay in ``create_optimizer_v2``),
``feature_info``, ``forward_intermediates`` / ``prune_intermediate_layers`` (``features_only=True`` through
timm's ``FeatureGetterNet``) and ``set_grad_checkpointing``. :func:`accepts_timm_names` lets the constructor take
timm's keyword names beside ours. Registering the variants with ``timm.create_model`` is
:mod:`mlp_mixer.weights.timm_registry`'s job.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing
from torch.utils.checkpoint import checkpoint

from .pretrained import Preprocessing
from .variants import seed_names

GLOBAL_POOLS = ("avg", "")  # timm's choices for a Mixer: mean over tokens, or none (the head sees every token)
OUTPUT_FORMATS = ("NCHW", "NLC")  # forward_intermediates: a feature map per block, or its tokens (B, S, C)
# pretrained_cfg keys the model states from itself (its preprocessing, head and stem); any other key timm sets
# (architecture, tag, hf_hub_id, license, ...) is kept as given.
DERIVED_CFG = (
    "input_size",
    "fixed_input_size",
    "interpolation",
    "crop_pct",
    "crop_mode",
    "mean",
    "std",
    "num_classes",
    "pool_size",
    "first_conv",
    "classifier",
    "label_names",
)


def accepts_timm_names(init: Callable[..., None]) -> Callable[..., None]:
    """Let ``__init__`` also take timm's keyword names (``in_chans``, ``img_size``, ``drop_path_rate``, ...).

    ``functools.wraps`` keeps the seed's signature visible (``inspect.signature``), so huggingface_hub's mixin and
    the docs see our names only; a value given under both names is a ValueError.
    """

    @functools.wraps(init)
    def wrapper(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **seed_names(kwargs))

    return wrapper


def preprocessing_from_timm(cfg: dict[str, Any], default: Preprocessing, in_channels: int) -> Preprocessing:
    """timm's ``pretrained_cfg`` as our Preprocessing; keys it lacks keep ``default``'s values.

    A mean/std for another channel count (timm's 3-channel values on a model built with ``in_chans=1``) becomes
    their average per channel (:meth:`~.pretrained.Preprocessing.for_channels`).
    """
    return replace(
        default,
        mean=tuple(cfg.get("mean") or default.mean),
        std=tuple(cfg.get("std") or default.std),
        crop_pct=float(cfg.get("crop_pct") or default.crop_pct),
        interpolation=cfg.get("interpolation") or default.interpolation,
    ).for_channels(in_channels)


def take_indices(depth: int, indices: int | Sequence[int] | None) -> list[int]:
    """timm's block selection: None -> every block, an int n -> the last n, a list -> those (negative from the end).

    Raises:
        ValueError: for an index outside the model, naming its depth.
    """
    if indices is None:
        return list(range(depth))
    if isinstance(indices, int):
        if not 0 < indices <= depth:
            raise ValueError(f"the last {indices} blocks are out of range for a model with depth {depth}")
        return list(range(depth - indices, depth))
    if any(not -depth <= i < depth for i in indices):
        raise ValueError(f"block indices {list(indices)} are out of range for a model with depth {depth}")
    return [i % depth for i in indices]


def traced() -> bool:
    """Whether a tracer or compiler runs the model: it sees no concrete shapes, so input checks step aside."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or is_fx_symbolic_tracing()


class TimmApi:
    """timm's model API for :class:`~.mixer.MLPMixer` (which provides ``dim``, ``blocks``, ``stem``, ``head``,
    ``pre_head_layer_norm``, ``preprocessing``, ``embed`` and the rest)."""

    # TorchScript compiles a module's properties unless listed here; these are Python-side metadata.
    __jit_unused_properties__ = ["num_features", "head_hidden_size", "pretrained_cfg", "default_cfg", "feature_info"]
    _timm_cfg: dict[str, Any] = {}  # pretrained_cfg keys timm set that the model does not derive (never mutated)

    @property
    def num_features(self) -> int:
        """The width of ``forward_features``' tokens (C), as timm names it."""
        return self.dim

    @property
    def head_hidden_size(self) -> int:
        """The width of the pooled features the head sees (C; timm's name)."""
        return self.dim

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        """timm's ``pretrained_cfg``, derived from ``preprocessing``, ``classes`` and the head: what
        ``timm.data.resolve_data_config(model=model)`` reads (input size, mean/std, crop, interpolation)."""
        p = self.preprocessing
        derived = {
            "input_size": (self.in_channels, *p.image_size),
            "fixed_input_size": True,  # the token-mixing MLP is tied to the number of patches
            "interpolation": p.interpolation,
            "crop_pct": p.crop_pct,
            "crop_mode": "center",
            "mean": tuple(p.mean),
            "std": tuple(p.std),
            "num_classes": self.num_classes,
            "pool_size": None,
            "first_conv": "stem",
            "classifier": "head",
        }
        if self.classes:
            derived["label_names"] = tuple(self.classes)
        return {**self._timm_cfg, **derived}

    @pretrained_cfg.setter
    def pretrained_cfg(self, cfg: dict[str, Any]) -> None:
        # timm's build_model_with_cfg assigns the cfg of the weights it loads: their preprocessing becomes ours.
        cfg = dict(cfg)
        self.preprocessing = preprocessing_from_timm(cfg, self.preprocessing, self.in_channels)
        labels = cfg.get("label_names")
        if isinstance(labels, dict):  # timm allows {index: name}
            labels = [labels[k] for k in sorted(labels, key=int)]
        if labels and len(labels) == self.num_classes:
            self.classes = [str(c) for c in labels]
        self._timm_cfg = {k: v for k, v in cfg.items() if k not in DERIVED_CFG and v is not None}

    default_cfg = pretrained_cfg  # timm's older name for the same

    @property
    def feature_info(self) -> list[dict[str, Any]]:
        """One entry per block, as timm's: its module, width and stride in pixels."""
        return [dict(module=f"blocks.{i}", num_chs=self.dim, reduction=self.patch_size) for i in range(self.depth)]

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for timm's layer-wise lr decay: the stem first, then one group per block, the pre-head
        LayerNorm with the last (and the head after them, as timm's optimizer factory puts unmatched names)."""
        return {"stem": r"^stem", "blocks": [(r"^blocks\.(\d+)", None), (r"^pre_head_layer_norm", (99999,))]}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass: less activation memory, ~1/3 more compute."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new zero-initialised head (as the official fine-tuning code starts), on the model's device and dtype.

        Args:
            num_classes: outputs of the new head; 0 removes it (the model then returns pooled features).
            global_pool: ``"avg"`` (mean over tokens) or ``""`` (no pooling: tokens out); None keeps the current.
        """
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be a non-negative integer, got {num_classes!r}")
        if global_pool is not None:
            if global_pool not in GLOBAL_POOLS:
                raise ValueError(f"global_pool must be one of {GLOBAL_POOLS}, got {global_pool!r}")
            self.global_pool = global_pool
        like = self.stem.weight
        self.num_classes, self.classes = num_classes, []  # the old names no longer fit the new head
        head = nn.Linear(self.dim, num_classes, device=like.device, dtype=like.dtype) if num_classes else nn.Identity()
        if num_classes:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        self.head = head.train(self.training)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The features after chosen blocks, as timm's ``forward_intermediates``.

        Args:
            x: images (B, in_channels, H, W).
            indices: None for every block, an int n for the last n, or block indices (negative from the end).
            norm: pass each returned block's tokens through the pre-head LayerNorm.
            stop_early: skip the blocks after the last one asked for; the final tokens are then that block's,
                normalised.
            output_fmt: ``"NCHW"`` gives each block as a (B, C, H/P, W/P) map, ``"NLC"`` as tokens (B, S, C).
            intermediates_only: return only the list of block features.

        Returns:
            ``(normalised final tokens (B, S, C), [block features])``, or the list alone.
        """
        if output_fmt not in OUTPUT_FORMATS:
            raise ValueError(f"output_fmt must be one of {OUTPUT_FORMATS}, got {output_fmt!r}")
        wanted = take_indices(len(self.blocks), indices)
        last = max(wanted) if stop_early else len(self.blocks) - 1
        x = self.embed(x)
        intermediates = []
        for i, block in enumerate(self.blocks[: last + 1]):
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
            if i in wanted:
                intermediates.append(self.pre_head_layer_norm(x) if norm else x)
        if output_fmt == "NCHW":
            h, w = self.grid_size
            intermediates = [y.reshape(y.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous() for y in intermediates]
        return intermediates if intermediates_only else (self.pre_head_layer_norm(x), intermediates)

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the blocks after the last of ``indices`` (and the pre-head norm, the head): a feature backbone.

        Returns:
            The kept indices, counted from the first block.
        """
        wanted = take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: max(wanted) + 1]
        self.depth = len(self.blocks)
        if prune_norm:
            self.pre_head_layer_norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return wanted
