"""Fuzz tests (hypothesis): random invalid input always gives one clear error, never a traceback.

* Library: ``agents.get(name).make(config, env, env_params)`` with one invalid config field must
  raise a ``ConfigError`` naming that field; ``hyper.validate()`` likewise for hyperparameters;
  unknown agent names and env ids raise a ``ValueError`` that names the known ones.
* CLI: ``experiments.train.main(argv)`` with random valid flags plus one invalid element (unknown
  agent, env id, flag, preset, resume folder, an out-of-range or ill-typed value for any field)
  must return 2 and print exactly one ``error:`` line on stderr and nothing on stdout. Training
  itself is replaced by a failure, so an input that is wrongly accepted fails fast.

Invalid values are generated from each field's type, so every field of every agent is covered:
wrong types for any field, negative integers for integer fields (counts and sizes), NaN/inf for
float fields, unknown names for string fields, empty/negative/non-integer tuples for tuple fields.
Every agent in ``agents.AGENTS`` that imports is fuzzed; one whose module does not import (another
engineer may be building it) is skipped with the import error as the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import math
import types
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agents
import envs
from experiments import train as train_cli
from rl.errors import ConfigError

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
CLI_SETTINGS = settings(SETTINGS, max_examples=30)  # each example parses a command line (~50 ms)
TRIAL_ENVS = ("CartPole-v1", "Pendulum-v1")  # discrete and continuous actions


def importable_agents() -> list:
    params = []
    for name in sorted(agents.AGENTS):
        try:
            importlib.import_module(agents.AGENTS[name])
        except Exception as err:  # noqa: BLE001 - reported as the skip reason
            params.append(
                pytest.param(
                    name, marks=pytest.mark.skip(reason=f"agents.{name} does not import: {type(err).__name__}: {err}")
                )
            )
        else:
            params.append(name)
    return params


AGENT_PARAMS = importable_agents()


def env_for(module) -> tuple[str, object, object]:
    """An env the agent's default config accepts (some agents need discrete or continuous actions)."""
    errors = []
    for env_id in TRIAL_ENVS:
        env, env_params = envs.make(env_id)
        try:
            module.make(module.Config(), env, env_params)
        except ConfigError as err:
            errors.append(str(err))
            continue
        return env_id, env, env_params
    raise AssertionError(f"{module.__name__}'s default Config fits none of {TRIAL_ENVS}: {errors}")


# ------------------------------------------------------------------------------- invalid values


def _origin(tp):
    return typing.get_origin(tp)


def _args(tp):
    return typing.get_args(tp)


def field_kind(tp) -> tuple[str, bool]:
    """('int' | 'float' | 'bool' | 'str' | 'tuple' | 'other', optional) of a field's annotation."""
    optional = False
    if _origin(tp) in (typing.Union, types.UnionType):
        members = [a for a in _args(tp) if a is not type(None)]
        optional = len(members) < len(_args(tp))
        tp = members[0] if len(members) == 1 else tp
    if tp is bool:
        return "bool", optional
    if tp is int:
        return "int", optional
    if tp is float:
        return "float", optional
    if tp is str:
        return "str", optional
    if _origin(tp) is tuple:
        return "tuple", optional
    return "other", optional


def resolved_fields(cls) -> list[tuple[str, object]]:
    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(cls)]


WRONG_TYPE = {
    "int": [2.5, "4", [4], {}, float("nan")],
    "float": ["0.1", [0.1, "x"], {}, "nan"],
    "bool": [2, "yes", "False", 0.5],
    "str": [3, ["tanh"], {}, b"tanh"],
    "tuple": [5, "64", [[64]], {}],
}
OUT_OF_RANGE = {
    "int": [-1, -7, -(10**9)],
    "float": [float("nan"), float("inf"), -float("inf")],
    "bool": [],
    "str": ["not-a-valid-choice", "", "TANH "],
    "tuple": [(), (0,), (-4, 8), (64, 2.5), ("64",)],
}


def invalid_values(kind: str, optional: bool) -> list:
    values = WRONG_TYPE.get(kind, [object()]) + OUT_OF_RANGE.get(kind, [])
    if not optional and kind != "other":
        values = values + [None]
    return values


def invalid_field(cls, *, hyper: bool):
    """Strategy of (field name, invalid value) over every field of a Config/Hyper dataclass.

    Hyperparameters only get wrong types and non-finite values: their ranges are agent-specific
    (a target entropy may be negative), while a negative count or size is never valid.
    """
    pairs = []
    for name, tp in resolved_fields(cls):
        kind, optional = field_kind(tp)
        values = invalid_values(kind, optional)
        if hyper:
            values = [v for v in values if not (isinstance(v, int) and not isinstance(v, bool))]
            values = [v for v in values if not isinstance(v, str) or kind != "float" or v != "nan"]
        pairs += [(name, v) for v in values]
    return st.sampled_from(pairs)


def assert_names_field(err: Exception, name: str) -> None:
    assert isinstance(err, ConfigError), f"{type(err).__name__} instead of ConfigError: {err}"
    assert err.field == name, f"the error names {err.field!r}, not the invalid field {name!r}: {err}"
    assert str(err).startswith(f"{name}="), str(err)


# ------------------------------------------------------------------------------- library


@pytest.mark.parametrize("agent", AGENT_PARAMS)
def test_library_rejects_every_invalid_config_field(agent):
    module = agents.get(agent)
    _, env, env_params = env_for(module)

    @SETTINGS
    @given(invalid_field(module.Config, hyper=False))
    def check(field_value):
        name, value = field_value
        config = dataclasses.replace(module.Config(), **{name: value})
        with pytest.raises(ConfigError) as caught:
            module.make(config, env, env_params)
        assert_names_field(caught.value, name)

    check()


@pytest.mark.parametrize("agent", AGENT_PARAMS)
def test_library_rejects_every_invalid_hyper_field(agent):
    module = agents.get(agent)

    @SETTINGS
    @given(invalid_field(module.Hyper, hyper=True))
    def check(field_value):
        name, value = field_value
        hyper = dataclasses.replace(module.Hyper(), **{name: value})
        with pytest.raises(ConfigError) as caught:
            hyper.validate()
        assert_names_field(caught.value, name)

    check()


@SETTINGS
@given(st.text(max_size=30))
def test_unknown_agent_and_env_names_raise_value_error(name):
    if name not in agents.AGENTS:
        with pytest.raises(ValueError, match="known agents"):
            agents.get(name)
    if name not in envs.registered_ids():
        with pytest.raises(ValueError, match="unknown env id|env id must be"):
            envs.make(name)


# ------------------------------------------------------------------------------- CLI


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def cli_text(value) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return str(value)


def cli_invalid_values(kind: str) -> list[str]:
    """Text that cannot be a valid value of a field of this kind on the command line."""
    return {
        "int": ["-1", "-12", "abc", "2.5", "", "1e3"],
        "float": ["nan", "inf", "-inf", "abc", "", "1,5"],
        "bool": ["yes", "maybe", "2", ""],
        "str": ["not-a-valid-choice", ""],
        "tuple": ["-3", "abc", "0", "2.5"],
    }.get(kind, ["abc"])


RUN_FLAGS = {  # TrainArgs/RunArgs fields and text that is never valid for them
    "num_seeds": ["0", "-2", "abc"],
    "num_chunks": ["0", "-1", "x"],
    "seed": ["-5", "abc", "4294967296"],
    "checkpoint_every": ["-1", "abc"],
    "keep_checkpoints": ["0", "-3"],
    "progress": ["maybe"],
}


def valid_flags(module) -> st.SearchStrategy[list[str]]:
    """A few flags with valid, cheap values (they never make an invalid input valid)."""
    options = [
        ["--num-seeds", "1"],
        ["--num-seeds", "2"],
        ["--num-chunks", "3"],
        ["--seed", "7"],
        ["--progress", "False"],
        ["--checkpoint-every", "0"],
        ["--env", "CartPole-v1"],
    ]
    return st.lists(st.sampled_from(options), max_size=3).map(lambda xs: [a for x in xs for a in x])


def invalid_element(agent: str, module, tmp: Path) -> st.SearchStrategy[tuple[str, list[str]]]:
    """(what, argv fragment) with exactly one thing wrong."""
    fields = []
    for cls in (module.Config, module.Hyper):
        hyper = cls is module.Hyper
        for name, tp in resolved_fields(cls):
            kind, _ = field_kind(tp)
            for text in cli_invalid_values(kind):
                if hyper and kind == "float" and text.lstrip("-").replace(".", "", 1).isdigit():
                    continue  # numeric hyper values may be valid for some agent
                fields.append((f"{name}={text!r}", [flag(name), *text.split(" ")] if text else [flag(name), ""]))
    for name, texts in RUN_FLAGS.items():
        fields += [(f"{name}={t!r}", [flag(name), t]) for t in texts]
    occupied = tmp / "occupied"
    occupied.mkdir(exist_ok=True)
    (occupied / "file").write_text("x")
    fields += [
        ("unknown flag", ["--no-such-flag", "1"]),
        ("env id", ["--env", "NoSuchEnv-v9"]),
        ("env id", ["--env", ""]),
        ("preset", ["--preset", "no-such-preset"]),
        ("preset file", ["--preset-file", str(tmp / "missing.json")]),
        ("out", ["--out", str(occupied)]),
        ("resume", ["--resume", str(tmp / "no-run-here")]),
        ("resume + flags", ["--resume", str(tmp), "--num-envs", "2"]),
    ]
    return st.sampled_from(fields)


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = train_cli.main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def no_training(monkeypatch, tmp_path):
    """Fail at once if a fuzz input gets as far as training; keep run folders in tmp_path."""
    import rl.engine.runner

    def refuse(*args, **kwargs):
        raise AssertionError("an invalid command line reached training")

    monkeypatch.setattr(rl.engine.runner, "train", refuse)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def assert_one_error_line(code: int, out: str, err: str, argv: list[str]) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert code == 2, f"exit {code} for {argv}; stderr: {err!r}"
    assert len(errors) == 1 and "Traceback" not in err, f"{argv}: stderr {err!r}"
    assert out == "", f"{argv}: stdout {out!r}"


@pytest.mark.parametrize("agent", AGENT_PARAMS)
def test_cli_rejects_invalid_input_with_one_error_line(agent, no_training):
    module = agents.get(agent)
    env_id, _, _ = env_for(module)

    @CLI_SETTINGS
    @given(valid=valid_flags(module), bad=invalid_element(agent, module, no_training), first=st.booleans())
    def check(valid, bad, first):
        what, fragment = bad
        valid = [a if a != "CartPole-v1" else env_id for a in valid]
        rest = fragment + valid if first else valid + fragment
        argv = [agent, *rest]
        code, out, err = run_main(argv)
        assert_one_error_line(code, out, err, argv)

    check()


@SETTINGS
@given(
    st.one_of(
        st.text(min_size=1, max_size=20).filter(lambda s: not s.startswith("-")), st.sampled_from(["", "--env", "-x"])
    )
)
def test_cli_unknown_agent_is_one_error_line(name):
    if name in agents.AGENTS:
        return
    code, out, err = run_main([name, "--env", "CartPole-v1"])
    assert_one_error_line(code, out, err, [name])


def test_invalid_values_are_really_invalid():
    # the generator's premise, spelled out: NaN/inf are never finite, negative counts never positive
    assert all(not math.isfinite(v) for v in OUT_OF_RANGE["float"])
    assert all(v < 0 for v in OUT_OF_RANGE["int"])
