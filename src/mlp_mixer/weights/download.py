"""Files mlp-mixer fetches or makes once and keeps: the one cache-folder resolver, and downloading a URL into it.

Hugging Face Hub ids are not fetched here: huggingface_hub keeps them in its own cache
(:func:`mlp_mixer.model.pretrained.hub_download`, in the model layer because ``MLPMixer.from_pretrained`` needs it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..utils.files import atomic_write

# kind -> (its folder in the user's cache, the environment variable that replaces the whole path). The two
# spellings are the folders each kind has always used, kept so that caches already on disk stay valid.
CACHE_KINDS = {"downloads": ("mlp_mixer", "MLP_MIXER_CACHE"), "onnx": ("mlp-mixer/onnx", None)}


def default_cache_dir(kind: str = "downloads") -> Path:
    """The folder where files of ``kind`` are kept when the caller names none.

    - ``"downloads"``, weights fetched from a URL (:func:`download`): ``$MLP_MIXER_CACHE``, else
      ``$XDG_CACHE_HOME/mlp_mixer``, else ``~/.cache/mlp_mixer``.
    - ``"onnx"``, the exports of ``mlp-mixer serve --backend onnx``: ``$XDG_CACHE_HOME/mlp-mixer/onnx``, else
      ``~/.cache/mlp-mixer/onnx`` (``$MLP_MIXER_CACHE`` does not move it).

    Args:
        kind: ``"downloads"`` or ``"onnx"``.
    """
    if kind not in CACHE_KINDS:
        raise ValueError(f"cache kind must be one of {', '.join(CACHE_KINDS)}, got {kind!r}")
    folder, variable = CACHE_KINDS[kind]
    if variable and os.environ.get(variable):
        return Path(os.environ[variable])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / folder


def download(url: str, cache_dir: str | Path | None = None) -> Path:
    """Download ``url`` once into the cache (``<cache>/<host>/<path>``) and return the local file.

    ``gs://bucket/...`` is read as ``https://storage.googleapis.com/bucket/...``. Offline, the error says
    where to put the file by hand.

    Args:
        url: ``http(s)://...`` or ``gs://...``.
        cache_dir: the cache folder; default :func:`default_cache_dir` ``("downloads")``.
    """
    import urllib.error
    import urllib.parse
    import urllib.request

    from tqdm import tqdm

    if url.startswith("gs://"):
        url = "https://storage.googleapis.com/" + url[len("gs://") :]
    parts = urllib.parse.urlparse(url)
    target = Path(cache_dir or default_cache_dir("downloads")) / parts.netloc / parts.path.lstrip("/")
    if target.is_file():
        return target

    def fetch(f: Any) -> None:
        with urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {target.name}") as bar:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))

    try:
        return atomic_write(target, fetch)
    except (urllib.error.URLError, OSError) as err:  # URLError, HTTPError, timeouts, no route: all OSError
        raise FileNotFoundError(
            f"cannot download {url} ({err}). Offline? Fetch it on a machine with network "
            f"(e.g. curl -L -o {target.name} {url}) and put it at {target}, or pass the local file's path"
        ) from err
