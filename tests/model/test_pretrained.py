"""What travels with the weights, through huggingface_hub's own mixin tests.

The tests marked "the mixin's" are our adaptation of huggingface/huggingface_hub ``tests/test_hub_mixin_pytorch.py``
at commit ee0a4510f4bc15e26cb722be2efc2bdb01383ca0: each runs on our MLPMixer and on the mixin's reference model,
built as that file builds it, so a difference shows. What changed: the Hub is mocked (no network here), and where
the reference's expectation is its own (its config.json is exactly the config passed, ours also states the model),
the assertion is the one both must meet, with our extra keys checked beside it. Not adapted: the tests of
features our constructor does not have (non-JSON arguments, shared tensors, ``**kwargs``/``config`` arguments,
custom coders).
"""

import json
import struct
import typing
from pathlib import Path
from unittest.mock import Mock

import pytest
import torch
from huggingface_hub import ModelCard, constants
from huggingface_hub.errors import RemoteEntryNotFoundError
from huggingface_hub.hub_mixin import ModelHubMixin, PyTorchModelHubMixin
from torch import nn

from mlp_mixer import MLPMixer
from mlp_mixer.model.variants import TINY

CONFIG = {"num": 10, "act": "gelu_fast"}


class DummyModel(nn.Module, PyTorchModelHubMixin):  # the mixin's reference, as its test defines it
    def __init__(self, **kwargs):
        super().__init__()
        self.config = kwargs.pop("config", None)
        self.l1 = nn.Linear(2, 2)

    def forward(self, x):
        return self.l1(x)


class DummyModelNoConfig(nn.Module, PyTorchModelHubMixin):  # the mixin's reference, without its non-JSON argument
    def __init__(self, num_classes: int = 42, state: str = "layernorm"):
        super().__init__()
        self.num_classes = num_classes
        self.state = state


def build(which: str) -> nn.Module:
    torch.manual_seed(0)
    if which == "reference":
        return DummyModel()
    model = MLPMixer(**TINY)
    with torch.no_grad():
        model.head.weight.normal_()  # a non-zero head, so a lost head shows
    return model


WHICH = pytest.mark.parametrize("which", ["reference", "ours"])


@pytest.fixture(autouse=True)
def _mocked_hub_is_reachable(monkeypatch):
    """The Hub these tests mock answers: ours would otherwise see no network and read only the cache."""
    monkeypatch.setattr("mlp_mixer.model.pretrained._hub_reachable", lambda *args: True)


def _same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)


@WHICH
def test_save_pretrained_basic(which, tmp_path):  # the mixin's
    build(which).save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    # the reference has no config to write; ours always states its architecture
    assert files == {"README.md", "model.safetensors"} | ({"config.json"} if which == "ours" else set())


@WHICH
def test_save_pretrained_with_config(which, tmp_path):  # the mixin's
    build(which).save_pretrained(tmp_path, config=CONFIG)
    assert {p.name for p in tmp_path.iterdir()} == {"README.md", "config.json", "model.safetensors"}
    saved = json.loads((tmp_path / "config.json").read_text())
    assert CONFIG.items() <= saved.items()  # the caller's config is kept (ours adds the model's own keys)


@WHICH
def test_save_as_safetensors(which, tmp_path):  # the mixin's
    model = build(which)
    model.save_pretrained(tmp_path)
    with open(tmp_path / "model.safetensors", "rb") as f:  # the safetensors header: its size, then JSON
        header_size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(header_size))
    assert set(header) - {"__metadata__"} == set(model.state_dict())


@WHICH
def test_save_pretrained_with_push_to_hub(which, tmp_path):  # the mixin's
    save_directory = tmp_path / "save"
    config = {"hello": "world"}
    mocked_model = build(which)
    mocked_model.push_to_hub = Mock()
    mocked_model._save_pretrained = Mock()  # disable _save_pretrained to speed-up
    mocked_model.save_pretrained(save_directory)
    mocked_model.push_to_hub.assert_not_called()
    mocked_model.save_pretrained(save_directory, push_to_hub=True, repo_id="CustomID", config=config)
    mocked_model.push_to_hub.assert_called_with(repo_id="CustomID", config=config, model_card_kwargs={})
    mocked_model.save_pretrained(save_directory, push_to_hub=True, config=config)
    mocked_model.push_to_hub.assert_called_with(repo_id="save", config=config, model_card_kwargs={})


def _no_config(**kwargs):
    """The mocked Hub of the mixin's tests for a repo without config.json."""
    raise RemoteEntryNotFoundError("no config", response=Mock())


@WHICH
def test_from_pretrained_model_id_only(which, monkeypatch):  # the mixin's (pytest-mock's patches as monkeypatch)
    monkeypatch.setattr("huggingface_hub.hub_mixin.hf_hub_download", Mock(side_effect=_no_config))
    cls = type(build(which))
    monkeypatch.setattr(cls, "_from_pretrained", from_pretrained_mock := Mock())
    model = cls.from_pretrained("namespace/repo_name")
    from_pretrained_mock.assert_called_once()
    assert model is from_pretrained_mock.return_value


def _pretend_file_download(model, tmp_dir: Path, fallback: bool, **kwargs):
    """The mixin's mocked Hub: model.safetensors (or, with ``fallback``, only pytorch_model.bin). The reference's
    repo has no config.json; ours has, as every repo our save_pretrained or push_to_hub writes."""
    filename = kwargs.get("filename")
    if filename == "config.json" and isinstance(model, DummyModel):
        raise RemoteEntryNotFoundError("no config", response=Mock())
    if filename == "model.safetensors" and fallback:
        raise RemoteEntryNotFoundError("not found", response=Mock())
    model.save_pretrained(tmp_dir)
    if fallback:
        (tmp_dir / "model.safetensors").unlink()
        torch.save(model.state_dict(), tmp_dir / constants.PYTORCH_WEIGHTS_NAME)
    return tmp_dir / filename


@WHICH
@pytest.mark.parametrize("fallback", [False, True])
def test_from_pretrained_model_from_hub_prefer_safetensor_or_fallback_pickle(which, fallback, monkeypatch, tmp_path):
    # the mixin's test_from_pretrained_model_from_hub_prefer_safetensor and ..._fallback_pickle
    model = build(which)
    monkeypatch.setattr("huggingface_hub.hub_mixin.hf_hub_download", hf_hub_download_mock := Mock())
    hf_hub_download_mock.side_effect = lambda **kwargs: _pretend_file_download(model, tmp_path, fallback, **kwargs)
    loaded = type(model).from_pretrained("namespace/repo_name")
    calls = dict(revision=None, cache_dir=None, force_download=False, token=None, local_files_only=False)
    hf_hub_download_mock.assert_any_call(repo_id="namespace/repo_name", filename="model.safetensors", **calls)
    if fallback:
        hf_hub_download_mock.assert_any_call(repo_id="namespace/repo_name", filename="pytorch_model.bin", **calls)
    _same_weights(loaded, model)  # beyond the mixin's "is not None"


@WHICH
def test_from_pretrained_model_id_and_revision(which, monkeypatch):  # the mixin's
    monkeypatch.setattr("huggingface_hub.hub_mixin.hf_hub_download", Mock(side_effect=_no_config))
    cls = type(build(which))
    monkeypatch.setattr(cls, "_from_pretrained", from_pretrained_mock := Mock())
    model = cls.from_pretrained("namespace/repo_name", revision="123456789")
    from_pretrained_mock.assert_called_once_with(
        model_id="namespace/repo_name",
        revision="123456789",
        cache_dir=None,
        force_download=False,
        local_files_only=False,
        token=None,
    )
    assert model is from_pretrained_mock.return_value


@WHICH
@pytest.mark.parametrize("path", ["relative", "absolute", "absolute string"])
def test_from_pretrained_to_path(which, path, tmp_path, monkeypatch):  # the mixin's, for its three path forms
    monkeypatch.chdir(tmp_path)
    save_directory = Path("model") if path == "relative" else tmp_path / "subfolder"
    model = build(which)
    model.save_pretrained(save_directory, config=CONFIG)
    reloaded = type(model).from_pretrained(str(save_directory) if path == "absolute string" else save_directory)
    assert CONFIG.items() <= reloaded._hub_mixin_config.items()  # the reference's is CONFIG exactly
    _same_weights(reloaded, model)
    other = tmp_path / "again"
    reloaded.save_pretrained(other)  # what was loaded with the config is saved with it
    assert CONFIG.items() <= json.loads((other / "config.json").read_text()).items()


@WHICH
def test_return_type_hint_from_pretrained(which):  # the mixin's
    hint = typing.get_type_hints(type(build(which)).from_pretrained)["return"]
    assert isinstance(hint, typing.TypeVar), "from_pretrained's return annotation is not a TypeVar"
    assert hint.__bound__.__forward_arg__ == "ModelHubMixin"


@WHICH
def test_push_to_hub(which, tmp_path, monkeypatch):  # the mixin's, the Hub mocked (create_repo, upload_folder)
    from huggingface_hub import HfApi

    pushed = {}

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        pushed.update(repo_id=repo_id, config=json.loads((Path(folder_path) / "config.json").read_text()))
        return f"https://huggingface.co/{repo_id}/commit/0"

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: type("R", (), {"repo_id": repo_id})())
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    build(which).push_to_hub(repo_id="user/push_to_hub", token="token", config=CONFIG)
    assert pushed["repo_id"] == "user/push_to_hub"
    assert CONFIG.items() <= pushed["config"].items()  # the reference's is CONFIG exactly


def test_generate_model_card(tmp_path):  # the mixin's, on our class's card metadata
    model = build("ours")
    card = model.generate_model_card()
    assert card.data.library_name == "mlp-mixer"
    assert card.data.license == "apache-2.0"
    assert card.data.pipeline_tag == "image-classification"
    assert card.data.tags == ["image-classification", "mlp-mixer", "model_hub_mixin", "pytorch_model_hub_mixin"]
    assert "https://arxiv.org/abs/2105.01601" in str(card)
    model.save_pretrained(tmp_path)
    card_reloaded = ModelCard.load(tmp_path / "README.md")
    assert str(card) == str(card_reloaded)
    assert card.data == card_reloaded.data


@pytest.mark.parametrize("which", ["reference", "ours"])
def test_load_no_config(which, tmp_path):  # the mixin's: the config comes from the constructor's arguments
    config_file = tmp_path / "config.json"
    if which == "reference":
        cls, model, override, value = DummyModelNoConfig, DummyModelNoConfig(num_classes=50), "state", "other"
        expected = {"num_classes": 50, "state": "layernorm"}
    else:
        cls, model, override, value = MLPMixer, MLPMixer(**{**TINY, "num_classes": 50}), "gelu", "exact"
        expected = {**model.config(), "image_size": TINY["image_size"]}
    assert model._hub_mixin_config == expected
    model.save_pretrained(tmp_path)
    saved = json.loads(config_file.read_text())
    same = [k for k in expected if k != "image_size"]  # ours stores (height, width)
    assert {k: saved[k] for k in same} == {k: expected[k] for k in same}
    reloaded = cls.from_pretrained(tmp_path)
    assert reloaded.num_classes == 50
    reloaded_with_default = cls.from_pretrained(tmp_path, **{override: value})
    assert reloaded_with_default.num_classes == 50
    assert getattr(reloaded_with_default, override) == value
    config_file.unlink()
    reloaded_with_default.save_pretrained(tmp_path)
    assert json.loads(config_file.read_text())[override] == value


def test_inheritance_and_sibling_classes():  # the mixin's: our tags are ours, not the reference's
    assert MLPMixer._hub_mixin_info.model_card_data.tags == [
        "image-classification",
        "mlp-mixer",
        "model_hub_mixin",
        "pytorch_model_hub_mixin",
    ]
    assert DummyModel._hub_mixin_info.model_card_data.tags == ["model_hub_mixin", "pytorch_model_hub_mixin"]


# ------------------------------------------------------------------------------------------ ours beyond the mixin's


def test_every_keyword_of_the_mixin_and_timm_style_overrides(model, tmp_path):
    """from_pretrained(src, num_classes=5, in_chans=1) as timm users write it; the mixin's keywords all work."""
    model.save_pretrained(tmp_path)
    kwargs = dict(force_download=True, token=None, cache_dir=tmp_path, local_files_only=True, revision=None)
    loaded = MLPMixer.from_pretrained(tmp_path, map_location="cpu", strict=True, **kwargs)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert loaded.classes == model.classes and loaded.preprocessing == model.preprocessing
    tuned = MLPMixer.from_pretrained(tmp_path, num_classes=5, in_chans=1, drop_path_rate=0.1)
    assert tuned.num_classes == 5 and tuned.classes == [] and tuned.head.weight.abs().sum() == 0
    torch.testing.assert_close(tuned.stem.weight, model.stem.weight.sum(1, keepdim=True))
    assert tuned.blocks[-1].drop_path.p == 0.1 and len(tuned.preprocessing.mean) == 1
    with pytest.raises(ValueError, match="in_channels is given twice"):
        MLPMixer.from_pretrained(tmp_path, in_channels=1, in_chans=1)
    with pytest.raises(ValueError, match="do not match a Mixer"):
        MLPMixer.from_pretrained(tmp_path, dim=48)
    with pytest.raises(FileNotFoundError, match="is neither a folder nor a Hub id"):
        MLPMixer.from_pretrained(tmp_path / "no" / "such.pt")


def test_config_json_rebuilds_the_model_by_the_mixins_generic_loader(model, tmp_path):
    """config.json states every constructor argument at the top: the mixin's own PyTorchModelHubMixin loader, with
    no code of ours, rebuilds the model from it (stochastic depth included) and loads the weights strictly."""
    model = MLPMixer(**TINY, drop_path=0.2, dropout=0.1)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    arguments = {k: config[k] for k in MLPMixer._hub_mixin_init_parameters if k in config}
    generic = PyTorchModelHubMixin._from_pretrained.__func__(
        MLPMixer, model_id=str(tmp_path), revision=None, cache_dir=None, force_download=False,
        local_files_only=False, token=None, strict=True, **arguments,
    )  # fmt: skip
    assert generic.blocks[-1].drop_path.p == 0.2 and generic.blocks[0].token_mixing.drop1.p == 0.1
    _same_weights(generic, model)
    assert issubclass(MLPMixer, ModelHubMixin)


def test_a_config_that_contradicts_the_model_is_refused(model, tmp_path):
    with pytest.raises(ValueError, match=r"config\['num_classes'\] = 7 contradicts the model's 10"):
        model.save_pretrained(tmp_path, config={"num_classes": 7})


def test_pickle_weights_are_read_weights_only(model, tmp_path):
    """A pytorch_model.bin that would run code is refused (torch.load weights_only), naming the file."""
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"stem.weight": Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pytorch_model.bin cannot be read as a weights-only state dict"):
        MLPMixer.from_pretrained(tmp_path)
