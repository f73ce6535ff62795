"""Twin Delayed DDPG (Fujimoto et al., 2018, arXiv:1802.09477), and DDPG as its special case.

One iteration (Algorithm 1 of the paper, vectorised)::

    act train_frequency steps in each of B envs with a = clip(mu(s) + N(0, sigma^2))   (collect)
      (uniform random actions until learning_starts env steps are done)
    once replay holds learning_starts transitions, gradient_steps times:              (learn)
        sample a batch (s, a, r, s', terminated)
        a' = clip(mubar(s') + clip(N(0, policy_noise^2), -noise_clip, noise_clip))    (smoothing)
        y  = r + gamma (1 - terminated) min_j Qbar_j(s', a')                          (clipped double Q)
        critics: minimise sum_j 1/2 (Q_j(s, a) - y)^2
        every policy_frequency-th step:                                               (delay)
            actor: maximise Q_1(s, mu(s));  Qbar <- tau Q + (1 - tau) Qbar;  mubar likewise

Noise scales are fractions of half the action range (as ``max_action`` multiplies them in
the paper's code). DDPG in the form the TD3 paper re-tuned ("OurDDPG", Lillicrap et al.,
2016) is this algorithm with ``twin_critics=False``, ``policy_frequency=1`` and
``policy_noise=0`` (``agents.ddpg`` sets those defaults).

Truncation is not termination: ``s'`` is the true successor (``info["final_observation"]``)
and the bootstrap is cut only where ``terminated``.
"""

from __future__ import annotations

import functools
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
from rl.device.rollout import rollout
from rl.engine.runner import Algorithm, bind
from rl.errors import (
    Count,
    NonNegative,
    NonNegativeCount,
    Positive,
    Rule,
    Unit,
    UnitLeftOpen,
    Widths,
    validate_config,
    validate_hyper,
)

Array = chex.Array


@dataclass(frozen=True)
class Config(offpolicy.Steps):
    """Shape-setting settings of TD3: changing one recompiles."""

    num_envs: Count = 1
    """parallel environments per run"""
    total_timesteps: Count = 1_000_000
    """env steps per run (rounded down to whole updates)"""
    train_frequency: Count = 1
    """steps taken in each environment per update"""
    gradient_steps: Count = 1
    """gradient steps (critic updates) per update once learning has started"""
    buffer_size: Count = 1_000_000
    """replay capacity in transitions (all envs together; capped at total_timesteps)"""
    batch_size: Count = 256
    """transitions per gradient step"""
    learning_starts: NonNegativeCount = 25_000
    """env steps of uniform random actions, and transitions in replay before learning"""
    policy_frequency: Annotated[
        int, Rule(lambda v: v > 0, "must be a positive integer (1 updates the actor at every critic update)")
    ] = 2
    """update the actor and the targets every this many critic updates (TD3's delay d)"""
    twin_critics: bool = True
    """two critics and the min of their targets (clipped double Q); False: one critic (DDPG)"""
    hidden_sizes: Widths = (256, 256)
    """hidden layer widths of the actor and of each critic"""
    activation: Annotated[str, ACTIVATION] = "relu"
    """hidden activation: one of tanh, relu, gelu, elu, silu, leaky_relu"""
    torso: Annotated[str, TORSO] = "mlp"
    """mlp, or cnn for image observations (H, W, C): MinAtar's 16 3x3 filters, then the MLP"""

    @property
    def num_critics(self) -> int:
        return 2 if self.twin_critics else 1

    @property
    def replay_capacity(self) -> int:
        """Transitions replay holds: buffer_size, but never more than training writes."""
        capacity = min(self.buffer_size, self.num_updates * self.steps_per_update)
        return capacity - capacity % self.num_envs

    def validate(self, action_space: Any) -> None:
        """Raise ``ConfigError`` naming the first invalid field."""
        validate_config(self)
        offpolicy.check_replay(self)
        offpolicy.check_action_space(action_space, allow_discrete=False)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Hyper:
    """Traced settings of TD3: a sweep may give each a batch axis."""

    actor_lr: Positive = 3e-4
    """Adam step size of the actor"""
    critic_lr: Positive = 3e-4
    """Adam step size of the critics"""
    gamma: Unit = 0.99
    """discount factor"""
    tau: UnitLeftOpen = 0.005
    """Polyak step of the target networks per actor update"""
    exploration_noise: NonNegative = 0.1
    """std of the Gaussian exploration noise, as a fraction of half the action range"""
    policy_noise: NonNegative = 0.2
    """std of the target policy smoothing noise (fraction of half the range); 0 turns it off"""
    noise_clip: NonNegative = 0.5
    """the smoothing noise is clipped to +-noise_clip (fraction of half the range)"""

    def validate(self) -> None:
        """Raise ``ConfigError`` for values outside their range (any shape)."""
        validate_hyper(self)


class Params(NamedTuple):
    """Everything TD3 learns (``act`` reads ``actor``)."""

    actor: hk.Params
    critic: hk.Params  # Q_1 (and Q_2 with twin_critics)
    target_actor: hk.Params
    target_critic: hk.Params


class OptState(NamedTuple):
    actor: optax.OptState
    critic: optax.OptState


class State(NamedTuple):
    """Training carry of one TD3 run."""

    params: Params
    opt_state: OptState
    buffer_state: Any  # flashbax trajectory buffer, [num_envs, capacity / num_envs] per field
    env_state: Any  # vectorised env state, leading axis num_envs
    obs: Array  # [num_envs, *obs_shape] current observations
    key: chex.PRNGKey  # this run's key, split every update
    update_idx: Array  # int32[] updates done so far
    critic_updates: Array  # int32[] gradient steps done so far (sets the policy delay's phase)


class Static(NamedTuple):
    """What the factory closes over: settings, env, replay and networks (not traced)."""

    config: Config
    env: Any  # vectorised env
    env_params: Any
    buffer: Any  # flashbax buffer functions
    actor: hk.Transformed  # obs -> action [B, A] inside the bounds
    critic: hk.Transformed  # (obs, action) -> Q [C, B]
    action_low: np.ndarray  # f32[A]
    action_high: np.ndarray  # f32[A]


# --------------------------------------------------------------------------------------------
# Leaf functions on a batch of independent transitions `[B]`.


def smoothed_target_action(key, action: Array, policy_noise, noise_clip, low: Array, high: Array) -> Array:
    """Target policy smoothing (paper eq. 15): ``clip(a + clip(eps, -c, c) * s, low, high)``.

    ``eps ~ N(0, policy_noise^2)``, ``c = noise_clip`` and ``s = (high - low) / 2``, so the
    noise is in units of half the action range as in the authors' code.

    Args:
      action: `[B, A]` target actor's actions ``mubar(s')``.
      low, high: `[A]` action bounds.
    """
    chex.assert_rank([action, low, high], [2, 1, 1])
    eps = jnp.clip(policy_noise * jax.random.normal(key, action.shape, action.dtype), -noise_clip, noise_clip)
    return jnp.clip(action + eps * ((high - low) / 2.0)[None, :], low[None, :], high[None, :])


def td_target(r_t: Array, discount_t: Array, q_tp1: Array) -> Array:
    """``y = r + discount min_j Qbar_j(s', a')`` (paper eq. 10; C = 1 critic is DDPG's target).

    ``r_t``, ``discount_t``: `[B]` with ``discount_t = gamma (1 - terminated_t)``;
    ``q_tp1``: `[C, B]`.
    """
    chex.assert_rank([r_t, discount_t, q_tp1], [1, 1, 2])
    return r_t + discount_t * jax.lax.stop_gradient(jnp.min(q_tp1, axis=0))


def deterministic_actor_loss(q1_t: Array) -> Array:
    """``-mean_b Q_1(s, mu(s))``: the deterministic policy gradient (Silver et al., 2014)."""
    chex.assert_rank(q1_t, 1)
    return -jnp.mean(q1_t)


# --------------------------------------------------------------------------------------------
# Networks


def _networks(config: Config, low: np.ndarray, high: np.ndarray) -> tuple[hk.Transformed, hk.Transformed]:
    """Deterministic tanh actor rescaled to the bounds, and 1 or 2 Q(s, a) critics."""
    action_dim = int(low.shape[0])

    def actor(obs):
        h = MLP(config.hidden_sizes, config.activation, name="actor", torso=config.torso)(obs)
        u = jnp.tanh(linear_head(action_dim, 0.01, name="mu")(h))
        return ((high + low) / 2.0)[None, :] + ((high - low) / 2.0)[None, :] * u

    def critic(obs, action):
        def q_input(j):  # each critic has its own convolution (with torso=cnn)
            with hk.name_scope(f"q{j}_features"):
                x = flat_features(obs, config.torso)
            return jnp.concatenate([x, action.astype(jnp.float32)], axis=-1)

        qs = [
            linear_head(1, 1.0, name=f"q{j}_head")(
                MLP(config.hidden_sizes, config.activation, name=f"q{j}")(q_input(j))
            )
            for j in range(1, config.num_critics + 1)
        ]
        return jnp.stack(qs)[..., 0]  # [C, B]

    return hk.without_apply_rng(hk.transform(actor)), hk.without_apply_rng(hk.transform(critic))


def act(static: Static, params: Params, obs: Array, key: chex.PRNGKey, deterministic: bool = False) -> Array:
    """The deterministic policy ``mu(s)`` for `[B, ...]` observations.

    TD3's policy is deterministic: exploration noise belongs to training (``collect``),
    so ``key`` and ``deterministic`` do not change the action.
    """
    del key, deterministic
    return static.actor.apply(params.actor, obs)


# --------------------------------------------------------------------------------------------
# One iteration


def init(static: Static, key: chex.PRNGKey, hyper: Hyper) -> State:
    """Fresh parameters (targets equal to them), optimizer states, empty replay, envs."""
    key, actor_key, critic_key, env_key = jax.random.split(key, 4)
    obs, env_state = static.env.reset(env_key, static.env_params)
    action = jnp.zeros((obs.shape[0],) + static.action_low.shape, jnp.float32)
    actor_params = static.actor.init(actor_key, obs)
    critic_params = static.critic.init(critic_key, obs, action)
    params = Params(actor=actor_params, critic=critic_params, target_actor=actor_params, target_critic=critic_params)
    opt_state = OptState(
        actor=optax.adam(hyper.actor_lr).init(actor_params), critic=optax.adam(hyper.critic_lr).init(critic_params)
    )
    example = replay.Stored(obs[0], action[0], jnp.float32(0.0), jnp.bool_(False), jnp.bool_(False), obs[0])
    buffer_state = replay.init(static.buffer, example)
    return State(
        params=params,
        opt_state=opt_state,
        buffer_state=buffer_state,
        env_state=env_state,
        obs=obs,
        key=key,
        update_idx=jnp.int32(0),
        critic_updates=jnp.int32(0),
    )


def collect(static: Static, state: State, hyper: Hyper, key: chex.PRNGKey):
    """train_frequency noisy-policy steps in every env, stored in replay."""
    explore = state.update_idx * static.config.steps_per_update < static.config.learning_starts

    def policy(obs, k):
        noise_key, random_key = jax.random.split(k)
        action = offpolicy.gaussian_noise(
            noise_key,
            act(static, state.params, obs, k),
            hyper.exploration_noise,
            static.action_low[None, :],
            static.action_high[None, :],
        )
        return jnp.where(
            explore, offpolicy.uniform_box(random_key, obs.shape[0], static.action_low, static.action_high), action
        ), None

    transitions, env_state, obs, episodes = rollout(
        static.env, static.env_params, policy, state.env_state, state.obs, key, static.config.train_frequency
    )
    return replay.add_rollout(static.buffer, state.buffer_state, transitions), env_state, obs, episodes


def _critic_update(static: Static, params: Params, opt_state: OptState, batch: replay.Stored, key, hyper: Hyper):
    """Regress every critic onto the smoothed clipped double-Q target."""
    next_action = smoothed_target_action(
        key,
        static.actor.apply(params.target_actor, batch.next_obs),
        hyper.policy_noise,
        hyper.noise_clip,
        static.action_low,
        static.action_high,
    )
    discount = hyper.gamma * (1.0 - batch.terminated.astype(jnp.float32))
    q_next = static.critic.apply(params.target_critic, batch.next_obs, next_action)
    y = td_target(batch.reward, discount, q_next)

    def objective(critic_params):
        q = static.critic.apply(critic_params, batch.obs, batch.action)
        return offpolicy.critic_loss(q, y), jnp.mean(q[0])

    (loss, q_mean), grads = jax.value_and_grad(objective, has_aux=True)(params.critic)
    updates, critic_opt = optax.adam(hyper.critic_lr).update(grads, opt_state.critic)
    params = params._replace(critic=optax.apply_updates(params.critic, updates))
    return params, opt_state._replace(critic=critic_opt), {"critic_loss": loss, "q_mean": q_mean}


def _actor_update(static: Static, params: Params, opt_state: OptState, obs: Array, hyper: Hyper):
    """Deterministic policy gradient step on Q_1, then Polyak steps of both targets."""

    def objective(actor_params):
        q = static.critic.apply(params.critic, obs, static.actor.apply(actor_params, obs))
        return deterministic_actor_loss(q[0])

    loss, grads = jax.value_and_grad(objective)(params.actor)
    updates, actor_opt = optax.adam(hyper.actor_lr).update(grads, opt_state.actor)
    actor = optax.apply_updates(params.actor, updates)
    params = Params(
        actor=actor,
        critic=params.critic,
        target_actor=offpolicy.polyak(actor, params.target_actor, hyper.tau),
        target_critic=offpolicy.polyak(params.critic, params.target_critic, hyper.tau),
    )
    return params, opt_state._replace(actor=actor_opt), loss


def gradient_step(static: Static, params, opt_state, step: Array, batch: replay.Stored, key, hyper: Hyper):
    """A critic update, and every policy_frequency-th step an actor and target update."""
    params, opt_state, metrics = _critic_update(static, params, opt_state, batch, key, hyper)
    delayed = (step % static.config.policy_frequency) == 0

    def skip(params, opt_state):  # still report the actor's objective (forward pass only)
        q = static.critic.apply(params.critic, batch.obs, static.actor.apply(params.actor, batch.obs))
        return params, opt_state, deterministic_actor_loss(q[0])

    params, opt_state, metrics["actor_loss"] = jax.lax.cond(
        delayed, lambda p, o: _actor_update(static, p, o, batch.obs, hyper), skip, params, opt_state
    )
    return params, opt_state, metrics


def learn(static: Static, params: Params, opt_state: OptState, buffer_state, step: Array, hyper: Hyper, key):
    """gradient_steps steps on fresh replay samples; returns mean metrics."""

    def body(carry, step_key):
        params, opt_state, step = carry
        sample_key, grad_key = jax.random.split(step_key)
        batch = replay.first(replay.sample(static.buffer, buffer_state, sample_key))
        params, opt_state, metrics = gradient_step(static, params, opt_state, step, batch, grad_key, hyper)
        return (params, opt_state, step + 1), metrics

    keys = jax.random.split(key, static.config.gradient_steps)
    (params, opt_state, _), metrics = jax.lax.scan(body, (params, opt_state, step), keys)
    return params, opt_state, jax.tree.map(jnp.mean, metrics)


def update(static: Static, state: State, hyper: Hyper) -> tuple[State, dict[str, Array]]:
    """One TD3 iteration: collect into replay, then learn once replay is ready."""
    key, collect_key, learn_key = jax.random.split(state.key, 3)
    buffer_state, env_state, obs, episodes = collect(static, state, hyper, collect_key)
    ready = static.buffer.can_sample(buffer_state)
    params, opt_state, metrics = offpolicy.learn_when_ready(
        functools.partial(learn, static),
        ready,
        state.params,
        state.opt_state,
        buffer_state,
        state.critic_updates,
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
        critic_updates=state.critic_updates + jnp.where(ready, static.config.gradient_steps, 0),
    )
    return new_state, {**metrics, **episodes.as_metrics()}


def build(config: Config, env: Any, env_params: Any) -> Static:
    """Validate ``config`` for ``env`` and assemble what the pure functions close over."""
    action_space = env.action_space(env_params)
    config.validate(action_space)
    check_torso(config.torso, env.observation_space(env_params))
    low, high = offpolicy.action_bounds(action_space)
    actor, critic = _networks(config, low, high)
    buffer = replay.make_buffer(config.replay_capacity, config.batch_size, config.learning_starts, config.num_envs)
    venv = envs.vectorize(env, config.num_envs, env_params=env_params)
    return Static(config, venv, env_params, buffer, actor, critic, low, high)


def make(config: Config, env: Any, env_params: Any, name: str = "td3") -> Algorithm:
    """Build TD3 (or DDPG, see ``agents.ddpg``) for ``env``: validates ``config``, compiles nothing."""
    static = build(config, env, env_params)
    return bind(name, static, init, update, act, config.steps_per_update, config.num_updates)
