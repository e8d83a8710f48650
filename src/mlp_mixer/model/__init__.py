"""The paper's model (:mod:`.mixer`), its size table (:mod:`.variants`), what travels with weights
(:mod:`.pretrained`), faster kernels for its MLPs behind one switch (:mod:`.fast_paths`) and the seed's code as a
baseline (:mod:`.seed`).

``from mlp_mixer.model import MLPMixer, VARIANTS`` works as before; each name loads its module on first use
(PEP 562), so that reading the size table (the command line's help) does not import torch.
"""

from ..utils.lazy import lazy_exports

_WHERE = {
    **dict.fromkeys(
        ("FeedForward", "MixerBlock", "MLPMixer", "TokenLinear", "count_parameters", "create_model"), "mixer"
    ),
    "Preprocessing": "pretrained",
    **dict.fromkeys(("PAPER_VARIANTS", "SEED", "VARIANTS", "variant_config"), "variants"),
}
__all__ = sorted(_WHERE)

# Its modules too, as when this file imported them: ``import mlp_mixer.model`` then ``mlp_mixer.model.mixer``
_MODULES = ("variants", "pretrained", "timm_api", "fast_paths", "mixer", "seed")

__getattr__, __dir__ = lazy_exports(__name__, _WHERE, _MODULES)
