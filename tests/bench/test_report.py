"""The report: what the printed target table says when no targets file was found."""


def test_a_run_without_targets_says_none_were_judged():
    from mlp_mixer.bench import format_targets

    text = format_targets([])
    assert text.startswith("No targets were judged: no targets file (benchmarks/targets.toml")
    assert "--targets PATH" in text and "| target |" not in text
