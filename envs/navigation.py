"""2-D navigation to a goal on a semicircle: the task distribution of MAML's 2-D navigation.

Finn et al. (2017, arXiv:1703.03400, sec. 5.3): a point agent moves in the plane by velocity
commands clipped to [-0.1, 0.1] per axis, observes its own 2-D position (not the goal), and is
rewarded by its distance to the goal; each task is one goal. Here, as in the issue and in the
later meta-RL literature (ProMP, Rothfuss et al., 2019; gymnax's PointRobot-misc), the goals lie on
the upper unit semicircle (angle ~ U[0, pi]), the reward is ``-||pos_{t+1} - goal||`` (the paper
used the squared distance and goals in a unit square), every episode starts at the origin and lasts
exactly ``max_steps_in_episode = 100`` steps (truncated by the time limit; the paper also
terminated within 0.01 of the goal, which cuts little off and makes episodes unequal in length).

Why not gymnax's ``PointRobot-misc``: it draws a new goal at every reset (a task cannot be kept
across the pre- and post-adaptation rollouts MAML needs), starts at a random point, pays a sparse
reward by default, and puts the last reward into the observation (an RL² observation).

The task is the goal, held in the env parameters: ``sample_task(key, params)`` returns the
parameters of a task drawn from the distribution, so a batch of tasks is a batch of parameters
and vmaps like anything else. Id: ``Navigation2D-v0`` (default goal (0, 1)).

Analytic answers: from the origin at full speed (0.1 per step along the goal direction) the goal
is reached after 10 steps, so the best return is ``-(0.9 + 0.8 + ... + 0.1 + 0) = -4.5``; standing
still earns ``-100``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from envs.registry import register

ENV_ID = "Navigation2D-v0"


@struct.dataclass
class NavigationState(environment.EnvState):
    """`pos` f32[2] the agent's position, `time` i32[] steps taken in this episode."""

    pos: jax.Array
    time: jax.Array


@struct.dataclass
class NavigationParams(environment.EnvParams):
    """One task: its goal, plus the dynamics every task shares."""

    goal: jax.Array = struct.field(default_factory=lambda: jnp.array([0.0, 1.0], jnp.float32))  # f32[2]
    max_speed: float = 0.1  # each action coordinate is clipped to [-max_speed, max_speed]
    goal_radius: float = 1.0  # radius of the semicircle the goals are drawn on
    max_steps_in_episode: int = 100


class Navigation2D(environment.Environment[NavigationState, NavigationParams]):
    """Move a point from the origin towards an unseen goal; reward ``-||pos - goal||`` per step."""

    @property
    def default_params(self) -> NavigationParams:
        return NavigationParams()

    def sample_task(self, key: jax.Array, params: NavigationParams) -> NavigationParams:
        """A task of the distribution: ``params`` with a goal at angle ~ U[0, pi] on the semicircle."""
        angle = jax.random.uniform(key, minval=0.0, maxval=jnp.pi)
        goal = params.goal_radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)])
        return params.replace(goal=goal.astype(jnp.float32))

    def reset_env(self, key: jax.Array, params: NavigationParams) -> tuple[jax.Array, NavigationState]:
        state = NavigationState(pos=jnp.zeros(2, jnp.float32), time=jnp.int32(0))
        return state.pos, state

    def step_env(self, key: jax.Array, state: NavigationState, action: Any, params: NavigationParams):
        velocity = jnp.clip(jnp.asarray(action, jnp.float32), -params.max_speed, params.max_speed)
        pos = state.pos + velocity
        reward = -jnp.linalg.norm(pos - params.goal)
        state = NavigationState(pos=pos, time=state.time + 1)
        return pos, state, reward.astype(jnp.float32), jnp.array(False), {}

    def is_terminated(self, state: NavigationState, params: NavigationParams) -> jax.Array:
        return jnp.array(False)

    @property
    def name(self) -> str:
        return ENV_ID

    @property
    def num_actions(self) -> int:
        return 2

    def action_space(self, params: NavigationParams | None = None) -> spaces.Box:
        params = self.default_params if params is None else params
        high = jnp.full((2,), params.max_speed, jnp.float32)
        return spaces.Box(-high, high, (2,), jnp.float32)

    def observation_space(self, params: NavigationParams) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, (2,), jnp.float32)


register(ENV_ID, Navigation2D)
