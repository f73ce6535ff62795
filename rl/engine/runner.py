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

With ``Algorithm.evaluation`` (``rl.device.evaluation.with_evaluation``) the chunk also
plays evaluation episodes after every K-th update and after the last one, in a
``lax.cond`` on the global update index (a replicated input of the chunk), and
reports ``eval_return``/``eval_length`` (NaN after the other updates); the
training itself is unchanged, bit for bit.

Every update also reports ``nonfinite`` (int32 0/1): whether a NaN or inf
appeared in any ``*loss*``/``*grad*`` metric (or, for an agent without such
metrics, in its parameters or optimizer state); the parameters and optimizer
state are also checked once at the end of every chunk. Training stops at the end of the chunk where it first appears (status
``"diverged"``, see ``TrainResult.divergence``). With an
``rl.engine.checkpoint.Checkpointer`` the carry is saved every K chunks and at the
end (the chunk pipeline pauses only where a save is due), ``resume=True``
continues from the newest checkpoint with the same chunk schedule (results
are bit-identical to an uninterrupted run), and ``should_stop`` (e.g.
``rl.engine.checkpoint.StopOnSignals``) ends training early at a chunk boundary with
a checkpoint (status ``"interrupted"``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from rl.device import memory
from rl.device.evaluation import evaluate_if_due
from rl.engine import distributed
from rl.errors import ConfigError

PRNGKey = chex.PRNGKey
Params = Any
State = Any
Hyper = Any
Metrics = dict[str, chex.Array]

RUN_AXIS = "runs"
NONFINITE = "nonfinite"  # per-update metric: 1 where a watched value was NaN or inf


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
    # evaluation episodes every K updates (rl.device.evaluation.with_evaluation), or None: no evaluation
    evaluation: Any = None
    # a recurrent agent's acting with memory (``Recurrent``), or None: ``act`` is all there is
    recurrent: Any = None
    # env -> the env the agent acts in, when its make() wraps the env it is given (RL²'s trials),
    # for evaluation and loading to play the same env; None: it acts in the env as given
    wrap_env: Any = None


class Recurrent(NamedTuple):
    """How a recurrent agent acts with memory: ``Algorithm.recurrent``.

    ``Algorithm.act`` stays memoryless (it acts from the initial carry at every call); the
    evaluation episodes (``rl.device.evaluation``), ``agents.load`` and ``experiments.evaluate`` use
    this instead when it is there. The caller keeps the carry: it starts from
    ``initial_carry(B)`` and is put back there, row by row, wherever the env reported
    ``terminated | truncated``: the rule the agent trains with.
    """

    initial_carry: Callable[[int], Any]  # B -> the carry at an episode's start, leading axis B
    act: Callable[..., tuple[chex.Array, Any]]  # act(params, carry, obs[B, ...], key, deterministic) -> (action, carry)


def bind(
    name: str,
    static: Any,
    init: Callable,
    update: Callable,
    act: Callable,
    steps_per_update: int,
    num_updates: int,
    *,
    initial_carry: Callable | None = None,
    recurrent_act: Callable | None = None,
    wrap_env: Callable | None = None,
) -> Algorithm:
    """The ``Algorithm`` of an agent module: its ``init``, ``update`` and ``act`` with their first
    argument, ``static`` (what the factory closed over; ``static.config`` is the Config), bound.
    A recurrent agent also gives ``initial_carry(static, B)`` and ``recurrent_act(static, params,
    carry, obs, key, deterministic)``, bound into ``Algorithm.recurrent``. An agent whose ``make``
    wraps the env it is given passes that wrapping as ``wrap_env(env) -> env``."""
    recurrent = None
    if (initial_carry is None) != (recurrent_act is None):
        raise ValueError("a recurrent agent gives both initial_carry and recurrent_act, or neither")
    if initial_carry is not None:
        recurrent = Recurrent(functools.partial(initial_carry, static), functools.partial(recurrent_act, static))
    return Algorithm(
        init=functools.partial(init, static),
        update=functools.partial(update, static),
        act=functools.partial(act, static),
        steps_per_update=steps_per_update,
        num_updates=num_updates,
        name=name,
        config=static.config,
        recurrent=recurrent,
        wrap_env=wrap_env,
    )


@dataclass
class ChunkReport:
    """Host-side view of one finished chunk, given to ``on_chunk``."""

    first_update: int  # global index of the chunk's first update
    num_updates: int  # updates in this chunk (L)
    metrics: dict[str, np.ndarray]  # each [N, L]
    elapsed_seconds: float  # wall time since the first chunk was dispatched


@dataclass(frozen=True)
class Divergence:
    """Where a run first produced a NaN or inf."""

    run: int  # index of the run in the batch (hyper-major: h * S + s in ``train``)
    update: int  # global index of the first update whose ``nonfinite`` flag is set


@dataclass
class TrainResult:
    """Everything a finished batch of runs produced.

    ``metrics["episode_return"]`` and ``metrics["episode_length"]`` are the means over
    the episodes that ended in each update, and NaN where none ended
    (``metrics["episodes"] == 0``): a mean over updates must mask them
    (``np.nanmean``, or :func:`rl.host.stats.mean_over_episodes` for the
    episode-weighted mean). With evaluation episodes (``rl.device.evaluation``),
    ``metrics["eval_return"]`` and ``metrics["eval_length"]`` are NaN after the
    updates that were not evaluated. :meth:`save` writes the result as a run folder.
    """

    state: State  # final training carry, leading axis N (on device)
    metrics: dict[str, np.ndarray]  # per-update scalars, each [N, num_updates]; see the class docstring
    keys: chex.Array  # [N] the PRNG keys the runs were initialised from
    hypers: Hyper  # hyperparameters with leading axis N
    steps_per_update: int
    compile_seconds: float  # lowering + XLA compilation of init and chunk
    run_seconds: float  # wall time of initialisation and all chunks up to their last metrics on the host;
    # compilation and the final checkpoint excluded (checkpoints saved mid-run are in it)
    num_chunks: int
    extra: dict[str, Any] = field(default_factory=dict)
    status: str = "completed"  # "completed", "interrupted" (should_stop) or "diverged"
    divergence: list[Divergence] = field(default_factory=list)  # runs that diverged, if any
    start_update: int = 0  # first update computed by this call (> 0 when resumed)
    checkpoint_step: int | None = None  # updates done at the newest checkpoint saved
    algo: Algorithm | None = None  # the algorithm that was trained
    seeds: list[int] | None = None  # the seed of every run (set by ``train``)

    def save(
        self, run_dir: Any, env: str, *, seeds: Sequence[int] | None = None, per_seed_metrics: str = "auto"
    ) -> Any:
        """Write this result as a run folder that ``agents.load`` and ``experiments.evaluate`` read.

        ``env`` is the env id or ``MODULE:ATTRIBUTE`` spec the algorithm was made with (it is
        stored in ``config.json``, and ``envs.make(env)`` must build that env again); ``seeds``
        is needed only for a result of ``run_batch``; ``per_seed_metrics`` (``"auto"``, ``"csv"``,
        ``"parquet"``, ``"none"``) picks the per-seed metric files. See :func:`rl.host.runs.save_run`.
        """
        from rl.host.runs import save_run  # lazy: plotting and checkpoint backends

        return save_run(self, run_dir, env, seeds=seeds, per_seed_metrics=per_seed_metrics)

    @property
    def num_runs(self) -> int:
        return int(self.keys.shape[0])

    @property
    def num_updates(self) -> int:
        """Updates done so far (all of them when ``status == "completed"``)."""
        return int(next(iter(self.metrics.values())).shape[1]) if self.metrics else 0

    @property
    def env_steps_per_run(self) -> int:
        return int(self.num_updates * self.steps_per_update)

    @property
    def env_steps_per_second(self) -> float:
        """Env steps of all runs together per second of running (no compile).

        Counts only the updates this call computed (not those restored from a checkpoint).
        """
        steps = (self.num_updates - self.start_update) * self.steps_per_update
        return self.num_runs * steps / max(self.run_seconds, 1e-9)

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


def init_sequentially(mesh: jax.sharding.Mesh) -> bool:
    """Initialise a device's runs one after another (``lax.map``) only on CPU devices (see ``_sharded``)."""
    return any(d.platform == "cpu" for d in mesh.devices.flat)


def _sharded(
    fn: Callable, mesh, donate: bool, sequential: bool = False, in_axes: tuple[int | None, ...] | None = None
) -> Callable:
    """``jit(shard_map(vmap(fn)))`` with every input and output split on runs.

    ``in_axes`` (one entry per input, default all 0): an input marked None is not split
    but the same on every device and for every run (not vmapped), e.g. the chunk's first
    global update index, which the evaluation schedule reads.

    ``sequential`` maps ``fn`` over a device's runs with ``lax.map`` instead
    of ``vmap``. Initialisation uses it: vmapped orthogonal initialisers
    become one *batched* LAPACK QR, which jaxlib's CPU backend fans out over
    the same thread pool the devices run on; with several (forced) host
    devices every worker can end up waiting on the others and the process
    deadlocks (seen with jax 0.10.2; a single CPU device with 16 vmapped
    seeds hung the same way on 2 cores). On the CPU, init is cheap next to
    training, so running the runs one after another costs little; on a GPU
    or TPU a sequential init of thousands of runs is not cheap, and nothing
    there deadlocks, so it is vmapped (:func:`init_sequentially`).
    """
    spec = P(RUN_AXIS)
    in_specs: Any = spec
    if in_axes is None:
        per_device = (lambda *a: jax.lax.map(lambda x: fn(*x), a)) if sequential else jax.vmap(fn)
    elif sequential:
        raise ValueError("in_axes is only supported for vmapped functions, not sequential ones")
    else:
        per_device = jax.vmap(fn, in_axes=in_axes)
        in_specs = tuple(P() if axis is None else spec for axis in in_axes)
    # Runs are independent (no collectives inside a run), so the varying-axis
    # type check is off: agents may create fresh constants in their carries.
    mapped = jax.shard_map(per_device, mesh=mesh, in_specs=in_specs, out_specs=spec, check_vma=False)
    return jax.jit(mapped, donate_argnums=(0,) if donate else ())


def copy_fits(state: Any, chunk_memory: Any, bytes_limit: int | None) -> bool:
    """Whether a checkpoint may take a device copy of ``state`` (see :func:`run_batch`).

    ``chunk_memory`` is the compiled chunk's ``memory_analysis()`` (per device) and
    ``bytes_limit`` the device's memory (``memory_stats()["bytes_limit"]``; None on the CPU,
    whose arrays are in host memory: always). The copy must fit beside the chunk's own
    arguments, outputs and temporaries within 90% of the device's memory, so that a run with
    a large replay buffer that fits once does not fail at its first checkpoint. The answer
    depends only on the program and the device kind, so every process of a multi-host run
    takes the same branch.
    """
    if not bytes_limit:
        return True
    state_bytes = memory.tree_bytes(state) // max(1, len(jax.devices()))
    m = chunk_memory
    chunk_bytes = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
    return chunk_bytes + state_bytes <= 0.9 * bytes_limit


def _named_fields(tree: Any) -> list[tuple[str, Any]]:
    """(name, value) of a NamedTuple's, dataclass's or dict's top-level fields; [] otherwise."""
    if hasattr(tree, "_fields"):
        return [(name, getattr(tree, name)) for name in tree._fields]
    if dataclasses.is_dataclass(tree):
        return [(f.name, getattr(tree, f.name)) for f in dataclasses.fields(tree)]
    if isinstance(tree, dict):
        return [(str(k), v) for k, v in tree.items()]
    return []


def _any_nonfinite(tree: Any) -> chex.Array:
    """int32[] 1 if any floating leaf of ``tree`` holds a NaN or inf."""
    floats = [
        jnp.asarray(x).ravel() for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)
    ]
    if not floats:
        return jnp.int32(0)
    # one concatenated reduction, not one per leaf: on CPU each separate reduction is a kernel
    # launch, and per-update launches cost PPO CartPole about 5% of its steps/s at 1 seed
    return jnp.any(~jnp.isfinite(jnp.concatenate(floats))).astype(jnp.int32)


def _watched_metrics(metrics: Metrics) -> list[Any]:
    """The metrics that go non-finite first: every one whose name contains ``loss`` or ``grad``."""
    if not isinstance(metrics, dict):
        return []
    return [v for name, v in metrics.items() if "loss" in name or "grad" in name]


def watched_state(state: State) -> Any:
    """State fields whose name contains ``params`` or ``opt_state`` (the whole state if none)."""
    watched = [v for name, v in _named_fields(state) if "params" in name or "opt_state" in name]
    return watched or [state]


def nonfinite(state: State, metrics: Metrics) -> chex.Array:
    """int32[] 1 if a NaN or inf is in what diverges first, else 0 (one run, one update).

    Watched every update: each metric whose name contains ``loss`` or ``grad`` (scalars the
    update computed anyway). A NaN gradient makes the global gradient norm NaN in the same
    update, and NaN or inf parameters make the next update's loss non-finite. Only an agent
    that reports no such metric has its state watched every update: the fields named
    ``params`` or ``opt_state`` (or the whole state); env states and replay buffers may hold
    infinities legitimately. (Reading every parameter and optimizer moment each update cost
    PureJaxRL-sized PPO at 2048 seeds about 700 MB of memory traffic per update; the runner
    checks the state once per chunk instead, see ``_scan_updates``.)
    """
    scalars = _watched_metrics(metrics)
    return _any_nonfinite(scalars if scalars else watched_state(state))


def _scan_updates(algo: Algorithm, length: int) -> Callable:
    """One chunk of one run: ``chunk(state, hyper, first_update=0)`` does ``length`` updates.

    ``first_update`` is the global index of the chunk's first update, the same for every run
    (the runner passes it unbatched). With ``algo.evaluation`` each update's metrics also hold
    the evaluation metrics (``rl.device.evaluation``), NaN after updates where none is due.
    """
    evaluation = algo.evaluation

    def chunk(state, hyper, first_update=0):
        def body(s, update):
            s, metrics = algo.update(s, hyper)
            if isinstance(metrics, dict):
                metrics = {**metrics, NONFINITE: nonfinite(s, metrics)}
                if evaluation is not None:
                    metrics = {**metrics, **evaluate_if_due(evaluation, s, update, algo.num_updates)}
            return s, metrics

        # the global update indices; only the evaluation schedule reads them
        updates = None if evaluation is None else first_update + jnp.arange(length, dtype=jnp.int32)
        state, metrics = jax.lax.scan(body, state, updates, length=length)
        if isinstance(metrics, dict) and _watched_metrics(metrics):
            # the state was not read every update: read it once, at the chunk's end, so a NaN
            # that reached parameters but no loss yet is flagged at the chunk's last update
            flags = metrics[NONFINITE]
            metrics = {**metrics, NONFINITE: flags.at[-1].max(_any_nonfinite(watched_state(state)))}
        return state, metrics

    return chunk


def _divergences(metrics: dict[str, np.ndarray], first_update: int) -> list[Divergence]:
    """The runs whose ``nonfinite`` flag is set in this chunk, with the first such update."""
    flags = metrics.get(NONFINITE)
    if flags is None:
        return []
    return [
        Divergence(run=int(n), update=first_update + int(np.argmax(flags[n] > 0)))
        for n in np.flatnonzero(np.any(flags > 0, axis=1))
    ]


def broadcast_hyper(hyper: Hyper, n: int) -> Hyper:
    """Give every leaf of a scalar hyper pytree a leading axis of length ``n``."""
    return jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x, jnp.float32), (n,)), hyper)


def seed_keys(seeds: Sequence[int]) -> chex.Array:
    """One independent typed PRNG key per seed: ``jax.random.key(seed)``.

    Made in one vmapped call, bit-identical to the keys made one by one (tested): a Python
    loop dispatches one small computation per seed, which took 21 s for 2048 seeds on 2 busy
    CPU cores against 0.2 s vmapped. Seeds outside int32 fall back to the loop.
    """
    values = [int(s) for s in seeds]
    if values and all(-(2**31) <= v < 2**31 for v in values):
        return jax.vmap(jax.random.key)(jnp.asarray(np.asarray(values, np.int32)))
    return jnp.stack([jax.random.key(v) for v in values])


def run_batch(
    algo: Algorithm,
    keys: chex.Array,
    hypers: Hyper,
    *,
    num_chunks: int = 1,
    mesh: jax.sharding.Mesh | None = None,
    on_chunk: Callable[[ChunkReport], None] | None = None,
    checkpointer: Any = None,
    resume: bool = False,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_meta: dict[str, Any] | None = None,
    stop_on_divergence: bool = False,
    wait_for_checkpoint: bool = True,
) -> TrainResult:
    """Train N runs (``keys[N]``, ``hypers`` with leading axis N) to the end.

    ``num_chunks`` host round trips are made; each chunk's metrics reach
    ``on_chunk`` while the following chunk is already computing. Where a
    checkpoint is due, a device copy of the state is taken before the next
    chunk is dispatched (that chunk reuses the state's buffers); once the
    chunk's metrics are on the host and show no divergence that stops training,
    the copy is saved while the next chunk computes. The final checkpoint
    (after the last chunk, or on a stop request) is saved once training has
    ended: ``run_seconds`` stops before it.

    Args:
      checkpointer: an ``rl.engine.checkpoint.Checkpointer``; saves every
        ``checkpointer.every`` chunks, at the end and on a stop request.
        A diverged state is never saved: the last good checkpoint stays.
      resume: continue from the checkpointer's newest checkpoint instead of
        initialising (same ``keys``, ``hypers`` and ``num_chunks`` as the run
        that saved it). The result's metrics hold the whole history.
      should_stop: polled before each chunk is dispatched; when it returns
        True the chunks in flight finish, a checkpoint is saved and the
        result has ``status == "interrupted"``.
      checkpoint_meta: JSON-able record stored with every checkpoint.
      stop_on_divergence: stop at the end of the chunk where a run first
        reports ``nonfinite`` (status ``"diverged"``, that chunk's metrics
        delivered, its state neither continued nor saved). When False (the
        default here, for sweeps where some settings are expected to blow
        up) all runs train to the end and ``divergence`` lists the runs
        that went non-finite; ``train`` stops by default.
      wait_for_checkpoint: return once the final checkpoint is written (the
        default). False returns while its files are still being written in
        the background (the device arrays are already copied), so the caller
        can do its own end work meanwhile; it must then call
        ``checkpointer.wait()`` or ``close()`` before relying on the files
        (the CLI does so before it writes summary.json).
    """
    mesh = make_mesh() if mesh is None else mesh
    num_runs = int(keys.shape[0])
    check_divisible(num_runs, mesh)
    schedule = chunk_schedule(algo.num_updates, num_chunks)
    starts = [0, *np.cumsum(schedule).tolist()]  # starts[c]: updates done before chunk c
    sharding = NamedSharding(mesh, P(RUN_AXIS))
    replicated = NamedSharding(mesh, P())

    def first_update(c: int) -> jax.Array:
        """The global index of chunk ``c``'s first update, as the chunk's replicated input."""
        return distributed.put_global(np.int32(starts[c]), replicated)

    # every process holds the same keys/hypers; each places its own shards
    keys, hypers = distributed.put_global((keys, hypers), sharding)
    if resume and checkpointer is None:
        raise ValueError("resume=True needs a checkpointer to read the checkpoint from")

    init_fn = _sharded(algo.init, mesh, donate=False, sequential=init_sequentially(mesh))
    compile_seconds = 0.0
    t0 = time.perf_counter()
    if resume:
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding, weak_type=x.weak_type),
            jax.eval_shape(init_fn, keys, hypers),
        )
        restored = checkpointer.restore(abstract)
        _check_resumable(restored, schedule, num_runs)
        state, first_chunk = restored.state, restored.chunk
        host_metrics = [episode_metrics_as_nan(restored.metrics)] if restored.update > 0 else []
        # Lower with the avals of a fresh init (weak types included): the same
        # program as the uninterrupted run, so the results are bit-identical.
        lower_as = jax.tree.map(
            lambda x, a: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding, weak_type=a.weak_type),
            state,
            abstract,
        )
    else:
        init = init_fn.lower(keys, hypers).compile()
        compile_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        state = jax.block_until_ready(init(keys, hypers))
        first_chunk, host_metrics, lower_as = 0, [], state
    init_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    compiled = {}
    for length in sorted(set(schedule[first_chunk:])):
        fn = _sharded(_scan_updates(algo, length), mesh, donate=True, in_axes=(0, 0, None))
        compiled[length] = fn.lower(lower_as, hypers, first_update(0)).compile()
    # a checkpoint's copy of the state, so that the next chunk can reuse the state's buffers
    # while the copy is written; None: the save waits for its chunk instead
    copy_state = None
    saves_mid_run = checkpointer is not None and (checkpointer.every > 0 or checkpointer.seconds > 0)
    if saves_mid_run and len(schedule) - first_chunk > 1:
        stats = jax.local_devices()[0].memory_stats() or {}
        if copy_fits(state, compiled[schedule[first_chunk]].memory_analysis(), stats.get("bytes_limit")):
            copy_state = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree)).lower(state).compile()
    compile_seconds += time.perf_counter() - t0

    t0 = time.perf_counter() - init_seconds  # run time counts initialisation too
    pending: list[tuple[int, int, Any]] = []
    divergence: list[Divergence] = []
    status = "completed"
    meta = {
        "schedule": schedule,
        "num_runs": num_runs,
        "num_updates": algo.num_updates,
        "steps_per_update": algo.steps_per_update,
        "agent": algo.name,
        **(checkpoint_meta or {}),
    }

    def drain(item) -> bool:
        """Hand one finished chunk to the host; whether it diverged."""
        start, length, metrics = item
        host = episode_metrics_as_nan(distributed.to_host(metrics))
        report = ChunkReport(start, length, host, time.perf_counter() - t0)
        host_metrics.append(report.metrics)
        if on_chunk is not None:
            on_chunk(report)
        seen = {d.run for d in divergence}
        divergence.extend(d for d in _divergences(report.metrics, start) if d.run not in seen)
        return bool(divergence) and stop_on_divergence

    def save(chunks_done: int, saved: Any) -> None:
        """Save ``saved``, the state after ``chunks_done`` chunks, whose metrics are all drained."""
        checkpointer.save(
            saved,
            update=starts[chunks_done],
            chunk=chunks_done,
            metrics=_concat(host_metrics),
            meta=meta,
        )

    snapshot: tuple[int, Any] | None = None  # (chunks done, copy of the state then), saved once drained
    chunk = first_chunk
    while chunk < len(schedule):
        if should_stop is not None and should_stop():
            status = "interrupted"
            break
        length = schedule[chunk]
        state, metrics = compiled[length](state, hypers, first_update(chunk))
        pending.append((starts[chunk], length, metrics))
        chunk += 1
        last = chunk == len(schedule)
        stopping = False
        # the chunk just dispatched computes while the host logs the one before it
        while len(pending) > 1 and not stopping:
            stopping = drain(pending.pop(0))
        if snapshot is not None and not stopping:  # drained up to its chunk; the next one computes
            save(*snapshot)
        snapshot = None  # a snapshot of a chunk that diverged is never saved
        while last and pending and not stopping:  # after the last chunk everything is drained
            stopping = drain(pending.pop(0))
        if stopping:
            status = "diverged"
            break
        if last:  # the final checkpoint is saved once the clock has stopped, below
            break
        if checkpointer is not None and checkpointer.due(chunk, len(schedule)):
            if copy_state is not None:  # copied before the next chunk reuses the buffers
                snapshot = (chunk, copy_state(state))
                continue
            while pending and not stopping:  # no copy: the save waits for its chunk
                stopping = drain(pending.pop(0))
            if stopping:
                status = "diverged"
                break
            save(chunk, state)
    if status == "interrupted":
        while pending:
            if drain(pending.pop(0)):
                status = "diverged"
                break
    jax.block_until_ready(state)  # a diverged run's chunk in flight is discarded
    # training ends here: the chunks, their metrics on the host and any checkpoint saved mid-run;
    # the final checkpoint's copy and files are not training time
    run_seconds = time.perf_counter() - t0
    if checkpointer is not None and status != "diverged" and chunk > 0:
        # after the last chunk, or a stop request: what a snapshot taken then would hold too
        save(chunk, state)
    if checkpointer is not None and wait_for_checkpoint:
        checkpointer.wait()

    return TrainResult(
        state=state,
        metrics=_concat(host_metrics),
        keys=keys,
        hypers=hypers,
        steps_per_update=algo.steps_per_update,
        compile_seconds=compile_seconds,
        run_seconds=run_seconds,
        num_chunks=len(schedule),
        status=status,
        divergence=divergence,
        start_update=starts[first_chunk],
        checkpoint_step=None if checkpointer is None else checkpointer.latest_step(),
        algo=algo,
    )


def episode_metrics_as_nan(metrics: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Host metrics with the per-episode means set to NaN where no episode ended.

    Agents report ``episode_return``/``episode_length`` as means over the
    episodes that ended in an update, which is 0 inside the jitted update
    where ``episodes == 0``; on the host such a 0 would read as a
    measurement, so it becomes NaN. Other metrics are returned as they are.
    """
    from rl.host.sinks import EPISODE_COUNT, PER_EPISODE_METRICS

    counts = metrics.get(EPISODE_COUNT)
    if counts is None:
        return metrics
    ended = np.asarray(counts) > 0
    out = dict(metrics)
    for name in PER_EPISODE_METRICS:
        if name in out:
            values = np.asarray(out[name])
            dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.float64
            out[name] = np.where(ended, values, np.nan).astype(dtype)
    return out


def _concat(host_metrics: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Chunks of ``[N, L]`` metrics joined along the update axis."""
    if not host_metrics:
        return {}
    return {k: np.concatenate([m[k] for m in host_metrics], axis=1) for k in host_metrics[0]}


def _check_resumable(restored: Any, schedule: list[int], num_runs: int) -> None:
    """The checkpoint must come from this batch of runs with this chunk schedule."""
    saved = restored.meta
    if saved.get("num_runs") != num_runs:
        raise ConfigError(
            "num_seeds", num_runs, f"the checkpoint holds {saved.get('num_runs')} runs; resume with the same seeds"
        )
    if saved.get("schedule") != schedule:
        raise ConfigError(
            "num_chunks",
            len(schedule),
            f"the checkpoint was saved with the chunk schedule {saved.get('schedule')} but this run "
            f"splits its updates as {schedule}; resume with the num_chunks and config it was started with",
        )


def train(
    algo: Algorithm,
    hyper: Hyper,
    seeds: Sequence[int] | int = 1,
    *,
    num_chunks: int = 1,
    mesh: jax.sharding.Mesh | None = None,
    on_chunk: Callable[[ChunkReport], None] | None = None,
    checkpointer: Any = None,
    resume: bool = False,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_meta: dict[str, Any] | None = None,
    stop_on_divergence: bool = True,
    wait_for_checkpoint: bool = True,
) -> TrainResult:
    """Train ``algo`` with ``hyper`` on every seed in parallel.

    ``hyper`` is a pytree of scalars, or of equal-length 1-D arrays (H values
    each) to train H hyperparameter settings at once; the runs are then laid
    out hyper-major, run ``h * S + s`` having ``hyper[h]`` and ``seeds[s]``,
    all in one compile. ``hyper.validate()`` is called first when it exists.
    Checkpointing, resuming and stopping: see :func:`run_batch`; here a NaN or
    inf stops training by default (``stop_on_divergence``).
    """
    seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("seeds", seeds, "give at least one seed")
    if hasattr(hyper, "validate"):
        hyper.validate()
    leaves = jax.tree.leaves(hyper)
    dims = {np.ndim(x) for x in leaves}
    if dims <= {0}:
        keys = seed_keys(seeds)
        hypers = broadcast_hyper(hyper, len(seeds))
    elif dims <= {0, 1} and len({np.shape(x)[0] for x in leaves if np.ndim(x) == 1}) == 1:
        # H settings: 1-D fields give one value per setting, scalars are shared
        h = next(np.shape(x)[0] for x in leaves if np.ndim(x) == 1)
        keys = seed_keys(seeds * h)
        hypers = jax.tree.map(
            lambda x: jnp.repeat(jnp.broadcast_to(jnp.asarray(x, jnp.float32), (h,)), len(seeds)), hyper
        )
    else:
        raise ConfigError("hyper", hyper, "each field must be a scalar or a 1-D array, all 1-D arrays of one length")
    result = run_batch(
        algo,
        keys,
        hypers,
        num_chunks=num_chunks,
        mesh=mesh,
        on_chunk=on_chunk,
        checkpointer=checkpointer,
        resume=resume,
        should_stop=should_stop,
        checkpoint_meta=checkpoint_meta,
        stop_on_divergence=stop_on_divergence,
        wait_for_checkpoint=wait_for_checkpoint,
    )
    result.seeds = seeds * (int(keys.shape[0]) // len(seeds))  # run h * S + s has seeds[s]
    return result
