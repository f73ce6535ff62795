"""The search space of a sweep: which names an agent lets it vary, and their values.

:func:`sweepable` lists an agent's ``Hyper`` fields (traced: one compile for all their values)
and ``Config`` fields (shape-setting: one compile per value). Grid values are given as lists or
as text (``"1e-4,3e-4"``, parsed by the field's type); random search draws from a
:class:`Distribution` (``uniform:LOW:HIGH``, ``loguniform:LOW:HIGH``, ``choice:V1,V2,...``).
Every value is checked here, with a :class:`~rl.errors.ConfigError` naming the name and the
value, before anything compiles.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rl.errors import ConfigError

__all__ = ["Distribution", "Param", "parse_distribution", "parse_spec", "sweepable"]

SAMPLE_DIGITS = 6  # significant digits kept of a randomly drawn value
SAMPLERS = ("uniform", "loguniform", "choice")


@dataclass(frozen=True)
class Param:
    """One sweepable name of an agent."""

    name: str
    traced: bool  # a Hyper field (one compile) rather than a Config field (one compile per value)
    type: Any  # the field's annotation, resolved
    default: Any


def sweepable(agent: types.ModuleType) -> dict[str, Param]:
    """Every name an agent lets a sweep vary: its ``Hyper`` and ``Config`` fields."""
    out: dict[str, Param] = {}
    for cls, traced in ((agent.Config, False), (agent.Hyper, True)):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            out[f.name] = Param(f.name, traced, hints.get(f.name, type(default)), default)
    return out


def _names_help(params: Mapping[str, Param]) -> str:
    traced = ", ".join(n for n, p in params.items() if p.traced)
    static = ", ".join(n for n, p in params.items() if not p.traced)
    return f"sweepable names: traced (one compile): {traced}; shape-setting (one compile per value): {static}"


def _check_name(params: Mapping[str, Param], name: str, what: str) -> Param:
    if name not in params:
        close = difflib.get_close_matches(name, params, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(what, name, f"unknown hyperparameter; {hint}{_names_help(params)}")
    return params[name]


def parse_spec(spec: str, what: str) -> tuple[str, str]:
    """``"NAME=REST"`` -> ``(NAME, REST)``, as given to ``--grid`` and ``--sample``."""
    name, sep, rest = spec.partition("=")
    if not sep or not name.strip():
        example = "learning_rate=1e-4,3e-4" if what == "grid" else "learning_rate=loguniform:1e-5:1e-2"
        raise ConfigError(what, spec, f"write NAME=VALUES, e.g. {example}")
    return name.strip(), rest.strip()


def _union_args(t: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        return typing.get_args(t)
    return None


def _parse_text(t: Any, text: str) -> Any:
    """A value of type ``t`` from text; raises ValueError when it does not parse."""
    union = _union_args(t)
    if union is not None:
        if text.lower() == "none" and type(None) in union:
            return None
        for option in union:
            if option is not type(None):
                try:
                    return _parse_text(option, text)
                except ValueError:
                    pass
        raise ValueError(text)
    if typing.get_origin(t) is tuple:
        (elem, *_rest) = typing.get_args(t) or (str,)
        parts = text.split("x")
        if any(not p for p in parts):
            raise ValueError(text)
        return tuple(_parse_text(elem, p) for p in parts)
    if t is bool:
        low = text.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ValueError(text)
    if t is int:
        try:
            return int(text)
        except ValueError:
            value = float(text)
            if not value.is_integer():
                raise
            return int(value)
    if t is float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(text)
        return value
    if t is str:
        return text
    raise ValueError(text)


def _type_hint(t: Any) -> str:
    union = _union_args(t)
    if union is not None:
        return " or ".join(_type_hint(u) for u in union)
    if typing.get_origin(t) is tuple:
        return "integers joined by x, e.g. 64x64"
    return {
        bool: "true or false",
        int: "an integer",
        float: "a finite number",
        str: "a string",
        type(None): "none",
    }.get(t, str(t))


def _value(param: Param, item: Any, what: str) -> Any:
    """One swept value: text is parsed by the field's type, other values are checked."""
    if isinstance(item, str):
        text = item.strip()
        if not text:
            raise ConfigError(what, item, f"an empty value; each value must be {_type_hint(param.type)}")
        try:
            return _parse_text(param.type, text)
        except ValueError:
            raise ConfigError(what, item, f"must be {_type_hint(param.type)}") from None
    if isinstance(item, list):
        item = tuple(item)
    if param.traced or param.type is float:
        if isinstance(item, bool) or not isinstance(item, (int, float, np.number)) or not math.isfinite(item):
            raise ConfigError(what, item, "must be a finite number")
        return float(item)
    return item


def _grid_values(param: Param, values: Any, what: str | None = None) -> list[Any]:
    what = what or f"grid {param.name}"
    items = values.split(",") if isinstance(values, str) and values.strip() else values
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or len(items) == 0:
        raise ConfigError(
            what,
            values,
            "an empty or malformed value list; give one or more values, "
            f"e.g. {param.name}=V1,V2 (each {_type_hint(param.type)})",
        )
    out = [_value(param, item, what) for item in items]
    seen = []
    for v in out:
        if v in seen:
            raise ConfigError(what, values, f"lists {v!r} twice; give each value once")
        seen.append(v)
    return out


@dataclass(frozen=True)
class Distribution:
    """Where random search draws one swept name from.

    ``uniform``/``loguniform`` between ``low`` and ``high`` (floats only;
    loguniform draws ``exp(U(log low, log high))``), or ``choice`` among
    ``choices`` with equal probability (any type, shape-setting ones too).
    Written on the command line as ``uniform:LOW:HIGH``,
    ``loguniform:LOW:HIGH`` and ``choice:V1,V2,...``.
    """

    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()

    def draw(self, rng: np.random.Generator, n: int) -> list[Any]:
        if self.kind == "choice":
            return [self.choices[i] for i in rng.integers(0, len(self.choices), size=n)]
        lo, hi = float(self.low), float(self.high)  # type: ignore[arg-type]
        if self.kind == "loguniform":
            raw = np.exp(rng.uniform(math.log(lo), math.log(hi), size=n))
        else:
            raw = rng.uniform(lo, hi, size=n)
        # a readable value (6 significant digits, far finer than any tuning needs)
        return [float(f"{x:.{SAMPLE_DIGITS}g}") for x in raw]

    def spec(self) -> str:
        if self.kind == "choice":
            return "choice:" + ",".join(str(_display(c)) for c in self.choices)
        return f"{self.kind}:{self.low:g}:{self.high:g}"


def parse_distribution(param: Param, spec: str | Distribution) -> Distribution:
    """``"loguniform:1e-5:1e-2"`` (or a :class:`Distribution`) checked against ``param``."""
    what = f"sample {param.name}"
    if isinstance(spec, Distribution):
        kind, parts = spec.kind, None
    else:
        kind, _, rest = str(spec).partition(":")
        kind, parts = kind.strip(), rest
    if kind not in SAMPLERS:
        raise ConfigError(what, spec, "write one of uniform:LOW:HIGH, loguniform:LOW:HIGH, choice:V1,V2,...")
    if kind == "choice":
        choices = spec.choices if isinstance(spec, Distribution) else parts
        return Distribution("choice", choices=tuple(_grid_values(param, choices, what)))
    if not (param.traced or param.type is float):
        raise ConfigError(what, spec, f"{param.name} is {_type_hint(param.type)}: use choice:V1,V2,...")
    if isinstance(spec, Distribution):
        low, high = spec.low, spec.high
    else:
        bounds = parts.split(":")
        if len(bounds) != 2:
            raise ConfigError(what, spec, f"write {kind}:LOW:HIGH, e.g. {kind}:1e-5:1e-2")
        low, high = (_value(param, b, what) for b in bounds)
    low, high = _value(param, low, what), _value(param, high, what)
    if not low < high:
        raise ConfigError(what, spec, "needs LOW < HIGH")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(what, spec, "loguniform needs LOW > 0")
    return Distribution(kind, low, high)


def _display(value: Any) -> Any:
    """A swept value as a table cell: tuples as ``64x64``, everything else as is."""
    if isinstance(value, tuple):
        return "x".join(str(v) for v in value)
    return value


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
