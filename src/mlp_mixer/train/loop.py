"""Train a Mixer (``mlp-mixer train``): the embedded MNIST default, CIFAR folders or your own images.

``mlp-mixer train`` with no arguments trains the small Mixer of :data:`~mlp_mixer.train.config.DATA_DEFAULTS`
``["mnist"]`` on the 4,000 embedded MNIST training digits and evaluates it on the 1,000 held-out ones (see
``docs/train.md`` for what it reaches and how long it takes). :func:`train` is the same thing from Python::

    from mlp_mixer.train import TrainConfig, train
    metrics = train(TrainConfig(data="photos/", epochs=20, output="runs/photos"))

The script is linear, as torchvision's reference one: the settings (:mod:`.config`), the run built from them
(:mod:`.build`: model, optimizer, schedule, EMA, in the :class:`~.state.Run` record), its checkpoints
(:mod:`.checkpointing`), the run folder (:mod:`.run_dir`), Ctrl-C (:mod:`.signals`), and here the loop:
:func:`train_one_epoch`, :func:`evaluate_held_out`, :func:`train`.

Nothing is lost: checkpoints are written atomically; Ctrl-C finishes the current step, saves and exits; every
random draw is a function of (seed, step) (the sample order of an epoch, each sample's augmentation, dropout),
so ``--resume`` continues exactly where the run stopped, even within an epoch.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import data as datalib
from ..analysis.evaluate import EvalResult, evaluate_model, write_report
from ..model.mixer import count_parameters
from ..utils.cores import fit_to_cores
from ..utils.devices import loadavg, machine_info, resolve_device
from ..utils.progress import progress_bar
from . import distributed, signals
from .build import prepare_run
from .checkpointing import make_checkpoint, resume_config
from .config import (
    TrainConfig,
    default_output,
    resolve_config,
)
from .distributed import all_reduce_sum, any_process, is_main_process
from .inputs import (
    BatchAugment,
    attach_transforms,
    augments,
    epoch_batches,
    mix_seed,
    open_data,
    seed_global,
    shard_epoch,
)
from .run_dir import RunFiles
from .state import EpochStats, Run

# ---------------------------------------------------------------------------------------------------------------
# One epoch


class NonFiniteLoss(RuntimeError):
    """The loss (or the weights) stopped being finite."""


def _all_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def forward_backward(
    run: Run,
    autocast: torch.autocast,
    images: torch.Tensor,
    targets: torch.Tensor,
    labels: torch.Tensor,
    seed: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh gradients of the batch's mean loss, in ``grad_accum`` chunks (the global generator reseeded with
    ``seed`` first when given); the batch's summed loss and its correct count."""
    config = run.config
    if seed is not None:
        seed_global(seed, run.device)
    run.optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=run.device)
    correct = torch.zeros((), device=run.device)
    for chunk_x, chunk_t, chunk_y in zip(
        images.tensor_split(config.grad_accum),
        targets.tensor_split(config.grad_accum),
        labels.tensor_split(config.grad_accum),
        strict=True,
    ):
        if len(chunk_y) == 0:
            continue
        with autocast:
            logits = run.forward(chunk_x)
            loss = F.cross_entropy(logits.float(), chunk_t, label_smoothing=config.smoothing)
        (loss * (len(chunk_y) / len(labels))).backward()
        loss_sum += loss.detach() * len(chunk_y)
        correct += (logits.detach().argmax(1) == chunk_y).sum()
    return loss_sum, correct


def train_one_epoch(
    run: Run, batches: Iterable[datalib.Batch], interrupt: signals.Interrupt, progress: Any = None
) -> EpochStats:
    """One pass over ``batches``; ``run.step`` and ``run.batch`` advance with every optimizer step.

    Randomness is drawn per step from (seed, step): the batch augmentation from its own generator, dropout,
    drop-path and mixup from the global generator reseeded here. A resumed run therefore repeats exactly.
    """
    config, device, model = run.config, run.device, run.model
    model.train()
    augmented = augments(config, run.epoch)
    augment = BatchAugment(config) if augmented else None
    mix = run.mix if augmented else None
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, images
    stats = EpochStats()
    start, cpu_start = time.perf_counter(), time.process_time()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp)
    params = [p for p in model.parameters() if p.requires_grad]
    for batch in batches:
        stats.skipped += batch.skipped
        seed_global(mix_seed(config.seed, 2, run.step) + distributed.rank(), device)  # other processes: other masks
        generator = torch.Generator(device).manual_seed(mix_seed(config.seed, 3, run.step))
        n = len(batch.labels)
        if n > 0:
            labels = batch.labels.to(device, non_blocking=True)
            images = datalib.to_input(
                batch.images,
                run.preprocessing,
                model.in_channels,
                device,
                augment=None if augment is None else lambda x, g=generator: augment(x, g),
            )
            targets: torch.Tensor = labels
            if mix is not None and n > 1:
                images, targets = mix(images, labels)
            # SAM's two passes draw the same dropout and drop-path masks: both start from one seed
            masks = mix_seed(config.seed, 5, run.step) + distributed.rank() if config.sam > 0 else None
            loss_sum, correct = forward_backward(run, autocast, images, targets, labels, seed=masks)
            if run.sam is not None:
                again = functools.partial(forward_backward, run, autocast, images, targets, labels, seed=masks)
                run.sam(params, run.step, again)
            if any_process(not torch.isfinite(loss_sum)):
                raise NonFiniteLoss(f"the loss became {loss_sum.item()} at step {run.step}")
            if config.clip_grad > 0:
                nn.utils.clip_grad_norm_(params, config.clip_grad)
            run.optimizer.step()
            if run.ema is not None:
                run.ema.update(model)
            totals += torch.stack([loss_sum.double().cpu(), correct.double().cpu(), torch.tensor(float(n))])
        run.scheduler.step()
        run.step += 1
        run.batch += 1
        note = run.threads.step() if run.threads is not None else None
        if note:
            stats.notes.append(f"step {run.step}: {note}")
        if progress is not None:
            seen = max(1.0, totals[2].item())
            progress.set_postfix(
                loss=f"{totals[0].item() / seen:.4f}",
                acc=f"{100 * totals[1].item() / seen:.1f}%",
                img_s=f"{totals[2].item() / max(time.perf_counter() - start, 1e-9):.0f}",
                refresh=False,
            )
            progress.update(1)
        if any_process(interrupt.requested):  # all processes stop after the same step
            stats.stopped = True
            break
    totals = all_reduce_sum(totals)
    stats.images = int(totals[2].item())
    stats.loss = totals[0].item() / max(1, stats.images)
    stats.top1 = totals[1].item() / max(1, stats.images)
    stats.seconds = time.perf_counter() - start
    stats.cpu_seconds = time.process_time() - cpu_start
    return stats


def evaluate_held_out(run: Run, dataset: torch.utils.data.Dataset) -> EvalResult:
    """The weights to keep (the EMA when on) on this process's share of the held-out split, summed over
    processes."""
    model = run.eval_model
    with distributed.unsharded(model):  # FSDP: whole weights, so the shares need not match
        return evaluate_model(
            model,
            dataset,
            run.preprocessing,
            run.device,
            run.config.batch_size * 2,
            run.config.workers,
            amp=run.config.amp,
            reduce=all_reduce_sum,
        )


# ---------------------------------------------------------------------------------------------------------------
# The run


def _say(*args: Any, **kwargs: Any) -> None:
    """print() on the main process only."""
    if is_main_process():
        print(*args, **kwargs)


def run_epoch(run: Run, dataset: torch.utils.data.Dataset, interrupt: signals.Interrupt) -> EpochStats:
    """Train epoch ``run.epoch`` from where it stands (``run.batch`` steps already done after a resume)."""
    config = run.config
    if dataset.streamed:  # a stream: each process reads its own shards
        stream = shard_epoch(dataset, config, run.epoch, run.steps_per_epoch, run.batch, run.device)
        count = run.steps_per_epoch - run.batch
    else:
        batches = epoch_batches(len(dataset), config.batch_size, config.seed, run.epoch)[run.batch :]
        parts = [distributed.shard_batch(b) for b in batches]  # this process's part of each batch
        dataset.epoch_seed = mix_seed(config.seed, 4, run.epoch)
        # spares: unreadable files never leave a process short of images (or of a step) at any step
        stream = datalib.iterate_batches(dataset, parts, config.workers, run.device, spares=batches)
        count = len(batches)
    progress = _progress(count, f"epoch {run.epoch + 1}/{config.epochs}")
    try:
        return train_one_epoch(run, stream, interrupt, progress)
    finally:
        if progress is not None:
            progress.close()


def end_epoch(run: Run, stats: EpochStats, held_out: EvalResult, eval_seconds: float, files: RunFiles) -> None:
    """Log a finished epoch, keep the best, write ``last.pt`` (and ``best.pt`` when it improved)."""
    run.epoch += 1
    run.batch = 0
    row = dict(
        epoch=run.epoch,
        step=run.step,
        lr=run.optimizer.param_groups[0]["lr"],
        train_loss=stats.loss,
        train_top1=stats.top1,
        val_loss=held_out.loss,
        val_top1=held_out.top1,
        val_top5=held_out.top5,
        epoch_seconds=stats.seconds,
        epoch_cpu_seconds=stats.cpu_seconds,
        eval_seconds=eval_seconds,
        images_per_second=stats.images / max(stats.seconds, 1e-9),
        threads=torch.get_num_threads(),
        skipped=len(stats.skipped) + len(held_out.skipped),
    )
    run.history.append(row)
    improved = held_out.top1 > run.best["val_top1"]
    if improved:
        run.best = {"val_top1": held_out.top1, "epoch": run.epoch}
    checkpoint = make_checkpoint(run)
    files.checkpoint("last.pt", checkpoint)
    if improved:
        files.checkpoint("best.pt", checkpoint)
    files.epoch(run.history)
    _say(
        f"epoch {run.epoch}/{run.config.epochs}  loss {stats.loss:.4f}  train {100 * stats.top1:.2f}%  "
        f"held-out {100 * held_out.top1:.2f}% (top-5 {100 * held_out.top5:.2f}%)  "
        f"lr {row['lr']:.2e}  {stats.seconds:.1f}s  {row['images_per_second']:.0f} img/s",
        flush=True,
    )


def train(config: TrainConfig, on_epoch_end: Callable[[dict[str, Any]], bool | None] | None = None) -> dict[str, Any]:
    """Train and evaluate; returns the metrics written to ``metrics.json``.

    Args:
        config: the settings; unset fields are resolved (recipe, data defaults, :data:`DEFAULTS`).
        on_epoch_end: called with each epoch's log row; returning True stops the run as Ctrl-C does (a
            checkpoint is saved and the run can be resumed).

    Returns:
        ``val_top1``, ``val_top5``, ``val_loss`` of the final weights on the held-out split, ``epochs``,
        ``train_seconds``, ``best_val_top1``, ``status`` (``"completed"``, ``"interrupted"`` or ``"nan"``) and more.

    Raises:
        ValueError, FileNotFoundError: the run cannot start (bad option, data or checkpoint); nothing was trained.
    """
    config, checkpoint = resume_config(config)
    config = resolve_config(config)
    threads, thread_note = fit_to_cores(config.threads, "--threads")  # a YAML file's too, not only the flags'
    workers, worker_note = fit_to_cores(config.workers, "--workers")
    config = config.replace(threads=threads, workers=workers)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    distributed.init_from_env(device)  # under torchrun: join the other processes (nothing happens otherwise)
    device = distributed.process_device(device)  # cuda -> cuda:LOCAL_RANK
    splits = open_data(config)
    distributed.check_config(
        config.batch_size, config.grad_accum, len(splits.train), config.fsdp, config.ema, config.sam
    )
    run, notes = prepare_run(config, splits, device, checkpoint)
    notes = [note for note in (thread_note, worker_note) if note] + notes
    output = Path(run.config.output or default_output(run.config.data))
    files = RunFiles(
        output, fresh=checkpoint is None, purge_step=run.step if checkpoint else None, overwrite=config.overwrite
    )
    try:
        return _train_in(run, files, splits, notes, checkpoint is not None, on_epoch_end)
    finally:
        files.close()  # the folder's lock too, however the run ends


def _train_in(
    run: Run,
    files: RunFiles,
    splits: datalib.DataSplits,
    notes: list[str],
    resumed: bool,
    on_epoch_end: Callable[[dict[str, Any]], bool | None] | None,
) -> dict[str, Any]:
    """The body of :func:`train` once the run folder is held: announce, loop over epochs, finish."""
    config, device, output = run.config, run.device, files.output
    if files.moved_to is not None:
        notes.append(f"the earlier run in {output} was moved to {files.moved_to} (--overwrite deletes it instead)")
    val_part = distributed.shard_dataset(splits.val)  # each process evaluates its share; the counts are summed
    info = {
        "parameters": count_parameters(run.model),
        "device": str(device),
        "machine": machine_info(device),
        "data_kind": splits.kind,
        "classes": splits.classes,
    }
    files.config(config, {"resolved": info})
    _say(
        f"data: {splits.kind} {config.data or '(embedded MNIST digits)'}: {len(splits.train)} train / "
        f"{len(splits.val)} held-out images, {len(splits.classes)} classes"
    )
    for note in splits.notes + notes:
        _say(f"note: {note}")
    model_desc = ", ".join(f"{k} {v}" for k, v in run.model.config().items() if k != "gelu")
    _say(f"model: {model_desc}; {info['parameters']:,} parameters on {device}")
    _say(
        f"run: {config.epochs} epochs of {run.steps_per_epoch} steps, batch "
        f"{config.batch_size}, {config.opt} lr {config.lr:g}, output in {output}"
        + (f" (resuming at epoch {run.epoch + 1})" if resumed else "")
    )

    status, held_out, skipped = "completed", None, []
    try:
        with signals.Interrupt() as interrupt:
            while run.epoch < config.epochs:
                if not augments(config, run.epoch):  # the last --no-aug-epochs see held-out-style images
                    attach_transforms(splits, config, run.preprocessing, augment=False)
                stats = run_epoch(run, splits.train, interrupt)
                skipped += stats.skipped
                for note in stats.notes:
                    _say(f"note: {note}")
                if not _all_finite(run.model):
                    raise NonFiniteLoss(f"the weights stopped being finite in epoch {run.epoch + 1}")
                if stats.stopped:
                    status = "interrupted"
                    files.checkpoint("last.pt", make_checkpoint(run))
                    break
                eval_start = time.perf_counter()
                held_out = evaluate_held_out(run, val_part)
                skipped += held_out.skipped
                end_epoch(run, stats, held_out, time.perf_counter() - eval_start, files)
                if on_epoch_end is not None and any_process(bool(on_epoch_end(run.history[-1]))):
                    status = "interrupted"
                    break
    except NonFiniteLoss as err:
        status = "nan"
        _say(
            f"error: {err}; stopped. The last good checkpoint is kept: {output / 'last.pt'} (epoch {run.epoch})",
            file=sys.stderr,
        )
    if held_out is None and run.history:  # stopped in the first epoch after resuming: evaluate what there is
        held_out = evaluate_held_out(run, val_part)
    metrics = finish(run, files, status, held_out, distributed.gather_list(skipped), info)
    distributed.barrier()  # the other processes return once the main one has written the run's files
    return metrics


def finish(
    run: Run, files: RunFiles, status: str, held_out: EvalResult | None, skipped: list[str], info: dict[str, Any]
) -> dict[str, Any]:
    """Write ``metrics.json``, the held-out report, curves and the skipped files; say how the run ended."""
    history, output = run.history, files.output
    train_seconds = sum(r.get("epoch_seconds", 0.0) + r.get("eval_seconds", 0.0) for r in history)
    completed = len(history)
    metrics: dict[str, Any] = {
        "status": status,
        "epochs": completed,
        "step": run.step,
        "train_seconds": round(train_seconds, 2),
        "seconds_per_epoch": round(train_seconds / completed, 2) if completed else None,
        "train_cpu_seconds": round(sum(r.get("epoch_cpu_seconds", 0.0) for r in history), 2),
        "best_val_top1": run.best["val_top1"] if completed else None,
        "best_epoch": run.best["epoch"] if completed else None,
        "skipped_images": len(set(skipped)),
        **info,
    }
    if held_out is not None and status != "nan":
        metrics.update(
            val_top1=held_out.top1, val_top5=held_out.top5, val_loss=held_out.loss, val_images=held_out.count
        )
        if is_main_process():
            write_report(held_out, run.classes, output, source=f"{output / 'last.pt'}", split="held-out")
    metrics["machine"]["loadavg_end"] = loadavg()
    files.json("metrics.json", metrics)
    files.curves(history)
    files.close()
    if skipped:
        _say(f"skipped {len(set(skipped))} unreadable image(s) (listed in {output / 'skipped.txt'}):")
        for reason in sorted(set(skipped))[:10]:
            _say(f"  {reason}")
        files.text("skipped.txt", "\n".join(sorted(set(skipped))) + "\n")
    if status == "interrupted":
        _say(
            f"stopped at epoch {run.epoch + 1}, step {run.step}; continue with: mlp-mixer train --resume "
            f"{output / 'last.pt'}"
        )
    elif status == "completed" and held_out is not None:
        _say(
            f"held-out top-1 {100 * held_out.top1:.2f}% (top-5 {100 * held_out.top5:.2f}%) after {completed} "
            f"epochs, {train_seconds:.0f} s of training; run in {output}"
        )
    return metrics


def _progress(total: int, desc: str) -> Any:
    if not is_main_process():
        return None
    return progress_bar(total, desc, "step")  # a bar on a terminal, a line every few seconds in a log
