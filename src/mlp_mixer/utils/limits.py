"""One budget for everything an input file can expand into, checked by the readers before they allocate.

A file's size says little about what reading it costs: a 100-byte PNG can declare 3.6 Gpx, a TIFF declaring 1x1
pixels can hold one 24000² tile, a 1 MB gzip-compressed or GNU-sparse tar member can expand to 2 GB, a 6 MB zip of
deflated records can hold a 1 GiB tensor, an 806-byte pickle can build 8 GiB. So every reader checks what a file
*declares* it expands into (image headers and the decoder's tiles, tar member headers, zip members' uncompressed
sizes, ``.npy`` and safetensors headers, the callables a pickle names) against the limits here before the work:

- :data:`MAX_PIXELS`: pixels per image, counting what the decoder works on (the canvas and each tile or frame);
- :data:`MAX_FILE_BYTES`: bytes read per image file, and per member of a shard (the same image, stored there);
- :data:`MAX_WEIGHT_BYTES` and :data:`MAX_TENSORS`: what one weights file may hold, tensors' logical sizes
  counted (a view of a 4-byte storage can claim 10¹² elements);
- :data:`MAX_PICKLE_BYTES`: the pickled structure of a checkpoint (everything but its tensors' data).

Serve's per-request caps (``--max-body-mb``, ``--max-pixels``, ``--max-images``) are its own and lower. The
values are read from this module at each call (a test patches them here); the environment variables named
below set them when the package is imported. No torch at import: the command line's checks use this module.
"""

from __future__ import annotations

import os
import pickletools
import zipfile
from pathlib import Path
from typing import Any


def _mib(variable: str, default: float) -> int:
    return int(float(os.environ.get(variable, default)) * 2**20)


MAX_PIXELS = int(os.environ.get("MLP_MIXER_MAX_PIXELS", 2**26))  # 67 Mpx (8192x8192): above any camera
MAX_FILE_BYTES = _mib("MLP_MIXER_MAX_FILE_MB", 256)  # per image file read, and per shard member
# H/14 (432 M parameters) is 1.7 GB in float32, its training checkpoint with AdamW's two moments ~5.2 GB
MAX_WEIGHT_BYTES = _mib("MLP_MIXER_MAX_WEIGHTS_MB", 8192)
MAX_TENSORS = 10_000  # per weights file: H/14 has 390, its training checkpoint (model, EMA, optimizer) ~1,600
MAX_PICKLE_BYTES = 16 * 2**20  # a checkpoint's pickle: an H/14 training checkpoint's is ~0.3 MB
# The callables torch's weights-only unpickler allows whose result is not bounded by the pickle's size:
# nested _codecs.encode(x, "hex") doubles per call (806 bytes build 8 GiB), bytearray(n) allocates n bytes.
UNBOUNDED_CALLS = {("_codecs", "encode"), ("builtins", "bytearray"), ("__builtin__", "bytearray")}


class BudgetError(ValueError):
    """An input that declares more than a limit allows; the message names the input, the limit and its setting."""


def check_weights(source: str | Path, tensors: int, nbytes: int) -> None:
    """Refuse weights of more than :data:`MAX_TENSORS` tensors or :data:`MAX_WEIGHT_BYTES` bytes."""
    if tensors > MAX_TENSORS:
        raise BudgetError(f"{source} holds {tensors:,} tensors, over the limit of {MAX_TENSORS:,} per weights file")
    if nbytes > MAX_WEIGHT_BYTES:
        raise BudgetError(
            f"{source} expands to {nbytes / 2**20:,.1f} MiB of tensors, over the limit of "
            f"{MAX_WEIGHT_BYTES / 2**20:,.1f} MiB (MLP_MIXER_MAX_WEIGHTS_MB)"
        )


def check_torch_file(path: Path) -> None:
    """What ``torch.load(path, weights_only=True)`` would build, checked from the file before it runs.

    ``torch.save`` writes a zip of stored (uncompressed) records and one pickle; so a record that is compressed
    (a 6 MB file could then hold gigabytes), records over the budget, a pickle over :data:`MAX_PICKLE_BYTES` or
    one that calls what builds unbounded data (:data:`UNBOUNDED_CALLS`, which torch's weights-only unpickler
    allows) are refused here. The tensors' logical sizes are checked after loading by :func:`check_tensors`.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            pickles = [m for m in members if m.filename.endswith(".pkl")]
            if not pickles:
                raise ValueError("no data.pkl")
            packed = [m for m in members if m.compress_type != zipfile.ZIP_STORED]
            if packed:
                raise BudgetError(
                    f"checkpoint {path}: {len(packed)} compressed records ({sum(m.file_size for m in packed):,} "
                    f"bytes from {sum(m.compress_size for m in packed):,}), which torch.save never writes; "
                    "refusing to expand them"
                )
            check_weights(f"checkpoint {path}", len(members), sum(m.file_size for m in members))
            for member in pickles:
                if member.file_size > MAX_PICKLE_BYTES:
                    raise BudgetError(
                        f"checkpoint {path}: its pickle {member.filename} is {member.file_size:,} bytes, over the "
                        f"limit of {MAX_PICKLE_BYTES:,}"
                    )
                check_pickle_calls(archive.read(member), f"checkpoint {path}")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError) as err:
        if isinstance(err, BudgetError):
            raise
        if isinstance(err, zipfile.BadZipFile):
            reason = "empty file" if path.stat().st_size == 0 else "truncated, damaged or not torch.save's zip format"
        else:
            reason = f"truncated or damaged ({str(err).splitlines()[0][:120] if str(err) else type(err).__name__})"
        raise ValueError(f"checkpoint {path} cannot be read: {reason}") from err


def check_pickle_calls(data: bytes, source: str) -> None:
    """Refuse a pickle that names a callable of :data:`UNBOUNDED_CALLS`, read from its opcodes (nothing runs).

    torch's weights-only unpickler reads protocol-2 pickles, whose globals are ``GLOBAL`` opcodes only."""
    for opcode, argument, _ in pickletools.genops(data):
        if opcode.name in ("GLOBAL", "INST"):
            module, _, name = str(argument).partition(" ")
            if (module, name) in UNBOUNDED_CALLS:
                raise BudgetError(
                    f"{source} calls {module}.{name}, which can build unbounded data from a few bytes "
                    "(weights never need it); refusing to load it"
                )
        elif opcode.name == "STACK_GLOBAL":
            raise ValueError(f"{source}: a pickle protocol torch.save does not write (STACK_GLOBAL)")


def check_tensors(loaded: Any, source: str | Path) -> Any:
    """``loaded`` (what ``torch.load`` returned) if its tensors fit :func:`check_weights` by logical size.

    A tensor rebuilt as a view (stride 0) of a small storage claims any size for free until something copies it
    (``.contiguous()``, ``.float()``); counting logical sizes refuses that before any reader copies. Shared
    objects are visited once, so nested references cannot make the walk exponential.
    """
    import torch

    seen: set[int] = set()
    stack, tensors, nbytes = [loaded], 0, 0
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, torch.Tensor):
            tensors += 1
            nbytes += item.numel() * item.element_size()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
    check_weights(source, tensors, nbytes)
    return loaded


def check_safetensors(path: Path) -> None:
    """A ``.safetensors`` file's header (8-byte length, then JSON) checked before its tensors are read: the
    header's size (at most 256 bytes per allowed tensor), the tensor count and their bytes within the budget."""
    import json

    try:
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if length > 256 * MAX_TENSORS:
                raise BudgetError(f"{path}: a safetensors header of {length:,} bytes, over the limit")
            header = json.loads(f.read(length))
        entries = [v for k, v in header.items() if k != "__metadata__"]
        sizes = [int(v["data_offsets"][1]) - int(v["data_offsets"][0]) for v in entries]
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
        if isinstance(err, BudgetError):
            raise
        raise ValueError(f"{path} cannot be read (truncated or not safetensors): bad header ({err})") from err
    check_weights(path, len(entries), sum(sizes))
