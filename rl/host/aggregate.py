"""Statistics over seeds: what a run of many seeds reports per update, and at its end.

With thousands of seeds, one row per (seed, update) is more than anyone reads and more than a
terminal or a CSV file should hold. Per update, the seeds' values are summarised instead by

    count   seeds with a value (for ``episode_return``/``episode_length``: seeds where an episode ended)
    mean    mean over those seeds
    iqm     interquartile mean: the mean of the middle 50% (``scipy.stats.trim_mean(x, 0.25)``)
    min, q05, q25, median, q75, q95, max
            quantiles with linear interpolation (``np.nanquantile``'s default method)

all NaN-aware (a seed whose value is NaN, e.g. no episode ended in that update, is left out; a
statistic over no seed is NaN) and computed for a whole ``[N, L]`` chunk at once: one sort per
metric over the seed axis, then O(L) gathers, with no Python loop over seeds or updates.

:class:`AggregateCsvSink` writes these as ``metrics_over_seeds.csv`` in the long ("tidy") layout,
one row per (update, metric), so its columns do not depend on the agent's metrics::

    update, env_steps, metric, count, mean, iqm, min, q05, q25, median, q75, q95, max

``df[df.metric == "episode_return"]`` is the learning curve over seeds; the total number of
episodes in an update is ``mean * count`` of its ``episodes`` row. The file grows with the updates
only (not seeds x updates): 400 updates of 12 metrics is about 0.5 MB whatever the number of seeds.

:func:`seed_summary` and :func:`describe_seeds` summarise the seeds' final returns for
``summary.json`` and the terminal: quantiles, IQM and the worst seeds, instead of every seed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rl.host.sinks import _check_chunk, _FileSink, _naming, _open_for_rows, _sync, csv_cells, csv_text, masked_metrics

__all__ = [
    "QUANTILES",
    "QUANTILE_TAGS",
    "STATS",
    "AggregateCsvSink",
    "chunk_rows",
    "describe_seeds",
    "over_seeds",
    "row_cells",
    "seed_summary",
]

# Quantile statistics and their levels, in the order of the CSV columns.
QUANTILES: dict[str, float] = {
    "min": 0.0,
    "q05": 0.05,
    "q25": 0.25,
    "median": 0.5,
    "q75": 0.75,
    "q95": 0.95,
    "max": 1.0,
}
# Every statistic of :func:`over_seeds`, in the order of the CSV columns.
STATS: tuple[str, ...] = ("count", "mean", "iqm", *QUANTILES)
# Columns of metrics_over_seeds.csv.
COLUMNS: tuple[str, ...] = ("update", "env_steps", "metric", *STATS)
# Statistics TensorBoardSink logs per update for the per-episode metrics (besides their mean).
QUANTILE_TAGS: tuple[str, ...] = ("iqm", "median", "q05", "q25", "q75", "q95", "min", "max")
# Fraction cut from each end by the interquartile mean.
IQM_CUT = 0.25


def over_seeds(values: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics over the seed axis of ``[N, L]`` values, ignoring NaN: each ``[L]``.

    ``count`` (int64) is the number of non-NaN seeds per update; ``mean``, ``iqm`` and the
    quantiles of :data:`QUANTILES` (float64) are NaN where it is 0. The IQM cuts
    ``floor(0.25 * count)`` values from each end (as ``scipy.stats.trim_mean``); quantiles
    interpolate linearly between order statistics (as ``np.nanquantile``).

    Cost: one ``np.sort`` along the seeds, a cumulative sum and a few gathers; the work per
    update is O(N log N) in NumPy, with no Python loop over seeds or updates.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"values must be [N seeds, L updates], got shape {values.shape}.")
    num_seeds, num_updates = values.shape
    ordered = np.sort(values, axis=0)  # NaN sorts last: the first count[l] rows of column l are its values
    count = np.sum(~np.isnan(values), axis=0)
    columns = np.arange(num_updates)
    last = np.maximum(count - 1, 0)
    none = count == 0
    out: dict[str, np.ndarray] = {"count": count.astype(np.int64)}
    # prefix sums of the sorted values (NaN as 0): a sum over any sorted range is two gathers
    prefix = np.zeros((num_seeds + 1, num_updates))
    np.cumsum(np.where(np.isnan(ordered), 0.0, ordered), axis=0, out=prefix[1:])
    with np.errstate(invalid="ignore", divide="ignore"):
        out["mean"] = np.where(none, np.nan, prefix[count, columns] / np.maximum(count, 1))
        cut = np.floor(IQM_CUT * count).astype(np.int64)
        kept = count - 2 * cut  # >= count / 2 > 0 when count > 0
        middle = prefix[count - cut, columns] - prefix[cut, columns]
        out["iqm"] = np.where(none, np.nan, middle / np.maximum(kept, 1))
        for name, level in QUANTILES.items():
            position = level * last
            below = np.floor(position).astype(np.int64)
            above = np.minimum(below + 1, last)
            weight = position - below
            low, high = ordered[below, columns], ordered[above, columns]
            # (1 - w) * low + w * high, but exact at w == 0 (min, and whole positions) even for inf
            value = np.where(weight > 0, low + weight * (high - low), low)
            out[name] = np.where(none, np.nan, value)
    return out


def chunk_rows(metrics: Mapping[str, np.ndarray], first_update: int, steps_per_update: int) -> dict[str, np.ndarray]:
    """A chunk's ``[N, L]`` metrics as the rows of ``metrics_over_seeds.csv``: L x M rows, update-major.

    The per-episode metrics are NaN where ``episodes == 0`` (see :func:`rl.host.sinks.masked_metrics`),
    so their statistics are over the seeds where an episode ended. Columns: :data:`COLUMNS`;
    the statistics are float32 (the metrics' own precision) but ``count``.
    """
    num_runs = next(iter(metrics.values())).shape[0] if metrics else 0
    num_updates = _check_chunk(metrics, num_runs, first_update, steps_per_update)
    masked = masked_metrics(metrics)
    names = list(masked)
    # one call over the metrics side by side ([N, M * L]): the NumPy work per call is the same
    together = over_seeds(np.concatenate([masked[name] for name in names], axis=1)) if names else {}
    update = np.arange(first_update, first_update + num_updates)
    rows: dict[str, np.ndarray] = {
        "update": np.repeat(update, len(names)),
        "env_steps": np.repeat((update + 1) * steps_per_update, len(names)),
        "metric": np.tile(np.array(names, dtype=object), num_updates),
    }
    for stat in STATS:
        by_metric = together[stat].reshape(len(names), num_updates) if names else np.zeros((0, num_updates))
        column = by_metric.T.reshape(-1)  # [M, L] -> [L, M] -> update-major
        rows[stat] = column if stat == "count" else column.astype(np.float32)
    return rows


def row_cells(rows: Mapping[str, np.ndarray]) -> list[list[str]]:
    """The CSV cells of :func:`chunk_rows`' columns, in :data:`COLUMNS` order.

    Where the seeds agree (one seed, or all equal) every statistic equals the mean: a statistic
    is formatted only where its bits differ from the mean's, which at one seed formats each
    (update, metric) once instead of nine times. The text is the same either way (tested).
    """
    mean = np.asarray(rows["mean"], dtype=np.float32)
    mean_cells = np.asarray(csv_cells(mean), dtype=object)
    cells = []
    for name in COLUMNS:
        column = rows[name]
        if name in STATS and name != "count":
            column = np.asarray(column, dtype=np.float32)
            # bit-equal (so -0.0 is not 0.0), or both NaN (both empty cells)
            same = (column.view(np.uint32) == mean.view(np.uint32)) | (np.isnan(column) & np.isnan(mean))
            out = mean_cells.copy()
            if not same.all():
                out[~same] = csv_cells(column[~same])
            cells.append(out.tolist())
        else:
            cells.append(csv_cells(np.asarray(column)))
    return cells


class AggregateCsvSink(_FileSink):
    """Writes ``metrics_over_seeds.csv``: per update and metric, statistics over the seeds.

    A :class:`rl.host.sinks.MetricSink`. Each chunk appends L x M rows (see :func:`chunk_rows`) and is
    flushed and fsynced, as the other sinks are; a failed write raises ``OSError`` naming the
    file. Floats are written as the shortest decimal that round-trips in float32; an empty cell
    is a statistic over no seed.

    ``resume_from_update=u`` continues a resumed run: the rows of updates ``>= u`` (written after
    the checkpoint the run resumes from) are cut first, by rewriting the file atomically (it is
    small: it grows with updates, not seeds), so every (update, metric) appears once. A file
    missing then (a folder from before this file existed) is started at update ``u``.
    """

    def __init__(self, path: str | os.PathLike[str], resume_from_update: int | None = None) -> None:
        self.path = Path(path)
        if resume_from_update is not None and self.path.exists():
            with _naming(self.path):
                _cut_after(self.path, resume_from_update)
        with _naming(self.path):
            self._file, self._has_header = _open_for_rows(self.path, resume=resume_from_update is not None)

    def write(self, metrics: Mapping[str, np.ndarray], first_update: int, steps_per_update: int) -> None:
        """Append the chunk's statistics over seeds and sync the file."""
        text = csv_text(
            None if self._has_header else COLUMNS, row_cells(chunk_rows(metrics, first_update, steps_per_update))
        )
        with _naming(self.path):
            self._file.write(text)
            self._has_header = True
            _sync(self._file)


def _cut_after(path: Path, update: int) -> None:
    """Keep the header and the rows of updates ``< update``; a partial last line (a crash) goes too.

    Rewrites the file atomically, and only when something is cut.
    """
    from rl.host.files import atomic_write

    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    lines = complete.split(b"\n")[:-1]
    kept = lines[:1] + [line for line in lines[1:] if int(line.split(b",", 1)[0]) < update]
    if len(kept) == len(lines) and len(complete) == len(data):
        return
    atomic_write(path, lambda file: file.write(b"".join(line + b"\n" for line in kept)))


# ---------------------------------------------------------------------------------- final returns

WORST_SEEDS = 5  # seeds named in the terminal summary and summary.json


def seed_summary(final: np.ndarray, seeds: Sequence[int], worst: int = WORST_SEEDS) -> dict[str, Any]:
    """The spread of ``[N]`` per-seed final returns over the seeds, for ``summary.json``.

    ``final_return_iqm``, ``final_return_quantiles`` (min, q05, q25, median, q75, q95, max over
    the seeds that have a final return), ``final_return_worst`` (the ``worst`` lowest, as
    ``{"seed", "final_return"}``, lowest first) and ``final_return_missing`` (seeds with no
    episode in the window). Values are None where no seed has one.
    """
    final = np.asarray(final, dtype=np.float64)
    if final.shape != (len(seeds),):
        raise ValueError(f"final must be [N] with one seed per entry, got {final.shape} and {len(seeds)} seeds.")
    stats = over_seeds(final[:, None])
    defined = np.flatnonzero(~np.isnan(final))
    lowest = defined[np.argsort(final[defined], kind="stable")[:worst]]

    def number(x: float) -> float | None:
        return None if math.isnan(x) else float(x)

    return {
        "final_return_iqm": number(stats["iqm"][0]),
        "final_return_quantiles": {name: number(stats[name][0]) for name in QUANTILES},
        "final_return_worst": [{"seed": int(seeds[i]), "final_return": float(final[i])} for i in lowest],
        "final_return_missing": int(final.size - defined.size),
    }


def describe_seeds(summary: Mapping[str, Any]) -> list[str]:
    """Terminal lines for many seeds: the quantiles of the final return and the worst seeds.

    Reads the fields of :func:`seed_summary` from ``summary``; no line when they are absent.
    """
    quantiles = summary.get("final_return_quantiles")
    if not quantiles or quantiles.get("median") is None:
        return []
    labels = {"min": "min", "q05": "5%", "q25": "25%", "median": "median", "q75": "75%", "q95": "95%", "max": "max"}
    spread = " | ".join(f"{labels[name]} {quantiles[name]:.1f}" for name in QUANTILES)
    lines = [f"  over seeds: {spread} | IQM {summary['final_return_iqm']:.2f}"]
    worst = ", ".join(f"{w['seed']} ({w['final_return']:.1f})" for w in summary.get("final_return_worst", []))
    missing = summary.get("final_return_missing", 0)
    tail = (
        f"; {missing} seed{'s' if missing != 1 else ''} ended no episode in the last 5% of training" if missing else ""
    )
    lines.append(f"  worst seeds: {worst}{tail} (every seed: summary.json)")
    return lines
