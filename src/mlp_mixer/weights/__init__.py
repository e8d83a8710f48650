"""Weights in and out: our checkpoints, the official ``.npz`` and timm's layouts, downloads, resizing.

One module per job, none importing a module that imports it: :mod:`.checkpoint` (our training checkpoint and run
folders), :mod:`.shapes` (sizes read off a state dict), :mod:`.official` and :mod:`.timm_format` (the peers'
layouts, both ways), :mod:`.download` (URLs and the cache folder), :mod:`.load` (:func:`from_pretrained`, alias
``load_model``, the one function that turns what a user passes as ``--checkpoint`` into a model with ``classes``
and ``preprocessing`` attached; and :func:`convert`), :mod:`.resize` (a new input resolution).
"""

from .checkpoint import RUN_CHECKPOINTS, load_checkpoint, resolve_checkpoint, save_checkpoint
from .download import default_cache_dir, download
from .load import CONVERT_FORMATS, convert, from_pretrained, load_model
from .official import load_official_npz, official_to_state_dict, save_official_npz, state_dict_to_official
from .shapes import config_from_state_dict
from .timm_format import from_timm_state_dict, save_timm_pretrained, to_timm_state_dict

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
