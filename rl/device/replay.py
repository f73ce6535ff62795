"""Replay living in the scan carry: a flashbax trajectory buffer per run.

Each parallel env writes its own time series; a sample is ``batch_size``
sequences of ``n_step`` consecutive transitions (``n_step = 1`` is ordinary
one-step replay). Every stored transition carries its *true successor*
observation (``info["final_observation"]``), its reward and both episode-end
flags, so targets bootstrap correctly after truncation and n-step sums stop at
any episode end (``n_step_return``). No host round trips: ``init``, ``add``,
``sample`` and ``can_sample`` are pure and jit/vmap-safe.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import flashbax as fbx
import jax
import jax.numpy as jnp

from rl.device.returns import n_step_targets
from rl.device.rollout import Transition

Array = chex.Array


class Stored(NamedTuple):
    """One transition as stored (per env): no agent-specific extras."""

    obs: Array  # [*obs_shape]
    action: Array  # [*action_shape]
    reward: Array  # float32[]
    terminated: Array  # bool[]
    truncated: Array  # bool[]
    next_obs: Array  # [*obs_shape] true successor (before automatic reset)


def make_buffer(buffer_size: int, batch_size: int, learning_starts: int, num_envs: int, n_step: int = 1):
    """A flashbax trajectory buffer holding ``buffer_size`` transitions in all.

    That is ``buffer_size // num_envs`` time steps per env (what flashbax's
    ``max_size`` would set, without its warning). Sampling is allowed once every env has written
    ``max(learning_starts // num_envs, n_step)`` steps.
    """
    return fbx.make_trajectory_buffer(
        add_batch_size=num_envs,
        sample_batch_size=batch_size,
        sample_sequence_length=n_step,
        period=1,
        min_length_time_axis=max(learning_starts // num_envs, n_step),
        max_length_time_axis=buffer_size // num_envs,
    )


def stored(transition: Transition) -> Stored:
    """Strip a batched `[B]` rollout transition down to what replay keeps."""
    return Stored(
        transition.obs,
        transition.action,
        transition.reward,
        transition.terminated,
        transition.truncated,
        transition.next_obs,
    )


def init(buffer, example: Stored):
    """Empty buffer state shaped after one unbatched transition."""
    return buffer.init(example)


def add(buffer, buffer_state, transition: Transition):
    """Append one batched step (`[num_envs, ...]`) as one time step per env."""
    batch = jax.tree.map(lambda x: x[:, None], stored(transition))  # [B, 1, ...]
    return buffer.add(buffer_state, batch)


def add_rollout(buffer, buffer_state, transitions: Transition):
    """Append a `[T, num_envs, ...]` rollout: each env's T steps to its own time series.

    One write of the whole rollout: the same buffer contents as T calls of ``add``,
    at a third of the cost.
    """
    return buffer.add(buffer_state, jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), stored(transitions)))


def sample(buffer, buffer_state, key) -> Stored:
    """``batch_size`` sequences, each field `[batch_size, n_step, ...]`."""
    # flashbax adds `[batch, 1] + [n_step]` indices: allow that rank promotion even where
    # a caller (or a test module) made it strict, so agents using replay stay traceable.
    with jax.numpy_rank_promotion("allow"):
        return buffer.sample(buffer_state, key).experience


def first(sequences: Stored) -> Stored:
    """The first transition of each sampled sequence: `[batch_size, ...]`."""
    return jax.tree.map(lambda x: x[:, 0], sequences)


def n_step_return(sequences: Stored, bootstrap: Array, gamma) -> Array:
    """n-step return of the first transition of each sequence.

    ``G = sum_{k<K} gamma^k r_k + gamma^K (1 - terminated_{K-1}) b_{K-1}``,
    where ``K <= n`` stops at the first episode end (terminated or truncated)
    and ``b_k`` is the value of ``next_obs_k`` (on truncation the final
    observation, so a time limit still bootstraps).

    Args:
      sequences: sampled sequences, fields `[batch, n, ...]`.
      bootstrap: `[batch, n]` value of each step's ``next_obs``.
      gamma: discount.

    Returns:
      `[batch]` targets.
    """
    chex.assert_equal_shape([sequences.reward, bootstrap])
    swap = lambda x: jnp.swapaxes(x, 0, 1)  # [n, batch]
    targets = n_step_targets(
        swap(sequences.reward),
        swap(bootstrap),
        swap(sequences.terminated),
        swap(sequences.truncated),
        gamma,
        1.0,
    )
    return targets[0]
