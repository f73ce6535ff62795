"""Parallelised Q-Network, PQN (Gallici et al., 2024, arXiv:2407.04811,
"Simplifying Deep Temporal Difference Learning").

Q-learning without a replay buffer or a target network: many parallel envs
decorrelate the data, LayerNorm keeps the TD updates stable. One iteration, as
in Algorithm 1 (PQN with Q(lambda)) of the paper::

    act epsilon-greedily for T steps in each of B parallel envs       (collect)
    compute Q(lambda) targets G_t from the current network              (targets)
        G_t = r_t + gamma (1 - terminated_t) [(1 - lambda) max_a Q(s'_t, a)
                                               + lambda G_{t+1}]
    for each of K epochs, for each of M shuffled minibatches:           (learn)
        minimise  L = mean 0.5 (G_t - Q(s_t, a_t))^2

Truncation is not termination: ``s'_t`` is the true successor
(``info["final_observation"]``), the bootstrap ``max_a Q(s'_t, a)`` is used on
truncation and dropped only on termination, and the lambda-trace is cut at
every episode end (``rl.returns.n_step_targets``). The reference code
(purejaxql) treats every episode end as termination.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import optax
import rlax

import envs
from agents.dqn import epsilon_greedy, q_network
from agents.networks import ACTIVATIONS
from rl import offpolicy
from rl.errors import POSITIVE, UNIT, check, check_field_types, validate_hyper
from rl.returns import n_step_targets
from rl.rollout import rollout
from rl.runner import Algorithm

Array = chex.Array


@dataclass(frozen=True)
class Config:
    """Shape-setting settings of PQN: changing one recompiles."""

    num_envs: int = 32
    """parallel environments per run"""
    num_steps: int = 64
    """steps collected in each environment per update (rollout length T)"""
    num_minibatches: int = 16
    """minibatches per epoch; must divide num_envs * num_steps"""
    update_epochs: int = 4
    """passes over each rollout"""
    total_timesteps: int = 500_000
    """env steps per run (rounded down to whole updates)"""
    hidden_sizes: tuple[int, ...] = (256, 256)
    """hidden layer widths of the Q-network MLP"""
    activation: str = "relu"
    """hidden activation: one of tanh, relu, gelu, elu, silu, leaky_relu"""
    layer_norm: bool = True
    """LayerNorm after each hidden linear layer (the paper's stabiliser)"""
    anneal_lr: bool = True
    """decay the learning rate linearly to 0 over training"""
    eval_epsilon: float = 0.0
    """exploration rate of ``act`` when not deterministic (evaluation)"""

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
        check(
            envs.is_discrete(action_space),
            "env",
            action_space,
            "PQN needs a discrete action space; use an actor-critic agent (e.g. ppo, sac) for Box actions",
        )
        for name in ("num_envs", "num_steps", "num_minibatches", "update_epochs", "total_timesteps"):
            value = getattr(self, name)
            check(isinstance(value, int) and value > 0, name, value, "must be a positive integer")
        check(
            self.batch_size % self.num_minibatches == 0,
            "num_minibatches",
            self.num_minibatches,
            f"must divide num_envs * num_steps = {self.batch_size}",
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
        check(0.0 <= self.eval_epsilon <= 1.0, "eval_epsilon", self.eval_epsilon, "must lie in [0, 1]")


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Hyper:
    """Traced settings of PQN: a sweep may give each a batch axis."""

    learning_rate: float = 1e-4
    """RAdam step size (initial value when anneal_lr)"""
    gamma: float = 0.99
    """discount factor"""
    q_lambda: float = 0.95
    """lambda of the Q(lambda) targets (0 = one-step Q-learning)"""
    eps_start: float = 1.0
    """epsilon of the epsilon-greedy behaviour policy at step 0"""
    eps_end: float = 0.05
    """final epsilon"""
    exploration_fraction: float = 0.2
    """fraction of total_timesteps over which epsilon decays linearly"""
    max_grad_norm: float = 10.0
    """clip gradients to this global norm (optax.clip_by_global_norm)"""
    reward_scale: float = 1.0
    """rewards are multiplied by this before the targets (Q-values are in scaled units)"""

    def validate(self) -> None:
        """Raise ``ConfigError`` for values outside their range (any shape)."""
        validate_hyper(
            self,
            {
                "learning_rate": POSITIVE,
                "gamma": UNIT,
                "q_lambda": UNIT,
                "eps_start": UNIT,
                "eps_end": UNIT,
                "exploration_fraction": UNIT,
                "max_grad_norm": POSITIVE,
                "reward_scale": POSITIVE,
            },
        )


class State(NamedTuple):
    """Training carry of one PQN run."""

    params: hk.Params  # Q-network parameters
    opt_state: optax.OptState  # (clip, radam) states
    env_state: Any  # vectorised env state, leading axis num_envs
    obs: Array  # [num_envs, *obs_shape] current observations
    key: chex.PRNGKey  # this run's key, split every update
    update_idx: Array  # int32[] updates done so far


class Batch(NamedTuple):
    """Flattened training data of one rollout: every field `[T * B, ...]`."""

    obs: Array
    action: Array  # int32
    target: Array  # Q(lambda) target G_t


class Static(NamedTuple):
    """What the factory closes over: settings, env and network (not traced)."""

    config: Config
    env: Any  # vectorised env
    env_params: Any
    network: hk.Transformed  # obs[B, ...] -> q[B, num_actions]


def _optimizer(hyper: Hyper, learning_rate: Array) -> optax.GradientTransformation:
    """Global-norm clipping then RAdam (as in the reference implementation)."""
    return optax.chain(
        optax.clip_by_global_norm(hyper.max_grad_norm),
        optax.scale_by_radam(),
        optax.scale(-learning_rate),
    )


def q_lambda_targets(
    r_t: Array, q_next_t: Array, terminated_t: Array, truncated_t: Array, gamma, lambda_
) -> Array:
    """Q(lambda) targets of a `[T, B]` rollout (Peng's Q(lambda), as in the paper).

    ``G_t = r_t + gamma (1 - terminated_t) [(1 - lambda_t) max_a Q(s'_t, a) + lambda_t G_{t+1}]``
    with ``lambda_t = 0`` at episode ends and at the last step. The paper writes
    the same recursion with ``done`` for both kinds of episode end.

    Args:
      r_t: `[T, B]` (scaled) rewards.
      q_next_t: `[T, B, A]` Q-values of each step's true successor ``next_obs``.
      terminated_t: `[T, B]` bool.
      truncated_t: `[T, B]` bool.
      gamma, lambda_: scalars (may be traced).

    Returns:
      `[T, B]` targets.
    """
    chex.assert_rank([r_t, q_next_t], [2, 3])
    return n_step_targets(r_t, jnp.max(q_next_t, axis=-1), terminated_t, truncated_t, gamma, lambda_)


def epsilon(config: Config, hyper: Hyper, env_steps: Array) -> Array:
    """Linear decay from eps_start to eps_end over exploration_fraction of training."""
    duration = hyper.exploration_fraction * config.total_timesteps
    return offpolicy.linear_schedule(hyper.eps_start, hyper.eps_end, duration, env_steps)


def init(static: Static, key: chex.PRNGKey, hyper: Hyper) -> State:
    """Fresh parameters, optimizer state and environments for one run."""
    key, net_key, env_key = jax.random.split(key, 3)
    obs, env_state = static.env.reset(env_key, static.env_params)
    params = static.network.init(net_key, obs)
    opt_state = _optimizer(hyper, jnp.float32(1.0)).init(params)
    return State(params, opt_state, env_state, obs, key, jnp.int32(0))


def act(static: Static, params: hk.Params, obs: Array, key: chex.PRNGKey, deterministic: bool = False) -> Array:
    """Greedy actions for `[B, ...]` observations, or eval_epsilon-greedy ones."""
    eps = 0.0 if deterministic else static.config.eval_epsilon
    return epsilon_greedy(key, static.network.apply(params, obs), eps)


def collect(static: Static, state: State, eps: Array, key: chex.PRNGKey):
    """Roll the epsilon-greedy policy out for num_steps in every env."""

    def policy(obs, k):
        return epsilon_greedy(k, static.network.apply(state.params, obs), eps), None

    return rollout(
        static.env, static.env_params, policy, state.env_state, state.obs, key, static.config.num_steps
    )


def targets(static: Static, params: hk.Params, transitions, hyper: Hyper) -> Batch:
    """Q(lambda) targets from the pre-update network, flattened to a `[T * B]` batch."""
    t, b = transitions.reward.shape
    next_obs = transitions.next_obs.reshape((t * b,) + transitions.next_obs.shape[2:])
    q_next = static.network.apply(params, next_obs).reshape(t, b, -1)
    target = q_lambda_targets(
        hyper.reward_scale * transitions.reward,
        q_next,
        transitions.terminated,
        transitions.truncated,
        hyper.gamma,
        hyper.q_lambda,
    )
    batch = Batch(transitions.obs, transitions.action, target)
    return jax.tree.map(lambda x: x.reshape((t * b,) + x.shape[2:]), batch)


def loss(static: Static, params: hk.Params, batch: Batch):
    """``mean 0.5 (G - Q(s, a))^2`` on one minibatch `[M]` (targets are constants)."""
    chex.assert_rank([batch.action, batch.target], 1)
    q = static.network.apply(params, batch.obs)
    q_taken = jnp.take_along_axis(q, batch.action[:, None], axis=1)[:, 0]
    td = jax.lax.stop_gradient(batch.target) - q_taken
    return jnp.mean(rlax.l2_loss(td)), {"q_mean": jnp.mean(q_taken)}


def learn(static: Static, params, opt_state, batch: Batch, hyper: Hyper, learning_rate, key):
    """update_epochs passes of shuffled minibatch steps; returns mean metrics."""
    config = static.config
    tx = _optimizer(hyper, learning_rate)
    grad_fn = jax.value_and_grad(lambda p, mb: loss(static, p, mb), has_aux=True)

    def minibatch_step(carry, minibatch):
        params, opt_state = carry
        (value, metrics), grads = grad_fn(params, minibatch)
        updates, opt_state = tx.update(grads, opt_state, params)
        metrics = {**metrics, "loss": value, "grad_norm": optax.global_norm(grads)}
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
    """One PQN iteration: collect, compute Q(lambda) targets, learn."""
    config = static.config
    key, rollout_key, learn_key = jax.random.split(state.key, 3)
    eps = epsilon(config, hyper, state.update_idx * config.batch_size)
    transitions, env_state, obs, episodes = collect(static, state, eps, rollout_key)
    batch = targets(static, state.params, transitions, hyper)
    frac = 1.0 - state.update_idx / config.num_updates
    learning_rate = hyper.learning_rate * (frac if config.anneal_lr else 1.0)
    params, opt_state, metrics = learn(
        static, state.params, state.opt_state, batch, hyper, learning_rate, learn_key
    )
    metrics = {**metrics, **episodes.as_metrics(), "epsilon": eps, "learning_rate": learning_rate}
    return State(params, opt_state, env_state, obs, key, state.update_idx + 1), metrics


def make(config: Config, env: Any, env_params: Any) -> Algorithm:
    """Build PQN for ``env``: validates ``config`` first, compiles nothing."""
    action_space = env.action_space(env_params)
    config.validate(action_space)
    venv = envs.vectorize(env, config.num_envs)
    network = q_network(action_space.n, config.hidden_sizes, config.activation, config.layer_norm)
    static = Static(config, venv, env_params, network)
    return Algorithm(
        init=lambda key, hyper: init(static, key, hyper),
        update=lambda state, hyper: update(static, state, hyper),
        act=lambda params, obs, key, deterministic=False: act(static, params, obs, key, deterministic),
        steps_per_update=config.batch_size,
        num_updates=config.num_updates,
        name="pqn",
        config=config,
    )
