"""The package's layout holds: the library below, the command line on top, imports one way, no circle.

The import graph is read from the source (every ``import`` statement, also those inside functions), so a lazy
import cannot hide a circle.
"""

import argparse
import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mlp_mixer

PACKAGE = Path(mlp_mixer.__file__).parent
ROOT = PACKAGE.parents[1]
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def layer_table() -> list[tuple[int, str, list[str]]]:
    """(layer, folder, modules) rows of docs/architecture.md's table: the one statement of the layout."""
    rows = []
    for line in ARCHITECTURE.read_text().splitlines():
        match = re.match(r"\|\s*(\d+)\s*\|\s*`([\w/]+)`\s*\|[^|]*\|([^|]*)\|\s*$", line)
        if match:
            rows.append((int(match[1]), match[2].rstrip("/"), re.findall(r"`(\w+)`", match[3])))
    return rows


def _layers() -> dict[str, int]:
    """module name (relative to the package) -> its layer; a folder's __init__ is its folder's."""
    layer = {}
    for number, folder, modules in layer_table():
        if folder == "mlp_mixer":
            layer.update({("mlp_mixer" if m == "__init__" else m): number for m in modules})
        else:
            layer[folder] = number
            layer.update({f"{folder}.{m}": number for m in modules})
    return layer


LAYER = _layers()
FOLDER_LAYER = {folder: number for number, folder, _ in layer_table() if folder != "mlp_mixer"}


def _folder(module: str) -> str:
    return module.split(".")[0] if module.split(".")[0] in FOLDER_LAYER else module


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    name = ".".join(p for p in parts if p != "__init__")
    return name or "mlp_mixer"


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of ours it imports (relative names; the package itself is ``mlp_mixer``)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".") if package and package != "mlp_mixer" else []
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    full = f"{target}.{alias.name}".strip(".")
                    edges.add(full if full in modules else target or "mlp_mixer")
            elif isinstance(node, ast.Import | ast.ImportFrom):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:  # from mlp_mixer import serve -> mlp_mixer.serve
                    names = [f"{node.module}.{a.name}" for a in node.names] + [node.module or ""]
                for imported in names:
                    if imported == "mlp_mixer" or imported.startswith("mlp_mixer."):
                        short = imported.removeprefix("mlp_mixer.") if imported != "mlp_mixer" else "mlp_mixer"
                        edges.add(short if short in modules else short.rpartition(".")[0] or "mlp_mixer")
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def test_every_module_has_a_layer_and_every_listed_module_exists():
    assert set(import_graph()) == set(LAYER)


def test_imports_run_one_way_from_the_leaves_up():
    """Within a folder, anything (the circle test below still holds); across folders, only to a lower layer."""
    wrong = [
        f"{a} (layer {LAYER[a]}) imports {b} (layer {LAYER[b]})"
        for a, edges in import_graph().items()
        for b in edges
        if _folder(a) != _folder(b) and LAYER[b] >= LAYER[a]
    ]
    assert not wrong


def test_readme_names_the_folders_in_the_tables_order():
    text = (ROOT / "README.md").read_text()
    paragraph = text[text.index("The library is `src/mlp_mixer/`") :].split("\n\n")[0]
    named = list(dict.fromkeys(re.findall(r"`(\w+)/`", paragraph)))
    assert named == list(FOLDER_LAYER)


def test_no_import_circle():
    graph, state, circles = import_graph(), {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                circles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [node])
    assert not circles


def test_argparse_only_in_the_command_layer():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "commands" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if "argparse" in names:
                offenders.append(str(path.relative_to(PACKAGE)))
    assert not offenders


# What prediction needs of data/ is decoding and the transforms: no dataset source, no shard module, no webdataset
DATA_SOURCES = ("sources", "splits", "tensors", "mnist", "cifar", "folder", "shards", "shard_reader", "shard_writer")


@pytest.mark.parametrize("module", ["mlp_mixer.inference.predict", "mlp_mixer.inference.export"])
def test_inference_does_not_load_training_or_the_command_line(module):
    # torch itself imports argparse (through unittest), so the check is on our modules that would bring it
    code = f"import sys, {module}; print(' '.join(m for m in sys.modules if m.startswith(('mlp_mixer', 'webdataset'))))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert module in loaded
    assert not [m for m in loaded if m.startswith(("mlp_mixer.train", "mlp_mixer.commands"))]
    assert not [m for m in loaded if m in [f"mlp_mixer.data.{s}" for s in DATA_SOURCES] or m.startswith("webdataset")]
    assert all((PACKAGE / "data" / f"{s}.py").is_file() for s in DATA_SOURCES)  # the names checked are real modules


def _verb_parsers():
    from mlp_mixer.commands import VERBS
    from mlp_mixer.commands.common import HelpFormatter

    for verb, name in VERBS.items():
        parser = argparse.ArgumentParser(prog=f"mlp-mixer {verb}", formatter_class=HelpFormatter)
        importlib.import_module(f"mlp_mixer.commands.{name}").add_arguments(parser)
        yield verb, parser


def test_every_flag_has_a_help_line_that_shows_its_default():
    missing = []
    for verb, parser in _verb_parsers():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            shown = formatter._get_help_string(action) or ""
            if not action.help or not (action.required or "default" in shown):
                missing.append(f"{verb} {action.option_strings[0]}: {shown!r}")
    assert not missing


def test_help_shows_the_resolved_training_defaults():
    from mlp_mixer.train.config import DATA_DEFAULTS, DEFAULTS

    text = dict(_verb_parsers())["train"].format_help()
    assert f"{DATA_DEFAULTS['mnist']['lr']} on the embedded MNIST" in " ".join(text.split())
    assert f"{DEFAULTS['lr']} otherwise" in " ".join(text.split())


# Test modules that exercise the whole package at once (its command line, its docs, hostile inputs, this layout)
# sit at the top of tests/; every other one is tests/<folder>/test_<module>.py for the module it tests.
ACROSS_THE_PACKAGE = {"test_cli", "test_docs", "test_fuzz", "test_hardening", "test_layout", "test_options_fuzz"}


def test_tests_mirror_the_package():
    modules, tests, wrong = set(import_graph()), ROOT / "tests", []
    for path in sorted(tests.rglob("test_*.py")):
        parts = path.relative_to(tests).parts
        name = path.stem.removeprefix("test_")
        if len(parts) == 1:
            ok = path.stem in ACROSS_THE_PACKAGE
        else:
            ok = len(parts) == 2 and (parts[0] if name == "init" else f"{parts[0]}.{name}") in modules
        if not ok:
            wrong.append(str(path.relative_to(tests)))
    assert not wrong, "tests that mirror no module: " + ", ".join(wrong)


def test_every_import_path_the_docs_show_resolves():
    """The README and docs name modules and functions by dotted path, old (mlp_mixer.MOVED) and new alike."""
    wrong = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for path in sorted(set(re.findall(r"\bmlp_mixer(?:\.\w+)+", doc.read_text()))):
            parts = path.split(".")
            for cut in range(len(parts), 0, -1):  # the longest importable module, then attributes
                try:
                    obj = importlib.import_module(".".join(parts[:cut]))
                except ModuleNotFoundError:
                    continue
                try:
                    for name in parts[cut:]:
                        obj = getattr(obj, name)
                except AttributeError:
                    wrong.append(f"{doc.name}: {path}")
                break
    assert not wrong
