"""Checkpoints of the whole training carry, and stopping cleanly on a signal.

A checkpoint holds, at a chunk boundary of :func:`rl.engine.runner.run_batch`:

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
and the files are written in the background. A save is due every ``every``
chunks or once ``seconds`` of wall time have passed since the last one,
whichever comes first.

Faults:

* a write that fails (full disk, file size limit, I/O error), in the
  foreground or in orbax's background thread, raises one
  :class:`CheckpointWriteError` (an ``OSError``) whose message names the folder
  and the cause in one line; the checkpoints saved before it stay as they are.
  orbax's own multi-page error logs are kept off the console meanwhile;
* :meth:`Checkpointer.restore` of the newest checkpoint falls back to the
  newest one that reads back when newer ones are damaged (truncated, zeroed or
  altered files: OCDBT checks what it reads), saying so; with
  ``set_aside_damaged`` the damaged folders are renamed ``<step>.damaged`` so
  training can save those steps again. A checkpoint whose arrays have other
  shapes than the training state (the config was changed) is not damaged: it
  raises :class:`CheckpointMismatchError` at once.

Typed PRNG keys cannot be stored by orbax; they are stored as their
``jax.random.key_data`` (uint32) and wrapped back with
``jax.random.wrap_key_data`` on restore.

:class:`StopOnSignals` turns Ctrl-C (SIGINT) and SIGTERM into a request that
the runner polls between chunks: the chunk in flight finishes, a checkpoint is
saved and the run ends as *interrupted*. A second Ctrl-C aborts at once.
"""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, NamedTuple, Self

import jax
import numpy as np

__all__ = [
    "CheckpointMismatchError",
    "CheckpointReadError",
    "CheckpointWriteError",
    "Checkpointer",
    "Restored",
    "StopOnSignals",
    "has_checkpoint",
    "short_reason",
]

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


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, file size limit, I/O error).

    ``str(error)`` is one line: the folder and the cause. The checkpoints saved
    before the failed one are kept.
    """


class CheckpointReadError(ValueError):
    """No checkpoint of the folder could be read back (every one is damaged)."""


class CheckpointMismatchError(ValueError):
    """A checkpoint holds another training state than the one asked for (config changed)."""


def short_reason(error: BaseException) -> str:
    """The cause of an I/O error in one short line (follows ``__cause__``/``__context__``).

    tensorstore reports an OS error inside a long message as ``[os_error_code='27']``;
    that becomes ``File too large (errno 27)``, as an ``OSError`` does.
    """
    seen: set[int] = set()
    err: BaseException | None = error
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        code = re.search(r"os_error_code='(\d+)'", str(err))
        if code:
            number = int(code.group(1))
            return f"{os.strerror(number)} (errno {number})"
        if isinstance(err, OSError) and err.errno is not None:
            return f"{err.strerror or os.strerror(err.errno)} (errno {err.errno})"
        err = err.__cause__ or err.__context__
    text = " ".join(str(error).split()) or type(error).__name__
    text = re.sub(r"\s*\[tensorstore_spec=.*", "", text)
    status, files = re.match(r"([A-Z][A-Z_]+): ", text), re.findall(r'local file "([^"]+)"', text)
    if status and files:  # tensorstore: "DATA_LOSS: Error opening ... local file "X": ..." -> the code and X
        return f"{status.group(1)} reading {files[-1]}"
    return text if len(text) <= 240 else text[:237] + "..."


class _QuietOrbaxErrors(logging.Filter):
    """Keeps orbax's ERROR records (a page of traceback per failed background write) off the console.

    The failure itself is raised by :class:`Checkpointer` as one :class:`CheckpointWriteError`.
    Installed on the ``absl`` logger while a Checkpointer is open.
    """

    users = 0
    lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and f"{os.sep}orbax{os.sep}" in record.pathname)


_QUIET = _QuietOrbaxErrors()


def _drop_closed_loop_callbacks() -> None:
    """Keep tensorstore's late callbacks after a failed save off the console (installed once).

    When a write fails, orbax closes the asyncio loop it ran the save on while other
    tensorstore writes are still pending; each of them then reports ``RuntimeError: Event
    loop is closed`` through ``sys.unraisablehook``, a page of tracebacks in all. Only those
    are dropped; every other unraisable exception goes to the previous hook.
    """
    previous = sys.unraisablehook
    if getattr(previous, "_drops_closed_loop_callbacks", False):
        return

    def hook(unraisable: Any) -> None:
        exc = unraisable.exc_value
        if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
            return
        previous(unraisable)

    hook._drops_closed_loop_callbacks = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook
    # and the failed writes' sibling tasks that nobody awaited any more: asyncio logs each as "Task
    # exception was never retrieved" when it is collected, possibly after the Checkpointer closed
    logging.getLogger("asyncio").addFilter(_ORBAX_TASKS)


class _OrbaxTaskErrors(logging.Filter):
    """Drops asyncio's ERROR records about orbax's own tasks and futures (their failure is already
    reported): "Task exception was never retrieved" names orbax's coroutine in the message,
    "_GatheringFuture exception was never retrieved" only in the exception's traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and _from_orbax(record))


def _from_orbax(record: logging.LogRecord) -> bool:
    """Whether the record's message or its exception's traceback runs through orbax's files."""
    marker = f"{os.sep}orbax{os.sep}"
    if marker in record.getMessage():
        return True
    exc = record.exc_info[1] if record.exc_info else None
    tb = exc.__traceback__ if exc is not None else None
    while tb is not None:
        if marker in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


_ORBAX_TASKS = _OrbaxTaskErrors()


def _quiet(on: bool) -> None:
    with _QuietOrbaxErrors.lock:
        _QuietOrbaxErrors.users += 1 if on else -1
        logger = logging.getLogger("absl")
        if _QuietOrbaxErrors.users > 0:
            logger.addFilter(_QUIET)
        else:
            logger.removeFilter(_QUIET)


def _shapes(tree: Any) -> list[tuple[tuple[int, ...], str]]:
    """Sorted (shape, dtype) of every array leaf: a layout that ignores names and order."""
    out = []
    for leaf in jax.tree.leaves(tree):
        shape = getattr(leaf, "shape", None)
        if shape is not None:
            out.append((tuple(int(d) for d in shape), str(np.dtype(getattr(leaf, "dtype", "float32")))))
    return sorted(out)


def has_checkpoint(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` holds at least one finished checkpoint."""
    path = Path(directory)
    return path.is_dir() and any(p.is_dir() and p.name.isdigit() and (p / META).exists() for p in path.iterdir())


class Checkpointer:
    """Saves and restores training carries under ``directory`` (one folder per step).

    Args:
      directory: folder of the checkpoints (created if missing).
      every: save every ``every`` chunks; 0 saves only at the end (and on an
        interrupt). The runner always saves after the last chunk.
      seconds: also save once this many seconds of wall time have passed since
        the last save (or since the first :meth:`due`, which the runner asks
        after dispatching the first chunk: compiling does not count), whichever
        of the two comes first; 0 turns the clock off.
      max_to_keep: keep only the newest checkpoints (at least 1).
      asynchronous: write files in a background thread (the default); the
        device arrays are copied to host memory before :meth:`save` returns,
        so the next chunk may reuse (donate) their buffers.
      set_aside_damaged: when :meth:`restore` falls back past damaged
        checkpoints, rename their folders ``<step>.damaged`` (kept, never
        deleted), so that training can save those steps again.
      log: where :meth:`restore` says that it fell back (default: a line on stderr).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        every: int = 0,
        seconds: float = 0.0,
        max_to_keep: int = 2,
        asynchronous: bool = True,
        set_aside_damaged: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> None:
        import orbax.checkpoint as ocp  # lazy: a heavy import, only needed when checkpointing

        from rl.errors import check

        check(
            isinstance(every, int) and not isinstance(every, bool) and every >= 0,
            "checkpoint_every",
            every,
            "must be an integer >= 0 (0 = only at the end)",
        )
        check(
            isinstance(seconds, (int, float))
            and not isinstance(seconds, bool)
            and math.isfinite(seconds)
            and seconds >= 0,
            "checkpoint_seconds",
            seconds,
            "must be a finite number of seconds >= 0 (0 = off)",
        )
        check(
            isinstance(max_to_keep, int) and not isinstance(max_to_keep, bool) and max_to_keep >= 1,
            "keep_checkpoints",
            max_to_keep,
            "must be an integer >= 1",
        )
        self.directory = Path(directory).absolute()
        self.every = every
        self.seconds = float(seconds)
        self.max_to_keep = max_to_keep
        self.set_aside_damaged = set_aside_damaged
        self.damaged: dict[int, str] = {}  # step -> why it could not be read (filled by restore)
        self._log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._ocp = ocp
        self._last_save: float | None = None  # the clock starts at the first due()
        self._failed: CheckpointWriteError | None = None
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=asynchronous
        )
        handlers = {
            STATE: ocp.StandardCheckpointHandler(),
            METRICS: ocp.StandardCheckpointHandler(),
            META: ocp.JsonCheckpointHandler(),
        }
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)
        _quiet(True)
        _drop_closed_loop_callbacks()

    # ------------------------------------------------------------------ queries

    def steps(self) -> list[int]:
        """The saved steps (updates done), oldest first."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """Updates done at the newest checkpoint, or None when there is none."""
        return self._manager.latest_step()

    def due(self, chunks_done: int, num_chunks: int) -> bool:
        """Whether to save after ``chunks_done`` of ``num_chunks`` chunks.

        After the last chunk, every ``every`` chunks, and once ``seconds`` have
        passed since the last save: whichever comes first.
        """
        now = time.monotonic()
        if self._last_save is None:
            self._last_save = now
        if chunks_done >= num_chunks:
            return True
        if self.every > 0 and chunks_done % self.every == 0:
            return True
        return self.seconds > 0 and now - self._last_save >= self.seconds

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
        Raises :class:`CheckpointWriteError` when this save, or an earlier
        asynchronous one still being written, fails.
        """
        if self._failed is not None:
            raise self._failed
        if update in self._manager.all_steps():
            return  # already saved (e.g. an interrupt right after a resume)
        record = {**(meta or {}), "update": int(update), "chunk": int(chunk), "key_impls": _key_impls(state)}
        ocp = self._ocp
        args = ocp.args.Composite(
            **{
                STATE: ocp.args.StandardSave(_keys_to_data(state)),
                METRICS: ocp.args.StandardSave({k: np.asarray(v) for k, v in metrics.items()}),
                META: ocp.args.JsonSave(record),
            }
        )
        with self._writing():
            self._manager.save(update, args=args)
        self._last_save = time.monotonic()

    def _writing(self):
        """Context turning any failure of an orbax write into one :class:`CheckpointWriteError`."""
        import contextlib

        @contextlib.contextmanager
        def guard():
            try:
                yield
            except CheckpointWriteError:
                raise
            except Exception as err:  # orbax/tensorstore raise ValueError, OSError, RuntimeError ...
                self._failed = CheckpointWriteError(
                    f"could not write a checkpoint in {self.directory}: {short_reason(err)}"
                )
                raise self._failed from err

        return guard()

    def readable_meta(self) -> tuple[int, dict[str, Any]] | None:
        """``(step, meta)`` of the newest checkpoint whose ``meta`` record reads back, or None.

        Reads no arrays: a quick look at what a resume would continue from.
        """
        for step in reversed(self.steps()):
            try:
                return step, self.read_meta(step)
            except Exception:  # noqa: BLE001 - a damaged record: look at the next older one
                continue
        return None

    def restore(self, abstract_state: Any, step: int | None = None) -> Restored:
        """Read checkpoint ``step`` (default: the newest readable one) into the layout of ``abstract_state``.

        ``abstract_state`` is the carry's structure as ``jax.ShapeDtypeStruct``
        leaves (``jax.eval_shape`` of the init), with shardings where the
        arrays should be placed. The tree structure (NamedTuples, dataclasses)
        comes from it; values come from the checkpoint.

        Without ``step``, a damaged newest checkpoint is skipped for the newest
        one that reads back, and ``log`` says so (see the class docstring).

        Raises:
          CheckpointMismatchError: the checkpoint's arrays have other shapes
            than ``abstract_state`` (the config changed since it was saved).
          CheckpointReadError: no checkpoint (or not ``step``) could be read.
          FileNotFoundError: there is no checkpoint at all.
        """
        if step is not None:
            return self._restore_step(abstract_state, self._step(step))
        steps = self.steps()
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        failures: list[str] = []
        for candidate in reversed(steps):
            try:
                restored = self._restore_step(abstract_state, candidate)
            except CheckpointReadError as err:
                self.damaged[candidate] = short_reason(err.__cause__ or err)
                failures.append(f"update {candidate}: {self.damaged[candidate]}")
                continue
            if self.damaged:
                bad = sorted(self.damaged, reverse=True)
                self._log(
                    f"warning: the checkpoint(s) at update {', '.join(map(str, bad))} in {self.directory} "
                    f"cannot be read ({self.damaged[bad[0]]}); using the newest good one, at update "
                    f"{candidate}"
                    + ("; the damaged folder(s) are kept as <update>.damaged" if self.set_aside_damaged else "")
                )
                if self.set_aside_damaged:
                    self._set_aside(bad)
            return restored
        raise CheckpointReadError(f"no checkpoint in {self.directory} can be read: " + "; ".join(failures))

    def _restore_step(self, abstract_state: Any, step: int) -> Restored:
        """Read one checkpoint; damage -> CheckpointReadError, other shapes -> CheckpointMismatchError."""
        where = self.directory / str(step)
        try:
            meta = self.read_meta(step)
            stored = self._manager.item_metadata(step)[STATE]
            layout = _shapes(stored)
        except Exception as err:  # noqa: BLE001 - unreadable metadata: the checkpoint is damaged
            raise CheckpointReadError(f"checkpoint {where} cannot be read: {short_reason(err)}") from err
        target = _abstract_storable(abstract_state)
        if layout != _shapes(target):
            raise CheckpointMismatchError(
                f"checkpoint {where} does not fit this algorithm's training state (its arrays have other "
                "shapes: was the config changed since it was saved?)"
            )
        ocp = self._ocp
        args = ocp.args.Composite(
            **{
                STATE: ocp.args.StandardRestore(target),
                METRICS: ocp.args.StandardRestore(),
            }
        )
        try:
            out = self._manager.restore(step, args=args)
            state = _data_to_keys(out[STATE], abstract_state, meta.get("key_impls", []))
            metrics = {k: np.asarray(v) for k, v in dict(out[METRICS]).items()}
            return Restored(state, metrics, int(meta["update"]), int(meta["chunk"]), meta)
        except Exception as err:  # noqa: BLE001 - the layout fits, so a failed read is damage
            raise CheckpointReadError(f"checkpoint {where} cannot be read: {short_reason(err)}") from err

    def _set_aside(self, steps: list[int]) -> None:
        """Rename damaged checkpoint folders ``<step>.damaged`` (``.damaged-2`` ... if taken)."""
        for step in steps:
            source = self.directory / str(step)
            target, i = self.directory / f"{step}.damaged", 1
            while target.exists():
                i += 1
                target = self.directory / f"{step}.damaged-{i}"
            source.rename(target)
        self._manager.reload()

    def wait(self) -> None:
        """Block until every pending (asynchronous) save is on disk.

        Raises :class:`CheckpointWriteError` when one of them failed.
        """
        if self._failed is not None:
            raise self._failed
        with self._writing():
            self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the manager (idempotent).

        Raises :class:`CheckpointWriteError` when a pending save fails, after
        releasing the manager; after a failure already raised it only releases.
        """
        if self._manager is None:
            return
        manager, failed = self._manager, self._failed
        self._manager = None  # type: ignore[assignment]
        try:
            if failed is None:
                with self._writing():
                    manager.wait_until_finished()
        finally:
            try:
                manager.close()
            except Exception:  # noqa: BLE001 - closing after a failed write may fail again
                if failed is None and self._failed is None:
                    raise
            finally:
                _quiet(False)  # orbax's own report of a failed write stays filtered until here

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
            raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory}; saved steps: {steps}")
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
        print(f"\n{name} received: {text} (Ctrl-C again to abort at once)", file=self._file or sys.stderr, flush=True)

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
