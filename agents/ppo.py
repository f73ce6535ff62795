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
(``rl.device.returns.gae_advantages``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import optax

import envs
from agents.networks import (
    ACTIVATION,
    TORSO,
    actor_critic_act,
    actor_critic_of,
    check_gaussian_options,
    check_torso,
    policy_and_value,
)
from rl.device import onpolicy
from rl.device.returns import gae_advantages
from rl.device.rollout import rollout
from rl.engine.runner import Algorithm, bind
from rl.errors import Count, NonNegative, Positive, Unit, Widths, validate_config, validate_hyper

Array = chex.Array


@dataclass(frozen=True)
class Config(onpolicy.Rollout):
    """Shape-setting settings of PPO: changing one recompiles."""

    num_envs: Count = 4
    """parallel environments per run"""
    num_steps: Count = 128
    """steps collected in each environment per update (rollout length T)"""
    num_minibatches: Count = 4
    """minibatches per epoch; must divide num_envs * num_steps"""
    update_epochs: Count = 4
    """passes over each rollout"""
    total_timesteps: Count = 500_000
    """env steps per run (rounded down to whole updates)"""
    hidden_sizes: Widths = (64, 64)
    """hidden layer widths of the actor and of the critic MLP"""
    activation: Annotated[str, ACTIVATION] = "tanh"
    """hidden activation: one of tanh, relu, gelu, elu, silu, leaky_relu"""
    torso: Annotated[str, TORSO] = "mlp"
    """mlp, or cnn for image observations (H, W, C): MinAtar's 16 3x3 filters, then the MLP"""
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

    def validate(self, action_space: Any) -> None:
        """Raise ``ConfigError`` naming the first invalid field."""
        validate_config(self)
        onpolicy.check_batches(self)
        check_gaussian_options(self, action_space)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Hyper:
    """Traced settings of PPO: a sweep may give each a batch axis."""

    learning_rate: Positive = 2.5e-4
    """Adam step size (initial value when anneal_lr)"""
    gamma: Unit = 0.99
    """discount factor"""
    gae_lambda: Unit = 0.95
    """GAE lambda"""
    clip_eps: Positive = 0.2
    """surrogate clipping epsilon (also clips the value update)"""
    ent_coef: NonNegative = 0.01
    """entropy bonus coefficient"""
    vf_coef: NonNegative = 0.5
    """value loss coefficient"""
    max_grad_norm: Positive = 0.5
    """clip gradients to this global norm (optax.clip_by_global_norm)"""

    def validate(self) -> None:
        """Raise ``ConfigError`` for values outside their range (any shape)."""
        validate_hyper(self)


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
    truncation_bound: int | None = None  # onpolicy.truncation_bound of the raw env (None: unknown)


def _optimizer(hyper: Hyper, learning_rate: Array) -> optax.GradientTransformation:
    """Global-norm clipping then Adam (eps 1e-5, as in PPO implementations)."""
    return onpolicy.optimizer(hyper.max_grad_norm, learning_rate, optax.scale_by_adam(eps=1e-5))


_policy = policy_and_value
network = actor_critic_of  # (config, action_space) -> obs -> (policy_out, value)


def init(static: Static, key: chex.PRNGKey, hyper: Hyper) -> State:
    """Fresh parameters, optimizer state and environments for one run."""
    key, net_key, env_key = jax.random.split(key, 3)
    obs, env_state = static.env.reset(env_key, static.env_params)
    params = static.network.init(net_key, obs)
    opt_state = _optimizer(hyper, jnp.float32(1.0)).init(params)
    return State(params=params, opt_state=opt_state, env_state=env_state, obs=obs, key=key, update_idx=jnp.int32(0))


act = actor_critic_act  # actions for a batch of observations `[B, ...]` (mode if deterministic)


def collect(static: Static, state: State, hyper: Hyper, key: chex.PRNGKey):
    """Roll the current policy out for num_steps in every env; extras are the log-probabilities.

    The critic is not run here (XLA drops it: its value is unused): ``targets`` values the whole
    `[T * B]` batch at once, with the same parameters. Per step, the critic's weights would be read
    for B rows: at 2048 seeds on a GPU the rollout's critic layers moved an estimated 4.8 GB per
    update for a `[4, 64]` product per seed (GPU-compiled program, ``make bench``'s hlo group)."""

    def policy(obs, k):
        dist, _ = _policy(static, state.params, obs)
        return dist.sample_and_log_prob(seed=k)

    return rollout(static.env, static.env_params, policy, state.env_state, state.obs, key, static.config.num_steps)


def targets(static: Static, params: hk.Params, transitions, hyper: Hyper) -> Batch:
    """GAE advantages and value targets, flattened to a `[T * B]` batch: the values of the
    observations acted on (one pass over the batch) and of the successors ``successor_values`` needs."""
    log_prob = transitions.extras
    value_of = lambda obs: static.network.apply(params, obs)[1]  # noqa: E731
    value = value_of(onpolicy.flatten_time(transitions.obs)).reshape(transitions.reward.shape)
    next_value = onpolicy.successor_values(value_of, value, transitions, static.truncation_bound)
    advantage, target = gae_advantages(
        transitions.reward,
        value,
        next_value.reshape(transitions.reward.shape),
        transitions.terminated,
        transitions.truncated,
        hyper.gamma,
        hyper.gae_lambda,
    )
    batch = Batch(
        obs=transitions.obs,
        action=transitions.action,
        log_prob=log_prob,
        value=value,
        advantage=advantage,
        target=target,
    )
    return onpolicy.flatten_time(batch)


def loss(static: Static, params: hk.Params, batch: Batch, hyper: Hyper):
    """Clipped surrogate + value loss - entropy bonus on one minibatch `[M]`.

    ``L = -E[min(r A, clip(r, 1-eps, 1+eps) A)] + vf_coef * L^V - ent_coef * H``
    with ``r = pi(a|s) / pi_old(a|s)`` (eq. 7 and 9 of the paper). ``L^V`` is
    ``0.5 (V - R)^2``, or with ``clip_value_loss`` the larger of that and
    ``0.5 (V_old + clip(V - V_old, -eps, eps) - R)^2``.
    """
    dist, value = _policy(static, params, batch.obs)
    return onpolicy.clipped_surrogate_loss(
        dist,
        value,
        batch.action,
        batch.log_prob,
        batch.value,
        batch.advantage,
        batch.target,
        hyper,
        clip_value_loss=static.config.clip_value_loss,
        normalize_advantages=static.config.normalize_advantages,
    )


def learn(static: Static, state: State, batch: Batch, hyper: Hyper, key: chex.PRNGKey):
    """update_epochs passes of shuffled minibatch steps at the (annealed) learning rate."""
    return onpolicy.learn(static, state, batch, hyper, key, loss=loss, optimizer=_optimizer)


def update(static: Static, state: State, hyper: Hyper) -> tuple[State, dict[str, Array]]:
    """One PPO iteration: collect, estimate advantages, learn."""
    return onpolicy.update(static, state, hyper, collect=collect, targets=targets, learn=learn)


def make(config: Config, env: Any, env_params: Any) -> Algorithm:
    """Build PPO for ``env``: validates ``config`` first, compiles nothing."""
    action_space = env.action_space(env_params)
    config.validate(action_space)
    check_torso(config.torso, env.observation_space(env_params))
    venv = envs.vectorize(env, config.num_envs, normalize_obs=config.normalize_obs)
    bound = onpolicy.truncation_bound(env, env_params, config.num_steps)
    static = Static(config, venv, env_params, network(config, action_space), envs.is_discrete(action_space), bound)
    return bind("ppo", static, init, update, act, config.batch_size, config.num_updates)
