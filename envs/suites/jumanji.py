"""Jumanji behind gymnax's interface: `envs.make("jumanji/Snake-v1")`.

Jumanji's loop is dm_env's: `state, timestep = env.step(state, action)`; an episode ends when
`timestep.last()`, with `discount == 0` for a termination and `discount > 0` for a truncation.
Its automatic reset (`jumanji.wrappers.AutoResetWrapper`) resets from
`jax.random.split(state.key)[0]` on the ending step and replaces the observation; the adapter does
exactly that and keeps the replaced observation in `info["final_observation"]`.

Time limits: most Jumanji envs end an episode when `state.step_count >= env.time_limit` and report
it with `termination` (discount 0), although nothing terminal happened. Where an env has both
(`time_limit` and a `step_count` in its state) the adapter reports such an end as a truncation:

  truncated  = last & (discount > 0  or  step_count >= time_limit)
  terminated = last & discount == 0 & not (step_count >= time_limit)

(an end for another reason on the very step the time limit is reached is then reported as a
truncation only: the suite's TimeStep cannot tell the two apart). Rewards and observations are the
suite's. Single-agent envs only (scalar reward). Actions: `DiscreteArray(n)` -> `Discrete(n)`;
`MultiDiscreteArray(num_values)` -> `Discrete(prod(num_values))`, the joint index unravelled in
C order; a float `BoundedArray` -> `Box`. Observation bounds come from the observation spec.

`envs.make` arguments: the env class's own (`time_limit=...`, `num_rows=...`, ...), plus
`flatten` and `obs_key` (see `envs.suites.base`). The state is Jumanji's; it keeps its own key, so
`step`'s key is unused.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import jumanji
import numpy as np
from gymnax.environments import spaces
from jumanji import specs

from envs.suites.base import ObservationFormat, SuiteEnv, SuiteParams, SuiteStep


def ids() -> list[str]:
    """Jumanji's registered env ids (without the "jumanji/" prefix)."""
    return sorted(jumanji.registered_environments())


def make(name: str, *, flatten: bool = True, obs_key: str | None = None, **kwargs: Any) -> JumanjiEnv:
    """`jumanji.make(name, **kwargs)` behind gymnax's interface."""
    return JumanjiEnv(name, jumanji.make(name, **kwargs), ObservationFormat(flatten, obs_key))


class JumanjiEnv(SuiteEnv):
    """One single-agent Jumanji environment; state: Jumanji's `State`."""

    suite = "jumanji"
    limit_argument = "time_limit"

    def __init__(self, name: str, suite_env: Any, obs_format: ObservationFormat):
        super().__init__(f"jumanji/{name}", suite_env, obs_format)
        reward_shape = tuple(suite_env.reward_spec.shape)
        if reward_shape != ():
            raise ValueError(
                f"jumanji/{name} is multi-agent (reward shape {reward_shape}); the agents here take one "
                "scalar reward per env, so only single-agent Jumanji envs are adapted"
            )
        self._action_spec = suite_env.action_spec
        if not isinstance(self._action_spec, (specs.DiscreteArray, specs.MultiDiscreteArray, specs.BoundedArray)):
            raise ValueError(
                f"jumanji/{name} has action spec {self._action_spec!r}; the adapter takes DiscreteArray, "
                "MultiDiscreteArray or a float BoundedArray"
            )

    @property
    def default_params(self) -> SuiteParams:
        """The env's `time_limit` (set when it is built), None when it has none."""
        limit = getattr(self.suite_env, "time_limit", None)
        return SuiteParams(max_steps_in_episode=None if limit is None else int(limit))

    def action_space(self, params: SuiteParams | None = None) -> spaces.Space:
        """Discrete(n), Discrete(prod(num_values)) for a MultiDiscreteArray, or Box."""
        spec = self._action_spec
        if isinstance(spec, specs.DiscreteArray):
            return spaces.Discrete(int(spec.num_values))
        if isinstance(spec, specs.MultiDiscreteArray):
            return spaces.Discrete(int(math.prod(np.asarray(spec.num_values).reshape(-1).tolist())))
        if not jnp.issubdtype(spec.dtype, jnp.floating):
            raise ValueError(f"{self.name}: integer BoundedArray actions {spec!r} are not supported")
        low = np.broadcast_to(np.asarray(spec.minimum, np.float32), spec.shape)
        high = np.broadcast_to(np.asarray(spec.maximum, np.float32), spec.shape)
        return spaces.Box(jnp.asarray(low), jnp.asarray(high), tuple(spec.shape), jnp.float32)

    def _suite_action(self, action: jax.Array) -> jax.Array:
        """The agent's action in the form the env's action spec asks for."""
        spec = self._action_spec
        if isinstance(spec, specs.DiscreteArray):
            return jnp.asarray(action, spec.dtype)
        if isinstance(spec, specs.MultiDiscreteArray):
            num_values = tuple(np.asarray(spec.num_values).reshape(-1).tolist())
            parts = jnp.unravel_index(jnp.asarray(action, jnp.int32), num_values)
            return jnp.reshape(jnp.stack(parts).astype(spec.dtype), spec.shape)
        return jnp.asarray(action, spec.dtype)

    def _raw_bounds(self, params: SuiteParams, raw_obs: Any) -> tuple[Any, Any]:
        spec = self.suite_env.observation_spec
        return _spec_bound(spec, low=True), _spec_bound(spec, low=False)

    def _suite_reset(self, key: jax.Array, params: SuiteParams) -> tuple[Any, Any]:
        self._check_fixed_limit(params)
        state, timestep = self.suite_env.reset(key)
        return timestep.observation, state

    def _suite_step(self, key: jax.Array, state: Any, action: Any, params: SuiteParams) -> SuiteStep:
        del key  # Jumanji steps (and resets) from the key in its state
        self._check_fixed_limit(params)
        env = self.suite_env
        reached_state, timestep = env.step(state, self._suite_action(action))
        ended = timestep.last()

        def auto_reset(reached: Any) -> tuple[Any, Any]:  # AutoResetWrapper._auto_reset
            reset_key, _ = jax.random.split(reached.key)
            reset_state, reset_timestep = env.reset(reset_key)
            return reset_state, reset_timestep.observation

        next_state, next_obs = jax.lax.cond(
            ended, auto_reset, lambda reached: (reached, timestep.observation), reached_state
        )
        time_up = self._time_up(reached_state)
        cut = jnp.logical_or(timestep.discount > 0, time_up)
        return SuiteStep(
            raw_obs=next_obs,
            state=next_state,
            reward=timestep.reward,
            terminated=ended & ~cut,
            truncated=ended & cut,
            raw_final_obs=timestep.observation,
            info=dict(timestep.extras),
        )

    def _time_up(self, reached_state: Any) -> jax.Array:
        """Whether the state an episode reached is at the env's time limit (False without one)."""
        limit = getattr(self.suite_env, "time_limit", None)
        if limit is None or not hasattr(reached_state, "step_count"):
            return jnp.asarray(False)
        return reached_state.step_count >= limit


def _spec_bound(spec: Any, low: bool) -> Any:
    """A pytree like the spec's values holding each leaf's minimum (low) or maximum."""
    if isinstance(spec, specs.Array):
        if isinstance(spec, specs.DiscreteArray):
            # A step counter's spec is DiscreteArray(time_limit), but the observation an episode
            # ends on at the time limit holds time_limit itself (Snake, Tetris): allow it.
            value = 0 if low else spec.num_values - (spec.name != "step_count")
        elif isinstance(spec, specs.MultiDiscreteArray):
            value = 0 if low else np.asarray(spec.num_values) - 1
        elif isinstance(spec, specs.BoundedArray):
            value = spec.minimum if low else spec.maximum
        else:
            value = -np.inf if low else np.inf
        return np.broadcast_to(np.asarray(value, np.float32), spec.shape)
    children = {name: _spec_bound(child, low) for name, child in spec._specs.items()}
    return spec._constructor(**children)  # the same constructor Spec.generate_value uses
