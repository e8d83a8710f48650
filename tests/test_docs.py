"""Docs that cannot drift: every command example of the README and docs/ parses with the real command line, and
the ones that can run offline do run (with small settings)."""

import json
import re
import shlex
from pathlib import Path

import pytest

from mlp_mixer.commands import VERBS

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DEFAULT_RUN = ROOT / "benchmarks" / "results" / "default_run"  # the metrics.json and log.csv the run wrote


def code_blocks(path: Path) -> list[str]:
    """The shell code blocks (```bash, ```sh, ```console or unlabelled) of a Markdown file."""
    blocks, block, language = [], None, ""
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            if block is None:
                block, language = [], line[3:].strip()
            else:
                if language in ("", "bash", "sh", "console", "shell"):
                    blocks.append("\n".join(block))
                block = None
        elif block is not None:
            block.append(line)
    return blocks


def commands() -> list[tuple[str, list[str]]]:
    """Every ``mlp-mixer VERB ...`` of the docs (also behind ``./run.sh``, ``$ ``, ``torchrun ... -m mlp_mixer``
    or variable assignments), as (where, argv after the program name)."""
    found = []
    for path in DOCS:
        for block in code_blocks(path):
            prompted = any(line.startswith("$ ") for line in block.splitlines())
            for line in block.replace("\\\n", " ").splitlines():
                if prompted and not line.startswith("$ "):
                    continue  # a console transcript: the other lines are the program's output
                line = line.strip().removeprefix("$ ")
                if not re.search(r"(^|\s)(mlp-mixer|-m mlp_mixer)\s", line + " "):
                    continue
                try:
                    words = shlex.split(re.sub(r"\s+#\s.*$", "", line))  # a trailing comment may hold a quote
                except ValueError:  # not shell: prose that mentions the command
                    continue
                start = next(i for i, w in enumerate(words) if w in ("mlp-mixer", "mlp_mixer")) + 1
                found.append((f"{path.name}: {line}", [w for w in words[start:] if w != "..."]))
    return found


def test_the_docs_have_command_examples():
    verbs = {argv[0] for _, argv in commands() if argv}
    assert len(commands()) > 30 and {"train", "eval", "predict", "export", "convert", "shard", "serve"} <= verbs


@pytest.mark.parametrize("where,argv", commands(), ids=[w for w, _ in commands()])
def test_every_documented_command_parses(where, argv, capsys):
    import argparse
    import importlib

    from mlp_mixer.commands.common import HelpFormatter

    if not argv or argv[0].startswith("-"):
        return  # `mlp-mixer --version` and the like: checked by test_cli
    assert argv[0] in VERBS, f"{where}: no verb {argv[0]!r}"
    parser = argparse.ArgumentParser(prog=f"mlp-mixer {argv[0]}", formatter_class=HelpFormatter, exit_on_error=False)
    importlib.import_module(f"mlp_mixer.commands.{VERBS[argv[0]]}").add_arguments(parser)
    try:
        parser.parse_args(argv[1:])
    except (argparse.ArgumentError, SystemExit) as err:
        pytest.fail(f"{where}: {err} {capsys.readouterr().err}")


def test_the_default_runs_figures_come_from_the_files_it_wrote():
    """Every sentence of the README and docs that quotes the default run's top-1, and the transcript of its last
    line in docs/train.md, give what the run wrote in benchmarks/results/default_run/metrics.json."""
    metrics = json.loads((DEFAULT_RUN / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["machine"]["cpu"]
    top1, top5 = f"{100 * metrics['val_top1']:.2f}%", f"{100 * metrics['val_top5']:.2f}%"
    quoted = []
    for path in DOCS:
        prose = re.sub(r"```.*?```", " ", path.read_text(), flags=re.S)  # transcripts are checked below
        for sentence in re.split(r"(?<=[.!?])\s", " ".join(prose.split())):
            if "default run" in sentence:
                quoted += [(path.name, value) for value in re.findall(r"\b\d{2}\.\d{2}%", sentence)]
    assert quoted and all(value == top1 for _, value in quoted), (top1, quoted)
    last = f"held-out top-1 {top1} (top-5 {top5}) after {metrics['epochs']} epochs"
    assert last in (ROOT / "docs" / "train.md").read_text()
    rows = (DEFAULT_RUN / "log.csv").read_text().splitlines()
    assert len(rows) == metrics["epochs"] + 1 and f"{metrics['val_top1']:.6g}" in rows[-1]


# --- the examples that can run offline, in a scratch folder, with small settings -------------------------------

SMALL = ["--epochs", "1", "--depth", "1", "--dim", "16", "--token-dim", "8", "--channel-dim", "16", "--threads", "1"]
OFFLINE = {  # verbs whose documented examples run here when their inputs exist
    "models", "summary", "graph", "train", "eval", "predict", "export", "resize", "viz", "fewshot", "shard", "convert",
}  # fmt: skip


INPUT_FLAGS = ("--data", "--checkpoint", "--config", "--init-from", "--resume")
FIRST_POSITIONAL_IS_INPUT = {"convert", "resize", "shard"}  # then an output
ALL_POSITIONALS_ARE_INPUTS = {"predict"}


def _inputs_exist(argv: list[str]) -> bool:
    """Whether the files an example reads exist in the scratch folder (examples on /data/imagenet do not)."""
    inputs, positionals, words = [], [], iter(argv[1:])
    for word in words:
        if word in INPUT_FLAGS:
            inputs.append(next(words, ""))
        elif word.startswith("-"):
            next(words, None) if "=" not in word and not word.startswith(("--json", "--int8", "--quick")) else None
        else:
            positionals.append(word)
    if argv[0] in ALL_POSITIONALS_ARE_INPUTS:
        inputs += positionals
    elif argv[0] in FIRST_POSITIONAL_IS_INPUT and positionals and positionals[0] != "embedded":
        inputs.append(positionals[0])
    return all(Path(p.split("{")[0]).expanduser().exists() for p in inputs)  # a brace pattern: its folder


@pytest.mark.slow
def test_offline_examples_run(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from mlp_mixer.commands import main
    from mlp_mixer.data import embedded_mnist

    monkeypatch.chdir(tmp_path)
    (tmp_path / "digits").mkdir()
    _, _, images, labels = embedded_mnist()
    for i in range(4):
        Image.fromarray(images[i, 0].numpy()).save(tmp_path / "digits" / f"digit{i}_label{int(labels[i])}.png")
    from helpers import make_folder

    make_folder(tmp_path / "photos" / "train", classes=("cat", "dog"), n=6, size=(20, 18))  # the docs' photos/
    make_folder(tmp_path / "photos" / "val", classes=("cat", "dog"), n=2, size=(20, 18))
    assert main(["train", *SMALL, "--output", "runs/mnist"]) == 0  # the run every later example reads
    ran, skipped = [], []
    for where, argv in commands():
        if not argv or argv[0] not in OFFLINE or "torchrun" in where or not _inputs_exist(argv):
            skipped.append(where)
            continue
        if argv[0] == "train" and "--resume" in argv:  # continue the small run for one more epoch
            from mlp_mixer.weights.checkpoint import load_checkpoint, resolve_checkpoint

            done = load_checkpoint(resolve_checkpoint(argv[argv.index("--resume") + 1], ("last.pt",)))["epoch"]
            argv = [*argv, "--epochs", str(done + 1), "--threads", "1"]
        elif argv[0] == "train":
            argv = [*argv, *SMALL, "--overwrite"]
            if "--output" not in argv:
                argv += ["--output", "runs/docs"]
        if argv[0] == "fewshot":
            argv = [*argv, "--seeds", "1"]
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 0, f"{where}: exit {code}: {err}"
        ran.append(where)
    print("\n".join(["ran:", *ran, "skipped (inputs not here, torchrun, serve):", *skipped]))
    assert len(ran) >= 10, (ran, skipped)
