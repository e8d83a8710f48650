#!/usr/bin/env bash
# The GPU checks of issues #8 and #26 in one call, for a device machine (its python3 holds torch, timm, pytest, ...).
# Not run yet: no session so far had a GPU. Usage on the device, from the repository root, with the two
# pure-Python wheels the image lacks in .whl/ (pip download --no-deps mlxtend==0.25.0 mlp-mixer-pytorch==0.3.1):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && bash benchmarks/gpu_check.sh
# Everything lands in $OUT (or benchmarks/results): the card, the CUDA tests' log, bench_cuda.* (B/16 against timm:
# eager, compiled, bf16 and compiled bf16; inference, latency, training, peak memory), the fraction of the card's
# dense bf16 peak, the main job on CUDA and a NCCL run. Sized for a 15-minute device budget.
set -uo pipefail
out=${OUT:-benchmarks/results}
export PYTHONPATH=src:/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu_card.csv"
python3 -m pytest -q -m cuda tests -p no:cacheprovider 2>&1 | tail -n 20 | tee "$out/gpu_tests.log"
# B/16 against timm at a GPU-sized batch; bf16 is native on any card from Ampere on.
python3 -m mlp_mixer bench --device cuda --configs B/16 --models ours,timm --modes eager,compile,bf16,compile-bf16 \
    --tasks infer,latency,train,memory --batch-size 256 --repeats 10 --output "$out" 2>&1 | tail -n 40
python3 benchmarks/gpu_peak.py "$out/bench_cuda.json" | tee "$out/gpu_peak.md"
# The main job on CUDA (its default recipe), then the training path of torchrun with NCCL (one process: one card).
python3 -m mlp_mixer train --device cuda --output /tmp/cuda_main 2>&1 | tail -n 3 | tee "$out/gpu_main_job.log"
cp /tmp/cuda_main/metrics.json "$out/gpu_main_job_metrics.json" 2>/dev/null
torchrun --nproc_per_node 1 -m mlp_mixer train --device cuda --amp --epochs 1 --output /tmp/nccl_run 2>&1 |
    tail -n 5 | tee "$out/gpu_torchrun.log"
