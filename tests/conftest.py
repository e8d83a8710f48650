import pytest
import torch

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
    from helpers import make_folder

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
