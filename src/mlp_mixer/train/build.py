"""The run a resolved config describes (:func:`prepare_run`): the model (from scratch, ``--init-from`` or
``--resume``; :func:`build_model`), its optimizer, schedule and EMA, placed on the device and wrapped for the
processes, and the notes the user should read before it starts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .. import data as datalib
from ..model.mixer import MLPMixer
from ..model.pretrained import Preprocessing
from ..model.variants import variant_config
from ..utils.devices import native_bf16
from ..utils.threads import ThreadGovernor
from ..weights.load import load_model
from . import distributed
from .checkpointing import restore
from .config import SIZE_FIELDS, TrainConfig
from .inputs import attach_transforms, epoch_batches, mixing
from .optim import EMA, SAM, build_optimizer, build_scheduler
from .state import Run


def prepare_run(
    config: TrainConfig, splits: datalib.DataSplits, device: torch.device, checkpoint: dict[str, Any] | None
) -> tuple[Run, list[str]]:
    """The model, optimizer, schedule and EMA of a resolved config, restored from ``checkpoint`` if any; and the
    notes for the user.

    Args:
        config: resolved settings (:func:`~.config.resolve_config`); ``--amp`` and ``--compile`` are switched off
            in the returned run where they cannot help, with a note saying so.
        splits: the opened data (:func:`~.inputs.open_data`); its transforms are attached here.
        device: this process's device (:func:`~.distributed.process_device`).
        checkpoint: the ``--resume`` checkpoint (:func:`~.checkpointing.resume_config`), or None.
    """
    torch.manual_seed(config.seed)  # the initial weights too (torch's default seed differs in every process)
    model, preprocessing, notes = build_model(config, splits, checkpoint)
    if config.freeze_backbone:
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith("head.")
    attach_transforms(splits, config, preprocessing)
    if config.amp and not native_bf16(device):
        where = torch.backends.cpu.get_cpu_capability() if device.type == "cpu" else device.type.upper()
        notes.append(f"bf16 autocast (--amp): no native bf16 here ({where}); training in fp32 instead")
        config = config.replace(amp=False)
    if config.compile and device.type == "cpu":
        # Measured with `mlp-mixer bench` (benchmarks/results/bench_cpu.md): a compiled CPU training step of the
        # small config took 673 ms against 611 ms eager, so the flag would slow down the run it was meant to speed up.
        notes.append("--compile: on CPU a compiled training step is slower than eager (docs/train.md); training eager")
        config = config.replace(compile=False)
    if config.fsdp and distributed.world_size() == 1:
        notes.append("--fsdp: one process, nothing to shard (start several with torchrun); training unsharded")
    torch.manual_seed(config.seed)
    model.to(device)
    forward = distributed.wrap_model(model, device, fsdp=config.fsdp)  # DDP or FSDP2 under torchrun
    forward = torch.compile(forward) if config.compile else forward
    steps_per_epoch = len(epoch_batches(len(splits.train), config.batch_size, config.seed, 0))
    optimizer = build_optimizer(model, config, device)
    run = Run(
        steps_per_epoch=steps_per_epoch,
        model=model,
        forward=forward,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, config, steps_per_epoch),
        config=config,
        preprocessing=preprocessing,
        device=device,
        ema=EMA(model, config.ema) if config.ema > 0 else None,
        sam=SAM(config.sam, config.sam_every, config.sam_alpha) if config.sam > 0 else None,
        mix=mixing(config, model.num_classes),
        threads=ThreadGovernor(torch.get_num_threads()) if device.type == "cpu" and config.threads is None else None,
        classes=list(splits.classes),
    )
    if checkpoint is not None:
        restore(run, checkpoint)
    return run, notes


def build_model(
    config: TrainConfig, splits: datalib.DataSplits, checkpoint: dict[str, Any] | None = None
) -> tuple[MLPMixer, Preprocessing, list[str]]:
    """The model to train, its preprocessing and notes for the user.

    From scratch: a variant or explicit sizes, with in_channels and num_classes from the data. ``--init-from``:
    the stored model with a zero head for the data's classes, optionally at a new ``--image-size``
    (:func:`mlp_mixer.weights.resize.resize_model`). ``--resume``: exactly the checkpoint's model.

    Args:
        config: resolved settings; explicit size options must agree with a checkpoint's model.
        splits: the data, which gives the classes (and, from scratch, the input channels).
        checkpoint: the ``--resume`` checkpoint, or None.

    Raises:
        ValueError: ``--num-classes``, the classes or a size option disagree with the data or the checkpoint.
    """
    notes = []
    num_classes = len(splits.classes)
    if config.num_classes is not None and config.num_classes != num_classes:
        raise ValueError(
            f"--num-classes {config.num_classes} does not match the data: {num_classes} classes "
            f"({_names(splits.classes)})"
        )
    extra = dict(dropout=config.dropout, drop_path=config.drop_path)
    if checkpoint is not None:  # --resume
        model = MLPMixer(**{**checkpoint["model_config"], **extra})
        stored = list(checkpoint.get("classes", []))
        if stored != splits.classes:
            raise ValueError(
                f"checkpoint {config.resume} was trained on {len(stored)} classes ({_names(stored)}), the data has "
                f"{num_classes} ({_names(splits.classes)})"
            )
        _check_sizes(config, checkpoint["model_config"], f"checkpoint {config.resume}")
        preprocessing = Preprocessing.from_dict(checkpoint["preprocessing"])
        return model, preprocessing, notes
    if config.init_from is not None:
        loaded = load_model(config.init_from)
        stored_config = loaded.config()
        _check_sizes(config.replace(image_size=None), stored_config, f"--init-from {config.init_from}")
        model = MLPMixer(**{**stored_config, **extra})
        model.load_state_dict(loaded.state_dict())
        model.preprocessing = loaded.preprocessing
        if config.image_size is not None and (config.image_size, config.image_size) != tuple(model.image_size):
            from ..weights.resize import resize_model  # imported here: only fine-tuning at a new resolution needs it

            model = resize_model(model, config.image_size, method="auto")
            notes.append(f"resized the model from {stored_config['image_size']} to {list(model.image_size)}")
        model.reset_classifier(num_classes)
        notes.append(f"initialised from {config.init_from}; new zero head for {num_classes} classes")
        return model, model.preprocessing, notes
    sizes = _sizes_from(config)
    in_channels = config.in_channels or splits.in_channels
    model = MLPMixer(
        in_channels=in_channels,
        num_classes=num_classes,
        gelu=config.gelu,
        **{k: sizes[k] for k in SIZE_FIELDS},
        **extra,
    )
    files = splits.native_size is None
    preprocessing = Preprocessing(
        image_size=tuple(model.image_size),
        mean=(0.5,) * in_channels,  # pixels to [-1, 1], as the official checkpoints
        std=(0.5,) * in_channels,
        crop_pct=0.875 if files else 1.0,  # in-memory datasets are already framed: resize the whole image
    )
    return model, preprocessing, notes


def _sizes_from(config: TrainConfig) -> dict[str, Any]:
    base = variant_config(config.model) if config.model else {}
    for key in SIZE_FIELDS:
        if getattr(config, key) is not None:
            base[key] = getattr(config, key)
    missing = [k for k in SIZE_FIELDS if k not in base]
    if missing:
        raise ValueError(f"the model needs {', '.join('--' + m.replace('_', '-') for m in missing)} (or --model)")
    return base


def _names(classes: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(classes[:limit])
    return shown + (f", ... ({len(classes)} in all)" if len(classes) > limit else "")


def _check_sizes(config: TrainConfig, stored: dict[str, Any], source: str) -> None:
    """Explicit size options must agree with a checkpoint's model (fine-tuning changes only head and resolution)."""
    for key in (*SIZE_FIELDS, "in_channels", "gelu"):
        wanted = getattr(config, key)
        have = stored[key]
        if key == "image_size" and wanted is not None:
            wanted = [wanted, wanted]
        if wanted is not None and (list(have) if isinstance(have, (list, tuple)) else have) != wanted:
            raise ValueError(f"{source} holds a model with {key} {have}, but the options ask for {key} {wanted}")
    if config.model is not None:
        variant = variant_config(config.model)
        for key in SIZE_FIELDS[:-1]:  # a variant's image size is a default, not part of its architecture
            if variant[key] != stored[key]:
                raise ValueError(
                    f"{source} holds a model with {key} {stored[key]}, not --model {config.model}'s {variant[key]}"
                )
