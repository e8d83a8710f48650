"""The one loader: :func:`from_pretrained` turns whatever a user names as ``--checkpoint`` into a model.

It picks the reader by what the source is (a URL, a Hub id, a run folder, a ``save_pretrained`` or timm folder, a
``.npz``, ``.safetensors`` or ``.pt``/``.pth``/``.bin`` file) and returns the model itself, in eval mode, with its
``classes`` and ``preprocessing`` attached; every command that reads ``--checkpoint`` calls it. :func:`convert`
(``mlp-mixer convert``) is that loader followed by one of the writers: ours, timm's or the official layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..model.mixer import MLPMixer
from ..model.pretrained import (
    CONFIG_NAME,
    hub_download,
    hub_id,
    is_ours,
    read_config,
    read_safetensors,
    read_weights,
    weights_file,
)
from ..utils.sources import check_source
from .checkpoint import check_checkpoint, read_torch_file, resolve_checkpoint
from .download import download
from .official import load_official_npz, save_official_npz
from .options import CONVERT_FORMATS
from .timm_format import is_timm_state_dict, model_from_timm_directory, model_from_timm_file, save_timm_pretrained


def from_pretrained(
    source: str | Path,
    *,
    image_size: int | tuple[int, int] | None = None,
    cache_dir: str | Path | None = None,
    map_location: str | torch.device = "cpu",
    **overrides: Any,
) -> MLPMixer:
    """The model of any checkpoint a user can name, in eval mode, with ``classes`` and ``preprocessing`` attached.

    Every command that takes ``--checkpoint`` calls this, so the same text means the same model everywhere.
    Constructor arguments (ours or timm's names) override the stored ones, as for ``timm.create_model(...,
    pretrained=True)``: ``num_classes=5`` gives a new zero head, ``in_chans=1`` an adapted stem, ``drop_path=0.1``
    stochastic depth for fine-tuning.

    Args:
        source: a run folder (its ``best.pt``, else ``last.pt``), a training checkpoint ``.pt``, a
            ``save_pretrained`` folder (``config.json`` + ``model.safetensors``, ours or a timm Hub snapshot), an
            official ``.npz`` file, a timm state dict (``.safetensors``, ``.pth``, ``.bin``), a Hugging Face Hub
            id (``timm/mixer_b16_224.goog_in21k_ft_in1k``, also with an ``hf-hub:`` prefix), or the URL of an
            official ``.npz`` (``https://storage.googleapis.com/...`` or ``gs://...``).
        image_size: the input size the weights were trained at, needed only when their patch grid is not
            square (it is inferred from the token-mixing shapes otherwise).
        cache_dir: where downloads are kept; default :func:`~.download.default_cache_dir` for URLs
            (``$MLP_MIXER_CACHE`` or ``~/.cache/mlp_mixer``) and the Hugging Face cache for Hub ids.
        map_location: the device the weights are loaded onto.
        overrides: constructor arguments, e.g. ``num_classes=5, in_chans=1`` (see :meth:`MLPMixer.from_state`).
    """
    text = str(source)
    if text.startswith(("http://", "https://", "gs://")):
        path = download(text, cache_dir)
        return from_pretrained(path, image_size=image_size, map_location=map_location, **overrides)
    path = Path(source)
    if not path.exists():
        check_source(text)  # a missing local path: named, at once, offline
        path = hub_download(hub_id(text), cache_dir)
    path = resolve_checkpoint(path)
    if path.is_dir():
        model = _load_directory(path, image_size)
    elif path.suffix == ".npz":
        model = load_official_npz(path, image_size)
    elif path.suffix == ".safetensors":  # a bare state dict: timm's (ours travel with their config.json)
        model = model_from_timm_file(read_safetensors(path), image_size, path)
    else:
        model = _load_torch_file(path, image_size)
    if overrides:  # the same weights in the architecture asked for: one rebuild on the meta device
        loaded_from = model.source
        model = MLPMixer.from_state(model.pretrained_config(), model.state_dict(), path, **overrides)
        model.source = loaded_from
    return model.to(map_location)


load_model = from_pretrained  # the name the commands and docs/train.md use


def _load_directory(directory: Path, image_size: int | tuple[int, int] | None) -> MLPMixer:
    """Our ``save_pretrained`` folder, or a timm Hub snapshot (the same file names, timm's config)."""
    config = read_config(directory)
    weights = weights_file(directory)
    state = read_weights(weights)
    if not is_ours(config):  # a timm Hub repo (config.json + model.safetensors), converted
        return model_from_timm_directory(directory, config, state, image_size)
    model = MLPMixer.from_state(config, state, weights, config_source=directory / CONFIG_NAME)
    model.source = str(directory)
    return model


def _load_torch_file(path: Path, image_size: int | tuple[int, int] | None) -> MLPMixer:
    """A training checkpoint, or a bare timm state dict saved with ``torch.save``."""
    checkpoint = read_torch_file(path)
    if isinstance(checkpoint, dict) and is_timm_state_dict(checkpoint):
        return model_from_timm_file(checkpoint, image_size, path)
    check_checkpoint(checkpoint, path)
    return MLPMixer.from_state(checkpoint, checkpoint["model"], path)


# --------------------------------------------------------------------------- mlp-mixer convert


def convert(
    source: str | Path, output: str | Path, to: str = "mlp-mixer", image_size: int | tuple[int, int] | None = None
) -> MLPMixer:
    """Convert weights between layouts: any :func:`from_pretrained` source -> ours, timm's or official.

    Args:
        source: an official ``.npz``, a timm state dict or Hub snapshot, a Hub id, a URL, or our own weights.
        output: a directory (``mlp-mixer``: ``save_pretrained``; ``timm``: timm's Hub layout) or, for
            ``npz``, the official-layout file to write.
        to: ``"mlp-mixer"``, ``"timm"`` or ``"npz"``.
        image_size: the input size when the source's patch grid is not square.

    Returns:
        The model that was written, with its classes and preprocessing.
    """
    if to not in CONVERT_FORMATS:
        raise ValueError(f"to must be one of {', '.join(CONVERT_FORMATS)}, got {to!r}")
    model = from_pretrained(source, image_size=image_size)
    if to == "npz":
        save_official_npz(model, output)
    elif to == "timm":
        save_timm_pretrained(model, output)
    else:
        model.source = str(source)
        model.save_pretrained(output)
    return model
