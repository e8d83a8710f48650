"""The ``mlp-mixer`` command: the only place the command line is written.

Each verb is a module of this package with ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``,
a thin wrapper over a typed library function a user can call from Python. Only the chosen verb's module is
imported, so ``mlp-mixer models`` does not pay for importing the training stack.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from ..utils.files import WriteError  # a full disk: one line naming the path

# verb -> module under mlp_mixer.commands (``eval`` is a Python builtin's name, so its module is ``evaluate``)
VERBS = {
    "models": "models",
    "summary": "summary",
    "graph": "graph",
    "train": "train",
    "eval": "evaluate",
    "predict": "predict",
    "export": "export",
    "convert": "convert",
    "resize": "resize",
    "bench": "bench",
    "viz": "viz",
    "fewshot": "fewshot",
    "serve": "serve",
    "shard": "shard",
}

# Shown and caught as one line: these are the errors a user can act on (bad option, missing file).
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, WriteError)


def _help_lines() -> dict[str, str]:
    # Each module's HELP, read without importing the module (its imports are the expensive part).
    import ast
    from pathlib import Path

    lines = {}
    for verb, name in VERBS.items():
        tree = ast.parse((Path(__file__).parent / f"{name}.py").read_text())
        lines[verb] = next(
            node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "HELP"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the verb and return its exit code (2: a user error)."""
    from .common import HelpFormatter

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="mlp-mixer", description="MLP-Mixer for PyTorch.")
    parser.add_argument("--version", action=_Version, help="show program's version number and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    module = None
    for verb, help_text in _help_lines().items():
        sub_parser = sub.add_parser(verb, help=help_text, description=help_text, formatter_class=HelpFormatter)
        if verb == chosen:
            module = importlib.import_module(f"{__name__}.{VERBS[verb]}")
            module.add_arguments(sub_parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # --help, --version, or a usage error argparse has printed: its exit code
        return int(exit.code or 0)
    if module is None:
        parser.print_help()
        return 2
    try:
        from .common import preflight

        preflight(args)  # no torch yet: a missing checkpoint answers at once
        return int(module.run(args) or 0)
    except USER_ERRORS as err:
        # One line, also when the message quotes a multi-line one (torch's load_state_dict lists every key).
        print(f"mlp-mixer {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mlp-mixer {args.command}: interrupted", file=sys.stderr)
        return 130


class _Version(argparse.Action):
    """``--version``: ours and torch's, read only when asked (importing torch for every ``--help`` costs seconds)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        import torch

        from .. import __version__

        print(f"mlp-mixer {__version__} (torch {torch.__version__})")
        parser.exit()
