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
    """Sums over the episodes that *completed* in a stretch of steps.

    A rollout keeps them per environment (leaves `[B]`, added elementwise at every step) and sums
    over the batch once at its end (``total``): a sum over the batch inside the loop would make
    the env step's fused kernel a reduction, whose outputs a GPU program then copies into the
    loop's carry at every step (6 of an update's kernels per step of PPO on CartPole, at 1 seed).
    """

    return_sum: Array  # float32 sum of the returns of completed episodes
    length_sum: Array  # float32 sum of their lengths
    count: Array  # int32 number of completed episodes

    @staticmethod
    def zero(shape: tuple[int, ...] = ()) -> EpisodeStats:
        return EpisodeStats(jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.int32))

    def __add__(self, other: EpisodeStats) -> EpisodeStats:  # type: ignore[override]
        return EpisodeStats(*(a + b for a, b in zip(self, other)))

    def total(self) -> EpisodeStats:
        """The sums over every axis (the environments of a batch): scalar leaves."""
        return EpisodeStats(*(jnp.sum(leaf).astype(leaf.dtype) for leaf in self))

    def as_metrics(self) -> dict[str, Array]:
        """Per-update metrics of scalar sums (``total`` first): mean return/length of completed
        episodes, count.

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
    """One batched step's ended episodes, per environment (leaves `[B]`; zero where none ended)."""
    done = info["episode_done"]
    return EpisodeStats(
        return_sum=jnp.where(done, info["episode_return"], 0.0).astype(jnp.float32),
        length_sum=jnp.where(done, info["episode_length"], 0).astype(jnp.float32),
        count=done.astype(jnp.int32),
    )


def env_step(env, env_params, env_state, obs: Array, action: Array, key, extras=None):
    """Step B envs once; returns ``(Transition, env_state, next_obs, EpisodeStats per env [B])``."""
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
      carry after the last step and ``stats`` sums the episodes that ended (scalar leaves).
    """

    def step(carry, step_keys):
        env_state, obs, stats = carry
        act_key, env_key = step_keys
        action, extras = policy(obs, act_key)
        transition, env_state, obs, step_stats = env_step(env, env_params, env_state, obs, action, env_key, extras)
        return (env_state, obs, stats + step_stats), transition

    keys = jax.vmap(jax.random.split)(jax.random.split(key, num_steps))  # [T, 2]: each step's (act, env) keys
    start = (env_state, obs, EpisodeStats.zero(obs.shape[:1]))
    (env_state, obs, stats), transitions = scan_rows(step, start, keys, obs.shape[0])
    return transitions, env_state, obs, stats.total()


def scan_rows(step: Callable, carry: Any, xs: Any, batch: int) -> tuple[Any, Any]:
    """``jax.lax.scan(step, carry, xs)`` for a step whose output has leaves `[batch, ...]`: on a GPU
    or TPU the output is stacked as one packed row per step (``PackedRows``), on the CPU leaf by
    leaf (there a stacked write is a loop inside the step's code, not a kernel of its own, and
    packing measured no faster). Same result either way, bit for bit."""

    def packed():
        rows = PackedRows(batch)
        carry_out, stacked = jax.lax.scan(lambda c, x: _pack_output(rows, step(c, x)), carry, xs)
        return carry_out, rows.unpack(stacked)

    return jax.lax.platform_dependent(cpu=lambda: jax.lax.scan(step, carry, xs), default=packed)


def _pack_output(rows: PackedRows, out: tuple[Any, Any]) -> tuple[Any, Any]:
    carry, y = out
    return carry, rows.pack(y)


_PACKED = (jnp.dtype(jnp.float32), jnp.dtype(jnp.int32), jnp.dtype(jnp.uint32), jnp.dtype(jnp.bool_))


class PackedRows:
    """One step's pytree (leaves `[B, ...]`) as one `uint32[B, F]` row, for a scan to stack.

    A scan writes each leaf of what its step returns into that leaf's `[T, ...]` array: one
    in-place write, one kernel on a GPU, per leaf per step. A rollout's transition has eight
    or more leaves (observation, action, reward, flags, successor, log-prob, value, ...) of a few
    bytes each per env: on a GPU at 1 seed those writes were 8 of a PPO step's 26 kernels. Packed
    side by side into one row, a step writes once. Packing is exact: float32 and int32 are
    reinterpreted as uint32 (bits unchanged; no arithmetic touches them), bool is 0 or 1; leaves
    of other dtypes or leading axes stay apart. ``pack`` records the layout when the scan traces its step;
    ``unpack`` then restores the stacked pytree (leaves `[T, B, ...]`)."""

    def __init__(self, batch: int):
        self.batch = batch  # the leading axis B of the leaves that are packed
        self.layout: list[tuple[int, int, tuple[int, ...], Any]] | None = (
            None  # per packed leaf: start, width, shape, dtype
        )
        self.treedef = None

    def pack(self, tree: Any) -> tuple[Array, list[Array]]:
        leaves, self.treedef = jax.tree.flatten(tree)
        layout, columns, others, start = [], [], [], 0
        for leaf in leaves:
            if leaf.dtype not in _PACKED or leaf.ndim < 1 or leaf.shape[0] != self.batch:
                layout.append((-1, 0, leaf.shape, leaf.dtype))
                others.append(leaf)
                continue
            flat = leaf.reshape(leaf.shape[0], -1)
            if leaf.dtype == jnp.bool_:
                flat = flat.astype(jnp.uint32)
            elif leaf.dtype != jnp.uint32:
                flat = jax.lax.bitcast_convert_type(flat, jnp.uint32)
            layout.append((start, flat.shape[1], leaf.shape[1:], leaf.dtype))
            columns.append(flat)
            start += flat.shape[1]
        self.layout = layout
        row = jnp.concatenate(columns, axis=1) if columns else jnp.zeros((0,), jnp.uint32)
        return row, others

    def unpack(self, stacked: tuple[Array, list[Array]]) -> Any:
        rows, others = stacked
        others = iter(others)
        leaves = []
        for start, width, shape, dtype in self.layout:
            if start < 0:
                leaves.append(next(others))
                continue
            part = rows[..., start : start + width].reshape(rows.shape[:-1] + shape)
            if dtype == jnp.bool_:
                part = part != 0
            elif dtype != jnp.uint32:
                part = jax.lax.bitcast_convert_type(part, dtype)
            leaves.append(part)
        return jax.tree.unflatten(self.treedef, leaves)
