"""A fuzz generator over the command line's options (issue 25 item 4): every value Hypothesis can think of, for
every option of the verbs that check their options before work, through the real parser and the checks that run
before torch builds or reads anything (in process: no training, no model, no data).

Each case either is accepted, or ends in a clean usage error: argparse's exit 2 with a message, or the
ValueError/FileNotFoundError that ``mlp-mixer`` prints as one line, naming the option (its flag or its field).
Never another exception: no IndexError, OverflowError, ZeroDivisionError or TypeError from a value nobody checked.
"""

import argparse
import importlib
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlp_mixer.commands import VERBS
from mlp_mixer.commands.common import model_config_from_args, preflight

# A number in any spelling a user might type: huge, negative, fractional, not finite, lists of them, or text.
NUMBER = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 2, 3, 4, 7, 16, 28, 100, 4096, 100000, 2**31, 2**63, 2**64]),
    st.floats(allow_nan=True, allow_infinity=True),
)
VALUE = st.one_of(
    NUMBER.map(str),
    st.lists(NUMBER.map(str), min_size=1, max_size=4).map(",".join),
    st.sampled_from(["nan", "inf", "-inf", "1e6", "2,100", "nan,0,0", "", "x", "10,0.1,inf", "0,0,1"]),
)


def _parser(verb: str) -> tuple[argparse.ArgumentParser, object, list[argparse.Action]]:
    module = importlib.import_module(f"mlp_mixer.commands.{VERBS[verb]}")
    parser = argparse.ArgumentParser(prog=f"mlp-mixer {verb}", exit_on_error=True)
    module.add_arguments(parser)
    options = [a for a in parser._actions if a.option_strings and a.nargs != 0 and a.dest != "help"]
    return parser, module, options


def _check(verb: str, argv: list[str]) -> None:
    """What ``mlp-mixer VERB argv`` runs before its work: the parser, the torch-free checks, the verb's settings."""
    parser, _, _ = _parser(verb)
    args = parser.parse_args(argv)
    args.command = verb
    preflight(args)
    if verb in ("summary", "graph"):
        model_config_from_args(args)
    elif verb == "train":
        from mlp_mixer.commands.train import config_from_args
        from mlp_mixer.train.config import resolve_config

        resolve_config(config_from_args(args))


FIXED = {"predict": ["photo.png", "--checkpoint", "."], "eval": ["--checkpoint", "."], "summary": [], "graph": [],
         "train": []}  # fmt: skip
SKIP = {"--checkpoint", "--data", "--config", "--init-from", "--resume", "--output", "--logdir", "--device", "--model"}


@pytest.mark.parametrize("verb", list(FIXED))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_option_value_is_accepted_or_a_usage_error_naming_it(verb, data, capsys, tmp_path_factory):
    _, _, options = _parser(verb)
    options = [o for o in options if o.option_strings[0] not in SKIP]
    chosen = data.draw(st.lists(st.sampled_from(options), min_size=1, max_size=3, unique_by=lambda o: o.dest))
    argv = list(FIXED[verb])
    for option in chosen:
        argv += [f"{option.option_strings[0]}={data.draw(VALUE)}"]
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("fuzz"))  # nothing lands in the repository (nothing should land at all)
    try:
        _check(verb, argv)
    except SystemExit as exit:  # argparse: exit 2 and its message on stderr
        err = capsys.readouterr().err
        assert exit.code == 2 and "error: argument" in err, (argv, err)
    except (ValueError, FileNotFoundError) as err:
        names = [o.option_strings[0] for o in chosen] + [o.dest for o in chosen]
        assert any(n in str(err) for n in names) or "the options" in str(err), (argv, str(err))
    finally:
        os.chdir(cwd)
