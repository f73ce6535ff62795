"""RL² (Duan et al., 2016, arXiv:1611.02779; Wang et al., 2016, arXiv:1611.05763): a recurrent
agent trained across trials, so that its memory learns to explore and exploit a new task.

A trial is ``episodes_per_trial`` episodes of one task (``envs.Trials``): the env's reset draws the
task (a bandit's arm probabilities, a maze's goal, ``envs.DomainRandomization``'s parameters) and
keeps it for the trial; the observation carries the previous action, reward and episode end. The
agent is recurrent PPO (``agents.rppo``) on that env, so its core's carry resets at trial ends
only and runs across the inner episodes of a trial; the return it maximises is a trial's, which
is what a good learning algorithm maximises on a new task. Duan et al. optimise it with TRPO and
Wang et al. with A2C; PPO is the on-policy optimiser of this library (as in later RL² work).

Every function is rppo's; this module adds the trial settings to its Config and wraps the env.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import jax

import envs
from agents import rppo
from rl.engine.runner import Algorithm, bind
from rl.errors import Count

State = rppo.State
Static = rppo.Static


@dataclass(frozen=True)
class Config(rppo.Config):
    """Shape-setting settings of RL²: recurrent PPO's, plus the trial."""

    num_envs: Count = 64
    """parallel environments (trials running at once) per run"""
    num_steps: Count = 100
    """steps collected in each environment per update (a bandit trial of 100 pulls)"""
    episodes_per_trial: Count = 1
    """episodes of one task per trial; the core's carry resets between trials only"""
    terminate_trials: bool = True
    """report every trial end as a termination (the meta-episode ends with its task, value 0 after
    it); False copies terminated/truncated from the trial's last episode"""


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Hyper(rppo.Hyper):
    """Traced settings of RL²: recurrent PPO's."""


def wrap(config: Config, env: Any) -> envs.Trials:
    """The env RL² acts in: ``env`` in trials of ``config.episodes_per_trial`` episodes."""
    return envs.Trials(env, config.episodes_per_trial, terminate_trials=config.terminate_trials)


def make(config: Config, env: Any, env_params: Any) -> Algorithm:
    """Build RL² for ``env`` (unwrapped; the trials are added here): validates ``config`` first,
    compiles nothing."""
    config.validate(env.action_space(env_params))
    static = rppo.build(config, wrap(config, env), env_params)
    return bind(
        "rl2",
        static,
        rppo.init,
        rppo.update,
        rppo.act,
        config.batch_size,
        config.num_updates,
        initial_carry=rppo.initial_carry,
        recurrent_act=rppo.recurrent_act,
        wrap_env=functools.partial(wrap, config),
    )
