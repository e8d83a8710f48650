"""Few-shot linear evaluation on frozen features: the paper's quick measure of representation quality.

As in the paper (and big_vision's ``fewshot`` evaluator, which produced its few-shot numbers): take n images
per class from a training split, embed them with the frozen model (the pooled pre-logits, or the pooled tokens
after any block), fit an L2-regularised least-squares classifier on one-vs-all targets in {-1, 1} in closed
form, and measure top-1 accuracy on held-out images. Repeating over seeds gives the spread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.loader import batches_of
from ..data.sources import load_splits
from ..data.transforms import eval_geometry, to_input
from ..model.mixer import MLPMixer
from ..model.pretrained import Preprocessing
from ..utils.devices import default_workers, native_bf16, resolve_device
from ..weights.load import load_model
from .options import L2_REG

BIAS_CONSTANT = 100.0  # big_vision: a large constant feature, so the bias is almost unregularised
STD_EPS = 1e-5  # big_vision: keeps constant features finite when whitening


@dataclass
class RidgeClassifier:
    """A linear one-vs-all classifier fitted by :func:`fit_ridge`; features are whitened with the shots' stats."""

    mean: torch.Tensor  # (D,)
    std: torch.Tensor  # (D,)
    weight: torch.Tensor  # (D + 1, num_classes); the last row multiplies the bias feature

    def decision_function(self, features: torch.Tensor) -> torch.Tensor:
        """Scores (N, num_classes) for features (N, D)."""
        return _design(features, self.mean, self.std) @ self.weight

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        return self.decision_function(features).argmax(dim=1)


def _design(features: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    # Whiten, then append the constant bias feature: (N, D) -> (N, D + 1)
    x = (features.double() - mean) / std
    return torch.cat([x, x.new_full((x.shape[0], 1), BIAS_CONSTANT)], dim=1)


def fit_ridge(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, l2_reg: float = L2_REG
) -> RidgeClassifier:
    """Closed-form ridge regression on {-1, 1} one-vs-all targets, exactly as big_vision's few-shot evaluator.

    Features are whitened with the training mean and std (+1e-5), a constant feature of 100 stands in for an
    (almost unregularised) bias, and the weights minimise ``|X W - Y|^2 + l2_reg |W|^2``. big_vision
    eigendecomposes the Gram matrix to sweep l2_reg cheaply; with one l2_reg a direct solve of the smaller
    Gram matrix is the same closed form. Computed in float64.

    Args:
        features: (N, D) training features.
        labels: (N,) integer labels in ``[0, num_classes)``.
        num_classes: number of one-vs-all targets (classes without shots get all -1 targets, as in big_vision).
        l2_reg: the L2 penalty; big_vision's default 2**10 suits whitened features of any width.
    """
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(
            f"expected features (N, D) and labels (N,), got {tuple(features.shape)} and {tuple(labels.shape)}"
        )
    x = features.double()
    mean = x.mean(dim=0)
    std = x.std(dim=0, correction=0) + STD_EPS  # population std, as jnp.std
    x = _design(x, mean, std)
    y = 2.0 * torch.nn.functional.one_hot(labels.long(), num_classes).double() - 1.0
    n, d = x.shape
    if n >= d:  # (X^T X + l2 I)^-1 X^T Y: a D x D system
        weight = torch.linalg.solve(x.T @ x + l2_reg * torch.eye(d, dtype=x.dtype), x.T @ y)
    else:  # X^T (X X^T + l2 I)^-1 Y: an N x N system, the same solution when shots are fewer than features
        weight = x.T @ torch.linalg.solve(x @ x.T + l2_reg * torch.eye(n, dtype=x.dtype), y)
    return RidgeClassifier(mean, std, weight)


def sample_shots(
    labels: torch.Tensor, shots: int, seed: int, num_classes: int, classes: Sequence[str] = ()
) -> torch.Tensor:
    """Indices of ``shots`` training examples per class, drawn as big_vision does.

    One permutation per class from ``numpy.random.default_rng(seed)``, then the first ``shots`` of each, so for
    one seed the 1-shot set is inside the 5-shot set, which is inside the 10-shot set.
    """
    rng = np.random.default_rng(seed)
    labels_np = labels.numpy()
    picked = []
    for c in range(num_classes):
        members = rng.permutation(np.flatnonzero(labels_np == c))
        if len(members) < shots:
            name = classes[c] if c < len(classes) else str(c)
            raise ValueError(f"class {name!r} has {len(members)} training images, fewer than {shots} shots")
        picked.append(members[:shots])
    return torch.from_numpy(np.concatenate(picked))


def pooled_features(model: MLPMixer, images: torch.Tensor, block: int | None = None) -> torch.Tensor:
    """Frozen features (B, C) of preprocessed images: mean-pooled tokens, what a linear probe sees.

    Args:
        model: the Mixer.
        images: (B, in_channels, H, W), already transformed with the model's preprocessing.
        block: None for the pre-logits (``forward_head(..., pre_logits=True)``, the paper's few-shot features);
            an index (negative counts from the end) for the tokens after that block, through the pre-head
            LayerNorm as timm's ``norm=True`` does, so every block's features are on the same scale.
    """
    if block is None:
        return model.forward_head(model.forward_features(images), pre_logits=True)
    _, (tokens,) = model.forward_intermediates(images, [block], norm=True, stop_early=True, output_fmt="NLC")
    return tokens.mean(dim=1)  # (B, S, C) -> (B, C)


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    # bf16 only where it is native: CUDA with bf16 support, or a CPU with AVX512-BF16/AMX (elsewhere ~100x slower)
    if not amp:
        return contextlib.nullcontext()
    if device.type in ("cuda", "cpu") and native_bf16(device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def extract_features(
    model: MLPMixer,
    dataset: Dataset,
    preprocessing: Preprocessing,
    *,
    block: int | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    workers: int = 0,
    amp: bool = False,
    progress: bool = False,
    desc: str = "features",
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Features (N, C) in float32 and labels (N,) of a dataset of uint8 images, in dataset order.

    Batches are read and preprocessed exactly as training and ``mlp-mixer eval`` read them
    (:func:`mlp_mixer.data.iterate_batches`, :func:`mlp_mixer.data.to_input`), so the features are those of
    the images the model was evaluated on.

    Args:
        model: the frozen Mixer (put in eval mode here).
        dataset: yields (uint8 image (C, H, W), label), e.g. a split of :func:`mlp_mixer.data.load_splits`.
        preprocessing: the checkpoint's scaling and size.
        block: which features, as in :func:`pooled_features`.
        batch_size: images per forward pass.
        device: where the model runs.
        workers: DataLoader processes for image files.
        amp: bf16 autocast where it is native (CUDA, or a CPU with AVX512-BF16/AMX); features stay float32.
        progress: show a tqdm bar.
        desc: the bar's label.

    Returns:
        ``(features, labels, skipped)``; ``skipped`` lists image files that could not be decoded.
    """
    from tqdm import tqdm

    device = torch.device(device)
    model.eval().to(device)
    feats, labels, skipped = [], [], []
    for batch in tqdm(
        batches_of(dataset, batch_size, workers, device),
        total=-(-len(dataset) // batch_size),
        desc=desc,
        disable=not progress,
        leave=False,
    ):
        skipped += batch.skipped
        if len(batch.labels) == 0:
            continue
        x = to_input(batch.images, preprocessing, model.in_channels, device)
        with _autocast(device, amp):
            feats.append(pooled_features(model, x, block).float().cpu())
        labels.append(batch.labels.cpu())
    if not feats:
        raise ValueError(f"none of the {len(dataset)} images for {desc} could be read")
    return torch.cat(feats), torch.cat(labels), skipped


def fewshot(
    checkpoint: str | Path,
    data: str | Path | None = None,
    shots: Sequence[int] = (1, 5, 10),
    seeds: int = 5,
    *,
    l2_reg: float = L2_REG,
    block: int | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    workers: int | None = None,
    amp: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """The paper's few-shot linear evaluation of a checkpoint; returns a JSON-ready report.

    Features of every training and held-out image are computed once; then for each seed and shot count,
    shots are drawn per class (:func:`sample_shots`), a ridge classifier is fitted (:func:`fit_ridge`) and
    scored on all held-out images.

    Args:
        checkpoint: anything :func:`mlp_mixer.from_pretrained` reads (a run folder: its ``best.pt``).
        data: None for the embedded MNIST split (shots from its 4,000 training digits, accuracy on the 1,000
            held out); or any data ``mlp-mixer train`` reads (:func:`mlp_mixer.data.load_splits`): an ImageFolder
            root with ``train/`` and ``val/`` (or one folder of class folders, 10% per class held out with a fixed
            seed), or a CIFAR-10/100 python folder (shots from train, accuracy on test).
        shots: images per class, e.g. (1, 5, 10) as in the paper.
        seeds: how many draws (seeds 0 .. seeds-1) per shot count; their spread is reported.
        l2_reg: the ridge penalty (big_vision's 2**10).
        block: features after this block (see :func:`pooled_features`); None for the pre-logits.
        batch_size: images per forward pass.
        device: ``"auto"`` (default: CUDA, else MPS, else CPU), ``"cpu"``, ``"cuda:1"``, ...
        workers: DataLoader processes for image files; default min(4, CPUs).
        amp: bf16 autocast for the forward passes where it is native.
        progress: tqdm bars while embedding.

    Returns:
        ``{"results": {"<shots>": {"mean", "std", "min", "max", "accuracies"}}, ...}`` with accuracies in
        percent; std is over seeds (sample std, 0 for one seed).
    """
    shots = [int(n) for n in shots]
    if not shots or min(shots) < 1:
        raise ValueError(f"shots must be positive integers, got {shots}")
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    if l2_reg <= 0:
        raise ValueError(f"l2_reg must be positive, got {l2_reg}")
    model = load_model(checkpoint)
    if block is not None and not -model.depth <= block < model.depth:
        raise ValueError(f"--block {block} is out of range for a model with depth {model.depth}")
    preprocessing = model.preprocessing
    if tuple(preprocessing.image_size) != tuple(model.image_size) or len(preprocessing.mean) != model.in_channels:
        # weights saved without their preprocessing: the official [-1, 1] scaling at the model's size
        preprocessing = Preprocessing.official(model.image_size, model.in_channels)
    splits = load_splits(data, in_channels=model.in_channels)
    if splits.native_size is None:  # image files: resize and crop each as evaluation does
        splits.train.transform = splits.val.transform = eval_geometry(preprocessing)
    torch_device = resolve_device(device or "auto")
    workers = default_workers() if workers is None else workers
    kwargs = dict(block=block, batch_size=batch_size, device=torch_device, workers=workers, amp=amp, progress=progress)
    train_x, train_y, skipped = extract_features(model, splits.train, preprocessing, desc="train features", **kwargs)
    test_x, test_y, skipped_test = extract_features(model, splits.val, preprocessing, desc="test features", **kwargs)
    classes = splits.classes

    num_classes = len(classes)
    results = {}
    for n in shots:
        accuracies = []
        for seed in range(seeds):
            index = sample_shots(train_y, n, seed, num_classes, classes)
            classifier = fit_ridge(train_x[index], train_y[index], num_classes, l2_reg)
            correct = int((classifier.predict(test_x) == test_y).sum())
            accuracies.append(round(100.0 * correct / len(test_y), 4))
        acc = np.array(accuracies)
        results[str(n)] = {
            "mean": round(float(acc.mean()), 4),
            "std": round(float(acc.std(ddof=1)), 4) if len(acc) > 1 else 0.0,
            "min": float(acc.min()),
            "max": float(acc.max()),
            "accuracies": accuracies,
        }
    return {
        "checkpoint": str(checkpoint),
        "data": str(data) if data is not None else "embedded MNIST (4,000 train / 1,000 held out)",
        "skipped_images": sorted(set(skipped + skipped_test)),
        "notes": list(splits.notes),
        "features": "pre-logits" if block is None else f"block {block}",
        "num_classes": num_classes,
        "train_images": len(train_y),
        "test_images": len(test_y),
        "seeds": seeds,
        "l2_reg": l2_reg,
        "results": results,
    }


def format_report(report: dict[str, Any]) -> str:
    """A table of mean ± std (min-max) top-1 per shot count."""
    lines = [
        f"few-shot linear eval of {report['checkpoint']} on {report['data']}",
        f"features: {report['features']}; {report['num_classes']} classes; "
        f"{report['test_images']} test images; {report['seeds']} seeds; l2_reg {report['l2_reg']:g}",
        f"{'shots':>5}  {'top-1 mean ± std':>17}  {'min':>6}  {'max':>6}",
    ]
    for n, r in report["results"].items():
        lines.append(f"{n:>5}  {r['mean']:>8.2f} ± {r['std']:<6.2f}  {r['min']:>6.2f}  {r['max']:>6.2f}")
    lines += [f"note: {note}" for note in report.get("notes", [])]
    if report.get("skipped_images"):
        lines.append(f"skipped {len(report['skipped_images'])} unreadable image(s), e.g. {report['skipped_images'][0]}")
    return "\n".join(lines)
