"""Training, cut as torchvision's reference script is: the settings (:mod:`.config`), what each epoch reads and
in which order (:mod:`.inputs`), the optimizer and schedule (:mod:`.optim`), the record of a run (:mod:`.state`),
building it (:mod:`.build`), its checkpoints (:mod:`.checkpointing`), the run folder (:mod:`.run_dir`), Ctrl-C
(:mod:`.signals`), the processes (:mod:`.distributed`) and the loop (:mod:`.loop`).

``from mlp_mixer.train import TrainConfig, train`` works as before; each name loads its module on first use, so
that reading the settings (the command line's help) does not import the loop.
"""

from ..utils.lazy import lazy_exports

_WHERE = {
    **dict.fromkeys(
        ("DATA_DEFAULTS", "DEFAULTS", "RECIPES", "TrainConfig", "default_output", "load_config_file", "resolve_config"),
        "config",
    ),
    **dict.fromkeys(("epoch_batches", "open_data"), "inputs"),
    "lr_factor": "optim",
    **dict.fromkeys(("train", "train_one_epoch", "evaluate_held_out"), "loop"),
}
__all__ = list(_WHERE)

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
