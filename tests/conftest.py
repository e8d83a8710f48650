from pathlib import Path

import pytest
import torch

from mlp_mixer import MLPMixer
from mlp_mixer.model.pretrained import Preprocessing
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
    from test_data import make_folder

    root = tmp_path_factory.mktemp("pets")
    make_folder(root / "train", n=8, size=(20, 18))
    make_folder(root / "val", n=2, size=(20, 18))
    return str(root)


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
