"""Probe environments: tiny gymnax envs whose values and optimal policies are known analytically.

They isolate one piece of an agent at a time (value fitting, obs dependence, discounting, credit
assignment to actions, truncation bootstrapping, continuous actions). Ids and answers:

  id                         obs            episode                      answer
  Probe-OneStep-v0           [0]            1 step, r = +1               V = 1
  Probe-ObsReward-v0         [+1] or [-1]   1 step, r = obs              V(obs) = obs
  Probe-Discount-v0          [0] then [1]   2 steps, r = 0 then +1       V([0]) = gamma, V([1]) = 1
  Probe-ActionReward-v0      one-hot(bit)   1 step, r = +-1 (a == bit)   pi(obs) = bit
  Probe-Truncation-v0        [0]            r = +1, truncated at t = 5   V = 1 / (1 - gamma)
  Probe-ContinuousAction-v0  ~ U[-1, 1]     1 step, r = -(a - obs)^2     mean action = obs
  Probe-CoinFlip-v0          [1]            1 step, r = +1 or -1 (p 1/2) V = 0, return law {-1, +1}
  Probe-Memory-v0            [+-1] then [0] 4 steps, r = +-1 (a_3 == bit)  return 1 with memory, 0 without
                                            at the last step, else 0
  Probe-TaskBit-v0           [1]            1 step, r = +-1 (a == task)  return 0 before adapting to
                                            (task: a bit in the params)   the task, 1 after

Probe-TaskBit-v0 is a task distribution (``sample_task(key, params)``, as ``envs.navigation``): the
rewarded action is a fair bit drawn per task and nothing in the observation shows it. Averaged over
tasks every fixed policy returns exactly 0; only adapting to the task's rewards (MAML's inner
steps) earns more.

All observations are f32; every episode above ends by termination except Probe-Truncation-v0's.
Envs whose only action does not matter use `Discrete(1)`. Terminating probes set
`max_steps_in_episode` high enough that they are never also truncated; Probe-Truncation-v0 is
truncated by gymnax's time limit (`state.time >= params.max_steps_in_episode`, default 5).
All probes are registered in `envs` at import.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from envs.registry import register

StepOutput = tuple[jax.Array, Any, jax.Array, jax.Array, dict[str, jax.Array]]


@struct.dataclass
class ProbeState(environment.EnvState):
    """State of a probe env: `time` i32[] steps taken, `obs` f32[obs_dim] current observation."""

    time: jax.Array
    obs: jax.Array


@struct.dataclass
class ProbeParams(environment.EnvParams):
    """Probe parameters: episodes are truncated when `time >= max_steps_in_episode`."""

    max_steps_in_episode: int = 10


class ProbeEnv(environment.Environment[ProbeState, ProbeParams]):
    """Shared machinery; subclasses set `env_id`, `obs_dim`, define `_initial_obs`/`step_env`."""

    env_id: str = ""
    obs_dim: int = 1
    obs_low: float = -1.0
    obs_high: float = 1.0

    @property
    def default_params(self) -> ProbeParams:
        """Default parameters (terminating probes are never truncated)."""
        return ProbeParams()

    @property
    def name(self) -> str:
        """The registered id."""
        return self.env_id

    @property
    def num_actions(self) -> int:
        """Number of discrete actions (the action dimension for a Box action space)."""
        return 1

    def action_space(self, params: ProbeParams | None = None) -> spaces.Space:
        """A single, irrelevant action unless a subclass says otherwise."""
        return spaces.Discrete(self.num_actions)

    def observation_space(self, params: ProbeParams | None = None) -> spaces.Box:
        """Box of shape (obs_dim,) in [obs_low, obs_high]."""
        return spaces.Box(self.obs_low, self.obs_high, (self.obs_dim,), jnp.float32)

    def is_truncated(self, state: ProbeState, params: ProbeParams) -> jax.Array:
        """The time limit: truncated once `time >= params.max_steps_in_episode`."""
        return state.time >= params.max_steps_in_episode

    def reset_env(self, key: jax.Array, params: ProbeParams) -> tuple[jax.Array, ProbeState]:
        """Start at time 0 with `_initial_obs(key)`."""
        obs = self._initial_obs(key)
        return obs, ProbeState(time=jnp.zeros((), jnp.int32), obs=obs)

    def _initial_obs(self, key: jax.Array) -> jax.Array:
        """f32[obs_dim] first observation; zeros unless overridden."""
        del key
        return jnp.zeros((self.obs_dim,), jnp.float32)

    def _one_step_end(self, state: ProbeState, reward: jax.Array) -> StepOutput:
        """Terminate after one step with `reward`; the observation does not change."""
        return _transition(state.obs, state, reward, terminated=jnp.array(True))


def _transition(obs: jax.Array, state: ProbeState, reward: jax.Array, terminated: jax.Array) -> StepOutput:
    """Advance time, store `obs` and return gymnax's `step_env` 5-tuple (with a `discount` info)."""
    next_state = ProbeState(time=state.time + 1, obs=obs)
    reward = jnp.asarray(reward, jnp.float32)
    info = {"discount": 1.0 - terminated.astype(jnp.float32)}
    return obs, next_state, reward, terminated, info


class OneStepProbe(ProbeEnv):
    """Probe-OneStep-v0: obs [0], one step, reward +1, terminated. V = 1."""

    env_id = "Probe-OneStep-v0"

    def step_env(self, key: jax.Array, state: ProbeState, action: Any, params: ProbeParams) -> StepOutput:
        """Reward +1 and terminate."""
        return self._one_step_end(state, jnp.array(1.0))


class ObsRewardProbe(ProbeEnv):
    """Probe-ObsReward-v0: obs +-1 at random, one step, reward = obs, terminated. V(obs) = obs."""

    env_id = "Probe-ObsReward-v0"

    def _initial_obs(self, key: jax.Array) -> jax.Array:
        """[+1] or [-1] with probability 1/2 each."""
        sign = jnp.where(jax.random.bernoulli(key), 1.0, -1.0)
        return jnp.full((1,), sign, jnp.float32)

    def step_env(self, key: jax.Array, state: ProbeState, action: Any, params: ProbeParams) -> StepOutput:
        """Reward = obs and terminate."""
        return self._one_step_end(state, state.obs[0])


class DiscountProbe(ProbeEnv):
    """Probe-Discount-v0: obs [0] then [1]; reward 0 then +1; terminated after the second step.

    V([0]) = gamma, V([1]) = 1. The terminal observation (in info["final_observation"]) is [2].
    """

    env_id = "Probe-Discount-v0"
    obs_low = 0.0
    obs_high = 2.0

    def step_env(self, key: jax.Array, state: ProbeState, action: Any, params: ProbeParams) -> StepOutput:
        """obs = [time + 1]; reward +1 and terminate on the second step."""
        time = state.time + 1
        second = time >= 2
        obs = jnp.full((1,), time, jnp.float32)
        return _transition(obs, state, jnp.where(second, 1.0, 0.0), terminated=second)


class ActionRewardProbe(ProbeEnv):
    """Probe-ActionReward-v0: obs one-hot(bit) f32[2], actions {0, 1}, reward +1 if action == bit
    else -1, one step, terminated. The optimal policy picks the bit (argmax of obs)."""

    env_id = "Probe-ActionReward-v0"
    obs_dim = 2
    obs_low = 0.0

    @property
    def num_actions(self) -> int:
        """Two actions: guess bit 0 or bit 1."""
        return 2

    def _initial_obs(self, key: jax.Array) -> jax.Array:
        """One-hot of a fair random bit."""
        bit = jax.random.bernoulli(key).astype(jnp.int32)
        return jax.nn.one_hot(bit, 2, dtype=jnp.float32)

    def step_env(self, key: jax.Array, state: ProbeState, action: Any, params: ProbeParams) -> StepOutput:
        """+1 for the right guess, -1 otherwise; terminate."""
        bit = jnp.argmax(state.obs)
        reward = jnp.where(jnp.asarray(action) == bit, 1.0, -1.0)
        return self._one_step_end(state, reward)


class TruncationProbe(ProbeEnv):
    """Probe-Truncation-v0: obs [0], reward +1 every step, never terminates, truncated at
    `max_steps_in_episode` (default 5). Bootstrapping on truncation gives V = 1 / (1 - gamma)."""

    env_id = "Probe-Truncation-v0"

    @property
    def default_params(self) -> ProbeParams:
        """Time limit of 5 steps."""
        return ProbeParams(max_steps_in_episode=5)

    def step_env(self, key: jax.Array, state: ProbeState, action: Any, params: ProbeParams) -> StepOutput:
        """Reward +1, never terminated (gymnax's time limit truncates)."""
        return _transition(state.obs, state, jnp.array(1.0), terminated=jnp.array(False))


class ContinuousActionProbe(ProbeEnv):
    """Probe-ContinuousAction-v0: obs ~ U[-1, 1] f32[1], action Box[-1, 1] of shape (1,),
    reward = -(action - obs)^2, one step, terminated. The optimal mean action is obs."""

    env_id = "Probe-ContinuousAction-v0"

    def action_space(self, params: ProbeParams | None = None) -> spaces.Box:
        """Box [-1, 1] of shape (1,)."""
        return spaces.Box(-1.0, 1.0, (1,), jnp.float32)

    def _initial_obs(self, key: jax.Array) -> jax.Array:
        """Uniform in [-1, 1]."""
        return jax.random.uniform(key, (1,), jnp.float32, -1.0, 1.0)

    def step_env(self, key: jax.Array, state: ProbeState, action: Any, params: ProbeParams) -> StepOutput:
        """Reward -(action - obs)^2 (summed over the single dimension); terminate."""
        reward = -jnp.sum(jnp.square(jnp.asarray(action, jnp.float32) - state.obs))
        return self._one_step_end(state, reward)


@struct.dataclass
class MemoryProbeState(ProbeState):
    """State of Probe-Memory-v0: also the episode's `bit` (f32[], +1 or -1)."""

    bit: jax.Array


class MemoryProbe(ProbeEnv):
    """Probe-Memory-v0: the first observation holds a fair random bit ([+1] or [-1]), the next
    ones are blank ([0]); actions {0, 1} name the bit (1: +1, 0: -1). The episode terminates
    after `episode_length` (4) steps; only the last step pays: +1 for naming the bit, -1 otherwise.

    A memoryless policy sees [0] at the last step whatever the bit: it names the bit with
    probability 1/2, expected return 0. A policy with memory returns 1.
    """

    env_id = "Probe-Memory-v0"
    episode_length: int = 4

    @property
    def num_actions(self) -> int:
        """Two actions: name -1 (0) or +1 (1)."""
        return 2

    def reset_env(self, key: jax.Array, params: ProbeParams) -> tuple[jax.Array, MemoryProbeState]:
        """Draw the bit and show it once."""
        bit = jnp.where(jax.random.bernoulli(key), 1.0, -1.0)
        obs = jnp.full((1,), bit, jnp.float32)
        return obs, MemoryProbeState(time=jnp.zeros((), jnp.int32), obs=obs, bit=bit)

    def step_env(self, key: jax.Array, state: MemoryProbeState, action: Any, params: ProbeParams) -> StepOutput:
        """Blank observation; at the last step reward +1 if the action names the bit, else -1."""
        time = state.time + 1
        last = time >= self.episode_length
        named = jnp.where(jnp.asarray(action) == 1, 1.0, -1.0)
        reward = jnp.where(last, jnp.where(named == state.bit, 1.0, -1.0), 0.0).astype(jnp.float32)
        obs = jnp.zeros((1,), jnp.float32)
        info = {"discount": 1.0 - last.astype(jnp.float32)}
        return obs, MemoryProbeState(time=time, obs=obs, bit=state.bit), reward, last, info


class CoinFlipProbe(ProbeEnv):
    """Probe-CoinFlip-v0: obs [1], one step, reward +1 or -1 with probability 1/2, terminated.

    V = 0, but the return is never 0: its law is 1/2 on -1 and 1/2 on +1 (its quantiles at
    tau < 1/2 are -1, above 1/2 they are +1). A distributional agent must learn the two
    outcomes; an agent that learns only the mean sees nothing but 0. The observation is [1],
    not [0]: an all-zero input leaves a ReLU torso at exactly 0 with zero gradient, and IQN,
    which multiplies the torso by its tau embedding, could then not depend on tau at all.
    """

    env_id = "Probe-CoinFlip-v0"

    def _initial_obs(self, key: jax.Array) -> jax.Array:
        """Always [1]."""
        del key
        return jnp.ones((self.obs_dim,), jnp.float32)

    def step_env(self, key: jax.Array, state: ProbeState, action: Any, params: ProbeParams) -> StepOutput:
        """Reward +-1 with probability 1/2 each (drawn from the step's key); terminate."""
        return self._one_step_end(state, jnp.where(jax.random.bernoulli(key), 1.0, -1.0))


@struct.dataclass
class TaskBitParams(ProbeParams):
    """Parameters of Probe-TaskBit-v0: the task, ``bit`` (i32[], 0 or 1), is the rewarded action."""

    bit: int = 1


class TaskBitProbe(ProbeEnv):
    """Probe-TaskBit-v0: obs [1], actions {0, 1}, reward +1 if the action is the task's ``bit``
    else -1, one step, terminated. ``sample_task`` draws the bit (fair).

    Over the task distribution a policy that picks 1 with probability p returns
    ``(2p - 1) / 2 + (1 - 2p) / 2 = 0`` whatever p: before adaptation the mean return is 0. After
    adapting to a task's rewards it can reach 1. The observation is [1], not [0], so that a ReLU
    torso is not stuck at 0 (see Probe-CoinFlip-v0).
    """

    env_id = "Probe-TaskBit-v0"

    @property
    def default_params(self) -> TaskBitParams:
        """Task bit 1."""
        return TaskBitParams()

    @property
    def num_actions(self) -> int:
        """Two actions: guess the task's bit."""
        return 2

    def sample_task(self, key: jax.Array, params: TaskBitParams) -> TaskBitParams:
        """A task of the distribution: ``params`` with a fair random ``bit``."""
        return params.replace(bit=jax.random.bernoulli(key).astype(jnp.int32))

    def _initial_obs(self, key: jax.Array) -> jax.Array:
        """Always [1]."""
        del key
        return jnp.ones((self.obs_dim,), jnp.float32)

    def step_env(self, key: jax.Array, state: ProbeState, action: Any, params: TaskBitParams) -> StepOutput:
        """+1 for the task's bit, -1 otherwise; terminate."""
        return self._one_step_end(state, jnp.where(jnp.asarray(action) == params.bit, 1.0, -1.0))


PROBES: dict[str, type[ProbeEnv]] = {
    cls.env_id: cls
    for cls in (
        OneStepProbe,
        ObsRewardProbe,
        DiscountProbe,
        ActionRewardProbe,
        TruncationProbe,
        ContinuousActionProbe,
        CoinFlipProbe,
        MemoryProbe,
        TaskBitProbe,
    )
}

for _env_id, _cls in PROBES.items():
    register(_env_id, _cls)
