"""mlp-mixer: the MLP-Mixer architecture (arXiv 2105.01601) for PyTorch, and the tools around it."""

from importlib.metadata import PackageNotFoundError, version

from .model import FeedForward, MixerBlock, MLPMixer
from .variants import PAPER_VARIANTS, SEED, VARIANTS, count_parameters, create_model
from .weights import from_pretrained

__all__ = [
    "FeedForward",
    "MixerBlock",
    "MLPMixer",
    "PAPER_VARIANTS",
    "SEED",
    "VARIANTS",
    "count_parameters",
    "create_model",
    "from_pretrained",
]
try:
    __version__ = version("mlp-mixer")  # pyproject.toml is the one place the version is written
except PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"
