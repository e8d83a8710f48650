"""What travels with a set of weights, kept apart from the architecture (as timm's ``pretrained_cfg`` and
torchvision's ``Weights.transforms``): the preprocessing, the class names and the Hugging Face layout.

Every :class:`~mlp_mixer.model.mixer.MLPMixer` carries ``classes``, ``preprocessing`` and ``source`` attributes, and
huggingface_hub's ``PyTorchModelHubMixin`` gives it ``save_pretrained``, ``push_to_hub`` and a model card. The
directory it writes is ``config.json`` (architecture, classes, preprocessing) + ``model.safetensors``;
``MLPMixer.from_pretrained`` reads that layout back from a folder or a Hub repo, and
:func:`mlp_mixer.from_pretrained` reads it and every other source (checkpoints, official ``.npz``, timm).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from huggingface_hub import PyTorchModelHubMixin

from ..utils.files import write_bytes, write_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
OFFICIAL_MEAN_STD = 0.5  # the official models see pixels scaled to [-1, 1]
# owner/name, optionally behind hf-hub: (timm's prefix)
HUB_ID = re.compile(r"(?:hf[-_]hub:)?([A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)")
# Endings that make "a/b.pt" a mistyped local path, never a Hub repo
LOCAL_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".npz", ".safetensors", ".json", ".yaml", ".yml", ".tar", ".onnx")

T = TypeVar("T", bound="Pretrained")
INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming", "lanczos")  # torchvision's


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

    @classmethod
    def official(cls, image_size: tuple[int, int], in_channels: int, crop_pct: float = 0.875) -> Preprocessing:
        """The official scaling (pixels to [-1, 1]) at a model's input size."""
        half = (OFFICIAL_MEAN_STD,) * in_channels
        return cls(image_size=tuple(image_size), mean=half, std=half, crop_pct=crop_pct)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path = "preprocessing", in_channels: int | None = None):
        """From the stored dict, checked: a bad value names ``source`` instead of failing at the first image."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: preprocessing must be a mapping, got {str(data)[:80]}")
        known = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            p = cls(**known)
            size = tuple(int(v) for v in p.image_size)
            mean, std = tuple(float(v) for v in p.mean), tuple(float(v) for v in p.std)
            crop = float(p.crop_pct)
            ok = len(size) == 2 and min(size) > 0 and len(mean) == len(std) > 0 and min(std) > 0 and 0 < crop <= 1
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: invalid preprocessing {data}: {err}") from err
        ok = ok and (in_channels is None or len(mean) == in_channels) and p.interpolation in INTERPOLATIONS
        if not ok:
            raise ValueError(f"{source}: invalid preprocessing {data} for {in_channels or 'any'}-channel input")
        return cls(size, mean, std, crop, p.interpolation)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file; a missing or damaged file names itself."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} cannot be read (truncated or not safetensors): {err}") from err


def read_config(directory: Path) -> dict[str, Any]:
    """``config.json`` of a pretrained directory (ours or timm's); both files must be there."""
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist (a pretrained directory holds {CONFIG_NAME} and {WEIGHTS_NAME})"
            )
    try:
        config = json.loads(config_path.read_text())
        if "model_config" not in config and "architecture" not in config:
            raise KeyError("model_config")
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config_path} is not a valid mlp-mixer or timm config: {err!r}") from err
    return config


def hub_id(source: str | Path) -> str | None:
    """The Hub repo a ``--checkpoint`` names, or None when it names a local path (existing or not).

    The rule: ``hf-hub:owner/name`` is always the Hub. A bare ``owner/name`` is the Hub only when nothing local
    matches it: no such path, no folder named ``owner`` here, and no file ending (``.pt``, ``.npz``, ...) on
    ``name``. So a mistyped local path such as ``ck/none.pt`` fails at once, offline, naming the path.
    """
    text = str(source)
    match = HUB_ID.fullmatch(text)
    if match is None:
        return None
    if text.startswith(("hf-hub:", "hf_hub:")):
        return match.group(1)
    owner, name = text.split("/")
    if Path(text).exists() or Path(owner).is_dir() or name.lower().endswith(LOCAL_SUFFIXES):
        return None
    return match.group(1)


def _hub_reachable(timeout: float = 5.0) -> bool:
    """One quick connection to the Hub's host: huggingface_hub itself retries for ~25 s before giving up."""
    import socket
    import urllib.parse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urllib.parse.urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError:
        return False
    return True


def hub_download(repo_id: str, cache_dir: str | Path | None = None, revision: str | None = None) -> Path:
    """``config.json`` + ``model.safetensors`` of a Hub repo (cached by huggingface_hub) -> their directory.

    With the Hub unreachable, only the local cache is looked at, so an offline machine gets its answer at once.
    """
    from huggingface_hub import hf_hub_download

    paths = []
    offline = not _hub_reachable()
    for filename in (CONFIG_NAME, WEIGHTS_NAME):
        try:
            extra = {"revision": revision} if revision else {}
            if offline:
                extra["local_files_only"] = True
            paths.append(Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir, **extra)))
        except Exception as err:  # offline, unknown repo, missing file: huggingface_hub's types vary by version
            raise FileNotFoundError(
                f"cannot get {filename} of {repo_id} from the Hugging Face Hub ({type(err).__name__}: {err}). "
                f"Offline? On a machine with network run `hf download {repo_id} {CONFIG_NAME} {WEIGHTS_NAME} "
                f"--local-dir DIR`, copy DIR here and pass its path instead of the Hub id (no local path "
                f"named {repo_id} exists either)"
            ) from err
    return paths[0].parent


class Pretrained(
    PyTorchModelHubMixin,
    library_name="mlp-mixer",
    tags=["mlp-mixer", "image-classification"],
    paper_url="https://arxiv.org/abs/2105.01601",
):
    """``save_pretrained`` / ``push_to_hub`` / ``from_pretrained`` in our layout, for a model with ``config()``."""

    classes: list[str]
    preprocessing: Preprocessing
    source: str | None

    def pretrained_config(self) -> dict[str, Any]:
        """The ``config.json`` of this model: architecture, class names, preprocessing (and where it came from)."""
        config = {
            "architecture": "mlp_mixer",
            "model_config": self.config(),
            "classes": list(self.classes),
            "preprocessing": self.preprocessing.to_dict(),
        }
        return {**config, "source": self.source} if self.source else config

    def _save_pretrained(self, save_directory: Path) -> None:
        # Called by the mixin's save_pretrained (which then adds a model card) and push_to_hub; each file atomic.
        from safetensors.torch import save

        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        write_bytes(save_directory / WEIGHTS_NAME, save(state, metadata={"format": "pt"}))
        write_json(save_directory / CONFIG_NAME, self.pretrained_config())

    @classmethod
    def from_pretrained(
        cls: type[T],
        pretrained_model_name_or_path: str | Path,
        *,
        cache_dir: str | Path | None = None,
        revision: str | None = None,
    ) -> T:
        """Read back what ``save_pretrained`` or ``push_to_hub`` wrote: a folder, or a Hub repo id. In eval mode.

        :func:`mlp_mixer.from_pretrained` takes this layout and every other source (checkpoints, ``.npz``, timm).
        """
        directory = Path(pretrained_model_name_or_path)
        if not directory.is_dir():
            repo = hub_id(pretrained_model_name_or_path)
            if repo is None:
                raise FileNotFoundError(f"{pretrained_model_name_or_path} is neither a folder nor a Hub id")
            directory = hub_download(repo, cache_dir, revision)
        config = read_config(directory)
        if "model_config" not in config:
            raise ValueError(
                f"{directory / CONFIG_NAME} is not in mlp-mixer's layout (timm's?); mlp_mixer.from_pretrained "
                "converts it"
            )
        model = cls.from_state(config, read_safetensors(directory / WEIGHTS_NAME), directory / WEIGHTS_NAME)
        model.source = str(directory)
        return model

    @classmethod
    def from_state(cls: type[T], config: dict[str, Any], state: dict[str, torch.Tensor], source: str | Path) -> T:
        """A model from a ``config.json``-like dict (``model_config``, ``classes``, ``preprocessing``) and weights.

        The architecture is built on the meta device and takes the tensors as they are: no random init to pay for.
        """
        try:
            with torch.device("meta"):
                model = cls(**config["model_config"])  # image_size may be a JSON list: the model takes any pair
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(f"{source} has an invalid model_config: {err}") from err
        try:
            model.load_state_dict({k: v.float().contiguous() for k, v in state.items()}, assign=True)
        except (RuntimeError, AttributeError) as err:  # AttributeError: a stored value that is not a tensor
            sizes = ", ".join(f"{k} {v}" for k, v in config["model_config"].items())
            raise ValueError(f"weights in {source} do not match a Mixer with {sizes}: {err}") from err
        classes = config.get("classes") or []
        if not isinstance(classes, list | tuple) or not all(isinstance(c, str | int) for c in classes):
            raise ValueError(f"{source}: classes must be a list of names, got {str(classes)[:80]}")
        if classes and len(classes) != model.num_classes:
            raise ValueError(f"{source} stores {len(classes)} class names for a head of {model.num_classes} classes")
        model.classes = [str(c) for c in classes]
        if config.get("preprocessing"):
            model.preprocessing = Preprocessing.from_dict(config["preprocessing"], source, model.in_channels)
        model.source = str(source)
        return model.eval()
