"""The performance targets: read from a TOML file (``benchmarks/targets.toml`` of the source checkout unless
``--targets`` names another), and judged against a run's rows.

The library holds no thresholds: what counts as fast enough is the project's claim about its own code, kept with
the other benchmark data. A target is judged only at the configurations and batch size its file names; on a tiny
model the same ratios mean something else, so a run that measures none of them (the ``--quick`` smoke run) lists
them as not run, not as missed.
"""

from __future__ import annotations

import statistics
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .options import MODELS, MODES, TASKS
from .peers import bench_config
from .plan import Row

DEFAULT_TARGETS = Path("benchmarks") / "targets.toml"
# The source checkout's root, from src/mlp_mixer/bench/targets.py; an installed wheel has no benchmarks/ there.
_CHECKOUT = Path(__file__).resolve().parents[3]
# speedup: how many times faster `row` is than `reference` (the median of per-repeat time ratios);
# gemm_fraction: `row`'s FLOP rate over the GEMM rate timed beside it; memory_cut: 1 - `row`'s peak / `reference`'s.
MEASURES = ("speedup", "gemm_fraction", "memory_cut")
_FIELDS = ("name", "description", "required", "configs", "batch", "measure", "row", "reference")

RowKey = tuple[str, str, str, bool]  # model, mode, task, checkpointing


@dataclass(frozen=True)
class Target:
    """One ``[[target]]`` of the file: what it compares, the least value that meets it, and where it is judged."""

    name: str
    description: str
    required: float
    configs: tuple[str, ...]
    batch: int
    measure: str
    row: RowKey
    reference: RowKey | None = None  # none for gemm_fraction


def find_targets(path: str | Path | None = None) -> Path | None:
    """The targets file a run reads: ``path`` if given, else ``benchmarks/targets.toml`` in the current directory,
    else in the source checkout; None when there is none (an installed package run elsewhere).

    Raises:
        FileNotFoundError: ``path`` was given and is not a file.
    """
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--targets {path}: no such file")
        return Path(path)
    for candidate in (DEFAULT_TARGETS, _CHECKOUT / DEFAULT_TARGETS):
        if candidate.is_file():
            return candidate
    return None


def _row_key(spec: Any, where: str, field: str) -> RowKey:
    """``"model mode task"``, or ``"model mode task checkpointing"``, as the row key it names."""
    words = spec.split() if isinstance(spec, str) else []
    shaped = len(words) in (3, 4) and words[3:] in ([], ["checkpointing"])
    if not shaped or words[0] not in MODELS or words[1] not in MODES or words[2] not in TASKS:
        raise ValueError(
            f"{where}: {field} = {spec!r}; expected 'MODEL MODE TASK' or 'MODEL MODE TASK checkpointing' with MODEL"
            f" of {', '.join(MODELS)}, MODE of {', '.join(MODES)}, TASK of {', '.join(TASKS)}"
        )
    return words[0], words[1], words[2], len(words) == 4


def load_targets(path: str | Path) -> list[Target]:
    """The ``[[target]]`` tables of a TOML file, checked.

    Args:
        path: a TOML file whose ``[[target]]`` tables each have ``name``, ``description``, ``required`` (a number),
            ``configs`` (bench configuration names), ``batch``, ``measure`` (one of :data:`MEASURES`), ``row``
            and, unless the measure is ``gemm_fraction``, ``reference`` (each ``"MODEL MODE TASK"``, optionally
            followed by ``checkpointing``).

    Raises:
        ValueError: naming the file, the target and the field that is wrong, and what was expected.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML ({err})") from None
    entries = data.get("target")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{path}: expected one or more [[target]] tables, found none")
    targets = []
    for number, entry in enumerate(entries, 1):
        where = f"{path}: target {entry.get('name', number)!r}"
        measure = entry.get("measure")
        needed = set(_FIELDS) - ({"reference"} if measure == "gemm_fraction" else set())
        missing, unknown = sorted(needed - set(entry)), sorted(set(entry) - set(_FIELDS))
        if missing or unknown:
            problems = [f"missing {', '.join(missing)}"] if missing else []
            problems += [f"unknown {', '.join(unknown)} (expected fields: {', '.join(_FIELDS)})"] if unknown else []
            raise ValueError(f"{where}: {'; '.join(problems)}")
        if not all(isinstance(entry[k], str) and entry[k] for k in ("name", "description")):
            raise ValueError(f"{where}: name and description must be non-empty strings")
        if measure not in MEASURES:
            raise ValueError(f"{where}: measure = {measure!r}; expected one of {', '.join(MEASURES)}")
        required, batch, configs = entry["required"], entry["batch"], entry["configs"]
        if not isinstance(required, int | float) or isinstance(required, bool) or required <= 0:
            raise ValueError(f"{where}: required = {required!r}; expected a positive number")
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise ValueError(f"{where}: batch = {batch!r}; expected a positive integer")
        if not isinstance(configs, list) or not configs or not all(isinstance(c, str) for c in configs):
            raise ValueError(f"{where}: configs = {configs!r}; expected a list of configuration names")
        for config in configs:
            try:
                bench_config(config)
            except ValueError as err:
                raise ValueError(f"{where}: configs: {err}") from None
        reference = entry.get("reference")
        targets.append(
            Target(
                name=entry["name"],
                description=entry["description"],
                required=float(required),
                configs=tuple(configs),
                batch=batch,
                measure=measure,
                row=_row_key(entry["row"], where, "row"),
                reference=None if reference is None else _row_key(reference, where, "reference"),
            )
        )
    return targets


def _find(rows: list[Row], config: str, model: str, mode: str, task: str, checkpointing: bool = False) -> Row | None:
    for row in rows:
        key = (row.config, row.model, row.mode, row.task, row.checkpointing)
        if key == (config, model, mode, task, checkpointing) and row.status == "ok":
            return row
    return None


def _ratios(slow: Row, fast: Row) -> list[float]:
    """Per-repeat time ratios when both were timed in the same interleaved loop, else the ratio of medians."""
    if slow.times_s and len(slow.times_s) == len(fast.times_s):
        return [s / f for s, f in zip(slow.times_s, fast.times_s, strict=True)]
    return [slow.median_s / fast.median_s]


def speedup(slow: Row, fast: Row) -> float:
    """How many times faster ``fast`` is: the median of per-repeat time ratios when both were timed in the same
    interleaved loop (neighbours in time share the load), else the ratio of medians."""
    return statistics.median(_ratios(slow, fast))


def check_targets(rows: list[Row], machine: dict[str, Any], targets: Sequence[Target]) -> list[dict[str, Any]]:
    """Each target at each configuration it is defined for that this run measured (at its batch), with the gap; a
    target measured nowhere gets one "not run" entry naming where it is defined.

    Args:
        rows: the run's measurements.
        machine: :func:`~mlp_mixer.utils.devices.machine_info` (``native_bf16`` says why a bf16 target did not run).
        targets: what to judge, from :func:`load_targets`.
    """
    results = []
    for target in targets:
        found = []
        for config in target.configs:
            a = _find(rows, config, *target.row)
            b = _find(rows, config, *target.reference) if target.reference else a
            if a is None or b is None or {a.batch_size, b.batch_size} != {target.batch}:
                continue
            spread = None
            if target.measure == "gemm_fraction":
                measured = a.gemm_fraction
            elif target.measure == "memory_cut":
                measured = 1 - a.peak_mib / b.peak_mib
            else:
                measured, ratios = speedup(b, a), _ratios(b, a)
                spread = [min(ratios), max(ratios)]
            required = target.required
            status = "met" if measured >= required else f"missed by {(required - measured) / required:.0%}"
            found.append((config, measured, spread, status))
        if not found:
            modes = {target.row[1], target.reference[1] if target.reference else None}
            if "bf16" in modes and not machine["native_bf16"]:
                status = "skipped: no native bf16"
            else:
                status = f"not run (defined for {' and '.join(target.configs)} at batch {target.batch})"
            found.append((None, None, None, status))
        for config, measured, spread, status in found:
            results.append(dict(target=target.name, description=target.description, config=config,
                                required=target.required, measured=measured, spread=spread, status=status,
                                configs=list(target.configs), batch=target.batch))  # fmt: skip
    return results
