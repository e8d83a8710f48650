"""Peak memory: the live-tensor count, and the glibc setting of --keep-freed-memory."""

import torch


def test_tensor_memory_counts_new_tensors_until_freed():
    from mlp_mixer.bench import TensorMemory

    base = torch.zeros(1024)
    with TensorMemory() as tracker:
        a = torch.ones(256, 1024)  # 1 MiB
        a.add_(1)  # in place: no new memory
        view = a[:10]  # a view: no new memory
        del a, view
        b = torch.ones(128, 1024)  # 0.5 MiB, after a was freed
        c = base * 2  # 4 KiB
    assert tracker.peak == 256 * 1024 * 4
    assert tracker.live == (128 * 1024 + 1024) * 4
    del b, c


def test_keep_freed_memory_sets_glibc_or_says_it_cannot(tmp_path):
    """In a child process (the setting is process-wide): True on glibc, and the run is labelled in its files."""
    import json
    import platform
    import subprocess
    import sys

    code = "from mlp_mixer.bench import keep_freed_memory; print(keep_freed_memory())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(platform.libc_ver()[0] == "glibc")
    if out == "True":
        argv = ["-m", "mlp_mixer", "bench", "--quick", "--keep-freed-memory", "--models", "ours", "--modes", "eager"]
        argv += ["--tasks", "infer", "--no-plot", "--output", str(tmp_path)]
        subprocess.run([sys.executable, *argv], capture_output=True, text=True, check=True)
        result = json.loads((tmp_path / "bench_cpu_quick_kept.json").read_text())
        assert result["machine"]["malloc"].startswith("glibc, freed memory kept")
