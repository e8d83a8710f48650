"""timm's layout: its ``mixer_*`` state dicts, the Hub snapshots it writes, and writing ours as such a snapshot.

timm names the stem ``stem.proj``, the MLPs ``mlp_tokens`` / ``mlp_channels`` and the pre-head LayerNorm ``norm``;
everything else matches ours, so the key map is two prefixes and two infixes. Its ``pretrained_cfg`` becomes our
:class:`~mlp_mixer.model.pretrained.Preprocessing`, its ``label_names`` our ``classes``. Sizes are inferred from
the shapes (:mod:`.shapes`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..model.mixer import MLPMixer
from ..model.pretrained import CONFIG_NAME, WEIGHTS_NAME, Preprocessing
from ..model.timm_api import preprocessing_from_timm
from ..model.variants import variant_name
from ..utils.files import write_bytes, write_json
from .shapes import config_from_state_dict

# timm name -> ours; prefixes are matched at the start, infixes anywhere
_TIMM_PREFIX = {"stem.proj.": "stem.", "norm.": "pre_head_layer_norm."}
_TIMM_INFIX = {".mlp_tokens.": ".token_mixing.", ".mlp_channels.": ".channel_mixing."}


def _rename(key: str, prefixes: dict[str, str], infixes: dict[str, str]) -> str:
    for old, new in prefixes.items():
        if key.startswith(old):
            key = new + key[len(old) :]
    for old, new in infixes.items():
        key = key.replace(old, new)
    return key


def is_timm_state_dict(state: Mapping[str, Any]) -> bool:
    """Whether a loaded ``.pth``/``.bin`` is timm's (``from_pretrained`` then converts it) rather than our dict."""
    return "stem.proj.weight" in state


def to_timm_state_dict(model: MLPMixer) -> dict[str, torch.Tensor]:
    """Our weights in timm's ``MlpMixer`` names (``stem.proj``, ``mlp_tokens``, ``mlp_channels``, ``norm``)."""
    prefixes = {new: old for old, new in _TIMM_PREFIX.items()}
    infixes = {new: old for old, new in _TIMM_INFIX.items()}
    return {_rename(k, prefixes, infixes): v.detach().clone() for k, v in model.state_dict().items()}


def from_timm_state_dict(
    state: Mapping[str, torch.Tensor],
    image_size: int | tuple[int, int] | None = None,
    gelu: str = "exact",
    source: str | Path = "timm state dict",
) -> MLPMixer:
    """A Mixer from a timm ``mixer_*`` state dict, sizes inferred from the shapes.

    Args:
        state: timm's ``MlpMixer.state_dict()``.
        image_size: the input size when the patch grid is not square (inferred otherwise).
        gelu: timm computes exact GELU; weights that timm converted from the official JAX ones
            (``goog_*`` tags) were trained with ``"tanh"``.
        source: named in errors.
    """
    if not is_timm_state_dict(state):
        raise ValueError(f"{source} is not a timm MlpMixer state dict (no 'stem.proj.weight')")
    ours = timm_state_to_ours(state)
    return MLPMixer.from_state({"model_config": config_from_state_dict(ours, image_size, gelu, source)}, ours, source)


def gelu_of_tag(tag: str | None) -> str:
    """The GELU that weights of a timm tag were trained with: ``goog_*`` are the official JAX weights (tanh)."""
    return "tanh" if str(tag or "").startswith("goog") else "exact"


def timm_state_to_ours(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's ``MlpMixer`` names -> ours; a state dict already in our names passes through."""
    if not is_timm_state_dict(state):
        return dict(state)
    return {_rename(k, _TIMM_PREFIX, _TIMM_INFIX): v for k, v in state.items()}


def _timm_preprocessing(
    pretrained_cfg: dict[str, Any], image_size: tuple[int, int] | None = None, in_channels: int = 3
) -> Preprocessing:
    """timm's ``pretrained_cfg`` as our Preprocessing; what it lacks is timm's Mixer ``_cfg`` default."""
    size = image_size or tuple(pretrained_cfg.get("input_size", (3, 224, 224))[1:])
    timm_default = Preprocessing(tuple(size), (0.5,) * 3, (0.5,) * 3, 0.875, "bicubic")
    return preprocessing_from_timm(pretrained_cfg, timm_default, in_channels)


def model_from_timm_file(
    state: dict[str, torch.Tensor], image_size: int | tuple[int, int] | None, source: Path
) -> MLPMixer:
    """The model of a bare timm state dict file (``source``): exact GELU and timm's default Mixer preprocessing."""
    model = from_timm_state_dict(state, image_size, source=source)
    model.preprocessing = _timm_preprocessing({}, model.image_size, model.in_channels)
    return model


def model_from_timm_directory(
    directory: Path, config: dict[str, Any], state: dict[str, torch.Tensor], image_size: int | tuple[int, int] | None
) -> MLPMixer:
    """A timm Hub snapshot: ``config.json`` (architecture, pretrained_cfg, label_names) + ``model.safetensors``."""
    pretrained_cfg = config.get("pretrained_cfg", config)
    if image_size is None:  # timm stores (channels, height, width); model_args may override it
        size = config.get("model_args", {}).get("img_size") or list(pretrained_cfg.get("input_size", []))[1:] or None
        image_size = tuple(size) if isinstance(size, list | tuple) else size
    model = from_timm_state_dict(state, image_size, gelu_of_tag(pretrained_cfg.get("tag")), directory / WEIGHTS_NAME)
    labels = config.get("label_names") or pretrained_cfg.get("label_names") or []
    if isinstance(labels, dict):  # timm allows {index: name}
        labels = [labels[k] for k in sorted(labels, key=int)]
    model.classes, model.source = list(labels), str(directory)
    model.preprocessing = _timm_preprocessing(pretrained_cfg, model.image_size, model.in_channels)
    return model


def save_timm_pretrained(model: MLPMixer, directory: str | Path) -> Path:
    """Write a timm Hub layout directory: ``timm.create_model("local-dir:<directory>", pretrained=True)`` loads it.

    The model's ``classes`` become timm's ``label_names`` and its ``preprocessing`` timm's ``pretrained_cfg``.
    timm computes exact GELU; a model trained with tanh GELU differs there by ~1e-4 in the logits.
    """
    from safetensors.torch import save

    variant = variant_name(model.config())
    if variant is None or variant.startswith("H"):
        raise ValueError(
            f"timm has no mixer_* architecture with depth {model.depth}, patch {model.patch_size}, dim {model.dim}, "
            f"token_dim {model.token_dim}, channel_dim {model.channel_dim}; use to_timm_state_dict() with "
            "timm.models.mlp_mixer.MlpMixer(...) instead"
        )
    preprocessing = model.preprocessing
    config = {
        "architecture": f"mixer_{variant.replace('/', '').lower()}_224",
        "num_classes": model.num_classes,
        "num_features": model.dim,
        "global_pool": "avg",
        "model_args": {"img_size": list(model.image_size), "in_chans": model.in_channels},
        "pretrained_cfg": {
            "input_size": [model.in_channels, *model.image_size],
            "fixed_input_size": True,
            "interpolation": preprocessing.interpolation,
            "crop_pct": preprocessing.crop_pct,
            "crop_mode": "center",
            "mean": list(preprocessing.mean),
            "std": list(preprocessing.std),
            "num_classes": model.num_classes,
            "first_conv": "stem.proj",
            "classifier": "head",
        },
    }
    if model.classes:
        config["label_names"] = list(model.classes)
    directory = Path(directory)
    state = {k: v.cpu().contiguous() for k, v in to_timm_state_dict(model).items()}
    write_bytes(directory / WEIGHTS_NAME, save(state, metadata={"format": "pt"}))
    write_json(directory / CONFIG_NAME, config)
    return directory
