"""The fixtures every part of the suite shares, defined once: the tiny model (``mlp_mixer.model.variants.TINY``,
the one tiny size), a trained-looking copy of it with non-zero weights, and that copy saved as a checkpoint."""

from pathlib import Path

import pytest
import torch
from helpers import CLASSES, PREPROCESSING, make_folder, save_pretrained

from mlp_mixer import MLPMixer
from mlp_mixer.model.variants import TINY


@pytest.fixture(autouse=True)
def _restore_threads():
    """train(threads=...) sets PyTorch's thread count for the process; give other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    """A small ImageFolder: train/ and val/ with three classes of 20x18 images."""
    root = tmp_path_factory.mktemp("pets")
    make_folder(root / "train", n=8, size=(20, 18))
    make_folder(root / "val", n=2, size=(20, 18))
    return str(root)


@pytest.fixture
def tiny_config() -> dict:
    """The TINY size as constructor arguments (a fresh dict: a test may change it)."""
    return dict(TINY)


@pytest.fixture
def tiny_model() -> MLPMixer:
    """``MLPMixer(**TINY)`` as constructed: the official initialisation (a zero head)."""
    torch.manual_seed(0)
    return MLPMixer(**TINY)


def _perturbed_model() -> MLPMixer:
    torch.manual_seed(0)
    model = MLPMixer(**TINY).eval()
    with torch.no_grad():  # non-zero everything, so a dropped bias, a wrong axis or a zero head shows in the logits
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.classes, model.preprocessing = list(CLASSES), PREPROCESSING
    return model


@pytest.fixture
def model() -> MLPMixer:
    """The TINY model in eval mode with every weight non-zero, carrying ``helpers.CLASSES`` and ``PREPROCESSING``."""
    return _perturbed_model()


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """:func:`model` saved once with ``save_pretrained`` (read-only: a test that changes files copies it first)."""
    return save_pretrained(_perturbed_model(), tmp_path_factory.mktemp("pretrained"), CLASSES, PREPROCESSING)
