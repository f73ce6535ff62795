"""Environments of other JAX suites behind this library's gymnax 1.0 contract, chosen by prefix.

  id                                   suite                         extra         adapter
  brax/<name>  (brax/ant, ...)         Brax, MJX with backend="mjx"  [brax]        envs.suites.brax
  craftax/<id> (Craftax-Symbolic-v1)   Craftax                       [craftax]     envs.suites.craftax
  jumanji/<id> (Snake-v1, ...)         Jumanji (single-agent)        [jumanji]     envs.suites.jumanji
  navix/<id>   (Navix-Empty-5x5-v0)    navix                         [navix]       envs.suites.navix
  xminigrid/<id> (XLand-MiniGrid-R1-9x9, MiniGrid-Empty-8x8)  XLand-MiniGrid  [xminigrid]  envs.suites.xminigrid

`envs.make("navix/Navix-Empty-5x5-v0", **kwargs)` imports the suite only then (each is an optional
extra: `pip install -e ".[navix]"`); a suite that is not installed raises one
`SuiteNotInstalledError` naming the extra. Every adapter keeps the suite's own episode ends:
`terminated`, `truncated` (time limits) and `info["final_observation"]` (the observation the
suite's automatic reset replaced) are the suite's; each module's docstring gives the exact rule.
Observations are flattened to f32 vectors by default (`flatten=False` keeps an image for a CNN,
`obs_key=` picks a field of a dict observation; see `envs.suites.base`).
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any, NamedTuple

from envs.registry import EnvUnavailableError

SEPARATOR = "/"


class Suite(NamedTuple):
    """One suite: the package it needs, the extra that installs it, and our adapter module."""

    package: str  # top-level module imported to check the suite is installed
    extra: str  # pyproject extra: pip install -e ".[extra]"
    adapter: str  # module with ids() and make(name, **kwargs)


SUITES = {
    "brax": Suite("brax", "brax", "envs.suites.brax"),
    "craftax": Suite("craftax", "craftax", "envs.suites.craftax"),
    "jumanji": Suite("jumanji", "jumanji", "envs.suites.jumanji"),
    "navix": Suite("navix", "navix", "envs.suites.navix"),
    "xminigrid": Suite("xminigrid", "xminigrid", "envs.suites.xminigrid"),
}


class SuiteNotInstalledError(EnvUnavailableError):
    """A suite id was asked for, but the suite (an optional extra) is not installed."""

    def __init__(self, env_id: str, suite: str, reason: str):
        extra = SUITES[suite].extra
        super().__init__(
            f"{env_id!r} needs the {suite} suite, which is not installed ({reason}); install the "
            f'extra: pip install -e ".[{extra}]" (or pip install "jaxrl-engine[{extra}]")'
        )
        self.suite = suite
        self.extra = extra


def is_suite_id(env_id: Any) -> bool:
    """Whether `env_id` is a str of the form "prefix/name" (the prefix is checked by `make`)."""
    return isinstance(env_id, str) and SEPARATOR in env_id


def installed(suite: str) -> bool:
    """Whether `suite` (a key of SUITES) can be imported here."""
    try:
        importlib.import_module(SUITES[suite].package)
    except ImportError:
        return False
    return True


def ids(suite: str) -> list[str]:
    """The full ids ("suite/name") of an installed suite; SuiteNotInstalledError if it is not."""
    return [f"{suite}{SEPARATOR}{name}" for name in _adapter(suite, f"{suite}/...").ids()]


def make(env_id: str, **kwargs: Any) -> tuple[Any, Any]:
    """Build the suite env `env_id` ("suite/name") and return `(env, env.default_params)`.

    Raises:
      ValueError: unknown prefix or a name the suite does not have (with the closest names).
      SuiteNotInstalledError: the suite's extra is not installed.
    """
    suite, _, name = env_id.partition(SEPARATOR)
    if suite not in SUITES:
        close = difflib.get_close_matches(suite.lower(), list(SUITES), n=1)
        hint = f"did you mean {close[0]}/...? " if close else ""
        raise ValueError(
            f"unknown env id {env_id!r}: {suite!r} is not a suite prefix; {hint}"
            f"suite prefixes are {', '.join(p + '/' for p in SUITES)}"
        )
    adapter = _adapter(suite, env_id)
    known = adapter.ids()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = (
            f"did you mean: {', '.join(f'{suite}/{c}' for c in close)}?"
            if close
            else (f"{suite} has: {', '.join(known[:8])}{', ...' if len(known) > 8 else ''}")
        )
        raise ValueError(f"unknown env id {env_id!r}; {hint} (envs.suites.ids({suite!r}) lists all {len(known)})")
    env = adapter.make(name, **kwargs)
    return env, env.default_params


def _adapter(suite: str, env_id: str) -> Any:
    """The adapter module of `suite`, after checking the suite itself imports."""
    package = SUITES[suite].package
    try:
        importlib.import_module(package)
    except ImportError as error:
        raise SuiteNotInstalledError(env_id, suite, f"import {package} failed: {error}") from None
    return importlib.import_module(SUITES[suite].adapter)
