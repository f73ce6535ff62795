"""Brax (and its MJX backend) behind gymnax's interface: `envs.make("brax/ant")`.

Brax's training loop (`brax.envs.create(name, episode_length, action_repeat)`) stacks two
wrappers on the env: `EpisodeWrapper` ends an episode after `episode_length` steps and marks that
end `info["truncation"] = 1` unless the env was done by itself on the same step; `AutoResetWrapper`
then puts the env back in the state *its first reset* produced (Brax's reset is not drawn again)
and replaces the observation. The adapter runs that very stack with one wrapper of its own in
between, which copies the observation into the state's info before `AutoResetWrapper` replaces it:

  truncated = info["truncation"] == 1,  terminated = done & not truncated,
  info["final_observation"] = the observation before the reset.

Rewards, observations and the reset states are Brax's own. Brax's step takes no key: `step`'s key
is unused. Actions: `Box(-1, 1, (action_size,))`. `envs.make` arguments: `episode_length` (default
1000, Brax's), `action_repeat` (default 1), the env class's own (`backend="mjx"` for the MJX
pipeline, `"generalized"`, `"positional"` or `"spring"`), plus `flatten` and `obs_key` (see
`envs.suites.base`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from brax import envs as brax_envs
from brax.envs.wrappers import training
from gymnax.environments import spaces

from envs.suites.base import ObservationFormat, SuiteEnv, SuiteParams, SuiteStep

_FINAL_OBS = "final_observation"


def ids() -> list[str]:
    """Brax's registered env names (without the "brax/" prefix)."""
    return sorted(brax_envs._envs)


def make(
    name: str,
    *,
    episode_length: int = 1000,
    action_repeat: int = 1,
    flatten: bool = True,
    obs_key: str | None = None,
    **kwargs: Any,
) -> BraxEnv:
    """`brax.envs.get_environment(name, **kwargs)` with Brax's training wrappers, gymnax-style."""
    if name not in brax_envs._envs:
        raise ValueError(f"unknown brax env {name!r}; brax envs are {', '.join(ids())}")
    if episode_length < 1 or action_repeat < 1:
        raise ValueError(f"episode_length and action_repeat must be >= 1, got {episode_length}, {action_repeat}")
    suite_env = brax_envs.get_environment(name, **kwargs)
    return BraxEnv(name, suite_env, episode_length, action_repeat, ObservationFormat(flatten, obs_key))


class _KeepFinalObservation(brax_envs.Wrapper):
    """Copy each step's observation into `info` before `AutoResetWrapper` may replace it."""

    def reset(self, rng: jax.Array) -> Any:
        state = self.env.reset(rng)
        state.info[_FINAL_OBS] = state.obs
        return state

    def step(self, state: Any, action: jax.Array) -> Any:
        state = self.env.step(state, action)
        state.info[_FINAL_OBS] = state.obs
        return state


class BraxEnv(SuiteEnv):
    """One Brax environment with Brax's episode and auto-reset wrappers; state: Brax's `State`."""

    suite = "brax"
    limit_argument = "episode_length"

    def __init__(
        self, name: str, suite_env: Any, episode_length: int, action_repeat: int, obs_format: ObservationFormat
    ):
        super().__init__(f"brax/{name}", suite_env, obs_format)
        self.episode_length = int(episode_length)
        self.action_repeat = int(action_repeat)
        episodes = training.EpisodeWrapper(suite_env, self.episode_length, self.action_repeat)
        self._wrapped = training.AutoResetWrapper(_KeepFinalObservation(episodes))

    @property
    def default_params(self) -> SuiteParams:
        """Brax's `episode_length` (set when the env is built)."""
        return SuiteParams(max_steps_in_episode=self.episode_length)

    def action_space(self, params: SuiteParams | None = None) -> spaces.Box:
        """Box(-1, 1, (action_size,)), Brax's action range."""
        return spaces.Box(-1.0, 1.0, (int(self.suite_env.action_size),), jnp.float32)

    def _suite_reset(self, key: jax.Array, params: SuiteParams) -> tuple[Any, Any]:
        self._check_fixed_limit(params)
        state = self._wrapped.reset(key)
        return state.obs, state

    def _suite_step(self, key: jax.Array, state: Any, action: Any, params: SuiteParams) -> SuiteStep:
        del key  # Brax's step is deterministic
        self._check_fixed_limit(params)
        state = self._wrapped.step(state, jnp.asarray(action, jnp.float32))
        truncated = state.info["truncation"] > 0
        return SuiteStep(
            raw_obs=state.obs,
            state=state,
            reward=state.reward,
            terminated=(state.done > 0) & ~truncated,
            truncated=truncated,
            raw_final_obs=state.info[_FINAL_OBS],
            info=dict(state.metrics),
        )
