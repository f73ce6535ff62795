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


# weight initialisers by name: "orthogonal" (gain as given per layer) or
# "lecun_normal" (flax.linen.Dense's default, which CleanRL's JAX agents use;
# the gain is ignored)
INITS = ("orthogonal", "lecun_normal")


def weight_init(init: str, scale: float) -> hk.initializers.Initializer:
    if init == "lecun_normal":
        return hk.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal")
    return orthogonal(scale)


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
        init: str = "orthogonal",
    ):
        super().__init__(name=name)
        self.init = init
        self.hidden_sizes = tuple(hidden_sizes)
        self.activation = ACTIVATIONS[activation]
        self.layer_norm = layer_norm

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1).astype(jnp.float32)  # [B, features]
        for size in self.hidden_sizes:
            x = hk.Linear(size, w_init=weight_init(self.init, np.sqrt(2.0)), b_init=jnp.zeros)(x)
            if self.layer_norm:
                x = hk.LayerNorm(axis=-1, create_scale=True, create_offset=True)(x)
            x = self.activation(x)
        return x


def linear_head(size: int, scale: float, name: str, init: str = "orthogonal") -> hk.Linear:
    """A final layer with (by default) orthogonal init of the given scale and zero bias."""
    return hk.Linear(size, w_init=weight_init(init, scale), b_init=jnp.zeros, name=name)
