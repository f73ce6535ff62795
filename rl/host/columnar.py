"""Per-seed metrics of many seeds as one Parquet file: ``metrics.parquet``.

A run of thousands of seeds has millions of (seed, update) rows. As CSV or JSON lines they cost
hundreds of MB and seconds of formatting per chunk; as Parquet, float32 columns compressed with
zstd (byte-stream-split encoding for the floats), they cost at most 4 bytes per value and
milliseconds per chunk, all in Arrow's C++ code.

Columns: the run labels (e.g. ``seed``), ``update`` (int32), ``env_steps`` (int64), then every
metric in the order of the first chunk: floats as float32, integer metrics (``episodes``,
``nonfinite``) as int32. Per-episode metrics are NaN where ``episodes == 0``, as in the
library's arrays. Rows are in chunk order and, within a chunk, run-major; sort by
``(seed, update)`` when the order matters.

Crash safety. While training, :class:`ParquetSink` writes each chunk as its own file
``metrics.parquet.parts/<first>-<stop>.parquet`` (updates ``first <= u < stop``), written to a
temporary file, fsynced and renamed: a crash, even ``kill -9``, leaves whole parts, never half
of one. :meth:`ParquetSink.close` compacts the parts into ``metrics.parquet`` (streamed part by
part, atomically renamed) and then removes the folder. Where both exist (a crash in between),
``metrics.parquet`` holds everything and the folder is stale. :func:`read` reads either form.

Resume. ``ParquetSink(..., resume_from_update=u)`` drops the rows of updates ``>= u`` (written
after the checkpoint the run resumes from): parts past ``u`` are deleted, and a compacted file
(a run that was stopped cleanly) is first cut to ``update < u`` and turned back into one part.
:func:`check_covers` says, before anything is changed, whether the parts cover every update a
checkpoint does.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rl.host.files import atomic_write_path, fsync_dir
from rl.host.sinks import (
    INDEX_COLUMNS,
    _check_chunk,
    _ClosingSink,
    _label_columns,
    _naming,
    label_value,
    masked_metrics,
)

__all__ = ["ParquetSink", "check_covers", "parts_folder", "read"]

PART = re.compile(r"^(\d+)-(\d+)\.parquet$")
# Rows per row group of the compacted file: parts are gathered up to this size (few seeds make tiny parts).
ROW_GROUP_ROWS = 1 << 17
COMPRESSION = "zstd"


def parts_folder(path: str | os.PathLike[str]) -> Path:
    """The folder of per-chunk parts next to ``path`` (``metrics.parquet`` -> ``metrics.parquet.parts``)."""
    path = Path(path)
    return path.with_name(path.name + ".parts")


def _parts(folder: Path) -> list[tuple[int, int, Path]]:
    """``(first, stop, path)`` of every finished part in ``folder``, by first update."""
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = PART.match(entry.name)
        if match:
            found.append((int(match.group(1)), int(match.group(2)), entry))
    return sorted(found)


def _part_name(first: int, stop: int) -> str:
    return f"{first:09d}-{stop:09d}.parquet"


def _encodings(schema: Any) -> dict[str, Any]:
    """Parquet encodings by column: float metrics byte-stream-split, the rest dictionary-encoded.

    Measured on PPO metrics (float32 losses of 256 seeds, zstd): a dictionary of all-distinct
    floats costs 5.4 bytes a value, plain 3.4, byte-stream-split 3.1; labels, update and
    integer counts repeat, and a dictionary makes them almost free.
    """
    import pyarrow as pa

    floats = [f.name for f in schema if pa.types.is_floating(f.type)]
    others = [f.name for f in schema if f.name not in floats]
    return {"compression": COMPRESSION, "use_dictionary": others or False, "use_byte_stream_split": floats or False}


def _write_table(table: Any, where: str) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, where, **_encodings(table.schema))


class ParquetSink(_ClosingSink):
    """Writes one row per (run, update) to ``path`` (``metrics.parquet``), a part per chunk.

    A :class:`rl.host.sinks.MetricSink`; see the module docstring for the layout, crash safety and
    resume. Later chunks must carry the metric names of the first. A failed write raises
    ``OSError`` naming the file, and leaves the parts written before it.

    Args:
      path: the compacted file; parts go to :func:`parts_folder` of it.
      run_labels: one dict of labels per run (e.g. ``{"seed": 3}``), the same keys for all.
      resume_from_update: continue a resumed run from this update (drops later rows first).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        run_labels: Sequence[Mapping[str, Any]],
        resume_from_update: int | None = None,
    ) -> None:
        import pyarrow as pa

        self.path = Path(path)
        self.parts = parts_folder(self.path)
        label_keys = _label_columns(run_labels)
        self._num_runs = len(run_labels)
        self._labels = {key: pa.array([label_value(labels[key]) for labels in run_labels]) for key in label_keys}
        self._metric_names: list[str] | None = None
        self._closed = False
        with _naming(self.parts):
            self.parts.mkdir(parents=True, exist_ok=True)
            if resume_from_update is not None:
                self._resume(resume_from_update)

    def _resume(self, update: int) -> None:
        """Drop every row of updates ``>= update``; a compacted file becomes part ``[0, update)`` again."""
        if self.path.exists():  # compacted: it holds every row, any parts beside it are stale
            for _, _, stale in _parts(self.parts):
                stale.unlink()
            table = _read_file(self.path)
            table = table.filter(_before(table, update))
            atomic_write_path(self.parts / _part_name(0, update), lambda tmp: _write_table(table, tmp), sync_dir=True)
            self.path.unlink()
            fsync_dir(self.path.parent)
            self._metric_names = [n for n in table.column_names if n not in self._labels and n not in INDEX_COLUMNS]
            return
        for first, stop, part in _parts(self.parts):
            if first >= update:
                part.unlink()
            elif stop > update:  # a part across the resume point (not made by the runner's schedule): cut it
                whole = _read_file(part)
                table = whole.filter(_before(whole, update))
                atomic_write_path(
                    self.parts / _part_name(first, update), lambda tmp, t=table: _write_table(t, tmp), sync_dir=True
                )
                part.unlink()
        fsync_dir(self.parts)

    def write(self, metrics: Mapping[str, np.ndarray], first_update: int, steps_per_update: int) -> None:
        """Write the chunk as one part file (atomically)."""
        import pyarrow as pa

        num_updates = _check_chunk(metrics, self._num_runs, first_update, steps_per_update)
        names = list(metrics)
        clash = set(names) & (set(self._labels) | set(INDEX_COLUMNS))
        if clash:
            raise ValueError(f"metric names {sorted(clash)} clash with label or index columns; rename them.")
        if self._metric_names is None:
            self._metric_names = names
        elif names != self._metric_names:
            raise ValueError(
                f"{self.path} has the metrics {self._metric_names} but this chunk gives {names}; "
                "log the same metrics every chunk."
            )
        runs = np.repeat(np.arange(self._num_runs), num_updates)  # run-major, as the CSV sink
        update = np.tile(np.arange(first_update, first_update + num_updates, dtype=np.int32), self._num_runs)
        columns: dict[str, Any] = {key: values.take(runs) for key, values in self._labels.items()}
        columns["update"] = update
        columns["env_steps"] = (update.astype(np.int64) + 1) * steps_per_update
        masked = masked_metrics(metrics)
        for name in names:
            raw = np.asarray(metrics[name])
            if np.issubdtype(raw.dtype, np.integer) or raw.dtype == np.bool_:
                columns[name] = raw.astype(np.int32).reshape(-1)
            else:
                columns[name] = masked[name].astype(np.float32).reshape(-1)
        table = pa.table(columns)
        target = self.parts / _part_name(first_update, first_update + num_updates)
        with _naming(target):
            atomic_write_path(target, lambda tmp: _write_table(table, tmp), sync_dir=True)

    def close(self) -> None:
        """Compact the parts into ``path`` and remove the parts folder (idempotent).

        On failure the parts stay (and :func:`read` reads them); the error is raised.
        """
        if self._closed:
            return
        self._closed = True
        with _naming(self.path):
            compact(self.path)


def compact(path: str | os.PathLike[str]) -> None:
    """Join the parts next to ``path`` into ``path`` (atomically), then remove the parts folder.

    Streams the parts in order, gathered into row groups of about :data:`ROW_GROUP_ROWS` rows, so
    memory holds one row group at a time. Nothing to do when there are no parts; a compacted file
    already there (a crash after an earlier compaction) is kept and the stale parts removed.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    folder = parts_folder(path)
    parts = _parts(folder)
    if parts and not path.exists():

        def write(tmp: str) -> None:
            schema = _read_file(parts[0][2]).schema
            with pq.ParquetWriter(tmp, schema, **_encodings(schema)) as writer:
                pending: list[Any] = []
                rows = 0
                for _, _, part in parts:
                    table = _read_file(part)
                    pending.append(table)
                    rows += table.num_rows
                    if rows >= ROW_GROUP_ROWS:
                        writer.write_table(pa.concat_tables(pending), row_group_size=rows)
                        pending, rows = [], 0
                if pending:
                    writer.write_table(pa.concat_tables(pending), row_group_size=max(rows, 1))

        atomic_write_path(path, write, sync_dir=True)
    if folder.exists():
        shutil.rmtree(folder)
        fsync_dir(path.parent)


def _read_file(path: Path) -> Any:
    import pyarrow.parquet as pq

    return pq.read_table(path)


def _before(table: Any, update: int) -> Any:
    import pyarrow.compute as pc

    return pc.less(table.column("update"), update)


def read(path: str | os.PathLike[str]) -> Any:
    """The per-seed metrics of ``path`` (``metrics.parquet``) as a pandas DataFrame.

    Reads the compacted file, or, for a run that is still going or was killed, its parts in
    order (``pd.read_parquet`` of the parts folder gives the same rows).
    """
    import pandas as pd
    import pyarrow as pa

    path = Path(path)
    if path.exists():
        return pd.read_parquet(path)
    parts = _parts(parts_folder(path))
    if not parts:
        raise FileNotFoundError(f"no {path.name} and no parts of it in {path.parent}")
    return pa.concat_tables([_read_file(part) for _, _, part in parts]).to_pandas()


def check_covers(path: str | os.PathLike[str], num_runs: int, update: int) -> str | None:
    """Why ``path`` (compacted or in parts) lacks rows of updates ``< update`` for ``num_runs`` runs; None if complete.

    Reads only Parquet footers (and, for a compacted file, its ``update`` column): quick, and
    it changes nothing.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        if path.exists():
            updates = pq.read_table(path, columns=["update"]).column("update").to_numpy()
            have = int(np.count_nonzero(updates < update))
            if have != num_runs * update:
                return f"{path} has {have} rows before update {update} but the checkpoint covers {num_runs * update}"
            return None
        covered = 0
        for first, stop, part in _parts(parts_folder(path)):
            if first >= update:
                break
            if first != covered:
                return f"{parts_folder(path)} has no part for updates {covered}..{first - 1}"
            rows = pq.read_metadata(part).num_rows
            if rows != num_runs * (stop - first):
                return f"{part} has {rows} rows, not {num_runs} runs x {stop - first} updates"
            covered = stop
        if covered < update:
            return (
                f"{path.name} covers updates before {covered} but the checkpoint covers {update}"
                if covered
                else f"{path} and its parts are missing"
            )
        return None
    except OSError as err:
        return f"{path} cannot be read: {err}"
    except Exception as err:  # noqa: BLE001 - pyarrow reports a damaged file as ArrowInvalid
        return f"{path} is damaged: {type(err).__name__}: {err}"
