"""What travels with a set of weights, kept apart from the architecture (as timm's ``pretrained_cfg`` and
torchvision's ``Weights.transforms``): the preprocessing, the class names and the Hugging Face layout.

Every :class:`~mlp_mixer.model.mixer.MLPMixer` carries ``classes``, ``preprocessing`` and ``source`` attributes, and
huggingface_hub's ``PyTorchModelHubMixin`` gives it ``save_pretrained``, ``push_to_hub``, ``from_pretrained`` and a
model card. The directory it writes is ``config.json`` + ``model.safetensors`` (+ the card). ``config.json`` states
every constructor argument at its top level (what the mixin reads), the classes and preprocessing, and timm's
``architecture`` / ``model_args`` / ``pretrained_cfg`` (what ``timm.create_model("local-dir:DIR")`` reads).
``MLPMixer.from_pretrained`` is the mixin's (every keyword it takes, constructor overrides, ``pytorch_model.bin``
where safetensors is absent); :func:`mlp_mixer.from_pretrained` reads that layout and every other source.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from huggingface_hub import ModelHubMixin, PyTorchModelHubMixin

from ..utils.files import write_bytes, write_json
from ..utils.limits import check_safetensors, check_tensors, check_torch_file
from ..utils.sources import hub_id as hub_id  # the rule lives there, torch-free, for the command line's check
from .variants import TIMM_NAMES, seed_names

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PICKLE_WEIGHTS_NAME = "pytorch_model.bin"  # the mixin's fallback when a repo has no safetensors (read weights-only)
ARCHITECTURE = "mlp_mixer"  # config.json's "architecture": our layout, and the timm model name that rebuilds it
LICENSE = "apache-2.0"  # the model card's: this code's license, and the official Mixer weights'
OFFICIAL_MEAN_STD = 0.5  # the official models see pixels scaled to [-1, 1]

T = TypeVar("T", bound="ModelHubMixin")  # as the mixin types from_pretrained
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

    def for_channels(self, in_channels: int) -> Preprocessing:
        """The same for a model of ``in_channels`` (a stem adapted from other weights): a mean and std for another
        channel count become their average per channel, as the adapted stem sums (or repeats) the stored one."""

        def per_channel(values: tuple[float, ...]) -> tuple[float, ...]:
            values = tuple(float(v) for v in values)
            return values if len(values) == in_channels else (sum(values) / len(values),) * in_channels

        return dataclasses.replace(self, mean=per_channel(self.mean), std=per_channel(self.std))

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
    check_safetensors(path)  # the tensors' count and bytes from the header, before any is read
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} cannot be read (truncated or not safetensors): {err}") from err


def weights_file(directory: Path) -> Path:
    """The weights of a pretrained directory: ``model.safetensors``, else ``pytorch_model.bin`` (as the mixin)."""
    for name in (WEIGHTS_NAME, PICKLE_WEIGHTS_NAME):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(
        f"{directory / WEIGHTS_NAME} does not exist (a pretrained directory holds {CONFIG_NAME} and {WEIGHTS_NAME}, "
        f"or {PICKLE_WEIGHTS_NAME})"
    )


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file, or a ``pytorch_model.bin`` read weights-only (no code runs from it)."""
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    check_torch_file(path)  # the budget, before torch.load builds anything
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and weights-only errors have many types
        raise ValueError(f"{path} cannot be read as a weights-only state dict: {err}") from err
    check_tensors(state, path)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def read_config(directory: Path) -> dict[str, Any]:
    """``config.json`` of a pretrained directory (ours or timm's); its weights must be there too."""
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{config_path} does not exist (a pretrained directory holds {CONFIG_NAME} and {WEIGHTS_NAME})"
        )
    weights_file(directory)
    try:
        config = json.loads(config_path.read_text())
        if "model_config" not in config and "architecture" not in config:
            raise KeyError("model_config")
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config_path} is not a valid mlp-mixer or timm config: {err!r}") from err
    return config


def is_ours(config: dict[str, Any]) -> bool:
    """Whether a ``config.json`` is our layout (this one, or the older nested ``model_config``) rather than timm's."""
    return "model_config" in config or config.get("architecture") == ARCHITECTURE


def adapt_stem(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Stem weights (dim, c, P, P) for ``in_channels`` inputs, as timm's ``adapt_input_conv`` adapts pretrained
    ones: one channel gets their sum (a grey image is R = G = B), more get them repeated and scaled by c/in_channels
    so that the activations keep their size."""
    c = weight.shape[1]
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    return weight.repeat(1, math.ceil(in_channels / c), 1, 1)[:, :in_channels] * (c / in_channels)


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
    from huggingface_hub.errors import EntryNotFoundError

    paths = []
    extra: dict[str, Any] = {"revision": revision} if revision else {}
    if not _hub_reachable():
        extra["local_files_only"] = True
    for filename in (CONFIG_NAME, WEIGHTS_NAME):
        try:
            try:
                paths.append(Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir, **extra)))
            except EntryNotFoundError:
                if filename != WEIGHTS_NAME or extra.get("local_files_only"):
                    raise
                paths.append(Path(hf_hub_download(repo_id, PICKLE_WEIGHTS_NAME, cache_dir=cache_dir, **extra)))
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
    pipeline_tag="image-classification",
    license=LICENSE,
):
    """huggingface_hub's ``PyTorchModelHubMixin`` in our layout, for a model with ``config()`` (the constructor's
    arguments) and ``pretrained_cfg`` (timm's view of its preprocessing)."""

    classes: list[str]
    preprocessing: Preprocessing
    source: str | None

    def pretrained_config(self) -> dict[str, Any]:
        """The ``config.json`` of this model: every constructor argument at the top (as the mixin reads them), class
        names and preprocessing (and where it came from), and what timm reads (``model_args``, ``pretrained_cfg``)."""
        arguments = self.config()
        # timm merges model_args under the caller's keywords, which timm users spell as timm does
        timm_spelling = {ours: theirs for theirs, ours in TIMM_NAMES.items()}
        config = {
            "architecture": ARCHITECTURE,
            **arguments,
            "classes": list(self.classes),
            "preprocessing": self.preprocessing.to_dict(),
            # num_classes stays at the top, where timm reads it as well
            "model_args": {timm_spelling.get(k, k): v for k, v in arguments.items() if k != "num_classes"},
            "pretrained_cfg": {k: list(v) if isinstance(v, tuple) else v for k, v in self.pretrained_cfg.items()},
        }
        return {**config, "source": self.source} if self.source else config

    def save_pretrained(self, save_directory: str | Path, *, config: Any = None, **kwargs: Any) -> str | None:
        """The mixin's ``save_pretrained`` (and so ``push_to_hub``): ``config.json``, ``model.safetensors``, a card.

        ``config`` (a dict or dataclass, as the mixin takes) is kept in ``config.json`` beside our keys; a key of
        ours that it contradicts is a ValueError, since ``config.json`` must describe these weights.
        """
        self._extra_config = self._user_config(config)
        try:
            return super().save_pretrained(save_directory, config=config, **kwargs)
        finally:
            del self._extra_config

    def _user_config(self, config: Any) -> dict[str, Any]:
        """The keys of ``config`` (or of the config this model was loaded with) that are not ours."""
        given = config is not None
        if dataclasses.is_dataclass(config):
            config = asdict(config)
        if config is None:
            config = self._hub_mixin_config if isinstance(self._hub_mixin_config, dict) else {}
        ours = json.loads(json.dumps(self.pretrained_config()))
        extra = {}
        for key, value in config.items():
            if key in ours or key in TIMM_NAMES or key == "model_config":
                if given and key in ours and json.loads(json.dumps(value)) != ours[key]:
                    raise ValueError(f"config[{key!r}] = {value!r} contradicts the model's {ours[key]!r}")
                continue
            extra[key] = value
        return extra

    def _save_pretrained(self, save_directory: Path) -> None:
        # Called by the mixin's save_pretrained (which then adds a model card) and push_to_hub; each file atomic.
        # config.json is written here, so the mixin, finding it, writes none of its own.
        from safetensors.torch import save

        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        write_bytes(save_directory / WEIGHTS_NAME, save(state, metadata={"format": "pt"}))
        write_json(save_directory / CONFIG_NAME, {**getattr(self, "_extra_config", {}), **self.pretrained_config()})

    @classmethod
    def from_pretrained(cls: type[T], pretrained_model_name_or_path: str | Path, **kwargs: Any) -> T:
        """The mixin's ``from_pretrained``: a folder or a Hub repo that ``save_pretrained`` / ``push_to_hub`` wrote.

        Every keyword of the mixin works (``force_download``, ``token``, ``cache_dir``, ``local_files_only``,
        ``revision``, ``map_location``, ``strict``), and constructor arguments override the stored ones, in our
        names or timm's: ``num_classes=5`` gives a new zero head, ``in_chans=1`` a stem adapted as timm adapts
        pretrained weights; dropout and drop-path rates simply change. In eval mode, as the mixin returns it.
        :func:`mlp_mixer.from_pretrained` takes this layout and every other source (checkpoints, ``.npz``, timm).
        """
        name = str(pretrained_model_name_or_path)
        if not Path(name).is_dir():
            repo = hub_id(name)
            if repo is None:
                raise FileNotFoundError(f"{name} is neither a folder nor a Hub id")
            pretrained_model_name_or_path = repo
            if not kwargs.get("local_files_only") and not _hub_reachable():
                # Offline: the cache only, at once (huggingface_hub would retry for ~25 s), or a message that says
                # what to fetch; a cached snapshot then loads as the folder it is.
                pretrained_model_name_or_path = hub_download(repo, kwargs.get("cache_dir"), kwargs.get("revision"))
        return super().from_pretrained(pretrained_model_name_or_path, **seed_names(kwargs))

    @classmethod
    def _from_pretrained(
        cls: type[T],
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str | torch.device = "cpu",
        strict: bool = False,
        config: dict[str, Any] | None = None,
        **arguments: Any,
    ) -> T:
        # The mixin's hook: it read config.json into ``config`` and merged its constructor arguments with the
        # caller's into ``arguments``. The weights are fetched as the mixin fetches them.
        if Path(model_id).is_dir():
            path = weights_file(Path(model_id))
        else:
            from huggingface_hub import hub_mixin
            from huggingface_hub.errors import EntryNotFoundError

            download = dict(
                revision=revision,
                cache_dir=cache_dir,
                force_download=force_download,
                token=token,
                local_files_only=local_files_only,
            )
            try:
                path = Path(hub_mixin.hf_hub_download(repo_id=model_id, filename=WEIGHTS_NAME, **download))
            except EntryNotFoundError:
                path = Path(hub_mixin.hf_hub_download(repo_id=model_id, filename=PICKLE_WEIGHTS_NAME, **download))
        if config is None:
            raise FileNotFoundError(f"{model_id} has no {CONFIG_NAME}, which states the architecture of its weights")
        config_file = Path(model_id) / CONFIG_NAME if Path(model_id).is_dir() else f"{model_id}/{CONFIG_NAME}"
        model = cls.from_state(config, read_weights(path), path, strict=strict, config_source=config_file, **arguments)
        model._hub_mixin_config = config  # what save_pretrained keeps of it (the user's keys)
        model.source = model_id
        return model.to(map_location)

    @classmethod
    def from_state(
        cls: type[T],
        config: dict[str, Any],
        state: dict[str, torch.Tensor],
        source: str | Path,
        *,
        strict: bool = True,
        config_source: str | Path | None = None,
        **overrides: Any,
    ) -> T:
        """A model from a ``config.json``-like dict (constructor arguments, ``classes``, ``preprocessing``; or
        the training checkpoint's ``model_config``) and weights, in eval mode.

        The architecture is built on the meta device and takes the tensors as they are: no random init to pay for.
        ``overrides`` are constructor arguments (ours or timm's names) that replace the stored ones; a head or stem
        that then no longer fits the weights is made anew (zero head) or adapted (:func:`adapt_stem`), as timm does.
        ``strict=False`` ignores weights the model has no place for; a missing weight is always an error.
        ``config_source``: the file ``config`` was read from, when not ``source`` (named in its errors).
        """
        stored = config.get("model_config")
        if not isinstance(stored, dict):
            names = [n for n in cls._hub_mixin_init_parameters if n != "self"]
            stored = {n: config[n] for n in names if n in config}
        overrides = seed_names(overrides)
        arguments = {**stored, **overrides}
        try:
            with torch.device("meta"):
                model = cls(**arguments)  # image_size may be a JSON list: the model takes any pair
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(f"{config_source or source} has an invalid model_config: {err}") from err
        state = {k: v.float().contiguous() if torch.is_tensor(v) else v for k, v in state.items()}
        new_head = _fit_head_and_stem(model, state, "num_classes" in overrides, "in_channels" in overrides)
        sizes = ", ".join(f"{k} {v}" for k, v in arguments.items())
        try:
            result = model.load_state_dict(state, strict=False, assign=True)
        except (RuntimeError, AttributeError) as err:  # AttributeError: a stored value that is not a tensor
            raise ValueError(f"weights in {source} do not match a Mixer with {sizes}: {err}") from err
        missing = [k for k in result.missing_keys if not (new_head and k.startswith("head."))]
        if missing or (strict and result.unexpected_keys):
            raise ValueError(
                f"weights in {source} do not match a Mixer with {sizes}: missing {missing}, "
                f"unexpected {result.unexpected_keys}"
            )
        if new_head:
            model.reset_classifier(model.num_classes)
        classes = config.get("classes") or []
        if not isinstance(classes, list | tuple) or not all(isinstance(c, str | int) for c in classes):
            raise ValueError(f"{source}: classes must be a list of names, got {str(classes)[:80]}")
        if new_head:
            classes = []  # a new head has no names yet
        elif classes and len(classes) != model.num_classes:
            raise ValueError(f"{source} stores {len(classes)} class names for a head of {model.num_classes} classes")
        model.classes = [str(c) for c in classes]
        if config.get("preprocessing"):
            stored_channels = int(stored.get("in_channels", model.in_channels))
            preprocessing = Preprocessing.from_dict(config["preprocessing"], source, stored_channels)
            model.preprocessing = (
                dataclasses.replace(preprocessing.for_channels(model.in_channels), image_size=model.image_size)
                if stored_channels != model.in_channels
                else preprocessing
            )
        model.source = str(source)
        return model.eval()


def _fit_head_and_stem(model: torch.nn.Module, state: dict[str, torch.Tensor], head: bool, stem: bool) -> bool:
    """Make ``state`` fit a model whose ``num_classes`` (``head``) or ``in_channels`` (``stem``) were overridden:
    drop a head of another size (returns True: the model needs a new one) and adapt a stem of another channel
    count, as timm does. Without an override a weight of the wrong shape stays, so loading it fails and says so."""
    expected = model.state_dict()
    heads = [k for k in state if k.startswith("head.")]
    new_head = head and any(k not in expected or state[k].shape != expected[k].shape for k in heads)
    if new_head:
        for key in heads:
            del state[key]
    weight = state.get("stem.weight")
    if stem and torch.is_tensor(weight) and weight.ndim == 4 and weight.shape[1] != model.in_channels:
        state["stem.weight"] = adapt_stem(weight, model.in_channels)
    return new_head and model.num_classes > 0
