"""Weights in and out: our checkpoints and the Hugging Face layout, the official ``.npz``, timm's, resizing.

:func:`from_pretrained` (alias ``load_model``) is the one function that turns what a user passes as
``--checkpoint`` into a model with ``classes`` and ``preprocessing`` attached.
"""

from .checkpoint import (
    CONVERT_FORMATS,
    RUN_CHECKPOINTS,
    config_from_state_dict,
    convert,
    default_cache_dir,
    download,
    from_pretrained,
    from_timm_state_dict,
    load_checkpoint,
    load_model,
    load_official_npz,
    official_to_state_dict,
    resolve_checkpoint,
    save_checkpoint,
    save_official_npz,
    save_timm_pretrained,
    state_dict_to_official,
    to_timm_state_dict,
)

__all__ = [
    "CONVERT_FORMATS",
    "RUN_CHECKPOINTS",
    "config_from_state_dict",
    "convert",
    "default_cache_dir",
    "download",
    "from_pretrained",
    "from_timm_state_dict",
    "load_checkpoint",
    "load_model",
    "load_official_npz",
    "official_to_state_dict",
    "resolve_checkpoint",
    "save_checkpoint",
    "save_official_npz",
    "save_timm_pretrained",
    "state_dict_to_official",
    "to_timm_state_dict",
]
