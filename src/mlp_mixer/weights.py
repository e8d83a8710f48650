"""Saving and loading weights: training checkpoints, the Hugging Face layout, and (later) converters.

Two on-disk forms, both loadable by :func:`load_model`:

- a training checkpoint: one ``.pt`` file holding a plain dict (torchvision's references style)::

      {"model": state_dict, "model_config": MLPMixer.config(), "classes": [...], "preprocessing": {...},
       "optimizer": ..., "scheduler": ..., "epoch": ..., "step": ..., "rng": ..., "config": run config}

  written atomically (temporary file, fsync, rename) and read with ``torch.load(weights_only=True)``;
- a ``save_pretrained`` directory: ``config.json`` (architecture, classes, preprocessing) and
  ``model.safetensors``, the Hugging Face layout, so ``huggingface_hub`` can push and pull it.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .model import MLPMixer

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class Preprocessing:
    """How images become model input; stored with every set of weights so prediction never guesses.

    The official checkpoints scale pixels to [-1, 1], i.e. mean = std = 0.5 per channel.
    """

    image_size: tuple[int, int] = (224, 224)
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    crop_pct: float = 0.875  # resize the shorter side to image_size / crop_pct, then center-crop
    interpolation: str = "bilinear"

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        known = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class LoadedModel:
    """A model with what is needed to use it: class names and preprocessing."""

    model: MLPMixer
    classes: list[str] = field(default_factory=list)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    source: str = ""


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same directory, fsync, then rename over ``path``.

    A process killed mid-write leaves the previous file intact: the rename is the only visible step.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training checkpoint with ``weights_only=True``; a missing or damaged file names itself."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise ValueError(f"checkpoint {path} cannot be read (truncated or not a checkpoint): {err}") from err
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "model_config" not in checkpoint:
        raise ValueError(f"checkpoint {path} is not an mlp-mixer checkpoint (no 'model' and 'model_config')")
    return checkpoint


def model_from_config(config: dict[str, Any]) -> MLPMixer:
    config = dict(config)
    if isinstance(config.get("image_size"), list):
        config["image_size"] = tuple(config["image_size"])
    return MLPMixer(**config)


def _load_state(model: MLPMixer, state: dict[str, torch.Tensor], source: str | Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"weights in {source} do not match the model config stored with them: {err}") from err


def save_pretrained(
    model: MLPMixer,
    directory: str | Path,
    classes: list[str] | None = None,
    preprocessing: Preprocessing | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (the Hugging Face layout) to ``directory``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    preprocessing = preprocessing or Preprocessing(image_size=model.image_size)
    config = {
        "architecture": "mlp_mixer",
        "model_config": model.config(),
        "classes": list(classes or []),
        "preprocessing": preprocessing.to_dict(),
        **(extra or {}),
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return directory


def from_pretrained(directory: str | Path) -> LoadedModel:
    """Load a ``save_pretrained`` directory; errors name the missing or damaged file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist (a pretrained directory holds {CONFIG_NAME} and {WEIGHTS_NAME})"
            )
    try:
        config = json.loads(config_path.read_text())
        model_config = config["model_config"]
    except (json.JSONDecodeError, KeyError) as err:
        raise ValueError(f"{config_path} is not a valid mlp-mixer config: {err}") from err
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{weights_path} cannot be read (truncated or not safetensors): {err}") from err
    model = model_from_config(model_config)
    _load_state(model, state, weights_path)
    return LoadedModel(
        model.eval(),
        list(config.get("classes", [])),
        Preprocessing.from_dict(config.get("preprocessing", {})),
        str(directory),
    )


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedModel:
    """Load a training checkpoint file or a ``save_pretrained`` directory, in eval mode."""
    path = Path(path)
    if path.is_dir():
        return from_pretrained(path)
    checkpoint = load_checkpoint(path, map_location)
    model = model_from_config(checkpoint["model_config"])
    _load_state(model, checkpoint["model"], path)
    return LoadedModel(
        model.eval(),
        list(checkpoint.get("classes", [])),
        Preprocessing.from_dict(checkpoint.get("preprocessing", {})),
        str(path),
    )
