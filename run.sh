#!/usr/bin/env bash
# Runs a command inside the project's virtual environment, creating or updating it first.
#   ./run.sh mlp-mixer train    the main job on the embedded default dataset
#   ./run.sh pytest             the whole test suite
# The environment (.venv, beside this script) is reused; it is reinstalled only when pyproject.toml changes.
# The command runs in the folder you call it from, so relative paths mean what they say.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

py=""
for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
        py=$candidate
        break
    fi
done
if [ -z "$py" ]; then
    echo "run.sh: Python 3.11 is required (tried python3.11, python3, python)" >&2
    exit 1
fi

venv="$root/.venv"
stamp="$venv/.installed"
want=$("$py" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$root/pyproject.toml")
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "run.sh: setting up $venv (first run installs PyTorch; this takes a few minutes)" >&2
    [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e "$root[dev]"
    echo "$want" > "$stamp"
fi

if [ $# -eq 0 ]; then
    echo "usage: ./run.sh COMMAND [ARGS...]   e.g. ./run.sh mlp-mixer train, ./run.sh pytest" >&2
    exit 2
fi
if [ "$1" = "pytest" ] && [ "$PWD" != "$root" ]; then
    cd "$root"  # the suite is the project's: run it from the root, wherever it is called from
fi
exec "$venv/bin/$1" "${@:2}"
