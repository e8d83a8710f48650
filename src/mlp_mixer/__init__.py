"""mlp-mixer: the MLP-Mixer architecture (arXiv 2105.01601) for PyTorch, and the tools around it.

The library is the modules of this package (see docs/architecture.md); the ``mlp-mixer`` command lives apart, in
:mod:`mlp_mixer.commands`, and nothing in the library imports it.
"""

from importlib.metadata import PackageNotFoundError, version

from .model import FeedForward, MixerBlock, MLPMixer, count_parameters, create_model
from .pretrained import Preprocessing
from .variants import PAPER_VARIANTS, SEED, VARIANTS
from .weights import from_pretrained

__all__ = [
    "FeedForward",
    "MixerBlock",
    "MLPMixer",
    "PAPER_VARIANTS",
    "Preprocessing",
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
