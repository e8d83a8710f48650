"""Our Mixer in timm's registry: ``timm.create_model("mlp_mixer_b16_224", pretrained=..., num_classes=...,
in_chans=..., features_only=True)`` builds an :class:`~mlp_mixer.model.mixer.MLPMixer`, and
``timm.create_model("local-dir:DIR", pretrained=True)`` (or ``"hf-hub:you/repo"``) loads what ``save_pretrained``
wrote, whose ``config.json`` names the architecture ``mlp_mixer`` and carries ``model_args`` and ``pretrained_cfg``.

timm is optional (the ``dev`` extra), never a runtime dependency: :func:`register` runs once timm is imported in a
process that has imported ``mlp_mixer`` (the package installs an import hook for that), or when this module is
imported. timm has no plugin entry points, so a process that never imports ``mlp_mixer`` has no ``mlp_mixer``
models in timm.

Every model goes through timm's ``build_model_with_cfg``, as timm's own Mixers do: its ``load_pretrained`` reads the
weights (any ``source``: Hub, URL, file, local dir), :func:`weights_filter` turns timm's ``MlpMixer`` names into
ours, timm adapts the stem to ``in_chans`` and drops a head of another size, and ``features_only=True`` wraps the
model in timm's ``FeatureGetterNet`` over :meth:`~mlp_mixer.model.timm_api.TimmApi.forward_intermediates`.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, is_model, register_model, resolve_pretrained_cfg

from ..model.mixer import MLPMixer
from ..model.pretrained import ARCHITECTURE, OFFICIAL_MEAN_STD
from ..model.variants import PAPER_VARIANTS, SEED, VARIANTS, seed_names
from .timm_format import gelu_of_tag, timm_state_to_ours

# Our names for timm's: what timm fills in from pretrained_cfg (in_chans, img_size) must arrive in its spelling,
# or a user's in_channels=1 would meet timm's in_chans=3.
_TO_TIMM = {"in_channels": "in_chans", "image_size": "img_size"}
_HALF = (OFFICIAL_MEAN_STD,) * 3


def _cfg(**kwargs: Any) -> dict[str, Any]:
    """A pretrained_cfg with our defaults: the official preprocessing (pixels to [-1, 1], bilinear, crop 0.875)."""
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "fixed_input_size": True,
        "mean": _HALF,
        "std": _HALF,
        "first_conv": "stem",
        "classifier": "head",
        "license": "apache-2.0",
        "paper_ids": "arXiv:2105.01601",
        **kwargs,
    }


def _timm_hub(repo: str, **kwargs: Any) -> dict[str, Any]:
    """Weights timm hosts on the Hub (its names, converted on load), with timm's preprocessing for them."""
    return _cfg(**{"hf_hub_id": f"timm/{repo}", "interpolation": "bicubic", **kwargs})


def _variant_name(variant: str) -> str:
    return "mlp_mixer_" + variant.replace("/", "").lower() + "_224"  # "B/16" -> "mlp_mixer_b16_224"


# timm's goog_in21k_ft_in1k files are the official models trained on ImageNet-1k alone (vit_jax's
# gs://mixer_models/imagenet1k/), which reach 76.6% (B/16) and 72.1% (L/16) in timm's evaluation; a Mixer author
# says so in timm PR #651 (the ImageNet-21k-pretrained, ImageNet-1k-fine-tuned ones were not published then). So
# here they are tagged goog_in1k; goog_in21k are the official ImageNet-21k models (21,843 classes), miil_* those
# that Alibaba-MIIL trained in PyTorch (exact GELU, mean 0, std 1).
default_cfgs = generate_default_cfgs(
    {
        ARCHITECTURE: _cfg(),
        **{f"{_variant_name(v)}.untrained": _cfg() for v in PAPER_VARIANTS},
        "mlp_mixer_b16_224.goog_in1k": _timm_hub("mixer_b16_224.goog_in21k_ft_in1k"),
        "mlp_mixer_b16_224.goog_in21k": _timm_hub("mixer_b16_224.goog_in21k", num_classes=21843),
        "mlp_mixer_l16_224.goog_in1k": _timm_hub("mixer_l16_224.goog_in21k_ft_in1k"),
        "mlp_mixer_l16_224.goog_in21k": _timm_hub("mixer_l16_224.goog_in21k", num_classes=21843),
        "mlp_mixer_b16_224.miil_in21k_ft_in1k": _timm_hub(
            "mixer_b16_224.miil_in21k_ft_in1k", mean=(0.0,) * 3, std=(1.0,) * 3, interpolation="bilinear"
        ),
        "mlp_mixer_b16_224.miil_in21k": _timm_hub(
            "mixer_b16_224.miil_in21k", mean=(0.0,) * 3, std=(1.0,) * 3, interpolation="bilinear", num_classes=11221
        ),
    }
)


def weights_filter(state: dict[str, torch.Tensor], model: MLPMixer) -> dict[str, torch.Tensor]:
    """timm's ``pretrained_filter_fn``: a state dict in timm's ``MlpMixer`` names becomes ours."""
    return timm_state_to_ours(state)


def _build(variant: str, pretrained: bool, sizes: dict[str, Any], kwargs: dict[str, Any]) -> MLPMixer:
    """``build_model_with_cfg`` for one of our entry points, ``sizes`` the variant's (our names)."""
    kwargs = seed_names(kwargs)  # one spelling (ours) for what the user passed; both at once is a ValueError
    for ours, timm_name in _TO_TIMM.items():  # except what timm fills in from pretrained_cfg: in its spelling
        if ours in kwargs:
            kwargs[timm_name] = kwargs.pop(ours)
    arguments = {k: sizes[k] for k in ("depth", "patch_size", "dim", "token_dim", "channel_dim")} | kwargs
    ratio = arguments.pop("mlp_ratio", None)  # timm's MlpMixer sizes its MLPs as fractions of the width
    if ratio is not None:
        token_ratio, channel_ratio = (ratio, ratio) if isinstance(ratio, int | float) else ratio
        arguments.update(
            token_dim=int(token_ratio * arguments["dim"]), channel_dim=int(channel_ratio * arguments["dim"])
        )
    cfg = resolve_pretrained_cfg(variant, arguments.pop("pretrained_cfg", None), kwargs.get("pretrained_cfg_overlay"))
    if cfg.hf_hub_id and cfg.hf_hub_id.startswith("timm/"):
        arguments.setdefault("gelu", gelu_of_tag(cfg.tag))  # the GELU those weights were trained with
    return build_model_with_cfg(
        MLPMixer,
        variant,
        pretrained,
        pretrained_cfg=cfg,
        pretrained_filter_fn=weights_filter,
        feature_cfg=dict(out_indices=3, feature_cls="getter"),  # as timm's Mixers: the last 3 blocks
        **arguments,
    )


def _entry_point(name: str, defaults: dict[str, Any]):
    def create(pretrained: bool = False, **kwargs: Any) -> MLPMixer:
        return _build(name, pretrained, defaults, kwargs)

    create.__name__ = create.__qualname__ = name
    create.__module__ = __name__  # timm's register_model finds default_cfgs in this module by the name
    create.__doc__ = f"{name}: mlp-mixer's MLPMixer, built through timm's build_model_with_cfg."
    return create


def register() -> list[str]:
    """Register ``mlp_mixer`` (any size, the seed's by default) and ``mlp_mixer_{s32,...,h14}_224`` with timm.

    Idempotent. Returns the model names now in timm's registry.
    """
    entry_points = {ARCHITECTURE: SEED, **{_variant_name(v): VARIANTS[v] for v in PAPER_VARIANTS}}
    for name, defaults in entry_points.items():
        if not is_model(name):
            fn = _entry_point(name, defaults)
            setattr(sys.modules[__name__], name, fn)
            register_model(fn)
    return list(entry_points)


register()
