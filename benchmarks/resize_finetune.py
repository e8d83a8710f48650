"""What each way of changing a trained Mixer's resolution gives, before and after a short fine-tune.

On the embedded MNIST digits (4,000 train / 1,000 held-out): train a small Mixer at 28x28 (7x7 patches, a 4x4
grid), resize it to 56 (K=2: blockdiag with contiguous tiles, blockdiag with strided sub-grids, interpolate) and
to 42 (a 6x6 grid, ratio 1.5: interpolate only), measure held-out top-1 right after resizing (images upsampled
to the new size, as training and evaluation feed them), then fine-tune each with ``mlp_mixer.train.train``
(``--init-from``, the official fine-tuning recipe, a new zero head) and measure again. Controls: the same
fine-tune at 28 (no resize), and training from scratch at the new size for the same number of epochs.

Run (about 30 minutes on 2 busy CPU cores)::

    .venv/bin/python benchmarks/resize_finetune.py

Writes ``benchmarks/resize_finetune.json`` and prints the Markdown table that docs/weights.md shows.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from mlp_mixer.analysis.evaluate import evaluate_model
from mlp_mixer.data.sources import load_splits
from mlp_mixer.train import TrainConfig, train
from mlp_mixer.weights import LoadedModel, load_model, save_pretrained
from mlp_mixer.weights.resize import resize_model

SIZES = dict(patch_size=7, dim=128, depth=4, token_dim=64, channel_dim=256)  # 28/7 = 4, 42/7 = 6, 56/7 = 8
CASES = [(28, None), (56, "blockdiag"), (56, "blockdiag-strided"), (56, "interpolate"), (42, "interpolate")]


def held_out_top1(loaded: LoadedModel, val: torch.utils.data.Dataset) -> float:
    """Held-out top-1 (%) with the model's stored preprocessing: 28x28 digits upsampled to its size."""
    return 100.0 * evaluate_model(loaded.model, val, loaded.preprocessing, torch.device("cpu")).top1


def table_row(size: int, method: str, token_dim: int, at_start: float | None, after: float | None, metrics: dict):
    """One line of the table: top-1 in % right after resizing (or of the starting model) and after training."""
    return dict(
        size=size,
        method=method,
        token_dim=token_dim,
        at_start=at_start,
        after_finetune=None if after is None else 100.0 * after,
        train_seconds=metrics["train_seconds"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-epochs", type=int, default=12)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--output", default="runs/resize_finetune")
    parser.add_argument("--result", default=str(Path(__file__).with_suffix(".json")))
    args = parser.parse_args()
    out = Path(args.output)
    val = load_splits(None).val
    common = dict(device="cpu", seed=0, workers=0)

    start = time.perf_counter()
    base_metrics = train(
        TrainConfig(**SIZES, image_size=28, epochs=args.base_epochs, output=str(out / "base"), **common)
    )
    base = load_model(out / "base" / "last.pt")
    rows = [
        table_row(
            28, "trained at 28 (the starting point)", base.model.token_dim, held_out_top1(base, val), None, base_metrics
        )
    ]

    for size, method in CASES:
        name = f"{size}_{method or 'none'}"
        model = resize_model(base.model, size, method) if method else base.model
        preprocessing = dataclasses.replace(base.preprocessing, image_size=model.image_size)
        resized = LoadedModel(model.eval(), base.classes, preprocessing)
        save_pretrained(model, out / name / "init", base.classes, preprocessing)
        before = held_out_top1(resized, val)
        metrics = train(
            TrainConfig(
                init_from=str(out / name / "init"),
                recipe="finetune",
                epochs=args.finetune_epochs,
                output=str(out / name / "finetune"),
                **common,
            )
        )
        rows.append(
            table_row(size, method or "none (same size)", model.token_dim, before, metrics["val_top1"], metrics)
        )
        print(json.dumps(rows[-1]), flush=True)

    for size in sorted({size for size, method in CASES if method}):
        metrics = train(
            TrainConfig(
                **SIZES, image_size=size, epochs=args.finetune_epochs, output=str(out / f"scratch_{size}"), **common
            )
        )
        rows.append(table_row(size, "from scratch (control)", SIZES["token_dim"], None, metrics["val_top1"], metrics))

    result = dict(
        command="python benchmarks/resize_finetune.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k in ("base_epochs", "finetune_epochs")
        ),
        model=SIZES,
        base_epochs=args.base_epochs,
        finetune_epochs=args.finetune_epochs,
        torch=torch.__version__,
        total_seconds=round(time.perf_counter() - start, 1),
        rows=rows,
    )
    Path(args.result).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n| image | method | token_dim | top-1 after resizing | after {args.finetune_epochs} fine-tuning epochs |")
    print("|---|---|---|---|---|")
    for line in rows:
        cells = ["" if line[k] is None else f"{line[k]:.1f}%" for k in ("at_start", "after_finetune")]
        print(f"| {line['size']} | {line['method']} | {line['token_dim']} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
