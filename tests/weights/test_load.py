"""from_pretrained on our save_pretrained layout (and the mixin's push_to_hub), its errors, and a Hub id offline."""

import json
from pathlib import Path

import pytest
import torch
from helpers import save_pretrained

import mlp_mixer
from mlp_mixer import MLPMixer
from mlp_mixer.model.pretrained import Preprocessing


def test_save_pretrained_round_trip_in_the_hf_layout(tiny_model, tmp_path):
    from safetensors import safe_open

    with torch.no_grad():
        tiny_model.head.weight.normal_()
    preprocessing = Preprocessing((16, 16), (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), 0.9, "bicubic")
    tiny_model.classes, tiny_model.preprocessing = [f"k{i}" for i in range(10)], preprocessing
    directory = tmp_path / "pretrained"
    tiny_model.save_pretrained(directory)  # a method, from huggingface_hub's PyTorchModelHubMixin
    # config.json + model.safetensors, and the mixin's model card
    assert sorted(p.name for p in directory.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert "library_name: mlp-mixer" in (directory / "README.md").read_text()
    with safe_open(str(directory / "model.safetensors"), "pt") as f:  # plain safetensors, as the Hub expects
        assert set(f.keys()) == set(tiny_model.state_dict())
    x = torch.randn(2, 3, 16, 16)
    # the module function (any source) and the class method (our layout) both return the model itself
    for loaded in (mlp_mixer.from_pretrained(directory), MLPMixer.from_pretrained(directory)):
        assert type(loaded) is MLPMixer and not loaded.training
        assert loaded.classes == [f"k{i}" for i in range(10)] and loaded.preprocessing == preprocessing
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), tiny_model.eval()(x), rtol=0, atol=0)
    assert callable(loaded.push_to_hub)


def test_push_to_hub_uploads_the_save_pretrained_folder(tiny_model, tmp_path, monkeypatch):
    """push_to_hub (the mixin's) saves through our _save_pretrained into a folder and uploads that folder."""
    from huggingface_hub import HfApi

    uploaded = {}

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        uploaded.update(repo_id=repo_id, files=sorted(p.name for p in Path(folder_path).iterdir()))
        uploaded["config"] = json.loads((Path(folder_path) / "config.json").read_text())
        return "https://huggingface.co/you/tiny/commit/0"

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: type("R", (), {"repo_id": repo_id})())
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    tiny_model.classes = [f"k{i}" for i in range(10)]
    tiny_model.push_to_hub("you/tiny")
    assert uploaded["repo_id"] == "you/tiny"
    assert uploaded["files"] == ["README.md", "config.json", "model.safetensors"]
    assert uploaded["config"]["classes"] == tiny_model.classes
    assert {k: uploaded["config"][k] for k in tiny_model.config()} == tiny_model.config()


def test_pretrained_directory_errors_name_the_file(tiny_model, tmp_path):
    directory = save_pretrained(tiny_model, tmp_path / "p")
    weights = (directory / "model.safetensors").read_bytes()
    (directory / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ValueError, match=r"model.safetensors cannot be read \(truncated"):
        mlp_mixer.from_pretrained(directory)
    (directory / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors does not exist"):
        mlp_mixer.from_pretrained(directory)
    directory = save_pretrained(tiny_model, tmp_path / "q")
    config = json.loads((directory / "config.json").read_text())
    config["dim"] = 48
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="weights in .*model.safetensors do not match"):
        mlp_mixer.from_pretrained(directory)
    (directory / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not a valid"):
        mlp_mixer.from_pretrained(directory)
    (directory / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json does not exist"):
        mlp_mixer.from_pretrained(directory)


def test_hub_id_offline_says_what_to_fetch(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # the real client, offline
    with pytest.raises(FileNotFoundError) as err:
        mlp_mixer.from_pretrained("timm/mixer_b16_224.goog_in21k_ft_in1k", cache_dir=tmp_path)
    message = str(err.value)
    assert "Offline?" in message and "hf download timm/mixer_b16_224.goog_in21k_ft_in1k config.json" in message
    with pytest.raises(FileNotFoundError, match="no/such/dir does not exist"):
        mlp_mixer.from_pretrained(str(tmp_path / "no" / "such" / "dir"))


def test_a_bad_architecture_in_config_json_names_config_json(tiny_model, tmp_path):
    """The error for an impossible size points at the file that states it, not at the weights beside it."""
    directory = tmp_path / "pretrained"
    tiny_model.save_pretrained(directory)
    config = json.loads((directory / "config.json").read_text())
    config["depth"] = -3
    (directory / "config.json").write_text(json.dumps(config))
    for load in (mlp_mixer.from_pretrained, MLPMixer.from_pretrained):
        with pytest.raises(ValueError, match=r"config\.json has an invalid model_config: depth must be a positive"):
            load(directory)
