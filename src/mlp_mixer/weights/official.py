"""The official checkpoints' layout: the ``.npz`` files of google-research/vision_transformer and big_vision.

An explicit key map each way (module names follow the official checkpoint, so the map is short): flax's
``MixerBlock_{i}/token_mixing/Dense_0/kernel`` is our ``blocks.{i}.token_mixing.fc1.weight``, a Dense kernel
(in, out) is a Linear weight transposed, the HWIO stem kernel is OIHW. big_vision's older layout
(``Mixer/encoderblock_{i}``) and pre-Linen numbering are undone first, as the official loaders do. Sizes are
inferred from the shapes (:mod:`.shapes`); files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import math
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..model.mixer import MLPMixer
from ..model.pretrained import Preprocessing
from ..utils.files import atomic_write
from ..utils.limits import BudgetError, check_weights
from .shapes import config_from_state_dict

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
    params: Mapping[str, np.ndarray | torch.Tensor], source: str | Path = "checkpoint"
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
        # meta tensors (headers only, see load_official_npz) or arrays
        tensor = value.float() if torch.is_tensor(value) else torch.from_numpy(np.asarray(value, dtype=np.float32))
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


def _npz_headers(path: Path) -> dict[str, torch.Tensor]:
    """Each array of an ``.npz`` as a meta tensor of its shape, from the zip's and the ``.npy`` headers alone.

    Nothing is inflated: every member's declared uncompressed size must be its ``.npy`` header plus the array the
    header declares (so inflating cannot give more), the arrays numeric (no object arrays, which would need
    pickle), and their count and bytes within the weights budget (:func:`~mlp_mixer.utils.limits.check_weights`).
    """
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    shapes, total = {}, 0
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            check_weights(path, len(members), sum(m.file_size for m in members))
            for member in members:
                key = member.filename.removesuffix(".npy")
                with archive.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    if version not in ((1, 0), (2, 0)):
                        raise ValueError(f"array {key!r} is in .npy format {version}, not 1.0 or 2.0")
                    read_header = getattr(np.lib.format, f"read_array_header_{version[0]}_0")
                    shape, _, dtype = read_header(f)
                    if dtype.hasobject or dtype.kind not in "biuf":
                        what = "Python objects, which are never unpickled" if dtype.hasobject else f"dtype {dtype}"
                        raise ValueError(f"array {key!r} holds {what}; weights are numeric arrays")
                    nbytes = math.prod(shape) * dtype.itemsize
                    if member.file_size != f.tell() + nbytes:
                        raise ValueError(
                            f"array {key!r} declares {member.file_size:,} bytes, its header {f.tell() + nbytes:,}"
                        )
                total += nbytes
                shapes[key] = torch.empty(shape, device="meta")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError) as err:
        if isinstance(err, BudgetError):
            raise
        reason = (
            "not a zip archive (truncated or not .npz)"
            if isinstance(err, zipfile.BadZipFile)
            else str(err).split("\n")[0][:200] or type(err).__name__
        )
        raise ValueError(f"{path} cannot be read as an .npz checkpoint: {reason}") from err
    check_weights(path, len(shapes), total)
    return shapes


def _read_npz(path: Path) -> dict[str, np.ndarray]:
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
    The layout and every shape are checked from the headers first, on the meta device, so a file that is not a
    Mixer's weights is refused before any of its arrays is inflated.

    Args:
        path: the ``.npz`` file, e.g. ``Mixer-B_16.npz``.
        image_size: the input size when the patch grid is not square (inferred otherwise).
    """
    path = Path(path)
    _model_from_params(_npz_headers(path), image_size, path)
    return _model_from_params(_read_npz(path), image_size, path)


def _model_from_params(
    params: Mapping[str, np.ndarray | torch.Tensor], image_size: int | tuple[int, int] | None, path: Path
) -> MLPMixer:
    state = official_to_state_dict(params, path)
    config = config_from_state_dict(state, image_size, "tanh", path)
    model = MLPMixer.from_state({"model_config": config}, state, path)
    model.preprocessing = Preprocessing.official(model.image_size, model.in_channels, crop_pct=1.0)
    return model


def save_official_npz(model: MLPMixer, path: str | Path) -> Path:
    """Write ``model`` as an official-layout ``.npz`` (what vit_jax's ``checkpoint.load`` reads), atomically."""
    params = state_dict_to_official(model.state_dict())
    return atomic_write(path, lambda f: np.savez(f, **params))
