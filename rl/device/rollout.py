"""Acting in a batch of environments inside ``lax.scan``.

The environment is a vectorised gymnax-contract env (``envs.vectorize``):
``step(key, state, action[B], params) -> obs[B], state, reward[B],
terminated[B], truncated[B], info`` with ``info["final_observation"]`` and the
episode statistics written by ``envs.EpisodeStatistics``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp

Array = chex.Array
# policy(obs[B, ...], key) -> (action[B, ...], extras pytree with leading [B])
Policy = Callable[[Array, chex.PRNGKey], tuple[Array, Any]]


class Transition(NamedTuple):
    """One step of B environments; a rollout stacks these to `[T, B, ...]`."""

    obs: Array  # [B, *obs_shape] observation the action was taken in
    action: Array  # [B, *action_shape]
    reward: Array  # [B] float32
    terminated: Array  # [B] bool: the episode ended for real (bootstrap 0)
    truncated: Array  # [B] bool: time limit (bootstrap from final_obs)
    # [B, *obs_shape] the true successor of `obs`: info["final_observation"],
    # i.e. before any automatic reset. Where the episode did not end it equals
    # the next observation, so every target bootstraps from it (and ignores it
    # where `terminated`).
    next_obs: Array
    extras: Any  # agent-specific per-step outputs (log-prob, value, ...)


class EpisodeStats(NamedTuple):
    """Sums over the episodes that *completed* in a stretch of steps (scalars)."""

    return_sum: Array  # float32[] sum of the returns of completed episodes
    length_sum: Array  # float32[] sum of their lengths
    count: Array  # int32[] number of completed episodes

    @staticmethod
    def zero() -> EpisodeStats:
        return EpisodeStats(jnp.float32(0.0), jnp.float32(0.0), jnp.int32(0))

    def __add__(self, other: EpisodeStats) -> EpisodeStats:  # type: ignore[override]
        return EpisodeStats(*(a + b for a, b in zip(self, other)))

    def as_metrics(self) -> dict[str, Array]:
        """Per-update metrics: mean return/length of completed episodes, count.

        Where ``episodes == 0`` the means are 0 and must be read as missing;
        the host-side sinks write them as empty.
        """
        n = jnp.maximum(self.count, 1).astype(jnp.float32)
        return {
            "episode_return": self.return_sum / n,
            "episode_length": self.length_sum / n,
            "episodes": self.count,
        }


def episode_stats(info: dict[str, Array]) -> EpisodeStats:
    """Reduce one batched step's episode statistics to sums over ended episodes."""
    done = info["episode_done"]
    return EpisodeStats(
        return_sum=jnp.sum(jnp.where(done, info["episode_return"], 0.0)).astype(jnp.float32),
        length_sum=jnp.sum(jnp.where(done, info["episode_length"], 0)).astype(jnp.float32),
        count=jnp.sum(done).astype(jnp.int32),
    )


def env_step(env, env_params, env_state, obs: Array, action: Array, key, extras=None):
    """Step B envs once; returns ``(Transition, env_state, next_obs, EpisodeStats)``."""
    next_obs, env_state, reward, terminated, truncated, info = env.step(key, env_state, action, env_params)
    chex.assert_rank([reward, terminated, truncated], 1)
    transition = Transition(
        obs=obs,
        action=action,
        reward=reward.astype(jnp.float32),
        terminated=terminated.astype(bool),
        truncated=truncated.astype(bool),
        next_obs=info["final_observation"],
        extras=extras,
    )
    return transition, env_state, next_obs, episode_stats(info)


def rollout(env, env_params, policy: Policy, env_state, obs: Array, key, num_steps: int):
    """Collect ``num_steps`` steps of B envs with ``policy`` inside ``lax.scan``.

    Returns:
      ``(transitions, env_state, obs, stats)`` where every field of
      ``transitions`` has shape `[T, B, ...]`, ``env_state``/``obs`` are the
      carry after the last step and ``stats`` sums the episodes that ended.
    """

    def step(carry, step_key):
        env_state, obs, stats = carry
        act_key, env_key = jax.random.split(step_key)
        action, extras = policy(obs, act_key)
        transition, env_state, obs, step_stats = env_step(env, env_params, env_state, obs, action, env_key, extras)
        return (env_state, obs, stats + step_stats), transition

    keys = jax.random.split(key, num_steps)
    (env_state, obs, stats), transitions = jax.lax.scan(step, (env_state, obs, EpisodeStats.zero()), keys)
    return transitions, env_state, obs, stats
