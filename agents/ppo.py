"""Proximal Policy Optimization (Schulman et al., 2017, arXiv:1707.06347).

One iteration, as in Algorithm 1 of the paper::

    collect T steps in each of B parallel envs with pi_old          (collect)
    compute GAE advantages A_t and value targets R_t                (targets)
    for each of K epochs, for each of M shuffled minibatches:       (learn)
        minimise  L = -L^CLIP(theta) + c_v L^V(theta) - c_e H[pi_theta]

Discrete actions use a categorical policy, continuous actions a diagonal
Gaussian with a state-independent log standard deviation. Actor and critic are
separate Haiku MLPs with orthogonal initialisation (as in PureJaxRL/CleanRL).

Truncation is not termination: value targets bootstrap from the value of
``info["final_observation"]`` on truncation and from zero on termination
(``rl.returns.gae_advantages``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import chex
import distrax
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
import rlax

import envs
from agents.networks import ACTIVATIONS, MLP, linear_head
from rl.errors import NON_NEGATIVE, POSITIVE, UNIT, ConfigError, check, check_field_types, validate_hyper
from rl.returns import gae_advantages
from rl.rollout import rollout
from rl.runner import Algorithm

Array = chex.Array
MIN_STD = 1e-3  # floor of a state-dependent Gaussian std


@dataclass(frozen=True)
class Config:
    """Shape-setting settings of PPO: changing one recompiles."""

    num_envs: int = 4
    """parallel environments per run"""
    num_steps: int = 128
    """steps collected in each environment per update (rollout length T)"""
    num_minibatches: int = 4
    """minibatches per epoch; must divide num_envs * num_steps"""
    update_epochs: int = 4
    """passes over each rollout"""
    total_timesteps: int = 500_000
    """env steps per run (rounded down to whole updates)"""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """hidden layer widths of the actor and of the critic MLP"""
    activation: str = "tanh"
    """hidden activation: one of tanh, relu, gelu, elu, silu, leaky_relu"""
    anneal_lr: bool = True
    """decay the learning rate linearly to 0 over training"""
    clip_value_loss: bool = True
    """clip the value update to +-clip_eps around the old value (PPO2 style)"""
    normalize_advantages: bool = True
    """standardise advantages within each minibatch"""
    normalize_obs: bool = False
    """running mean/std observation normalisation, shared by a run's envs"""
    log_std_init: float | None = None
    """continuous actions only: initial log std of a state-independent Gaussian std (default 0)"""
    state_dependent_std: bool = False
    """continuous actions only: std = softplus(linear head) + 0.001, as gymnax-blines"""

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // self.batch_size

    def validate(self, action_space: Any) -> None:
        """Raise ``ConfigError`` naming the first invalid field."""
        check_field_types(self)
        for name in ("num_envs", "num_steps", "num_minibatches", "update_epochs", "total_timesteps"):
            value = getattr(self, name)
            check(isinstance(value, int) and value > 0, name, value, "must be a positive integer")
        if self.batch_size % self.num_minibatches:  # the message lists divisors: build it only when needed
            check(
                False,
                "num_minibatches",
                self.num_minibatches,
                f"must divide num_envs * num_steps = {self.batch_size} "
                f"(divisors: {_divisors(self.batch_size)})",
            )
        check(
            self.total_timesteps >= self.batch_size,
            "total_timesteps",
            self.total_timesteps,
            f"must be at least one update = num_envs * num_steps = {self.batch_size}",
        )
        check(
            len(self.hidden_sizes) > 0 and all(isinstance(h, int) and h > 0 for h in self.hidden_sizes),
            "hidden_sizes",
            self.hidden_sizes,
            "must be one or more positive integers",
        )
        check(
            self.activation in ACTIVATIONS,
            "activation",
            self.activation,
            f"must be one of {', '.join(ACTIVATIONS)}",
        )
        if envs.is_discrete(action_space):
            for name, unset in (("log_std_init", None), ("state_dependent_std", False)):
                check(
                    getattr(self, name) == unset,
                    name,
                    getattr(self, name),
                    "applies to continuous action spaces only; this env's actions are discrete",
                )
        check(
            not (self.state_dependent_std and self.log_std_init is not None),
            "log_std_init",
            self.log_std_init,
            "applies to the state-independent std only; unset it or set state_dependent_std=False",
        )


def _divisors(n: int) -> str:
    """The first divisors of n, found in O(sqrt n) (n = num_envs * num_steps can be absurd)."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    divs = sorted(set(small + [n // d for d in small]))
    return ", ".join(map(str, divs[:12])) + (", ..." if len(divs) > 12 else "")


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Hyper:
    """Traced settings of PPO: a sweep may give each a batch axis."""

    learning_rate: float = 2.5e-4
    """Adam step size (initial value when anneal_lr)"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.95
    """GAE lambda"""
    clip_eps: float = 0.2
    """surrogate clipping epsilon (also clips the value update)"""
    ent_coef: float = 0.01
    """entropy bonus coefficient"""
    vf_coef: float = 0.5
    """value loss coefficient"""
    max_grad_norm: float = 0.5
    """clip gradients to this global norm (optax.clip_by_global_norm)"""

    def validate(self) -> None:
        """Raise ``ConfigError`` for values outside their range (any shape)."""
        rules = {
            "learning_rate": POSITIVE,
            "gamma": UNIT,
            "gae_lambda": UNIT,
            "clip_eps": POSITIVE,
            "ent_coef": NON_NEGATIVE,
            "vf_coef": NON_NEGATIVE,
            "max_grad_norm": POSITIVE,
        }
        validate_hyper(self, rules)


class State(NamedTuple):
    """Training carry of one PPO run."""

    params: hk.Params  # actor and critic parameters
    opt_state: optax.OptState  # (clip, adam) states
    env_state: Any  # vectorised env state, leading axis num_envs
    obs: Array  # [num_envs, *obs_shape] current observations
    key: chex.PRNGKey  # this run's key, split every update
    update_idx: Array  # int32[] updates done so far


class Batch(NamedTuple):
    """Flattened training data of one rollout: every field `[T * B, ...]`."""

    obs: Array
    action: Array
    log_prob: Array  # log pi_old(a|s)
    value: Array  # V_old(s)
    advantage: Array
    target: Array  # value target R_t = A_t + V_old(s_t)


class Static(NamedTuple):
    """What the factory closes over: settings, env and network (not traced)."""

    config: Config
    env: Any  # vectorised env
    env_params: Any
    network: hk.Transformed
    discrete: bool


def _network(config: Config, action_space: Any, discrete: bool) -> hk.Transformed:
    """Separate actor and critic MLPs; returns ``(policy_params, value[B])``."""
    action_dim = action_space.n if discrete else int(np.prod(action_space.shape))
    log_std_init = 0.0 if config.log_std_init is None else config.log_std_init

    def forward(obs):
        actor = MLP(config.hidden_sizes, config.activation, name="actor")(obs)
        out = linear_head(action_dim, 0.01, name="policy_head")(actor)
        if not discrete and config.state_dependent_std:
            std = jax.nn.softplus(linear_head(action_dim, 0.01, name="std_head")(actor)) + MIN_STD
            out = (out, jnp.log(std))
        elif not discrete:
            log_std = hk.get_parameter("log_std", (action_dim,), init=hk.initializers.Constant(log_std_init))
            out = (out, jnp.broadcast_to(log_std, out.shape))
        critic = MLP(config.hidden_sizes, config.activation, name="critic")(obs)
        value = linear_head(1, 1.0, name="value_head")(critic)[:, 0]
        return out, value

    return hk.without_apply_rng(hk.transform(forward))


def _distribution(policy_out, discrete: bool) -> distrax.Distribution:
    if discrete:
        return distrax.Categorical(logits=policy_out)
    mean, log_std = policy_out
    return distrax.MultivariateNormalDiag(mean, jnp.exp(log_std))


def _optimizer(hyper: Hyper, learning_rate: Array) -> optax.GradientTransformation:
    """Global-norm clipping then Adam (eps 1e-5, as in PPO implementations)."""
    return optax.chain(
        optax.clip_by_global_norm(hyper.max_grad_norm),
        optax.scale_by_adam(eps=1e-5),
        optax.scale(-learning_rate),
    )


def init(static: Static, key: chex.PRNGKey, hyper: Hyper) -> State:
    """Fresh parameters, optimizer state and environments for one run."""
    key, net_key, env_key = jax.random.split(key, 3)
    obs, env_state = static.env.reset(env_key, static.env_params)
    params = static.network.init(net_key, obs)
    opt_state = _optimizer(hyper, jnp.float32(1.0)).init(params)
    return State(params, opt_state, env_state, obs, key, jnp.int32(0))


def act(static: Static, params: hk.Params, obs: Array, key: chex.PRNGKey, deterministic: bool = False) -> Array:
    """Actions for a batch of observations `[B, ...]` (mode if deterministic)."""
    policy_out, _ = static.network.apply(params, obs)
    dist = _distribution(policy_out, static.discrete)
    return dist.mode() if deterministic else dist.sample(seed=key)


def collect(static: Static, state: State, key: chex.PRNGKey):
    """Roll the current policy out for num_steps in every env."""

    def policy(obs, k):
        policy_out, value = static.network.apply(state.params, obs)
        dist = _distribution(policy_out, static.discrete)
        action, log_prob = dist.sample_and_log_prob(seed=k)
        return action, (log_prob, value)

    return rollout(
        static.env, static.env_params, policy, state.env_state, state.obs, key, static.config.num_steps
    )


def targets(static: Static, params: hk.Params, transitions, hyper: Hyper) -> Batch:
    """GAE advantages and value targets, flattened to a `[T * B]` batch."""
    log_prob, value = transitions.extras
    t, b = transitions.reward.shape
    next_obs = transitions.next_obs.reshape((t * b,) + transitions.next_obs.shape[2:])
    _, next_value = static.network.apply(params, next_obs)
    advantage, target = gae_advantages(
        transitions.reward,
        value,
        next_value.reshape(t, b),
        transitions.terminated,
        transitions.truncated,
        hyper.gamma,
        hyper.gae_lambda,
    )
    batch = Batch(transitions.obs, transitions.action, log_prob, value, advantage, target)
    return jax.tree.map(lambda x: x.reshape((t * b,) + x.shape[2:]), batch)


def loss(static: Static, params: hk.Params, batch: Batch, hyper: Hyper):
    """Clipped surrogate + value loss - entropy bonus on one minibatch `[M]`.

    ``L = -E[min(r A, clip(r, 1-eps, 1+eps) A)] + vf_coef * L^V - ent_coef * H``
    with ``r = pi(a|s) / pi_old(a|s)`` (eq. 7 and 9 of the paper). ``L^V`` is
    ``0.5 (V - R)^2``, or with ``clip_value_loss`` the larger of that and
    ``0.5 (V_old + clip(V - V_old, -eps, eps) - R)^2``.
    """
    chex.assert_rank([batch.log_prob, batch.value, batch.advantage, batch.target], 1)
    policy_out, value = static.network.apply(params, batch.obs)
    dist = _distribution(policy_out, static.discrete)
    log_ratio = dist.log_prob(batch.action) - batch.log_prob
    ratio = jnp.exp(log_ratio)
    advantage = batch.advantage
    if static.config.normalize_advantages:
        advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
    policy_loss = rlax.clipped_surrogate_pg_loss(ratio, advantage, hyper.clip_eps)
    value_loss = 0.5 * jnp.square(value - batch.target)
    if static.config.clip_value_loss:
        clipped = batch.value + jnp.clip(value - batch.value, -hyper.clip_eps, hyper.clip_eps)
        value_loss = jnp.maximum(value_loss, 0.5 * jnp.square(clipped - batch.target))
    value_loss = value_loss.mean()
    entropy = dist.entropy().mean()
    total = policy_loss + hyper.vf_coef * value_loss - hyper.ent_coef * entropy
    return total, {
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": entropy,
        "approx_kl": jnp.mean((ratio - 1.0) - log_ratio),
        "clip_fraction": jnp.mean(jnp.abs(ratio - 1.0) > hyper.clip_eps),
    }


def learn(static: Static, params, opt_state, batch: Batch, hyper: Hyper, learning_rate, key):
    """update_epochs passes of shuffled minibatch steps; returns mean metrics."""
    config = static.config
    tx = _optimizer(hyper, learning_rate)
    grad_fn = jax.grad(lambda p, mb: loss(static, p, mb, hyper), has_aux=True)

    def minibatch_step(carry, minibatch):
        params, opt_state = carry
        grads, metrics = grad_fn(params, minibatch)
        updates, opt_state = tx.update(grads, opt_state, params)
        metrics["grad_norm"] = optax.global_norm(grads)
        return (optax.apply_updates(params, updates), opt_state), metrics

    def epoch(carry, epoch_key):
        perm = jax.random.permutation(epoch_key, config.batch_size)
        minibatches = jax.tree.map(
            lambda x: x[perm].reshape((config.num_minibatches, config.minibatch_size) + x.shape[1:]),
            batch,
        )
        return jax.lax.scan(minibatch_step, carry, minibatches)

    keys = jax.random.split(key, config.update_epochs)
    (params, opt_state), metrics = jax.lax.scan(epoch, (params, opt_state), keys)
    return params, opt_state, jax.tree.map(jnp.mean, metrics)


def update(static: Static, state: State, hyper: Hyper) -> tuple[State, dict[str, Array]]:
    """One PPO iteration: collect, estimate advantages, learn."""
    key, rollout_key, learn_key = jax.random.split(state.key, 3)
    transitions, env_state, obs, episodes = collect(static, state, rollout_key)
    batch = targets(static, state.params, transitions, hyper)
    frac = 1.0 - state.update_idx / static.config.num_updates
    learning_rate = hyper.learning_rate * (frac if static.config.anneal_lr else 1.0)
    params, opt_state, metrics = learn(
        static, state.params, state.opt_state, batch, hyper, learning_rate, learn_key
    )
    metrics.update(episodes.as_metrics())
    metrics["learning_rate"] = learning_rate
    new_state = State(params, opt_state, env_state, obs, key, state.update_idx + 1)
    return new_state, metrics


def make(config: Config, env: Any, env_params: Any) -> Algorithm:
    """Build PPO for ``env``: validates ``config`` first, compiles nothing."""
    action_space = env.action_space(env_params)
    config.validate(action_space)
    discrete = envs.is_discrete(action_space)
    venv = envs.vectorize(env, config.num_envs, normalize_obs=config.normalize_obs)
    static = Static(config, venv, env_params, _network(config, action_space, discrete), discrete)
    return Algorithm(
        init=lambda key, hyper: init(static, key, hyper),
        update=lambda state, hyper: update(static, state, hyper),
        act=lambda params, obs, key, deterministic=False: act(static, params, obs, key, deterministic),
        steps_per_update=config.batch_size,
        num_updates=config.num_updates,
        name="ppo",
        config=config,
    )
