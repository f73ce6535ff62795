"""DDPG (Lillicrap et al., 2016, arXiv:1509.02971) as the TD3 paper re-tuned it ("OurDDPG").

DDPG is TD3 (``agents.td3``) without its three changes: one critic instead of the
min of two, the actor and targets updated at every critic update, and no target
policy smoothing. This module only sets those defaults (as Stable-Baselines3's DDPG
does on top of its TD3); every function is TD3's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax

from agents import td3
from rl.engine.runner import Algorithm
from rl.errors import Count, NonNegative

State = td3.State
Params = td3.Params


@dataclass(frozen=True)
class Config(td3.Config):
    """Shape-setting settings of DDPG: TD3's, with its changes turned off."""

    policy_frequency: Count = 1
    """update the actor and the targets every this many critic updates (DDPG: 1)"""
    twin_critics: bool = False
    """two critics and the min of their targets (clipped double Q); DDPG: one critic"""


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Hyper(td3.Hyper):
    """Traced settings of DDPG: TD3's, without target policy smoothing."""

    policy_noise: NonNegative = 0.0
    """std of the target policy smoothing noise (fraction of half the range); DDPG: 0"""


def make(config: Config, env: Any, env_params: Any) -> Algorithm:
    """Build DDPG for ``env``: validates ``config`` first, compiles nothing."""
    return td3.make(config, env, env_params, name="ddpg")
