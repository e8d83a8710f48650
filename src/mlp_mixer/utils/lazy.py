"""The one way a folder's ``__init__`` re-exports its names: each loads its module on first use (PEP 562), so
that importing a light module of a folder (the size table, the command line's choices) does not import torch."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any


def lazy_exports(
    package: str, where: dict[str, str], modules: Iterable[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``.

    Args:
        package: the package's ``__name__``.
        where: exported name -> the module that defines it, relative to ``package`` (``"mixer"``, ``"..utils.x"``).
        modules: submodules reachable as attributes, as when the ``__init__`` imported them eagerly.
    """
    modules = tuple(modules)

    def __getattr__(name: str) -> Any:
        if name in modules:
            return importlib.import_module(f".{name}", package)
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        relative = where[name] if where[name].startswith(".") else f".{where[name]}"
        return getattr(importlib.import_module(relative, package), name)

    def __dir__() -> list[str]:
        return sorted({*importlib.import_module(package).__dict__, *where, *modules})

    return __getattr__, __dir__
