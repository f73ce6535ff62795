"""Recurrent PPO: PPO (Schulman et al., 2017) with a GRU or LSTM core, for partially observed envs.

One iteration, as PPO's Algorithm 1 with the core's carry threaded through::

    collect T steps in each of B envs with pi_old, carrying h_t          (collect)
    compute GAE advantages and value targets                             (targets)
    for each of K epochs, for each of M shuffled minibatches of whole    (learn)
    sequences (B / M envs, T steps each, from the carry they started with):
        re-unroll the core over the sequence, minimise PPO's loss

The network is ``obs -> MLP -> core (GRU/LSTM) -> actor head, critic head`` (one core shared by
actor and critic, as PureJaxRL's ppo_rnn). The carry resets to zero exactly where the env
reported ``terminated | truncated`` at the previous step: ``first_t`` marks an episode's first
observation, and the core reads ``where(first_t, 0, h_{t-1})``. The same flags reset it when
the loss re-unrolls a sequence, so training sees the carries acting saw.

Truncation bootstraps from the value of ``info["final_observation"]`` read with the carry that saw
the episode's last observation (the core stepped from ``h_t`` on the final observation, no reset),
not with the reset carry of the next episode; termination bootstraps from zero
(``rl.device.returns.gae_advantages``).

Minibatches split the envs, never time: ``num_minibatches`` must divide ``num_envs``. Discrete
actions use a categorical policy, continuous ones a diagonal Gaussian (``agents.networks``).
``act`` (what ``Algorithm.act`` binds) acts from the initial carry, without memory; acting with
memory is ``recurrent_act`` with ``initial_carry`` (``Algorithm.recurrent``), which evaluation
episodes, ``agents.load`` and ``experiments.evaluate`` use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

import envs
from agents.networks import ACTIVATION, MIN_STD, MLP, check_gaussian_options, linear_head, policy_distribution
from rl.device import onpolicy
from rl.device.returns import gae_advantages
from rl.device.rollout import EpisodeStats, env_step, scan_rows
from rl.engine.runner import Algorithm, bind
from rl.errors import Count, NonNegative, Positive, Unit, Widths, check, one_of, validate_config, validate_hyper

Array = chex.Array
CELLS = ("gru", "lstm")


@dataclass(frozen=True)
class Config(onpolicy.Rollout):
    """Shape-setting settings of recurrent PPO: changing one recompiles."""

    num_envs: Count = 16
    """parallel environments per run"""
    num_steps: Count = 128
    """steps collected in each environment per update (the sequence length T)"""
    num_minibatches: Count = 4
    """minibatches per epoch, each of num_envs / num_minibatches whole sequences; must divide num_envs"""
    update_epochs: Count = 4
    """passes over each rollout"""
    total_timesteps: Count = 500_000
    """env steps per run (rounded down to whole updates)"""
    cell: Annotated[str, one_of(CELLS)] = "gru"
    """recurrent core: gru or lstm (Haiku's)"""
    cell_size: Count = 64
    """width of the core's hidden state"""
    hidden_sizes: Widths = (64,)
    """MLP widths between the observation and the core"""
    head_sizes: Widths = (64,)
    """hidden widths of the actor head and of the critic head after the core"""
    activation: Annotated[str, ACTIVATION] = "tanh"
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
    """continuous actions only: std = softplus(linear head) + 0.001"""

    def validate(self, action_space: Any) -> None:
        """Raise ``ConfigError`` naming the first invalid field."""
        validate_config(self)
        onpolicy.check_batches(self)
        check(
            self.num_envs % self.num_minibatches == 0,
            "num_minibatches",
            self.num_minibatches,
            f"must divide num_envs = {self.num_envs}: minibatches are whole sequences (envs), never split in time",
        )
        check_gaussian_options(self, action_space)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Hyper:
    """Traced settings of recurrent PPO: a sweep may give each a batch axis."""

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
    """Training carry of one recurrent PPO run."""

    params: hk.Params  # torso, core, actor and critic parameters
    opt_state: optax.OptState  # (clip, adam) states
    env_state: Any  # vectorised env state, leading axis num_envs
    obs: Array  # [num_envs, *obs_shape] current observations
    first: Array  # bool[num_envs]: obs starts an episode (the core resets before reading it)
    carry: Any  # the core's carry after the last step, [num_envs, cell_size] (LSTM: hidden and cell)
    key: chex.PRNGKey  # this run's key, split every update
    update_idx: Array  # int32[] updates done so far


class Extras(NamedTuple):
    """What acting records per step, `[T, B, ...]` in a rollout."""

    log_prob: Array  # log pi_old(a_t | history)
    value: Array  # V_old(history up to obs_t)
    first: Array  # bool: obs_t starts an episode
    carry: Any  # the carry after reading obs_t (h_t), for the bootstrap on final_observation


class Batch(NamedTuple):
    """Training data of one rollout, env-major: every field `[B, T, ...]` but ``carry`` `[B, ...]`."""

    obs: Array
    action: Array
    first: Array
    log_prob: Array
    value: Array
    advantage: Array
    target: Array  # value target R_t = A_t + V_old
    carry: Any  # the carry each sequence started from (before its first reset)


class Static(NamedTuple):
    """What the factory closes over: settings, env and network (not traced)."""

    config: Config
    env: Any  # vectorised env
    env_params: Any
    network: hk.Transformed  # (obs[B], first[B], carry) -> (policy_out, value[B], carry)
    discrete: bool


def _optimizer(hyper: Hyper, learning_rate: Array) -> optax.GradientTransformation:
    """Global-norm clipping then Adam (eps 1e-5, as in PPO implementations)."""
    return onpolicy.optimizer(hyper.max_grad_norm, learning_rate, optax.scale_by_adam(eps=1e-5))


def reset_where(first: Array, carry: Any) -> Any:
    """The carry with the rows where ``first[B]`` set back to the initial (zero) carry."""
    return jax.tree.map(lambda h: jnp.where(first.reshape(first.shape + (1,) * (h.ndim - 1)), 0.0, h), carry)


def network(config: Config, action_space: Any) -> hk.Transformed:
    """``(obs[B, ...], first[B], carry) -> (policy_out, value[B], carry)``: one step of the recurrent
    actor-critic; the carry is reset where ``first`` before the core reads the observation."""
    discrete = envs.is_discrete(action_space)
    action_dim = action_space.n if discrete else int(np.prod(action_space.shape))
    log_std_init = 0.0 if config.log_std_init is None else config.log_std_init

    def forward(obs, first, carry):
        core = hk.GRU(config.cell_size) if config.cell == "gru" else hk.LSTM(config.cell_size)
        x = MLP(config.hidden_sizes, config.activation, name="torso")(obs)
        x, carry = core(x, reset_where(first, carry))
        actor = MLP(config.head_sizes, config.activation, name="actor")(x)
        out = linear_head(action_dim, 0.01, name="policy_head")(actor)
        if not discrete and config.state_dependent_std:
            out = (out, jnp.log(jax.nn.softplus(linear_head(action_dim, 0.01, name="std_head")(actor)) + MIN_STD))
        elif not discrete:
            log_std = hk.get_parameter("log_std", (action_dim,), init=hk.initializers.Constant(log_std_init))
            out = (out, jnp.broadcast_to(log_std, out.shape))
        critic = MLP(config.head_sizes, config.activation, name="critic")(x)
        return out, linear_head(1, 1.0, name="value_head")(critic)[:, 0], carry

    return hk.without_apply_rng(hk.transform(forward))


def initial_carry(static: Static, batch: int) -> Any:
    """The core's carry at an episode's start: zeros, `[batch, cell_size]` (LSTM: hidden and cell)."""
    zeros = jnp.zeros((batch, static.config.cell_size), jnp.float32)
    return zeros if static.config.cell == "gru" else hk.LSTMState(hidden=zeros, cell=zeros)


def _step(static: Static, params: hk.Params, obs: Array, first: Array, carry: Any):
    policy_out, value, carry = static.network.apply(params, obs, first, carry)
    return policy_distribution(policy_out, static.discrete), value, carry


def init(static: Static, key: chex.PRNGKey, hyper: Hyper) -> State:
    """Fresh parameters, optimizer state, environments and carry for one run."""
    key, net_key, env_key = jax.random.split(key, 3)
    obs, env_state = static.env.reset(env_key, static.env_params)
    first = jnp.ones((static.config.num_envs,), bool)
    carry = initial_carry(static, static.config.num_envs)
    params = static.network.init(net_key, obs, first, carry)
    opt_state = _optimizer(hyper, jnp.float32(1.0)).init(params)
    return State(
        params=params,
        opt_state=opt_state,
        env_state=env_state,
        obs=obs,
        first=first,
        carry=carry,
        key=key,
        update_idx=jnp.int32(0),
    )


def recurrent_act(
    static: Static, params: hk.Params, carry: Any, obs: Array, key: chex.PRNGKey, deterministic: bool = False
) -> tuple[Array, Any]:
    """Actions for `[B, ...]` observations with memory: ``(action, carry)``; the caller resets the
    carry to ``initial_carry`` where an episode ended (``rl.engine.runner.Recurrent``)."""
    dist, _, carry = _step(static, params, obs, jnp.zeros(obs.shape[:1], bool), carry)
    return (dist.mode() if deterministic else dist.sample(seed=key)), carry


def act(static: Static, params: hk.Params, obs: Array, key: chex.PRNGKey, deterministic: bool = False) -> Array:
    """Actions for `[B, ...]` observations from the initial carry (no memory): each obs read as an
    episode's first. Acting with memory is ``recurrent_act``."""
    return recurrent_act(static, params, initial_carry(static, obs.shape[0]), obs, key, deterministic)[0]


def collect(static: Static, state: State, hyper: Hyper, key: chex.PRNGKey):
    """Roll the current policy out for num_steps in every env, threading the core's carry.

    Returns ``(transitions [T, B], env_state, obs, first, carry, episodes)``; the carry resets
    (through ``first``) exactly after the steps where the env reported terminated or truncated.
    """

    def step(c, step_key):
        env_state, obs, first, carry, stats = c
        act_key, env_key = jax.random.split(step_key)
        dist, value, carry = _step(static, state.params, obs, first, carry)
        action, log_prob = dist.sample_and_log_prob(seed=act_key)
        extras = Extras(log_prob=log_prob, value=value, first=first, carry=carry)
        transition, env_state, obs, step_stats = env_step(
            static.env, static.env_params, env_state, obs, action, env_key, extras
        )
        first = transition.terminated | transition.truncated
        return (env_state, obs, first, carry, stats + step_stats), transition

    keys = jax.random.split(key, static.config.num_steps)
    start = (state.env_state, state.obs, state.first, state.carry, EpisodeStats.zero(state.first.shape))
    (env_state, obs, first, carry, episodes), transitions = scan_rows(step, start, keys, state.first.shape[0])
    return transitions, env_state, obs, first, carry, episodes.total()


def targets(static: Static, params: hk.Params, transitions, start_carry: Any, hyper: Hyper) -> Batch:
    """GAE advantages and value targets of a `[T, B]` rollout, as an env-major `[B, T]` batch.

    The bootstrap value of step t is the critic on the true successor ``next_obs_t`` read with the
    carry ``h_t`` that saw ``obs_t`` and no reset: inside an episode that is the next step's value,
    on truncation it reads the final observation with the episode's own memory.
    """
    extras = transitions.extras
    T, B = transitions.reward.shape
    carry = onpolicy.flatten_time(extras.carry)
    no_reset = jnp.zeros((T * B,), bool)
    _, next_value, _ = static.network.apply(params, onpolicy.flatten_time(transitions.next_obs), no_reset, carry)
    advantage, target = gae_advantages(
        transitions.reward,
        extras.value,
        next_value.reshape(T, B),
        transitions.terminated,
        transitions.truncated,
        hyper.gamma,
        hyper.gae_lambda,
    )
    time_major = (
        transitions.obs,
        transitions.action,
        extras.first,
        extras.log_prob,
        extras.value,
        advantage,
        target,
    )
    env_major = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), time_major)
    return Batch(*env_major, carry=start_carry)


def unroll(static: Static, params: hk.Params, carry: Any, obs: Array, first: Array) -> tuple[Any, Array]:
    """Re-run the core over sequences: obs `[M, T, ...]`, first `[M, T]`, carry `[M, ...]` ->
    ``(policy_out [M, T, ...], value [M, T])``, resetting where ``first`` as acting did."""

    def step(carry, x):
        obs_t, first_t = x
        policy_out, value, carry = static.network.apply(params, obs_t, first_t, carry)
        return carry, (policy_out, value)

    swap = lambda tree: jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), tree)  # noqa: E731
    _, outputs = jax.lax.scan(step, carry, swap((obs, first)))
    return swap(outputs)


def loss(static: Static, params: hk.Params, batch: Batch, hyper: Hyper):
    """PPO's clipped surrogate + value loss - entropy bonus (``onpolicy.clipped_surrogate_loss``) on
    a minibatch of whole sequences `[M, T]`, the policy and values re-unrolled from their carries."""
    chex.assert_rank([batch.first, batch.log_prob, batch.value, batch.advantage, batch.target], 2)
    policy_out, value = unroll(static, params, batch.carry, batch.obs, batch.first)
    policy_out, value, batch = onpolicy.flatten_time((policy_out, value, batch._replace(carry=None)))  # [M * T]
    return onpolicy.clipped_surrogate_loss(
        policy_distribution(policy_out, static.discrete),
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
    """update_epochs passes over num_minibatches shuffled groups of whole sequences (the leading env axis)."""
    return onpolicy.learn(static, state, batch, hyper, key, loss=loss, optimizer=_optimizer)


def update(static: Static, state: State, hyper: Hyper) -> tuple[State, dict[str, Array]]:
    """One recurrent PPO iteration: collect, estimate advantages, learn."""
    key, rollout_key, learn_key = jax.random.split(state.key, 3)
    transitions, env_state, obs, first, carry, episodes = collect(static, state, hyper, rollout_key)
    batch = targets(static, state.params, transitions, state.carry, hyper)
    params, opt_state, metrics = learn(static, state, batch, hyper, learn_key)
    new_state = state._replace(
        params=params,
        opt_state=opt_state,
        env_state=env_state,
        obs=obs,
        first=first,
        carry=carry,
        key=key,
        update_idx=state.update_idx + 1,
    )
    return new_state, {**metrics, **episodes.as_metrics()}


def build(config: Config, env: Any, env_params: Any) -> Static:
    """Validate ``config`` for ``env`` and build what the functions close over (compiles nothing)."""
    action_space = env.action_space(env_params)
    config.validate(action_space)
    venv = envs.vectorize(env, config.num_envs, normalize_obs=config.normalize_obs)
    return Static(config, venv, env_params, network(config, action_space), envs.is_discrete(action_space))


def make(config: Config, env: Any, env_params: Any) -> Algorithm:
    """Build recurrent PPO for ``env``: validates ``config`` first, compiles nothing."""
    static = build(config, env, env_params)
    return bind(
        "rppo",
        static,
        init,
        update,
        act,
        config.batch_size,
        config.num_updates,
        initial_carry=initial_carry,
        recurrent_act=recurrent_act,
    )
