"""The names a run is filtered by (``--models``, ``--modes``, ``--tasks``), in a module that imports nothing, so
that ``mlp-mixer bench --help`` loads no torch. :mod:`.peers`, :mod:`.timing` and :mod:`.plan` read them from
here."""

MODELS = ("ours", "ours-tanh", "timm", "lucidrains", "seed")  # the peers (peers.py builds them)
MODES = ("eager", "compile", "bf16", "compile-bf16", "int8")  # how each is run (timing.py)
TASKS = ("infer", "latency", "train", "memory")  # what is measured (plan.py)
