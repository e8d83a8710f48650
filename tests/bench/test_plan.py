"""The plan: the default one, and the filters naming a bad option."""

import pytest


def test_filters_name_the_bad_option():
    from mlp_mixer.bench import DEFAULT_PLAN, plan_from_filters

    assert plan_from_filters(None, None, None, None) == DEFAULT_PLAN
    plan = plan_from_filters(["tiny"], ["ours"], ["eager"], ["infer"])
    assert [(c.config, c.models, c.modes, c.tasks) for c in plan] == [("tiny", ("ours",), ("eager",), ("infer",))]
    with pytest.raises(ValueError, match="--models: unknown foo"):
        plan_from_filters(None, ["foo"], None, None)
    with pytest.raises(ValueError, match="unknown variant 'X/9'"):
        plan_from_filters(["X/9"], None, None, None)
