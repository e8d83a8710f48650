"""The full CPU (or CUDA) benchmark: ``mlp-mixer bench``'s default plan, then the resolution scaling study.

Results land in ``benchmarks/results/`` (``bench_<device>.{json,csv,md,png}``, ``scaling_<device>.{json,png}``).
Run it when the machine is quiet: the load average is recorded before and after, but not subtracted. The targets
judged are those of ``benchmarks/targets.toml``; options given here go to both commands (``--targets PATH`` judges
another file; the scaling study has no targets).

    .venv/bin/python benchmarks/run_all.py            # ~10 min + ~3 min on a 2-core CPU
    .venv/bin/python benchmarks/run_all.py --device cuda
"""

import sys

from mlp_mixer.commands import main

if __name__ == "__main__":
    extra = sys.argv[1:]
    sys.exit(main(["bench", *extra]) or main(["bench", "--scaling", *extra]))
