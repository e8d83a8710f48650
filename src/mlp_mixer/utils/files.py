"""Writing files so that nothing half-written is ever seen: every file the package writes goes through here.

A file is written to a temporary name in its own folder, flushed to disk, then renamed over the target: a process
killed mid-write leaves the previous file (or none), never a truncated one that looks whole.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(binary_file)`` on a temporary file beside ``path``, fsync, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
