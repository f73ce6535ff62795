"""One place to build environments by id: gymnax's 26 ids plus this package's own.

`make(env_id, **kwargs)` returns `(env, env_params)` exactly like `gymnax.make`. Ids registered
with `register` are looked up first; everything else is delegated to gymnax.

Factory contract (decided here, same as `gymnax.register`): a factory is a callable
`factory(**kwargs) -> env` returning a gymnax-style environment object (with `reset`, `step` and
`default_params`); `make` returns `(env, env.default_params)`. To ship non-default parameters,
give the environment a `default_params` property that returns them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import gymnax

EnvFactory = Callable[..., Any]

_REQUIRED_ATTRIBUTES = ("reset", "step", "default_params")
_MAX_SUGGESTIONS = 3
_FALLBACK_LISTED = 5

# Gymnax ids whose constructor downloads data: id -> (what it downloads, how to fix a failure).
_DOWNLOADING_IDS = {
    "MNISTBandit-bsuite": (
        "MNIST (4 files, ~11 MB, from https://storage.googleapis.com/cvdf-datasets/mnist/ "
        "into /tmp/mnist)",
        "Connect to the network, or copy the 4 MNIST *-ubyte.gz files into /tmp/mnist "
        "(delete partial downloads there first).",
    ),
}

_own_registry: dict[str, EnvFactory] = {}


class EnvUnavailableError(RuntimeError):
    """An environment id is known but cannot be built here (e.g. its data cannot be downloaded)."""


def registered_ids() -> list[str]:
    """All ids `make` accepts: gymnax's (gymnax's order), then ours (registration order)."""
    return list(gymnax.registered_envs) + list(_own_registry)


def register(env_id: str, factory: EnvFactory) -> None:
    """Register `factory(**kwargs) -> env` under `env_id` for `make`.

    Raises:
      ValueError: `env_id` is not a non-empty str, or is already taken (by gymnax or by us).
      TypeError: `factory` is not callable.
    """
    if not isinstance(env_id, str) or not env_id:
        raise ValueError(f"env id must be a non-empty str, got {env_id!r}")
    if not callable(factory):
        raise TypeError(f"factory for {env_id!r} must be callable, got {type(factory).__name__}")
    if env_id in registered_ids():
        raise ValueError(
            f"env id {env_id!r} is already registered; pick another id "
            "(envs.registered_ids() lists the taken ones)"
        )
    _own_registry[env_id] = factory


def make(env_id: str, **kwargs: Any) -> tuple[Any, Any]:
    """Build the environment `env_id` and return `(env, env.default_params)`.

    Args:
      env_id: one of `registered_ids()`.
      **kwargs: forwarded to the environment's constructor/factory.

    Raises:
      ValueError: unknown or non-str id; the message names the closest known ids.
      EnvUnavailableError: the id is known but its data cannot be obtained (MNIST offline).
      TypeError: a registered factory returned something that is not an environment.
    """
    _check_known(env_id)
    if env_id in _own_registry:
        env = _own_registry[env_id](**kwargs)
        _check_is_env(env_id, env)
        return env, env.default_params
    if env_id in _DOWNLOADING_IDS:
        return _make_downloading_gymnax(env_id, **kwargs)
    return gymnax.make(env_id, **kwargs)


def _check_known(env_id: Any) -> None:
    """Raise a ValueError naming the closest known ids unless `env_id` is registered."""
    known = registered_ids()
    if not isinstance(env_id, str):
        raise ValueError(
            f"env id must be a str such as {known[0]!r}, got {type(env_id).__name__} {env_id!r} "
            f"(envs.registered_ids() lists all {len(known)})"
        )
    if env_id in known:
        return
    close = _closest_ids(env_id, known)
    hint = f"did you mean: {', '.join(close)}?" if close else (
        f"known ids include: {', '.join(known[:_FALLBACK_LISTED])}, ..."
    )
    raise ValueError(
        f"unknown env id {env_id!r}; {hint} (envs.registered_ids() lists all {len(known)})"
    )


def _closest_ids(env_id: str, known: list[str]) -> list[str]:
    """Up to `_MAX_SUGGESTIONS` known ids closest to `env_id`, compared case-insensitively."""
    by_lower = {k.lower(): k for k in known}
    matches = difflib.get_close_matches(env_id.lower(), list(by_lower), n=_MAX_SUGGESTIONS)
    return [by_lower[m] for m in matches]


def _check_is_env(env_id: str, env: Any) -> None:
    """Fail early if a registered factory returned something that is not an environment."""
    missing = [a for a in _REQUIRED_ATTRIBUTES if not hasattr(env, a)]
    if missing:
        raise TypeError(
            f"factory for {env_id!r} returned {type(env).__name__}, which lacks {missing}; "
            "a factory must return a gymnax-style env object (not an (env, params) tuple)"
        )


def _make_downloading_gymnax(env_id: str, **kwargs: Any) -> tuple[Any, Any]:
    """`gymnax.make` for an env that downloads data, turning I/O failures into one clear error."""
    try:
        return gymnax.make(env_id, **kwargs)
    except (OSError, EOFError) as error:  # URLError, HTTPError, socket errors, truncated gzip.
        reason = f"{type(error).__name__}: {error}"
    what, fix = _DOWNLOADING_IDS[env_id]
    raise EnvUnavailableError(
        f"{env_id} needs to download {what} when it is constructed, and the download failed "
        f"({reason}). {fix}"
    ) from None
