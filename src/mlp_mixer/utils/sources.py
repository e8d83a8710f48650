"""What a ``--checkpoint`` names, told apart without torch: a URL, a Hugging Face Hub id, or a local path.

The loader (:func:`mlp_mixer.weights.load.from_pretrained`) and the command line's check before torch loads
(:func:`check_source`) read the same rule here, so a mistyped path is refused at once, with the same words, whether
it comes from Python or from ``mlp-mixer predict``.
"""

from __future__ import annotations

import re
from pathlib import Path

# owner/name, optionally behind hf-hub: (timm's prefix)
HUB_ID = re.compile(r"(?:hf[-_]hub:)?([A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)")
# Endings that make "a/b.pt" a mistyped local path, never a Hub repo
LOCAL_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".npz", ".safetensors", ".json", ".yaml", ".yml", ".tar", ".onnx")
URL_PREFIXES = ("http://", "https://", "gs://")


def hub_id(source: str | Path) -> str | None:
    """The Hub repo a ``--checkpoint`` names, or None when it names a local path (existing or not).

    The rule: ``hf-hub:owner/name`` is always the Hub. A bare ``owner/name`` is the Hub only when nothing local
    matches it: no such path, no folder named ``owner`` here, and no file ending (``.pt``, ``.npz``, ...) on
    ``name``. So a mistyped local path such as ``ck/none.pt`` fails at once, offline, naming the path.
    """
    text = str(source)
    match = HUB_ID.fullmatch(text)
    if match is None:
        return None
    if text.startswith(("hf-hub:", "hf_hub:")):
        return match.group(1)
    owner, name = text.split("/")
    if Path(text).exists() or Path(owner).is_dir() or name.lower().endswith(LOCAL_SUFFIXES):
        return None
    return match.group(1)


def check_source(source: str | Path) -> None:
    """Raise FileNotFoundError, naming ``source``, when it is neither a URL, nor a Hub id, nor an existing path."""
    text = str(source)
    if text.startswith(URL_PREFIXES) or Path(text).exists() or hub_id(text) is not None:
        return
    raise FileNotFoundError(
        f"{source} does not exist (a Hugging Face Hub id is owner/name without a file ending, or hf-hub:...)"
    )
