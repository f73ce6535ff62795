"""One error type for bad input, raised before anything is compiled."""

from __future__ import annotations

from typing import Any


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


# Range rules for ``validate_hyper``: (predicate on a float64 array, what is allowed).
POSITIVE = (lambda v: v > 0, "must be > 0")
NON_NEGATIVE = (lambda v: v >= 0, "must be >= 0")
UNIT = (lambda v: (v >= 0) & (v <= 1), "must lie in [0, 1]")
UNIT_LEFT_OPEN = (lambda v: (v > 0) & (v <= 1), "must lie in (0, 1]")


def validate_hyper(hyper: Any, rules: dict) -> None:
    """Check every field of a hyper dataclass against its rule in ``rules``.

    A field may be a scalar or an array (a sweep's batch axis): it must be
    numeric, non-empty and finite, and the rule must hold for every element.
    """
    import dataclasses

    import numpy as np

    for f in dataclasses.fields(hyper):
        raw = getattr(hyper, f.name)
        ok, allowed = rules[f.name]
        try:
            numeric = np.asarray(raw).dtype.kind in "iuf"
        except (TypeError, ValueError):  # e.g. ragged lists
            numeric = False
        check(numeric, f.name, raw, f"{allowed} (got {type(raw).__name__}, not a number or array of numbers)")
        value = np.asarray(raw, dtype=np.float64)
        check(value.size > 0 and bool(np.all(np.isfinite(value))) and bool(np.all(ok(value))), f.name, raw, allowed)
