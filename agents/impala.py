"""IMPALA's learner: actor-critic with V-trace off-policy correction (Espeholt et al., 2018,
arXiv:1802.01561).

In IMPALA the actors act with parameters a few updates older than the learner's; V-trace
corrects for that lag with truncated importance weights. Here the actors are the run's
parallel envs and the lag is explicit: acting uses the parameters of ``policy_lag``
updates ago (a queue of them rides in the carry; 0 acts on-policy). One iteration::

    roll out T steps in each of B envs with mu = pi_{theta_{k - lag}}      (collect)
    rho_t = pi_theta(a_t|x_t) / mu(a_t|x_t)
    v_s, A^pg_t = V-trace(r, V_theta, rho; lambda, rhobar, rhobar_pg)     (rl.device.returns.vtrace)
    one gradient step on                                                    (learn)
        L = -mean A^pg_t log pi_theta(a_t|x_t) + vf_coef 0.5 (v_s - V_theta(x_t))^2 - ent_coef H

Truncation is not termination: V-trace bootstraps from the value of
``info["final_observation"]`` on truncation, from zero on termination, and its trace is cut
at both. With lag 0, rho = 1 and the targets are the on-policy GAE targets of the same lambda.
"""

from __future__ import annotations

import functools
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
    check_torso,
    policy_and_value,
)
from rl.device import onpolicy
from rl.device.returns import vtrace
from rl.device.rollout import rollout
from rl.engine.runner import Algorithm, bind
from rl.errors import Count, NonNegative, NonNegativeCount, Positive, Unit, Widths, validate_config, validate_hyper

Array = chex.Array


@dataclass(frozen=True)
class Config(onpolicy.Rollout):
    """Shape-setting settings of IMPALA: changing one recompiles."""

    num_envs: Count = 16
    """parallel environments per run (IMPALA's actors)"""
    num_steps: Count = 20
    """unroll length T collected in each environment per update (the paper's n = 20)"""
    total_timesteps: Count = 500_000
    """env steps per run (rounded down to whole updates)"""
    policy_lag: NonNegativeCount = 1
    """updates between the acting parameters and the learner's (0: on-policy)"""
    hidden_sizes: Widths = (64, 64)
    """hidden layer widths of the actor and of the critic MLP"""
    activation: Annotated[str, ACTIVATION] = "tanh"
    """hidden activation: one of tanh, relu, gelu, elu, silu, leaky_relu"""
    torso: Annotated[str, TORSO] = "mlp"
    """mlp, or cnn for image observations (H, W, C): MinAtar's 16 3x3 filters, then the MLP"""
    anneal_lr: bool = True
    """decay the learning rate linearly to 0 over training"""

    num_minibatches = 1  # one gradient step on the whole unroll (for onpolicy.check_batches)

    def validate(self, action_space: Any) -> None:
        """Raise ``ConfigError`` naming the first invalid field."""
        validate_config(self)
        onpolicy.check_batches(self)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Hyper:
    """Traced settings of IMPALA: a sweep may give each a batch axis."""

    learning_rate: Positive = 1e-3
    """Adam step size (initial value when anneal_lr)"""
    gamma: Unit = 0.99
    """discount factor"""
    vtrace_lambda: Unit = 1.0
    """lambda of the V-trace traces c_t = lambda min(1, rho_t) (1 in the paper)"""
    clip_rho_threshold: Positive = 1.0
    """rhobar: importance weights of the value targets are clipped to it"""
    clip_pg_rho_threshold: Positive = 1.0
    """importance weights of the policy gradient are clipped to it"""
    ent_coef: NonNegative = 0.01
    """entropy bonus coefficient"""
    vf_coef: NonNegative = 0.5
    """value loss coefficient (the paper's baseline cost 0.5)"""
    max_grad_norm: Positive = 0.5
    """clip gradients to this global norm (optax.clip_by_global_norm)"""

    def validate(self) -> None:
        """Raise ``ConfigError`` for values outside their range (any shape)."""
        validate_hyper(self)


class State(NamedTuple):
    """Training carry of one IMPALA run."""

    params: hk.Params  # the learner's actor and critic parameters
    behaviour: hk.Params | None  # [policy_lag, ...] the parameters before each of the last updates, oldest first
    opt_state: optax.OptState
    env_state: Any  # vectorised env state, leading axis num_envs
    obs: Array  # [num_envs, *obs_shape] current observations
    key: chex.PRNGKey  # this run's key, split every update
    update_idx: Array  # int32[] updates done so far


class Batch(NamedTuple):
    """One unroll, time-major: every field `[T, B, ...]`."""

    obs: Array
    action: Array
    behaviour_log_prob: Array  # log mu(a|x)
    reward: Array
    terminated: Array
    truncated: Array
    next_obs: Array  # the true successor (final observation on truncation)


class Static(NamedTuple):
    """What the factory closes over: settings, env and network (not traced)."""

    config: Config
    env: Any  # vectorised env
    env_params: Any
    network: hk.Transformed
    discrete: bool


def _optimizer(hyper: Hyper, learning_rate: Array) -> optax.GradientTransformation:
    return onpolicy.optimizer(hyper.max_grad_norm, learning_rate, optax.scale_by_adam())


_policy = policy_and_value


def behaviour_params(static: Static, state: State) -> hk.Params:
    """The parameters the envs act with: ``policy_lag`` updates old (the learner's at lag 0)."""
    if state.behaviour is None:
        return state.params
    return jax.tree.map(lambda h: h[0], state.behaviour)


def init(static: Static, key: chex.PRNGKey, hyper: Hyper) -> State:
    """Fresh parameters (every queued behaviour copy equal to them), optimizer and envs."""
    key, net_key, env_key = jax.random.split(key, 3)
    obs, env_state = static.env.reset(env_key, static.env_params)
    params = static.network.init(net_key, obs)
    lag = static.config.policy_lag
    behaviour = jax.tree.map(lambda p: jnp.stack([p] * lag), params) if lag else None
    return State(
        params=params,
        behaviour=behaviour,
        opt_state=_optimizer(hyper, jnp.float32(1.0)).init(params),
        env_state=env_state,
        obs=obs,
        key=key,
        update_idx=jnp.int32(0),
    )


act = actor_critic_act  # actions for a batch of observations `[B, ...]` (mode if deterministic)


def collect(static: Static, state: State, hyper: Hyper, key: chex.PRNGKey):
    """Unroll the behaviour policy for num_steps in every env."""
    mu = behaviour_params(static, state)

    def policy(obs, k):
        dist, _ = _policy(static, mu, obs)
        return dist.sample_and_log_prob(seed=k)

    return rollout(static.env, static.env_params, policy, state.env_state, state.obs, key, static.config.num_steps)


def targets(static: Static, params: hk.Params, transitions, hyper: Hyper) -> Batch:
    """The unroll as the learner reads it (V-trace needs the learner's values: see ``loss``)."""
    return Batch(
        obs=transitions.obs,
        action=transitions.action,
        behaviour_log_prob=transitions.extras,
        reward=transitions.reward,
        terminated=transitions.terminated,
        truncated=transitions.truncated,
        next_obs=transitions.next_obs,
    )


def loss(static: Static, params: hk.Params, batch: Batch, hyper: Hyper):
    """V-trace actor-critic loss on one unroll `[T, B]` (targets from the learner's values)."""
    shape = batch.reward.shape
    dist, value = _policy(static, params, onpolicy.flatten_time(batch.obs))
    _, bootstrap = static.network.apply(params, onpolicy.flatten_time(batch.next_obs))
    log_prob = dist.log_prob(onpolicy.flatten_time(batch.action)).reshape(shape)
    value, bootstrap = value.reshape(shape), jax.lax.stop_gradient(bootstrap.reshape(shape))
    rho = jnp.exp(jax.lax.stop_gradient(log_prob) - batch.behaviour_log_prob)
    v_s, pg_advantage = vtrace(
        batch.reward,
        jax.lax.stop_gradient(value),
        bootstrap,
        batch.terminated,
        batch.truncated,
        rho,
        hyper.gamma,
        hyper.vtrace_lambda,
        hyper.clip_rho_threshold,
        hyper.clip_pg_rho_threshold,
    )
    policy_loss = -jnp.mean(pg_advantage * log_prob)
    value_loss = jnp.mean(0.5 * jnp.square(v_s - value))
    entropy = jnp.mean(dist.entropy())
    total = policy_loss + hyper.vf_coef * value_loss - hyper.ent_coef * entropy
    return total, {
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": entropy,
        "rho_mean": jnp.mean(rho),
        "rho_clipped_fraction": jnp.mean(rho > hyper.clip_rho_threshold),
    }


def learn(static: Static, state: State, batch: Batch, hyper: Hyper, key: chex.PRNGKey):
    """One gradient step on the unroll at the (annealed) learning rate."""
    del key  # no minibatches to shuffle
    config = static.config
    learning_rate = onpolicy.annealed(hyper.learning_rate, state.update_idx, config.num_updates, config.anneal_lr)
    params, opt_state, metrics = onpolicy.gradient_step(
        functools.partial(loss, static, hyper=hyper),
        _optimizer(hyper, learning_rate),
        state.params,
        state.opt_state,
        batch,
    )
    return params, opt_state, {**metrics, "learning_rate": learning_rate}


def update(static: Static, state: State, hyper: Hyper) -> tuple[State, dict[str, Array]]:
    """One IMPALA iteration: unroll with the lagged policy, V-trace, one learner step."""
    key, rollout_key, learn_key = jax.random.split(state.key, 3)
    transitions, env_state, obs, episodes = collect(static, state, hyper, rollout_key)
    params, opt_state, metrics = learn(
        static, state, targets(static, state.params, transitions, hyper), hyper, learn_key
    )
    behaviour = state.behaviour
    if behaviour is not None:  # the queue moves on: drop the oldest, append the parameters just replaced
        behaviour = jax.tree.map(lambda h, p: jnp.concatenate([h[1:], p[None]]), behaviour, state.params)
    new_state = State(
        params=params,
        behaviour=behaviour,
        opt_state=opt_state,
        env_state=env_state,
        obs=obs,
        key=key,
        update_idx=state.update_idx + 1,
    )
    return new_state, {**metrics, **episodes.as_metrics()}


network = actor_critic_of  # (config, action_space) -> obs -> (policy_out, value)


def make(config: Config, env: Any, env_params: Any) -> Algorithm:
    """Build IMPALA for ``env``: validates ``config`` first, compiles nothing."""
    action_space = env.action_space(env_params)
    config.validate(action_space)
    check_torso(config.torso, env.observation_space(env_params))
    venv = envs.vectorize(env, config.num_envs)
    static = Static(config, venv, env_params, network(config, action_space), envs.is_discrete(action_space))
    return bind("impala", static, init, update, act, config.batch_size, config.num_updates)
