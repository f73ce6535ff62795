"""What every suite adapter shares: parameters, observation formatting and the gymnax-contract shell.

An adapter subclasses `SuiteEnv` and implements three things in the suite's own terms:

* `_suite_reset(key, params) -> (raw_obs, state)`;
* `_suite_step(key, state, action, params) -> SuiteStep`: one step *with the suite's own automatic
  reset*, keeping the observation the reset replaced (`raw_final_obs`) and saying, in the suite's
  own terms, whether the episode ended by termination or by truncation (a time limit);
* `_raw_bounds(params)`: (low, high) for the raw observation, as the suite states them.

`SuiteEnv` turns that into gymnax 1.0's contract: `reset(key, params) -> (obs, state)` and
`step(key, state, action, params) -> (obs, state, reward f32[], terminated bool[], truncated bool[],
info)` with `info["final_observation"]` (formatted like `obs`), `info["terminated"]`,
`info["truncated"]` and whatever per-step information the suite reports.

Observations: the agents take flat f32 vectors, so by default every leaf of the suite's observation
(an array, a dict, a NamedTuple or dataclass of arrays) is cast to f32, flattened and concatenated
in `jax.tree.leaves` order (`flatten=True`). `obs_key="grid"` first keeps one field of a structured
observation; `flatten=False` keeps a single array in its own shape (f32), e.g. an image `[H, W, C]`
for a CNN torso.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import spaces

_jit_method = partial(jax.jit, static_argnames=("self",))


@struct.dataclass
class SuiteParams:
    """Parameters of a suite adapter (what `default_params` returns).

    Attributes:
      max_steps_in_episode: the suite's time limit in steps (static). For suites that keep it in
        their parameters (Craftax, XLand-MiniGrid) a changed value here is what the suite uses;
        suites that fix it when the env is built (Brax, Jumanji, navix) reject a different value
        and say which `envs.make` argument sets it. None where the env has no time limit.
      suite_params: the suite's own parameters (Craftax's and XLand-MiniGrid's `EnvParams`), or
        None for suites configured at construction.
    """

    max_steps_in_episode: int | None = struct.field(pytree_node=False, default=None)
    suite_params: Any = None


class SuiteStep(NamedTuple):
    """One step of a suite, in the suite's own terms, after its automatic reset."""

    raw_obs: Any  # observation to act on next: the reset observation where the episode ended
    state: Any  # suite state to continue from (already reset where the episode ended)
    reward: jax.Array  # reward of this step
    terminated: jax.Array  # bool[]: the episode ended in a terminal state (bootstrap with 0)
    truncated: jax.Array  # bool[]: the episode was cut by a time limit (bootstrap from final obs)
    raw_final_obs: Any  # observation this step reached, before any automatic reset
    info: dict  # the suite's own per-step information (no key named like ours)


class ObservationFormat(NamedTuple):
    """How a suite's observation becomes what the agent sees (see the module docstring)."""

    flatten: bool = True
    obs_key: str | None = None

    def select(self, raw_obs: Any) -> Any:
        """The field `obs_key` of a structured observation, or the observation itself."""
        if self.obs_key is None:
            return raw_obs
        if isinstance(raw_obs, dict):
            if self.obs_key not in raw_obs:
                raise ValueError(f"obs_key {self.obs_key!r} is not in the observation; it has {sorted(raw_obs)}")
            return raw_obs[self.obs_key]
        if not hasattr(raw_obs, self.obs_key):
            raise ValueError(
                f"obs_key {self.obs_key!r} is not a field of the observation ({type(raw_obs).__name__}); "
                f"it has {_field_names(raw_obs)}"
            )
        return getattr(raw_obs, self.obs_key)

    def __call__(self, raw_obs: Any) -> jax.Array:
        """The agent's observation: f32, flat `[features]` or (flatten=False) the array's own shape."""
        selected = self.select(raw_obs)
        leaves = jax.tree.leaves(selected)
        if self.flatten:
            return jnp.concatenate([jnp.reshape(leaf, (-1,)).astype(jnp.float32) for leaf in leaves])
        if len(leaves) != 1:
            raise ValueError(
                f"flatten=False keeps one array, but the observation has {len(leaves)} fields "
                f"({_field_names(selected)}); pick one with obs_key=... or keep flatten=True"
            )
        return jnp.asarray(leaves[0], jnp.float32)

    def bounds(self, raw_obs: Any, raw_bounds: tuple[Any, Any]) -> tuple[Any, Any]:
        """(low, high) of the formatted observation: scalars when uniform, else arrays."""
        lows, highs = (
            [
                np.broadcast_to(np.asarray(b, np.float32), leaf.shape)
                for b, leaf in zip(jax.tree.leaves(self.select(bound)), jax.tree.leaves(self.select(raw_obs)))
            ]
            for bound in raw_bounds
        )
        if self.flatten:
            low = np.concatenate([x.reshape(-1) for x in lows])
            high = np.concatenate([x.reshape(-1) for x in highs])
        else:
            low, high = lows[0], highs[0]
        if low.size and np.all(low == low.flat[0]) and np.all(high == high.flat[0]):
            return float(low.flat[0]), float(high.flat[0])
        return jnp.asarray(low), jnp.asarray(high)


def _field_names(obs: Any) -> list[str]:
    if isinstance(obs, dict):
        return sorted(obs)
    if hasattr(obs, "_fields"):
        return list(obs._fields)
    if hasattr(obs, "__dataclass_fields__"):
        return list(obs.__dataclass_fields__)
    return [type(obs).__name__]


def unbounded_like(raw_obs: Any) -> tuple[Any, Any]:
    """(-inf, +inf) for every leaf of `raw_obs` (a suite that states no observation bounds)."""
    return (jax.tree.map(lambda _: -np.inf, raw_obs), jax.tree.map(lambda _: np.inf, raw_obs))


class SuiteEnv:
    """A suite's environment behind gymnax 1.0's interface (subclasses adapt one suite each).

    Attributes:
      name: the id it was made from, e.g. "navix/Navix-Empty-5x5-v0".
      suite_env: the suite's own environment object (unwrapped).
      obs_format: how observations are formatted for the agent.
    """

    suite: str = ""  # the id prefix, e.g. "navix"
    limit_argument: str = ""  # the envs.make argument that sets the time limit, for error messages

    def __init__(self, name: str, suite_env: Any, obs_format: ObservationFormat):
        self.name = name
        self.suite_env = suite_env
        self.obs_format = obs_format
        self._spaces: dict[Any, spaces.Box] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    # -- to implement -------------------------------------------------------------------------

    @property
    def default_params(self) -> SuiteParams:
        """The suite's default time limit and parameters."""
        raise NotImplementedError

    def action_space(self, params: SuiteParams | None = None) -> spaces.Space:
        """Discrete(n) or Box of one action."""
        raise NotImplementedError

    def _suite_reset(self, key: chex.PRNGKey, params: SuiteParams) -> tuple[Any, Any]:
        raise NotImplementedError

    def _suite_step(self, key: chex.PRNGKey, state: Any, action: Any, params: SuiteParams) -> SuiteStep:
        raise NotImplementedError

    def _raw_bounds(self, params: SuiteParams, raw_obs: Any) -> tuple[Any, Any]:
        """(low, high) pytrees like `raw_obs` (a scalar or an array per leaf); unbounded by default."""
        return unbounded_like(raw_obs)

    # -- the gymnax contract ------------------------------------------------------------------

    @property
    def unwrapped(self) -> SuiteEnv:
        return self

    @property
    def num_actions(self) -> int:
        """Number of discrete actions, or the action dimension of a Box action space."""
        space = self.action_space(self.default_params)
        if isinstance(space, spaces.Discrete):
            return int(space.n)
        return int(math.prod(space.shape))

    def observation_space(self, params: SuiteParams | None = None) -> spaces.Box:
        """Box of the formatted observation, with the bounds the suite states (else unbounded)."""
        params = self._params(params)
        cache_key = jax.tree.structure(params)  # static fields (e.g. a view size) are in the treedef
        if cache_key not in self._spaces:
            raw_obs, _ = jax.eval_shape(lambda key: self._suite_reset(key, params), jax.random.key(0))
            obs = jax.eval_shape(lambda o: self.obs_format(o), raw_obs)
            low, high = self.obs_format.bounds(raw_obs, self._raw_bounds(params, raw_obs))
            self._spaces[cache_key] = spaces.Box(low, high, tuple(obs.shape), jnp.float32)
        return self._spaces[cache_key]

    @_jit_method
    def reset(self, key: chex.PRNGKey, params: SuiteParams | None = None) -> tuple[jax.Array, Any]:
        """Reset the suite's env from `key`."""
        raw_obs, state = self._suite_reset(key, self._params(params))
        return self.obs_format(raw_obs), state

    @_jit_method
    def step(
        self, key: chex.PRNGKey, state: Any, action: Any, params: SuiteParams | None = None
    ) -> tuple[jax.Array, Any, jax.Array, jax.Array, jax.Array, dict]:
        """Step with the suite's automatic reset; the observation before it is info["final_observation"]."""
        out = self._suite_step(key, state, action, self._params(params))
        terminated = jnp.asarray(out.terminated, jnp.bool_)
        truncated = jnp.asarray(out.truncated, jnp.bool_)
        reward = jnp.asarray(out.reward, jnp.float32)
        chex.assert_rank([reward, terminated, truncated], 0)
        info = {
            **out.info,
            "final_observation": self.obs_format(out.raw_final_obs),
            "terminated": terminated,
            "truncated": truncated,
        }
        return self.obs_format(out.raw_obs), out.state, reward, terminated, truncated, info

    # -- helpers ------------------------------------------------------------------------------

    def _params(self, params: SuiteParams | None) -> SuiteParams:
        if params is None:
            return self.default_params
        if not isinstance(params, SuiteParams):
            raise TypeError(
                f"{self.name} takes the SuiteParams of its default_params, got {type(params).__name__}; "
                f"use env.default_params (or its .replace(...))"
            )
        return params

    def _check_fixed_limit(self, params: SuiteParams) -> None:
        """For suites that fix the time limit at construction: reject a different one in params."""
        limit = self.default_params.max_steps_in_episode
        if params.max_steps_in_episode != limit:
            raise ValueError(
                f"{self.name} fixes its time limit when it is built ({limit} steps); params ask for "
                f"{params.max_steps_in_episode}. Build it with envs.make({self.name!r}, "
                f"{self.limit_argument}={params.max_steps_in_episode}) instead"
            )


def select_tree(pred: jax.Array, on_true: Any, on_false: Any) -> Any:
    """`on_true` where the scalar `pred` holds, else `on_false`, leaf by leaf (a gymnax-style select)."""
    return jax.tree.map(lambda a, b: jax.lax.select(pred, a, b), on_true, on_false)
