"""Metric sinks: where the host writes each chunk of training metrics.

The training engine runs a batch of N runs and hands the host one chunk at a time:
``metrics[name]`` of shape ``[N, L]`` (L updates in the chunk), ``first_update`` (global index of
the chunk's first update) and ``steps_per_update`` (environment steps per update per run).

Row-based sinks (:class:`CsvSink`, :class:`JsonlSink`) write one row per (run, update) with the
columns: the run's labels (e.g. ``config``, ``seed``, ``learning_rate``), ``update``,
``env_steps = (update + 1) * steps_per_update`` (per run), then every metric as a float.
Per-episode metrics (``episode_return``, ``episode_length``) are written as missing (empty CSV
cell, JSON ``null``) where ``episodes == 0``, never as a fake 0; so is any NaN value (and, in
JSON, which has no infinities, any infinite one). Floats are written as the shortest decimal that
round-trips at their own precision (float32 0.1 as ``0.1``). Files are
flushed and fsynced after every chunk, so a crash loses nothing already written. With
``resume=True`` they are appended to without a second header; rows of updates after the last
checkpoint may then appear twice, and readers should keep the last row per (run, update).

:class:`TensorBoardSink` imports tensorboardX lazily, so the other sinks work without it. It writes
its event file in the calling thread (not tensorboardX's background writer thread), so a failed
write (full disk, file size limit) raises an ``OSError`` in the training loop like any other sink,
instead of killing a thread and leaving the loop blocked on its queue.

:class:`WandbSink` logs the same curves as TensorBoard (:func:`summary_curves`) and the run config to
Weights & Biases; wandb is an optional extra (``pip install -e ".[wandb]"``), imported lazily, and a
missing package is one error naming the extra (:func:`import_wandb`).
"""

from __future__ import annotations

import abc
import contextlib
import csv
import json
import math
import os
import struct
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol, Self, runtime_checkable

import numpy as np

__all__ = [
    "PER_EPISODE_METRICS",
    "CsvSink",
    "JsonlSink",
    "MetricSink",
    "MultiSink",
    "TensorBoardSink",
    "WandbSink",
    "chunk_table",
    "csv_cells",
    "csv_text",
    "import_wandb",
    "scalar_event",
    "label_value",
    "masked_metrics",
    "summary_curves",
]

# Metrics that are a mean over the episodes completed in an update: undefined where episodes == 0.
PER_EPISODE_METRICS: tuple[str, ...] = ("episode_return", "episode_length")
# Name of the metric that counts the episodes completed in an update.
EPISODE_COUNT = "episodes"
# Columns every row has between the run labels and the metrics.
INDEX_COLUMNS: tuple[str, ...] = ("update", "env_steps")
# TensorBoardSink logs per-run curves only up to this many runs (beyond that they are unreadable).
MAX_RUNS_PER_RUN_CURVES = 16

Metrics = Mapping[str, np.ndarray]
Labels = Mapping[str, Any]


@runtime_checkable
class MetricSink(Protocol):
    """Receives metric chunks of shape ``[N, L]`` from the training loop."""

    def write(self, metrics: Metrics, first_update: int, steps_per_update: int) -> None:
        """Record one chunk: ``metrics[name][n, l]`` belongs to run n at update ``first_update + l``."""
        ...

    def close(self) -> None:
        """Flush and release the sink's resources; no write may follow."""
        ...


class _ClosingSink(abc.ABC):
    """Context-manager support for sinks: ``with CsvSink(...) as sink:`` closes it on exit."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush and release the sink's resources."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _FileSink(_ClosingSink):
    """A sink appending rows to one file ``self._file`` at ``self.path``."""

    path: Path
    _file: IO[str]

    def close(self) -> None:
        """Sync and close the file (idempotent; closed even when the sync fails)."""
        if not self._file.closed:
            try:
                with _naming(self.path):
                    _sync(self._file)
            finally:
                with contextlib.suppress(OSError):  # the buffered rest cannot be written either
                    self._file.close()


def label_value(value: Any) -> Any:
    """A run label as a plain Python scalar, for CSV and JSON.

    NumPy and JAX scalars become Python scalars; floats keep the shortest decimal that round-trips
    at their own precision, so a float32 learning rate of 3e-4 is written ``0.0003`` (not
    ``0.0003000000142492354``) and matches the config value when filtering results.
    """
    if hasattr(value, "dtype") and np.ndim(value) == 0:
        value = np.asarray(value)[()]
    if isinstance(value, np.floating):
        return float(str(value))
    if isinstance(value, np.generic):
        return value.item()
    return value


def _check_chunk(metrics: Metrics, num_runs: int, first_update: int, steps_per_update: int) -> int:
    """Validate a chunk against the sink's runs; returns the number of updates L."""
    if not metrics:
        raise ValueError("metrics is empty; pass at least one metric array of shape [N, L].")
    if first_update < 0 or steps_per_update <= 0:
        raise ValueError(f"need first_update >= 0 and steps_per_update > 0, got {first_update} and {steps_per_update}.")
    shapes = {name: np.shape(array) for name, array in metrics.items()}
    first_shape = next(iter(shapes.values()))
    if len(first_shape) != 2 or any(shape != first_shape for shape in shapes.values()):
        raise ValueError(f"every metric must have the same shape [N, L]; got {shapes}.")
    if first_shape[0] != num_runs:
        raise ValueError(
            f"metrics have {first_shape[0]} runs but the sink has {num_runs} run labels; pass one label dict per run."
        )
    missing_count = [name for name in PER_EPISODE_METRICS if name in metrics and EPISODE_COUNT not in metrics]
    if missing_count:
        raise ValueError(f"{missing_count} need the '{EPISODE_COUNT}' metric to tell where they are defined.")
    return first_shape[1]


def _as_float(array: Any) -> np.ndarray:
    """A host copy of `array` as floats: float dtypes kept (float32 stays float32), others float64."""
    array = np.asarray(array)
    return array if np.issubdtype(array.dtype, np.floating) else array.astype(np.float64)


def masked_metrics(metrics: Metrics) -> dict[str, np.ndarray]:
    """Float copies of the metrics with per-episode metrics set to NaN where ``episodes == 0``."""
    out = {name: _as_float(array) for name, array in metrics.items()}
    if EPISODE_COUNT in out:
        no_episode = out[EPISODE_COUNT] <= 0
        for name in PER_EPISODE_METRICS:
            if name in out:
                out[name] = np.where(no_episode, np.nan, out[name])
    return out


def _label_columns(run_labels: Sequence[Labels]) -> tuple[str, ...]:
    """The label keys shared by every run, in the order of the first run's labels."""
    if not run_labels:
        raise ValueError("run_labels is empty; pass one label dict per run, e.g. [{'seed': 0}, {'seed': 1}].")
    columns = tuple(run_labels[0])
    for index, labels in enumerate(run_labels):
        if set(labels) != set(columns):
            raise ValueError(
                f"run {index} has label keys {sorted(labels)} but run 0 has {sorted(columns)}; "
                "give every run the same label keys."
            )
    reserved = set(columns) & set(INDEX_COLUMNS)
    if reserved:
        raise ValueError(f"label keys {sorted(reserved)} clash with the columns {INDEX_COLUMNS}; rename them.")
    return columns


def chunk_table(
    run_labels: Sequence[Labels], metrics: Metrics, first_update: int, steps_per_update: int
) -> dict[str, np.ndarray]:
    """The chunk as columns of N * L rows, run-major (all updates of run 0, then run 1, ...).

    Columns in order: the label keys (object arrays of plain Python values), ``update``,
    ``env_steps = (update + 1) * steps_per_update``, then the metrics from :func:`masked_metrics`.
    """
    label_keys = _label_columns(run_labels)
    num_updates = _check_chunk(metrics, len(run_labels), first_update, steps_per_update)
    clash = set(metrics) & (set(label_keys) | set(INDEX_COLUMNS))
    if clash:
        raise ValueError(f"metric names {sorted(clash)} clash with label or index columns; rename them.")
    table: dict[str, np.ndarray] = {}
    for key in label_keys:
        per_run = np.empty(len(run_labels), dtype=object)
        per_run[:] = [label_value(labels[key]) for labels in run_labels]
        table[key] = np.repeat(per_run, num_updates)
    table["update"] = np.tile(np.arange(first_update, first_update + num_updates), len(run_labels))
    table["env_steps"] = (table["update"] + 1) * steps_per_update
    table.update((name, values.ravel()) for name, values in masked_metrics(metrics).items())
    return table


def csv_cells(column: np.ndarray) -> list[str]:
    """The CSV cells of one column, as ``pandas.DataFrame.to_csv(na_rep="")`` writes them.

    Floats: the shortest decimal that round-trips at the column's own precision (float32 0.1 as
    ``0.1``), NaN as an empty cell; integers and booleans: ``str``; anything else (the label
    columns' Python values): ``str`` of the value (None and float NaN empty), quoted as the
    ``csv`` module quotes a field holding a comma, quote or line break. Tested equal to pandas.
    """
    kind = column.dtype.kind
    if kind == "f":
        cells = column.astype(str)  # NumPy's shortest round-trip repr of each value's dtype
        cells[np.isnan(column)] = ""
        return cells.tolist()
    if kind in "iub":
        return column.astype(str).tolist()
    memo: dict[tuple[type, Any], str] = {}  # labels repeat: each distinct scalar formatted once
    cells = []
    for value in column.tolist():
        if not isinstance(value, (str, int, float)):  # None, and whatever else a label may be
            cells.append(_csv_field(value))
            continue
        key = (type(value), value)  # True and 1 are equal keys otherwise
        cell = memo.get(key)
        if cell is None:
            cell = memo[key] = _csv_field(value)
        cells.append(cell)
    return cells


def _csv_field(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = str(value)
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def csv_text(header: Sequence[str] | None, cells: Sequence[Sequence[str]]) -> str:
    """CSV lines (``\\n``-terminated) of equal-length columns of cells, after ``header`` when given."""
    lines = [",".join(_csv_field(name) for name in header)] if header is not None else []
    lines.extend(map(",".join, zip(*cells, strict=True)))
    return "\n".join(lines) + "\n" if lines else ""


def _json_column(column: np.ndarray) -> list[Any]:
    """Plain Python values of one column; non-finite floats (JSON has none) become None.

    Float32 values are widened through their shortest decimal (0.1f → 0.1, not
    0.10000000149011612), matching what the CSV sink writes.
    """
    if column.dtype.kind == "f" and column.dtype.itemsize < 8:
        column = column.astype(str).astype(np.float64)
    values = column.tolist()
    if column.dtype.kind == "O" or (column.dtype.kind == "f" and not np.all(np.isfinite(column))):
        values = [None if isinstance(v, float) and not math.isfinite(v) else v for v in values]
    return values


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Give an ``OSError`` from a write the path it was writing (a failed ``write`` names none)."""
    try:
        yield
    except OSError as err:
        if err.filename is not None or err.errno is None:
            raise
        raise OSError(err.errno, err.strerror or os.strerror(err.errno), str(path)) from err


def _sync(file: IO[str]) -> None:
    """Push written data through Python's and the OS's buffers to disk."""
    file.flush()
    os.fsync(file.fileno())


def _open_for_rows(path: Path, resume: bool) -> tuple[IO[str], bool]:
    """Open `path` for writing rows; returns the file and whether it already holds rows.

    With `resume`, an existing file is appended to, after cutting a partial last line left by a
    crash in the middle of a write.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not resume or not path.exists():
        return path.open("w", newline="", encoding="utf-8"), False
    _truncate_partial_line(path)
    has_rows = path.stat().st_size > 0
    return path.open("a", newline="", encoding="utf-8"), has_rows


def _truncate_partial_line(path: Path) -> None:
    """Cut the file after its last newline (drops an incomplete row from an interrupted write)."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as file:
            file.truncate(data.rfind(b"\n") + 1)


class CsvSink(_FileSink):
    """Writes one CSV row per (run, update); missing values are empty cells.

    The header (label columns, ``update``, ``env_steps``, metric names in the order of the first
    chunk) is written with the first chunk; later chunks must carry the same metric names. With
    ``resume=True`` an existing file is appended to and its header must match. Floats are written
    as the shortest decimal that round-trips at their dtype's precision (:func:`csv_cells`).
    """

    def __init__(self, path: str | os.PathLike[str], run_labels: Sequence[Labels], resume: bool = False) -> None:
        self.path = Path(path)
        self._run_labels = list(run_labels)
        _label_columns(self._run_labels)
        self._file, has_rows = _open_for_rows(self.path, resume)
        self._columns: list[str] | None = self._existing_header() if has_rows else None

    def _existing_header(self) -> list[str]:
        with self.path.open(newline="", encoding="utf-8") as file:
            return next(csv.reader(file))

    def _check_columns(self, columns: list[str]) -> None:
        if self._columns is not None and self._columns != columns:
            raise ValueError(
                f"{self.path} has columns {self._columns} but this chunk gives {columns}; "
                "log the same metrics every chunk, or write to a new file instead of resuming."
            )

    def write(self, metrics: Metrics, first_update: int, steps_per_update: int) -> None:
        """Append one row per (run, update) of the chunk and sync the file."""
        table = chunk_table(self._run_labels, metrics, first_update, steps_per_update)
        columns = list(table)
        self._check_columns(columns)
        text = csv_text(columns if self._columns is None else None, [csv_cells(c) for c in table.values()])
        with _naming(self.path):
            self._file.write(text)
            self._columns = columns
            _sync(self._file)


class JsonlSink(_FileSink):
    """Writes one JSON object per line and per (run, update); missing values are ``null``."""

    def __init__(self, path: str | os.PathLike[str], run_labels: Sequence[Labels], resume: bool = False) -> None:
        self.path = Path(path)
        self._run_labels = list(run_labels)
        _label_columns(self._run_labels)
        self._file, _ = _open_for_rows(self.path, resume)

    def write(self, metrics: Metrics, first_update: int, steps_per_update: int) -> None:
        """Append one line per (run, update) of the chunk and sync the file."""
        table = chunk_table(self._run_labels, metrics, first_update, steps_per_update)
        keys = list(table)
        columns = [_json_column(column) for column in table.values()]
        encode = json.JSONEncoder(allow_nan=False).encode
        lines = [encode(dict(zip(keys, row, strict=True))) + "\n" for row in zip(*columns)]
        with _naming(self.path):
            self._file.writelines(lines)
            _sync(self._file)


def _run_mean(values: np.ndarray) -> np.ndarray:
    """``[L]`` mean over runs of ``[N, L]`` values, ignoring NaN; NaN where every run is NaN."""
    defined = ~np.isnan(values)
    total = np.where(defined, values, 0.0).sum(axis=0)
    count = defined.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def summary_curves(metrics: Metrics, num_runs: int) -> list[tuple[str, np.ndarray]]:
    """The curves of a chunk that TensorBoard and W&B show: ``(tag, [L] values)``, NaN where undefined.

    ``<metric>/mean`` over runs for every metric (per-episode metrics over the runs that completed
    an episode in that update); with several runs, the per-episode metrics' spread over runs
    (:func:`rl.host.aggregate.over_seeds`: ``/iqm``, ``/median``, ``/q05``, ``/q25``, ``/q75``, ``/q95``,
    ``/min``, ``/max``); and ``episode_return/run_<i>`` per run up to 16 runs. The work grows with
    the updates and the metrics, not with the runs.
    """
    masked = masked_metrics(metrics)
    curves = [(f"{name}/mean", _run_mean(values)) for name, values in masked.items()]
    if num_runs > 1:
        from rl.host.aggregate import QUANTILE_TAGS, over_seeds  # lazy: rl.host.aggregate imports this module

        for name in PER_EPISODE_METRICS:
            if name in masked:
                spread = over_seeds(masked[name])
                curves += [(f"{name}/{stat}", spread[stat]) for stat in QUANTILE_TAGS]
    if "episode_return" in masked and num_runs <= MAX_RUNS_PER_RUN_CURVES:
        curves += [(f"episode_return/run_{run}", values) for run, values in enumerate(masked["episode_return"])]
    return curves


class TensorBoardSink(_ClosingSink):
    """Logs each metric's mean over runs per update to TensorBoard (via tensorboardX).

    The global step is the number of environment steps per run, ``(update + 1) *
    steps_per_update``. Tags: ``<metric>/mean`` for every metric (per-episode metrics average only
    the runs that completed an episode in that update, and are skipped where none did), and
    ``episode_return/run_<i>`` per run when there are at most 16 runs. With several runs, the
    per-episode metrics also get their spread over runs (:func:`rl.host.aggregate.over_seeds`):
    ``<metric>/iqm``, ``/median``, ``/q05``, ``/q25``, ``/q75``, ``/q95``, ``/min``, ``/max``. The
    run labels are logged once as text under ``run_labels``.

    ``resume_from_update`` (a resumed run's first update) makes TensorBoard hide the points
    that the interrupted run logged from that update on (a ``SessionLog.START`` event at the
    purge step, as tensorboardX's ``purge_step`` writes), so a curve resumed from a checkpoint
    has no doubled points after it.

    Events are written synchronously with tensorboardX's ``EventsWriter`` (no writer thread), and
    each chunk is flushed and fsynced: a failed write raises ``OSError`` here.
    """

    def __init__(
        self,
        logdir: str | os.PathLike[str],
        run_labels: Sequence[Labels],
        resume_from_update: int | None = None,
        steps_per_update: int = 1,
    ) -> None:
        from tensorboardX.event_file_writer import EventsWriter  # lazy: optional backend

        self.logdir = Path(logdir)
        self._run_labels = list(run_labels)
        _label_columns(self._run_labels)
        # update u is logged at step (u + 1) * steps_per_update: purge every step past the checkpoint
        purge = None if resume_from_update is None else resume_from_update * steps_per_update + 1
        # event files are named by the second and opened "wb": a resumed writer gets a suffix of
        # its own so it can never truncate the interrupted run's file
        suffix = "" if purge is None else f".resumed-at-{resume_from_update}-pid{os.getpid()}"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._writer = EventsWriter(str(self.logdir / "events"), suffix)
        self._event_file = Path(getattr(self._writer, "_file_name", self.logdir))  # named in write errors
        self._closed = False
        if purge is None:
            from tensorboardX.summary import text

            self._add(text("run_labels", _labels_markdown(self._run_labels)), step=0)
        else:
            from tensorboardX.proto.event_pb2 import Event, SessionLog

            self._writer.write_event(
                Event(step=purge, wall_time=time.time(), session_log=SessionLog(status=SessionLog.START))
            )
        self._writer.flush()

    def _add(self, summary: Any, step: int) -> None:
        from tensorboardX.proto.event_pb2 import Event

        with _naming(self._event_file):
            self._writer.write_event(Event(summary=summary, step=int(step), wall_time=time.time()))

    def write(self, metrics: Metrics, first_update: int, steps_per_update: int) -> None:
        """Log the chunk's per-update run means and spreads (per-run returns for N <= 16), then flush."""
        num_updates = _check_chunk(metrics, len(self._run_labels), first_update, steps_per_update)
        steps = [(first_update + offset + 1) * steps_per_update for offset in range(num_updates)]
        self._add_curves(summary_curves(metrics, len(self._run_labels)), steps)
        with _naming(self._event_file):
            self._writer.flush()  # flushes and fsyncs

    def _add_curves(self, curves: Sequence[tuple[str, np.ndarray]], steps: Sequence[int]) -> None:
        """One event per step holding every curve's value at that step (NaN values left out).

        One record (and checksum) per update rather than per value: the work per chunk grows with
        its updates, not with updates x tags. The events are encoded by :func:`scalar_event`, not
        built as protobuf messages: building them took about 1.3 ms per 61-update chunk, and in
        one chunk of every 1-seed run a single message constructor took 110 to 200 ms of CPU.
        """
        heads = [_value_head(tag) for tag, _ in curves]
        with np.errstate(over="ignore"):  # protobuf's float field: a float64 beyond float32 is inf there too
            table = np.stack([np.asarray(values, dtype="<f4") for _, values in curves], axis=1)  # [L, C]
        present = (~np.isnan(table)).tolist()
        with _naming(self._event_file):
            for row, keep, step in zip(table, present, steps, strict=True):
                data = row.tobytes()  # each value's 4 little-endian bytes, as protobuf writes a float
                summary = b"".join(head + data[4 * i : 4 * i + 4] for i, head in enumerate(heads) if keep[i])
                if summary:
                    self._writer._write_serialized_event(_event_bytes(summary, int(step), time.time()))

    def close(self) -> None:
        """Flush and close the event file (idempotent)."""
        if not self._closed:
            self._closed = True
            with _naming(self._event_file):
                self._writer.close()  # flush, fsync, close


def _varint(n: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative integer."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _value_head(tag: str) -> bytes:
    """A ``Summary.value`` entry up to its float: the entry's key and length, the tag, ``simple_value``'s key."""
    name = tag.encode()
    value = (b"\x0a" + _varint(len(name)) + name if name else b"") + b"\x15"  # tag = 1 (proto3: "" omitted)
    return b"\x0a" + _varint(len(value) + 4) + value  # Summary.value = 1; simple_value = 2, a float


def _event_bytes(summary: bytes, step: int, wall_time: float) -> bytes:
    """A serialized ``Event``: wall_time = 1 (double), step = 2 (int64), summary = 5; proto3 omits zeros."""
    head = (b"\x09" + struct.pack("<d", wall_time) if wall_time else b"") + (b"\x10" + _varint(step) if step else b"")
    return head + b"\x2a" + _varint(len(summary)) + summary


def scalar_event(values: Sequence[tuple[str, float]], step: int, wall_time: float) -> bytes:
    """The TensorBoard ``Event`` of one step's scalars, serialized: what :class:`TensorBoardSink` writes.

    Byte-identical to ``Event(wall_time=..., step=..., summary=Summary(value=[Summary.Value(tag=...,
    simple_value=...)])).SerializeToString()`` (tested), without building the messages.
    """
    with np.errstate(over="ignore"):
        summary = b"".join(_value_head(tag) + np.asarray(value, "<f4").tobytes() for tag, value in values)
    return _event_bytes(summary, step, wall_time)


def _labels_markdown(run_labels: Sequence[Labels]) -> str:
    """A markdown table of the run labels, one row per run."""
    columns = list(run_labels[0])
    lines = ["| run | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for run, labels in enumerate(run_labels):
        lines.append(f"| {run} | " + " | ".join(str(label_value(labels[key])) for key in columns) + " |")
    return "\n".join(lines)


class MultiSink(_ClosingSink):
    """Forwards every chunk to several sinks; closes all of them even if one fails."""

    def __init__(self, sinks: Sequence[MetricSink]) -> None:
        self.sinks = list(sinks)

    def write(self, metrics: Metrics, first_update: int, steps_per_update: int) -> None:
        """Write the chunk to each sink in order."""
        for sink in self.sinks:
            sink.write(metrics, first_update, steps_per_update)

    def close(self) -> None:
        """Close every sink; re-raise the first error after trying them all."""
        errors: list[Exception] = []
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as error:  # noqa: BLE001 - collected and re-raised below
                errors.append(error)
        if errors:
            raise errors[0]


WANDB_EXTRA = "wandb"  # the optional dependency group of pyproject.toml that installs wandb


def import_wandb() -> Any:
    """The ``wandb`` module, or one :class:`ModuleNotFoundError` that says how to install it."""
    try:
        import wandb
    except ModuleNotFoundError as err:
        if err.name != "wandb":
            raise
        raise ModuleNotFoundError(
            f'logging to Weights & Biases needs the optional wandb package: pip install -e ".[{WANDB_EXTRA}]" '
            "(or pip install wandb)",
            name="wandb",
        ) from None
    return wandb


def _new_wandb_id() -> str:
    """A W&B run id: 8 base-36 characters, as wandb makes its own."""
    import secrets
    import string

    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


class WandbSink(_ClosingSink):
    """Logs the TensorBoard curves and the run's config to one Weights & Biases run (wandb imported lazily).

    Each update logs the curves of :func:`summary_curves` (the same tags as
    :class:`TensorBoardSink`: ``<metric>/mean``, the spread over runs of the per-episode
    metrics, ``episode_return/run_<i>`` up to 16 runs), NaN values left out, at W&B step
    ``(update + 1) * steps_per_update`` (environment steps per run, TensorBoard's global step).
    ``config`` (e.g. the run folder's ``config.json``) becomes the W&B run config. Whether
    wandb uploads or only writes its local files is wandb's own setting (``WANDB_MODE=offline``,
    ``wandb login``).

    ``state_file`` (a JSON file, e.g. in the run folder) keeps the W&B run id and the last step
    logged, rewritten after every chunk. With ``resume_from_update`` (a resumed run), the sink
    continues the W&B run of that id (``resume="allow"``) and skips the steps it already logged:
    the resumed training recomputes the updates after its checkpoint bit for bit, so those
    points are already there. Without a state file to read, a resumed run gets a new W&B run.
    A run that is not resumed gets a fresh id.
    """

    def __init__(
        self,
        run_labels: Sequence[Labels],
        *,
        project: str,
        entity: str | None = None,
        group: str | None = None,
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        directory: str | os.PathLike[str] | None = None,
        state_file: str | os.PathLike[str] | None = None,
        resume_from_update: int | None = None,
    ) -> None:
        wandb = import_wandb()
        self._run_labels = list(run_labels)
        _label_columns(self._run_labels)
        self._state_file = None if state_file is None else Path(state_file)
        state = self._read_state() if resume_from_update is not None else {}
        self.run_id: str = state.get("id") or _new_wandb_id()
        self.last_step: int = int(state.get("last_step", 0))
        self._closed = False
        self._run = wandb.init(
            project=project,
            entity=entity,
            group=group,
            name=name,
            id=self.run_id,
            resume="allow",
            config=dict(config or {}),
            dir=None if directory is None else os.fspath(directory),
            reinit="create_new",
        )  # never finish a W&B run of the caller's own
        self._write_state()

    def _read_state(self) -> dict[str, Any]:
        if self._state_file is None or not self._state_file.exists():
            return {}
        try:
            state = json.loads(self._state_file.read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _write_state(self) -> None:
        if self._state_file is None:
            return
        from rl.host.files import write_json

        record = {
            "id": self.run_id,
            "last_step": self.last_step,
            "project": self._run.project,
            "entity": self._run.entity or None,
            "name": self._run.name,
            "group": self._run.group or None,
        }
        write_json(self._state_file, record)

    def write(self, metrics: Metrics, first_update: int, steps_per_update: int) -> None:
        """Log one W&B row per update of the chunk (steps already logged are skipped)."""
        _check_chunk(metrics, len(self._run_labels), first_update, steps_per_update)
        curves = summary_curves(metrics, len(self._run_labels))
        tags = [tag for tag, _ in curves]
        table = np.stack([np.asarray(values, dtype=np.float64) for _, values in curves], axis=1).tolist()  # [L, C]
        for offset, row in enumerate(table):
            step = (first_update + offset + 1) * steps_per_update
            if step <= self.last_step:
                continue
            values = {tag: value for tag, value in zip(tags, row) if not math.isnan(value)}
            if values:
                self._run.log(values, step=step)
            self.last_step = step
        self._write_state()

    def close(self) -> None:
        """Finish the W&B run (idempotent): wandb flushes its files (and uploads, when online)."""
        if not self._closed:
            self._closed = True
            self._run.finish()
