"""Weights in and out: our checkpoints, the official ``.npz`` and timm's layouts, downloads, resizing.

One module per job, none importing a module that imports it: :mod:`.checkpoint` (our training checkpoint and run
folders), :mod:`.shapes` (sizes read off a state dict), :mod:`.official` and :mod:`.timm_format` (the peers'
layouts, both ways), :mod:`.download` (URLs and the cache folder), :mod:`.load` (:func:`from_pretrained`, alias
``load_model``, the one function that turns what a user passes as ``--checkpoint`` into a model with ``classes``
and ``preprocessing`` attached; and :func:`convert`), :mod:`.resize` (a new input resolution), :mod:`.options`
(the choices the command line offers, importing nothing), :mod:`.timm_registry` (our models in
``timm.create_model``; imported by the package's hook once timm is, never by this ``__init__``).
"""

from ..utils.lazy import lazy_exports

# ``download`` is also its module's name: bound here, so that the import system binding the module on this package
# cannot shadow the function (download.py imports no torch).
from .download import default_cache_dir as default_cache_dir
from .download import download as download

# The other names load their module on first use (PEP 562): the command line's help reads the choices in
# :mod:`.options` without importing torch.
_WHERE = {
    **dict.fromkeys(("RUN_CHECKPOINTS", "load_checkpoint", "resolve_checkpoint", "save_checkpoint"), "checkpoint"),
    **dict.fromkeys(("convert", "from_pretrained", "load_model"), "load"),
    **dict.fromkeys(
        ("load_official_npz", "official_to_state_dict", "save_official_npz", "state_dict_to_official"), "official"
    ),
    "CONVERT_FORMATS": "options",
    "config_from_state_dict": "shapes",
    **dict.fromkeys(("from_timm_state_dict", "save_timm_pretrained", "to_timm_state_dict"), "timm_format"),
}
__all__ = sorted([*_WHERE, "default_cache_dir", "download"])

# Its modules too, as when this file imported them: ``import mlp_mixer.weights`` then ``mlp_mixer.weights.load``
_MODULES = ("options", "checkpoint", "shapes", "official", "timm_format", "load", "resize")

__getattr__, __dir__ = lazy_exports(__name__, _WHERE, _MODULES)
