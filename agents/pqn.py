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
every episode end (``rl.device.returns.n_step_targets``). The reference code
(purejaxql) treats every episode end as termination.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import optax
import rlax

import envs
from agents.networks import ACTIVATION, TORSO, check_torso, q_network
from rl.device import offpolicy, onpolicy
from rl.device.returns import n_step_targets
from rl.device.rollout import rollout
from rl.engine.runner import Algorithm, bind
from rl.errors import Count, Positive, Unit, Widths, check, validate_config, validate_hyper

Array = chex.Array


@dataclass(frozen=True)
class Config(onpolicy.Rollout):
    """Shape-setting settings of PQN: changing one recompiles."""

    num_envs: Count = 32
    """parallel environments per run"""
    num_steps: Count = 64
    """steps collected in each environment per update (rollout length T)"""
    num_minibatches: Count = 16
    """minibatches per epoch; must divide num_envs * num_steps"""
    update_epochs: Count = 4
    """passes over each rollout"""
    total_timesteps: Count = 500_000
    """env steps per run (rounded down to whole updates)"""
    hidden_sizes: Widths = (256, 256)
    """hidden layer widths of the Q-network MLP"""
    activation: Annotated[str, ACTIVATION] = "relu"
    """hidden activation: one of tanh, relu, gelu, elu, silu, leaky_relu"""
    torso: Annotated[str, TORSO] = "mlp"
    """mlp, or cnn for image observations (H, W, C): MinAtar's 16 3x3 filters, then the MLP"""
    layer_norm: bool = True
    """LayerNorm after each hidden linear layer (the paper's stabiliser)"""
    anneal_lr: bool = True
    """decay the learning rate linearly to 0 over training"""
    eval_epsilon: Unit = 0.0
    """exploration rate of ``act`` when not deterministic (evaluation)"""

    def validate(self, action_space: Any) -> None:
        """Raise ``ConfigError`` naming the first invalid field."""
        check(
            envs.is_discrete(action_space),
            "env",
            action_space,
            "PQN needs a discrete action space; use an actor-critic agent (e.g. ppo, sac) for Box actions",
        )
        validate_config(self)
        onpolicy.check_batches(self)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Hyper:
    """Traced settings of PQN: a sweep may give each a batch axis."""

    learning_rate: Positive = 1e-4
    """RAdam step size (initial value when anneal_lr)"""
    gamma: Unit = 0.99
    """discount factor"""
    q_lambda: Unit = 0.95
    """lambda of the Q(lambda) targets (0 = one-step Q-learning)"""
    eps_start: Unit = 1.0
    """epsilon of the epsilon-greedy behaviour policy at step 0"""
    eps_end: Unit = 0.05
    """final epsilon"""
    exploration_fraction: Unit = 0.2
    """fraction of total_timesteps over which epsilon decays linearly"""
    max_grad_norm: Positive = 10.0
    """clip gradients to this global norm (optax.clip_by_global_norm)"""
    reward_scale: Positive = 1.0
    """rewards are multiplied by this before the targets (Q-values are in scaled units)"""

    def validate(self) -> None:
        """Raise ``ConfigError`` for values outside their range (any shape)."""
        validate_hyper(self)


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
    return onpolicy.optimizer(hyper.max_grad_norm, learning_rate, optax.scale_by_radam())


def q_lambda_targets(r_t: Array, q_next_t: Array, terminated_t: Array, truncated_t: Array, gamma, lambda_) -> Array:
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


def init(static: Static, key: chex.PRNGKey, hyper: Hyper) -> State:
    """Fresh parameters, optimizer state and environments for one run."""
    key, net_key, env_key = jax.random.split(key, 3)
    obs, env_state = static.env.reset(env_key, static.env_params)
    params = static.network.init(net_key, obs)
    opt_state = _optimizer(hyper, jnp.float32(1.0)).init(params)
    return State(params=params, opt_state=opt_state, env_state=env_state, obs=obs, key=key, update_idx=jnp.int32(0))


def act(static: Static, params: hk.Params, obs: Array, key: chex.PRNGKey, deterministic: bool = False) -> Array:
    """Greedy actions for `[B, ...]` observations, or eval_epsilon-greedy ones."""
    eps = 0.0 if deterministic else static.config.eval_epsilon
    return offpolicy.epsilon_greedy(key, static.network.apply(params, obs), eps)


def epsilon(static: Static, state: State, hyper: Hyper) -> Array:
    """The behaviour policy's epsilon at this update (linear decay over exploration_fraction)."""
    config = static.config
    return offpolicy.epsilon(hyper, config.total_timesteps, state.update_idx * config.batch_size)


def collect(static: Static, state: State, hyper: Hyper, key: chex.PRNGKey):
    """Roll the epsilon-greedy policy out for num_steps in every env."""
    eps = epsilon(static, state, hyper)

    def policy(obs, k):
        return offpolicy.epsilon_greedy(k, static.network.apply(state.params, obs), eps), None

    return rollout(static.env, static.env_params, policy, state.env_state, state.obs, key, static.config.num_steps)


def targets(static: Static, params: hk.Params, transitions, hyper: Hyper) -> Batch:
    """Q(lambda) targets from the pre-update network, flattened to a `[T * B]` batch."""
    q_next = static.network.apply(params, onpolicy.flatten_time(transitions.next_obs))
    target = q_lambda_targets(
        hyper.reward_scale * transitions.reward,
        q_next.reshape(transitions.reward.shape + q_next.shape[1:]),
        transitions.terminated,
        transitions.truncated,
        hyper.gamma,
        hyper.q_lambda,
    )
    return onpolicy.flatten_time(Batch(obs=transitions.obs, action=transitions.action, target=target))


def loss(static: Static, params: hk.Params, batch: Batch, hyper: Hyper):
    """``mean 0.5 (G - Q(s, a))^2`` on one minibatch `[M]` (targets are constants)."""
    chex.assert_rank([batch.action, batch.target], 1)
    q = static.network.apply(params, batch.obs)
    q_taken = jnp.take_along_axis(q, batch.action[:, None], axis=1)[:, 0]
    td = jax.lax.stop_gradient(batch.target) - q_taken
    return jnp.mean(rlax.l2_loss(td)), {"q_mean": jnp.mean(q_taken)}


def learn(static: Static, state: State, batch: Batch, hyper: Hyper, key: chex.PRNGKey):
    """update_epochs passes of shuffled minibatch steps at the (annealed) learning rate."""
    return onpolicy.learn(static, state, batch, hyper, key, loss=loss, optimizer=_optimizer)


def update(static: Static, state: State, hyper: Hyper) -> tuple[State, dict[str, Array]]:
    """One PQN iteration: collect, compute Q(lambda) targets, learn."""
    eps = epsilon(static, state, hyper)
    state, metrics = onpolicy.update(static, state, hyper, collect=collect, targets=targets, learn=learn)
    return state, {**metrics, "epsilon": eps}


def network(config: Config, action_space: Any) -> hk.Transformed:
    """PQN's Q-network: an MLP with LayerNorm (``agents.networks.q_network``)."""
    return q_network(action_space.n, config.hidden_sizes, config.activation, config.layer_norm, torso=config.torso)


def make(config: Config, env: Any, env_params: Any) -> Algorithm:
    """Build PQN for ``env``: validates ``config`` first, compiles nothing."""
    action_space = env.action_space(env_params)
    config.validate(action_space)
    check_torso(config.torso, env.observation_space(env_params))
    venv = envs.vectorize(env, config.num_envs)
    static = Static(config, venv, env_params, network(config, action_space))
    return bind("pqn", static, init, update, act, config.batch_size, config.num_updates)
