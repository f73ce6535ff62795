"""The training runner: one jitted chunk of updates, vmapped over runs, sharded.

A *run* is one (hyperparameter value, seed) pair. The runner stacks N runs on a
leading axis, and

* ``init`` is ``jit(shard_map(vmap(algo.init)))`` over the N keys and hypers;
* one *chunk* is ``lax.scan(algo.update, state, length=L)``, vmapped over the
  N runs, wrapped in ``jax.shard_map`` over a 1-D device mesh, jitted once with
  the state donated, and called ``num_updates / L`` times from the host. With
  one chunk the whole training is a single jitted scan;
* the host receives each chunk's per-update scalar metrics (`[N, L]`) and
  hands them to ``on_chunk`` (progress bar, metric files) while the next chunk
  is already running on the devices.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from rl.errors import ConfigError

PRNGKey = chex.PRNGKey
Params = Any
State = Any
Hyper = Any
Metrics = dict[str, chex.Array]

RUN_AXIS = "runs"


class Algorithm(NamedTuple):
    """What an agent module's ``make`` returns (after optax's GradientTransformation).

    All functions are pure and act on ONE run; the runner adds the run axis.
    """

    init: Callable[[PRNGKey, Hyper], State]  # whole training carry of one run
    update: Callable[[State, Hyper], tuple[State, Metrics]]  # one iteration
    act: Callable[..., chex.Array]  # act(params, obs[B, ...], key, deterministic=False)
    steps_per_update: int  # env steps one update consumes (all envs of a run)
    num_updates: int  # updates in the configured training budget
    name: str  # agent name, e.g. "ppo"
    config: Any  # the static Config the factory closed over


@dataclass
class ChunkReport:
    """Host-side view of one finished chunk, given to ``on_chunk``."""

    first_update: int  # global index of the chunk's first update
    num_updates: int  # updates in this chunk (L)
    metrics: dict[str, np.ndarray]  # each [N, L]
    elapsed_seconds: float  # wall time since the first chunk was dispatched


@dataclass
class TrainResult:
    """Everything a finished batch of runs produced."""

    state: State  # final training carry, leading axis N (on device)
    metrics: dict[str, np.ndarray]  # per-update scalars, each [N, num_updates]
    keys: chex.Array  # [N] the PRNG keys the runs were initialised from
    hypers: Hyper  # hyperparameters with leading axis N
    steps_per_update: int
    compile_seconds: float  # lowering + XLA compilation of init and chunk
    run_seconds: float  # wall time of all chunks, compilation excluded
    num_chunks: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_runs(self) -> int:
        return int(next(iter(self.metrics.values())).shape[0])

    @property
    def env_steps_per_run(self) -> int:
        updates = next(iter(self.metrics.values())).shape[1]
        return int(updates * self.steps_per_update)

    @property
    def env_steps_per_second(self) -> float:
        """Env steps of all runs together per second of running (no compile)."""
        return self.num_runs * self.env_steps_per_run / max(self.run_seconds, 1e-9)

    @property
    def params(self) -> Params:
        return self.state.params


def chunk_schedule(num_updates: int, num_chunks: int) -> list[int]:
    """Split ``num_updates`` into chunk lengths, preferring equal lengths.

    Equal lengths mean one compiled function. A divisor of ``num_updates``
    between half and twice ``num_chunks`` is taken when there is one;
    otherwise the chunks are equal but for a shorter last one (compiled once
    more).
    """
    if num_chunks >= num_updates:
        return [1] * num_updates
    best = None
    for n in range(max(1, num_chunks // 2), min(num_updates, 2 * num_chunks) + 1):
        if num_updates % n == 0 and (best is None or abs(n - num_chunks) < abs(best - num_chunks)):
            best = n
    if best is not None:
        return _equal(num_updates, best)
    length = math.ceil(num_updates / num_chunks)
    full, rest = divmod(num_updates, length)
    return [length] * full + ([rest] if rest else [])


def _equal(total: int, n: int) -> list[int]:
    return [total // n] * n


def make_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh over ``devices`` (default: every device of every process)."""
    devices = list(jax.devices() if devices is None else devices)
    return jax.sharding.Mesh(np.array(devices), (RUN_AXIS,))


def check_divisible(num_runs: int, mesh: jax.sharding.Mesh, what: str = "num_seeds") -> None:
    """Runs are split evenly over devices: refuse a batch that does not divide."""
    n_dev = mesh.devices.size
    if num_runs % n_dev:
        ok = [k for k in range(n_dev, 4 * n_dev + 1, n_dev)]
        raise ConfigError(
            what,
            num_runs,
            f"the {num_runs} runs must split evenly over the {n_dev} devices; "
            f"use a multiple of {n_dev} (e.g. {', '.join(map(str, ok))})",
        )


def _sharded(fn: Callable, mesh, donate: bool) -> Callable:
    """``jit(shard_map(vmap(fn)))`` with every input and output split on runs."""
    spec = P(RUN_AXIS)
    # Runs are independent (no collectives inside a run), so the varying-axis
    # type check is off: agents may create fresh constants in their carries.
    mapped = jax.shard_map(jax.vmap(fn), mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)
    return jax.jit(mapped, donate_argnums=(0,) if donate else ())


def _scan_updates(algo: Algorithm, length: int) -> Callable:
    def chunk(state, hyper):
        def body(s, _):
            return algo.update(s, hyper)

        return jax.lax.scan(body, state, None, length=length)

    return chunk


def broadcast_hyper(hyper: Hyper, n: int) -> Hyper:
    """Give every leaf of a scalar hyper pytree a leading axis of length ``n``."""
    return jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x, jnp.float32), (n,)), hyper)


def seed_keys(seeds: Sequence[int]) -> chex.Array:
    """One independent typed PRNG key per seed: ``jax.random.key(seed)``."""
    return jnp.stack([jax.random.key(int(s)) for s in seeds])


def run_batch(
    algo: Algorithm,
    keys: chex.Array,
    hypers: Hyper,
    *,
    num_chunks: int = 1,
    mesh: jax.sharding.Mesh | None = None,
    on_chunk: Callable[[ChunkReport], None] | None = None,
) -> TrainResult:
    """Train N runs (``keys[N]``, ``hypers`` with leading axis N) to the end.

    ``num_chunks`` host round trips are made; each chunk's metrics reach
    ``on_chunk`` while the following chunk is already computing.
    """
    mesh = make_mesh() if mesh is None else mesh
    num_runs = int(keys.shape[0])
    check_divisible(num_runs, mesh)
    schedule = chunk_schedule(algo.num_updates, num_chunks)
    sharding = NamedSharding(mesh, P(RUN_AXIS))
    keys, hypers = jax.device_put((keys, hypers), sharding)

    t0 = time.perf_counter()
    init = _sharded(algo.init, mesh, donate=False).lower(keys, hypers).compile()
    compile_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    state = jax.block_until_ready(init(keys, hypers))
    init_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    compiled = {}
    for length in sorted(set(schedule)):
        fn = _sharded(_scan_updates(algo, length), mesh, donate=True)
        compiled[length] = fn.lower(state, hypers).compile()
    compile_seconds += time.perf_counter() - t0

    t0 = time.perf_counter() - init_seconds  # run time counts initialisation too
    pending: list[tuple[int, int, Any]] = []
    host_metrics: list[dict[str, np.ndarray]] = []
    first = 0

    def drain(item):
        start, length, metrics = item
        report = ChunkReport(start, length, jax.device_get(metrics), time.perf_counter() - t0)
        host_metrics.append(report.metrics)
        if on_chunk is not None:
            on_chunk(report)

    for length in schedule:
        state, metrics = compiled[length](state, hypers)
        pending.append((first, length, metrics))
        first += length
        if len(pending) > 1:  # the chunk just dispatched runs while we log the last
            drain(pending.pop(0))
    jax.block_until_ready(state)
    for item in pending:
        drain(item)
    run_seconds = time.perf_counter() - t0

    metrics = {k: np.concatenate([m[k] for m in host_metrics], axis=1) for k in host_metrics[0]}
    return TrainResult(
        state=state,
        metrics=metrics,
        keys=keys,
        hypers=hypers,
        steps_per_update=algo.steps_per_update,
        compile_seconds=compile_seconds,
        run_seconds=run_seconds,
        num_chunks=len(schedule),
    )


def train(
    algo: Algorithm,
    hyper: Hyper,
    seeds: Sequence[int] | int = 1,
    *,
    num_chunks: int = 1,
    mesh: jax.sharding.Mesh | None = None,
    on_chunk: Callable[[ChunkReport], None] | None = None,
) -> TrainResult:
    """Train ``algo`` with ``hyper`` on every seed in parallel.

    ``hyper`` is a pytree of scalars, or of equal-length 1-D arrays (H values
    each) to train H hyperparameter settings at once; the runs are then laid
    out hyper-major, run ``h * S + s`` having ``hyper[h]`` and ``seeds[s]``,
    all in one compile.
    """
    seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("seeds", seeds, "give at least one seed")
    leaves = jax.tree.leaves(hyper)
    dims = {np.ndim(x) for x in leaves}
    if dims <= {0}:
        keys = seed_keys(seeds)
        hypers = broadcast_hyper(hyper, len(seeds))
    elif dims == {1} and len({np.shape(x)[0] for x in leaves}) == 1:
        h = np.shape(leaves[0])[0]
        keys = seed_keys(seeds * h)
        hypers = jax.tree.map(lambda x: jnp.repeat(jnp.asarray(x, jnp.float32), len(seeds)), hyper)
    else:
        raise ConfigError(
            "hyper", hyper, "every field must be a scalar, or all must be 1-D arrays of one length"
        )
    return run_batch(algo, keys, hypers, num_chunks=num_chunks, mesh=mesh, on_chunk=on_chunk)
