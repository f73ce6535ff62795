"""Agents: one module per algorithm, each exposing ``Config``, ``Hyper`` and ``make``.

``make(config, env, env_params)`` validates the config and returns an
``rl.Algorithm`` (a NamedTuple of pure functions); nothing is compiled until
the runner trains it.
"""

from __future__ import annotations

import difflib
import importlib
from types import ModuleType

from agents.load import Loaded, load  # noqa: F401  (agents.load(run_dir): a trained policy)

# agent name -> module; imported lazily so `import agents` stays cheap
AGENTS: dict[str, str] = {
    "ppo": "agents.ppo",
    "rppo": "agents.rppo",
    "rl2": "agents.rl2",
    "a2c": "agents.a2c",
    "impala": "agents.impala",
    "dqn": "agents.dqn",
    "pqn": "agents.pqn",
    "sac": "agents.sac",
    "td3": "agents.td3",
    "ddpg": "agents.ddpg",
    "maml": "agents.maml",
    "metagrad": "agents.metagrad",
}


def get(name: str) -> ModuleType:
    """The agent module called ``name``; a ValueError names the known agents."""
    if name not in AGENTS:
        close = difflib.get_close_matches(str(name), AGENTS, n=3)
        hint = f" did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown agent {name!r};{hint} known agents: {', '.join(sorted(AGENTS))}")
    return importlib.import_module(AGENTS[name])
