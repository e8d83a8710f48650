"""What a run measures: the cases of the plan (the default one, or one filtered by the command line) and the row
each measurement becomes.

Tasks: ``infer`` (images/s at ``--batch-size``), ``latency`` (batch 1), ``train`` (forward, backward and an AdamW
step at ``--batch-size``) and ``memory`` (peak memory of that training step, with and without activation
checkpointing).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .options import MODELS, MODES, TASKS
from .peers import bench_config


@dataclass
class Case:
    """One block of the plan: every model x mode x task of one configuration."""

    config: str
    models: tuple[str, ...] = MODELS
    modes: tuple[str, ...] = MODES
    tasks: tuple[str, ...] = TASKS
    repeats: int | None = None  # fewer timed calls for the largest sizes; None: the run's --repeats


# The default run: every peer at the small size, then what the targets need at S/16 and B/16 (batch 32 at B/16
# is ~0.8 TFLOP a call), sized so that an idle 2-core CPU finishes in about 18 minutes. The B/16 training step, a
# target, keeps the run's repeats: with 3, two runs gave 1.12x and 0.95x timm (docs/bench.md).
DEFAULT_PLAN = (
    Case("small", MODELS, ("eager", "bf16", "int8")),
    Case("small", ("ours", "timm"), ("compile",), ("infer", "latency", "train")),
    Case("S/16", MODELS, ("eager",), ("infer", "latency")),
    Case("S/16", ("ours", "ours-tanh", "timm"), ("eager",), ("train",)),
    Case("S/16", ("ours", "timm"), ("eager",), ("memory",)),
    Case("S/16", ("ours", "timm"), ("bf16", "int8"), ("infer",)),
    Case("B/16", ("ours", "ours-tanh", "timm"), ("eager", "compile", "bf16"), ("infer",)),
    Case("B/16", ("ours", "timm"), ("eager",), ("latency", "memory"), repeats=3),
    Case("B/16", ("ours", "timm"), ("eager",), ("train",)),
    Case("L/16", ("ours", "timm"), ("eager",), ("latency",), repeats=3),
)


@dataclass
class Row:
    """One measurement: a model in a mode doing a task, with its median and everything derived from it."""

    config: str
    model: str
    mode: str
    task: str
    batch_size: int
    status: str = "ok"  # or "skipped: <why>"
    median_s: float | None = None
    times_s: list[float] = field(default_factory=list)
    first_call_s: float | None = None  # includes compilation for "compile"
    images_per_s: float | None = None
    gflops: float | None = None  # achieved, from counted MACs
    gemm_fraction: float | None = None  # of this machine's GEMM rate on the model's shapes, same dtype
    checkpointing: bool = False
    peak_mib: float | None = None
    max_abs_diff: float | None = None  # logits against ours, same weights, fp32 eager


def plan_from_filters(
    configs: list[str] | None, models: list[str] | None, modes: list[str] | None, tasks: list[str] | None
) -> tuple[Case, ...]:
    """The default plan, or the full product of whatever was filtered (unfiltered axes take every value)."""
    for given, valid, option in ((models, MODELS, "--models"), (modes, MODES, "--modes"), (tasks, TASKS, "--tasks")):
        unknown = sorted(set(given or ()) - set(valid))
        if unknown:
            raise ValueError(f"{option}: unknown {', '.join(unknown)}; expected some of {', '.join(valid)}")
    for name in configs or ():
        bench_config(name)  # raises ValueError naming the valid variants
    if not any((configs, models, modes, tasks)):
        return DEFAULT_PLAN
    return tuple(
        Case(name, tuple(models or MODELS), tuple(modes or MODES), tuple(tasks or TASKS))
        for name in configs or dict.fromkeys(case.config for case in DEFAULT_PLAN)
    )
