"""One error type for bad input, raised before anything is compiled."""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any


class ConfigError(ValueError):
    """An invalid setting: names the field, the value given and what is allowed.

    Raised by config validation before any JAX tracing, so a user sees one line
    that says how to fix the input instead of a traceback from inside JAX.
    """

    def __init__(self, field: str, value: Any, allowed: str):
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}={value!r} is invalid: {allowed}")


def check(condition: bool, field: str, value: Any, allowed: str) -> None:
    """Raise :class:`ConfigError` for ``field`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(field, value, allowed)


def check_field_types(obj: Any) -> None:
    """Raise :class:`ConfigError` for the first dataclass field whose value has the wrong type.

    Reads each field's annotation: ``bool`` must be a bool, ``int`` an integer (not a bool),
    ``float`` a finite real number (an int is fine), ``str`` a string, ``tuple[int, ...]`` a
    tuple of integers, ``X | None`` also None. Fields of other types are left to the caller.
    Call it first in a ``validate`` method, so range checks can rely on the types.
    """
    import dataclasses
    import math
    import numbers
    import types
    import typing

    hints = typing.get_type_hints(type(obj))

    def is_int(v: Any) -> bool:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    def is_real(v: Any) -> bool:
        return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)

    checks = {
        bool: (lambda v: isinstance(v, bool), "must be True or False"),
        int: (is_int, "must be an integer"),
        float: (is_real, "must be a finite number"),
        str: (lambda v: isinstance(v, str), "must be a string"),
    }
    for f in dataclasses.fields(obj):
        tp, value, optional = hints.get(f.name), getattr(obj, f.name), False
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            optional = len(members) < len(typing.get_args(tp))
            if len(members) != 1:
                continue
            tp = members[0]
        if optional and value is None:
            continue
        if tp in checks:
            ok, allowed = checks[tp]
        elif typing.get_origin(tp) is tuple and typing.get_args(tp) == (int, ...):
            ok, allowed = (lambda v: isinstance(v, tuple) and all(is_int(x) for x in v)), "must be a tuple of integers"
        else:
            continue
        if optional:
            allowed += " or None"
        check(ok(value), f.name, value, f"{allowed} (got {type(value).__name__})")


# --------------------------------------------------------------------------------------------
# Rules declared on the fields. A field's annotation carries its rule, e.g.
#   num_envs: Count = 4                 (Count = Annotated[int, Rule(v > 0, "must be ...")])
#   gamma: Unit = 0.99
# and one checker reads them: ``validate_config`` for a Config (static Python values) and
# ``validate_hyper`` for a Hyper (scalars, or arrays with a sweep's batch axis). Checks that
# relate several fields (divisibility, action spaces) stay in the Config's ``validate``.


@dataclass(frozen=True)
class Rule:
    """A predicate on a field's value and the sentence that says what is allowed."""

    ok: Callable[[Any], Any]  # value -> bool (elementwise on a float64 array for Hyper fields)
    allowed: str


def one_of(choices: Any) -> Rule:
    """The value must be one of ``choices`` (a collection of strings)."""
    return Rule(lambda v: v in choices, f"must be one of {', '.join(choices)}")


# Rules on numbers: work on Python scalars and, elementwise, on arrays.
POSITIVE = Rule(lambda v: v > 0, "must be > 0")
NON_NEGATIVE = Rule(lambda v: v >= 0, "must be >= 0")
UNIT = Rule(lambda v: (v >= 0) & (v <= 1), "must lie in [0, 1]")
UNIT_LEFT_OPEN = Rule(lambda v: (v > 0) & (v <= 1), "must lie in (0, 1]")

# Field types with their rule (the type part is what tyro and ``check_field_types`` read).
Count = Annotated[int, Rule(lambda v: v > 0, "must be a positive integer")]
NonNegativeCount = Annotated[int, Rule(lambda v: v >= 0, "must be a non-negative integer")]
Widths = Annotated[
    tuple[int, ...], Rule(lambda v: len(v) > 0 and all(h > 0 for h in v), "must be one or more positive integers")
]
Positive = Annotated[float, POSITIVE]
NonNegative = Annotated[float, NON_NEGATIVE]
Unit = Annotated[float, UNIT]
UnitLeftOpen = Annotated[float, UNIT_LEFT_OPEN]


def field_rules(cls: type) -> dict[str, Rule]:
    """``{field name: Rule}`` for the fields of a dataclass whose annotation carries one."""
    import dataclasses

    hints = typing.get_type_hints(cls, include_extras=True)
    rules = {}
    for f in dataclasses.fields(cls):
        hint = hints.get(f.name)
        # `Count | None` is a Union whose member carries the rule
        for tp in (hint, *typing.get_args(hint)):
            for meta in getattr(tp, "__metadata__", ()):
                if isinstance(meta, Rule):
                    rules[f.name] = meta
    return rules


def validate_config(config: Any) -> None:
    """Types of every field first, then each field's declared rule (None skips an optional one)."""
    check_field_types(config)
    for name, rule in field_rules(type(config)).items():
        value = getattr(config, name)
        if value is not None:
            check(bool(rule.ok(value)), name, value, rule.allowed)


def validate_hyper(hyper: Any) -> None:
    """Check every field of a Hyper dataclass against its declared rule.

    A field may be a scalar or an array (a sweep's batch axis): it must be
    numeric, non-empty and finite, and the rule must hold for every element.
    Every Hyper field must declare a rule (a missing one is a bug of the agent).
    """
    import dataclasses

    import numpy as np

    rules = field_rules(type(hyper))
    for f in dataclasses.fields(hyper):
        raw = getattr(hyper, f.name)
        if f.name not in rules:
            raise TypeError(f"{type(hyper).__qualname__}.{f.name} declares no Rule in its annotation")
        rule = rules[f.name]
        try:
            numeric = np.asarray(raw).dtype.kind in "iuf"
        except (TypeError, ValueError):  # e.g. ragged lists
            numeric = False
        check(numeric, f.name, raw, f"{rule.allowed} (got {type(raw).__name__}, not a number or array of numbers)")
        value = np.asarray(raw, dtype=np.float64)
        check(
            value.size > 0 and bool(np.all(np.isfinite(value))) and bool(np.all(rule.ok(value))),
            f.name,
            raw,
            rule.allowed,
        )
