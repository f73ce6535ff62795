"""Pure-JAX environments behind gymnax 1.0's interface.

`make(env_id)` -> `(env, env_params)` for gymnax's 26 ids and this package's probes;
wrappers keep the `reset`/`step` 6-tuple contract with `info["final_observation"]`.
"""

from envs.registry import EnvUnavailableError, make, register, registered_ids
from envs.wrappers import (
    ClipAction,
    EpisodeStatistics,
    EpisodeStatisticsState,
    FlattenObservation,
    NormalizeObservation,
    NormalizeObservationState,
    VecEnv,
    Wrapper,
    action_shape,
    flat_obs_dim,
    is_discrete,
    vectorize,
)
from envs import probes  # noqa: E402,F401  (registers the Probe-* ids)
from envs.probes import PROBES

__all__ = [
    "PROBES",
    "ClipAction",
    "EnvUnavailableError",
    "EpisodeStatistics",
    "EpisodeStatisticsState",
    "FlattenObservation",
    "NormalizeObservation",
    "NormalizeObservationState",
    "VecEnv",
    "Wrapper",
    "action_shape",
    "flat_obs_dim",
    "is_discrete",
    "make",
    "probes",
    "register",
    "registered_ids",
    "vectorize",
]
