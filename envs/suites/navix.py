"""navix (MiniGrid in JAX) behind gymnax's interface: `envs.make("navix/Navix-Empty-5x5-v0")`.

navix's own loop: `timestep = env.step(timestep, action)`, where `timestep.step_type` is 0
(transition), 1 (truncation: `t >= max_steps`) or 2 (termination; it wins when both hold). Its
automatic reset is lazy: the step *after* an episode end ignores the action and returns
`env.reset(timestep.state.key, timestep.state.cache)`. The adapter does that reset on the
ending step itself, so no step is spent on it, and keeps the ending observation in
`info["final_observation"]`:

  terminated = step_type == 2,  truncated = step_type == 1,  same rewards and observations.

The state is navix's `Timestep`; navix keeps its own key in it, so `step`'s key is unused.
`envs.make` arguments: `max_steps` (navix's default 100) and navix's own keyword arguments
(`observation_fn=navix.observations.rgb`, `reward_fn`, ...), plus `flatten` and `obs_key` (see
`envs.suites.base`).
"""

from __future__ import annotations

from typing import Any

import jax
import navix
import numpy as np
from gymnax.environments import spaces

from envs.suites.base import ObservationFormat, SuiteEnv, SuiteParams, SuiteStep

TRUNCATION = 1
TERMINATION = 2


def ids() -> list[str]:
    """navix's registered env names (without the "navix/" prefix)."""
    return sorted(navix.registry())


def make(name: str, *, flatten: bool = True, obs_key: str | None = None, **kwargs: Any) -> NavixEnv:
    """`navix.make(name, **kwargs)` behind gymnax's interface."""
    return NavixEnv(name, navix.make(name, **kwargs), ObservationFormat(flatten, obs_key))


class NavixEnv(SuiteEnv):
    """One navix environment; state: navix's `Timestep`, never a finished one."""

    suite = "navix"
    limit_argument = "max_steps"

    def __init__(self, name: str, suite_env: Any, obs_format: ObservationFormat):
        super().__init__(f"navix/{name}", suite_env, obs_format)

    @property
    def default_params(self) -> SuiteParams:
        """navix's time limit (`max_steps`, set when the env is built)."""
        return SuiteParams(max_steps_in_episode=int(self.suite_env.max_steps))

    def action_space(self, params: SuiteParams | None = None) -> spaces.Discrete:
        """navix's actions 0 .. maximum."""
        return spaces.Discrete(int(self.suite_env.action_space.maximum) + 1)

    def _raw_bounds(self, params: SuiteParams, raw_obs: Any) -> tuple[Any, Any]:
        # navix's observation_space states 0 .. 8 for its symbolic observation, which holds entity
        # ids up to 10 (the agent's): keep its lower bound and leave the upper one open.
        return self.suite_env.observation_space.minimum, np.inf

    def _suite_reset(self, key: jax.Array, params: SuiteParams) -> tuple[Any, Any]:
        self._check_fixed_limit(params)
        timestep = self.suite_env.reset(key)
        return timestep.observation, timestep

    def _suite_step(self, key: jax.Array, state: Any, action: Any, params: SuiteParams) -> SuiteStep:
        del key  # navix steps from the key in its state
        self._check_fixed_limit(params)
        env = self.suite_env
        reached = env.step(state, action)  # `state` never ended, so this is navix's plain step
        done = reached.step_type > 0
        # navix's next step would return this reset; take it now (what navix's step does when done).
        following = jax.lax.cond(done, lambda t: env.reset(t.state.key, t.state.cache), lambda t: t, reached)
        return SuiteStep(
            raw_obs=following.observation,
            state=following,
            reward=reached.reward,
            terminated=reached.step_type == TERMINATION,
            truncated=reached.step_type == TRUNCATION,
            raw_final_obs=reached.observation,
            info={},
        )
