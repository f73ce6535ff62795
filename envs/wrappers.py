"""Wrappers that keep gymnax 1.0's contract.

Every wrapper here has `reset(key, params) -> (obs, state)` and
`step(key, state, action, params) -> (obs, state, reward, terminated, truncated, info)` with the
inner env's automatic reset and `info["final_observation"]` (the observation before that reset,
transformed the same way as `obs`). `params=None` means the inner env's `default_params`. Spaces,
`default_params`, `num_actions` and any other attribute are forwarded to the inner env.

Typical stack (what `vectorize` builds), innermost first:
`ClipAction` (Box actions only) -> `EpisodeStatistics` -> `VecEnv` -> `NormalizeObservation`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
from gymnax.environments import spaces

# Initial pseudo-count of the running statistics (gym's / PureJaxRL's RunningMeanStd uses 1e-4):
# the prior (mean 0, var 1) weighs as 1e-4 observations, so it is forgotten after the first batch.
_STATS_INITIAL_COUNT = 1e-4

_jit_method = partial(jax.jit, static_argnames=("self",))


# ----------------------------------------------------------------------------------------------
# Space helpers


def is_discrete(space: spaces.Space) -> bool:
    """Whether `space` is a gymnax `Discrete` space."""
    return isinstance(space, spaces.Discrete)


def action_shape(space: spaces.Space) -> tuple[int, ...]:
    """Shape of one action: `()` for `Discrete`, `space.shape` for `Box`."""
    if isinstance(space, spaces.Discrete):
        return ()
    if isinstance(space, spaces.Box):
        return tuple(space.shape)
    raise TypeError(f"action_shape supports Discrete and Box spaces, got {space!r}")


def flat_obs_dim(space: spaces.Space) -> int:
    """Length of one observation after `FlattenObservation`: prod(shape) for Box, 1 for Discrete."""
    if isinstance(space, spaces.Discrete):
        return 1
    if isinstance(space, spaces.Box):
        return math.prod(space.shape)
    raise TypeError(f"flat_obs_dim supports Discrete and Box spaces, got {space!r}")


# ----------------------------------------------------------------------------------------------
# Base


class Wrapper:
    """Forward everything to the inner env; subclasses override what they change."""

    def __init__(self, env: Any):
        self._env = env

    def __getattr__(self, name: str) -> Any:
        """Pass through any attribute not defined on the wrapper (e.g. `name`, `state_space`)."""
        if name == "_env" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._env, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._env!r})"

    @property
    def unwrapped(self) -> Any:
        """The innermost (unwrapped) environment."""
        return getattr(self._env, "unwrapped", self._env)

    @property
    def default_params(self) -> Any:
        """The inner env's default parameters."""
        return self._env.default_params

    @property
    def num_actions(self) -> int:
        """The inner env's number of actions (action dimension for Box actions)."""
        return self._env.num_actions

    def observation_space(self, params: Any = None) -> spaces.Space:
        """Observation space of one (unbatched) environment (default params if None)."""
        return self._env.observation_space(self._params(params))

    def action_space(self, params: Any = None) -> spaces.Space:
        """Action space of one (unbatched) environment (default params if None)."""
        return self._env.action_space(self._params(params))

    def reset(self, key: chex.PRNGKey, params: Any = None) -> tuple[Any, Any]:
        """Reset the inner env."""
        return self._env.reset(key, params)

    def step(self, key: chex.PRNGKey, state: Any, action: Any, params: Any = None) -> tuple:
        """Step the inner env."""
        return self._env.step(key, state, action, params)

    def _params(self, params: Any) -> Any:
        """`params`, or the default parameters when it is None."""
        return self.default_params if params is None else params


# ----------------------------------------------------------------------------------------------
# EpisodeStatistics


class EpisodeStatisticsState(NamedTuple):
    """State of `EpisodeStatistics` for one environment.

    Attributes:
      env_state: the inner env's state.
      episode_return: f32[], undiscounted return of the running episode so far.
      episode_length: i32[], steps taken in the running episode so far.
    """

    env_state: Any
    episode_return: jax.Array
    episode_length: jax.Array


class EpisodeStatistics(Wrapper):
    """Report the return and length of each episode at the step where it ends.

    Wraps ONE environment (apply `VecEnv` after it). `step` adds to `info`:
      - "episode_return": f32[], full return of the episode that ended at this step, else 0.0;
      - "episode_length": i32[], its length in steps, else 0;
      - "episode_done":   bool[], terminated | truncated.
    The accumulators restart from 0 after every episode end, so values are never stale or partial.
    """

    @_jit_method
    def reset(self, key: chex.PRNGKey, params: Any = None) -> tuple[Any, EpisodeStatisticsState]:
        """Reset the inner env and zero the accumulators."""
        obs, env_state = self._env.reset(key, params)
        state = EpisodeStatisticsState(
            env_state=env_state,
            episode_return=jnp.zeros((), jnp.float32),
            episode_length=jnp.zeros((), jnp.int32),
        )
        return obs, state

    @_jit_method
    def step(
        self, key: chex.PRNGKey, state: EpisodeStatisticsState, action: Any, params: Any = None
    ) -> tuple[Any, EpisodeStatisticsState, jax.Array, jax.Array, jax.Array, dict]:
        """Step the inner env and accumulate/report the episode's return and length."""
        obs, env_state, reward, terminated, truncated, info = self._env.step(key, state.env_state, action, params)
        chex.assert_rank([reward, terminated, truncated], 0)  # one env: VecEnv goes outside.
        done = jnp.logical_or(terminated, truncated)
        episode_return = state.episode_return + jnp.asarray(reward, jnp.float32)
        episode_length = state.episode_length + 1
        info = {
            **info,
            "episode_return": jnp.where(done, episode_return, 0.0),
            "episode_length": jnp.where(done, episode_length, 0),
            "episode_done": done,
        }
        state = EpisodeStatisticsState(
            env_state=env_state,
            episode_return=jnp.where(done, 0.0, episode_return),
            episode_length=jnp.where(done, 0, episode_length),
        )
        return obs, state, reward, terminated, truncated, info


# ----------------------------------------------------------------------------------------------
# FlattenObservation


class FlattenObservation(Wrapper):
    """Reshape observations (and info["final_observation"]) of one env to f32[prod(shape)].

    Box observation spaces become `Box(shape=(prod(shape),), dtype=float32)` with flattened bounds;
    a Discrete observation space (FrozenLake's integer state) becomes `Box(0, n - 1, (1,))`.
    """

    def __init__(self, env: Any):
        super().__init__(env)
        space = env.observation_space(env.default_params)
        if not isinstance(space, (spaces.Box, spaces.Discrete)):
            raise ValueError(
                f"FlattenObservation supports Box and Discrete observation spaces, got {space!r}; "
                "flatten a Dict/Tuple observation inside the env instead"
            )

    def observation_space(self, params: Any = None) -> spaces.Box:
        """Flattened f32 Box observation space (default params if None)."""
        space = self._env.observation_space(self._params(params))
        if isinstance(space, spaces.Discrete):
            return spaces.Box(0.0, float(space.n - 1), (1,), jnp.float32)
        shape = tuple(space.shape)
        return spaces.Box(
            low=_flatten_bound(space.low, shape),
            high=_flatten_bound(space.high, shape),
            shape=(math.prod(shape),),
            dtype=jnp.float32,
        )

    @_jit_method
    def reset(self, key: chex.PRNGKey, params: Any = None) -> tuple[jax.Array, Any]:
        """Reset and flatten the observation."""
        obs, state = self._env.reset(key, params)
        return _flatten(obs), state

    @_jit_method
    def step(self, key: chex.PRNGKey, state: Any, action: Any, params: Any = None) -> tuple:
        """Step and flatten the observation and info["final_observation"]."""
        obs, state, reward, terminated, truncated, info = self._env.step(key, state, action, params)
        info = {**info, "final_observation": _flatten(info["final_observation"])}
        return _flatten(obs), state, reward, terminated, truncated, info


def _flatten(obs: jax.Array) -> jax.Array:
    """One observation of any shape -> f32[prod(shape)]."""
    return jnp.reshape(obs, (-1,)).astype(jnp.float32)


def _flatten_bound(bound: Any, shape: tuple[int, ...]) -> Any:
    """A scalar bound stays scalar; an array bound is broadcast to `shape` and flattened."""
    if jnp.ndim(bound) == 0:
        return bound
    return jnp.reshape(jnp.broadcast_to(bound, shape), (-1,)).astype(jnp.float32)


# ----------------------------------------------------------------------------------------------
# MaskObservation


class MaskObservation(Wrapper):
    """Hide entries of a flat observation: a partially observed env (e.g. CartPole without velocities).

    `hide` lists indices of the observation vector (f32[n], a Box of rank 1); the agent sees the
    other entries, in their order, as f32[n - len(hide)]. `info["final_observation"]` is masked the
    same way, and the Box bounds of `observation_space` are those of the kept entries.
    """

    def __init__(self, env: Any, hide: Sequence[int]):
        super().__init__(env)
        space = env.observation_space(env.default_params)
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"MaskObservation needs a flat Box observation space (n,), got {space!r}")
        n = int(space.shape[0])
        hide = tuple(int(i) for i in hide)
        if not hide or len(set(hide)) != len(hide) or any(not 0 <= i < n for i in hide) or len(hide) >= n:
            raise ValueError(
                f"hide={hide!r} must list distinct indices in [0, {n - 1}] of the observation, "
                f"at least one and not all {n}"
            )
        self.hide = hide
        self.keep = tuple(i for i in range(n) if i not in hide)

    def observation_space(self, params: Any = None) -> spaces.Box:
        """The inner Box restricted to the kept entries."""
        space = self._env.observation_space(self._params(params))
        keep = jnp.asarray(self.keep)

        def bound(b: Any) -> Any:
            return jnp.broadcast_to(jnp.asarray(b, jnp.float32), space.shape)[keep]

        return spaces.Box(bound(space.low), bound(space.high), (len(self.keep),), space.dtype)

    @_jit_method
    def reset(self, key: chex.PRNGKey, params: Any = None) -> tuple[jax.Array, Any]:
        """Reset and mask the observation."""
        obs, state = self._env.reset(key, params)
        return self._mask(obs), state

    @_jit_method
    def step(self, key: chex.PRNGKey, state: Any, action: Any, params: Any = None) -> tuple:
        """Step and mask the observation and info["final_observation"]."""
        obs, state, reward, terminated, truncated, info = self._env.step(key, state, action, params)
        info = {**info, "final_observation": self._mask(info["final_observation"])}
        return self._mask(obs), state, reward, terminated, truncated, info

    def reset_env(self, key: chex.PRNGKey, params: Any) -> tuple[jax.Array, Any]:
        """gymnax's reset without the wrapper machinery, masked (property tests call it)."""
        obs, state = self._env.reset_env(key, params)
        return self._mask(obs), state

    def step_env(self, key: chex.PRNGKey, state: Any, action: Any, params: Any) -> tuple:
        """gymnax's step without the automatic reset, masked (property tests call it)."""
        obs, state, reward, done, info = self._env.step_env(key, state, action, params)
        return self._mask(obs), state, reward, done, info

    def _mask(self, obs: jax.Array) -> jax.Array:
        return obs[..., jnp.asarray(self.keep)]


def cartpole_no_velocity(**kwargs: Any) -> MaskObservation:
    """CartPole-v1 with the cart and pole velocities hidden: the agent sees [x, theta] only
    (registered as CartPole-NoVelocity-v1; a memoryless policy cannot tell which way it moves)."""
    import gymnax

    return MaskObservation(gymnax.make("CartPole-v1", **kwargs)[0], hide=(1, 3))


# ----------------------------------------------------------------------------------------------
# ClipAction


class ClipAction(Wrapper):
    """Clip continuous actions to the Box action space's [low, high] before stepping."""

    def __init__(self, env: Any):
        super().__init__(env)
        space = env.action_space(env.default_params)
        if not isinstance(space, spaces.Box):
            raise ValueError(f"ClipAction needs a Box action space, got {space!r}; do not wrap discrete envs")

    @_jit_method
    def step(self, key: chex.PRNGKey, state: Any, action: jax.Array, params: Any = None) -> tuple:
        """Step the inner env with `clip(action, low, high)`."""
        space = self._env.action_space(self._params(params))
        chex.assert_shape(action, tuple(space.shape))
        clipped = jnp.clip(action, space.low, space.high)
        return self._env.step(key, state, clipped, params)


# ----------------------------------------------------------------------------------------------
# VecEnv


class VecEnv(Wrapper):
    """Run `num_envs` copies of one env in parallel with `jax.vmap`.

    `reset(key, params)` splits `key` into `num_envs` keys and returns obs [B, ...] and a batched
    state. `step(key, state, action[B, ...], params)` splits `key` likewise; obs, state, reward [B],
    terminated [B], truncated [B] and every info leaf get a leading axis B. `params` is shared.
    Spaces are those of ONE env.
    """

    def __init__(self, env: Any, num_envs: int):
        super().__init__(env)
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        self.num_envs = num_envs

    @_jit_method
    def reset(self, key: chex.PRNGKey, params: Any = None) -> tuple[Any, Any]:
        """Reset `num_envs` envs from independent keys."""
        keys = jax.random.split(key, self.num_envs)
        obs, state = jax.vmap(self._env.reset, in_axes=(0, None))(keys, self._params(params))
        chex.assert_tree_shape_prefix(obs, (self.num_envs,))
        return obs, state

    @_jit_method
    def step(self, key: chex.PRNGKey, state: Any, action: Any, params: Any = None) -> tuple:
        """Step `num_envs` envs, each with its own key and its own action."""
        chex.assert_tree_shape_prefix(action, (self.num_envs,))
        keys = jax.random.split(key, self.num_envs)
        batched_step = jax.vmap(self._env.step, in_axes=(0, 0, 0, None))
        return batched_step(keys, state, action, self._params(params))


# ----------------------------------------------------------------------------------------------
# NormalizeObservation


class NormalizeObservationState(NamedTuple):
    """State of `NormalizeObservation`; statistics are shared by all envs of the batch.

    Attributes:
      env_state: the inner (batched) env's state.
      mean: f32[*obs_shape], running mean of every observation returned so far.
      var: f32[*obs_shape], running (population) variance of the same observations.
      count: f32[], number of observations seen, plus the initial pseudo-count 1e-4.
    """

    env_state: Any
    mean: jax.Array
    var: jax.Array
    count: jax.Array


class NormalizeObservation(Wrapper):
    """Standardise observations of a `VecEnv` with running statistics kept in the state.

    Each `reset` and `step` first folds the whole returned batch obs [B, ...] into the statistics
    (Chan et al.'s parallel mean/variance update), then returns
    `clip((obs - mean) / sqrt(var + epsilon), -clip, clip)`. `info["final_observation"]` is
    normalised with the same (updated) statistics but is not added to them: after an automatic
    reset every observation the agent sees was counted exactly once. Pure: safe under jit, vmap
    (e.g. over seeds, each seed then keeps its own statistics) and scan. Use `normalize` at
    evaluation time to apply frozen statistics.
    """

    def __init__(self, env: Any, clip: float = 10.0, epsilon: float = 1e-8):
        super().__init__(env)
        if not hasattr(env, "num_envs"):
            raise ValueError("NormalizeObservation wraps a batched env: use NormalizeObservation(VecEnv(env, n))")
        if clip <= 0 or epsilon <= 0:
            raise ValueError(f"clip and epsilon must be positive, got {clip=}, {epsilon=}")
        self.clip = float(clip)
        self.epsilon = float(epsilon)

    @_jit_method
    def reset(self, key: chex.PRNGKey, params: Any = None) -> tuple[jax.Array, NormalizeObservationState]:
        """Reset the batch, start statistics from the prior and fold in the first observations."""
        obs, env_state = self._env.reset(key, params)
        self._check_batch(obs)
        obs_shape = obs.shape[1:]
        state = NormalizeObservationState(
            env_state=env_state,
            mean=jnp.zeros(obs_shape, jnp.float32),
            var=jnp.ones(obs_shape, jnp.float32),
            count=jnp.asarray(_STATS_INITIAL_COUNT, jnp.float32),
        )
        state = _update_statistics(state, obs)
        return self.normalize(state, obs), state

    @_jit_method
    def step(self, key: chex.PRNGKey, state: NormalizeObservationState, action: Any, params: Any = None) -> tuple:
        """Step the batch, fold the new obs into the statistics, normalise obs and final obs."""
        obs, env_state, reward, terminated, truncated, info = self._env.step(key, state.env_state, action, params)
        self._check_batch(obs)
        state = _update_statistics(state._replace(env_state=env_state), obs)
        final_obs = self.normalize(state, info["final_observation"])
        info = {**info, "final_observation": final_obs}
        return self.normalize(state, obs), state, reward, terminated, truncated, info

    def normalize(self, state: NormalizeObservationState, obs: jax.Array) -> jax.Array:
        """Standardise obs [..., *obs_shape] (batched or not) with `state`'s statistics.

        Does not update the statistics: use it at evaluation time with the training state.
        """
        mean = _lift_rank(state.mean, jnp.ndim(obs))
        std = jnp.sqrt(_lift_rank(state.var, jnp.ndim(obs)) + self.epsilon)
        standardised = (jnp.asarray(obs, jnp.float32) - mean) / std
        return jnp.clip(standardised, -self.clip, self.clip)

    def _check_batch(self, obs: jax.Array) -> None:
        """Observations must be one array with leading axis num_envs."""
        if not isinstance(obs, jax.Array):
            raise ValueError(f"NormalizeObservation needs array observations, got {type(obs)}")
        chex.assert_axis_dimension(obs, 0, self.num_envs)


def _update_statistics(state: NormalizeObservationState, obs: jax.Array) -> NormalizeObservationState:
    """Fold a batch obs [B, *obs_shape] into the running mean/var/count (Chan et al., 1979).

    With prior (m_a, v_a, n_a) and batch (m_b, v_b, n_b), delta = m_b - m_a, n = n_a + n_b:
      mean = m_a + delta * n_b / n
      var  = (v_a * n_a + v_b * n_b + delta^2 * n_a * n_b / n) / n
    """
    obs = jnp.asarray(obs, jnp.float32)
    batch_count = jnp.asarray(obs.shape[0], jnp.float32)
    batch_mean = jnp.mean(obs, axis=0)
    batch_var = jnp.var(obs, axis=0)
    delta = batch_mean - state.mean
    total = state.count + batch_count
    mean = state.mean + delta * batch_count / total
    m2 = state.var * state.count + batch_var * batch_count
    var = (m2 + jnp.square(delta) * state.count * batch_count / total) / total
    return state._replace(mean=mean, var=var, count=total)


def _lift_rank(stat: jax.Array, ndim: int) -> jax.Array:
    """Prepend singleton axes so `stat` has rank `ndim` (explicit: no implicit rank promotion)."""
    return jnp.reshape(stat, (1,) * (ndim - stat.ndim) + stat.shape)


# ----------------------------------------------------------------------------------------------
# Convenience


def vectorize(env: Any, num_envs: int, *, normalize_obs: bool = False, env_params: Any = None) -> Any:
    """Wrap one env for training: ClipAction (Box actions only), EpisodeStatistics, VecEnv,
    then NormalizeObservation if `normalize_obs`.

    Args:
      env: one unbatched gymnax-style env.
      num_envs: parallel copies B.
      normalize_obs: add `NormalizeObservation` (state gains running statistics).
      env_params: parameters used to inspect the action space; default `env.default_params`.

    Returns:
      The wrapped env: reset/step take and return leading axis B; info has the episode statistics.
    """
    params = env.default_params if env_params is None else env_params
    if isinstance(env.action_space(params), spaces.Box):
        env = ClipAction(env)
    env = VecEnv(EpisodeStatistics(env), num_envs)
    if normalize_obs:
        env = NormalizeObservation(env)
    return env
