#!/usr/bin/env bash
# The GPU checks of issue #8 in one call, for a device machine (its python3 holds torch, timm, pytest, ...).
# Not run yet: no session so far had a GPU. Usage on the device, from the repository root, with the two
# pure-Python wheels the image lacks in .whl/ (pip download --no-deps mlxtend==0.25.0 mlp-mixer-pytorch==0.3.1):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && bash benchmarks/gpu_check.sh
# Everything lands in $OUT (or benchmarks/results): the card, the CUDA tests' log, bench_cuda.*, a NCCL run.
set -uo pipefail
out=${OUT:-benchmarks/results}
export PYTHONPATH=src:/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu_card.csv"
python3 -m pytest -q -m cuda tests -p no:cacheprovider 2>&1 | tail -n 20 | tee "$out/gpu_tests.log"
# The targets' size against timm at a GPU-sized batch (4 compilations: sized for a 15-minute device budget);
# bf16 is native on any card from Ampere on.
python3 -m mlp_mixer bench --device cuda --configs B/16 --models ours,timm --modes eager,compile,bf16 \
    --tasks infer,latency,train,memory --batch-size 128 --repeats 10 --output "$out" 2>&1 | tail -n 30
# NCCL: the training path of torchrun on the GPU (one process: one card), 1 epoch of the embedded default.
torchrun --nproc_per_node 1 -m mlp_mixer train --device cuda --amp --epochs 1 --output /tmp/nccl_run 2>&1 |
    tail -n 5 | tee "$out/gpu_torchrun.log"
