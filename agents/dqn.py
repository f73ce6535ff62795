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
  episode end inside the sampled sequence (``rl.device.replay.n_step_return``).
* ``distributional``: learn the distribution of returns instead of its mean;
  acting is greedy in the mean. ``"c51"``: a categorical distribution on
  ``num_atoms`` fixed atoms in ``[v_min, v_max]``, the projected Bellman target
  and a cross-entropy loss (Bellemare et al., 2017, arXiv:1707.06887;
  ``rlax.categorical_q_learning``). ``"qr"``: ``num_quantiles`` quantiles at the
  midpoints ``(2i + 1) / 2N`` with the quantile Huber loss, kappa 1 (QR-DQN, Dabney
  et al., 2018a, arXiv:1710.10044; ``rlax.quantile_q_learning``). ``"iqn"``:
  quantiles at fractions tau ~ U(0, 1) fed to the network through a cosine
  embedding (IQN, Dabney et al., 2018b, arXiv:1806.06923): N = N' =
  ``num_quantiles`` samples in the loss, K = ``iqn_acting_samples`` to act.
  ``double`` and ``n_step`` combine with all three; ``loss`` applies to the mean
  (non-distributional) DQN only.

Truncation is not termination: every stored transition keeps its true
successor ``info["final_observation"]``, targets bootstrap from it and are
zeroed only where the episode terminated.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
import rlax

import envs
from agents.networks import ACTIVATION, INIT, TORSO, check_torso, iqn_network, q_network
from rl.device import offpolicy, replay
from rl.device.rollout import rollout
from rl.engine.runner import Algorithm, bind
from rl.errors import (
    Count,
    NonNegativeCount,
    Positive,
    Rule,
    Unit,
    UnitLeftOpen,
    Widths,
    check,
    one_of,
    validate_config,
    validate_hyper,
)

Array = chex.Array

LOSSES = ("huber", "l2")
DISTRIBUTIONS = ("off", "c51", "qr", "iqn")
IQN_EMBEDDING = 64  # cosine features of tau (the IQN paper's n = 64)


@dataclass(frozen=True)
class Config(offpolicy.Steps):
    """Shape-setting settings of DQN: changing one recompiles."""

    num_envs: Count = 1
    """parallel environments per run"""
    train_frequency: Count = 10
    """env steps taken in each environment per update (between gradient phases)"""
    gradient_steps: Count = 1
    """gradient steps per update, each on a fresh minibatch (once learning has started)"""
    total_timesteps: Count = 500_000
    """env steps per run, all envs together (rounded down to whole updates)"""
    buffer_size: Count = 10_000
    """replay capacity in transitions, all envs together"""
    batch_size: Count = 128
    """transitions (n-step sequences) per minibatch"""
    learning_starts: NonNegativeCount = 10_000
    """env steps (all envs together) stored before the first gradient step"""
    target_update_interval: Count = 500
    """env steps between target updates; a multiple of num_envs * train_frequency"""
    n_step: Count = 1
    """return horizon of the targets (1 = one-step Q-learning)"""
    double: bool = False
    """Double DQN targets: the target network evaluates the online greedy action"""
    dueling: bool = False
    """dueling head Q = V + A - mean(A) on the shared MLP torso"""
    loss: Annotated[str, one_of(LOSSES)] = "l2"
    """TD loss: "l2" (0.5 td^2) or "huber" (delta 1, i.e. the paper's error clipping)"""
    max_grad_norm: Annotated[float | None, Rule(lambda v: v > 0, "must be > 0, or None for no clipping")] = None
    """clip gradients to this global norm (optax.clip_by_global_norm); None = no clipping"""
    hidden_sizes: Widths = (120, 84)
    """hidden layer widths of the Q-network MLP"""
    activation: Annotated[str, ACTIVATION] = "relu"
    """hidden activation: one of tanh, relu, gelu, elu, silu, leaky_relu"""
    torso: Annotated[str, TORSO] = "mlp"
    """mlp, or cnn for image observations (H, W, C): MinAtar's 16 3x3 filters, then the MLP"""
    layer_norm: bool = False
    """LayerNorm after each hidden linear layer"""
    init: Annotated[str, INIT] = "orthogonal"
    """weight initialiser: orthogonal (gain sqrt 2 hidden, 1 head) or lecun_normal (flax/CleanRL default)"""
    eval_epsilon: Unit = 0.05
    """exploration rate of ``act`` when not deterministic (evaluation)"""
    distributional: Annotated[str, one_of(DISTRIBUTIONS)] = "off"
    """learn the return distribution: off (mean, DQN), c51, qr (QR-DQN) or iqn"""
    num_atoms: Count = 51
    """c51 only: atoms of the categorical distribution"""
    v_min: float = -10.0
    """c51 only: lowest atom (in the units of the return)"""
    v_max: float = 10.0
    """c51 only: highest atom"""
    num_quantiles: Count | None = None
    """qr: quantiles (None: 200, the QR-DQN paper's); iqn: tau samples N = N' in the loss (None: 64)"""
    iqn_acting_samples: Count = 32
    """iqn only: tau samples K averaged to act greedily (the IQN paper's K)"""

    @property
    def quantiles(self) -> int:
        """Quantiles of qr, tau samples of iqn (``num_quantiles`` or the papers' default)."""
        if self.num_quantiles is not None:
            return self.num_quantiles
        return 200 if self.distributional == "qr" else 64

    @property
    def target_period(self) -> int:
        """Updates between target updates."""
        return self.target_update_interval // self.steps_per_update

    def validate(self, action_space: Any) -> None:
        """Raise ``ConfigError`` naming the first invalid field."""
        check(
            envs.is_discrete(action_space),
            "env",
            action_space,
            "DQN needs a discrete action space; use an actor-critic agent (e.g. sac, td3) for Box actions",
        )
        validate_config(self)
        check(
            self.learning_starts < self.total_timesteps,
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
        check(self.v_min < self.v_max, "v_min", self.v_min, f"must be below v_max = {self.v_max}")
        check(
            self.num_atoms > 1 or self.distributional != "c51",
            "num_atoms",
            self.num_atoms,
            "must be at least 2 for c51",
        )
        check(
            self.dueling is False or self.distributional == "off",
            "dueling",
            self.dueling,
            "applies to the mean DQN only (distributional=off)",
        )


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Hyper:
    """Traced settings of DQN: a sweep may give each a batch axis."""

    learning_rate: Positive = 2.5e-4
    """Adam step size"""
    gamma: Unit = 0.99
    """discount factor"""
    tau: UnitLeftOpen = 1.0
    """target update rate at each target update (1 = copy)"""
    eps_start: Unit = 1.0
    """epsilon of the epsilon-greedy behaviour policy at step 0"""
    eps_end: Unit = 0.05
    """final epsilon"""
    exploration_fraction: Unit = 0.5
    """fraction of total_timesteps over which epsilon decays linearly"""

    def validate(self) -> None:
        """Raise ``ConfigError`` for values outside their range (any shape)."""
        validate_hyper(self)


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
    network: hk.Transformed  # see ``network``: Q-values, atom logits or quantiles
    buffer: Any  # flashbax TrajectoryBuffer (pure functions)
    atoms: np.ndarray | None = None  # c51: f32[num_atoms] the support


# ---------------------------------------------------------------------------
# Leaf functions


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

    so that ``rl.device.replay.n_step_return(seq, b, gamma) = r + discount * b[last]``.
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
# Distributional pieces


def c51_atoms(config: Config) -> np.ndarray:
    """The fixed support of C51: ``num_atoms`` evenly spaced in ``[v_min, v_max]``."""
    return np.linspace(config.v_min, config.v_max, config.num_atoms, dtype=np.float32)


def quantile_midpoints(n: int) -> np.ndarray:
    """QR-DQN's quantile fractions ``(2i + 1) / 2n``, i < n: f32[n]."""
    return ((2 * np.arange(n) + 1) / (2.0 * n)).astype(np.float32)


def _forward(static: Static, params: hk.Params, obs: Array, key: chex.PRNGKey | None, num_taus: int):
    """The network's output and its quantile fractions (None where there are none).

    off: ``(q [B, A], None)``; c51: ``(logits [B, A, K], None)``; qr: ``(quantiles [B, N, A],
    midpoints [N])``; iqn: ``(quantiles [B, num_taus, A], taus [B, num_taus])``, taus ~ U(0, 1)
    drawn from ``key``.
    """
    kind = static.config.distributional
    if kind == "iqn":
        taus = jax.random.uniform(key, (obs.shape[0], num_taus), jnp.float32)
        return static.network.apply(params, obs, taus), taus
    out = static.network.apply(params, obs)
    if kind == "qr":
        return jnp.swapaxes(out, 1, 2), jnp.asarray(quantile_midpoints(static.config.quantiles))
    return out, None


def mean_q(static: Static, out: Array) -> Array:
    """Expected Q-values `[B, A]` of a ``_forward`` output (what acting is greedy in)."""
    kind = static.config.distributional
    if kind == "c51":
        return jnp.sum(jax.nn.softmax(out, axis=-1) * static.atoms, axis=-1)
    if kind in ("qr", "iqn"):
        return jnp.mean(out, axis=1)
    return out


def q_values(static: Static, params: hk.Params, obs: Array, key: chex.PRNGKey | None) -> Array:
    """Expected Q-values `[B, A]`; ``key`` draws IQN's K acting fractions (unused otherwise)."""
    return mean_q(static, _forward(static, params, obs, key, static.config.iqn_acting_samples)[0])


def _epsilon_greedy(static: Static, params: hk.Params, obs: Array, key: chex.PRNGKey, eps) -> Array:
    tau_key = None
    if static.config.distributional == "iqn":  # only IQN draws more: the others keep their streams
        key, tau_key = jax.random.split(key)
    return offpolicy.epsilon_greedy(key, q_values(static, params, obs, tau_key), eps)


# ---------------------------------------------------------------------------
# The agent


def _optimizer(config: Config, hyper: Hyper) -> optax.GradientTransformation:
    """Adam, after optional global-norm clipping."""
    adam = optax.adam(hyper.learning_rate)
    if config.max_grad_norm is None:
        return adam
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), adam)


def init(static: Static, key: chex.PRNGKey, hyper: Hyper) -> State:
    """Fresh parameters (target = online), optimizer, empty buffer and envs for one run."""
    key, net_key, env_key = jax.random.split(key, 3)
    obs, env_state = static.env.reset(env_key, static.env_params)
    if static.config.distributional == "iqn":
        params = static.network.init(net_key, obs, jnp.zeros((obs.shape[0], 1), jnp.float32))
    else:
        params = static.network.init(net_key, obs)
    example = replay.Stored(
        obs=obs[0],
        action=jnp.zeros((), jnp.int32),
        reward=jnp.zeros((), jnp.float32),
        terminated=jnp.zeros((), bool),
        truncated=jnp.zeros((), bool),
        next_obs=obs[0],
    )
    return State(
        params=params,
        target_params=params,
        opt_state=_optimizer(static.config, hyper).init(params),
        buffer_state=replay.init(static.buffer, example),
        env_state=env_state,
        obs=obs,
        key=key,
        update_idx=jnp.int32(0),
    )


def act(static: Static, params: hk.Params, obs: Array, key: chex.PRNGKey, deterministic: bool = False) -> Array:
    """Greedy actions for `[B, ...]` observations, or eval_epsilon-greedy ones."""
    eps = 0.0 if deterministic else static.config.eval_epsilon
    return _epsilon_greedy(static, params, obs, key, eps)


def collect(static: Static, state: State, hyper: Hyper, key: chex.PRNGKey):
    """train_frequency epsilon-greedy steps in every env, appended to replay; also returns epsilon."""
    config = static.config
    eps = offpolicy.epsilon(hyper, config.total_timesteps, state.update_idx * config.steps_per_update)

    def policy(obs, k):
        return _epsilon_greedy(static, state.params, obs, k, eps), None

    transitions, env_state, obs, episodes = rollout(
        static.env, static.env_params, policy, state.env_state, state.obs, key, config.train_frequency
    )
    return eps, replay.add_rollout(static.buffer, state.buffer_state, transitions), env_state, obs, episodes


def loss(
    static: Static,
    params: hk.Params,
    target_params: hk.Params,
    sequences: replay.Stored,
    hyper: Hyper,
    key: chex.PRNGKey | None = None,
):
    """Mean TD loss on sampled sequences (Mnih et al., 2015, eq. 2; double: van Hasselt et al., 2016).

    ``y = r + D * Q_target(s'_K, a*)`` with ``a* = argmax_a Q_target(s'_K, a)``, or
    ``argmax_a Q(s'_K, a)`` when double; ``r``, ``D`` and ``s'_K = next_obs[last]`` come from
    ``n_step_transition``. ``L = mean_i loss(y_i - Q(s_i, a_i))`` with ``loss`` ``0.5 x^2``
    (l2) or Huber with delta 1. The paper's ``theta^-`` is ``target_params``; ``y`` carries
    no gradient. Distributional: the same target on distributions, with the cross-entropy
    of the projected target (c51) or the quantile Huber loss (qr, iqn; kappa 1); ``key``
    draws IQN's fractions.

    Args:
      sequences: `[B, n, ...]` sampled by ``rl.device.replay.sample``; step 0 is the one learned from.

    Returns:
      ``(loss, {"q_mean": mean Q(s, a) of the batch})``.
    """
    config = static.config
    first = replay.first(sequences)
    r, discount, last = n_step_transition(sequences, hyper.gamma)
    next_obs = sequences.next_obs[jnp.arange(last.shape[0]), last]  # [B, *obs_shape]
    keys = jax.random.split(key, 3) if config.distributional == "iqn" else (None, None, None)
    out_tm1, tau_tm1 = _forward(static, params, first.obs, keys[0], config.quantiles)
    out_t, _ = _forward(static, target_params, next_obs, keys[1], config.quantiles)
    selector = _forward(static, params, next_obs, keys[2], config.quantiles)[0] if config.double else None
    if config.distributional == "off":
        td = td_errors(out_tm1, first.action, r, discount, out_t, selector)
        per_sample = rlax.huber_loss(td, 1.0) if config.loss == "huber" else rlax.l2_loss(td)
    elif config.distributional == "c51":
        q_t_selector = mean_q(static, out_t if selector is None else selector)
        atoms = jnp.asarray(static.atoms)
        per_sample = jax.vmap(rlax.categorical_double_q_learning, (None, 0, 0, 0, 0, None, 0, 0))(
            atoms, out_tm1, first.action, r, discount, atoms, out_t, q_t_selector
        )
    else:  # qr, iqn: quantiles [B, N, A]
        tau_axis = 0 if config.distributional == "iqn" else None
        per_sample = jax.vmap(rlax.quantile_q_learning, (0, tau_axis, 0, 0, 0, 0, 0, None))(
            out_tm1, tau_tm1, first.action, r, discount, out_t if selector is None else selector, out_t, 1.0
        )
    q_taken = jnp.take_along_axis(mean_q(static, out_tm1), first.action[:, None], axis=1)
    return jnp.mean(per_sample), {"q_mean": jnp.mean(q_taken)}


def learn(static: Static, state: State, buffer_state, hyper: Hyper, key: chex.PRNGKey):
    """gradient_steps minibatch steps, then the (gated) target update."""
    tx = _optimizer(static.config, hyper)
    grad_fn = jax.value_and_grad(functools.partial(loss, static), has_aux=True)

    def step(carry, step_key):
        params, opt_state = carry
        loss_key = None
        if static.config.distributional == "iqn":  # only IQN draws more: the others keep their streams
            step_key, loss_key = jax.random.split(step_key)
        sequences = replay.sample(static.buffer, buffer_state, step_key)
        (value, metrics), grads = grad_fn(params, state.target_params, sequences, hyper, loss_key)
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
    eps, buffer_state, env_state, obs, episodes = collect(static, state, hyper, collect_key)

    def skip(_):
        zero = jnp.float32(0.0)
        return state.params, state.target_params, state.opt_state, {"loss": zero, "q_mean": zero}

    params, target_params, opt_state, metrics = jax.lax.cond(
        static.buffer.can_sample(buffer_state),
        lambda _: learn(static, state, buffer_state, hyper, learn_key),
        skip,
        None,
    )
    new_state = State(
        params=params,
        target_params=target_params,
        opt_state=opt_state,
        buffer_state=buffer_state,
        env_state=env_state,
        obs=obs,
        key=key,
        update_idx=state.update_idx + 1,
    )
    return new_state, {**metrics, **episodes.as_metrics(), "epsilon": eps}


def network(config: Config, action_space: Any) -> hk.Transformed:
    """The Q-network of ``config.distributional``: see ``_forward`` for its outputs."""
    args = (action_space.n, config.hidden_sizes, config.activation, config.layer_norm)
    if config.distributional == "iqn":
        return iqn_network(*args, init=config.init, embedding_dim=IQN_EMBEDDING, torso=config.torso)
    outputs = {"c51": config.num_atoms, "qr": config.quantiles}.get(config.distributional)
    return q_network(*args, config.dueling, config.init, num_outputs=outputs, torso=config.torso)


def build(config: Config, env: Any, env_params: Any) -> Static:
    """Validate ``config`` for ``env`` and assemble what the pure functions close over."""
    action_space = env.action_space(env_params)
    config.validate(action_space)
    check_torso(config.torso, env.observation_space(env_params))
    venv = envs.vectorize(env, config.num_envs)
    with warnings.catch_warnings():  # flashbax announces max_size // num_envs on every build
        warnings.filterwarnings("ignore", message="Setting max_size dynamically")
        buffer = replay.make_buffer(
            config.buffer_size, config.batch_size, config.learning_starts, config.num_envs, config.n_step
        )
    atoms = c51_atoms(config) if config.distributional == "c51" else None
    return Static(config, venv, env_params, network(config, action_space), buffer, atoms)


def make(config: Config, env: Any, env_params: Any) -> Algorithm:
    """Build DQN for ``env``: validates ``config`` first, compiles nothing."""
    static = build(config, env, env_params)
    return bind("dqn", static, init, update, act, config.steps_per_update, config.num_updates)
