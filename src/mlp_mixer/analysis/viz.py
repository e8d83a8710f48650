"""Pictures of what a Mixer learned, in one folder: token-mixing weights, stem filters, and the run's curves.

The paper's Figure 5 shows each hidden unit of a token-mixing MLP's first layer as an image on the patch grid:
unit k of ``fc1`` has one weight per token (patch), so its row of the (D_S, S) weight, reshaped row-major to
the (h, w) grid, shows which patches it adds up. Units are paired with their most opposite partner and the
pairs sorted by spatial frequency, in a diverging colormap scaled per unit. The stem's filters (the
per-patch linear embedding) are shown the same way. When the checkpoint sits in a training run directory,
the run's curves and confusion matrix are copied or regenerated next to them, and ``index.md`` lists all.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..model.mixer import MLPMixer
from ..utils.files import write_text
from ..weights.load import load_model
from .plots import plot_confusion, plot_curves, read_log, save_figure

DIVERGING = "RdBu_r"  # red positive, blue negative, white zero


def token_mixing_units(model: MLPMixer, block: int) -> np.ndarray:
    """The first token-mixing layer of ``block`` as images: (D_S, h, w), one weight per patch of the grid.

    Tokens are the stem's output flattened row-major (h outer), so a row of the (D_S, S) weight reshapes
    directly to the (h, w) patch grid.
    """
    if not -model.depth <= block < model.depth:
        raise ValueError(f"block {block} is out of range for a model with depth {model.depth}")
    weight = model.blocks[block].token_mixing.fc1.weight.detach().float().cpu().numpy()  # (D_S, S)
    return weight.reshape(-1, *model.grid_size)  # (D_S, S) -> (D_S, h, w)


def spatial_frequency(images: np.ndarray) -> np.ndarray:
    """Mean radial frequency of each (h, w) image's power spectrum (mean removed): a smoothness score per unit."""
    h, w = images.shape[-2:]
    power = np.abs(np.fft.fft2(images - images.mean(axis=(-2, -1), keepdims=True))) ** 2
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij"))  # cycles per patch
    return (power * radius).sum(axis=(-2, -1)) / np.maximum(power.sum(axis=(-2, -1)), 1e-30)


def pair_units(units: np.ndarray) -> list[list[int]]:
    """Pair each unit with its most anti-correlated partner (greedily), then sort the pairs by frequency.

    The paper pairs units "to highlight the emergence of kernels of opposing phase" and sorts the pairs by
    filter frequency; an odd unit out is a pair of one.
    """
    flat = units.reshape(len(units), -1).astype(np.float64)
    flat = flat - flat.mean(axis=1, keepdims=True)
    flat /= np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
    corr = flat @ flat.T
    i, j = np.triu_indices(len(units), k=1)
    taken = np.zeros(len(units), dtype=bool)
    pairs = []
    for k in np.argsort(corr[i, j], kind="stable"):  # most negative correlation first
        a, b = i[k], j[k]
        if not taken[a] and not taken[b]:
            taken[a] = taken[b] = True
            pairs.append([int(a), int(b)])
    pairs += [[int(a)] for a in np.flatnonzero(~taken)]
    freq = spatial_frequency(units)
    pairs.sort(key=lambda p: float(np.mean(freq[p])))
    for p in pairs:  # within a pair, the lower-frequency unit first
        p.sort(key=lambda a: float(freq[a]))
    return pairs


def _scale_symmetric(images: np.ndarray) -> np.ndarray:
    # Per-image symmetric scaling to [-1, 1]: zero stays at the colormap's centre
    peak = np.abs(images).reshape(len(images), -1).max(axis=1)
    return images / np.maximum(peak, 1e-12).reshape(-1, *[1] * (images.ndim - 1))


def mosaic(groups: Sequence[np.ndarray], columns: int, gap: int = 1) -> np.ndarray:
    """Tile groups of same-size images (each group (n, h, w[, 3]) kept side by side) on a NaN background.

    Images within a group are ``gap`` pixels apart, groups ``3 * gap``; NaN draws as the figure background.
    """
    h, w = groups[0].shape[1:3]
    per_group = max(len(g) for g in groups)
    group_w = per_group * w + (per_group - 1) * gap
    rows = -(-len(groups) // columns)
    canvas = np.full(
        (rows * h + (rows - 1) * 3 * gap, columns * group_w + (columns - 1) * 3 * gap, *groups[0].shape[3:]), np.nan
    )
    for g, images in enumerate(groups):
        top, left = (g // columns) * (h + 3 * gap), (g % columns) * (group_w + 3 * gap)
        for k, image in enumerate(images):
            x = left + k * (w + gap)
            canvas[top : top + h, x : x + w] = image
    return canvas


def _evenly(items: list, limit: int) -> list:
    # Keep ``limit`` items spread over the whole (frequency-sorted) list rather than only its start
    if limit <= 0 or len(items) <= limit:
        return items
    return [items[k] for k in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def _show(canvas: np.ndarray, title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = max(1.0, min(12.0, 900 / canvas.shape[1]))  # screen pixels per weight, ~900 px wide
    fig = plt.figure(figsize=(canvas.shape[1] * scale / 100, canvas.shape[0] * scale / 100))
    ax = fig.add_axes((0, 0, 1, 1))
    colormap = matplotlib.colormaps[DIVERGING].with_extremes(bad="white")
    if canvas.ndim == 3:  # RGB: NaN gaps to white
        canvas = np.where(np.isnan(canvas), 1.0, canvas)
    ax.imshow(canvas, cmap=colormap, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path, bbox_inches="tight", facecolor="white")


def plot_token_mixing(model: MLPMixer, block: int, path: str | Path, max_units: int = 64) -> Path:
    """Write the paper's Figure 5 for one block: token-mixing units as paired, frequency-sorted grid images.

    Args:
        model: the Mixer.
        block: which block (negative counts from the end).
        path: the PNG to write.
        max_units: show at most this many units (pairs spread evenly over the frequency order); 0 for all.
    """
    units = token_mixing_units(model, block)
    pairs = _evenly(pair_units(units), max(1, max_units // 2) if max_units > 0 else 0)
    shown = sum(len(p) for p in pairs)
    groups = [_scale_symmetric(units[p]) for p in pairs]
    h, w = model.grid_size
    columns = max(1, min(len(groups), round(np.sqrt(len(groups) * h / (2 * w)) * 1.6)))  # a landscape grid
    index = block % model.depth
    title = (
        f"block {index} token-mixing units: {shown} of {len(units)} (D_S), each on the {h}x{w} patch grid; "
        "opposite-phase pairs, sorted by frequency; red +, blue -, scaled per unit"
    )
    return _show(mosaic(groups, columns, gap=max(1, h // 8)), title, Path(path))


def plot_stem_filters(model: MLPMixer, path: str | Path, max_filters: int = 64) -> Path:
    """Write the stem's per-patch filters (the linear patch embedding) as images, sorted by frequency.

    RGB models show each filter in colour, mapped per filter from [-max, max] to [0, 1] (grey is zero);
    other channel counts show one diverging image per input channel.
    """
    weight = model.stem.weight.detach().float().cpu().numpy()  # (C, in, P, P)
    freq = spatial_frequency(weight).mean(axis=1)
    order = _evenly([int(k) for k in np.argsort(freq, kind="stable")], max_filters)
    p = model.patch_size
    if model.in_channels == 3:
        filters = (_scale_symmetric(weight[order]).transpose(0, 2, 3, 1) + 1) / 2  # (n, in, P, P) -> (n, P, P, 3)
        groups = [f[None] for f in filters]
        note = "RGB, grey = 0"
    else:
        groups = [_scale_symmetric(weight[k][:, None])[:, 0] for k in order]  # one image per input channel
        note = "red +, blue -" + (f"; {model.in_channels} input channels side by side" if model.in_channels > 1 else "")
    columns = max(1, min(len(groups), round(np.sqrt(len(groups)) * 1.6 / max(1, len(groups[0])) ** 0.5)))
    title = f"stem filters: {len(order)} of {model.dim}, {p}x{p} pixels each, sorted by frequency; {note}; per filter"
    return _show(mosaic(groups, columns, gap=max(1, p // 8)), title, Path(path))


def select_blocks(blocks: Sequence[int] | None, depth: int) -> list[int]:
    """Block indices in [0, depth), deduplicated; None means first, middle and last, as the paper's Figure 5."""
    if blocks is None:
        blocks = [0, depth // 2, depth - 1]
    bad = [b for b in blocks if not -depth <= b < depth]
    if bad or not blocks:
        raise ValueError(f"--blocks {list(blocks)}: the model has {depth} blocks (valid: {-depth} .. {depth - 1})")
    return list(dict.fromkeys(b % depth for b in blocks))


def run_figures(run_dir: Path, out_dir: Path) -> list[tuple[str, Path]]:
    """The figures of the training run in ``run_dir``, copied into ``out_dir`` or regenerated from its logs.

    A run (``mlp-mixer train``) writes ``curves.png`` from ``log.csv`` and ``confusion_matrix.png`` with
    ``eval.json``; ``mlp-mixer eval`` writes the latter two under ``eval/``. A missing PNG is drawn again from
    its log with the same plotting function, so older or pruned runs still get their figures.

    Returns:
        (caption, path) for each figure found, in ``out_dir``.
    """
    figures = []
    curves = out_dir / "curves.png"
    if (run_dir / "curves.png").is_file():
        _copy(run_dir / "curves.png", curves)
        figures.append(("Training curves: loss and top-1 per epoch", curves))
    elif (run_dir / "log.csv").is_file():
        plot_curves(read_log(run_dir / "log.csv"), curves)
        figures.append(("Training curves: loss and top-1 per epoch (redrawn from log.csv)", curves))
    for folder, name in ((run_dir, "confusion_matrix.png"), (run_dir / "eval", "eval_confusion_matrix.png")):
        target = out_dir / name
        report = _read_json(folder / "eval.json")
        what = f"Confusion matrix, {report.get('split') or 'held-out'}" + (
            f": top-1 {100 * report['top1']:.2f}%" if "top1" in report else ""
        )
        if (folder / "confusion_matrix.png").is_file():
            _copy(folder / "confusion_matrix.png", target)
            figures.append((what, target))
        elif report.get("confusion_matrix"):  # None above MAX_CONFUSION_CLASSES: nothing to draw
            confusion = torch.tensor(report["confusion_matrix"])
            classes = report.get("classes") or [str(i) for i in range(len(confusion))]
            plot_confusion(confusion, classes, target, f"{what} ({report.get('images', '?')} images)")
            figures.append((f"{what} (redrawn from eval.json)", target))
    return figures


def _copy(source: Path, target: Path) -> None:
    if source.resolve() != target.resolve():
        shutil.copyfile(source, target)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}  # a damaged log only costs its figure


def viz(
    checkpoint: str | Path,
    out_dir: str | Path,
    blocks: Sequence[int] | None = None,
    max_units: int = 64,
) -> list[Path]:
    """Write every figure for a checkpoint into ``out_dir`` plus an ``index.md`` that lists them.

    Args:
        checkpoint: anything :func:`mlp_mixer.from_pretrained` reads (a run folder: its ``best.pt``);
            figures of the run it sits in are added (:func:`run_figures`).
        out_dir: the folder to fill (created if needed).
        blocks: block indices for the token-mixing figures; None for first, middle and last.
        max_units: units (and stem filters) per figure; 0 for all.

    Returns:
        The figures written, in the order ``index.md`` lists them.
    """
    model = load_model(checkpoint)
    checkpoint = Path(model.source or checkpoint)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen = select_blocks(blocks, model.depth)
    entries: list[tuple[str, Path]] = []
    for b in chosen:
        path = plot_token_mixing(model, b, out_dir / f"token_mixing_block{b}.png", max_units)
        entries.append((f"Token-mixing MLP, block {b}: hidden units on the patch grid", path))
    entries.append(
        ("Stem: per-patch linear embedding filters", plot_stem_filters(model, out_dir / "stem_filters.png", max_units))
    )
    run_dir = checkpoint if checkpoint.is_dir() else checkpoint.parent
    entries += run_figures(run_dir, out_dir)

    c = model.config()
    lines = [
        f"# What {checkpoint} learned",
        "",
        f"Model: depth {c['depth']}, dim {c['dim']}, token_dim {c['token_dim']}, channel_dim {c['channel_dim']}, "
        f"patch_size {c['patch_size']}, image_size {c['image_size'][0]}x{c['image_size'][1]} "
        f"({model.grid_size[0]}x{model.grid_size[1]} patches), in_channels {c['in_channels']}.",
        "",
    ]
    metrics = _read_json(run_dir / "metrics.json")
    if metrics.get("best_val_top1") is not None:
        lines += [
            f"Run: best held-out top-1 {100 * metrics['best_val_top1']:.2f}% at epoch {metrics.get('best_epoch')}.",
            "",
        ]
    if (run_dir / "log.csv").is_file():
        _copy(run_dir / "log.csv", out_dir / "log.csv")
        lines += ["Per-epoch log: [log.csv](log.csv).", ""]
    for caption, path in entries:
        lines += [f"## {caption}", "", f"![{caption}]({path.name})", ""]
    write_text(out_dir / "index.md", "\n".join(lines))
    return [p for _, p in entries]
