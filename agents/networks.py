"""Haiku networks shared by the agents."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import chex
import distrax
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import envs
from rl.errors import check, one_of

Array = chex.Array

ACTIVATIONS = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "elu": jax.nn.elu,
    "silu": jax.nn.silu,
    "leaky_relu": jax.nn.leaky_relu,
}
MIN_STD = 1e-3  # floor of a state-dependent Gaussian std


def orthogonal(scale: float) -> hk.initializers.Initializer:
    """Orthogonal initialisation (Saxe et al., 2014), as in PPO implementations."""
    return hk.initializers.Orthogonal(scale=scale)


# weight initialisers by name: "orthogonal" (gain as given per layer) or
# "lecun_normal" (flax.linen.Dense's default, which CleanRL's JAX agents use;
# the gain is ignored)
INITS = ("orthogonal", "lecun_normal")
ACTIVATION = one_of(ACTIVATIONS)  # the rule of an `activation: Annotated[str, ACTIVATION]` field
INIT = one_of(INITS)


def weight_init(init: str, scale: float) -> hk.initializers.Initializer:
    if init == "lecun_normal":
        return hk.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal")
    return orthogonal(scale)


TORSOS = ("mlp", "cnn")
TORSO = one_of(TORSOS)  # the rule of a `torso: Annotated[str, TORSO]` field


@jax.custom_vjp
def matmul(x: Array, w: Array) -> Array:
    """``x @ w`` for `[..., in]` inputs and `[in, out]` weights, as ``hk.Linear`` computes it.

    Same values and derivatives of every (reverse-mode) order; only how XLA's CPU backend gets
    the weight gradient ``x^T dy`` differs. Left as the contraction over ``x``'s leading axis
    that autodiff writes, that product is not handed to the CPU's fast matmul library (YNNPACK,
    which takes only untransposed operands); written as ``transpose(x) @ dy`` it is, which took
    a 1-seed PPO run at the ``purejaxrl-cartpole`` preset from 3.32 to 2.97 s on a 2-core CPU.
    Other platforms get autodiff's own contraction (``lax.platform_dependent``), so their
    programs are unchanged.
    """
    return jnp.dot(x, w)


def _matmul_fwd(x: Array, w: Array) -> tuple[Array, tuple[Array, Array]]:
    return jnp.dot(x, w), (x, w)


def _matmul_bwd(residuals: tuple[Array, Array], dy: Array) -> tuple[Array, Array]:
    x, w = residuals
    lead = tuple(range(x.ndim - 1))
    dx = jax.lax.dot_general(dy, w, (((dy.ndim - 1,), (1,)), ((), ())))

    def untransposed(x, dy):  # CPU: a plain [in, N] @ [N, out] product
        return jnp.dot(jnp.transpose(x.reshape(-1, x.shape[-1])), dy.reshape(-1, dy.shape[-1]))

    def contraction(x, dy):  # autodiff's own transpose of the product
        return jax.lax.dot_general(x, dy, ((lead, lead), ((), ())))

    dw = jax.lax.platform_dependent(x, dy, cpu=untransposed, default=contraction)
    return dx.astype(x.dtype), dw.astype(w.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


class Linear(hk.Linear):
    """``hk.Linear`` (same parameters, names and initialisers) whose product is :func:`matmul`."""

    def __call__(self, inputs: Array, *, precision: Any = None) -> Array:
        if not inputs.shape:
            raise ValueError("Input must not be scalar.")
        if precision is not None:  # matmul has no precision argument: hk.Linear's own product
            return super().__call__(inputs, precision=precision)
        input_size = self.input_size = inputs.shape[-1]
        w_init = self.w_init or hk.initializers.TruncatedNormal(stddev=1.0 / np.sqrt(input_size))
        w = hk.get_parameter("w", [input_size, self.output_size], inputs.dtype, init=w_init)
        out = matmul(inputs, w)
        if self.with_bias:
            b = hk.get_parameter("b", [self.output_size], inputs.dtype, init=self.b_init)
            out = out + jnp.broadcast_to(b, out.shape)
        return out


class MLP(hk.Module):
    """Flatten, then ``Linear -> activation`` per hidden size (orthogonal, sqrt 2).

    Optional LayerNorm after each linear layer (PQN-style). With ``torso="cnn"`` an image
    batch `[B, H, W, C]` first goes through MinAtar's convolution (Young & Tian, 2019: 16
    filters of 3x3, stride 1, no padding, ReLU; with ``layer_norm`` a LayerNorm over the
    channels before the ReLU, as purejaxql's PQN) and the MLP reads its flattened output.
    """

    def __init__(
        self,
        hidden_sizes: Sequence[int],
        activation: str,
        layer_norm: bool = False,
        name: str | None = None,
        init: str = "orthogonal",
        torso: str = "mlp",
    ):
        super().__init__(name=name)
        self.init = init
        self.hidden_sizes = tuple(hidden_sizes)
        self.activation = ACTIVATIONS[activation]
        self.layer_norm = layer_norm
        self.torso = torso

    def __call__(self, x: jax.Array) -> jax.Array:
        x = flat_features(x, self.torso, self.init, self.layer_norm)  # [B, features]
        for size in self.hidden_sizes:
            x = Linear(size, w_init=weight_init(self.init, np.sqrt(2.0)), b_init=jnp.zeros)(x)
            if self.layer_norm:
                x = hk.LayerNorm(axis=-1, create_scale=True, create_offset=True)(x)
            x = self.activation(x)
        return x


def flat_features(obs: jax.Array, torso: str = "mlp", init: str = "orthogonal", layer_norm: bool = False) -> jax.Array:
    """`[B, ...]` observations as `[B, features]` f32: flattened, after MinAtar's convolution
    (16 filters of 3x3, stride 1, no padding, ReLU) when ``torso`` is "cnn"; ``layer_norm`` puts
    a LayerNorm over the channels between the convolution and the ReLU."""
    x = obs.astype(jnp.float32)
    if torso == "cnn":
        conv = hk.Conv2D(
            16, 3, stride=1, padding="VALID", w_init=weight_init(init, np.sqrt(2.0)), b_init=jnp.zeros, name="conv"
        )
        x = conv(x)
        if layer_norm:
            x = hk.LayerNorm(axis=-1, create_scale=True, create_offset=True, name="conv_norm")(x)
        x = jax.nn.relu(x)
    return x.reshape(x.shape[0], -1)


def check_torso(torso: str, observation_space: Any) -> None:
    """ConfigError unless the observations suit ``torso`` (a CNN needs `[H, W, C]` images)."""
    shape = tuple(getattr(observation_space, "shape", ()))
    check(
        torso != "cnn" or len(shape) == 3,
        "torso",
        torso,
        f"cnn needs image observations of shape (H, W, C); this env's are {shape} (use mlp)",
    )


def linear_head(size: int, scale: float, name: str, init: str = "orthogonal") -> Linear:
    """A final layer with (by default) orthogonal init of the given scale and zero bias."""
    return Linear(size, w_init=weight_init(init, scale), b_init=jnp.zeros, name=name)


def dueling(value: Array, advantages: Array) -> Array:
    """Dueling aggregation, eq. 9 of Wang et al. (2016).

    ``Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a')``.

    Args:
      value: `[B]` state values V(s).
      advantages: `[B, A]` advantages A(s, a).

    Returns:
      `[B, A]` Q-values; their mean over actions is V(s).
    """
    chex.assert_rank([value, advantages], [1, 2])
    return value[:, None] + advantages - jnp.mean(advantages, axis=-1, keepdims=True)


def q_network(
    num_actions: int,
    hidden_sizes: Sequence[int],
    activation: str,
    layer_norm: bool = False,
    dueling_head: bool = False,
    init: str = "orthogonal",
    num_outputs: int | None = None,
    torso: str = "mlp",
) -> hk.Transformed:
    """An MLP Q-network ``obs[B, ...] -> q[B, num_actions]``.

    With ``num_outputs`` it returns ``[B, num_actions, num_outputs]`` (atom logits of C51,
    quantiles of QR-DQN) from one linear head of ``num_actions * num_outputs`` units.
    """

    def forward(obs):
        features = MLP(hidden_sizes, activation, layer_norm=layer_norm, name="torso", init=init, torso=torso)(obs)
        if num_outputs is not None:
            out = linear_head(num_actions * num_outputs, 1.0, name="q_head", init=init)(features)
            return out.reshape(out.shape[0], num_actions, num_outputs)
        if dueling_head:
            value = linear_head(1, 1.0, name="value_head", init=init)(features)[:, 0]
            return dueling(value, linear_head(num_actions, 1.0, name="advantage_head", init=init)(features))
        return linear_head(num_actions, 1.0, name="q_head", init=init)(features)

    return hk.without_apply_rng(hk.transform(forward))


def cosine_embedding(taus: Array, dim: int) -> Array:
    """IQN's features of quantile fractions, ``cos(pi i tau)`` for i < dim: `[B, N]` -> `[B, N, dim]`."""
    return jnp.cos(jnp.pi * jnp.arange(dim, dtype=jnp.float32) * taus[..., None])


def iqn_network(
    num_actions: int,
    hidden_sizes: Sequence[int],
    activation: str,
    layer_norm: bool = False,
    init: str = "orthogonal",
    embedding_dim: int = 64,
    torso: str = "mlp",
) -> hk.Transformed:
    """IQN's network (Dabney et al., 2018b, eq. 4): ``(obs[B, ...], taus[B, N]) -> Z_tau [B, N, A]``.

    ``psi(obs)`` is the MLP torso (width H = its last hidden size), ``phi(tau) = ReLU(Linear_H(
    cosine_embedding(tau)))``, and a ReLU layer of width H then a linear head act on their
    elementwise product.
    """

    def forward(obs, taus):
        psi = MLP(hidden_sizes, activation, layer_norm=layer_norm, name="torso", init=init, torso=torso)(obs)
        width = psi.shape[-1]
        phi = jax.nn.relu(
            Linear(width, w_init=weight_init(init, np.sqrt(2.0)), b_init=jnp.zeros, name="tau_embedding")(
                cosine_embedding(taus, embedding_dim)
            )
        )  # [B, N, H]
        x = psi[:, None, :] * phi
        x = jax.nn.relu(Linear(width, w_init=weight_init(init, np.sqrt(2.0)), b_init=jnp.zeros, name="merge")(x))
        return linear_head(num_actions, 1.0, name="q_head", init=init)(x)

    return hk.without_apply_rng(hk.transform(forward))


def actor_critic(
    action_space: Any,
    hidden_sizes: Sequence[int],
    activation: str,
    log_std_init: float | None = None,
    state_dependent_std: bool = False,
    torso: str = "mlp",
) -> hk.Transformed:
    """Separate actor and critic MLPs (as in PureJaxRL/CleanRL): ``obs -> (policy_out, value[B])``.

    ``policy_out`` is the logits for discrete actions, ``(mean, log_std)`` for a Box: the
    log std a learned state-independent vector (initial ``log_std_init``, default 0), or
    with ``state_dependent_std`` ``log(softplus(head) + MIN_STD)`` as gymnax-blines.
    Read it with ``policy_distribution``.
    """
    discrete = envs.is_discrete(action_space)
    action_dim = action_space.n if discrete else int(np.prod(action_space.shape))
    log_std_init = 0.0 if log_std_init is None else log_std_init

    def forward(obs):
        actor = MLP(hidden_sizes, activation, name="actor", torso=torso)(obs)
        out = linear_head(action_dim, 0.01, name="policy_head")(actor)
        if not discrete and state_dependent_std:
            std = jax.nn.softplus(linear_head(action_dim, 0.01, name="std_head")(actor)) + MIN_STD
            out = (out, jnp.log(std))
        elif not discrete:
            log_std = hk.get_parameter("log_std", (action_dim,), init=hk.initializers.Constant(log_std_init))
            out = (out, jnp.broadcast_to(log_std, out.shape))
        critic = MLP(hidden_sizes, activation, name="critic", torso=torso)(obs)
        value = linear_head(1, 1.0, name="value_head")(critic)[:, 0]
        return out, value

    return hk.without_apply_rng(hk.transform(forward))


def check_gaussian_options(config: Any, action_space: Any) -> None:
    """ConfigError unless ``config.log_std_init`` and ``config.state_dependent_std`` (the Gaussian
    options of ``actor_critic``) fit ``action_space`` and each other."""
    if envs.is_discrete(action_space):
        for name, unset in (("log_std_init", None), ("state_dependent_std", False)):
            check(
                getattr(config, name) == unset,
                name,
                getattr(config, name),
                "applies to continuous action spaces only; this env's actions are discrete",
            )
    check(
        not (config.state_dependent_std and config.log_std_init is not None),
        "log_std_init",
        config.log_std_init,
        "applies to the state-independent std only; unset it or set state_dependent_std=False",
    )


def policy_distribution(policy_out: Any, discrete: bool) -> distrax.Distribution:
    """The policy of an ``actor_critic`` output: categorical, or a diagonal Gaussian."""
    if discrete:
        return distrax.Categorical(logits=policy_out)
    mean, log_std = policy_out
    return distrax.MultivariateNormalDiag(mean, jnp.exp(log_std))


def actor_critic_of(config: Any, action_space: Any) -> hk.Transformed:
    """``actor_critic`` with the settings of an on-policy agent's config (``hidden_sizes``,
    ``activation``, and where the config has them ``log_std_init``, ``state_dependent_std``,
    ``torso``)."""
    return actor_critic(
        action_space,
        config.hidden_sizes,
        config.activation,
        getattr(config, "log_std_init", None),
        getattr(config, "state_dependent_std", False),
        getattr(config, "torso", "mlp"),
    )


def policy_and_value(static: Any, params: hk.Params, obs: jax.Array) -> tuple[distrax.Distribution, jax.Array]:
    """The policy and value of ``static.network`` (an ``actor_critic``) at a batch of observations;
    ``static.discrete`` says which distribution."""
    policy_out, value = static.network.apply(params, obs)
    return policy_distribution(policy_out, static.discrete), value


def actor_critic_act(
    static: Any, params: hk.Params, obs: jax.Array, key: jax.Array, deterministic: bool = False
) -> jax.Array:
    """An actor-critic agent's ``act``: actions for a batch of observations `[B, ...]`, the
    policy's mode if deterministic, else a sample."""
    dist, _ = policy_and_value(static, params, obs)
    return dist.mode() if deterministic else dist.sample(seed=key)
