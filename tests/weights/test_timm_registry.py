"""Our Mixer inside timm: timm's own generic model tests, run on ours beside timm's ``MlpMixer``, and loading what
``save_pretrained`` wrote with ``timm.create_model("local-dir:DIR", pretrained=True)``.

The tests marked "timm's" are our adaptation of huggingface/pytorch-image-models ``tests/test_models.py`` at commit
aa4b5850c1543fa488abf260f18390eda46cf85d: the same steps and assertions, each run on timm's ``mixer_s16_224`` and
on our ``mlp_mixer_s16_224``, built by the same ``timm.create_model`` call at a tiny size (4 blocks of width 32 on
64x64 images). What changed: the size is set on the call (and the cfg's input size with it), and "pretrained"
reads a local file of timm's weights instead of the Hub (no network here).
"""

import json
import math
import subprocess
import sys

import pytest
import torch

import mlp_mixer

timm = pytest.importorskip("timm")
from timm.layers import get_channel_dim, get_spatial_dim  # noqa: E402
from timm.models import get_notrace_functions, get_notrace_modules  # noqa: E402
from torchvision.models.feature_extraction import (  # noqa: E402
    NodePathTracer,
    create_feature_extractor,
    get_graph_node_names,
)

WHICH = pytest.mark.parametrize("which", ["timm", "ours"])


def create(which: str, **kwargs):
    """The reference or ours, tiny (4x4 patches of 16 pixels, width 32, 4 blocks), through timm's builder.

    Ours: ``timm.create_model("mlp_mixer_s16_224", ...)``. timm's ``mixer_s16_224`` entry point fixes its width and
    depth, so the reference is what that entry point runs, ``_create_mixer("mixer_s16_224", ...)``, with the sizes
    passed: the same ``build_model_with_cfg`` call, cfg and weight loading.
    """
    overlay = {"input_size": (kwargs.get("in_chans", 3), 64, 64), **kwargs.pop("pretrained_cfg_overlay", {})}
    tiny = dict(img_size=64, embed_dim=32, num_blocks=4, mlp_ratio=(0.5, 2.0), pretrained_cfg_overlay=overlay)
    if which == "ours":
        return timm.create_model("mlp_mixer_s16_224", **{**tiny, **kwargs})
    from timm.models.mlp_mixer import _create_mixer

    return _create_mixer("mixer_s16_224", **{"patch_size": 16, **tiny, **kwargs})


def _get_input_size(model):  # timm's helper for a model, without its size limits (ours are tiny)
    cfg = model.default_cfg
    return cfg["input_size"] if cfg.get("fixed_input_size") else cfg["input_size"]


@pytest.fixture(scope="module")
def timm_weights(tmp_path_factory):
    """A file of timm ``MlpMixer`` weights (timm's names, 1000 classes), non-zero everywhere."""
    torch.manual_seed(0)
    model = create("timm")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = tmp_path_factory.mktemp("timm") / "weights.pth"
    torch.save(model.state_dict(), path)
    return path


@WHICH
def test_model_forward(which):  # timm's
    model = create(which).eval()
    inputs = torch.randn((1, *_get_input_size(model)))
    outputs = model(inputs)
    assert outputs.shape[0] == 1
    assert not torch.isnan(outputs).any(), "Output included NaNs"
    model.set_grad_checkpointing()
    outputs2 = model(inputs)
    assert torch.allclose(outputs, outputs2, rtol=1e-4, atol=1e-5), "Output does not match"


@WHICH
def test_model_backward(which):  # timm's
    model = create(which, num_classes=42)
    num_params = sum(x.numel() for x in model.parameters())
    model.train()
    outputs = model(torch.randn((2, *_get_input_size(model))))
    outputs.mean().backward()
    for n, x in model.named_parameters():
        assert x.grad is not None, f"No gradient for {n}"
    num_grad = sum(x.grad.numel() for x in model.parameters() if x.grad is not None)
    assert outputs.shape[-1] == 42
    assert num_params == num_grad, "Some parameters are missing gradients"
    assert not torch.isnan(outputs).any(), "Output included NaNs"


@WHICH
def test_model_default_cfgs_non_std(which):  # timm's (Mixers are among its "non-standard" models)
    model = create(which).eval()
    assert model.num_classes >= 0 and model.num_features > 0 and model.head_hidden_size > 0
    state_dict = model.state_dict()
    cfg = model.default_cfg
    input_tensor = torch.randn((1, *_get_input_size(model)))
    outputs = model.forward_features(input_tensor)
    outputs_pre = model.forward_head(outputs, pre_logits=True)
    feat_dim = -1 if outputs.ndim == 3 else 1
    assert outputs.shape[feat_dim] == model.num_features
    assert outputs_pre.shape[1] == model.head_hidden_size

    model.reset_classifier(0)
    assert model.num_classes == 0
    outputs = model.forward(input_tensor)
    assert outputs.shape[feat_dim if outputs.ndim == 3 else 1] == model.head_hidden_size, (
        "pooled num_features != config"
    )
    assert outputs.shape == outputs_pre.shape

    model = create(which, num_classes=0).eval()
    outputs = model.forward(input_tensor)
    assert outputs.shape[-1 if outputs.ndim == 3 else 1] == model.num_features

    if cfg.get("num_classes", None):  # the classifier and the first conv named in the cfg exist
        for c in (cfg["classifier"],) if isinstance(cfg["classifier"], str) else cfg["classifier"]:
            assert c + ".weight" in state_dict.keys(), f"{c} not in model params"
    for fc in (cfg["first_conv"],) if isinstance(cfg["first_conv"], str) else cfg["first_conv"]:
        assert fc + ".weight" in state_dict.keys(), f"{fc} not in model params"

    # reset_classifier(0, '') and global_pool='' at construction: tokens out, (B, S, C)
    model.reset_classifier(0, "")
    assert model(input_tensor).shape == (1, 16, 32)
    assert create(which, num_classes=0, global_pool="").eval()(input_tensor).shape == (1, 16, 32)


@WHICH
def test_model_load_pretrained(which, timm_weights):  # timm's, with a local file for the Hub
    overlay = {"file": str(timm_weights)}
    five = create(which, pretrained=True, in_chans=1, num_classes=5, pretrained_cfg_overlay=overlay)
    headless = create(which, pretrained=True, in_chans=1, num_classes=0, pretrained_cfg_overlay=overlay)
    assert five.num_classes == 5 and headless.num_classes == 0
    # beyond timm's test: both read the same weights, the stem adapted to one channel the same way
    stored = torch.load(timm_weights, weights_only=True)
    stem = five.stem.proj.weight if which == "timm" else five.stem.weight
    torch.testing.assert_close(stem, stored["stem.proj.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(five.blocks[3].norm2.weight, stored["blocks.3.norm2.weight"], rtol=0, atol=0)


@WHICH
def test_model_features_pretrained(which, timm_weights):  # timm's (it skips Mixers; ours must not need to)
    model = create(which, pretrained=True, features_only=True, pretrained_cfg_overlay={"file": str(timm_weights)})
    assert len(model(torch.randn(1, 3, 64, 64))) == 3


@WHICH
def test_model_forward_torchscript(which):  # timm's
    with timm.set_scriptable(True):
        model = create(which)
    model.eval()
    scripted = torch.jit.script(model)
    x = torch.randn((1, *_get_input_size(model)))
    outputs = scripted(x)
    assert outputs.shape[0] == 1
    assert not torch.isnan(outputs).any(), "Output included NaNs"
    torch.testing.assert_close(outputs, model(x))  # beyond timm's: the scripted model computes the same


@WHICH
@pytest.mark.parametrize("getter", [False, True])
def test_model_forward_intermediates_features(which, getter):  # timm's (and its features_only variant)
    extra = {"feature_cls": "getter"} if getter else {}
    model = create(which, features_only=True, **extra).eval()
    expected_channels = model.feature_info.channels()
    expected_reduction = model.feature_info.reduction()
    input_size = _get_input_size(model)
    output_fmt = getattr(model, "output_fmt", "NCHW")
    feat_axis, spatial_axis = get_channel_dim(output_fmt), get_spatial_dim(output_fmt)
    outputs = model(torch.randn((1, *input_size)))
    assert len(expected_channels) == len(outputs) == 3
    spatial_size = input_size[-2:]
    for e, r, o in zip(expected_channels, expected_reduction, outputs, strict=True):
        assert e == o.shape[feat_axis]
        assert o.shape[spatial_axis[0]] <= math.ceil(spatial_size[0] / r) + 1
        assert o.shape[spatial_axis[1]] <= math.ceil(spatial_size[1] / r) + 1
        assert o.shape[0] == 1
        assert not torch.isnan(o).any()


@WHICH
def test_model_forward_intermediates(which):  # timm's
    model = create(which).eval()
    feature_info = timm.models.FeatureInfo(model.feature_info, len(model.feature_info))
    expected_channels, expected_reduction = feature_info.channels(), feature_info.reduction()
    assert len(expected_channels) >= 3
    input_size = _get_input_size(model)
    output_fmt = "NCHW"
    feat_axis, spatial_axis = get_channel_dim(output_fmt), get_spatial_dim(output_fmt)
    inpt = torch.randn((1, *input_size))
    output, intermediates = model.forward_intermediates(inpt, output_fmt=output_fmt)
    assert len(expected_channels) == len(intermediates)
    spatial_size = input_size[-2:]
    for e, r, o in zip(expected_channels, expected_reduction, intermediates, strict=True):
        assert e == o.shape[feat_axis]
        assert o.shape[spatial_axis[0]] <= math.ceil(spatial_size[0] / r) + 1
        assert o.shape[spatial_axis[1]] <= math.ceil(spatial_size[1] / r) + 1
        assert o.shape[0] == 1
        assert not torch.isnan(o).any()
    output2 = model.forward_features(inpt)
    assert torch.allclose(output, output2)
    model.set_grad_checkpointing()
    output3, _ = model.forward_intermediates(inpt, output_fmt=output_fmt)
    assert torch.allclose(output, output3, rtol=1e-4, atol=1e-5), "Output does not match"


def _create_fx_model(model, train=False):  # timm's
    tracer_kwargs = dict(
        leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(), param_shapes_constant=True
    )
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    eval_return_nodes = [eval_nodes[-1]]
    train_return_nodes = [train_nodes[-1]]
    if train:
        tracer = NodePathTracer(**tracer_kwargs)
        graph = tracer.trace(model)
        graph_nodes = list(reversed(graph.nodes))
        output_node_names = [n.name for n in graph_nodes[0]._input_nodes.keys()]
        graph_node_names = [n.name for n in graph_nodes]
        output_node_indices = [-graph_node_names.index(node_name) for node_name in output_node_names]
        train_return_nodes = [train_nodes[ix] for ix in output_node_indices]
    return create_feature_extractor(
        model, train_return_nodes=train_return_nodes, eval_return_nodes=eval_return_nodes, tracer_kwargs=tracer_kwargs
    )


@WHICH
def test_model_forward_fx(which):  # timm's
    model = create(which).eval()
    with torch.inference_mode():
        inputs = torch.randn((1, *_get_input_size(model)))
        outputs = model(inputs)
        fx_outputs = torch.cat(tuple(_create_fx_model(model)(inputs).values()))
    assert torch.all(fx_outputs == outputs)
    assert outputs.shape[0] == 1
    assert not torch.isnan(outputs).any(), "Output included NaNs"


@WHICH
def test_model_backward_fx(which):  # timm's
    model = create(which, num_classes=42).train()
    num_params = sum(x.numel() for x in model.parameters())
    input_size = _get_input_size(model)
    model = _create_fx_model(model, train=True)
    outputs = torch.cat(tuple(model(torch.randn((2, *input_size))).values()))
    outputs.mean().backward()
    for n, x in model.named_parameters():
        assert x.grad is not None, f"No gradient for {n}"
    num_grad = sum(x.grad.numel() for x in model.parameters() if x.grad is not None)
    assert outputs.shape[-1] == 42
    assert num_params == num_grad, "Some parameters are missing gradients"
    assert not torch.isnan(outputs).any(), "Output included NaNs"


@WHICH
def test_model_forward_fx_torchscript(which):  # timm's
    with timm.set_scriptable(True):
        model = create(which)
    model.eval()
    input_size = _get_input_size(model)
    model = torch.jit.script(_create_fx_model(model))
    with torch.inference_mode():
        outputs = torch.cat(tuple(model(torch.randn((1, *input_size))).values()))
    assert outputs.shape[0] == 1
    assert not torch.isnan(outputs).any(), "Output included NaNs"


# ------------------------------------------------------------------------------------------ ours beyond timm's


def test_every_paper_variant_is_registered_and_builds_ours():
    from mlp_mixer import PAPER_VARIANTS, VARIANTS, MLPMixer

    names = timm.list_models("mlp_mixer*")
    assert set(names) == {"mlp_mixer"} | {"mlp_mixer_" + v.replace("/", "").lower() + "_224" for v in PAPER_VARIANTS}
    with torch.device("meta"):
        b16 = timm.create_model("mlp_mixer_b16_224", num_classes=10)
    assert type(b16) is MLPMixer and b16.num_classes == 10
    assert {k: b16.config()[k] for k in VARIANTS["B/16"] if k != "num_classes"} == {
        **{k: v for k, v in VARIANTS["B/16"].items() if k != "num_classes"},
        "image_size": [224, 224],
    }
    # our names work through timm too; one value under both spellings is an error
    assert timm.create_model("mlp_mixer", in_channels=1, image_size=32, patch_size=8).in_channels == 1
    with pytest.raises(ValueError, match="in_channels is given twice"):
        timm.create_model("mlp_mixer", in_channels=1, in_chans=1)


def test_tags_name_the_weights_and_their_gelu():
    b16 = timm.models.get_pretrained_cfg("mlp_mixer_b16_224.goog_in1k")
    # timm's goog_in21k_ft_in1k file is the official ImageNet-1k model (76.6% in timm's results)
    assert b16.hf_hub_id == "timm/mixer_b16_224.goog_in21k_ft_in1k" and b16.num_classes == 1000
    assert timm.models.get_pretrained_cfg("mlp_mixer_b16_224.goog_in21k").num_classes == 21843
    with torch.device("meta"):
        assert timm.create_model("mlp_mixer_b16_224.goog_in1k").gelu == "tanh"
        assert timm.create_model("mlp_mixer_b16_224.miil_in21k_ft_in1k").gelu == "exact"
        assert timm.create_model("mlp_mixer_b16_224.miil_in21k_ft_in1k").preprocessing.mean == (0.0,) * 3


def test_save_pretrained_folder_loads_with_timm_local_dir(model, tmp_path):
    """What save_pretrained writes, timm builds from config.json (architecture, model_args, pretrained_cfg) and
    loads with its own loader: the same logits, classes and preprocessing; timm's fine-tuning kwargs work."""
    model.drop_path = 0.0
    directory = tmp_path / "saved"
    model.save_pretrained(directory)
    config = json.loads((directory / "config.json").read_text())
    assert config["architecture"] == "mlp_mixer" and config["model_args"]["in_chans"] == 3
    loaded = timm.create_model(f"local-dir:{directory}", pretrained=True).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert loaded.classes == model.classes and loaded.preprocessing == model.preprocessing
    data = timm.data.resolve_data_config(model=loaded)
    assert data["mean"] == model.preprocessing.mean and data["crop_pct"] == model.preprocessing.crop_pct
    tuned = timm.create_model(f"local-dir:{directory}", pretrained=True, num_classes=3, in_chans=1, drop_path_rate=0.1)
    assert tuned.num_classes == 3 and tuned.in_channels == 1 and tuned.blocks[-1].drop_path.p == 0.1
    torch.testing.assert_close(tuned.stem.weight, model.stem.weight.sum(1, keepdim=True))
    assert tuned.head.weight.abs().sum() == 0  # timm dropped the 10-class head; ours starts at zero


def test_import_hook_registers_once_timm_is_imported_and_not_before():
    code = (
        "import sys, importlib.util, mlp_mixer; assert 'timm' not in sys.modules and 'torch' not in sys.modules; "
        "assert importlib.util.find_spec('timm') is not None; "  # a look that imports nothing keeps the hook
        "import timm; print(timm.is_model('mlp_mixer_b16_224'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
    assert mlp_mixer.__name__ == "mlp_mixer"
