"""``mlp-mixer bench``: speed and memory of our Mixer against timm, lucidrains' mlp-mixer-pytorch and the seed.

Every peer is built with the same architecture and loaded with the same weights in one process (outputs are
checked to agree), and timed interleaved: each repeat runs every model once, in a rotating order, so load from
other processes on a shared machine slows them alike and the ratios stay fair. Numbers are medians over repeats.
``ours`` computes exact (erf) GELU, as the peers do, so that all compute the same function; ``ours-tanh`` is the
same model with the official tanh GELU, what ``MLPMixer`` gives by default.

One module per part, each importing only those above it in this list:

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

from ..utils.devices import machine_info, native_bf16
from .memory import TensorMemory, keep_freed_memory, peak_memory
from .peers import CONFIGS, MODELS, bench_config, build_models, to_lucidrains_state_dict
from .peers import _images as _images  # benchmarks/fast_paths.py reads bench._images
from .plan import DEFAULT_PLAN, TASKS, Case, Row, plan_from_filters
from .report import format_report, format_rows, format_targets, plot_results, write_results
from .run import bench, benchmark, run_case
from .scaling import format_scaling, plot_scaling, scaling
from .targets import DEFAULT_TARGETS, MEASURES, Target, check_targets, find_targets, load_targets, speedup
from .timing import MODES, gemm_call, inference_runner, mode_skip_reason, time_interleaved, train_runner

__all__ = [
    "CONFIGS",
    "Case",
    "DEFAULT_PLAN",
    "DEFAULT_TARGETS",
    "MEASURES",
    "MODELS",
    "MODES",
    "Row",
    "TASKS",
    "Target",
    "TensorMemory",
    "bench",
    "bench_config",
    "benchmark",
    "build_models",
    "check_targets",
    "find_targets",
    "format_report",
    "format_rows",
    "format_scaling",
    "format_targets",
    "gemm_call",
    "inference_runner",
    "keep_freed_memory",
    "load_targets",
    "machine_info",
    "mode_skip_reason",
    "native_bf16",
    "peak_memory",
    "plan_from_filters",
    "plot_results",
    "plot_scaling",
    "run_case",
    "scaling",
    "speedup",
    "time_interleaved",
    "to_lucidrains_state_dict",
    "train_runner",
    "write_results",
]
