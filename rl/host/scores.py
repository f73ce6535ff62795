"""Final scores of run and sweep folders as rliable's ``score_dict``: ``{algorithm: [runs, tasks]}``.

rliable (Agarwal et al., NeurIPS 2021) takes, per algorithm, a matrix of scores with one row per
run and one column per task; its IQM, stratified bootstrap and performance profiles all read that
layout, and so do :func:`rl.host.stats.stratified_bootstrap_ci` and :func:`rl.host.stats.performance_profile`::

    from rl.host import scores, stats
    table = scores.collect(["runs/ppo-cartpole", "runs/ppo-acrobot", "runs/dqn-cartpole", "runs/dqn-acrobot"],
                           normalize={"CartPole-v1": (0.0, 500.0), "Acrobot-v1": (-500.0, 0.0)})
    table.scores                 # {"ppo": array [8, 2], "dqn": array [8, 2]}; columns: table.tasks
    stats.stratified_bootstrap_ci(table.scores)            # IQM with a 95% CI per algorithm
    table.save("scores.npz")     # dict(np.load("scores.npz")) is the score_dict; scores.json says the rest

``python -m experiments.scores`` is the same as a command line.

Where the scores come from:

* a **run folder** (``experiments.train``, ``TrainResult.save``): ``summary.json``'s
  ``<metric>_per_seed``, by default ``final_return_per_seed`` (per seed, the episode-weighted mean
  return of the last 5% of updates). The algorithm is the agent's name, or the label given as
  ``LABEL=PATH``; the task is the env id. Folders of one algorithm and task with disjoint seeds
  (seeds 0-7 in one, 8-15 in another) are stacked as more runs, provided they hold the same
  settings (``config`` and ``hyper`` in ``config.json``); folders of different settings need
  labels of their own.
* a **sweep folder** (``experiments.sweep``, ``rl.sweep``; it has ``sweep.json``): one algorithm
  per configuration, named ``<agent>[name=value, ...]`` (after the label, if one is given), from
  the final returns per seed in its ``summary.json`` (rounded to 4 decimals there).

A matrix needs every algorithm to have a score on every task, the same number of runs on each of
its tasks, and a score for every run: a seed with no episode in the final window, a run that did
not complete, or a missing task is refused with the folder named. Rows are runs in seed order
(per task; the stratified bootstrap resamples the runs of each task on their own, so which seeds
share a row does not matter). With several tasks, raw returns on different scales make an
aggregate over tasks meaningless: ``normalize`` maps each task to ``(low, high)`` (e.g. a random
and the best known return) and the scores to ``(score - low) / (high - low)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = ["DEFAULT_METRIC", "ScoreTable", "collect", "parse_source"]

# summary.json's per-seed list read by default: "<metric>_per_seed".
DEFAULT_METRIC = "final_return"
SWEEP_FILE, SUMMARY_FILE, CONFIG_FILE = "sweep.json", "summary.json", "config.json"

Source = str | os.PathLike[str] | tuple[str | None, str | os.PathLike[str]]


class ScoreTable(NamedTuple):
    """Scores as rliable's ``score_dict``, with what each entry is."""

    scores: dict[str, np.ndarray]  # {algorithm: [runs, tasks] float64}: rliable's score_dict
    seeds: dict[str, np.ndarray]  # {algorithm: [runs, tasks] int64}: the seed behind each score
    tasks: tuple[str, ...]  # the env id of each column
    sources: dict[str, list[str]]  # {algorithm: the folders its scores come from}
    metric: str  # the summary.json field read ("final_return": training episodes of the last 5%)
    normalize: dict[str, tuple[float, float]] | None  # {task: (low, high)} applied, or None (raw)

    def save(self, path: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``path`` (``.npz``: one ``[runs, tasks]`` array per algorithm) and its ``.json`` beside it.

        ``dict(np.load(path))`` is the ``score_dict`` itself, so the ``.npz`` holds nothing else;
        the ``.json`` gives the task of each column, the seed of each score, the folders, the
        metric and the normalisation. Returns both paths.
        """
        from rl.host.files import atomic_write, write_json

        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"the scores file must end in .npz (np.savez's format), not {path.name!r}")
        meta = path.with_suffix(".json")
        atomic_write(path, lambda f: np.savez(f, **self.scores))
        record = {
            "layout": "score_dict: {algorithm: [runs, tasks]} in " + path.name + ", as rliable takes it",
            "tasks": list(self.tasks),
            "metric": self.metric,
            "normalize": None if self.normalize is None else {k: list(v) for k, v in self.normalize.items()},
            "algorithms": {
                name: {"runs": int(matrix.shape[0]), "seeds": self.seeds[name].tolist(), "sources": self.sources[name]}
                for name, matrix in self.scores.items()
            },
        }
        write_json(meta, record)
        return path, meta


@dataclass(frozen=True)
class _Block:
    """The scores of one folder (or one sweep configuration) on one task."""

    algorithm: str
    task: str
    seeds: tuple[int, ...]
    values: tuple[float, ...]
    settings: Any  # what must match for two blocks of one algorithm and task to be stacked
    source: str


def parse_source(text: str) -> tuple[str | None, str]:
    """``"PATH"`` -> ``(None, PATH)``; ``"LABEL=PATH"`` -> ``(LABEL, PATH)`` unless PATH=... is itself a folder."""
    if "=" not in text or Path(text).exists():
        return None, text
    label, _, path = text.partition("=")
    if not label.strip() or not path:
        raise ValueError(f"{text!r}: write a folder, or LABEL=FOLDER to name its algorithm")
    return label, path


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path} is missing: {path.parent} is not a finished run or sweep folder") from None
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} cannot be read ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, not an object")
    return data


def _per_seed(values: Any, seeds: Sequence[int], where: str) -> tuple[float, ...]:
    """Per-seed scores as floats; refuses a missing one (None/NaN) or a count that differs from the seeds."""
    if isinstance(values, str):  # a sweep's summary.json holds the list as JSON text
        values = json.loads(values)
    if not isinstance(values, list) or len(values) != len(seeds):
        raise ValueError(f"{where}: expected one score per seed ({len(seeds)}), got {values!r}")
    missing = [s for s, v in zip(seeds, values) if v is None or not np.isfinite(v)]
    if missing:
        raise ValueError(
            f"{where}: seed(s) {missing} have no score (no episode ended in the final window); "
            "a [runs, tasks] matrix needs every run: train longer or leave the folder out"
        )
    return tuple(float(v) for v in values)


def _run_blocks(folder: Path, label: str | None, metric: str) -> list[_Block]:
    config, summary = _read_json(folder / CONFIG_FILE), _read_json(folder / SUMMARY_FILE)
    if summary.get("status") != "completed":
        raise ValueError(f"{folder} did not complete (status {summary.get('status')!r}); resume or finish it first")
    key = f"{metric}_per_seed"
    if key not in summary:
        have = sorted(k[: -len("_per_seed")] for k in summary if k.endswith("_per_seed"))
        raise ValueError(f"{folder / SUMMARY_FILE} has no {key!r}; metrics there: {', '.join(have) or 'none'}")
    seeds = tuple(int(s) for s in summary["seeds"])
    return [
        _Block(
            algorithm=label or str(config["agent"]),
            task=str(config["env"]),
            seeds=seeds,
            values=_per_seed(summary[key], seeds, f"{folder / SUMMARY_FILE} {key}"),
            settings={"config": config.get("config"), "hyper": config.get("hyper")},
            source=str(folder),
        )
    ]


def _sweep_blocks(folder: Path, label: str | None, metric: str) -> list[_Block]:
    plan, summary = _read_json(folder / SWEEP_FILE), _read_json(folder / SUMMARY_FILE)
    if metric != DEFAULT_METRIC:
        raise ValueError(f"{folder} is a sweep: its summary.json has {DEFAULT_METRIC} per seed only, not {metric}")
    seeds = tuple(int(s) for s in plan["seeds"])
    values = {int(c["config"]): c for c in plan["configurations"]}
    blocks = []
    for row in sorted(summary["configurations"], key=lambda r: int(r["config"])):
        c = int(row["config"])
        swept = ", ".join(f"{k}={v}" for k, v in values[c].items() if k != "config")
        name = f"{label or plan['agent']}[{swept}]" if swept else (label or str(plan["agent"]))
        blocks.append(
            _Block(
                algorithm=name,
                task=str(plan["env"]),
                seeds=seeds,
                values=_per_seed(row["final_return_per_seed"], seeds, f"{folder / SUMMARY_FILE} configuration {c}"),
                settings={"sweep": str(folder), "config": c},
                source=f"{folder} (configuration {c})",
            )
        )
    return blocks


def _first_difference(a: Any, b: Any, where: str = "") -> str | None:
    """The first path where two JSON values differ, e.g. ``hyper.learning_rate``; None when equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            found = _first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else str(key))
            if found is not None:
                return found
        return None
    return None if a == b else f"{where or 'value'} ({a!r} vs {b!r})"


def _stack(blocks: list[_Block]) -> tuple[list[int], list[float], list[str]]:
    """One algorithm and task from several blocks: seeds, scores (in seed order) and sources."""
    first = blocks[0]
    for other in blocks[1:]:
        diff = _first_difference(first.settings, other.settings)
        if diff is not None:
            raise ValueError(
                f"{first.source} and {other.source} both give {first.algorithm} on {first.task} but with other "
                f"settings ({diff}); name each: LABEL=FOLDER"
            )
    pairs = sorted((s, v) for b in blocks for s, v in zip(b.seeds, b.values))
    seeds = [s for s, _ in pairs]
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(
            f"seed(s) {repeated} of {first.algorithm} on {first.task} appear in more than one of "
            f"{[b.source for b in blocks]}; leave the duplicate folder out"
        )
    return seeds, [v for _, v in pairs], [b.source for b in blocks]


def _check_normalize(
    normalize: Mapping[str, tuple[float, float]], tasks: Sequence[str]
) -> dict[str, tuple[float, float]]:
    """``{task: (low, high)}`` as floats, for exactly `tasks`, each with ``low != high``."""
    missing, unknown = [t for t in tasks if t not in normalize], sorted(set(normalize) - set(tasks))
    if missing or unknown:
        raise ValueError(
            f"normalize needs a (low, high) for exactly the tasks {list(tasks)}: "
            + (f"missing {missing}" if missing else f"unknown {unknown}")
        )
    ranges = {}
    for task in tasks:
        low, high = (float(x) for x in normalize[task])
        if not (np.isfinite(low) and np.isfinite(high) and high != low):
            raise ValueError(
                f"normalize[{task!r}] = {normalize[task]!r}: need two finite, different numbers (low, high)"
            )
        ranges[task] = (low, high)
    return ranges


def collect(
    sources: Sequence[Source], metric: str = DEFAULT_METRIC, normalize: Mapping[str, tuple[float, float]] | None = None
) -> ScoreTable:
    """The final scores of run and sweep folders as a :class:`ScoreTable` (see the module docstring).

    Args:
      sources: folders, each a path, ``"LABEL=PATH"`` or ``(label, path)``; a label names the
        algorithm of a run folder, or prefixes the configurations of a sweep.
      metric: the ``summary.json`` field ``<metric>_per_seed`` of run folders to read.
      normalize: ``{task: (low, high)}`` for every task, or None to keep raw scores.

    Raises:
      ValueError: a folder is not a finished run or sweep, a score is missing, two folders clash,
        or the scores do not form one ``[runs, tasks]`` matrix per algorithm (the message says which).
    """
    if not sources:
        raise ValueError("give at least one run or sweep folder")
    blocks: list[_Block] = []
    for source in sources:
        label, path = source if isinstance(source, tuple) else parse_source(os.fspath(source))
        folder = Path(path)
        if not folder.is_dir():
            raise ValueError(f"{str(folder)!r} is not a folder; give run folders (experiments.train) or sweep folders")
        read = _sweep_blocks if (folder / SWEEP_FILE).exists() else _run_blocks
        blocks += read(folder, label, metric)
    tasks = tuple(dict.fromkeys(b.task for b in blocks))
    grouped: dict[str, dict[str, list[_Block]]] = {}
    for block in blocks:
        grouped.setdefault(block.algorithm, {}).setdefault(block.task, []).append(block)
    scores, seeds, folders = {}, {}, {}
    for algorithm, by_task in grouped.items():
        absent = [t for t in tasks if t not in by_task]
        if absent:
            raise ValueError(
                f"{algorithm} has no scores on {absent} (the other folders have them); every algorithm "
                "needs every task: add its folders or leave that task out"
            )
        columns = {task: _stack(by_task[task]) for task in tasks}
        runs = {task: len(column[0]) for task, column in columns.items()}
        if len(set(runs.values())) > 1:
            raise ValueError(
                f"{algorithm} has {runs} runs per task; a [runs, tasks] matrix needs the same number on "
                "each task: train as many seeds on every task"
            )
        scores[algorithm] = np.array([columns[t][1] for t in tasks], dtype=np.float64).T
        seeds[algorithm] = np.array([columns[t][0] for t in tasks], dtype=np.int64).T
        folders[algorithm] = [s for t in tasks for s in columns[t][2]]
    ranges = None
    if normalize is not None:
        ranges = _check_normalize(normalize, tasks)
        low, high = (np.array([ranges[t][i] for t in tasks]) for i in (0, 1))
        scores = {name: (matrix - low) / (high - low) for name, matrix in scores.items()}
    return ScoreTable(scores=scores, seeds=seeds, tasks=tasks, sources=folders, metric=metric, normalize=ranges)
