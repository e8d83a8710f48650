"""Writing files so that nothing half-written is ever seen: every file the package writes goes through here.

A file is written to a temporary name in its own folder, flushed to disk, then renamed over the target: a process
killed mid-write leaves the previous file (or none), never a truncated one that looks whole. A write that fails
(a full disk, no permission) removes its temporary file and raises :class:`WriteError`, one line naming the path,
with the previous file untouched. Folders a run or an evaluation writes into keep a record of the names written
(:data:`RECORD_NAME`), so that replacing a run deletes only what a run wrote (:func:`written`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

RECORD_NAME = ".mlp-mixer-written"  # one name per line: what this package wrote into the folder


class WriteError(OSError):
    """A file could not be written (full disk, no permission, ...): one line naming the path and the reason. The
    previous file at that path, if any, is untouched, and no temporary file is left."""


def _write_error(path: Path, err: OSError) -> WriteError:
    reason = "the disk is full" if err.errno in (errno.ENOSPC, errno.EDQUOT) else (err.strerror or str(err))
    return WriteError(err.errno, f"cannot write {path}: {reason}; nothing there was changed")


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(binary_file)`` on a temporary file beside ``path``, fsync, then rename it over ``path``.

    Raises:
        WriteError: the write failed (e.g. the disk is full); ``path`` is as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise _write_error(path, err) from err
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the permissions open() would
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, WriteError):
            raise _write_error(path, err) from err
        raise
    return path


def record_written(folder: str | Path, *names: str) -> None:
    """Add ``names`` (entries of ``folder``) to the folder's record of what this package wrote there."""
    folder = Path(folder)
    new = [n for n in names if n not in written(folder)]
    if new:
        write_text(folder / RECORD_NAME, "".join(f"{n}\n" for n in sorted(written(folder) | set(new))))


def written(folder: str | Path) -> set[str]:
    """The names the record of ``folder`` holds (empty without a record)."""
    try:
        return set((Path(folder) / RECORD_NAME).read_text().split("\n")) - {""}
    except (OSError, UnicodeDecodeError):
        return set()


def ours(path: Path) -> bool:
    """Whether this package wrote ``path``: named in its folder's record, or a folder whose every entry is ours."""
    if path.name in written(path.parent):
        return True
    return (
        path.is_dir()
        and (path / RECORD_NAME).is_file()
        and all(entry.name == RECORD_NAME or ours(entry) for entry in path.iterdir())
    )


def remove_ours(path: Path) -> None:
    """Delete ``path`` (a file, or a folder) that :func:`ours` says this package wrote, and nothing else."""
    if path.is_dir() and not path.is_symlink():
        if path.name in written(path.parent) and not (path / RECORD_NAME).is_file():
            shutil.rmtree(path)  # a folder written whole by one writer (TensorBoard's tb/)
        else:
            for entry in path.iterdir():
                if entry.name != RECORD_NAME:
                    remove_ours(entry)
            (path / RECORD_NAME).unlink(missing_ok=True)
            path.rmdir()
    else:
        path.unlink()


def write_bytes(path: str | Path, data: bytes) -> Path:
    """``data`` to ``path``, atomically."""
    return atomic_write(path, lambda f: f.write(data))


def write_text(path: str | Path, text: str) -> Path:
    """``text`` (UTF-8) to ``path``, atomically."""
    return write_bytes(path, text.encode())


def write_json(path: str | Path, obj: Any) -> Path:
    """``obj`` as indented JSON to ``path``, atomically."""
    return write_text(path, json.dumps(obj, indent=2) + "\n")


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path``, atomically (a killed process leaves the previous checkpoint intact)."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))
