"""A run's checkpoint: the plain dict :func:`make_checkpoint` writes (weights, optimizer, schedule, random state,
position, history), :func:`restore` puts back into a :class:`~.state.Run`, and :func:`resume_config` reads for
``--resume`` (the stored settings under the ones given)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..weights.checkpoint import load_checkpoint, resolve_checkpoint
from . import distributed
from .config import FIELDS, TrainConfig
from .state import Run


def rng_states(device: torch.device) -> dict[str, Any]:
    """The global generators' states (CPU, and the device's on CUDA), as a checkpoint stores them."""
    states: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states: dict[str, Any], device: torch.device) -> None:
    """Put back what :func:`rng_states` returned (a CUDA state only on a CUDA device)."""
    if "torch" in states:
        torch.set_rng_state(states["torch"])
    if "cuda" in states and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)


def make_checkpoint(run: Run) -> dict[str, Any]:
    """The plain dict of :mod:`mlp_mixer.weights.checkpoint`'s layout, as the run stands. ``model`` holds the
    weights to use (the EMA when enabled); ``train_model`` the raw training weights when they differ."""
    checkpoint = {
        "model": distributed.full_state_dict(run.eval_model),
        "model_config": run.model.config(),
        "classes": list(run.classes),
        "preprocessing": run.preprocessing.to_dict(),
        "optimizer": distributed.full_optimizer_state(run.optimizer),  # FSDP: gathered, as one process has it
        "scheduler": run.scheduler.state_dict(),
        "epoch": run.epoch,
        "batch": run.batch,
        "step": run.step,
        "rng": rng_states(run.device),
        "config": dataclasses.asdict(run.config),
        "history": run.history,
        "best": run.best,
    }
    if run.ema is not None:
        checkpoint["train_model"] = distributed.full_state_dict(run.model)
    if run.sam is not None and run.sam.flat is not None:
        checkpoint["sam_direction"] = [v.cpu() for v in run.sam.flat]
    return checkpoint


def restore(run: Run, checkpoint: dict[str, Any]) -> None:
    """Put a ``--resume`` checkpoint's weights, optimizer, schedule, random state and progress into ``run``.

    Raises:
        ValueError: the optimizer state does not fit ``--opt``, or the run already did ``--epochs``.
    """
    config = run.config
    distributed.load_model_state(run.model, checkpoint.get("train_model", checkpoint["model"]))
    if run.ema is not None:
        run.ema.model.load_state_dict(checkpoint["model"])
    try:
        distributed.load_optimizer_state(run.optimizer, checkpoint["optimizer"])
    except (ValueError, KeyError) as err:
        raise ValueError(f"the optimizer state in {config.resume} does not fit --opt {config.opt}: {err}") from err
    run.scheduler.load_state_dict(checkpoint["scheduler"])
    set_rng_states(checkpoint.get("rng", {}), run.device)
    run.epoch, run.step, run.batch = checkpoint["epoch"], checkpoint["step"], checkpoint["batch"]
    run.history, run.best = list(checkpoint["history"]), dict(checkpoint["best"])
    if run.sam is not None and "sam_direction" in checkpoint:
        run.sam.flat = [v.to(run.device) for v in checkpoint["sam_direction"]]
    if run.epoch >= config.epochs:
        raise ValueError(
            f"{config.resume} already finished {run.epoch} epochs; pass --epochs N > {run.epoch} to train longer"
        )


def resume_config(config: TrainConfig) -> tuple[TrainConfig, dict[str, Any] | None]:
    """With ``--resume``: the stored settings under the ones given, and the checkpoint (a run folder: its
    ``last.pt``). Without: ``(config, None)``.

    Raises:
        ValueError: ``--init-from`` given too, or the checkpoint holds weights only.
    """
    if config.resume is None:
        return config, None
    if config.init_from is not None:
        raise ValueError("--init-from and --resume cannot be combined: --resume already holds the weights")
    path = resolve_checkpoint(config.resume, ("last.pt",))
    checkpoint = load_checkpoint(path)
    if "optimizer" not in checkpoint or "config" not in checkpoint:
        raise ValueError(f"checkpoint {path} holds weights only (no optimizer state): use --init-from")
    stored = TrainConfig(**{k: v for k, v in checkpoint["config"].items() if k in FIELDS})
    overrides = {k: getattr(config, k) for k in FIELDS if getattr(config, k) is not None}
    config = stored.replace(**{**overrides, "resume": str(path), "output": config.output or str(path.parent)})
    return config, checkpoint
