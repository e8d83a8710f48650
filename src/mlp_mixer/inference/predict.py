"""Classify image files with a trained Mixer: files, folders and globs in, top-k classes out.

The class names and the preprocessing come from the checkpoint (``weights.load_model``), never from
flags, so a prediction is made exactly the way the model was evaluated. A file that cannot be read gets an
error of its own in the output while the others are still predicted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.decode import IMAGE_EXTENSIONS, read_image
from ..data.geometry import eval_transform
from ..utils.devices import resolve_device
from ..utils.progress import progress_bar
from ..weights.load import load_model

GLOB_CHARS = "*?["
# What would break a one-line-per-file output: control characters (a newline in a class or file name) and Unicode's
# line separators; shown escaped, as Python writes them ("a\\nb").
_LINE_BREAKERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass
class Prediction:
    """The top-k classes of one file, best first, or why the file could not be predicted."""

    path: str
    classes: list[str] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        top = [
            {"class": c, "index": i, "probability": p}
            for c, i, p in zip(self.classes, self.indices, self.probabilities, strict=True)
        ]
        return {"path": self.path, "predictions": top, "error": self.error}


def expand_paths(inputs: Iterable[str | Path]) -> tuple[list[Path], list[Prediction]]:
    """Files as given, folders searched recursively for image extensions, globs (``**`` too) expanded.

    Returns:
        ``(files, failures)``: the files to predict, in a stable order, and one failed ``Prediction`` per input
        that names nothing (a missing path, a glob or folder without images), so it is reported, not dropped.
    """
    files: list[Path] = []
    failures: list[Prediction] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            what = f"folder has no image files ({', '.join(IMAGE_EXTENSIONS)})"
        elif path.exists():
            found, what = [path], ""  # an explicit file is decoded by content, whatever its extension
        elif any(c in str(item) for c in GLOB_CHARS):
            found = _glob(str(item))
            what = "no files match this pattern"
        else:
            found, what = [], "no such file or directory"
        if not found:
            failures.append(Prediction(str(item), error=what))
        files.extend(found)
    return list(dict.fromkeys(files)), failures  # a file named twice is predicted once


def _glob(pattern: str) -> list[Path]:
    """The files a pattern matches (``**`` too). Unlike ``glob.glob``, ``**`` does not descend into symbolic links
    to folders (pathlib's rule in Python 3.11), so a link back to a parent cannot make the walk endless."""
    parts = Path(pattern).parts
    first = next(i for i, part in enumerate(parts) if any(c in part for c in GLOB_CHARS))
    base = Path(*parts[:first]) if first else Path(".")
    return sorted(p for p in base.glob(str(Path(*parts[first:]))) if p.is_file())


def _batches(items: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Predictor:
    """A checkpoint ready to classify image files; ``Predictor(checkpoint).predict(paths)``.

    Args:
        checkpoint: anything :func:`mlp_mixer.from_pretrained` reads: a run folder, a training checkpoint
            ``.pt``, a ``save_pretrained`` directory, an official ``.npz``, ... Class names and preprocessing come
            from it; a checkpoint without class names (an official ``.npz``) gets the class indices as names.
        device: ``"auto"`` (CUDA, else MPS, else CPU), ``"cpu"``, ``"cuda:0"``, ...
        amp: bf16 autocast on CUDA (ignored on CPU, where bf16 is only fast with native support).
    """

    def __init__(self, checkpoint: str | Path, device: str = "auto", amp: bool = True) -> None:
        self.model = load_model(checkpoint)
        if self.model.num_classes == 0:
            raise ValueError(f"checkpoint {checkpoint} has no classification head (num_classes 0); nothing to predict")
        # Name classes by index only when the checkpoint stores no names; a wrong count is an error, not a guess.
        self.classes = self.model.classes or [str(i) for i in range(self.model.num_classes)]
        if len(self.classes) != self.model.num_classes:
            raise ValueError(
                f"checkpoint {checkpoint} stores {len(self.classes)} class names for a head of "
                f"{self.model.num_classes} classes"
            )
        self.preprocessing = self.model.preprocessing
        self.transform = eval_transform(self.preprocessing)
        self.device = resolve_device(device)
        self.model.to(self.device)
        self.amp = amp and self.device.type == "cuda"

    def load(self, path: Path) -> torch.Tensor:
        """Decode one file and apply the checkpoint's eval transform: float (in_channels, H, W)."""
        return self.transform(read_image(path, self.model.in_channels))

    @torch.inference_mode()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Float32 logits (B, num_classes) of a batch of preprocessed images."""
        images = images.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return self.model(images).float()

    def predict(
        self, paths: Iterable[str | Path], topk: int = 5, batch_size: int = 32, progress: bool | None = None
    ) -> list[Prediction]:
        """Top-k classes of every file under ``paths`` (files, folders, globs).

        Inputs that name no file come first, then every file in input order (folders and globs sorted).

        Args:
            paths: files, folders (searched recursively) and glob patterns.
            topk: how many classes per file; capped at the number of classes.
            batch_size: images per forward pass.
            progress: show a progress bar; ``None``: a bar on a terminal, else a line on stderr every
                ``utils.progress.PROGRESS_SECONDS`` (a log of a long run shows it is moving).
        """
        if topk < 1:
            raise ValueError(f"--topk must be at least 1, got {topk}")
        if batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
        topk = min(topk, self.model.num_classes)
        files, results = expand_paths(paths)
        bar = progress_bar(len(files), "predict", "files", progress)
        for batch in _batches(files, batch_size):
            images, good = [], []
            for path in batch:
                try:
                    images.append(self.load(path))
                    good.append(path)
                except (ValueError, OSError, RuntimeError) as err:  # undecodable, unreadable, unresizable
                    results.append(Prediction(str(path), error=str(err)))
            if images:
                probs = self.logits(torch.stack(images)).softmax(dim=-1).cpu()
                values, indices = probs.topk(topk, dim=-1)
                for path, p, i in zip(good, values.tolist(), indices.tolist(), strict=True):
                    results.append(Prediction(str(path), [self.classes[j] for j in i], i, p))
            bar.update(len(batch))
        bar.close()
        order = {str(path): n for n, path in enumerate(files)}
        return sorted(results, key=lambda r: order.get(r.path, -1))  # input errors first, then files in order


def _one_line(text: str) -> str:
    return _LINE_BREAKERS.sub(lambda m: repr(m.group())[1:-1], text)


def format_predictions(predictions: list[Prediction]) -> str:
    """One line per file: ``path: class (probability), ...`` or ``path: error: ...``; a newline (or another control
    character) in a class name, a file name or an error is shown escaped, so each file stays one line."""
    lines = []
    for p in predictions:
        if p.error is not None:
            line = f"{p.path}: error: {p.error.removeprefix(f'{p.path}: ')}"  # read_image names the file too
        else:
            top = ", ".join(f"{c} ({prob:.4f})" for c, prob in zip(p.classes, p.probabilities, strict=True))
            line = f"{p.path}: {top}"
        lines.append(_one_line(line))
    return "\n".join(lines)
