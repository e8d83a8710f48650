"""A run's results as people and programs read them: the Markdown tables printed by ``mlp-mixer bench``, and the
JSON, CSV, Markdown and PNG files it writes."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import torch

from ..analysis.plots import save_figure
from ..utils.files import write_text
from .plan import Row
from .targets import DEFAULT_TARGETS


def format_rows(rows: list[Row]) -> str:
    """A Markdown table of the measurements (skipped ones included, with why)."""
    lines = [
        "| config | model | mode | task | batch | median ms | images/s | GFLOP/s | of GEMM | peak MiB | max diff |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def fmt(value: float | None, spec: str) -> str:
        return "" if value is None else format(value, spec)

    for r in rows:
        if r.status != "ok":
            lines.append(f"| {r.config} | {r.model} | {r.mode} | {r.task} | {r.batch_size} | {r.status} ||||||")
            continue
        task = r.task + (" (checkpointing)" if r.checkpointing else "")
        lines.append(
            f"| {r.config} | {r.model} | {r.mode} | {task} | {r.batch_size}"
            f" | {fmt(r.median_s and r.median_s * 1e3, '.1f')} | {fmt(r.images_per_s, '.1f')}"
            f" | {fmt(r.gflops, '.1f')} | {fmt(r.gemm_fraction, '.0%')}"
            f" | {fmt(r.peak_mib, '.0f')} | {fmt(r.max_abs_diff, '.1e')} |"
        )
    return "\n".join(lines)


def format_report(result: dict[str, Any]) -> str:
    """The machine, the measurements and the targets, as printed by ``mlp-mixer bench``."""
    m = result["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    header = (
        f"{m['gpu'] or m['cpu']} ({m['cpu_capability']}, flags: {' '.join(m['cpu_bf16_flags']) or 'none'}, "
        f"native bf16: {m['native_bf16']}{', our fp32 GEMMs: ' + m['cpu_gemm'] if 'cpu_gemm' in m else ''}), "
        f"{m['threads']} threads of {m['cores']} cores; {versions}; "
        f"malloc: {m.get('malloc', 'default')}; load average {m['loadavg']} before, {m['loadavg_after']} after; "
        f"{m['seconds']} s; "
        f"batch {result['batch_size']}, medians of {result['repeats']} timed calls (fewer where the plan says)"
    )
    rows = [Row(**r) for r in result["rows"]]
    return f"{header}\n\n{format_rows(rows)}\n\n{format_targets(result['targets'])}"


def format_targets(targets: list[dict[str, Any]]) -> str:
    """The targets this run measured as a table; the others in one line that says where they are defined."""
    if not targets:
        return (
            f"No targets were judged: no targets file ({DEFAULT_TARGETS} in the current directory or the source"
            " checkout; `mlp-mixer bench --targets PATH` reads another)."
        )
    measured = [t for t in targets if t["measured"] is not None]
    lines = []
    if measured:
        lines += ["| target | config | required | measured (per-repeat range) | status |", "|---|---|---:|---:|---|"]
    for t in measured:
        value = f"{t['measured']:.2f}"
        if t.get("spread"):
            value += f" ({t['spread'][0]:.2f}-{t['spread'][1]:.2f})"
        lines.append(f"| {t['description']} | {t['config']} | {t['required']:.2f} | {value} | {t['status']} |")
    others = [t for t in targets if t["measured"] is None]
    if others:
        configs = " and ".join(dict.fromkeys(c for t in targets for c in t["configs"]))
        batches = " or ".join(dict.fromkeys(str(t["batch"]) for t in targets))
        lines += [
            "" if measured else None,
            f"Targets are checked only where they are defined ({configs} at batch"
            f" {batches}; `mlp-mixer bench` with no options measures them all). Not measured here:",
        ]
        lines += [f"- {t['description']}: {t['status']}" for t in others]
    return "\n".join(line for line in lines if line is not None)


def write_results(result: dict[str, Any], output: str | Path, stem: str, plot: bool = True) -> list[Path]:
    """``<stem>.json`` (everything), ``.csv`` (one line per row), ``.md`` (the tables) and ``.png`` (images/s)."""
    output = Path(output)
    paths = [write_text(output / f"{stem}.json", json.dumps(result, indent=1) + "\n")]
    paths.append(write_text(output / f"{stem}.md", format_report(result) + "\n"))
    buffer = io.StringIO()
    names = [f for f in Row.__dataclass_fields__ if f != "times_s"]
    writer = csv.DictWriter(buffer, fieldnames=names, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(result["rows"])
    paths.append(write_text(output / f"{stem}.csv", buffer.getvalue()))
    if plot:
        paths.append(plot_results(result, output / f"{stem}.png"))
    return paths


def plot_results(result: dict[str, Any], path: Path) -> Path:
    """One panel per (config, task): images/s of each model in each mode, grouped bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["status"] == "ok" and r["images_per_s"]]
    panels = list(dict.fromkeys((r["config"], r["task"]) for r in rows))
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(3.2 * max(len(panels), 1), 3.6), squeeze=False)
    for ax, (config, task) in zip(axes[0], panels, strict=False):
        here = [r for r in rows if (r["config"], r["task"]) == (config, task)]
        modes = list(dict.fromkeys(r["mode"] for r in here))
        models = list(dict.fromkeys(r["model"] for r in here))
        width = 0.8 / len(models)
        for j, model in enumerate(models):
            values = [
                next((r["images_per_s"] for r in here if (r["model"], r["mode"]) == (model, m)), 0) for m in modes
            ]
            ax.bar([i + j * width for i in range(len(modes))], values, width, label=model)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(modes))], modes, fontsize=8)
        ax.set_title(f"{config} {task} (batch {here[0]['batch_size']})", fontsize=9)
        ax.set_ylabel("images/s", fontsize=8)
    if panels:
        axes[0][0].legend(fontsize=7)
    machine = result["machine"]
    fig.suptitle(
        f"{machine['gpu'] or machine['cpu']}, {machine['threads']} threads, torch {torch.__version__}", fontsize=9
    )
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
