"""The paper's model (:mod:`.mixer`), its size table (:mod:`.variants`), what travels with weights
(:mod:`.pretrained`), faster kernels for its MLPs behind one switch (:mod:`.fast_paths`) and the seed's code as a
baseline (:mod:`.seed`)."""

from .mixer import FeedForward, MixerBlock, MLPMixer, TokenLinear, count_parameters, create_model
from .pretrained import Preprocessing
from .variants import PAPER_VARIANTS, SEED, VARIANTS, variant_config

__all__ = [
    "FeedForward",
    "MixerBlock",
    "MLPMixer",
    "PAPER_VARIANTS",
    "Preprocessing",
    "SEED",
    "TokenLinear",
    "VARIANTS",
    "count_parameters",
    "create_model",
    "variant_config",
]
