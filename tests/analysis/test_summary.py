"""summary: the variants table, the layer-by-layer summary and the TensorBoard graph, as the commands show them."""

from mlp_mixer.commands import main
from mlp_mixer.model.variants import TINY


def test_models_lists_variants(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "B/16" in out and "59,880,472" in out and "12.60" in out and "H/14" in out


def test_summary_defaults_to_the_seed(capsys):
    assert main(["summary"]) == 0
    out = capsys.readouterr().out
    for count in ["393,728", "50,432", "50,372", "1,050,624", "1,049,088", "513,000", "Total params: 3,110,316"]:
        assert count in out
    assert "[1, 512, 14, 14]" in out and "[1, 196, 2048]" in out  # output shapes
    assert "act (GELU)" in out and "[1, 256, 512]" in out  # every layer of the seed's table is shown


def test_summary_with_variant_and_options(capsys):
    assert main(["summary", "S/32", "--image-size", "64", "--num-classes", "10"]) == 0
    out = capsys.readouterr().out
    assert "[1, 10]" in out and "[1, 4, 512]" in out


def test_summary_b16_macs(capsys):
    assert main(["summary", "B/16"]) == 0
    assert "Total MACs: 12,601,767,936" in capsys.readouterr().out


def test_graph_is_readable_by_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tiny_flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    assert main(["graph", "--logdir", str(tmp_path), *tiny_flags]) == 0
    accumulator = EventAccumulator(str(tmp_path))
    accumulator.Reload()
    graph = accumulator.Graph()
    ops = {node.op for node in graph.node}
    assert any("conv" in op.lower() for op in ops) and any("linear" in op.lower() for op in ops)
    assert len(graph.node) > 20
