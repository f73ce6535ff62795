"""Task distributions: environment parameters drawn per episode, and trials of episodes for RL².

Both wrappers keep gymnax 1.0's contract (`reset(key, params) -> (obs, state)`,
`step(key, state, action, params) -> (obs, state, reward, terminated, truncated, info)` with the
automatic reset and `info["final_observation"]`), wrap ONE environment and are vectorised with
`envs.vectorize` like any other env.

`DomainRandomization(env, ranges={"length": (0.25, 1.0)}, sample=fn)`
    Draws the env's parameters (fields of its `env_params` dataclass) at every reset, the automatic
    reset inside `step` included: each field in `ranges` uniformly from `[low, high]` (integers
    from `low..high` inclusive), then `sample(key, params) -> params` if given (a function that
    draws fields jointly or recomputes derived ones). The drawn parameters live in the state, so
    they stay fixed for an episode and change with the next one; `params` passed to `reset`/`step`
    gives the values of the fields not drawn (and the spaces). Example, CartPole with its pole's
    length and mass drawn per episode (its derived fields recomputed)::

        env, params = envs.make("CartPole-v1")
        env = envs.DomainRandomization(
            env,
            {"length": (0.25, 1.0), "masspole": (0.05, 0.5)},
            sample=lambda key, p: p.replace(
                total_mass=p.masscart + p.masspole, polemass_length=p.masspole * p.length
            ),
        )

`Trials(env, episodes_per_trial=K)`
    RL²'s trial (Duan et al., 2016): one task kept for K episodes. The task is what the inner env's
    reset draws from its key: `DomainRandomization`'s parameters, or the task gymnax's
    meta-learning envs sample at reset (BernoulliBandit-misc's arm probabilities, MetaMaze-misc's
    goal). Every inner episode of a trial restarts from the trial's own reset key, so it meets the
    same task, and the same start state: an env's reset may draw its task and its start from one
    key (BernoulliBandit-misc under a `DomainRandomization` of `reward_prob` draws the arm order
    at reset), so only the whole reset is sure to keep the task. The observation (flattened to
    f32) gets the previous action (one-hot for a discrete action space), the previous reward and
    the previous inner episode end appended (zeros at the start of a trial). `terminated`/`truncated` are reported only at the
    end of a trial, copied from the last inner episode's own end (unless `terminate_trials`, which
    reports every trial end as a termination: the meta-episode ends with its task). The inner
    episode ends stay visible through the appended flag and `info["inner_terminated"]`,
    `info["inner_truncated"]`; `info["trial_episode"]` counts the inner episodes done.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
from gymnax.environments import spaces

from envs.registry import register
from envs.wrappers import Wrapper, action_shape, is_discrete

_jit_method = partial(jax.jit, static_argnames=("self",))

ParamSampler = Callable[[chex.PRNGKey, Any], Any]


def _select(pred: jax.Array, on_true: Any, on_false: Any) -> Any:
    """Leafwise `where(pred, on_true, on_false)` for a scalar `pred`."""
    return jax.tree.map(lambda a, b: jax.lax.select(pred, jnp.asarray(a), jnp.asarray(b)), on_true, on_false)


# ----------------------------------------------------------------------------------------------
# DomainRandomization


class DomainRandomizationState(NamedTuple):
    """State of `DomainRandomization` for one environment.

    Attributes:
      env_state: the inner env's state.
      params: the inner env's parameters drawn for the running episode.
    """

    env_state: Any
    params: Any


def param_fields(params: Any) -> tuple[str, ...]:
    """Field names of an `env_params` dataclass (flax struct or plain dataclass)."""
    return tuple(f.name for f in dataclasses.fields(params))


class DomainRandomization(Wrapper):
    """Draw the env's parameters at every reset; see the module docstring.

    Args:
      env: one unbatched gymnax-style env.
      ranges: `{field: (low, high)}`, each field of `env.default_params` drawn uniformly from
        `[low, high]`; a field whose default is an integer is drawn from `low..high` inclusive.
      sample: `(key, params) -> params`, applied after `ranges` to the partly drawn parameters.

    Raises:
      ValueError: no ranges and no sample, an unknown field (the message lists the known ones),
        a boolean field, or a range with `low > high` or a non-finite bound.
    """

    def __init__(
        self, env: Any, ranges: Mapping[str, tuple[float, float]] | None = None, sample: ParamSampler | None = None
    ):
        super().__init__(env)
        ranges = dict(ranges or {})
        if not ranges and sample is None:
            raise ValueError("DomainRandomization needs ranges={field: (low, high)} or sample=fn(key, params)")
        if sample is not None and not callable(sample):
            raise ValueError(f"sample must be a function (key, params) -> params, got {sample!r}")
        defaults = env.default_params
        known = param_fields(defaults)
        self._integer = {}
        for name, bounds in ranges.items():
            if name not in known:
                raise ValueError(
                    f"DomainRandomization: unknown parameter field {name!r} of {type(defaults).__name__}; "
                    f"known fields: {', '.join(known)}"
                )
            default = getattr(defaults, name)
            if isinstance(default, bool) or jnp.asarray(default).dtype == jnp.bool_:
                raise ValueError(f"DomainRandomization: field {name!r} is boolean and cannot be drawn from a range")
            try:
                low, high = (float(b) for b in bounds)
            except (TypeError, ValueError):
                raise ValueError(
                    f"DomainRandomization: range of {name!r} must be (low, high), got {bounds!r}"
                ) from None
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise ValueError(f"DomainRandomization: range of {name!r} must have finite low <= high, got {bounds!r}")
            self._integer[name] = jnp.issubdtype(jnp.asarray(default).dtype, jnp.integer)
        self.ranges = {name: (float(lo), float(hi)) for name, (lo, hi) in ranges.items()}
        self.sample = sample

    def draw(self, key: chex.PRNGKey, params: Any = None) -> Any:
        """One draw of the parameters: `params` (default if None) with the randomised fields replaced."""
        params = self._params(params)
        range_key, sample_key = jax.random.split(key)
        keys = jax.random.split(range_key, max(len(self.ranges), 1))
        drawn = {}
        for k, (name, (low, high)) in zip(keys, sorted(self.ranges.items())):
            if self._integer[name]:
                drawn[name] = jax.random.randint(k, (), int(low), int(high) + 1)
            else:
                drawn[name] = jax.random.uniform(k, (), minval=low, maxval=high)
        params = params.replace(**drawn) if drawn else params
        return self.sample(sample_key, params) if self.sample is not None else params

    @_jit_method
    def reset(self, key: chex.PRNGKey, params: Any = None) -> tuple[Any, DomainRandomizationState]:
        """Draw the parameters of the first episode and reset the inner env with them."""
        draw_key, reset_key = jax.random.split(key)
        drawn = self.draw(draw_key, params)
        return self.reset_with(reset_key, drawn)

    def reset_with(self, key: chex.PRNGKey, drawn: Any) -> tuple[Any, DomainRandomizationState]:
        """Reset the inner env with given (already drawn) parameters."""
        obs, env_state = self._env.reset(key, drawn)
        return obs, DomainRandomizationState(env_state=env_state, params=drawn)

    @_jit_method
    def step(self, key: chex.PRNGKey, state: DomainRandomizationState, action: Any, params: Any = None) -> tuple:
        """Step with the episode's parameters; at an episode end draw new ones for the next episode.

        `info["final_observation"]` is the inner env's, i.e. the last observation under the old
        parameters; the next episode's first observation comes from a reset under the new ones.
        """
        step_key, draw_key, reset_key = jax.random.split(key, 3)
        obs, env_state, reward, terminated, truncated, info = self._env.step(
            step_key, state.env_state, action, state.params
        )
        done = jnp.logical_or(terminated, truncated)
        obs_re, state_re = self.reset_with(reset_key, self.draw(draw_key, params))
        state = _select(done, state_re, DomainRandomizationState(env_state=env_state, params=state.params))
        obs = _select(done, obs_re, obs)
        return obs, state, reward, terminated, truncated, info


# ----------------------------------------------------------------------------------------------
# Trials


class TrialsState(NamedTuple):
    """State of `Trials` for one environment.

    Attributes:
      env_state: the inner env's state.
      trial_key: the key of the trial's first reset; inner episodes restart from it.
      episode: i32[], inner episodes completed in the running trial.
    """

    env_state: Any
    trial_key: chex.PRNGKey
    episode: jax.Array


class Trials(Wrapper):
    """Keep one task for `episodes_per_trial` episodes and show the agent what happened last.

    See the module docstring. Observation: f32[obs_dim + action_dim + 2] = (flattened inner obs,
    previous action (one-hot if discrete), previous reward, previous inner episode end).
    """

    def __init__(self, env: Any, episodes_per_trial: int, terminate_trials: bool = False):
        super().__init__(env)
        if isinstance(episodes_per_trial, bool) or not isinstance(episodes_per_trial, int) or episodes_per_trial < 1:
            raise ValueError(f"episodes_per_trial must be a positive integer, got {episodes_per_trial!r}")
        params = env.default_params
        obs_space = env.observation_space(params)
        act_space = env.action_space(params)
        if not isinstance(obs_space, (spaces.Box, spaces.Discrete)):
            raise ValueError(f"Trials needs a Box or Discrete observation space, got {obs_space!r}")
        if not isinstance(act_space, (spaces.Box, spaces.Discrete)):
            raise ValueError(f"Trials needs a Box or Discrete action space, got {act_space!r}")
        self.episodes_per_trial = episodes_per_trial
        self.terminate_trials = bool(terminate_trials)
        self._discrete = is_discrete(act_space)
        self._action_dim = act_space.n if self._discrete else math.prod(action_shape(act_space))
        self._obs_dim = 1 if isinstance(obs_space, spaces.Discrete) else math.prod(obs_space.shape)

    @property
    def extra_dim(self) -> int:
        """Entries appended to the inner observation: action, reward, episode end."""
        return self._action_dim + 2

    def observation_space(self, params: Any = None) -> spaces.Box:
        """The inner space flattened, then [action in its range, reward (unbounded), flag in {0, 1}]."""
        space = self._env.observation_space(self._params(params))
        if isinstance(space, spaces.Discrete):
            low, high = jnp.zeros((1,)), jnp.full((1,), space.n - 1.0)
        else:
            low = jnp.broadcast_to(jnp.asarray(space.low, jnp.float32), space.shape).reshape(-1)
            high = jnp.broadcast_to(jnp.asarray(space.high, jnp.float32), space.shape).reshape(-1)
        act_space = self._env.action_space(self._params(params))
        if self._discrete:
            act_low, act_high = jnp.zeros((self._action_dim,)), jnp.ones((self._action_dim,))
        else:
            act_low = jnp.broadcast_to(jnp.asarray(act_space.low, jnp.float32), act_space.shape).reshape(-1)
            act_high = jnp.broadcast_to(jnp.asarray(act_space.high, jnp.float32), act_space.shape).reshape(-1)
        low = jnp.concatenate([low, act_low, jnp.array([-jnp.inf, 0.0])]).astype(jnp.float32)
        high = jnp.concatenate([high, act_high, jnp.array([jnp.inf, 1.0])]).astype(jnp.float32)
        return spaces.Box(low, high, (self._obs_dim + self.extra_dim,), jnp.float32)

    def _augment(self, obs: Any, action: Any, reward: Any, done: Any) -> jax.Array:
        """Flattened obs followed by the encoded previous action, reward and episode end."""
        if self._discrete:
            prev_action = jax.nn.one_hot(action, self._action_dim, dtype=jnp.float32)
        else:
            prev_action = jnp.reshape(action, (-1,)).astype(jnp.float32)
        extra = jnp.concatenate(
            [prev_action, jnp.stack([jnp.asarray(reward, jnp.float32), jnp.asarray(done, jnp.float32)])]
        )
        return jnp.concatenate([jnp.reshape(obs, (-1,)).astype(jnp.float32), extra])

    def _blank(self, obs: Any) -> jax.Array:
        """A trial's first observation: nothing happened before it."""
        return jnp.concatenate([jnp.reshape(obs, (-1,)).astype(jnp.float32), jnp.zeros((self.extra_dim,), jnp.float32)])

    @_jit_method
    def reset(self, key: chex.PRNGKey, params: Any = None) -> tuple[jax.Array, TrialsState]:
        """Start a trial: draw its task with the inner reset."""
        obs, env_state = self._env.reset(key, params)
        return self._blank(obs), TrialsState(env_state=env_state, trial_key=key, episode=jnp.int32(0))

    @_jit_method
    def step(self, key: chex.PRNGKey, state: TrialsState, action: Any, params: Any = None) -> tuple:
        """Step the inner env; restart its episode within the trial, or start a new trial after K."""
        step_key, trial_key = jax.random.split(key)
        obs, env_state, reward, terminated, truncated, info = self._env.step(step_key, state.env_state, action, params)
        inner_done = jnp.logical_or(terminated, truncated)
        episode = state.episode + inner_done.astype(jnp.int32)
        trial_end = jnp.logical_and(inner_done, episode >= self.episodes_per_trial)

        obs_restart, state_restart = self._env.reset(state.trial_key, params)  # same task
        obs_trial, state_trial = self._env.reset(trial_key, params)
        within = TrialsState(env_state=env_state, trial_key=state.trial_key, episode=episode)
        within = _select(inner_done, TrialsState(state_restart, state.trial_key, episode), within)
        obs_within = _select(inner_done, obs_restart, obs)
        new_state = _select(trial_end, TrialsState(state_trial, trial_key, jnp.int32(0)), within)
        new_obs = jnp.where(trial_end, self._blank(obs_trial), self._augment(obs_within, action, reward, inner_done))

        if self.terminate_trials:
            out_terminated, out_truncated = trial_end, jnp.zeros_like(trial_end)
        else:
            out_terminated = jnp.logical_and(trial_end, terminated)
            out_truncated = jnp.logical_and(trial_end, truncated)
        info = {
            **info,
            "terminated": out_terminated,
            "truncated": out_truncated,
            "inner_terminated": terminated,
            "inner_truncated": truncated,
            "trial_episode": episode,
            "final_observation": self._augment(info["final_observation"], action, reward, inner_done),
        }
        return new_obs, new_state, reward, out_terminated, out_truncated, info


# ----------------------------------------------------------------------------------------------
# Task distributions by id


def uniform_bernoulli_bandit() -> DomainRandomization:
    """gymnax's BernoulliBandit-misc with `reward_prob ~ U(0, 1)` per episode: arms `(p, 1 - p)`,
    `p ~ U(0, 1)` (its reset picks `p` or `1 - p` for the first arm), 100 pulls per episode."""
    import gymnax

    env, _ = gymnax.make("BernoulliBandit-misc")
    return DomainRandomization(env, {"reward_prob": (0.0, 1.0)})


register("BernoulliBandit-uniform-misc", uniform_bernoulli_bandit)
