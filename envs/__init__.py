"""Pure-JAX environments behind gymnax 1.0's interface.

`make(env_id)` -> `(env, env_params)` for gymnax's 26 ids, this package's probes and an env spec
`MODULE:ATTRIBUTE` or `MODULE:ENV_ID` naming an env of your own (see `envs.registry`);
wrappers keep the `reset`/`step` 6-tuple contract with `info["final_observation"]`.
"""

from envs.registry import EnvUnavailableError, is_spec, make, register, registered_ids
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
    "is_spec",
    "make",
    "probes",
    "register",
    "registered_ids",
    "vectorize",
]
