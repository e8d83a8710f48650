"""URLs downloaded once into the cache (no network here: simulated), the offline error, and the cache folders."""

import io
import urllib.error
import urllib.request

import pytest

import mlp_mixer
from mlp_mixer.weights.download import default_cache_dir
from mlp_mixer.weights.load import load_model
from mlp_mixer.weights.official import save_official_npz

URL = "https://storage.googleapis.com/mixer_models/imagenet1k/Mixer-B_16.npz"


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("network is unreachable")


def test_url_is_downloaded_once_into_the_cache(model, tmp_path, monkeypatch):
    path = save_official_npz(model, tmp_path / "Mixer-T_4.npz")  # what the URL serves: the shared model, official
    payload = path.read_bytes()
    calls = []

    def fake_urlopen(url, timeout):
        calls.append(url)
        response = io.BytesIO(payload)
        response.headers = {"Content-Length": str(len(payload))}
        return response

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    loaded = mlp_mixer.from_pretrained(URL, cache_dir=tmp_path / "cache")
    cached = tmp_path / "cache" / "storage.googleapis.com" / "mixer_models" / "imagenet1k" / "Mixer-B_16.npz"
    assert cached.read_bytes() == payload and calls == [URL]
    assert loaded.gelu == "tanh" and loaded.token_dim == model.token_dim
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)  # cached: no network needed, gs:// too
    gs = "gs://mixer_models/imagenet1k/Mixer-B_16.npz"
    assert mlp_mixer.from_pretrained(gs, cache_dir=tmp_path / "cache").depth == model.depth


def test_url_offline_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    monkeypatch.setenv("MLP_MIXER_CACHE", str(tmp_path / "cache"))
    target = tmp_path / "cache" / "storage.googleapis.com" / "mixer_models" / "imagenet1k" / "Mixer-B_16.npz"
    with pytest.raises(FileNotFoundError) as err:
        load_model(URL)
    assert f"put it at {target}" in str(err.value) and f"curl -L -o Mixer-B_16.npz {URL}" in str(err.value)
    assert not target.exists() and not list(target.parent.glob(".*tmp"))  # no partial file left behind


def test_cache_folders_are_the_ones_each_kind_always_used(tmp_path, monkeypatch):
    """Downloads and serve's ONNX exports resolve through one function to the folders they used before it."""
    monkeypatch.delenv("MLP_MIXER_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == default_cache_dir("downloads") == tmp_path / "xdg" / "mlp_mixer"
    assert default_cache_dir("onnx") == tmp_path / "xdg" / "mlp-mixer" / "onnx"
    monkeypatch.setenv("MLP_MIXER_CACHE", str(tmp_path / "mine"))  # moves downloads, not the ONNX exports
    assert default_cache_dir("downloads") == tmp_path / "mine"
    assert default_cache_dir("onnx") == tmp_path / "xdg" / "mlp-mixer" / "onnx"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir("onnx") == tmp_path / "home" / ".cache" / "mlp-mixer" / "onnx"
    with pytest.raises(ValueError, match="cache kind must be one of downloads, onnx, got 'models'"):
        default_cache_dir("models")
