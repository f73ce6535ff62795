"""Deep Q-Network (Mnih et al., 2015, Nature 518:529) with its common extensions.

One iteration, as in Algorithm 1 of the paper (one "update" here)::

    act epsilon-greedily for train_frequency steps in each of B envs,
        storing (s, a, r, terminated, truncated, s') in replay        (collect)
    once the buffer holds learning_starts transitions, gradient_steps times:
        sample a minibatch of n-step sequences                          (learn)
        y = R^(n) + gamma^K (1 - terminated) * max_a Q_target(s'_K, a)
        minimise  L = mean loss(y - Q(s, a))  (Huber or L2)
    every target_update_interval env steps:
        theta_target <- tau * theta + (1 - tau) * theta_target         (target)

Options:

* ``double``: Double DQN (van Hasselt et al., 2016, arXiv:1509.06461):
  the target network evaluates the online network's greedy action,
  ``y = R + D * Q_target(s', argmax_a Q(s', a))``.
* ``dueling``: dueling head (Wang et al., 2016, arXiv:1511.06581, eq. 9):
  ``Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a')``; here both heads share the
  MLP torso.
* ``n_step``: n-step returns (Sutton, 1988; as in Rainbow), cut at the first
  episode end inside the sampled sequence (``rl.replay.n_step_return``).

Truncation is not termination: every stored transition keeps its true
successor ``info["final_observation"]``, targets bootstrap from it and are
zeroed only where the episode terminated.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import optax
import rlax

import envs
from agents.networks import INITS, ACTIVATIONS, MLP, linear_head
from rl import offpolicy, replay
from rl.errors import POSITIVE, UNIT, UNIT_LEFT_OPEN, check, check_field_types, validate_hyper
from rl.rollout import rollout
from rl.runner import Algorithm

Array = chex.Array

LOSSES = ("huber", "l2")


@dataclass(frozen=True)
class Config:
    """Shape-setting settings of DQN: changing one recompiles."""

    num_envs: int = 1
    """parallel environments per run"""
    train_frequency: int = 10
    """env steps taken in each environment per update (between gradient phases)"""
    gradient_steps: int = 1
    """gradient steps per update, each on a fresh minibatch (once learning has started)"""
    total_timesteps: int = 500_000
    """env steps per run, all envs together (rounded down to whole updates)"""
    buffer_size: int = 10_000
    """replay capacity in transitions, all envs together"""
    batch_size: int = 128
    """transitions (n-step sequences) per minibatch"""
    learning_starts: int = 10_000
    """env steps (all envs together) stored before the first gradient step"""
    target_update_interval: int = 500
    """env steps between target updates; a multiple of num_envs * train_frequency"""
    n_step: int = 1
    """return horizon of the targets (1 = one-step Q-learning)"""
    double: bool = False
    """Double DQN targets: the target network evaluates the online greedy action"""
    dueling: bool = False
    """dueling head Q = V + A - mean(A) on the shared MLP torso"""
    loss: str = "l2"
    """TD loss: "l2" (0.5 td^2) or "huber" (delta 1, i.e. the paper's error clipping)"""
    max_grad_norm: float | None = None
    """clip gradients to this global norm (optax.clip_by_global_norm); None = no clipping"""
    hidden_sizes: tuple[int, ...] = (120, 84)
    """hidden layer widths of the Q-network MLP"""
    activation: str = "relu"
    """hidden activation: one of tanh, relu, gelu, elu, silu, leaky_relu"""
    layer_norm: bool = False
    """LayerNorm after each hidden linear layer"""
    init: str = "orthogonal"
    """weight initialiser: orthogonal (gain sqrt 2 hidden, 1 head) or lecun_normal (flax/CleanRL default)"""
    eval_epsilon: float = 0.05
    """exploration rate of ``act`` when not deterministic (evaluation)"""

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.train_frequency

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // self.steps_per_update

    @property
    def target_period(self) -> int:
        """Updates between target updates."""
        return self.target_update_interval // self.steps_per_update

    def validate(self, action_space: Any) -> None:
        """Raise ``ConfigError`` naming the first invalid field."""
        check_field_types(self)
        check(
            envs.is_discrete(action_space),
            "env",
            action_space,
            "DQN needs a discrete action space; use an actor-critic agent (e.g. sac, td3) for Box actions",
        )
        for name in (
            "num_envs", "train_frequency", "gradient_steps", "total_timesteps", "buffer_size",
            "batch_size", "target_update_interval", "n_step",
        ):
            value = getattr(self, name)
            check(isinstance(value, int) and value > 0, name, value, "must be a positive integer")
        check(
            isinstance(self.learning_starts, int) and 0 <= self.learning_starts < self.total_timesteps,
            "learning_starts",
            self.learning_starts,
            f"must be an integer in [0, total_timesteps = {self.total_timesteps})",
        )
        check(
            self.total_timesteps >= self.steps_per_update,
            "total_timesteps",
            self.total_timesteps,
            f"must be at least one update = num_envs * train_frequency = {self.steps_per_update}",
        )
        check(
            self.target_update_interval % self.steps_per_update == 0,
            "target_update_interval",
            self.target_update_interval,
            f"must be a multiple of num_envs * train_frequency = {self.steps_per_update} "
            "(targets are updated between updates)",
        )
        per_env = self.buffer_size // self.num_envs
        check(
            per_env >= max(self.learning_starts // self.num_envs, self.n_step, self.train_frequency),
            "buffer_size",
            self.buffer_size,
            f"must hold learning_starts = {self.learning_starts} transitions and, per env, "
            f"n_step = {self.n_step} and train_frequency = {self.train_frequency} steps",
        )
        check(self.loss in LOSSES, "loss", self.loss, f"must be one of {', '.join(LOSSES)}")
        check(
            self.max_grad_norm is None or self.max_grad_norm > 0,
            "max_grad_norm",
            self.max_grad_norm,
            "must be > 0, or None for no clipping",
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
        check(self.init in INITS, "init", self.init, f"must be one of {', '.join(INITS)}")


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Hyper:
    """Traced settings of DQN: a sweep may give each a batch axis."""

    learning_rate: float = 2.5e-4
    """Adam step size"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 1.0
    """target update rate at each target update (1 = copy)"""
    eps_start: float = 1.0
    """epsilon of the epsilon-greedy behaviour policy at step 0"""
    eps_end: float = 0.05
    """final epsilon"""
    exploration_fraction: float = 0.5
    """fraction of total_timesteps over which epsilon decays linearly"""

    def validate(self) -> None:
        """Raise ``ConfigError`` for values outside their range (any shape)."""
        validate_hyper(
            self,
            {
                "learning_rate": POSITIVE,
                "gamma": UNIT,
                "tau": UNIT_LEFT_OPEN,
                "eps_start": UNIT,
                "eps_end": UNIT,
                "exploration_fraction": UNIT,
            },
        )


class State(NamedTuple):
    """Training carry of one DQN run."""

    params: hk.Params  # online Q-network parameters
    target_params: hk.Params  # target Q-network parameters
    opt_state: optax.OptState  # optimizer state
    buffer_state: Any  # flashbax trajectory buffer: [num_envs, buffer_size // num_envs, ...]
    env_state: Any  # vectorised env state, leading axis num_envs
    obs: Array  # [num_envs, *obs_shape] current observations
    key: chex.PRNGKey  # this run's key, split every update
    update_idx: Array  # int32[] updates done so far


class Static(NamedTuple):
    """What the factory closes over: settings, env, network and buffer (not traced)."""

    config: Config
    env: Any  # vectorised env
    env_params: Any
    network: hk.Transformed  # obs[B, ...] -> q[B, num_actions]
    buffer: Any  # flashbax TrajectoryBuffer (pure functions)


# ---------------------------------------------------------------------------
# Leaf functions


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
    hidden_sizes: tuple[int, ...],
    activation: str,
    layer_norm: bool = False,
    dueling_head: bool = False,
    init: str = "orthogonal",
) -> hk.Transformed:
    """An MLP Q-network ``obs[B, ...] -> q[B, num_actions]``."""

    def forward(obs):
        torso = MLP(hidden_sizes, activation, layer_norm=layer_norm, name="torso", init=init)(obs)
        if dueling_head:
            value = linear_head(1, 1.0, name="value_head", init=init)(torso)[:, 0]
            return dueling(value, linear_head(num_actions, 1.0, name="advantage_head", init=init)(torso))
        return linear_head(num_actions, 1.0, name="q_head", init=init)(torso)

    return hk.without_apply_rng(hk.transform(forward))


def epsilon_greedy(key: chex.PRNGKey, q_values: Array, epsilon: Array) -> Array:
    """``argmax_a q`` per row, replaced by a uniform action with probability epsilon.

    Args:
      key: PRNG key.
      q_values: `[B, A]`.
      epsilon: scalar exploration rate (may be traced).

    Returns:
      int32 `[B]` actions.
    """
    chex.assert_rank(q_values, 2)
    explore_key, action_key = jax.random.split(key)
    batch, num_actions = q_values.shape
    greedy = jnp.argmax(q_values, axis=-1).astype(jnp.int32)
    random = jax.random.randint(action_key, (batch,), 0, num_actions, jnp.int32)
    return jnp.where(jax.random.uniform(explore_key, (batch,)) < epsilon, random, greedy)


def td_errors(
    q_tm1: Array,
    a_tm1: Array,
    r_t: Array,
    discount_t: Array,
    q_t_value: Array,
    q_t_selector: Array | None = None,
) -> Array:
    """Batched (double) Q-learning TD errors, ``rlax`` vmapped over the batch.

    ``td = r_t + discount_t * q_t_value[argmax_a q_t_selector] - q_tm1[a_tm1]``;
    without a selector the argmax is over ``q_t_value`` itself (plain
    Q-learning, ``rlax.q_learning``), with one it is Double Q-learning
    (``rlax.double_q_learning``). Targets carry no gradient.

    Args:
      q_tm1: `[B, A]` online Q-values of the observations acted in.
      a_tm1: int `[B]` actions taken.
      r_t: `[B]` (n-step) rewards.
      discount_t: `[B]` discount of the bootstrap, 0 where the episode terminated.
      q_t_value: `[B, A]` target-network Q-values of the bootstrap observation.
      q_t_selector: `[B, A]` online Q-values of the bootstrap observation, or None.

    Returns:
      `[B]` TD errors ``y - Q(s, a)``.
    """
    chex.assert_rank([q_tm1, a_tm1, r_t, discount_t, q_t_value], [2, 1, 1, 1, 2])
    if q_t_selector is None:
        return jax.vmap(rlax.q_learning)(q_tm1, a_tm1, r_t, discount_t, q_t_value)
    chex.assert_equal_shape([q_t_value, q_t_selector])
    return jax.vmap(rlax.double_q_learning)(q_tm1, a_tm1, r_t, discount_t, q_t_value, q_t_selector)


def n_step_transition(sequences: replay.Stored, gamma) -> tuple[Array, Array, Array]:
    """Reduce sampled sequences to one n-step transition each.

    With ``K <= n`` the length up to and including the first episode end::

        r        = sum_{k<K} gamma^k r_k
        discount = gamma^K (1 - terminated_{K-1})
        last     = K - 1     (bootstrap from next_obs[last], the true successor)

    so that ``rl.replay.n_step_return(seq, b, gamma) = r + discount * b[last]``.
    Both sums are computed by ``n_step_return`` itself (it is linear in the
    rewards and the bootstrap values), so the episode-end rules live in one place.

    Args:
      sequences: sampled sequences, fields `[B, n, ...]`.
      gamma: discount (may be traced).

    Returns:
      ``(r [B], discount [B], last int32 [B])``.
    """
    chex.assert_rank([sequences.reward, sequences.terminated, sequences.truncated], 2)
    zeros, ones = jnp.zeros_like(sequences.reward), jnp.ones_like(sequences.reward)
    r = replay.n_step_return(sequences, zeros, gamma)
    discount = replay.n_step_return(sequences._replace(reward=zeros), ones, gamma)
    done = jnp.logical_or(sequences.terminated, sequences.truncated)
    done = done.at[:, -1].set(True)
    last = jnp.argmax(done, axis=1).astype(jnp.int32)
    return r, discount, last


# ---------------------------------------------------------------------------
# The agent


def _optimizer(config: Config, hyper: Hyper) -> optax.GradientTransformation:
    """Adam, after optional global-norm clipping."""
    adam = optax.adam(hyper.learning_rate)
    if config.max_grad_norm is None:
        return adam
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), adam)


def epsilon(config: Config, hyper: Hyper, env_steps: Array) -> Array:
    """Linear decay from eps_start to eps_end over exploration_fraction of training."""
    duration = hyper.exploration_fraction * config.total_timesteps
    return offpolicy.linear_schedule(hyper.eps_start, hyper.eps_end, duration, env_steps)


def init(static: Static, key: chex.PRNGKey, hyper: Hyper) -> State:
    """Fresh parameters (target = online), optimizer, empty buffer and envs for one run."""
    key, net_key, env_key = jax.random.split(key, 3)
    obs, env_state = static.env.reset(env_key, static.env_params)
    params = static.network.init(net_key, obs)
    opt_state = _optimizer(static.config, hyper).init(params)
    example = replay.Stored(
        obs=obs[0],
        action=jnp.zeros((), jnp.int32),
        reward=jnp.zeros((), jnp.float32),
        terminated=jnp.zeros((), bool),
        truncated=jnp.zeros((), bool),
        next_obs=obs[0],
    )
    buffer_state = replay.init(static.buffer, example)
    return State(params, params, opt_state, buffer_state, env_state, obs, key, jnp.int32(0))


def act(static: Static, params: hk.Params, obs: Array, key: chex.PRNGKey, deterministic: bool = False) -> Array:
    """Greedy actions for `[B, ...]` observations, or eval_epsilon-greedy ones."""
    q_values = static.network.apply(params, obs)
    eps = 0.0 if deterministic else static.config.eval_epsilon
    return epsilon_greedy(key, q_values, eps)


def collect(static: Static, state: State, eps: Array, key: chex.PRNGKey):
    """train_frequency epsilon-greedy steps in every env, appended to replay."""

    def policy(obs, k):
        return epsilon_greedy(k, static.network.apply(state.params, obs), eps), None

    transitions, env_state, obs, episodes = rollout(
        static.env, static.env_params, policy, state.env_state, state.obs, key,
        static.config.train_frequency,
    )

    # One write of the whole `[T, B]` rollout as T time steps per env: the
    # same buffer contents as T calls of `replay.add`, at a third of the cost.
    per_env = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), replay.stored(transitions))
    buffer_state = static.buffer.add(state.buffer_state, per_env)
    return buffer_state, env_state, obs, episodes


def loss(static: Static, params: hk.Params, target_params: hk.Params, sequences: replay.Stored, hyper: Hyper):
    """Mean TD loss on sampled sequences (Mnih et al., 2015, eq. 2; double: van Hasselt et al., 2016).

    ``y = r + D * Q_target(s'_K, a*)`` with ``a* = argmax_a Q_target(s'_K, a)``, or
    ``argmax_a Q(s'_K, a)`` when double; ``r``, ``D`` and ``s'_K = next_obs[last]`` come from
    ``n_step_transition``. ``L = mean_i loss(y_i - Q(s_i, a_i))`` with ``loss`` ``0.5 x^2``
    (l2) or Huber with delta 1. The paper's ``theta^-`` is ``target_params``; ``y`` carries
    no gradient.

    Args:
      sequences: `[B, n, ...]` sampled by ``rl.replay.sample``; step 0 is the one learned from.

    Returns:
      ``(loss, {"q_mean": mean Q(s, a) of the batch})``.
    """
    first = replay.first(sequences)
    r, discount, last = n_step_transition(sequences, hyper.gamma)
    next_obs = sequences.next_obs[jnp.arange(last.shape[0]), last]  # [B, *obs_shape]
    q_tm1 = static.network.apply(params, first.obs)
    q_t_value = static.network.apply(target_params, next_obs)
    q_t_selector = static.network.apply(params, next_obs) if static.config.double else None
    td = td_errors(q_tm1, first.action, r, discount, q_t_value, q_t_selector)
    per_sample = rlax.huber_loss(td, 1.0) if static.config.loss == "huber" else rlax.l2_loss(td)
    q_taken = jnp.take_along_axis(q_tm1, first.action[:, None], axis=1)
    return jnp.mean(per_sample), {"q_mean": jnp.mean(q_taken)}


def learn(static: Static, state: State, buffer_state, hyper: Hyper, key: chex.PRNGKey):
    """gradient_steps minibatch steps, then the (gated) target update."""
    tx = _optimizer(static.config, hyper)
    grad_fn = jax.value_and_grad(
        lambda p, seq: loss(static, p, state.target_params, seq, hyper), has_aux=True
    )

    def step(carry, step_key):
        params, opt_state = carry
        sequences = replay.sample(static.buffer, buffer_state, step_key)
        (value, metrics), grads = grad_fn(params, sequences)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), {"loss": value, **metrics}

    keys = jax.random.split(key, static.config.gradient_steps)
    (params, opt_state), metrics = jax.lax.scan(step, (state.params, state.opt_state), keys)
    # The updates are counted from 1: target updates land on multiples of the interval.
    due = (state.update_idx + 1) % static.config.target_period == 0
    target_params = offpolicy.polyak(params, state.target_params, jnp.where(due, hyper.tau, 0.0))
    return params, target_params, opt_state, jax.tree.map(jnp.mean, metrics)


def update(static: Static, state: State, hyper: Hyper) -> tuple[State, dict[str, Array]]:
    """One DQN iteration: collect into replay, then learn once the buffer is warm."""
    key, collect_key, learn_key = jax.random.split(state.key, 3)
    eps = epsilon(static.config, hyper, state.update_idx * static.config.steps_per_update)
    buffer_state, env_state, obs, episodes = collect(static, state, eps, collect_key)

    def skip(_):
        zero = jnp.float32(0.0)
        return state.params, state.target_params, state.opt_state, {"loss": zero, "q_mean": zero}

    params, target_params, opt_state, metrics = jax.lax.cond(
        static.buffer.can_sample(buffer_state),
        lambda _: learn(static, state, buffer_state, hyper, learn_key),
        skip,
        None,
    )
    metrics = {**metrics, **episodes.as_metrics(), "epsilon": eps}
    new_state = State(
        params, target_params, opt_state, buffer_state, env_state, obs, key, state.update_idx + 1
    )
    return new_state, metrics


def make(config: Config, env: Any, env_params: Any) -> Algorithm:
    """Build DQN for ``env``: validates ``config`` first, compiles nothing."""
    action_space = env.action_space(env_params)
    config.validate(action_space)
    venv = envs.vectorize(env, config.num_envs)
    network = q_network(
        action_space.n, config.hidden_sizes, config.activation, config.layer_norm, config.dueling,
        config.init,
    )
    with warnings.catch_warnings():  # flashbax announces max_size // num_envs on every build
        warnings.filterwarnings("ignore", message="Setting max_size dynamically")
        buffer = replay.make_buffer(
            config.buffer_size, config.batch_size, config.learning_starts, config.num_envs, config.n_step
        )
    static = Static(config, venv, env_params, network, buffer)
    return Algorithm(
        init=lambda key, hyper: init(static, key, hyper),
        update=lambda state, hyper: update(static, state, hyper),
        act=lambda params, obs, key, deterministic=False: act(static, params, obs, key, deterministic),
        steps_per_update=config.steps_per_update,
        num_updates=config.num_updates,
        name="dqn",
        config=config,
    )
