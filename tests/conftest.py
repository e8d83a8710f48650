from pathlib import Path

import pytest
import torch

from mlp_mixer import MLPMixer
from mlp_mixer.pretrained import Preprocessing
from mlp_mixer.variants import TINY


@pytest.fixture
def tiny_config() -> dict:
    return dict(TINY)


@pytest.fixture
def tiny_model() -> MLPMixer:
    torch.manual_seed(0)
    return MLPMixer(**TINY)


def save_pretrained(
    model: MLPMixer, directory: Path, classes: list[str] | None = None, preprocessing: Preprocessing | None = None
) -> Path:
    """``model.save_pretrained(directory)`` with class names and preprocessing attached first; returns the folder."""
    if classes is not None:
        model.classes = list(classes)
    if preprocessing is not None:
        model.preprocessing = preprocessing
    model.save_pretrained(directory)
    return Path(directory)
