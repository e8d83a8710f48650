"""Training checkpoints: read with weights_only=True, and a damaged, missing, mismatched or pickled file named."""

import pytest
import torch

from mlp_mixer.utils.files import atomic_save
from mlp_mixer.weights.load import load_model


class NotAWeight:
    """An arbitrary object: ``torch.load(weights_only=True)`` must refuse to unpickle it."""


def test_training_checkpoint_errors_and_weights_only(tiny_model, tmp_path):
    checkpoint = {"model": tiny_model.state_dict(), "model_config": tiny_model.config(), "classes": ["a"] * 10}
    path = atomic_save(checkpoint, tmp_path / "ckpt.pt")
    assert load_model(path).classes == ["a"] * 10
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="ckpt.pt cannot be read"):
        load_model(path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_model(tmp_path / "missing.pt")
    atomic_save({**checkpoint, "model_config": {**tiny_model.config(), "depth": 3}}, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match="mismatch.pt do not match"):
        load_model(tmp_path / "mismatch.pt")
    torch.save({**checkpoint, "extra": NotAWeight()}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="pickled.pt cannot be read"):
        load_model(tmp_path / "pickled.pt")
