"""``mlp-mixer bench``: speed and memory of our Mixer against timm, lucidrains' mlp-mixer-pytorch and the seed.

Every peer is built with the same architecture and loaded with the same weights in one process (outputs are
checked to agree), and timed interleaved: each repeat runs every model once, in a rotating order, so load from
other processes on a shared machine slows them alike and the ratios stay fair. Numbers are medians over repeats.
``ours`` computes exact (erf) GELU, as the peers do, so that all compute the same function; ``ours-tanh`` is the
same model with the official tanh GELU, what ``MLPMixer`` gives by default.

One module per part, each importing only those above it in this list:

- ``options``: the names of the peers, modes and tasks, importing nothing (what ``--help`` lists);
- ``peers``: the models compared, built to one configuration with the same weights (and the converter to
  lucidrains' layout, which exists only for that peer), and their inputs;
- ``memory``: peak memory of a training step, and the glibc setting behind ``--keep-freed-memory``;
- ``timing``: the modes, the calls that are timed, the interleaved loop and the GEMM-rate reference;
- ``plan``: the cases a run measures and the row a measurement becomes;
- ``targets``: the performance targets, read from ``benchmarks/targets.toml`` (or ``--targets``), judged on rows;
- ``report``: the printed tables and the JSON, CSV, Markdown and PNG files;
- ``scaling``: ``--scaling``, Mixer-B/16 against ViT-B/16 as the image grows;
- ``run``: a run of the plan (:func:`benchmark`) and :func:`bench`, the function under the command.

The names below are this package's API; benchmarks/*.py and the tests import them from here.
"""

from ..utils.lazy import lazy_exports

# Each name loads its module on first use (PEP 562), so that ``mlp-mixer bench --help`` reads :mod:`.options`
# without importing torch.
_WHERE = {
    **dict.fromkeys(("machine_info", "native_bf16"), "..utils.devices"),
    **dict.fromkeys(("TensorMemory", "keep_freed_memory", "peak_memory"), ".memory"),
    **dict.fromkeys(("MODELS", "MODES", "TASKS"), ".options"),
    **dict.fromkeys(("CONFIGS", "bench_config", "build_models", "to_lucidrains_state_dict", "_images"), ".peers"),
    **dict.fromkeys(("DEFAULT_PLAN", "Case", "Row", "plan_from_filters"), ".plan"),
    **dict.fromkeys(("format_report", "format_rows", "format_targets", "plot_results", "write_results"), ".report"),
    **dict.fromkeys(("bench", "benchmark", "run_case"), ".run"),
    **dict.fromkeys(("format_scaling", "plot_scaling"), ".scaling"),  # the function scaling: bench.scaling.scaling
    **dict.fromkeys(
        ("DEFAULT_TARGETS", "MEASURES", "Target", "check_targets", "find_targets", "load_targets", "speedup"),
        ".targets",
    ),
    **dict.fromkeys(
        ("gemm_call", "inference_runner", "mode_skip_reason", "time_interleaved", "train_runner"), ".timing"
    ),
}
__all__ = sorted(name for name in _WHERE if not name.startswith("_"))  # _images: benchmarks/fast_paths.py reads it

# Its modules too, as when this file imported them: ``import mlp_mixer.bench`` then ``mlp_mixer.bench.plan``
_MODULES = ("options", "peers", "memory", "timing", "plan", "targets", "report", "run", "scaling")

__getattr__, __dir__ = lazy_exports(__name__, _WHERE, _MODULES)
