"""Whole runs: the real command on the tiny size, compiled models, CUDA, and the memory rows."""

import pytest
import torch

from mlp_mixer.model.variants import TINY


def test_checkpointing_lowers_measured_training_memory():
    from mlp_mixer import bench
    from mlp_mixer.bench.run import _memory_rows

    config = {**TINY, "depth": 6}
    models, _ = bench.build_models(config, ["ours"], torch.device("cpu"))
    x, y = bench._images(config, 16, torch.device("cpu"))
    rows = _memory_rows("tiny", models, x, y, torch.device("cpu"))
    plain, checkpointed = (r.peak_mib for r in rows)
    assert [r.checkpointing for r in rows] == [False, True]
    assert 0 < checkpointed < 0.7 * plain


def test_bench_cli_quick_writes_results(tmp_path, capsys):
    """The real command on the tiny size (no compile: slow to build): files, rows, targets, peers agreeing."""
    import csv
    import json

    from mlp_mixer import bench
    from mlp_mixer.commands import main

    code = main(["bench", "--quick", "--modes", "eager,bf16,int8", "--output", str(tmp_path), "--threads", "1"])
    assert code == 0
    result = json.loads((tmp_path / "bench_cpu_quick.json").read_text())
    assert (tmp_path / "bench_cpu_quick.png").read_bytes()[:4] == b"\x89PNG"
    assert "Targets are checked only where they are defined" in (tmp_path / "bench_cpu_quick.md").read_text()
    with open(tmp_path / "bench_cpu_quick.csv") as f:
        assert len(list(csv.DictReader(f))) == len(result["rows"])
    machine = result["machine"]
    assert machine["threads"] == 1 and machine["cpu_capability"] and len(machine["loadavg_after"]) == 3
    rows = {(r["model"], r["mode"], r["task"], r["checkpointing"]): r for r in result["rows"]}
    for model in bench.MODELS:
        for task in ("infer", "latency", "train"):
            r = rows[model, "eager", task, False]
            assert r["status"] == "ok" and r["median_s"] > 0 and len(r["times_s"]) == 2
            # ours-tanh is the same weights with the official tanh GELU: close, but a different function
            assert r["max_abs_diff"] < 1e-5 if model != "ours-tanh" else 1e-6 < r["max_abs_diff"] < 1e-2
        assert rows[model, "eager", "memory", False]["peak_mib"] > 0
        assert (model, "int8", "train", False) not in rows  # meaningless pairs are left out, not listed
        bf16 = rows[model, "bf16", "infer", False]["status"]
        assert bf16 == "ok" if bench.native_bf16(torch.device("cpu")) else bf16.startswith("skipped: no native bf16")
    assert rows["ours", "int8", "infer", False]["status"] == "ok"
    gemm = rows["gemm", "fp32", "infer", False]  # the GEMM reference, timed in the same loop
    assert gemm["gflops"] > 0 and len(gemm["times_s"]) == 2
    assert rows["ours", "eager", "infer", False]["gemm_fraction"] > 0
    # The targets are set for S/16 and B/16 at batch 32: a tiny smoke run lists them as not measured, not missed.
    assert [t["target"] for t in result["targets"]] == [t.name for t in bench.load_targets(result["targets_file"])]
    assert all(t["status"].startswith(("not run (defined for", "skipped")) for t in result["targets"])
    out = capsys.readouterr().out
    assert "| tiny | ours | eager | infer |" in out and "activation checkpointing" in out
    assert "| target |" not in out and "missed by" not in out and "Targets are checked only where" in out


def test_bench_cli_rejects_bad_options(capsys):
    from mlp_mixer.commands import main

    assert main(["bench", "--models", "ours,foo", "--output", "unused"]) == 2
    assert "--models: unknown foo" in capsys.readouterr().err


def test_bench_cli_judges_the_targets_file_it_is_given(tmp_path, capsys, monkeypatch):
    """--targets names the file; a target defined for tiny at batch 4 is judged on a --quick run; a missing file
    stops the command before it measures; with no file found, the report says no targets were judged."""
    import json

    from mlp_mixer.bench import targets
    from mlp_mixer.commands import main

    path = tmp_path / "tiny.toml"
    path.write_text(
        '[[target]]\nname = "tiny"\ndescription = "ours vs timm at tiny"\nrequired = 0.01\nconfigs = ["tiny"]\n'
        'batch = 4\nmeasure = "speedup"\nrow = "ours eager infer"\nreference = "timm eager infer"\n'
    )
    argv = ["bench", "--quick", "--models", "ours,timm", "--modes", "eager", "--tasks", "infer", "--no-plot"]
    assert main([*argv, "--output", str(tmp_path), "--targets", str(path)]) == 0
    result = json.loads((tmp_path / "bench_cpu_quick.json").read_text())
    assert result["targets_file"] == str(path)
    assert [(t["target"], t["config"], t["status"]) for t in result["targets"]] == [("tiny", "tiny", "met")]
    assert "| ours vs timm at tiny | tiny | 0.01 |" in capsys.readouterr().out

    assert main([*argv, "--output", str(tmp_path), "--targets", str(tmp_path / "none.toml")]) == 2
    assert f"--targets {tmp_path / 'none.toml'}: no such file" in capsys.readouterr().err

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(targets, "_CHECKOUT", tmp_path / "installed")  # as an installed package
    assert main([*argv, "--output", str(tmp_path / "out")]) == 0
    assert "No targets were judged: no targets file" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "bench_cpu_quick.json").read_text())["targets"] == []


@pytest.mark.slow
def test_compiled_models_agree_and_are_timed(tmp_path):
    from mlp_mixer import bench

    plan = [bench.Case("tiny", ("ours", "timm"), ("compile",), ("infer",))]
    result = bench.benchmark(plan, "cpu", batch_size=2, repeats=1, progress=False)
    # One row per model, plus the GEMM reference timed in the same loop.
    assert [(r["model"], r["status"]) for r in result["rows"]] == [("ours", "ok"), ("timm", "ok"), ("gemm", "ok")]
    models, _ = bench.build_models(bench.CONFIGS["tiny"], ["ours"], torch.device("cpu"))
    x, _ = bench._images(bench.CONFIGS["tiny"], 2, torch.device("cpu"))
    compiled = bench.inference_runner(models["ours"], "compile", torch.device("cpu"), x)()
    with torch.no_grad():
        torch.testing.assert_close(compiled, models["ours"](x), atol=1e-4, rtol=1e-4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bench_runs_bf16_and_measures_memory():
    from mlp_mixer import bench

    plan = [bench.Case("tiny", ("ours", "timm"), ("eager", "bf16", "int8"), ("infer", "memory"))]
    result = bench.benchmark(plan, "cuda", batch_size=4, repeats=2, progress=False)
    rows = {(r["model"], r["mode"], r["task"], r["checkpointing"]): r for r in result["rows"]}
    assert result["machine"]["gpu"] and result["machine"]["device"].startswith("cuda")
    assert rows["ours", "eager", "infer", False]["status"] == "ok"
    bf16 = rows["ours", "bf16", "infer", False]["status"]
    assert bf16 == "ok" if torch.cuda.is_bf16_supported() else bf16.startswith("skipped: no native bf16")
    assert rows["ours", "int8", "infer", False]["status"].startswith("skipped: int8")
    assert rows["ours", "eager", "memory", False]["peak_mib"] > rows["ours", "eager", "memory", True]["peak_mib"] > 0
