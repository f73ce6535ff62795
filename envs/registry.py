"""One place to build environments by id: gymnax's 26 ids, this package's own, other suites'.

`make(env_id, **kwargs)` returns `(env, env_params)` exactly like `gymnax.make`. Ids registered
with `register` are looked up first; an id with a suite prefix (`brax/ant`,
`craftax/Craftax-Symbolic-v1`, `jumanji/Snake-v1`, `navix/Navix-Empty-5x5-v0`,
`xminigrid/XLand-MiniGrid-R1-9x9`) is built by that suite's adapter in `envs.suites` (each suite
is an optional extra, imported only then); everything else is delegated to gymnax. An env object
(anything with `reset`, `step` and `default_params`) may be passed instead of an id:
`make(env)` returns `(env, env.default_params)`.

An environment of your own needs no wrapper script: wherever an env id is accepted (`make`, the
`--env` flag of `experiments.train` and `experiments.sweep`, `rl.sweep`, and through a run
folder's `config.json` `agents.load` and `experiments.evaluate`) an *env spec* may be given
instead:

* `MODULE:ATTRIBUTE` imports `MODULE` and uses its attribute `ATTRIBUTE` (a dotted path is
  allowed): an env class or a factory, called with `**kwargs`, or an env object;
* `MODULE:ENV_ID` imports `MODULE`, which calls `register(ENV_ID, factory)` when imported, and
  makes `ENV_ID`.

`MODULE` must be importable where the spec is used (the current folder, when run with
`python -m`, or `PYTHONPATH`). A run folder stores the spec as given, so it is imported again when
the run is loaded.

Factory contract (decided here, same as `gymnax.register`): a factory is a callable
`factory(**kwargs) -> env` returning a gymnax-style environment object (with `reset`, `step` and
`default_params`); `make` returns `(env, env.default_params)`. To ship non-default parameters,
give the environment a `default_params` property that returns them.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Any

import gymnax

EnvFactory = Callable[..., Any]

_REQUIRED_ATTRIBUTES = ("reset", "step", "default_params")
SPEC_SEPARATOR = ":"  # MODULE:ATTRIBUTE or MODULE:ENV_ID
_SPEC_FORMS = (
    "MODULE:ATTRIBUTE (an env class, a factory returning an env, or an env object) or "
    "MODULE:ENV_ID (a module that registers ENV_ID with envs.register when imported)"
)
_MAX_SUGGESTIONS = 3
_FALLBACK_LISTED = 5

# Gymnax ids whose constructor downloads data: id -> (what it downloads, how to fix a failure).
_DOWNLOADING_IDS = {
    "MNISTBandit-bsuite": (
        "MNIST (4 files, ~11 MB, from https://storage.googleapis.com/cvdf-datasets/mnist/ into /tmp/mnist)",
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
            f"env id {env_id!r} is already registered; pick another id (envs.registered_ids() lists the taken ones)"
        )
    _own_registry[env_id] = factory


def make(env_id: Any, **kwargs: Any) -> tuple[Any, Any]:
    """Build the environment `env_id` and return `(env, env.default_params)`.

    Args:
      env_id: one of `registered_ids()`, a suite id `SUITE/NAME` (see `envs.suites`), an env spec
        `MODULE:ATTRIBUTE` / `MODULE:ENV_ID` (see the module docstring), or a gymnax-style env
        object, returned as it is.
      **kwargs: forwarded to the environment's constructor/factory (none for an env object).

    Raises:
      ValueError: unknown or non-str id, or an env spec that cannot be imported or does not name
        an env; the message names the closest known ids or what is wrong with the spec.
      EnvUnavailableError: the id is known but its data cannot be obtained (MNIST offline), or
        (`envs.suites.SuiteNotInstalledError`) its suite's extra is not installed.
      TypeError: a registered factory returned something that is not an environment.
    """
    if not isinstance(env_id, str) and _has_env_attributes(env_id) and not isinstance(env_id, type):
        if kwargs:
            raise ValueError(f"an env object takes no arguments; got {sorted(kwargs)} for {env_id!r}")
        return env_id, env_id.default_params
    if not isinstance(env_id, str):
        _check_known(env_id)  # raises: neither an id nor an env object
    if is_spec(env_id):
        return _make_from_spec(env_id, **kwargs)
    if env_id in _own_registry:
        env = _own_registry[env_id](**kwargs)
        _check_is_env(env_id, env)
        return env, env.default_params
    from envs import suites  # lazy: an adapter imports its suite only when one of its ids is made

    if suites.is_suite_id(env_id):
        return suites.make(env_id, **kwargs)
    _check_known(env_id)
    if env_id in _DOWNLOADING_IDS:
        return _make_downloading_gymnax(env_id, **kwargs)
    return gymnax.make(env_id, **kwargs)


def is_spec(env_id: Any) -> bool:
    """Whether `env_id` is an env spec (`MODULE:ATTRIBUTE` or `MODULE:ENV_ID`) rather than an id."""
    return isinstance(env_id, str) and SPEC_SEPARATOR in env_id


_MISSING = object()


def _attribute(module: Any, dotted: str) -> Any:
    """`module.a.b.c` for the dotted path `a.b.c`, or `_MISSING`."""
    target = module
    for part in dotted.split("."):
        target = getattr(target, part, _MISSING)
        if target is _MISSING:
            return _MISSING
    return target


def _make_from_spec(spec: str, **kwargs: Any) -> tuple[Any, Any]:
    """`make` for an env spec: import the module, then build its attribute or registered id."""
    module_name, _, name = (part.strip() for part in spec.partition(SPEC_SEPARATOR))
    if not module_name or not name:
        raise ValueError(f"unknown env id {spec!r}: an env spec is {_SPEC_FORMS}, e.g. my_envs:MyEnv")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - any failure to import is the spec's problem, said in one line
        raise ValueError(
            f"unknown env id {spec!r}: cannot import module {module_name!r} ({type(error).__name__}: {error}); "
            "it must be importable from the current folder or PYTHONPATH"
        ) from error
    target = _attribute(module, name)
    if target is _MISSING:
        if name in registered_ids():
            return make(name, **kwargs)
        raise ValueError(
            f"unknown env id {spec!r}: module {module_name!r} has no attribute {name!r} and registers no "
            f"env id {name!r}; an env spec is {_SPEC_FORMS}"
        )
    if isinstance(target, type) or (callable(target) and not _has_env_attributes(target)):
        try:
            env = target(**kwargs)
        except Exception as error:  # noqa: BLE001 - said in one line; the chain keeps the traceback
            raise ValueError(
                f"unknown env id {spec!r}: calling {module_name}.{name}({', '.join(kwargs)}) failed "
                f"({type(error).__name__}: {error})"
            ) from error
    elif kwargs:
        raise ValueError(f"env spec {spec!r} names an env object, which takes no arguments; got {sorted(kwargs)}")
    else:
        env = target
    if not _has_env_attributes(env) or isinstance(env, type):
        raise ValueError(
            f"unknown env id {spec!r}: it gave {type(env).__name__}, which is not a gymnax-style env "
            f"(with {', '.join(_REQUIRED_ATTRIBUTES)}); an env spec is {_SPEC_FORMS}"
        )
    return env, env.default_params


def _has_env_attributes(obj: Any) -> bool:
    return all(hasattr(obj, a) for a in _REQUIRED_ATTRIBUTES)


def _check_known(env_id: Any) -> None:
    """Raise a ValueError naming the closest known ids unless `env_id` is registered."""
    known = registered_ids()
    if not isinstance(env_id, str):
        raise ValueError(
            f"env id must be a str such as {known[0]!r} (or a gymnax-style env object with "
            f"{', '.join(_REQUIRED_ATTRIBUTES)}), got {type(env_id).__name__} {env_id!r} "
            f"(envs.registered_ids() lists all {len(known)})"
        )
    if env_id in known:
        return
    close = _closest_ids(env_id, known)
    hint = (
        f"did you mean: {', '.join(close)}?"
        if close
        else (f"known ids include: {', '.join(known[:_FALLBACK_LISTED])}, ...")
    )
    raise ValueError(
        f"unknown env id {env_id!r}; {hint} (envs.registered_ids() lists all {len(known)}; "
        "another suite's env: brax/..., craftax/..., jumanji/..., navix/..., xminigrid/...; "
        "an env of your own: MODULE:ATTRIBUTE)"
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
        f"{env_id} needs to download {what} when it is constructed, and the download failed ({reason}). {fix}"
    ) from None
