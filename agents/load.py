"""Use a trained policy: ``agents.load(run_dir)``.

    import jax, agents
    policy = agents.load("runs/20250101-120000-ppo-CartPole-v1")   # first seed of the run
    obs, state = policy.env.reset(jax.random.key(0), policy.env_params)
    action = policy.act(obs, jax.random.key(1), deterministic=True)

A run folder is written by ``python -m experiments.train`` or by
``rl.train(...).save(run_dir, env)``. The parameters come from its newest
checkpoint (written at the end of training, on Ctrl-C/SIGTERM and every few
chunks), which holds the whole training carry. The env is built again from the
id or ``MODULE:ATTRIBUTE`` spec in ``config.json``, so a module that defines it
must be importable here too. When the run normalised observations (``normalize_obs``), the
running mean and variance it had reached are applied to every observation
given to ``act``, frozen: ``act`` takes raw observations of the unwrapped env.

A recurrent agent (``rppo``) acts with memory through ``Loaded.recurrent``: start every episode
from ``carry = policy.recurrent.initial_carry()`` and call
``action, carry = policy.recurrent.act(obs, carry, key, deterministic=True)`` at each step (its
``act`` alone acts from the initial carry at every call, without memory).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # jax is imported when a run is loaded, so `import agents` stays cheap
    import chex

__all__ = ["Loaded", "LoadedRecurrent", "load"]


class LoadedRecurrent(NamedTuple):
    """Acting with memory (``Loaded.recurrent``, for an agent whose ``Algorithm.recurrent`` is set).

    The caller keeps the carry: ``initial_carry()`` at an episode's start (and after every
    terminated or truncated step), then ``act`` returns the carry to pass to the next step.
    """

    initial_carry: Callable[..., Any]  # initial_carry(batch=None): unbatched carry, or [batch, ...]
    act: Callable[..., Any]  # act(obs, carry, key, deterministic=False) -> (action, carry); obs batched or not
    policy: Callable[
        ..., Any
    ]  # pure: policy(params, obs_stats, carry, obs[B, ...], key, deterministic) -> (action, carry)


class Loaded(NamedTuple):
    """A trained policy read from a run folder (one run of the batch).

    ``config, act = agents.load(run_dir)[:2]`` gives the two things most users need.
    """

    config: Any  # the agent's Config the run was trained with
    act: Callable[..., chex.Array]  # act(obs, key, deterministic=False): obs [*obs_shape] or [B, *obs_shape]
    hyper: Any  # the agent's Hyper
    agent: str  # agent name, e.g. "ppo"
    env_id: str
    env: Any  # the env the agent acts in: ``envs.make(env_id)``, wrapped as ``Algorithm.wrap_env`` says
    env_params: Any
    seed: int  # the seed of the chosen run
    run: int  # its index in the batch
    update: int  # updates done when the checkpoint was saved
    params: Any  # the chosen run's parameters (no run axis)
    obs_stats: Any  # envs.NormalizeObservationState (mean, var, count; env_state=None) or None
    policy: Callable[..., chex.Array]  # pure: policy(params, obs_stats, obs[B, ...], key, deterministic)
    all_params: Any  # parameters of every run, leading axis = run
    all_obs_stats: Any  # statistics of every run (leading axis = run) or None
    seeds: list[int]  # the seed of every run
    recurrent: LoadedRecurrent | None = None  # acting with memory (recurrent agents), else None


def load(
    run_dir: str | os.PathLike[str],
    *,
    seed: int | None = None,
    run: int | None = None,
    step: int | None = None,
) -> Loaded:
    """Read the policy of one run of ``run_dir`` (default: its first seed).

    Args:
      run_dir: a folder written by ``python -m experiments.train`` or ``TrainResult.save``.
      seed: pick the run trained with this seed.
      run: or pick the run by its index in the batch (0-based).
      step: read the checkpoint saved after this many updates (default: the newest).

    Raises:
      ValueError: not a run folder, no checkpoint in it, no such seed/run, or its env cannot be
        built here (e.g. the module of a ``MODULE:ATTRIBUTE`` spec is not importable).
    """
    import jax
    import numpy as np

    import agents
    import envs
    from rl.engine.checkpoint import Checkpointer

    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{str(run_dir)!r} is not a run folder: it has no config.json")
    saved = json.loads(config_path.read_text())
    module = agents.get(saved["agent"])
    config = _rebuild(module.Config(), saved["config"])
    hyper = _rebuild(module.Hyper(), saved["hyper"])
    seeds = [int(s) for s in saved["seeds"]]
    index = _pick(seeds, seed, run)
    try:
        env, env_params = envs.make(saved["env"])
    except ValueError as err:
        raise ValueError(f"the env {saved['env']!r} of {str(run_dir)!r} cannot be built here: {err}") from err
    algo = module.make(config, env, env_params)
    if algo.wrap_env is not None:  # the agent acts in a wrapped env (RL²'s trials): play that one
        env = algo.wrap_env(env)

    ckpt_dir = run_dir / "checkpoints"
    if not ckpt_dir.is_dir():
        raise ValueError(f"{str(run_dir)!r} has no checkpoints/ folder to load parameters from")
    checkpointer = Checkpointer(ckpt_dir)
    try:
        if checkpointer.latest_step() is None:
            raise ValueError(f"{str(run_dir)!r} has no checkpoint yet (the run stopped before its first one)")
        keys = jax.numpy.stack([jax.random.key(s) for s in seeds])
        hypers = jax.tree.map(lambda x: np.full((len(seeds),), x, np.float32), hyper)
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device, weak_type=x.weak_type),
            jax.eval_shape(jax.vmap(algo.init), keys, hypers),
        )
        restored = checkpointer.restore(abstract, step)
    finally:
        checkpointer.close()

    all_params = restored.state.params
    all_stats = _obs_stats(restored.state)
    normalizer = envs.NormalizeObservation(envs.VecEnv(env, 1)) if all_stats is not None else None

    def policy(params, obs_stats, obs, key, deterministic: bool = False):
        """Actions for raw observations ``[B, *obs_shape]`` with the given parameters/statistics."""
        if obs_stats is not None:
            obs = normalizer.normalize(obs_stats, obs)
        return algo.act(params, obs, key, deterministic)

    params = jax.tree.map(lambda x: x[index], all_params)
    stats = None if all_stats is None else jax.tree.map(lambda x: x[index], all_stats)
    obs_ndim = len(env.observation_space(env_params).shape)

    def act(obs, key, deterministic: bool = False):
        """Action(s) for raw observation(s): ``[*obs_shape]`` -> one action, ``[B, *obs_shape]`` -> B."""
        obs = jax.numpy.asarray(obs)
        if obs.ndim == obs_ndim:
            return policy(params, stats, obs[None], key, deterministic)[0]
        return policy(params, stats, obs, key, deterministic)

    recurrent = None if algo.recurrent is None else _recurrent(algo.recurrent, normalizer, params, stats, obs_ndim)
    return Loaded(
        config=config,
        act=act,
        hyper=hyper,
        agent=saved["agent"],
        env_id=saved["env"],
        env=env,
        env_params=env_params,
        seed=seeds[index],
        run=index,
        update=restored.update,
        params=params,
        obs_stats=stats,
        policy=policy,
        all_params=all_params,
        all_obs_stats=all_stats,
        seeds=seeds,
        recurrent=recurrent,
    )


def _recurrent(rec: Any, normalizer: Any, params: Any, stats: Any, obs_ndim: int) -> LoadedRecurrent:
    """``Loaded.recurrent`` of an ``rl.engine.runner.Recurrent``: the chosen run's parameters and statistics bound."""
    import jax

    def policy(params, obs_stats, carry, obs, key, deterministic: bool = False):
        if obs_stats is not None:
            obs = normalizer.normalize(obs_stats, obs)
        return rec.act(params, carry, obs, key, deterministic)

    def initial_carry(batch: int | None = None):
        carry = rec.initial_carry(1 if batch is None else batch)
        return jax.tree.map(lambda x: x[0], carry) if batch is None else carry

    def act(obs, carry, key, deterministic: bool = False):
        obs = jax.numpy.asarray(obs)
        if obs.ndim == obs_ndim:  # one observation, an unbatched carry
            batched = jax.tree.map(lambda x: x[None], carry)
            action, batched = policy(params, stats, batched, obs[None], key, deterministic)
            return action[0], jax.tree.map(lambda x: x[0], batched)
        return policy(params, stats, carry, obs, key, deterministic)

    return LoadedRecurrent(initial_carry=initial_carry, act=act, policy=policy)


def _rebuild(default: Any, values: dict[str, Any]) -> Any:
    """A config/hyper dataclass from its saved JSON fields (``rl.host.runs.config_from_json``)."""
    from rl.host.runs import UnknownFields, config_from_json

    try:
        return config_from_json(default, values)
    except UnknownFields as err:
        raise ValueError(
            f"config.json sets fields {err.unknown} that {type(default).__qualname__} no longer has"
        ) from None


def _pick(seeds: list[int], seed: int | None, run: int | None) -> int:
    if seed is not None and run is not None:
        raise ValueError("give seed or run, not both")
    if seed is not None:
        if seed not in seeds:
            raise ValueError(f"seed {seed} was not trained in this run; its seeds are {seeds}")
        return seeds.index(seed)
    if run is None:
        return 0
    if not 0 <= run < len(seeds):
        raise ValueError(f"run {run} does not exist; this run folder holds runs 0..{len(seeds) - 1}")
    return run


def _obs_stats(state: Any) -> Any:
    """The observation-normalisation statistics in a training carry (env_state dropped), or None."""
    import jax

    from envs import NormalizeObservationState

    found = [
        x
        for x in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, NormalizeObservationState))
        if isinstance(x, NormalizeObservationState)
    ]
    if not found:
        return None
    return found[0]._replace(env_state=None)
