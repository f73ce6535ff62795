"""Pure-JAX environments behind gymnax 1.0's interface.

`make(env_id)` -> `(env, env_params)` for gymnax's 26 ids, this package's probes, other suites'
envs by prefix (`brax/ant`, `craftax/Craftax-Symbolic-v1`, `jumanji/Snake-v1`,
`navix/Navix-Empty-5x5-v0`, `xminigrid/XLand-MiniGrid-R1-9x9`; optional extras, see
`envs.suites`), an env spec `MODULE:ATTRIBUTE` or `MODULE:ENV_ID` naming an env of your own (see
`envs.registry`), or an env object itself; wrappers keep the `reset`/`step` 6-tuple contract with
`info["final_observation"]`. Task distributions (`envs.meta`): `DomainRandomization` draws env
parameters per episode, `Trials` keeps one task for K episodes as RL² needs.
"""

from envs import (
    navigation,  # noqa: E402,F401  (registers Navigation2D-v0, MAML's 2-D navigation)
    probes,  # noqa: E402,F401  (registers the Probe-* ids)
    suites,  # noqa: E402  (imports no suite until one of its ids is made)
)
from envs.meta import DomainRandomization, DomainRandomizationState, Trials, TrialsState
from envs.probes import PROBES
from envs.registry import EnvUnavailableError, is_spec, make, register, registered_ids
from envs.suites import SuiteNotInstalledError
from envs.wrappers import (
    ClipAction,
    EpisodeStatistics,
    EpisodeStatisticsState,
    FlattenObservation,
    MaskObservation,
    NormalizeObservation,
    NormalizeObservationState,
    VecEnv,
    Wrapper,
    action_shape,
    cartpole_no_velocity,
    flat_obs_dim,
    is_discrete,
    vectorize,
)

register("CartPole-NoVelocity-v1", cartpole_no_velocity)  # CartPole-v1 seen as [x, theta] only

__all__ = [
    "PROBES",
    "ClipAction",
    "DomainRandomization",
    "DomainRandomizationState",
    "EnvUnavailableError",
    "EpisodeStatistics",
    "EpisodeStatisticsState",
    "FlattenObservation",
    "MaskObservation",
    "NormalizeObservation",
    "NormalizeObservationState",
    "SuiteNotInstalledError",
    "Trials",
    "TrialsState",
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
    "suites",
    "vectorize",
]
