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
