"""What off-policy agents share: checks of replay settings and action spaces, acting
(epsilon-greedy and its schedule, uniform random actions, Gaussian noise in bounds),
learning only once replay is ready, target networks, and the critic regression.

DQN, SAC and TD3 (and DDPG, a TD3 setting) build on these; replay itself is ``rl.device.replay``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from gymnax.environments import spaces

import envs
from rl.errors import check

Array = chex.Array


# --------------------------------------------------------------------------------------------
# Checks of settings (host side, before anything compiles)


class Steps:
    """What an off-policy ``Config`` derives from ``num_envs``, ``train_frequency`` and
    ``total_timesteps``: a base class of the agents' frozen dataclasses, properties only."""

    num_envs: int
    train_frequency: int
    total_timesteps: int

    @property
    def steps_per_update(self) -> int:
        """Env steps of all envs between two gradient steps: num_envs * train_frequency."""
        return self.num_envs * self.train_frequency

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // self.steps_per_update


def check_replay(config: Any) -> None:
    """The checks that relate the loop and replay fields of a replay-based actor-critic.

    Reads ``total_timesteps``, ``learning_starts``, ``steps_per_update`` (num_envs *
    train_frequency), ``num_updates``, ``replay_capacity``, ``num_envs`` and
    ``train_frequency``; each field's own rule is checked before, by ``validate_config``.
    """
    check(
        config.total_timesteps >= config.steps_per_update,
        "total_timesteps",
        config.total_timesteps,
        f"must be at least one update = num_envs * train_frequency = {config.steps_per_update}",
    )
    check(
        config.learning_starts < config.num_updates * config.steps_per_update,
        "learning_starts",
        config.learning_starts,
        f"must be below the {config.num_updates * config.steps_per_update} env steps of training, "
        "or nothing is learned",
    )
    per_env = config.replay_capacity // config.num_envs
    check(
        per_env >= max(config.train_frequency, config.learning_starts // config.num_envs, 1),
        "buffer_size",
        config.buffer_size,
        f"must hold at least learning_starts = {config.learning_starts} transitions and one "
        f"update's num_envs * train_frequency = {config.steps_per_update}",
    )


def check_action_space(action_space: Any, allow_discrete: bool) -> bool:
    """Whether the actions are discrete; ConfigError for spaces the agent cannot act in."""
    if envs.is_discrete(action_space):
        check(
            allow_discrete,
            "env",
            action_space,
            "has discrete actions; this agent needs a Box action space (use sac or dqn)",
        )
        return True
    check(
        isinstance(action_space, spaces.Box) and len(action_space.shape) == 1,
        "env",
        action_space,
        "needs a Discrete or a one-dimensional Box action space",
    )
    low, high = action_bounds(action_space)
    check(
        bool(np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low < high)),
        "env",
        action_space,
        "Box action bounds must be finite with low < high (actions are squashed into them)",
    )
    return False


def action_bounds(action_space: spaces.Box) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` of a Box action space, each f32[action_dim]."""
    shape = tuple(action_space.shape)
    low = np.broadcast_to(np.asarray(action_space.low, np.float32), shape)
    high = np.broadcast_to(np.asarray(action_space.high, np.float32), shape)
    return low, high


# --------------------------------------------------------------------------------------------
# Acting


def linear_schedule(start, end, duration, step: Array) -> Array:
    """Linear interpolation from ``start`` to ``end`` over ``duration`` steps.

    Unlike ``optax.linear_schedule`` every argument may be traced (a swept
    exploration fraction), so there is no Python-side check of ``duration``;
    a duration <= 0 gives ``end`` at once.
    """
    frac = jnp.clip(step / jnp.maximum(duration, 1e-9), 0.0, 1.0)
    frac = jnp.where(duration > 0, frac, 1.0)
    return start + frac * (end - start)


def epsilon(hyper: Any, total_timesteps: int, env_steps: Array) -> Array:
    """Linear decay from ``hyper.eps_start`` to ``hyper.eps_end`` over
    ``hyper.exploration_fraction`` of ``total_timesteps``, at ``env_steps`` steps done."""
    duration = hyper.exploration_fraction * total_timesteps
    return linear_schedule(hyper.eps_start, hyper.eps_end, duration, env_steps)


def epsilon_greedy(key: chex.PRNGKey, q_values: Array, epsilon: Array) -> Array:
    """``argmax_a q`` per row, replaced by a uniform action with probability epsilon.

    Args:
      key: PRNG key.
      q_values: `[B, A]`.
      epsilon: scalar exploration rate (may be traced).

    Returns:
      int32 `[B]` actions.
    """
    chex.assert_rank(q_values, 2)
    explore_key, action_key = jax.random.split(key)
    batch, num_actions = q_values.shape
    greedy = jnp.argmax(q_values, axis=-1).astype(jnp.int32)
    random = jax.random.randint(action_key, (batch,), 0, num_actions, jnp.int32)
    return jnp.where(jax.random.uniform(explore_key, (batch,)) < epsilon, random, greedy)


def uniform_box(key: chex.PRNGKey, num: int, low: np.ndarray, high: np.ndarray) -> Array:
    """``num`` actions drawn uniformly in the box ``[low, high]``: f32 `[num, dim]`."""
    low, high = low[None, :], high[None, :]
    return low + (high - low) * jax.random.uniform(key, (num, low.shape[1]), jnp.float32)


def gaussian_noise(key, action: Array, sigma, low, high) -> Array:
    """Add ``N(0, sigma^2)`` noise scaled to half the action range, clip to bounds."""
    scale = sigma * (jnp.asarray(high) - jnp.asarray(low)) / 2.0
    noisy = action + scale * jax.random.normal(key, action.shape, action.dtype)
    return jnp.clip(noisy, low, high)


# --------------------------------------------------------------------------------------------
# Learning


def learn_when_ready(learn_fn: Callable, ready: Array, params, opt_state, *args):
    """``learn_fn(params, opt_state, *args)`` if ``ready`` else unchanged with zero metrics.

    ``learn_fn`` returns ``(params, opt_state, metrics)``. A ``lax.cond``: the skipped
    branch costs nothing when called as is; under the runner's vmap over runs the
    predicate is batched, so both branches run and a select keeps one (the learning
    before ``learning_starts`` is thrown away).
    """

    def skip(params, opt_state, *args):
        shapes = jax.eval_shape(learn_fn, params, opt_state, *args)[2]
        return params, opt_state, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    return jax.lax.cond(ready, learn_fn, skip, params, opt_state, *args)


def critic_loss(q_t: Array, y_t: Array) -> Array:
    """``sum_j mean_b 1/2 (Q_j(s, a) - y)^2`` over the critics: `[C, B]` and `[B]` -> scalar."""
    chex.assert_rank([q_t, y_t], [2, 1])
    return jnp.sum(jnp.mean(0.5 * jnp.square(q_t - y_t[None, :]), axis=1))


def polyak(online, target, tau):
    """``target <- tau * online + (1 - tau) * target`` (tau may be traced)."""
    return optax.incremental_update(online, target, tau)


def periodic_copy(online, target, step: Array, period: int):
    """``target <- online`` when ``step % period == 0`` else unchanged."""
    return optax.periodic_update(online, target, step, period)
