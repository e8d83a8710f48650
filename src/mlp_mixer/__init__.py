"""mlp-mixer: the MLP-Mixer architecture (arXiv 2105.01601) for PyTorch, and the tools around it."""

from .model import FeedForward, MixerBlock, MLPMixer
from .variants import PAPER_VARIANTS, SEED, VARIANTS, count_parameters, create_model

__all__ = [
    "FeedForward",
    "MixerBlock",
    "MLPMixer",
    "PAPER_VARIANTS",
    "SEED",
    "VARIANTS",
    "count_parameters",
    "create_model",
]
__version__ = "0.1.0"
