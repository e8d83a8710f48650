"""Look inside a model: the variants table, a layer-by-layer summary, and a TensorBoard graph.

FLOPs come from ``torch.utils.flop_counter`` (exact per-op counts); torchinfo's mult-adds are wrong for a
Linear applied to a sequence, which is every layer of a Mixer. Everything here also runs on the meta device,
so H/14 is summarised without allocating its weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..model.mixer import MLPMixer, count_parameters, create_model
from ..model.variants import VARIANTS


@dataclass
class Layer:
    name: str  # dotted module path ("" for the model)
    type: str
    depth: int
    output_shape: tuple[int, ...] | None
    params: int  # parameters owned by this module itself, not its children
    macs: int  # multiply-accumulates of this module and its children


def count_macs(model: nn.Module, input_size: tuple[int, ...]) -> dict[str, int]:
    """Multiply-accumulates per module (dotted names, ``""`` = whole model) for one input of ``input_size``."""
    device = next(model.parameters()).device
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(input_size, device=device))
    root = type(model).__name__
    return {
        ("" if key == root else key.removeprefix(root + ".")): sum(ops.values()) // 2
        for key, ops in counter.get_flop_counts().items()
        if key != "Global"
    }


def layers(model: nn.Module, input_size: tuple[int, ...]) -> list[Layer]:
    """Every module in call order, with its output shape, own parameters and MACs."""
    order: list[str] = []
    shapes: dict[str, tuple[int, ...]] = {}
    names = {module: name for name, module in model.named_modules()}
    handles = []
    for module, name in names.items():
        handles.append(module.register_forward_pre_hook(lambda m, args, n=name: order.append(n)))
        handles.append(
            module.register_forward_hook(
                lambda m, args, out, n=name: shapes.__setitem__(n, tuple(out.shape)) if torch.is_tensor(out) else None
            )
        )
    try:
        macs = count_macs(model, input_size)
    finally:
        for handle in handles:
            handle.remove()
    modules = dict(model.named_modules())
    return [
        Layer(
            name=name,
            type=type(modules[name]).__name__,
            depth=name.count(".") + 1 if name else 0,
            output_shape=shapes.get(name),
            params=sum(p.numel() for p in modules[name].parameters(recurse=False)),
            macs=macs.get(name, 0),
        )
        for name in dict.fromkeys(order)  # first call only, in call order; containers never called are left out
    ]


def summary(model: nn.Module, input_size: tuple[int, ...] | None = None) -> str:
    """A layer table (type, output shape, parameters, MACs) like the seed's torchsummary output, with totals."""
    if input_size is None:
        if not isinstance(model, MLPMixer):
            raise ValueError("input_size is required for a model that is not an MLPMixer")
        input_size = (1, model.in_channels, *model.image_size)
    rows = layers(model, input_size)
    lines = []
    header = f"{'Layer (type)':<52}{'Output Shape':>22}{'Param #':>14}{'MACs':>18}"
    lines += ["-" * len(header), header, "=" * len(header)]
    for row in rows[1:]:  # the root is summarised by the totals below
        short = ".".join(row.name.split(".")[-2:]) if row.name.split(".")[-1].isdigit() else row.name.split(".")[-1]
        indent = row.depth - 1 - row.name.startswith("blocks.")  # a block sits at the top level, as "blocks.i"
        label = "  " * indent + f"{short} ({row.type})"
        shape = str(list(row.output_shape)) if row.output_shape else "--"
        params = f"{row.params:,}" if row.params else "--"
        lines.append(f"{label:<52}{shape:>22}{params:>14}{row.macs:>18,}")
    total = count_parameters(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lines += [
        "=" * len(header),
        f"Input shape: {list(input_size)}",
        f"Output shape: {list(rows[0].output_shape or ())}",
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Total MACs: {rows[0].macs:,} ({rows[0].macs / 1e9:.2f} G; FLOPs = 2 x MACs)",
        "-" * len(header),
    ]
    return "\n".join(lines)


@dataclass
class VariantRow:
    name: str
    depth: int
    patch_size: int
    dim: int
    token_dim: int
    channel_dim: int
    num_patches: int
    params: int  # with the 1000-class head
    params_without_head: int
    gmacs: float  # at 224 x 224, batch 1


def variants_table(image_size: int = 224) -> list[VariantRow]:
    """Every paper variant with its sizes, parameters and GMACs, computed on the meta device."""
    rows = []
    for name in VARIANTS:
        model = create_model(name, image_size=image_size, device="meta")
        macs = count_macs(model, (1, 3, image_size, image_size))[""]
        rows.append(
            VariantRow(
                name,
                model.depth,
                model.patch_size,
                model.dim,
                model.token_dim,
                model.channel_dim,
                model.num_patches,
                count_parameters(model),
                count_parameters(model, head=False),
                macs / 1e9,
            )
        )
    return rows


def format_variants(rows: list[VariantRow]) -> str:
    header = (
        f"{'variant':<8}{'depth':>6}{'patch':>6}{'dim':>6}{'token_dim':>10}{'channel_dim':>12}"
        f"{'tokens':>7}{'params':>14}{'no head':>8}{'GMACs':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.name:<8}{r.depth:>6}{r.patch_size:>6}{r.dim:>6}{r.token_dim:>10}{r.channel_dim:>12}"
            f"{r.num_patches:>7}{r.params:>14,}{r.params_without_head / 1e6:>7.0f}M{r.gmacs:>8.2f}"
        )
    return "\n".join(lines)


def write_graph(model: MLPMixer, logdir: str | Path) -> Path:
    """Trace ``model`` on one zero image and write its graph for ``tensorboard --logdir LOGDIR``."""
    import warnings

    from torch.utils.tensorboard import SummaryWriter

    logdir = Path(logdir)
    model = model.eval()
    example = torch.zeros(1, model.in_channels, *model.image_size)
    with SummaryWriter(log_dir=str(logdir), comment="model") as writer, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # add_graph traces with torch.jit, which warns
        writer.add_graph(model, (example,))
    return logdir
