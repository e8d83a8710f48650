"""What is timed: which modes run here, and the interleaved loop's order."""

import pytest
import torch


@pytest.mark.parametrize(
    "capability,flags,expected",
    [("AVX2", {"avx2"}, False), ("AVX512", {"avx512f"}, False), ("AVX512", {"avx512f", "amx_bf16"}, True),
     ("AVX512", {"avx512f", "avx512_bf16"}, True), ("DEFAULT", {"amx_bf16"}, False)],
)  # fmt: skip
def test_native_bf16_needs_avx512_and_bf16_flags(monkeypatch, capability, flags, expected):
    from mlp_mixer import bench
    from mlp_mixer.utils import devices

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(devices, "cpu_flags", lambda: flags)
    assert bench.native_bf16(torch.device("cpu")) is expected
    reason = bench.mode_skip_reason("bf16", "infer", torch.device("cpu"))
    assert (reason is None) if expected else reason.startswith("skipped: no native bf16")


def test_time_interleaved_rotates_the_order():
    from mlp_mixer.bench import time_interleaved

    order = []
    calls = {name: (lambda n=name: order.append(n)) for name in "abc"}
    first, times = time_interleaved(calls, 3, torch.device("cpu"))
    assert order == list("abc") + list("abc") + list("bca") + list("cab")
    assert set(first) == set("abc") and all(len(t) == 3 for t in times.values())
