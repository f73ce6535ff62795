"""Craftax behind gymnax's interface: `envs.make("craftax/Craftax-Symbolic-v1")`.

Craftax is gymnax-style already but predates gymnax 1.0: `step` returns one `done`, which is
`timestep >= max_timesteps | dead | (boss beaten, Craftax only; in lava, Classic only)`, and its
automatic reset (the `*AutoReset*` env classes) splits the step key into `key_step, key_reset`,
steps with the first and resets with the second. The adapter steps and resets exactly so (on the
suite's no-auto-reset class, whose `step_env`/`reset_env` are the same code) and splits `done`
into its parts, with the suite's own `is_terminal`:

  truncated  = state.timestep >= max_timesteps   (the time limit)
  terminated = is_terminal(state, params with no time limit)   (death, lava, the boss)

Both hold when the two coincide, as in gymnax. Rewards, observations and the per-step info
(achievements, discount) are the suite's. Ids: Craftax-Symbolic-v1, Craftax-Pixels-v1,
Craftax-Classic-Symbolic-v1, Craftax-Classic-Pixels-v1. Parameters: `SuiteParams` with Craftax's
`EnvParams` in `suite_params`; `max_steps_in_episode` is its `max_timesteps` (Craftax: 100,000,
Classic: 10,000) and a changed value is used. `envs.make` arguments: any `EnvParams` field
(`max_timesteps=...`, `day_length=...`), plus `flatten` and `obs_key` (see `envs.suites.base`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from craftax.craftax_env import make_craftax_env_from_name
from gymnax.environments import spaces

from envs.suites.base import ObservationFormat, SuiteEnv, SuiteParams, SuiteStep, select_tree

IDS = ("Craftax-Symbolic-v1", "Craftax-Pixels-v1", "Craftax-Classic-Symbolic-v1", "Craftax-Classic-Pixels-v1")
_NO_TIME_LIMIT = int(jnp.iinfo(jnp.int32).max)


def ids() -> list[str]:
    """Craftax's env names (without the "craftax/" prefix)."""
    return list(IDS)


def make(name: str, *, flatten: bool = True, obs_key: str | None = None, **kwargs: Any) -> CraftaxEnv:
    """Craftax's env `name` (its no-auto-reset class) behind gymnax's interface."""
    if name not in IDS:
        raise ValueError(f"unknown craftax env {name!r}; craftax ids are {', '.join(IDS)}")
    suite_env = make_craftax_env_from_name(name, auto_reset=False)
    suite_params = suite_env.default_params
    unknown = sorted(set(kwargs) - set(suite_params.__dataclass_fields__))
    if unknown:
        raise ValueError(
            f"craftax/{name} has no parameter(s) {unknown}; its EnvParams fields are "
            f"{sorted(suite_params.__dataclass_fields__)}"
        )
    return CraftaxEnv(name, suite_env, suite_params.replace(**kwargs), ObservationFormat(flatten, obs_key))


class CraftaxEnv(SuiteEnv):
    """One Craftax environment; state: Craftax's `EnvState`."""

    suite = "craftax"
    limit_argument = "max_timesteps"

    def __init__(self, name: str, suite_env: Any, suite_params: Any, obs_format: ObservationFormat):
        super().__init__(f"craftax/{name}", suite_env, obs_format)
        self._suite_params = suite_params

    @property
    def default_params(self) -> SuiteParams:
        """Craftax's EnvParams, with its `max_timesteps` as `max_steps_in_episode`."""
        return SuiteParams(max_steps_in_episode=int(self._suite_params.max_timesteps), suite_params=self._suite_params)

    def action_space(self, params: SuiteParams | None = None) -> spaces.Discrete:
        """Craftax's discrete actions."""
        return spaces.Discrete(int(self.suite_env.num_actions))

    def _raw_bounds(self, params: SuiteParams, raw_obs: Any) -> tuple[Any, Any]:
        space = self.suite_env.observation_space(self._craftax_params(params))
        return space.low, space.high

    def _craftax_params(self, params: SuiteParams) -> Any:
        """Craftax's EnvParams with our time limit."""
        return params.suite_params.replace(max_timesteps=params.max_steps_in_episode)

    def _suite_reset(self, key: jax.Array, params: SuiteParams) -> tuple[Any, Any]:
        return self.suite_env.reset_env(key, self._craftax_params(params))

    def _suite_step(self, key: jax.Array, state: Any, action: Any, params: SuiteParams) -> SuiteStep:
        env, craftax_params = self.suite_env, self._craftax_params(params)
        key_step, key_reset = jax.random.split(key)  # as Craftax's EnvironmentAutoReset.step
        obs_st, state_st, reward, done, info = env.step_env(key_step, state, action, craftax_params)
        obs_re, state_re = env.reset_env(key_reset, craftax_params)
        truncated = state_st.timestep >= craftax_params.max_timesteps
        terminated = env.is_terminal(state_st, craftax_params.replace(max_timesteps=_NO_TIME_LIMIT))
        return SuiteStep(
            raw_obs=select_tree(done, obs_re, obs_st),
            state=select_tree(done, state_re, state_st),
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            raw_final_obs=obs_st,
            info=info,
        )
