"""Pieces shared by the off-policy agents: target networks, schedules, noise."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import optax

Array = chex.Array


def polyak(online, target, tau):
    """``target <- tau * online + (1 - tau) * target`` (tau may be traced)."""
    return optax.incremental_update(online, target, tau)


def periodic_copy(online, target, step: Array, period: int):
    """``target <- online`` when ``step % period == 0`` else unchanged."""
    return optax.periodic_update(online, target, step, period)


def linear_schedule(start, end, duration, step: Array) -> Array:
    """Linear interpolation from ``start`` to ``end`` over ``duration`` steps.

    Unlike ``optax.linear_schedule`` every argument may be traced (a swept
    exploration fraction), so there is no Python-side check of ``duration``;
    a duration <= 0 gives ``end`` at once.
    """
    frac = jnp.clip(step / jnp.maximum(duration, 1e-9), 0.0, 1.0)
    frac = jnp.where(duration > 0, frac, 1.0)
    return start + frac * (end - start)


def gaussian_noise(key, action: Array, sigma, low, high) -> Array:
    """Add ``N(0, sigma^2)`` noise scaled to half the action range, clip to bounds."""
    scale = sigma * (jnp.asarray(high) - jnp.asarray(low)) / 2.0
    noisy = action + scale * jax.random.normal(key, action.shape, action.dtype)
    return jnp.clip(noisy, low, high)
