"""Advantage actor-critic, synchronous (A2C; Mnih et al., 2016, arXiv:1602.01783).

One iteration, as Stable-Baselines3's ``A2C`` and CleanRL's ``a2c`` do it::

    collect T steps in each of B parallel envs with pi_theta        (collect)
    compute advantages A_t and value targets R_t (GAE, lambda = 1:  (targets)
        n-step returns bootstrapped at the rollout's end)
    one gradient step on the whole T * B batch:                      (learn)
        minimise  L = -E[log pi(a|s) A] + c_v E[(V(s) - R)^2] - c_e H[pi]

No ratio, no clipping, no epochs: the rollout is used once, by the policy that collected it.

Defaults are Stable-Baselines3's (``stable_baselines3/a2c/a2c.py``): ``n_steps=5``,
``learning_rate=7e-4`` (constant), ``gamma=0.99``, ``gae_lambda=1.0``, ``ent_coef=0.0``,
``vf_coef=0.5``, ``max_grad_norm=0.5``, RMSprop with ``alpha=0.99, eps=1e-5``,
``normalize_advantage=False``; its value loss is ``F.mse_loss`` (no factor 1/2), as here. The
network is SB3's ``MlpPolicy``: separate tanh MLPs of (64, 64) for actor and critic, orthogonal
init (gains sqrt 2, 0.01 for the policy head, 1 for the value head), a state-independent Gaussian
log std starting at 0 for Box actions (``agents.networks.actor_critic``). SB3 has no number of
envs of its own (``make_vec_env`` defaults to 1); 8 here, rl-baselines3-zoo's CartPole-v1 setting.

The optimizer is PyTorch's ``torch.optim.RMSprop`` as SB3 builds it:
``v <- 0.99 v + 0.01 g^2`` from ``v = 0``, no bias correction, step ``-lr g / (sqrt(v) + eps)``
with eps *outside* the square root, i.e. ``optax.scale_by_rms(decay=0.99, eps=1e-5,
eps_in_sqrt=False)`` (optax's default puts eps inside; SB3's ``RMSpropTFLike``, which rl-zoo
uses for Atari only, puts it inside and starts ``v`` at 1 instead).

Truncation is not termination: value targets bootstrap from the value of
``info["final_observation"]`` on truncation and from zero on termination
(``rl.device.returns.gae_advantages``), as SB3 does by adding ``gamma * V(terminal_observation)`` to
the reward of a truncated step.
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
RMS_DECAY = 0.99  # SB3's RMSprop alpha (not a setting of SB3's A2C either)


@dataclass(frozen=True)
class Config(onpolicy.Rollout):
    """Shape-setting settings of A2C: changing one recompiles."""

    num_envs: Count = 8
    """parallel environments per run"""
    num_steps: Count = 5
    """steps collected in each environment per update (rollout length T, SB3's n_steps)"""
    total_timesteps: Count = 500_000
    """env steps per run (rounded down to whole updates)"""
    hidden_sizes: Widths = (64, 64)
    """hidden layer widths of the actor and of the critic MLP"""
    activation: Annotated[str, ACTIVATION] = "tanh"
    """hidden activation: one of tanh, relu, gelu, elu, silu, leaky_relu"""
    torso: Annotated[str, TORSO] = "mlp"
    """mlp, or cnn for image observations (H, W, C): MinAtar's 16 3x3 filters, then the MLP"""
    anneal_lr: bool = False
    """decay the learning rate linearly to 0 over training (rl-zoo's lin_<lr>)"""
    normalize_advantages: bool = False
    """standardise advantages within each batch (SB3's normalize_advantage)"""
    normalize_obs: bool = False
    """running mean/std observation normalisation, shared by a run's envs"""
    log_std_init: float | None = None
    """continuous actions only: initial log std of a state-independent Gaussian std (default 0)"""
    state_dependent_std: bool = False
    """continuous actions only: std = softplus(linear head) + 0.001, as gymnax-blines"""

    # one gradient step per rollout: what rl.device.onpolicy reads of a PPO-style config
    num_minibatches = 1
    update_epochs = 1

    def validate(self, action_space: Any) -> None:
        """Raise ``ConfigError`` naming the first invalid field."""
        validate_config(self)
        onpolicy.check_batches(self)
        check_gaussian_options(self, action_space)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Hyper:
    """Traced settings of A2C: a sweep may give each a batch axis."""

    learning_rate: Positive = 7e-4
    """RMSprop step size (initial value when anneal_lr)"""
    gamma: Unit = 0.99
    """discount factor"""
    gae_lambda: Unit = 1.0
    """GAE lambda; 1 gives the n-step returns of the original A2C"""
    ent_coef: NonNegative = 0.0
    """entropy bonus coefficient"""
    vf_coef: NonNegative = 0.5
    """value loss coefficient (the loss is the mean squared error, no factor 1/2)"""
    max_grad_norm: Positive = 0.5
    """clip gradients to this global norm (optax.clip_by_global_norm)"""
    rms_prop_eps: Positive = 1e-5
    """RMSprop epsilon, added outside the square root as in PyTorch"""
    reward_scale: Positive = 1.0
    """rewards are multiplied by this before the targets (values are in scaled units)"""

    def validate(self) -> None:
        """Raise ``ConfigError`` for values outside their range (any shape)."""
        validate_hyper(self)


class State(NamedTuple):
    """Training carry of one A2C run."""

    params: hk.Params  # actor and critic parameters
    opt_state: optax.OptState  # (clip, rms) states
    env_state: Any  # vectorised env state, leading axis num_envs
    obs: Array  # [num_envs, *obs_shape] current observations
    key: chex.PRNGKey  # this run's key, split every update
    update_idx: Array  # int32[] updates done so far


class Batch(NamedTuple):
    """Flattened training data of one rollout: every field `[T * B, ...]`."""

    obs: Array
    action: Array
    advantage: Array  # A_t = R_t - V(s_t)
    target: Array  # value target R_t


class Static(NamedTuple):
    """What the factory closes over: settings, env and network (not traced)."""

    config: Config
    env: Any  # vectorised env
    env_params: Any
    network: hk.Transformed
    discrete: bool
    truncation_bound: int | None = None  # onpolicy.truncation_bound of the raw env (None: unknown)


def _optimizer(hyper: Hyper, learning_rate: Array) -> optax.GradientTransformation:
    """Global-norm clipping then PyTorch's RMSprop (see the module docstring)."""
    rms = optax.scale_by_rms(decay=RMS_DECAY, eps=hyper.rms_prop_eps, eps_in_sqrt=False)
    return onpolicy.optimizer(hyper.max_grad_norm, learning_rate, rms)


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
    """Roll the current policy out for num_steps in every env (no extras: the critic is run by
    ``targets`` on the whole batch at once, as in ``agents.ppo.collect``)."""

    def policy(obs, k):
        dist, _ = _policy(static, state.params, obs)
        return dist.sample(seed=k), None

    return rollout(static.env, static.env_params, policy, state.env_state, state.obs, key, static.config.num_steps)


def targets(static: Static, params: hk.Params, transitions, hyper: Hyper) -> Batch:
    """GAE(lambda) advantages and value targets, flattened to a `[T * B]` batch."""
    value_of = lambda obs: static.network.apply(params, obs)[1]  # noqa: E731
    value = value_of(onpolicy.flatten_time(transitions.obs)).reshape(transitions.reward.shape)
    next_value = onpolicy.successor_values(value_of, value, transitions, static.truncation_bound)
    advantage, target = gae_advantages(
        hyper.reward_scale * transitions.reward,
        value,
        next_value.reshape(transitions.reward.shape),
        transitions.terminated,
        transitions.truncated,
        hyper.gamma,
        hyper.gae_lambda,
    )
    batch = Batch(obs=transitions.obs, action=transitions.action, advantage=advantage, target=target)
    return onpolicy.flatten_time(batch)


def loss(static: Static, params: hk.Params, batch: Batch, hyper: Hyper):
    """Policy gradient + value loss - entropy bonus on one batch `[N]`, as SB3's ``A2C.train``.

    ``L = -mean(log pi(a|s) A) + vf_coef * mean((V(s) - R)^2) - ent_coef * mean(H[pi(.|s)])``;
    ``A`` and ``R`` are data (no gradient flows into them).
    """
    chex.assert_rank([batch.advantage, batch.target], 1)
    dist, value = _policy(static, params, batch.obs)
    advantage = onpolicy.normalize(batch.advantage) if static.config.normalize_advantages else batch.advantage
    policy_loss = -jnp.mean(dist.log_prob(batch.action) * advantage)
    value_loss = jnp.mean(jnp.square(value - batch.target))
    entropy = dist.entropy().mean()
    total = policy_loss + hyper.vf_coef * value_loss - hyper.ent_coef * entropy
    target_var = jnp.var(batch.target)
    return total, {
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": entropy,
        # 1 - Var[R - V] / Var[R], SB3's train/explained_variance (0 where Var[R] = 0)
        "explained_variance": jnp.where(target_var > 0, 1.0 - jnp.var(batch.target - value) / target_var, 0.0),
    }


def learn(static: Static, state: State, batch: Batch, hyper: Hyper, key: chex.PRNGKey):
    """One gradient step on the whole batch at the (annealed) learning rate."""
    return onpolicy.learn(static, state, batch, hyper, key, loss=loss, optimizer=_optimizer)


def update(static: Static, state: State, hyper: Hyper) -> tuple[State, dict[str, Array]]:
    """One A2C iteration: collect, estimate advantages, one gradient step."""
    return onpolicy.update(static, state, hyper, collect=collect, targets=targets, learn=learn)


def make(config: Config, env: Any, env_params: Any) -> Algorithm:
    """Build A2C for ``env``: validates ``config`` first, compiles nothing."""
    action_space = env.action_space(env_params)
    config.validate(action_space)
    check_torso(config.torso, env.observation_space(env_params))
    venv = envs.vectorize(env, config.num_envs, normalize_obs=config.normalize_obs)
    bound = onpolicy.truncation_bound(env, env_params, config.num_steps)
    static = Static(config, venv, env_params, network(config, action_space), envs.is_discrete(action_space), bound)
    return bind("a2c", static, init, update, act, config.batch_size, config.num_updates)
