"""Saving, loading and converting weights: training checkpoints, the Hugging Face layout, official and timm weights.

Two on-disk forms of our own, both loadable by :func:`load_model`:

- a training checkpoint: one ``.pt`` file holding a plain dict (torchvision's references style)::

      {"model": state_dict, "model_config": MLPMixer.config(), "classes": [...], "preprocessing": {...},
       "optimizer": ..., "scheduler": ..., "epoch": ..., "batch": ..., "step": ..., "rng": ...,
       "config": run config, "history": [per-epoch metrics], "best": {...}}

  (``model`` holds the EMA weights when EMA is on, the raw ones then in ``train_model``; ``batch`` counts the
  steps already done in an interrupted epoch, so resuming continues mid-epoch), written atomically
  (temporary file, fsync, rename) and read with ``torch.load(weights_only=True)``;
- a ``save_pretrained`` directory: ``config.json`` (architecture, classes, preprocessing) and
  ``model.safetensors``, the Hugging Face layout (``model.save_pretrained``, ``model.push_to_hub``; see
  :mod:`mlp_mixer.model.pretrained`).

And the peers' layouts, converted by explicit key maps (module names follow the official checkpoint, so the
maps are short): the official ``.npz`` files of google-research/vision_transformer and big_vision (also
big_vision's older ``Mixer/encoderblock_{i}`` layout), and timm's ``mixer_*`` state dicts and Hub repos.
Sizes are inferred from the shapes. :func:`from_pretrained` takes any of them, a run folder, a Hub id or a URL,
and returns the model itself with its ``classes`` and ``preprocessing`` attached: it is the one function every
command that reads ``--checkpoint`` calls.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..model.mixer import MLPMixer
from ..model.pretrained import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    Preprocessing,
    hub_download,
    hub_id,
    read_config,
    read_safetensors,
)
from ..model.variants import variant_name
from ..utils.files import atomic_save, atomic_write, write_bytes, write_json

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


def _read_torch_file(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True`` (never unpickle code); a missing or damaged file names itself."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        if "Weights only load failed" in str(err):  # torch's advice here is the unsafe way: never repeat it
            reason = "it holds Python objects besides tensors, which are never unpickled (that could run code)"
        elif "zip archive" in str(err) or isinstance(err, EOFError):
            reason = "truncated or damaged" if path.stat().st_size else "empty file"
        else:
            reason = "not a PyTorch checkpoint"
        raise ValueError(f"checkpoint {path} cannot be read: {reason}") from err


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training checkpoint (a ``.pt`` or a run folder) with ``weights_only=True``."""
    path = resolve_checkpoint(path)
    checkpoint = _read_torch_file(path, map_location)
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


def from_pretrained(
    source: str | Path,
    *,
    image_size: int | tuple[int, int] | None = None,
    cache_dir: str | Path | None = None,
    map_location: str | torch.device = "cpu",
) -> MLPMixer:
    """The model of any checkpoint a user can name, in eval mode, with ``classes`` and ``preprocessing`` attached.

    Every command that takes ``--checkpoint`` calls this, so the same text means the same model everywhere.

    Args:
        source: a run folder (its ``best.pt``, else ``last.pt``), a training checkpoint ``.pt``, a
            ``save_pretrained`` folder (``config.json`` + ``model.safetensors``, ours or a timm Hub snapshot), an
            official ``.npz`` file, a timm state dict (``.safetensors``, ``.pth``, ``.bin``), a Hugging Face Hub
            id (``timm/mixer_b16_224.goog_in21k_ft_in1k``, also with an ``hf-hub:`` prefix), or the URL of an
            official ``.npz`` (``https://storage.googleapis.com/...`` or ``gs://...``).
        image_size: the input size the weights were trained at, needed only when their patch grid is not
            square (it is inferred from the token-mixing shapes otherwise).
        cache_dir: where downloads are kept; default ``$MLP_MIXER_CACHE`` or ``~/.cache/mlp_mixer`` for URLs
            and the Hugging Face cache for Hub ids.
        map_location: the device the weights are loaded onto.
    """
    text = str(source)
    if text.startswith(("http://", "https://", "gs://")):
        return from_pretrained(download(text, cache_dir), image_size=image_size, map_location=map_location)
    path = Path(source)
    if not path.exists():
        repo = hub_id(text)
        if repo is None:
            raise FileNotFoundError(
                f"{source} does not exist (a Hugging Face Hub id is owner/name without a file ending, or hf-hub:...)"
            )
        path = hub_download(repo, cache_dir)
    path = resolve_checkpoint(path)
    if path.is_dir():
        model = _load_directory(path, image_size)
    elif path.suffix == ".npz":
        model = load_official_npz(path, image_size)
    elif path.suffix == ".safetensors":  # a bare state dict: timm's (ours travel with their config.json)
        model = _timm_state_dict_model(read_safetensors(path), image_size, path)
    else:
        model = _load_torch_file(path, image_size)
    return model.to(map_location)


load_model = from_pretrained  # the name the commands and docs/train.md use


def _load_directory(directory: Path, image_size: int | tuple[int, int] | None) -> MLPMixer:
    config = read_config(directory)
    state = read_safetensors(directory / WEIGHTS_NAME)
    if "model_config" not in config:  # a timm Hub repo (config.json + model.safetensors), converted
        return _load_timm_directory(directory, config, state, image_size)
    model = MLPMixer.from_state(config, state, directory / WEIGHTS_NAME)
    model.source = str(directory)
    return model


def _load_torch_file(path: Path, image_size: int | tuple[int, int] | None) -> MLPMixer:
    """A training checkpoint, or a bare timm state dict saved with ``torch.save``."""
    checkpoint = _read_torch_file(path)
    if isinstance(checkpoint, dict) and _is_timm_state_dict(checkpoint):
        return _timm_state_dict_model(checkpoint, image_size, path)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "model_config" not in checkpoint:
        raise ValueError(f"checkpoint {path} is not an mlp-mixer checkpoint (no 'model' and 'model_config')")
    return MLPMixer.from_state(checkpoint, checkpoint["model"], path)


# --------------------------------------------------------------------------- sizes from shapes


def config_from_state_dict(
    state: Mapping[str, torch.Tensor],
    image_size: int | tuple[int, int] | None = None,
    gelu: str = "tanh",
    source: str | Path = "state dict",
) -> dict[str, Any]:
    """The constructor arguments that fit a state dict in our layout, inferred from its shapes.

    Args:
        state: weights named as ``MLPMixer.state_dict()`` names them.
        image_size: the input size; by default the token-mixing width S is taken as a square grid.
        gelu: the GELU the weights were trained with (not visible in the shapes).
        source: named in errors.
    """
    try:
        dim, in_channels, patch_h, patch_w = state["stem.weight"].shape
        token_dim, num_patches = state["blocks.0.token_mixing.fc1.weight"].shape
        channel_dim = state["blocks.0.channel_mixing.fc1.weight"].shape[0]
        num_classes = state["head.weight"].shape[0] if "head.weight" in state else 0
    except (KeyError, ValueError, IndexError, AttributeError) as err:
        raise ValueError(f"{source} is not a Mixer's weights (missing or misshapen {err})") from err
    if patch_h != patch_w:
        raise ValueError(f"{source}: patches must be square, got {patch_h}x{patch_w}")
    depth = sum(1 for key in state if re.fullmatch(r"blocks\.\d+\.norm1\.weight", key))
    if image_size is None:
        side = math.isqrt(num_patches)
        if side * side != num_patches:
            raise ValueError(
                f"{source}: its token-mixing layer takes {num_patches} patches, not a square grid, so the input "
                "size cannot be inferred; give it (image_size= in Python, --image-size with mlp-mixer convert)"
            )
        image_size = side * patch_h
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if (h // patch_h) * (w // patch_h) != num_patches:
        raise ValueError(f"{source}: image_size {image_size} with patch {patch_h} does not give {num_patches} patches")
    return dict(
        in_channels=in_channels,
        dim=dim,
        num_classes=num_classes,
        patch_size=patch_h,
        image_size=image_size,
        depth=depth,
        token_dim=token_dim,
        channel_dim=channel_dim,
        gelu=gelu,
    )


# --------------------------------------------------------------------------- official .npz checkpoints

# official module path -> ours; blocks are MixerBlock_{i} -> blocks.{i}
_OFFICIAL_BLOCK = {
    "LayerNorm_0": "norm1",
    "token_mixing/Dense_0": "token_mixing.fc1",
    "token_mixing/Dense_1": "token_mixing.fc2",
    "LayerNorm_1": "norm2",
    "channel_mixing/Dense_0": "channel_mixing.fc1",
    "channel_mixing/Dense_1": "channel_mixing.fc2",
}
_OFFICIAL_TOP = ("stem", "pre_head_layer_norm", "head")
_OFFICIAL_PARAM = {"kernel": "weight", "scale": "weight", "bias": "bias"}


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _convert_pre_linen(tree: dict[str, Any]) -> dict[str, Any]:
    """flax's ``convert_pre_linen``: renumber ``Name_<n>`` submodules per name, in natural order."""
    renamed, counts = {}, {}
    for name in sorted(tree, key=_natural_key):
        value = _convert_pre_linen(tree[name]) if isinstance(tree[name], dict) else tree[name]
        match = re.fullmatch(r"(.*)_\d+", name)
        if match:
            counts[match.group(1)] = counts.get(match.group(1), -1) + 1
            name = f"{match.group(1)}_{counts[match.group(1)]}"
        renamed[name] = value
    return renamed


def _official_tree(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Flat '/'-joined official params -> the current vit_jax/big_vision layout, still flat.

    Undoes what the official loaders undo: a ``params/`` or ``opt/target/`` prefix, pre-Linen numbering, and
    big_vision's older layout (``Mixer/encoderblock_{i}/token_mixing_phase_0/{kernel1,bias1,...}``,
    ``Mixer/encoder_norm``, ``embedding``), whose Dense params big_vision squeezes.
    """
    for prefix in ("params/", "opt/target/"):
        if params and all(key.startswith(prefix) for key in params):
            params = {key[len(prefix) :]: value for key, value in params.items()}
    tree: dict[str, Any] = {}
    for key, value in params.items():
        *parents, leaf = key.split("/")
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    tree = _convert_pre_linen(tree)
    if "Mixer" in tree:  # big_vision's older layout
        old = tree.pop("Mixer")
        tree["pre_head_layer_norm"] = old.pop("encoder_norm")
        tree["stem"] = tree.pop("embedding")
        for name, block in old.items():
            for mlp in ("token_mixing", "channel_mixing"):
                dense = block.pop(f"{mlp}_phase_0")
                block[mlp] = {
                    f"Dense_{i}": {"kernel": dense[f"kernel{i + 1}"].squeeze(), "bias": dense[f"bias{i + 1}"].squeeze()}
                    for i in range(2)
                }
            tree["MixerBlock_" + name.removeprefix("encoderblock_")] = block

    def flatten(node: dict[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
        flat = {}
        for name, value in node.items():
            flat.update(flatten(value, f"{prefix}{name}/") if isinstance(value, dict) else {prefix + name: value})
        return flat

    return flatten(tree)


def official_to_state_dict(
    params: Mapping[str, np.ndarray], source: str | Path = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Official flax params (flat, '/'-joined, as in the ``.npz`` files) -> our state dict.

    Dense kernels are (in, out), so a Linear weight is ``kernel.T``; the HWIO conv kernel becomes OIHW.
    """
    state, unknown = {}, []
    for key, value in _official_tree(params).items():
        module, _, param = key.rpartition("/")
        block = re.fullmatch(r"MixerBlock_(\d+)/(.+)", module)
        if block and block.group(2) in _OFFICIAL_BLOCK:
            ours = f"blocks.{block.group(1)}.{_OFFICIAL_BLOCK[block.group(2)]}"
        elif module in _OFFICIAL_TOP:
            ours = module
        else:
            unknown.append(key)
            continue
        if param not in _OFFICIAL_PARAM:
            unknown.append(key)
            continue
        tensor = torch.from_numpy(np.asarray(value, dtype=np.float32))
        if param == "kernel":
            tensor = (
                tensor.permute(3, 2, 0, 1) if tensor.ndim == 4 else tensor.t()
            )  # HWIO -> OIHW; (in, out) -> (out, in)
        state[f"{ours}.{_OFFICIAL_PARAM[param]}"] = tensor.contiguous()
    if unknown:
        raise ValueError(f"{source}: {len(unknown)} keys are not in the official Mixer layout, e.g. {unknown[:3]}")
    return state


def state_dict_to_official(state: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Our state dict -> official flat params (``MixerBlock_{i}/token_mixing/Dense_0/kernel`` ...), float32."""
    to_official = {ours: official for official, ours in _OFFICIAL_BLOCK.items()}
    params = {}
    for key, tensor in state.items():
        module, _, param = key.rpartition(".")
        block = re.fullmatch(r"blocks\.(\d+)\.(.+)", module)
        name = f"MixerBlock_{block.group(1)}/{to_official[block.group(2)]}" if block else module
        value = tensor.detach().cpu().float()
        if param == "weight" and value.ndim > 1:
            value, leaf = (value.permute(2, 3, 1, 0) if value.ndim == 4 else value.t()), "kernel"
        else:
            leaf = "scale" if param == "weight" else "bias"
        params[f"{name}/{leaf}"] = np.ascontiguousarray(value.numpy())
    return params


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except Exception as err:  # zipfile, zlib and numpy each raise their own types for damaged files
        # numpy reads a non-zip file as a pickle and suggests allow_pickle: never pass that advice on
        reason = "not a zip archive" if "pickle" in str(err) else str(err).split("\n")[0]
        raise ValueError(f"{path} cannot be read as an .npz checkpoint (truncated or not .npz): {reason}") from err


def load_official_npz(path: str | Path, image_size: int | tuple[int, int] | None = None) -> MLPMixer:
    """Load an official ``.npz`` (vit_jax or big_vision, either layout) with sizes inferred from the shapes.

    The model uses tanh GELU, which is what the official code computes, and the official preprocessing
    (pixels scaled to [-1, 1]; vit_jax resizes the whole image to the input size, so crop_pct 1).

    Args:
        path: the ``.npz`` file, e.g. ``Mixer-B_16.npz``.
        image_size: the input size when the patch grid is not square (inferred otherwise).
    """
    path = Path(path)
    state = official_to_state_dict(_read_npz(path), path)
    config = config_from_state_dict(state, image_size, "tanh", path)
    model = MLPMixer.from_state({"model_config": config}, state, path)
    model.preprocessing = Preprocessing.official(model.image_size, model.in_channels, crop_pct=1.0)
    return model


def save_official_npz(model: MLPMixer, path: str | Path) -> Path:
    """Write ``model`` as an official-layout ``.npz`` (what vit_jax's ``checkpoint.load`` reads), atomically."""
    params = state_dict_to_official(model.state_dict())
    return atomic_write(path, lambda f: np.savez(f, **params))


# --------------------------------------------------------------------------- timm


# timm name -> ours; prefixes are matched at the start, infixes anywhere
_TIMM_PREFIX = {"stem.proj.": "stem.", "norm.": "pre_head_layer_norm."}
_TIMM_INFIX = {".mlp_tokens.": ".token_mixing.", ".mlp_channels.": ".channel_mixing."}


def _rename(key: str, prefixes: dict[str, str], infixes: dict[str, str]) -> str:
    for old, new in prefixes.items():
        if key.startswith(old):
            key = new + key[len(old) :]
    for old, new in infixes.items():
        key = key.replace(old, new)
    return key


def _is_timm_state_dict(state: Mapping[str, Any]) -> bool:
    return "stem.proj.weight" in state


def to_timm_state_dict(model: MLPMixer) -> dict[str, torch.Tensor]:
    """Our weights in timm's ``MlpMixer`` names (``stem.proj``, ``mlp_tokens``, ``mlp_channels``, ``norm``)."""
    prefixes = {new: old for old, new in _TIMM_PREFIX.items()}
    infixes = {new: old for old, new in _TIMM_INFIX.items()}
    return {_rename(k, prefixes, infixes): v.detach().clone() for k, v in model.state_dict().items()}


def from_timm_state_dict(
    state: Mapping[str, torch.Tensor],
    image_size: int | tuple[int, int] | None = None,
    gelu: str = "exact",
    source: str | Path = "timm state dict",
) -> MLPMixer:
    """A Mixer from a timm ``mixer_*`` state dict, sizes inferred from the shapes.

    Args:
        state: timm's ``MlpMixer.state_dict()``.
        image_size: the input size when the patch grid is not square (inferred otherwise).
        gelu: timm computes exact GELU; weights that timm converted from the official JAX ones
            (``goog_*`` tags) were trained with ``"tanh"``.
        source: named in errors.
    """
    if not _is_timm_state_dict(state):
        raise ValueError(f"{source} is not a timm MlpMixer state dict (no 'stem.proj.weight')")
    ours = {_rename(k, _TIMM_PREFIX, _TIMM_INFIX): v for k, v in state.items()}
    return MLPMixer.from_state({"model_config": config_from_state_dict(ours, image_size, gelu, source)}, ours, source)


def _timm_preprocessing(
    pretrained_cfg: dict[str, Any], image_size: tuple[int, int] | None = None, in_channels: int = 3
) -> Preprocessing:
    """timm's ``pretrained_cfg`` (defaults: its Mixer ``_cfg``) as our Preprocessing."""
    size = image_size or tuple(pretrained_cfg.get("input_size", (3, 224, 224))[1:])
    half = (0.5,) * in_channels
    mean, std = tuple(pretrained_cfg.get("mean", half)), tuple(pretrained_cfg.get("std", half))
    return Preprocessing(
        image_size=tuple(size),
        mean=mean if len(mean) == in_channels else half,  # a 1-channel model with timm's 3-channel defaults
        std=std if len(std) == in_channels else half,
        crop_pct=float(pretrained_cfg.get("crop_pct", 0.875)),
        interpolation=pretrained_cfg.get("interpolation", "bicubic"),
    )


def _timm_state_dict_model(
    state: dict[str, torch.Tensor], image_size: int | tuple[int, int] | None, source: Path
) -> MLPMixer:
    """A bare timm state dict file: exact GELU and timm's default Mixer preprocessing."""
    model = from_timm_state_dict(state, image_size, source=source)
    model.preprocessing = _timm_preprocessing({}, model.image_size, model.in_channels)
    return model


def _load_timm_directory(
    directory: Path, config: dict[str, Any], state: dict[str, torch.Tensor], image_size: int | tuple[int, int] | None
) -> MLPMixer:
    """A timm Hub snapshot: ``config.json`` (architecture, pretrained_cfg, label_names) + ``model.safetensors``."""
    pretrained_cfg = config.get("pretrained_cfg", config)
    if image_size is None:  # timm stores (channels, height, width); model_args may override it
        size = config.get("model_args", {}).get("img_size") or list(pretrained_cfg.get("input_size", []))[1:] or None
        image_size = tuple(size) if isinstance(size, list | tuple) else size
    # timm's goog_* weights are the official JAX ones, trained with tanh GELU
    gelu = "tanh" if str(pretrained_cfg.get("tag", "")).startswith("goog") else "exact"
    model = from_timm_state_dict(state, image_size, gelu, directory / WEIGHTS_NAME)
    labels = config.get("label_names") or pretrained_cfg.get("label_names") or []
    if isinstance(labels, dict):  # timm allows {index: name}
        labels = [labels[k] for k in sorted(labels, key=int)]
    model.classes, model.source = list(labels), str(directory)
    model.preprocessing = _timm_preprocessing(pretrained_cfg, model.image_size, model.in_channels)
    return model


def save_timm_pretrained(model: MLPMixer, directory: str | Path) -> Path:
    """Write a timm Hub layout directory: ``timm.create_model("local-dir:<directory>", pretrained=True)`` loads it.

    The model's ``classes`` become timm's ``label_names`` and its ``preprocessing`` timm's ``pretrained_cfg``.
    timm computes exact GELU; a model trained with tanh GELU differs there by ~1e-4 in the logits.
    """
    from safetensors.torch import save

    variant = variant_name(model.config())
    if variant is None or variant.startswith("H"):
        raise ValueError(
            f"timm has no mixer_* architecture with depth {model.depth}, patch {model.patch_size}, dim {model.dim}, "
            f"token_dim {model.token_dim}, channel_dim {model.channel_dim}; use to_timm_state_dict() with "
            "timm.models.mlp_mixer.MlpMixer(...) instead"
        )
    preprocessing = model.preprocessing
    config = {
        "architecture": f"mixer_{variant.replace('/', '').lower()}_224",
        "num_classes": model.num_classes,
        "num_features": model.dim,
        "global_pool": "avg",
        "model_args": {"img_size": list(model.image_size), "in_chans": model.in_channels},
        "pretrained_cfg": {
            "input_size": [model.in_channels, *model.image_size],
            "fixed_input_size": True,
            "interpolation": preprocessing.interpolation,
            "crop_pct": preprocessing.crop_pct,
            "crop_mode": "center",
            "mean": list(preprocessing.mean),
            "std": list(preprocessing.std),
            "num_classes": model.num_classes,
            "first_conv": "stem.proj",
            "classifier": "head",
        },
    }
    if model.classes:
        config["label_names"] = list(model.classes)
    directory = Path(directory)
    state = {k: v.cpu().contiguous() for k, v in to_timm_state_dict(model).items()}
    write_bytes(directory / WEIGHTS_NAME, save(state, metadata={"format": "pt"}))
    write_json(directory / CONFIG_NAME, config)
    return directory


# --------------------------------------------------------------------------- downloads


def default_cache_dir() -> Path:
    """``$MLP_MIXER_CACHE``, else ``$XDG_CACHE_HOME/mlp_mixer``, else ``~/.cache/mlp_mixer``."""
    if os.environ.get("MLP_MIXER_CACHE"):
        return Path(os.environ["MLP_MIXER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlp_mixer"


def download(url: str, cache_dir: str | Path | None = None) -> Path:
    """Download ``url`` once into the cache (``<cache>/<host>/<path>``) and return the local file.

    ``gs://bucket/...`` is read as ``https://storage.googleapis.com/bucket/...``. Offline, the error says
    where to put the file by hand.
    """
    import urllib.error
    import urllib.parse
    import urllib.request

    from tqdm import tqdm

    if url.startswith("gs://"):
        url = "https://storage.googleapis.com/" + url[len("gs://") :]
    parts = urllib.parse.urlparse(url)
    target = Path(cache_dir or default_cache_dir()) / parts.netloc / parts.path.lstrip("/")
    if target.is_file():
        return target

    def fetch(f: Any) -> None:
        with urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {target.name}") as bar:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))

    try:
        return atomic_write(target, fetch)
    except (urllib.error.URLError, OSError) as err:  # URLError, HTTPError, timeouts, no route: all OSError
        raise FileNotFoundError(
            f"cannot download {url} ({err}). Offline? Fetch it on a machine with network "
            f"(e.g. curl -L -o {target.name} {url}) and put it at {target}, or pass the local file's path"
        ) from err


# --------------------------------------------------------------------------- mlp-mixer convert

CONVERT_FORMATS = ("mlp-mixer", "timm", "npz")


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
