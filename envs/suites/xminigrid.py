"""XLand-MiniGrid behind gymnax's interface: `envs.make("xminigrid/XLand-MiniGrid-R1-9x9")`.

XLand-MiniGrid's loop: `timestep = env.step(params, timestep, action)`. Its step says both kinds of
episode end itself: `terminated` (the goal is reached; `discount = 0`) and `truncated`
(`step_num == params.max_steps`); `step_type` is LAST when either holds. Its gym-style automatic
reset (`xminigrid.wrappers.GymAutoResetWrapper`) resets from `jax.random.split(state.key)[0]` on
the ending step and replaces the timestep's state and observation. The adapter does exactly that
and keeps the replaced observation in `info["final_observation"]`:

  terminated = last & discount == 0,   truncated = state.step_num == max_steps   (both may hold)

The state is XLand-MiniGrid's `TimeStep` (it keeps its own key, so `step`'s key is unused).
Observations: the agent's view, uint8 `[view, view, 2]` (tile id, colour id), bounded by the
number of tiles and colours. Parameters: `SuiteParams` with XLand-MiniGrid's `EnvParams` in
`suite_params`; `max_steps_in_episode` is its `max_steps` and a changed value is used.

XLand envs play the ruleset in their parameters: the registered default is an empty ruleset
whose goal is never reached (no reward); pass one, e.g. from a benchmark that you downloaded
(`xminigrid.load_benchmark(...)`, which fetches data), as `envs.make(id, ruleset=...)`. The
MiniGrid-* ids need no ruleset. `envs.make` arguments: any `EnvParams` field (`max_steps`,
`view_size`, `ruleset`, ...), plus `flatten` and `obs_key` (see `envs.suites.base`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import xminigrid
from gymnax.environments import spaces
from xminigrid.core.constants import NUM_COLORS, NUM_TILES

from envs.suites.base import ObservationFormat, SuiteEnv, SuiteParams, SuiteStep


def ids() -> list[str]:
    """XLand-MiniGrid's registered env ids (without the "xminigrid/" prefix)."""
    return list(xminigrid.registered_environments())


def make(name: str, *, flatten: bool = True, obs_key: str | None = None, **kwargs: Any) -> XMiniGridEnv:
    """`xminigrid.make(name, **kwargs)` behind gymnax's interface."""
    suite_env, suite_params = xminigrid.make(name, **kwargs)
    return XMiniGridEnv(name, suite_env, suite_params, ObservationFormat(flatten, obs_key))


class XMiniGridEnv(SuiteEnv):
    """One XLand-MiniGrid environment; state: its `TimeStep`."""

    suite = "xminigrid"
    limit_argument = "max_steps"

    def __init__(self, name: str, suite_env: Any, suite_params: Any, obs_format: ObservationFormat):
        super().__init__(f"xminigrid/{name}", suite_env, obs_format)
        self._suite_params = suite_params

    @property
    def default_params(self) -> SuiteParams:
        """XLand-MiniGrid's EnvParams, with its `max_steps` as `max_steps_in_episode`."""
        return SuiteParams(max_steps_in_episode=int(self._suite_params.max_steps), suite_params=self._suite_params)

    def action_space(self, params: SuiteParams | None = None) -> spaces.Discrete:
        """XLand-MiniGrid's discrete actions."""
        params = self._params(params)
        return spaces.Discrete(int(self.suite_env.num_actions(params.suite_params)))

    def _raw_bounds(self, params: SuiteParams, raw_obs: Any) -> tuple[Any, Any]:
        if not hasattr(raw_obs, "shape"):  # an observation wrapper made it a dict: no stated bounds
            return super()._raw_bounds(params, raw_obs)
        high = np.broadcast_to(np.asarray([NUM_TILES - 1, NUM_COLORS - 1], np.float32), raw_obs.shape)
        return np.zeros(raw_obs.shape, np.float32), high

    def _xminigrid_params(self, params: SuiteParams) -> Any:
        """XLand-MiniGrid's EnvParams with our time limit."""
        return params.suite_params.replace(max_steps=params.max_steps_in_episode)

    def _suite_reset(self, key: jax.Array, params: SuiteParams) -> tuple[Any, Any]:
        timestep = self.suite_env.reset(self._xminigrid_params(params), key)
        return timestep.observation, timestep

    def _suite_step(self, key: jax.Array, state: Any, action: Any, params: SuiteParams) -> SuiteStep:
        del key  # XLand-MiniGrid steps (and resets) from the key in its state
        env, xparams = self.suite_env, self._xminigrid_params(params)
        reached = env.step(xparams, state, action)

        def auto_reset(timestep: Any) -> Any:  # GymAutoResetWrapper.__auto_reset
            reset_key, _ = jax.random.split(timestep.state.key)
            reset = env.reset(xparams, reset_key)
            return timestep.replace(state=reset.state, observation=reset.observation)

        following = jax.lax.cond(reached.last(), auto_reset, lambda timestep: timestep, reached)
        return SuiteStep(
            raw_obs=following.observation,
            state=following,
            reward=reached.reward,
            terminated=reached.last() & (reached.discount == 0),
            truncated=jnp.equal(reached.state.step_num, xparams.max_steps),
            raw_final_obs=reached.observation,
            info={},
        )
