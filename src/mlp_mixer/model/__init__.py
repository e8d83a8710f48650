"""The paper's model (:mod:`.mixer`), its size table (:mod:`.variants`), what travels with weights
(:mod:`.pretrained`), faster kernels for its MLPs behind one switch (:mod:`.fast_paths`) and the seed's code as a
baseline (:mod:`.seed`).

``from mlp_mixer.model import MLPMixer, VARIANTS`` works as before; each name loads its module on first use
(PEP 562), so that reading the size table (the command line's help) does not import torch.
"""

import importlib
from typing import Any

_WHERE = {
    **dict.fromkeys(
        ("FeedForward", "MixerBlock", "MLPMixer", "TokenLinear", "count_parameters", "create_model"), "mixer"
    ),
    "Preprocessing": "pretrained",
    **dict.fromkeys(("PAPER_VARIANTS", "SEED", "VARIANTS", "variant_config"), "variants"),
}
__all__ = sorted(_WHERE)

# Its modules too, as when this file imported them: ``import mlp_mixer.model`` then ``mlp_mixer.model.mixer``
_MODULES = ("variants", "pretrained", "fast_paths", "mixer", "seed")


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
