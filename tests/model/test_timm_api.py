"""timm's model API (``mlp_mixer.model.timm_api``): names, the head, per-block features, and a fine-tune through
timm's own pieces (data config, transform, optimizer with layer decay, EMA)."""

import pytest
import torch
from helpers import randomize
from PIL import Image

from mlp_mixer import MLPMixer, create_model
from mlp_mixer.model.pretrained import Preprocessing

timm = pytest.importorskip("timm")
optim, utils = pytest.importorskip("timm.optim"), pytest.importorskip("timm.utils")


def test_timm_names_are_accepted_beside_ours(tiny_config):
    ours = {k: v for k, v in tiny_config.items() if k not in ("in_channels", "image_size", "dim", "depth")}
    model = MLPMixer(
        **ours, in_chans=1, img_size=16, embed_dim=32, num_blocks=3, drop_rate=0.1, drop_path_rate=0.2,
        proj_drop_rate=0.3,
    )  # fmt: skip
    assert (model.in_channels, model.image_size, model.dim, model.depth) == (1, (16, 16), 32, 3)
    assert model.head_drop.p == 0.1 and model.blocks[-1].drop_path.p == 0.2 and model.dropout == 0.3
    assert create_model("S/16", in_chans=1, num_classes=3, device="meta").in_channels == 1
    with pytest.raises(ValueError, match="drop_path is given twice: as drop_path=0.1 and as timm's drop_path_rate"):
        MLPMixer(**tiny_config, drop_path=0.1, drop_path_rate=0.2)


def test_num_features_feature_info_and_classifier(tiny_model):
    assert tiny_model.num_features == tiny_model.head_hidden_size == 32
    assert tiny_model.feature_info == [dict(module=f"blocks.{i}", num_chs=32, reduction=4) for i in range(2)]
    assert tiny_model.get_classifier() is tiny_model.head


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reset_classifier_keeps_dtype_and_device_and_starts_at_zero(tiny_model, dtype):
    model = tiny_model.to(dtype)
    model.reset_classifier(5)
    assert model.head.weight.dtype == dtype and model.head.weight.abs().sum() == 0 and model.num_classes == 5
    out = model(torch.randn(1, 3, 16, 16, dtype=dtype))  # the first forward after the reset runs
    assert out.shape == (1, 5) and out.dtype == dtype and out.abs().sum() == 0
    model.reset_classifier(0, "")
    assert model(torch.randn(1, 3, 16, 16, dtype=dtype)).shape == (1, 16, 32)  # no pool, no head: the tokens
    with pytest.raises(ValueError, match="global_pool must be one of"):
        model.reset_classifier(3, "max")


def test_pretrained_cfg_is_the_preprocessing_and_timm_reads_it(tiny_model):
    tiny_model.preprocessing = Preprocessing((16, 16), (0.5,) * 3, (0.5,) * 3, 0.9, "bilinear")
    data = timm.data.resolve_data_config(model=tiny_model)
    assert data == dict(
        input_size=(3, 16, 16), interpolation="bilinear", mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=0.9,
        crop_mode="center",
    )  # fmt: skip
    assert tiny_model.default_cfg == tiny_model.pretrained_cfg
    tiny_model.pretrained_cfg = {**tiny_model.pretrained_cfg, "mean": (0.0,) * 3, "tag": "x", "hf_hub_id": None}
    assert tiny_model.preprocessing.mean == (0.0,) * 3 and tiny_model.pretrained_cfg["tag"] == "x"
    assert "hf_hub_id" not in tiny_model.pretrained_cfg


def test_forward_intermediates_formats_and_checkpointing(tiny_model):
    model = randomize(tiny_model).eval()
    x = torch.randn(2, 3, 16, 16)
    final, tokens = model.forward_intermediates(x, output_fmt="NLC")
    assert len(tokens) == 2 and all(t.shape == (2, 16, 32) for t in tokens)
    torch.testing.assert_close(final, model.forward_features(x))
    torch.testing.assert_close(model.pre_head_layer_norm(tokens[-1]), final)
    maps = model.forward_intermediates(x, indices=[-1], intermediates_only=True)  # timm's default: NCHW maps
    assert len(maps) == 1 and maps[0].shape == (2, 32, 4, 4)
    torch.testing.assert_close(maps[0].flatten(2).transpose(1, 2), tokens[-1])  # row-major tokens
    with pytest.raises(ValueError, match="output_fmt must be one of"):
        model.forward_intermediates(x, output_fmt="NHWC")
    with pytest.raises(ValueError, match="out of range for a model with depth 2"):
        model.forward_intermediates(x, indices=3)
    # grad checkpointing is honoured: blocks run under torch.utils.checkpoint, with the same gradients
    grads = []
    for enable in (False, True):
        model.train().set_grad_checkpointing(enable)
        model.zero_grad()
        model.forward_intermediates(torch.ones(2, 3, 16, 16))[0].square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1])


def test_prune_intermediate_layers(tiny_config):
    model = randomize(MLPMixer(**{**tiny_config, "depth": 4})).eval()
    x = torch.randn(1, 3, 16, 16)
    kept = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True, output_fmt="NLC")
    assert model.prune_intermediate_layers([0, 1], prune_norm=True) == [0, 1]
    assert len(model.blocks) == model.depth == 2 and model.num_classes == 0 and model.global_pool == ""
    torch.testing.assert_close(model.forward_intermediates(x, intermediates_only=True, output_fmt="NLC"), kept)


def test_group_matcher_gives_layer_decay_per_block(tiny_config):
    model = MLPMixer(**{**tiny_config, "depth": 3})
    optimizer = optim.create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    scales = sorted({round(g["lr_scale"], 6) for g in optimizer.param_groups})
    # stem, three blocks (the pre-head norm with the last), head: five layers, 0.75 apart
    assert scales == [round(0.75**i, 6) for i in range(4, -1, -1)]
    by_name = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            by_name[p] = group["lr_scale"]
    assert by_name[model.stem.weight] == pytest.approx(0.75**4)
    assert by_name[model.blocks[0].norm1.weight] == pytest.approx(0.75**3)
    assert by_name[model.head.weight] == pytest.approx(1.0)


def test_fine_tune_through_timms_pieces(tiny_config):
    """resolve_data_config -> create_transform -> create_optimizer_v2(layer_decay) -> ModelEmaV3, a few steps: the
    images are normalised as the weights need (mean = std = 0.5, bilinear), the blocks' learning rates differ."""
    torch.manual_seed(0)
    model = randomize(MLPMixer(**{**tiny_config, "depth": 3, "num_classes": 4}))
    data_config = timm.data.resolve_data_config(model=model)
    assert data_config["mean"] == (0.5,) * 3 and data_config["std"] == (0.5,) * 3
    assert data_config["interpolation"] == "bilinear" and data_config["input_size"] == (3, 16, 16)
    transform = timm.data.create_transform(**data_config, is_training=False)
    white, black = (Image.new("RGB", (20, 20), c) for c in ("white", "black"))
    torch.testing.assert_close(transform(white), torch.ones(3, 16, 16))  # pixels to [-1, 1], as the official
    torch.testing.assert_close(transform(black), -torch.ones(3, 16, 16))
    optimizer = optim.create_optimizer_v2(model, "sgd", lr=0.1, momentum=0.9, layer_decay=0.75)
    ema = utils.ModelEmaV3(model, decay=0.5)
    images = torch.stack([transform(Image.fromarray(torch.randint(0, 255, (20, 20, 3), dtype=torch.uint8).numpy()))
                          for _ in range(8)])  # fmt: skip
    labels = torch.arange(8) % 4
    stem_before, block_before = model.stem.weight.detach().clone(), model.blocks[2].norm1.weight.detach().clone()
    losses = []
    for step in range(4):
        for group in optimizer.param_groups:  # what timm's schedulers do with lr_scale
            group["lr"] = 0.1 * group["lr_scale"]
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema.update(model, step=step)
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert sorted({g["lr"] for g in optimizer.param_groups}) == pytest.approx([0.1 * 0.75**i for i in range(4, -1, -1)])
    assert not torch.equal(model.stem.weight, stem_before) and not torch.equal(
        model.blocks[2].norm1.weight, block_before
    )
    averaged = ema.module.stem.weight
    assert not torch.equal(averaged, model.stem.weight) and type(ema.module) is MLPMixer
