"""The record of a run as it trains: :class:`Run` (what every step needs, and where the run stands) and
:class:`EpochStats` (what one epoch measured). :mod:`.build` makes a Run, :mod:`.checkpointing` saves and restores
it, :mod:`.loop` advances it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..model.mixer import MLPMixer
from ..model.pretrained import Preprocessing
from ..utils.threads import ThreadGovernor
from .config import TrainConfig
from .optim import EMA, SAM


@dataclass
class Run:
    """What every step of a run needs, built once by :func:`.build.prepare_run`; ``step`` and ``batch`` advance."""

    model: MLPMixer  # the weights being trained (unwrapped)
    forward: Callable[[torch.Tensor], torch.Tensor]  # the model as the step calls it: DDP/FSDP, compiled
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    config: TrainConfig
    preprocessing: Preprocessing
    device: torch.device
    ema: EMA | None = None
    sam: SAM | None = None  # --sam: the gradients' replacement, with LookSAM's reused direction
    mix: Callable | None = None  # MixUp / CutMix
    threads: ThreadGovernor | None = None  # CPU threads follow the free cores (None: --threads pinned them)
    classes: list[str] = field(default_factory=list)
    epoch: int = 0  # epochs completed
    steps_per_epoch: int = 0
    step: int = 0  # optimizer steps done
    batch: int = 0  # optimizer steps done in the current epoch (non-zero after an interruption)
    history: list[dict[str, Any]] = field(default_factory=list)  # one log row per completed epoch
    best: dict[str, Any] = field(default_factory=lambda: {"val_top1": -1.0, "epoch": 0})

    @property
    def eval_model(self) -> MLPMixer:
        return self.ema.model if self.ema is not None else self.model


@dataclass
class EpochStats:
    """What one epoch of :func:`.loop.train_one_epoch` measured, summed over processes."""

    loss: float = 0.0
    top1: float = 0.0
    images: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # CPU time of this process (all threads): what the epoch costs on a quiet machine
    skipped: list[str] = field(default_factory=list)
    stopped: bool = False  # interrupted before the end of the epoch
    notes: list[str] = field(default_factory=list)  # what changed during the epoch (the thread count)
