"""Training on several processes and machines with PyTorch's own engine (``torchrun``, DDP, FSDP2).

``torchrun`` starts one process per device and tells each its ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``;
:func:`init_from_env` joins them into one process group (gloo for CPU tensors, NCCL for CUDA ones). Without
torchrun, or with one process, there is no process group and every helper here is the identity, so
``mlp-mixer train`` on one process is exactly what it was.

One rule makes runs comparable: ``--batch-size`` is the *global* batch. Every optimizer step uses the same
samples whatever the number of processes (:func:`mlp_mixer.train.inputs.epoch_batches`, drawn from (seed, epoch));
process ``r`` of ``W`` takes the ``r``-th contiguous ``B / W`` of each batch (:func:`shard_batch`, what a
``DistributedSampler`` with ``set_epoch`` is for), draws its augmentation as that slice of the whole batch's draws
(:func:`batch_rows`), and the gradients are averaged over processes. A step on ``W`` processes is therefore the
step on one (up to the order of floating-point sums), the learning rate needs no rescaling when processes are
added, and a checkpoint (full weights, written by the main process only) resumes on any number of processes.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def init_from_env(device: torch.device | None = None) -> bool:
    """Join the process group that ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1).

    Idempotent: nothing happens without torchrun, with one process, or when the caller already initialised a
    group. A group created here is destroyed when the process exits (:func:`teardown`).

    Args:
        device: the training device. CUDA: gloo for CPU tensors (metrics, stop flags) and NCCL for CUDA tensors
            (gradients); anything else: gloo only, so CPU training on a GPU machine does not touch the GPUs.

    Returns:
        True when this call created the process group.

    Raises:
        ValueError: torchrun started several processes but this PyTorch has no ``torch.distributed``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return False
    if not dist.is_available():
        raise ValueError(f"WORLD_SIZE is {world} (torchrun) but this PyTorch build has no torch.distributed")
    if dist.is_initialized():
        return False
    dist.init_process_group("cpu:gloo,cuda:nccl" if device is not None and device.type == "cuda" else "gloo")
    atexit.register(teardown)
    return True


def teardown() -> None:
    """Leave the process group (if any), so that its native side ends while the interpreter is still whole.

    ``destroy_process_group`` frees the group only with its last Python reference: until then gloo's worker and
    socket threads run on, into interpreter shutdown, where PyTorch's own tests saw ranks abort in native code
    ("terminate called without an active exception", pytorch/pytorch#65237). A finished run's DDP model holds
    the group and sits in reference cycles: collected first, it lets the group go here. (After FSDP2, torch 2.14
    itself keeps the mesh, and so the group, referenced to the end: tests/train/test_distributed.py.)

    No barrier: from the exit handler after an error on one process it would wait for the others forever, and
    a :func:`mlp_mixer.train.train` that returns has passed its last one already.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def world_size() -> int:
    """The number of training processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's index among all training processes (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    """Whether this process prints and writes files (logs, TensorBoard, plots, checkpoints): rank 0 only."""
    return rank() == 0


def barrier() -> None:
    """Wait until every process gets here (e.g. until the main process has written the run's files)."""
    if world_size() > 1:
        dist.barrier()


def process_device(device: torch.device) -> torch.device:
    """The device of this process: ``cuda`` becomes ``cuda:LOCAL_RANK`` (one GPU per process), set as current
    so that NCCL uses it; other devices are unchanged.

    Raises:
        ValueError: ``--device cuda:N`` with several processes (torchrun assigns the GPUs), or fewer GPUs on this
            machine than processes on it.
    """
    if world_size() == 1 or device.type != "cuda":
        return device
    if device.index is not None:
        raise ValueError(
            f"--device {device}: with torchrun each process uses cuda:LOCAL_RANK; pass --device cuda (or auto)"
        )
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if local >= torch.cuda.device_count():
        raise ValueError(
            f"process with LOCAL_RANK {local} has no GPU: this machine has {torch.cuda.device_count()} "
            f"(start at most that many processes per node: torchrun --nproc_per_node {torch.cuda.device_count()})"
        )
    torch.cuda.set_device(local)
    return torch.device("cuda", local)


def check_config(batch_size: int, grad_accum: int, num_train: int, fsdp: bool, ema: float, sam: float = 0.0) -> None:
    """Reject settings that cannot be split over the processes, naming the option and the numbers.

    Args:
        batch_size: the global batch (``--batch-size``), split evenly so that every process weighs its images
            as the single process would.
        grad_accum: micro-batches per process and step; each needs at least one image.
        num_train: training images. Fewer than one global batch is one step of them all an epoch, as on one
            process (each process takes its share), so a small dataset trains with the default batch.
        fsdp, ema, sam: ``--fsdp`` shards the weights, which the EMA copy and SAM's shift do not follow.
    """
    w = world_size()
    if fsdp and sam > 0 and w > 1:
        raise ValueError(f"--sam {sam} is not supported with --fsdp yet (its shift needs whole gradients); use DDP")
    if fsdp and ema > 0 and w > 1:
        raise ValueError(f"--ema {ema} is not supported with --fsdp (the EMA copy would not be sharded); use --ema 0")
    if w == 1:
        return
    if batch_size % w:
        raise ValueError(
            f"--batch-size {batch_size} is the global batch: it must be a multiple of the {w} processes "
            f"(e.g. {max(w, batch_size // w * w)})"
        )
    if batch_size // w < grad_accum:
        raise ValueError(
            f"--batch-size {batch_size} over {w} processes leaves {batch_size // w} image(s) per process, fewer "
            f"than --grad-accum {grad_accum}"
        )
    if num_train < w:
        raise ValueError(f"{num_train} training image(s) cannot be shared by {w} processes")


def shard_batch(batch: Sequence[int]) -> list[int]:
    """This process's contiguous part of a global batch (the whole batch on one process)."""
    w, r = world_size(), rank()
    return list(batch[len(batch) * r // w : len(batch) * (r + 1) // w])


def batch_rows(batch_size: int) -> tuple[int, int] | None:
    """``(first, total)``: this process's images are rows ``first...`` of a global batch of ``total``, so batch
    augmentation draws for the whole batch and keeps this process's rows; None on one process."""
    w = world_size()
    return None if w == 1 else (rank() * batch_size // w, batch_size)


def shard_dataset(dataset: Any) -> Any:
    """This process's contiguous share of an evaluation dataset (its ``split(rank, world)``: every split of
    :mod:`mlp_mixer.data` has one); sums over the shares (:func:`all_reduce_sum`) are the metrics of the whole
    dataset."""
    w, r = world_size(), rank()
    return dataset if w == 1 else dataset.split(r, w)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a metric tensor over processes (the identity on one). Reduce sums and counts, never means: the
    result is then the metric of all the data, whatever each process saw."""
    if world_size() == 1:
        return tensor
    total = tensor.clone()
    dist.all_reduce(total)
    return total


def any_process(flag: bool | torch.Tensor) -> bool:
    """Whether ``flag`` holds on any process. Every decision that changes the control flow (stop after Ctrl-C,
    a non-finite loss, a callback's stop) goes through here: a process that left the loop alone would leave the
    others waiting in their next collective."""
    if world_size() == 1:
        return bool(flag)
    value = torch.tensor(float(bool(flag)))  # a CPU tensor: gloo, also next to NCCL
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather_list(items: list[str]) -> list[str]:
    """Every process's ``items`` (e.g. the unreadable files it skipped), concatenated in rank order."""
    if world_size() == 1:
        return items
    parts: list[list[str] | None] = [None] * world_size()
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in (part or [])]


# ---------------------------------------------------------------------------------------------------------------
# The model: DDP or FSDP2, and full (world-size-free) state dicts


def wrap_model(model: nn.Module, device: torch.device, fsdp: bool = False) -> nn.Module:
    """What the training loop calls on each batch.

    One process: ``model`` itself. Several: ``DistributedDataParallel`` (rank 0's weights broadcast, gradients
    averaged in buckets while backward runs), or with ``fsdp`` the model sharded in place by FSDP2
    (``fully_shard`` on each MixerBlock, then on the whole model): weights, gradients and optimizer state are
    split over the processes and each block's weights are gathered just for its forward and backward, which is
    what lets L/16 and H/14 train where one copy of the optimizer state does not fit. ``model`` stays the module
    whose ``state_dict`` is saved (through :func:`full_state_dict`).
    """
    if world_size() == 1:
        return model
    if fsdp:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        for tensor in [*model.parameters(), *model.buffers()]:  # every process shards the same initial weights
            dist.broadcast(tensor.data, src=0)
        mesh = init_device_mesh(device.type, (world_size(),))  # the training device, not torch's default
        for block in model.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _is_sharded(tensor: Any) -> bool:
    return hasattr(tensor, "full_tensor")  # a DTensor (FSDP2); imported lazily, as torch.distributed may be absent


@contextlib.contextmanager
def unsharded(model: nn.Module) -> Iterator[nn.Module]:
    """Gather an FSDP2 model's weights on every process for the duration (a no-op otherwise).

    Evaluation then needs no communication, so processes may run different numbers of batches (uneven shards of
    the held-out data, unreadable files). Costs one full copy of the weights, as DDP always does.
    """
    if not hasattr(model, "unshard"):
        yield model
        return
    model.unshard()
    model.set_reshard_after_forward(False, recurse=True)
    try:
        yield model
    finally:
        model.reshard()
        model.set_reshard_after_forward(True, recurse=True)


def _full_cpu(tensor: torch.Tensor) -> torch.Tensor | None:
    """The whole tensor on the CPU on the main process, None on the others (which still join the gather)."""
    if _is_sharded(tensor):
        tensor = tensor.full_tensor()
    return tensor.detach().to("cpu", copy=True) if is_main_process() else None


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's whole weights on the CPU, as one process would save them, so a checkpoint loads anywhere.

    The main process gets them, the others ``{}``. With FSDP every process must call this (shards are gathered).
    """
    state = {name: _full_cpu(value) for name, value in model.state_dict().items()}
    return state if is_main_process() else {}


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``optimizer.state_dict()`` with sharded states gathered: the layout of a single-process optimizer, keyed by
    parameter index. The main process gets it, the others ``{}``; with FSDP every process must call this."""
    state = optimizer.state_dict()
    if world_size() == 1:
        return state
    if any(_is_sharded(v) for s in state["state"].values() for v in s.values()):
        state["state"] = {
            index: {k: _full_cpu(v) if torch.is_tensor(v) else v for k, v in values.items()}
            for index, values in state["state"].items()
        }
    return state if is_main_process() else {}


def _shard_like(full: torch.Tensor, like: Any) -> Any:
    """``full`` split as ``like`` is; every process holds ``full`` (all read the checkpoint), so no communication."""
    from torch.distributed.tensor import distribute_tensor

    full = full.to(device=like.device, dtype=like.dtype)
    return distribute_tensor(full, like.device_mesh, like.placements, src_data_rank=None)


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``model.load_state_dict`` from full weights (any checkpoint), also into an FSDP2-sharded model."""
    current = model.state_dict()
    model.load_state_dict(
        {k: _shard_like(v, current[k]) if k in current and _is_sharded(current[k]) else v for k, v in state.items()}
    )


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """``optimizer.load_state_dict`` from a full state (:func:`full_optimizer_state`), also for sharded weights:
    each per-parameter state of the parameter's shape is split as the parameter is."""
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        for param in group["params"]:
            if not _is_sharded(param):
                continue
            values = optimizer.state.get(param, {})
            for key, value in values.items():
                if torch.is_tensor(value) and not _is_sharded(value) and value.shape == param.shape:
                    values[key] = _shard_like(value, param)
