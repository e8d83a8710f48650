"""Our own checkpoints: the training checkpoint dict, run folders, and the one ``torch.load`` that reads them.

A training checkpoint is one ``.pt`` file holding a plain dict (torchvision's references style)::

    {"model": state_dict, "model_config": MLPMixer.config(), "classes": [...], "preprocessing": {...},
     "optimizer": ..., "scheduler": ..., "epoch": ..., "batch": ..., "step": ..., "rng": ...,
     "config": run config, "history": [per-epoch metrics], "best": {...}}

(``model`` holds the EMA weights when EMA is on, the raw ones then in ``train_model``; ``batch`` counts the steps
already done in an interrupted epoch, so resuming continues mid-epoch), written atomically (temporary file, fsync,
rename) and read with ``torch.load(weights_only=True)``. A run folder holds ``best.pt`` and ``last.pt``.

Our other form, the ``save_pretrained`` directory (``config.json`` + ``model.safetensors``, the Hugging Face
layout), is the model's own (:mod:`mlp_mixer.model.pretrained`); :func:`mlp_mixer.weights.load.from_pretrained`
reads both and every foreign layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..model.mixer import MLPMixer
from ..model.pretrained import CONFIG_NAME, WEIGHTS_NAME
from ..utils.files import atomic_save
from ..utils.limits import check_tensors, check_torch_file

# What a run folder holds, in the order a reader of weights prefers them (training resumes from last.pt instead).
RUN_CHECKPOINTS = ("best.pt", "last.pt")


def resolve_checkpoint(path: str | Path, names: tuple[str, ...] = RUN_CHECKPOINTS) -> Path:
    """A run folder -> its first checkpoint among ``names``; anything else (a file, a ``save_pretrained`` folder)
    is returned as it is."""
    path = Path(path)
    if not path.is_dir() or (path / CONFIG_NAME).exists() or (path / WEIGHTS_NAME).exists():
        return path
    for name in names:
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(
        f"{path} is a folder with neither {' nor '.join(names)} (a run folder) nor {CONFIG_NAME} and "
        f"{WEIGHTS_NAME} (a save_pretrained folder)"
    )


def read_torch_file(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True`` (never unpickle code), within the weights budget checked before
    (:func:`~mlp_mixer.utils.limits.check_torch_file`) and after (tensors' logical sizes); a missing or damaged file
    names itself."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    check_torch_file(path)
    try:
        loaded = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        if "Weights only load failed" in str(err):  # torch's advice here is the unsafe way: never repeat it
            reason = "it holds Python objects besides tensors, which are never unpickled (that could run code)"
        elif "zip archive" in str(err) or isinstance(err, EOFError):
            reason = "truncated or damaged" if path.stat().st_size else "empty file"
        else:
            reason = "not a PyTorch checkpoint"
        raise ValueError(f"checkpoint {path} cannot be read: {reason}") from err
    return check_tensors(loaded, f"checkpoint {path}")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training checkpoint (a ``.pt`` or a run folder) with ``weights_only=True``."""
    path = resolve_checkpoint(path)
    return check_checkpoint(read_torch_file(path, map_location), path)


def check_checkpoint(checkpoint: Any, path: Path) -> dict[str, Any]:
    """``checkpoint`` as read from ``path`` if it is our dict (``model`` and ``model_config``), else a ValueError."""
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "model_config" not in checkpoint:
        raise ValueError(f"checkpoint {path} is not an mlp-mixer checkpoint (no 'model' and 'model_config')")
    return checkpoint


def save_checkpoint(model: MLPMixer, path: str | Path, **extra: Any) -> Path:
    """A weights-only training-checkpoint ``.pt`` (model, config, classes, preprocessing), written atomically."""
    checkpoint = {
        "model": model.state_dict(),
        "model_config": model.config(),
        "classes": list(model.classes),
        "preprocessing": model.preprocessing.to_dict(),
        **extra,
    }
    return atomic_save(checkpoint, path)
