"""Soft Actor-Critic (Haarnoja et al., 2018, arXiv:1801.01290 and arXiv:1812.05905),
and its discrete-action form (Christodoulou, 2019, arXiv:1910.07207).

One iteration (Algorithm 1 of arXiv:1812.05905, vectorised)::

    act train_frequency steps in each of B envs, store in replay         (collect)
      (uniform random actions until learning_starts env steps are done)
    once replay holds learning_starts transitions, gradient_steps times: (learn)
        sample a batch (s, a, r, s', terminated)
        y = r + gamma (1 - terminated) (min_j Qbar_j(s', a') - alpha log pi(a'|s')),  a' ~ pi(s')
        critics: minimise sum_j 1/2 (Q_j(s, a) - y)^2
        actor:   minimise alpha log pi(a~|s) - min_j Q_j(s, a~),  a~ ~ pi(s) reparameterised
        alpha:   minimise -alpha (log pi(a~|s) + target_entropy)        (autotune)
        Qbar <- tau Q + (1 - tau) Qbar

Continuous actions: a tanh-squashed diagonal Gaussian rescaled to the Box bounds
(``squashed_gaussian``). Acting may draw its Gaussian noise from temporally correlated
"colored" sequences instead of white noise (``noise_exponent``: pink noise, Eberhard et
al., 2023); the losses always use white noise. Discrete actions: a categorical policy
and critics that output Q(s, .) for every action, so the expectations over a' and a~
above are exact sums over the action set (Christodoulou's eqs. 8-11).

Truncation is not termination: ``s'`` is the true successor
(``info["final_observation"]``) and the bootstrap is cut only where
``terminated``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

import envs
from agents.networks import ACTIVATION, MLP, TORSO, check_torso, flat_features, linear_head
from rl.device import offpolicy, replay
from rl.device.rollout import EpisodeStats, env_step, rollout, scan_rows
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
    validate_config,
    validate_hyper,
)

Array = chex.Array


@dataclass(frozen=True)
class Config(offpolicy.Steps):
    """Shape-setting settings of SAC: changing one recompiles."""

    num_envs: Count = 1
    """parallel environments per run"""
    total_timesteps: Count = 1_000_000
    """env steps per run (rounded down to whole updates)"""
    train_frequency: Count = 1
    """steps taken in each environment per update"""
    gradient_steps: Count = 1
    """gradient steps per update once learning has started"""
    buffer_size: Count = 1_000_000
    """replay capacity in transitions (all envs together; capped at total_timesteps)"""
    batch_size: Count = 256
    """transitions per gradient step"""
    learning_starts: NonNegativeCount = 5_000
    """env steps of uniform random actions, and transitions in replay before learning"""
    hidden_sizes: Widths = (256, 256)
    """hidden layer widths of the actor and of each critic"""
    activation: Annotated[str, ACTIVATION] = "relu"
    """hidden activation: one of tanh, relu, gelu, elu, silu, leaky_relu"""
    torso: Annotated[str, TORSO] = "mlp"
    """mlp, or cnn for image observations (H, W, C): MinAtar's 16 3x3 filters, then the MLP"""
    autotune: bool = True
    """learn the temperature alpha towards target_entropy (else alpha stays fixed)"""
    target_entropy: float | None = None
    """policy entropy target in nats; None: -dim(A) for Box actions, 0.98 log|A| for discrete"""
    log_std_min: float = -5.0
    """continuous actions only: lower bound of the Gaussian's log std (CleanRL)"""
    log_std_max: float = 2.0
    """continuous actions only: upper bound of the Gaussian's log std"""
    noise_exponent: Annotated[
        float, Rule(lambda v: v >= 0, "must be >= 0 (0 = white noise), and 0 for discrete actions")
    ] = 0.0
    """continuous actions only: acting noise has power spectrum 1/f^beta: 0 white, 1 pink (Eberhard 2023)"""
    noise_horizon: Annotated[
        int | None,
        Rule(lambda v: v > 0, "must be a positive number of steps, or None for the env's max_steps_in_episode"),
    ] = None
    """colored noise only: steps per noise sequence (restarted each episode); None: max episode length"""

    @property
    def replay_capacity(self) -> int:
        """Transitions replay holds: buffer_size, but never more than training writes."""
        capacity = min(self.buffer_size, self.num_updates * self.steps_per_update)
        return capacity - capacity % self.num_envs

    def validate(self, action_space: Any) -> None:
        """Raise ``ConfigError`` naming the first invalid field."""
        validate_config(self)
        offpolicy.check_replay(self)
        discrete = offpolicy.check_action_space(action_space, allow_discrete=True)
        if discrete:
            max_entropy = math.log(action_space.n)
            check(
                self.target_entropy is None or 0.0 <= self.target_entropy <= max_entropy,
                "target_entropy",
                self.target_entropy,
                f"for {action_space.n} discrete actions must lie in [0, log {action_space.n} = "
                f"{max_entropy:.3f}] (or be None for 0.98 log|A|)",
            )
        else:
            check(
                self.target_entropy is None or math.isfinite(self.target_entropy),
                "target_entropy",
                self.target_entropy,
                "must be a finite number of nats (or None for -dim(A))",
            )
            check(
                self.log_std_min < self.log_std_max,
                "log_std_min",
                self.log_std_min,
                f"must be below log_std_max = {self.log_std_max}",
            )
        check(
            self.noise_exponent == 0 or not discrete,
            "noise_exponent",
            self.noise_exponent,
            "must be >= 0 (0 = white noise), and 0 for discrete actions",
        )


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Hyper:
    """Traced settings of SAC: a sweep may give each a batch axis."""

    actor_lr: Positive = 3e-4
    """Adam step size of the actor"""
    critic_lr: Positive = 1e-3
    """Adam step size of the critics"""
    alpha_lr: Positive = 1e-3
    """Adam step size of log alpha (autotune only)"""
    gamma: Unit = 0.99
    """discount factor"""
    tau: UnitLeftOpen = 0.005
    """Polyak step of the target critics per gradient step"""
    alpha: Positive = 1.0
    """entropy temperature: its initial value with autotune, its fixed value without"""

    def validate(self) -> None:
        """Raise ``ConfigError`` for values outside their range (any shape)."""
        validate_hyper(self)


class Params(NamedTuple):
    """Everything SAC learns (``act`` reads ``actor``)."""

    actor: hk.Params
    critic: hk.Params  # the twin critics Q_1, Q_2
    target_critic: hk.Params  # their Polyak averages Qbar_1, Qbar_2
    log_alpha: Array  # f32[] log of the entropy temperature


class OptState(NamedTuple):
    actor: optax.OptState
    critic: optax.OptState
    alpha: optax.OptState


class ColoredNoise(NamedTuple):
    """Colored acting noise (``noise_exponent > 0``): one sequence per env, read step by step."""

    sequences: Array  # f32[num_envs, horizon, action_dim], unit variance along the horizon
    t: Array  # int32[num_envs] the next step of each env's sequence


class State(NamedTuple):
    """Training carry of one SAC run."""

    params: Params
    opt_state: OptState
    buffer_state: Any  # flashbax trajectory buffer, [num_envs, capacity / num_envs] per field
    env_state: Any  # vectorised env state, leading axis num_envs
    obs: Array  # [num_envs, *obs_shape] current observations
    key: chex.PRNGKey  # this run's key, split every update
    update_idx: Array  # int32[] updates done so far
    noise: ColoredNoise | None  # None for white acting noise (noise_exponent = 0)


class Static(NamedTuple):
    """What the factory closes over: settings, env, replay and networks (not traced)."""

    config: Config
    env: Any  # vectorised env
    env_params: Any
    buffer: Any  # flashbax buffer functions
    actor: hk.Transformed  # obs -> logits [B, |A|], or (mean, log_std) [B, A]
    critic: hk.Transformed  # (obs, action) -> Q [2, B]; discrete: obs -> Q [2, B, |A|]
    discrete: bool
    action_dim: int  # |A| for discrete, dim(A) for Box
    action_low: np.ndarray | None  # f32[A] Box bounds (None when discrete)
    action_high: np.ndarray | None
    target_entropy: float
    noise_horizon: int  # steps per colored-noise sequence (0 for white noise)


# --------------------------------------------------------------------------------------------
# Leaf functions: losses and targets on a batch of independent transitions `[B]`.


def squashed_gaussian(mean: Array, log_std: Array, noise: Array, low: Array, high: Array):
    """Sample of a tanh-squashed Gaussian rescaled to ``[low, high]`` and its log density.

    ``u = mean + std * noise``, ``a = c + s tanh(u)`` with ``c = (high + low) / 2`` and
    ``s = (high - low) / 2``. By the change of variables (arXiv:1801.01290, appendix C,
    eq. 21, here with the rescaling ``s`` included so the density is that of the action
    the env receives)::

        log pi(a|s) = sum_i [ log N(u_i; mean_i, std_i) - log s_i - log(1 - tanh(u_i)^2) ]

    with the stable form ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2 u))``.

    Args:
      mean, log_std, noise: `[B, A]`; ``noise ~ N(0, 1)``.
      low, high: `[A]` action bounds.

    Returns:
      ``(action [B, A], log_prob [B])``.
    """
    chex.assert_rank([mean, log_std, noise], 2)
    chex.assert_equal_shape([mean, log_std, noise])
    chex.assert_rank([low, high], 1)
    u = mean + jnp.exp(log_std) * noise
    scale, centre = (high - low) / 2.0, (high + low) / 2.0
    action = centre[None, :] + scale[None, :] * jnp.tanh(u)
    gaussian = -0.5 * jnp.square(noise) - log_std - 0.5 * jnp.log(2.0 * jnp.pi)
    log_det = jnp.log(scale)[None, :] + 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))
    return action, jnp.sum(gaussian - log_det, axis=-1)


def soft_td_target(r_t: Array, discount_t: Array, q_tp1: Array, log_pi_tp1: Array, alpha) -> Array:
    """Clipped double-Q soft target ``y = r + discount (min_j Qbar_j(s', a') - alpha log pi(a'|s'))``.

    arXiv:1812.05905 eq. 3 with the twin-critic minimum of Fujimoto et al. (2018);
    ``discount_t = gamma (1 - terminated_t)`` is zero only on termination.

    Args:
      r_t, discount_t, log_pi_tp1: `[B]`; ``log_pi_tp1`` of ``a' ~ pi(s')``.
      q_tp1: `[C, B]` target critics at ``(s', a')``.
      alpha: temperature (scalar).
    """
    chex.assert_rank([r_t, discount_t, log_pi_tp1, q_tp1], [1, 1, 1, 2])
    v_tp1 = jnp.min(q_tp1, axis=0) - alpha * log_pi_tp1
    return r_t + discount_t * jax.lax.stop_gradient(v_tp1)


def discrete_soft_value(q: Array, probs: Array, log_probs: Array, alpha) -> Array:
    """Exact soft value ``V(s) = sum_a pi(a|s) (min_j Q_j(s, a) - alpha log pi(a|s))``.

    Christodoulou (2019) eq. 9. ``q``: `[C, B, |A|]`; ``probs``, ``log_probs``: `[B, |A|]`.
    Returns `[B]`.
    """
    chex.assert_rank([q, probs, log_probs], [3, 2, 2])
    return jnp.sum(probs * (jnp.min(q, axis=0) - alpha * log_probs), axis=-1)


def actor_loss(q_t: Array, log_pi_t: Array, alpha) -> Array:
    """``mean_b [alpha log pi(a~|s) - min_j Q_j(s, a~)]`` (arXiv:1812.05905 eq. 7).

    ``q_t``: `[C, B]` critics at the reparameterised ``a~ ~ pi(s)``; ``log_pi_t``: `[B]`.
    """
    chex.assert_rank([q_t, log_pi_t], [2, 1])
    return jnp.mean(alpha * log_pi_t - jnp.min(q_t, axis=0))


def discrete_actor_loss(q_t: Array, probs: Array, log_probs: Array, alpha) -> Array:
    """``mean_b sum_a pi(a|s) [alpha log pi(a|s) - min_j Q_j(s, a)]`` (Christodoulou eq. 10).

    The expectation over actions is exact, so no reparameterisation is needed.
    """
    return -jnp.mean(discrete_soft_value(jax.lax.stop_gradient(q_t), probs, log_probs, alpha))


def alpha_loss(log_alpha: Array, log_pi_t: Array, target_entropy) -> Array:
    """``-alpha mean_b (log pi(a~|s) + target_entropy)`` with ``alpha = exp(log_alpha)``.

    arXiv:1812.05905 eq. 18: when the policy's entropy ``-log pi`` is below the target
    the loss falls as alpha grows, so gradient descent raises alpha, and vice versa.
    ``log_pi_t``: `[B]`, treated as a constant.
    """
    chex.assert_rank([log_alpha, log_pi_t], [0, 1])
    return -jnp.exp(log_alpha) * jnp.mean(jax.lax.stop_gradient(log_pi_t) + target_entropy)


def discrete_alpha_loss(log_alpha: Array, probs: Array, log_probs: Array, target_entropy) -> Array:
    """``alpha mean_b (H(pi(.|s)) - target_entropy)``: eq. 11 of Christodoulou (2019)."""
    chex.assert_rank([log_alpha, probs, log_probs], [0, 2, 2])
    neg_entropy = jax.lax.stop_gradient(jnp.sum(probs * log_probs, axis=-1))
    return -jnp.exp(log_alpha) * jnp.mean(neg_entropy + target_entropy)


def powerlaw_noise(key: chex.PRNGKey, exponent: float, horizon: int, shape: tuple[int, ...]) -> Array:
    """Gaussian noise whose power spectrum falls as ``1 / f^exponent`` along time, unit variance.

    Timmer and Koenig (1995), as in the ``colorednoise`` package that Eberhard et al. (2023,
    "Pink noise is all you need", ICLR) use for exploration: Fourier coefficients with std
    ``f^(-exponent / 2)`` (frequencies below ``1 / horizon`` clamped to it), real at f = 0 and
    at the Nyquist frequency, inverted by a real FFT and divided by the theoretical std.
    ``exponent`` 0 is white noise, 1 pink, 2 red (Brownian).

    Returns:
      f32[*shape, horizon].
    """
    f = np.fft.rfftfreq(horizon)
    scale = np.maximum(f, 1.0 / horizon) ** (-exponent / 2.0)
    w = scale[1:].copy()
    w[-1] *= (1 + horizon % 2) / 2.0  # the Nyquist term counts once when horizon is even
    sigma = 2.0 * np.sqrt(np.sum(w**2)) / horizon
    real_only = np.zeros(f.shape, bool)  # f = 0, and the Nyquist frequency when horizon is even
    real_only[0] = True
    real_only[-1] = horizon % 2 == 0
    lift = lambda x: x.reshape((1,) * len(shape) + f.shape)  # broadcast over `shape` explicitly
    real_key, imag_key = jax.random.split(key)
    real = jax.random.normal(real_key, shape + f.shape) * lift(scale * np.where(real_only, np.sqrt(2.0), 1.0))
    imag = jax.random.normal(imag_key, shape + f.shape) * lift(np.where(real_only, 0.0, scale))
    return (jnp.fft.irfft(real + 1j * imag, n=horizon, axis=-1) / sigma).astype(jnp.float32)


# --------------------------------------------------------------------------------------------
# Networks


def _networks(config: Config, discrete: bool, action_dim: int) -> tuple[hk.Transformed, hk.Transformed]:
    """Actor and twin critics (separate MLPs, orthogonal init as in agents.networks)."""

    def actor(obs):
        h = MLP(config.hidden_sizes, config.activation, name="actor", torso=config.torso)(obs)
        if discrete:
            return linear_head(action_dim, 0.01, name="logits")(h)
        mean = linear_head(action_dim, 0.01, name="mean")(h)
        log_std = jnp.tanh(linear_head(action_dim, 0.01, name="log_std")(h))
        lo, hi = config.log_std_min, config.log_std_max
        return mean, lo + 0.5 * (hi - lo) * (log_std + 1.0)  # squash into [lo, hi] (CleanRL)

    def critic(obs, action=None):
        def q_input(j):  # each critic has its own convolution (with torso=cnn)
            with hk.name_scope(f"q{j}_features"):
                x = flat_features(obs, config.torso)
            return x if discrete else jnp.concatenate([x, action.astype(jnp.float32)], axis=-1)

        out = action_dim if discrete else 1
        qs = [
            linear_head(out, 1.0, name=f"q{j}_head")(
                MLP(config.hidden_sizes, config.activation, name=f"q{j}")(q_input(j))
            )
            for j in (1, 2)
        ]
        q = jnp.stack(qs)  # [2, B, out]
        return q if discrete else q[..., 0]

    return hk.without_apply_rng(hk.transform(actor)), hk.without_apply_rng(hk.transform(critic))


def _policy(static: Static, actor_params: hk.Params, obs: Array, key: chex.PRNGKey):
    """Continuous: ``(action [B, A], log_prob [B])`` of a reparameterised sample.
    Discrete: ``(probs [B, |A|], log_probs [B, |A|])`` of the categorical policy."""
    out = static.actor.apply(actor_params, obs)
    if static.discrete:
        return jax.nn.softmax(out), jax.nn.log_softmax(out)
    mean, log_std = out
    noise = jax.random.normal(key, mean.shape, mean.dtype)
    return squashed_gaussian(mean, log_std, noise, static.action_low, static.action_high)


def act(static: Static, params: Params, obs: Array, key: chex.PRNGKey, deterministic: bool = False) -> Array:
    """Actions for a batch of observations `[B, ...]` (the mode if deterministic)."""
    out = static.actor.apply(params.actor, obs)
    if static.discrete:
        return jnp.argmax(out, axis=-1) if deterministic else jax.random.categorical(key, out)
    if deterministic:
        low, high = static.action_low[None, :], static.action_high[None, :]
        return (high + low) / 2.0 + (high - low) / 2.0 * jnp.tanh(out[0])
    return _policy(static, params.actor, obs, key)[0]


def _random_action(static: Static, key: chex.PRNGKey, num: int) -> Array:
    """Uniform actions over the action space, `[num, ...]`."""
    if static.discrete:
        return jax.random.randint(key, (num,), 0, static.action_dim)
    return offpolicy.uniform_box(key, num, static.action_low, static.action_high)


# --------------------------------------------------------------------------------------------
# One iteration


def init(static: Static, key: chex.PRNGKey, hyper: Hyper) -> State:
    """Fresh parameters, optimizer states, empty replay and environments for one run."""
    key, actor_key, critic_key, env_key = jax.random.split(key, 4)
    obs, env_state = static.env.reset(env_key, static.env_params)
    action = jnp.zeros_like(_random_action(static, key, obs.shape[0]))  # an example action
    actor_params = static.actor.init(actor_key, obs)
    critic_params = static.critic.init(critic_key, obs, None if static.discrete else action)
    log_alpha = jnp.log(jnp.asarray(hyper.alpha, jnp.float32))
    params = Params(actor=actor_params, critic=critic_params, target_critic=critic_params, log_alpha=log_alpha)
    opt_state = OptState(
        actor=optax.adam(hyper.actor_lr).init(actor_params),
        critic=optax.adam(hyper.critic_lr).init(critic_params),
        alpha=optax.adam(hyper.alpha_lr).init(log_alpha),
    )
    example = replay.Stored(obs[0], action[0], jnp.float32(0.0), jnp.bool_(False), jnp.bool_(False), obs[0])
    buffer_state = replay.init(static.buffer, example)
    noise = None
    if static.noise_horizon:
        key, noise_key = jax.random.split(key)
        noise = _fresh_noise(static, noise_key, obs.shape[0])
    return State(
        params=params,
        opt_state=opt_state,
        buffer_state=buffer_state,
        env_state=env_state,
        obs=obs,
        key=key,
        update_idx=jnp.int32(0),
        noise=noise,
    )


def _fresh_noise(static: Static, key: chex.PRNGKey, num_envs: int) -> ColoredNoise:
    """New colored-noise sequences for every env, read from step 0."""
    shape = (num_envs, static.action_dim)
    seq = powerlaw_noise(key, static.config.noise_exponent, static.noise_horizon, shape)
    return ColoredNoise(jnp.swapaxes(seq, 1, 2), jnp.zeros((num_envs,), jnp.int32))


def advance_noise(static: Static, noise: ColoredNoise, done: Array, key: chex.PRNGKey) -> ColoredNoise:
    """Move every env's noise one step on, after a step whose episode ends are ``done`` `[B]`.

    An env whose episode ended or whose sequence is used up starts a fresh sequence, as
    Eberhard et al. (2023) restart theirs every episode.
    """
    num_envs = noise.t.shape[0]
    t = noise.t + 1
    restart = done | (t >= static.noise_horizon)
    fresh = _fresh_noise(static, key, num_envs)
    sequences = jnp.where(restart[:, None, None], fresh.sequences, noise.sequences)
    return ColoredNoise(sequences, jnp.where(restart, 0, t))


def collect(static: Static, state: State, hyper: Hyper, key: chex.PRNGKey):
    """train_frequency steps in every env, stored in replay.

    Returns ``(buffer_state, env_state, obs, episode_stats, noise)``.
    """
    explore = state.update_idx * static.config.steps_per_update < static.config.learning_starts

    def policy(obs, k):
        policy_key, random_key = jax.random.split(k)
        action = act(static, state.params, obs, policy_key)
        return jnp.where(explore, _random_action(static, random_key, obs.shape[0]), action), None

    if state.noise is not None:
        return _collect_colored(static, state, key, explore)
    transitions, env_state, obs, episodes = rollout(
        static.env, static.env_params, policy, state.env_state, state.obs, key, static.config.train_frequency
    )
    return replay.add_rollout(static.buffer, state.buffer_state, transitions), env_state, obs, episodes, None


def _collect_colored(static: Static, state: State, key: chex.PRNGKey, explore: Array):
    """``collect`` with colored noise: the sequences ride in the scan carry (rl.device.rollout's
    policies are stateless), ``u = mean + std * eps_t`` with ``eps_t`` the next noise step."""

    def step(carry, step_key):
        env_state, obs, noise, stats = carry
        random_key, env_key, noise_key = jax.random.split(step_key, 3)
        mean, log_std = static.actor.apply(state.params.actor, obs)
        eps = noise.sequences[jnp.arange(obs.shape[0]), noise.t]
        action, _ = squashed_gaussian(mean, log_std, eps, static.action_low, static.action_high)
        action = jnp.where(explore, _random_action(static, random_key, obs.shape[0]), action)
        transition, env_state, obs, step_stats = env_step(
            static.env, static.env_params, env_state, obs, action, env_key
        )
        noise = advance_noise(static, noise, transition.terminated | transition.truncated, noise_key)
        return (env_state, obs, noise, stats + step_stats), transition

    keys = jax.random.split(key, static.config.train_frequency)
    carry = (state.env_state, state.obs, state.noise, EpisodeStats.zero(state.obs.shape[:1]))
    (env_state, obs, noise, episodes), transitions = scan_rows(step, carry, keys, state.obs.shape[0])
    return replay.add_rollout(static.buffer, state.buffer_state, transitions), env_state, obs, episodes.total(), noise


def _critic_target(static: Static, params: Params, batch: replay.Stored, key, alpha, gamma) -> Array:
    """The soft target ``y`` `[B]` of a sampled batch (bootstraps from next_obs)."""
    discount = gamma * (1.0 - batch.terminated.astype(jnp.float32))
    if static.discrete:
        probs, log_probs = _policy(static, params.actor, batch.next_obs, key)
        q_next = static.critic.apply(params.target_critic, batch.next_obs)
        return batch.reward + discount * discrete_soft_value(q_next, probs, log_probs, alpha)
    next_action, next_log_pi = _policy(static, params.actor, batch.next_obs, key)
    q_next = static.critic.apply(params.target_critic, batch.next_obs, next_action)
    return soft_td_target(batch.reward, discount, q_next, next_log_pi, alpha)


def _critic_objective(static: Static, critic_params, batch: replay.Stored, y: Array):
    """Twin-critic regression onto ``y``; aux: mean Q_1 of the batch."""
    if static.discrete:
        q_all = static.critic.apply(critic_params, batch.obs)  # [2, B, |A|]
        q = jnp.sum(q_all * jax.nn.one_hot(batch.action, static.action_dim)[None], axis=-1)  # [2, B]
    else:
        q = static.critic.apply(critic_params, batch.obs, batch.action)
    return offpolicy.critic_loss(q, y), jnp.mean(q[0])


def _actor_objective(static: Static, actor_params, critic_params, obs: Array, key, alpha):
    """Policy loss; aux: ``(log-prob term for the alpha loss, entropy estimate)``."""
    if static.discrete:
        probs, log_probs = _policy(static, actor_params, obs, key)
        q = static.critic.apply(critic_params, obs)
        entropy = -jnp.mean(jnp.sum(probs * log_probs, axis=-1))
        return discrete_actor_loss(q, probs, log_probs, alpha), ((probs, log_probs), entropy)
    action, log_pi = _policy(static, actor_params, obs, key)
    q = static.critic.apply(critic_params, obs, action)
    return actor_loss(q, log_pi, alpha), (log_pi, -jnp.mean(log_pi))


def gradient_step(static: Static, params: Params, opt_state: OptState, batch: replay.Stored, key, hyper: Hyper):
    """One update of critics, actor, temperature and target critics on one batch."""
    target_key, actor_key = jax.random.split(key)
    alpha = jnp.exp(params.log_alpha)
    y = _critic_target(static, params, batch, target_key, alpha, hyper.gamma)

    (c_loss, q_mean), grads = jax.value_and_grad(lambda p: _critic_objective(static, p, batch, y), has_aux=True)(
        params.critic
    )
    updates, critic_opt = optax.adam(hyper.critic_lr).update(grads, opt_state.critic)
    critic = optax.apply_updates(params.critic, updates)

    (a_loss, (log_pi, entropy)), grads = jax.value_and_grad(
        lambda p: _actor_objective(static, p, critic, batch.obs, actor_key, alpha), has_aux=True
    )(params.actor)
    updates, actor_opt = optax.adam(hyper.actor_lr).update(grads, opt_state.actor)
    actor = optax.apply_updates(params.actor, updates)

    if static.discrete:
        temperature_loss = lambda la: discrete_alpha_loss(la, *log_pi, static.target_entropy)
    else:
        temperature_loss = lambda la: alpha_loss(la, log_pi, static.target_entropy)
    t_loss, grad = jax.value_and_grad(temperature_loss)(params.log_alpha)
    log_alpha, alpha_opt = params.log_alpha, opt_state.alpha
    if static.config.autotune:
        updates, alpha_opt = optax.adam(hyper.alpha_lr).update(grad, opt_state.alpha)
        log_alpha = optax.apply_updates(params.log_alpha, updates)

    target_critic = offpolicy.polyak(critic, params.target_critic, hyper.tau)
    metrics = {
        "critic_loss": c_loss,
        "actor_loss": a_loss,
        "alpha_loss": t_loss,
        "alpha": alpha,
        "q_mean": q_mean,
        "entropy": entropy,
    }
    params = Params(actor=actor, critic=critic, target_critic=target_critic, log_alpha=log_alpha)
    return params, OptState(actor=actor_opt, critic=critic_opt, alpha=alpha_opt), metrics


def learn(static: Static, params: Params, opt_state: OptState, buffer_state, hyper: Hyper, key: chex.PRNGKey):
    """gradient_steps steps on fresh replay samples; returns mean metrics."""

    def step(carry, step_key):
        params, opt_state = carry
        sample_key, grad_key = jax.random.split(step_key)
        batch = replay.first(replay.sample(static.buffer, buffer_state, sample_key))
        params, opt_state, metrics = gradient_step(static, params, opt_state, batch, grad_key, hyper)
        return (params, opt_state), metrics

    keys = jax.random.split(key, static.config.gradient_steps)
    (params, opt_state), metrics = jax.lax.scan(step, (params, opt_state), keys)
    return params, opt_state, jax.tree.map(jnp.mean, metrics)


def update(static: Static, state: State, hyper: Hyper) -> tuple[State, dict[str, Array]]:
    """One SAC iteration: collect into replay, then learn once replay is ready."""
    key, collect_key, learn_key = jax.random.split(state.key, 3)
    buffer_state, env_state, obs, episodes, noise = collect(static, state, hyper, collect_key)
    params, opt_state, metrics = offpolicy.learn_when_ready(
        functools.partial(learn, static),
        static.buffer.can_sample(buffer_state),
        state.params,
        state.opt_state,
        buffer_state,
        hyper,
        learn_key,
    )
    new_state = State(
        params=params,
        opt_state=opt_state,
        buffer_state=buffer_state,
        env_state=env_state,
        obs=obs,
        key=key,
        update_idx=state.update_idx + 1,
        noise=noise,
    )
    return new_state, {**metrics, **episodes.as_metrics()}


def build(config: Config, env: Any, env_params: Any) -> Static:
    """Validate ``config`` for ``env`` and assemble what the pure functions close over."""
    action_space = env.action_space(env_params)
    config.validate(action_space)
    check_torso(config.torso, env.observation_space(env_params))
    discrete = envs.is_discrete(action_space)
    if discrete:
        action_dim, low, high = int(action_space.n), None, None
        default_entropy = 0.98 * math.log(action_dim)
    else:
        low, high = offpolicy.action_bounds(action_space)
        action_dim, default_entropy = int(low.shape[0]), -float(low.shape[0])
    target_entropy = default_entropy if config.target_entropy is None else float(config.target_entropy)
    actor, critic = _networks(config, discrete, action_dim)
    buffer = replay.make_buffer(config.replay_capacity, config.batch_size, config.learning_starts, config.num_envs)
    venv = envs.vectorize(env, config.num_envs, env_params=env_params)
    noise_horizon = 0
    if config.noise_exponent > 0:
        check(
            config.noise_horizon is not None or hasattr(env_params, "max_steps_in_episode"),
            "noise_horizon",
            config.noise_horizon,
            "must be set: this env's params have no max_steps_in_episode to default to",
        )
        noise_horizon = config.noise_horizon or int(env_params.max_steps_in_episode)
    return Static(
        config,
        venv,
        env_params,
        buffer,
        actor,
        critic,
        discrete,
        action_dim,
        low,
        high,
        target_entropy,
        noise_horizon,
    )


def make(config: Config, env: Any, env_params: Any) -> Algorithm:
    """Build SAC for ``env``: validates ``config`` first, compiles nothing."""
    static = build(config, env, env_params)
    return bind("sac", static, init, update, act, config.steps_per_update, config.num_updates)
