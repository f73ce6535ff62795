"""Haiku networks shared by the agents."""

from __future__ import annotations

from typing import Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

ACTIVATIONS = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "elu": jax.nn.elu,
    "silu": jax.nn.silu,
    "leaky_relu": jax.nn.leaky_relu,
}


def orthogonal(scale: float) -> hk.initializers.Initializer:
    """Orthogonal initialisation (Saxe et al., 2014), as in PPO implementations."""
    return hk.initializers.Orthogonal(scale=scale)


class MLP(hk.Module):
    """Flatten, then ``Linear -> activation`` per hidden size (orthogonal, sqrt 2).

    Optional LayerNorm after each linear layer (PQN-style).
    """

    def __init__(
        self,
        hidden_sizes: Sequence[int],
        activation: str,
        layer_norm: bool = False,
        name: str | None = None,
    ):
        super().__init__(name=name)
        self.hidden_sizes = tuple(hidden_sizes)
        self.activation = ACTIVATIONS[activation]
        self.layer_norm = layer_norm

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1).astype(jnp.float32)  # [B, features]
        for size in self.hidden_sizes:
            x = hk.Linear(size, w_init=orthogonal(np.sqrt(2.0)), b_init=jnp.zeros)(x)
            if self.layer_norm:
                x = hk.LayerNorm(axis=-1, create_scale=True, create_offset=True)(x)
            x = self.activation(x)
        return x


def linear_head(size: int, scale: float, name: str) -> hk.Linear:
    """A final layer with orthogonal init of the given scale and zero bias."""
    return hk.Linear(size, w_init=orthogonal(scale), b_init=jnp.zeros, name=name)
