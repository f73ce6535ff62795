"""Checkpoints of the whole training carry, and stopping cleanly on a signal.

A checkpoint holds, at a chunk boundary of :func:`rl.runner.run_batch`:

* ``state``: the complete training carry of all N runs (parameters, optimizer
  states, env states, PRNG keys, normalization statistics, replay buffers,
  counters), exactly as the next chunk would receive it;
* ``metrics``: the host copy of every per-update metric so far, ``[N, u]``,
  so a resumed run reports the whole history;
* ``meta``: where the run stands (updates and chunks done, the chunk
  schedule, the number of runs, the PRNG implementations of the key leaves).

Checkpoints live in ``<directory>/<updates done>/`` and are written by
orbax's :class:`~orbax.checkpoint.CheckpointManager`: each one is written to a
temporary folder and renamed when complete, so a crash (even ``kill -9``)
leaves the older checkpoints intact and never a half-written one that looks
finished; only the newest ``max_to_keep`` are kept. Saving is asynchronous:
:meth:`Checkpointer.save` returns once the arrays are copied off the devices
and the files are written in the background.

Typed PRNG keys cannot be stored by orbax; they are stored as their
``jax.random.key_data`` (uint32) and wrapped back with
``jax.random.wrap_key_data`` on restore.

:class:`StopOnSignals` turns Ctrl-C (SIGINT) and SIGTERM into a request that
the runner polls between chunks: the chunk in flight finishes, a checkpoint is
saved and the run ends as *interrupted*. A second Ctrl-C aborts at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Callable, NamedTuple, Self

import jax
import numpy as np

__all__ = ["Checkpointer", "Restored", "StopOnSignals", "has_checkpoint"]

# ("metrics" is reserved by orbax's CheckpointManager for its best-checkpoint bookkeeping)
STATE, METRICS, META = "state", "history", "meta"


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _key_impls(state: Any) -> list[str]:
    """The PRNG implementation name of every key leaf, in leaf order."""
    return [str(jax.random.key_impl(x)) for x in jax.tree.leaves(state) if _is_key(x)]


def _keys_to_data(state: Any) -> Any:
    """Typed key leaves -> their uint32 data (what orbax can store)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, state)


def _abstract_storable(abstract: Any) -> Any:
    """The abstract state with key leaves replaced by the shape of their uint32 data."""

    def leaf(x):
        if not _is_key(x):
            return x
        data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(x.shape, x.dtype))
        return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=getattr(x, "sharding", None))

    return jax.tree.map(leaf, abstract)


def _data_to_keys(stored: Any, abstract: Any, impls: list[str]) -> Any:
    """Wrap the uint32 data of key leaves back into typed keys (inverse of ``_keys_to_data``)."""
    impls = iter(impls)

    def leaf(data, like):
        if not _is_key(like):
            return data
        impl = next(impls)
        sharding = getattr(like, "sharding", None)
        wrap = jax.jit(lambda d: jax.random.wrap_key_data(d, impl=impl), out_shardings=sharding)
        return wrap(data)  # jitted so the keys keep the target's sharding (also across hosts)

    return jax.tree.map(leaf, stored, abstract)


class Restored(NamedTuple):
    """A checkpoint read back: the carry, the metrics so far and where the run stood."""

    state: Any  # the training carry, leading axis N, placed like the abstract target
    metrics: dict[str, np.ndarray]  # each [N, update]
    update: int  # updates done (the global index of the next update)
    chunk: int  # chunks done (the index of the next chunk in ``schedule``)
    meta: dict[str, Any]  # everything saved with it (schedule, num_runs, extra)


def has_checkpoint(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` holds at least one finished checkpoint."""
    path = Path(directory)
    return path.is_dir() and any(
        p.is_dir() and p.name.isdigit() and (p / META).exists() for p in path.iterdir()
    )


class Checkpointer:
    """Saves and restores training carries under ``directory`` (one folder per step).

    Args:
      directory: folder of the checkpoints (created if missing).
      every: save every ``every`` chunks; 0 saves only at the end (and on an
        interrupt). The runner always saves after the last chunk.
      max_to_keep: keep only the newest checkpoints (at least 1).
      asynchronous: write files in a background thread (the default); the
        device arrays are copied to host memory before :meth:`save` returns,
        so the next chunk may reuse (donate) their buffers.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        every: int = 0,
        max_to_keep: int = 2,
        asynchronous: bool = True,
    ) -> None:
        import orbax.checkpoint as ocp  # lazy: a heavy import, only needed when checkpointing

        from rl.errors import check

        check(isinstance(every, int) and not isinstance(every, bool) and every >= 0,
              "checkpoint_every", every, "must be an integer >= 0 (0 = only at the end)")
        check(isinstance(max_to_keep, int) and not isinstance(max_to_keep, bool) and max_to_keep >= 1,
              "keep_checkpoints", max_to_keep, "must be an integer >= 1")
        self.directory = Path(directory).absolute()
        self.every = every
        self.max_to_keep = max_to_keep
        self._ocp = ocp
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=asynchronous
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    # ------------------------------------------------------------------ queries

    def steps(self) -> list[int]:
        """The saved steps (updates done), oldest first."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """Updates done at the newest checkpoint, or None when there is none."""
        return self._manager.latest_step()

    def due(self, chunks_done: int, num_chunks: int) -> bool:
        """Whether to save after ``chunks_done`` of ``num_chunks`` chunks."""
        if chunks_done >= num_chunks:
            return True
        return self.every > 0 and chunks_done % self.every == 0

    def read_meta(self, step: int | None = None) -> dict[str, Any]:
        """The ``meta`` record of checkpoint ``step`` (default: the newest), no arrays."""
        step = self._step(step)
        args = self._ocp.args.Composite(**{META: self._ocp.args.JsonRestore()})
        return dict(self._manager.restore(step, args=args)[META])

    # ------------------------------------------------------------------ save / restore

    def save(
        self,
        state: Any,
        *,
        update: int,
        chunk: int,
        metrics: dict[str, np.ndarray],
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Save the carry after ``update`` updates / ``chunk`` chunks (the checkpoint's step).

        ``metrics`` are the host metrics of all updates so far (each ``[N, update]``);
        ``meta`` is any extra JSON-able record (e.g. the chunk schedule).
        """
        if update in self._manager.all_steps():
            return  # already saved (e.g. an interrupt right after a resume)
        record = {**(meta or {}), "update": int(update), "chunk": int(chunk),
                  "key_impls": _key_impls(state)}
        ocp = self._ocp
        args = ocp.args.Composite(**{
            STATE: ocp.args.StandardSave(_keys_to_data(state)),
            METRICS: ocp.args.StandardSave({k: np.asarray(v) for k, v in metrics.items()}),
            META: ocp.args.JsonSave(record),
        })
        self._manager.save(update, args=args)

    def restore(self, abstract_state: Any, step: int | None = None) -> Restored:
        """Read checkpoint ``step`` (default: the newest) into the layout of ``abstract_state``.

        ``abstract_state`` is the carry's structure as ``jax.ShapeDtypeStruct``
        leaves (``jax.eval_shape`` of the init), with shardings where the
        arrays should be placed. The tree structure (NamedTuples, dataclasses)
        comes from it; values come from the checkpoint.
        """
        step = self._step(step)
        meta = self.read_meta(step)
        ocp = self._ocp
        target = _abstract_storable(abstract_state)
        args = ocp.args.Composite(**{
            STATE: ocp.args.StandardRestore(target),
            METRICS: ocp.args.StandardRestore(),
        })
        try:
            out = self._manager.restore(step, args=args)
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"checkpoint {self.directory / str(step)} does not fit this algorithm's training "
                f"state (was the config changed since it was saved?): {err}"
            ) from None
        state = _data_to_keys(out[STATE], abstract_state, meta.get("key_impls", []))
        metrics = {k: np.asarray(v) for k, v in dict(out[METRICS]).items()}
        return Restored(state, metrics, int(meta["update"]), int(meta["chunk"]), meta)

    def wait(self) -> None:
        """Block until every pending (asynchronous) save is on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the manager (idempotent)."""
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._manager.close()
            self._manager = None  # type: ignore[assignment]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def _step(self, step: int | None) -> int:
        steps = self.steps()
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        if step is None:
            return steps[-1]
        if step not in steps:
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {self.directory}; saved steps: {steps}"
            )
        return step


class StopOnSignals:
    """While active, SIGINT (Ctrl-C) and SIGTERM ask training to stop after the current chunk.

    ``with StopOnSignals() as stop: run_batch(..., should_stop=stop)``: calling
    ``stop()`` says whether a stop was requested. The previous handlers are
    restored on exit. A second SIGINT while a stop is pending raises
    ``KeyboardInterrupt`` at once. Outside the main thread (where Python
    cannot install handlers) it does nothing and never requests a stop.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, message: str | None = None, file: Any = None) -> None:
        self.requested: str | None = None  # name of the signal that asked to stop
        self._message = message
        self._file = file
        self._previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.requested is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = name
        text = self._message or "stopping after the current chunk and saving a checkpoint"
        print(f"\n{name} received: {text} (Ctrl-C again to abort at once)",
              file=self._file or sys.stderr, flush=True)

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


ShouldStop = Callable[[], bool]
