"""Run folders from the library: ``rl.train(...).save(run_dir, env)``.

``python -m experiments.train`` writes a run folder as it trains; a result of
:func:`rl.train` can be written as the same folder afterwards::

    result = rl.train(algo, ppo.Hyper(), seeds=range(8))
    result.save("runs/my-ppo", env="CartPole-v1")     # or env="my_envs:MyEnv"
    policy = agents.load("runs/my-ppo")               # python -m experiments.evaluate runs/my-ppo

The folder holds what the CLI writes (``config.json``, ``metrics_over_seeds.csv``,
per-seed metrics, ``tensorboard/``, ``curve.png``, ``params.npz`` for a few seeds,
``checkpoints/`` with the final training carry, ``summary.json``), so
``agents.load`` and ``experiments.evaluate`` read it like any other.

Many seeds. What grows with seeds x updates is written compactly or not at all
(:func:`per_seed_format`, :func:`metric_sinks`):

* ``metrics_over_seeds.csv`` (always): per update and metric, statistics over
  the seeds (count, mean, IQM, min, 5/25/50/75/95% quantiles, max; see
  :mod:`rl.host.aggregate`); it grows with the updates only;
* per-seed rows: with at most :data:`FEW_SEEDS` seeds, ``metrics.csv`` and
  ``metrics.jsonl`` as always; with more, one ``metrics.parquet`` (float32
  columns, zstd; :mod:`rl.host.columnar`): 2.3 MB for 512 seeds x 400 small PPO
  updates (so about 9 MB for 2048), where at 2048 seeds CSV and JSON lines
  took 824 MB;
* ``params.npz`` only up to :data:`FEW_SEEDS` seeds (at 2048 seeds it was
  72 MB): the final parameters of every seed are in the final checkpoint,
  which ``agents.load`` (``.all_params``) and ``experiments.evaluate`` read in
  any case; ``summary.json["params"]`` says where they are. ``env``
must build the env the algorithm was trained on, with ``envs.make(env)``
(its default parameters); it is stored in ``config.json`` and built again
when the folder is loaded. A folder holds one hyperparameter setting: a result
that trained several (a leading hyper axis) is refused, since ``config.json``
has one value per field. It is not meant for ``--resume`` (there is nothing
left to train).

:func:`final_return_summary` is the final-return part of ``summary.json``, and
:func:`final_eval_return_summary` its evaluation part (an algorithm with
``rl.device.evaluation.with_evaluation``), shared with ``experiments.train``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rl.host import stats
from rl.host.files import atomic_write, write_json

__all__ = [
    "FEW_SEEDS",
    "PER_SEED_FORMATS",
    "UnknownFields",
    "config_from_json",
    "config_to_json",
    "describe_final_eval_return",
    "describe_final_return",
    "final_eval_return_summary",
    "final_return_summary",
    "metric_sinks",
    "per_seed_format",
    "save_run",
    "score_summary",
    "writes_params_npz",
]

# Up to this many seeds a run folder keeps per-seed detail by default: metrics.csv and
# metrics.jsonl rows, params.npz, and every seed's final return in the terminal.
FEW_SEEDS = 32
# --per-seed-metrics: "auto" is "csv" up to FEW_SEEDS seeds, else "parquet".
PER_SEED_FORMATS = ("auto", "csv", "parquet", "none")
AGGREGATE_FILE, CSV_FILE, JSONL_FILE, PARQUET_FILE = (
    "metrics_over_seeds.csv",
    "metrics.csv",
    "metrics.jsonl",
    "metrics.parquet",
)
SAVED_BY = "rl.TrainResult.save"


def final_return_summary(
    episode_return: np.ndarray,
    episodes: np.ndarray,
    fraction: float = stats.FINAL_FRACTION,
    seeds: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The final-return fields of ``summary.json`` for ``[N, U]`` per-update metrics.

    ``final_return_per_seed`` (None for a seed with no episode in the window),
    ``final_return_mean`` over the seeds that have one, and ``final_return_ci95``: the 95%
    bootstrap interval over those seeds, or None when they are fewer than
    :data:`rl.host.stats.MIN_RUNS_FOR_CI`; then ``final_return_range`` gives ``[min, max]`` and
    ``final_return_ci95_note`` says why there is no interval. With ``seeds`` (one per run), also
    the spread over seeds of :func:`rl.host.aggregate.seed_summary`: IQM, quantiles, the worst seeds.
    """
    from rl.host import aggregate

    final = stats.final_return(episode_return, episodes, fraction=fraction)
    out = score_summary(final, "final_return")
    if seeds is not None:
        out.update(aggregate.seed_summary(final, seeds))
    return out


def score_summary(final: np.ndarray, name: str) -> dict[str, Any]:
    """``{name}_mean``, ``{name}_ci95`` (or ``{name}_range`` and ``{name}_ci95_note``) and
    ``{name}_per_seed`` of ``[N]`` per-seed scores (NaN: a seed without one), as in
    :func:`final_return_summary`."""
    final = np.asarray(final, dtype=np.float64)
    valid = final[np.isfinite(final)]
    out: dict[str, Any] = {
        f"{name}_mean": float(np.mean(valid)) if valid.size else None,
        f"{name}_ci95": None,
        f"{name}_per_seed": [float(x) if np.isfinite(x) else None for x in final],
    }
    if not valid.size:
        return out
    note = stats.too_few_for_ci(int(valid.size))
    if note is None:
        out[f"{name}_ci95"] = list(stats.bootstrap_ci(valid))
    else:
        out[f"{name}_range"] = [float(valid.min()), float(valid.max())]
        out[f"{name}_ci95_note"] = note
    return out


def final_eval_return_summary(eval_return: np.ndarray, evaluation: Any) -> dict[str, Any]:
    """The evaluation fields of ``summary.json`` for ``[N, U]`` ``eval_return`` metrics.

    ``final_eval_return_mean``, ``final_eval_return_ci95`` (or ``_range`` and ``_ci95_note``)
    and ``final_eval_return_per_seed``: the return of the evaluation episodes played after the
    last update (the final policy; :mod:`rl.device.evaluation`), shaped as the final return's fields;
    ``eval``: how they were played (``evaluation``: an ``rl.device.evaluation.Evaluation``) and
    ``final_update``, the 0-based update they followed (None when none was played).
    """
    from rl.device.evaluation import final_eval_returns

    final, update = final_eval_returns(eval_return)
    config = evaluation.config
    return {
        **score_summary(final, "final_eval_return"),
        "eval": {
            "every": config.every,
            "episodes": config.episodes,
            "mode": config.mode,
            "seed": config.seed,
            "max_steps": config.max_steps,
            "final_update": update,
        },
    }


def describe_final_eval_return(summary: dict[str, Any]) -> str | None:
    """One phrase for the evaluation return of a summary, or None when it has none."""
    if "final_eval_return_mean" not in summary:
        return None
    played = summary.get("eval", {})
    episodes = played.get("episodes")
    how = f"{played.get('mode', 'greedy')}, {episodes} episode{'' if episodes == 1 else 's'} per seed"
    mean, ci = summary["final_eval_return_mean"], summary.get("final_eval_return_ci95")
    if mean is None:
        return f"eval return ({how}): no evaluation was played"
    if ci is not None:
        return f"eval return ({how}) {mean:.2f} (95% CI {ci[0]:.2f} .. {ci[1]:.2f})"
    low, high = summary["final_eval_return_range"]
    return f"eval return ({how}) {mean:.2f} (range {low:.2f} .. {high:.2f}; too few seeds for a 95% CI)"


def describe_final_return(summary: dict[str, Any]) -> str:
    """One phrase for the final return of a summary (as printed at the end of training)."""
    mean, ci = summary.get("final_return_mean"), summary.get("final_return_ci95")
    if mean is None:
        return "final return: no episode ended in the last 5% of training"
    if ci is not None:
        return f"final return {mean:.2f} (95% CI {ci[0]:.2f} .. {ci[1]:.2f})"
    low, high = summary["final_return_range"]
    scored = sum(x is not None for x in summary["final_return_per_seed"])
    over = f"{scored} seed" + ("s" if scored != 1 else "")
    return (
        f"final return {mean:.2f} (range {low:.2f} .. {high:.2f} over {over}; too few seeds for a "
        f"95% CI, use {stats.MIN_RUNS_FOR_CI} or more)"
    )


def per_seed_format(requested: str, num_seeds: int) -> str:
    """The per-seed metric files of a run: ``"csv"``, ``"parquet"`` or ``"none"``.

    ``"auto"`` keeps ``metrics.csv`` and ``metrics.jsonl`` up to :data:`FEW_SEEDS` seeds and
    writes one ``metrics.parquet`` for more; the others are taken as they are.
    """
    if requested not in PER_SEED_FORMATS:
        raise ValueError(f"per_seed_metrics must be one of {', '.join(PER_SEED_FORMATS)}, not {requested!r}")
    if requested == "auto":
        return "csv" if num_seeds <= FEW_SEEDS else "parquet"
    return requested


def writes_params_npz(num_seeds: int) -> bool:
    """Whether a run folder gets ``params.npz``: up to :data:`FEW_SEEDS` seeds.

    With more, the final checkpoint holds every seed's parameters (``agents.load`` reads them
    there; so does ``experiments.evaluate``), and a second copy would dominate the folder.
    """
    return num_seeds <= FEW_SEEDS


def metric_sinks(
    run_dir: str | os.PathLike[str],
    run_labels: Sequence[dict[str, Any]],
    per_seed: str,
    steps_per_update: int,
    resume_from_update: int | None = None,
) -> Any:
    """The metric sinks of a run folder, as one ``rl.host.sinks.MultiSink``.

    ``metrics_over_seeds.csv`` and ``tensorboard/`` always; the per-seed files of ``per_seed``
    (``"csv"``: metrics.csv and metrics.jsonl, ``"parquet"``: metrics.parquet, ``"none"``). Every
    sink writes synchronously: a chunk's rows are on disk before the checkpoint that covers
    them is saved, and a failed write raises ``OSError`` in the training loop. Their work per
    chunk is vectorised over seeds, and Python-level work grows with the updates only, except
    for the per-seed CSV and JSON lines (hence their limit to few seeds by default).
    ``resume_from_update``: continue a resumed run's files (see each sink).
    """
    from rl.host.aggregate import AggregateCsvSink
    from rl.host.columnar import ParquetSink
    from rl.host.sinks import CsvSink, JsonlSink, MultiSink, TensorBoardSink

    run_dir = Path(run_dir)
    resume = resume_from_update is not None
    sinks: list[Any] = []
    try:
        sinks.append(AggregateCsvSink(run_dir / AGGREGATE_FILE, resume_from_update=resume_from_update))
        if per_seed == "csv":
            sinks.append(CsvSink(run_dir / CSV_FILE, run_labels, resume=resume))
            sinks.append(JsonlSink(run_dir / JSONL_FILE, run_labels, resume=resume))
        elif per_seed == "parquet":
            sinks.append(ParquetSink(run_dir / PARQUET_FILE, run_labels, resume_from_update=resume_from_update))
        elif per_seed != "none":
            raise ValueError(f"per_seed must be 'csv', 'parquet' or 'none', not {per_seed!r}")
        sinks.append(
            TensorBoardSink(
                run_dir / "tensorboard",
                run_labels,
                resume_from_update=resume_from_update,
                steps_per_update=steps_per_update,
            )
        )
    except BaseException:
        with contextlib.suppress(Exception):  # the first failure is the one to report
            MultiSink(sinks).close()
        raise
    return MultiSink(sinks)


def _save_params(path: Path, params: Any) -> None:
    """A parameter pytree as ``.npz`` keyed ``module/name`` (the layout experiments.train writes)."""
    import jax

    flat = {
        "/".join(str(getattr(k, "key", k)) for k in key_path): np.asarray(leaf)
        for key_path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]
    }
    atomic_write(path, lambda f: np.savez(f, **flat))


def _one_setting(hypers: Any) -> dict[str, float]:
    """The hyperparameters shared by every run, as ``config.json`` stores them."""
    values = {}
    for f in dataclasses.fields(hypers):
        per_run = np.asarray(getattr(hypers, f.name), dtype=np.float64).reshape(-1)
        if per_run.size and not np.all(per_run == per_run[0]):
            raise ValueError(
                f"the runs of this result have different values of {f.name} (a leading hyper axis); a run "
                "folder holds one setting: train each setting with its own rl.train call, or use rl.sweep"
            )
        values[f.name] = float(per_run[0])
    return values


def _jsonable(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _jsonable(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_jsonable(v) for v in tree]
    if isinstance(tree, np.generic):
        return tree.item()
    return tree


def config_to_json(config: Any) -> dict[str, Any]:
    """A ``Config`` or ``Hyper`` dataclass as ``config.json`` stores it: tuples as lists, NumPy
    scalars as plain numbers. :func:`config_from_json` reads it back."""
    return _jsonable(dataclasses.asdict(config))


class UnknownFields(ValueError):
    """Saved fields that the dataclass does not have: ``unknown`` (sorted) and ``names`` (its fields)."""

    def __init__(self, unknown: list[str], names: set[str]) -> None:
        super().__init__(f"unknown field(s) {unknown}")
        self.unknown, self.names = unknown, names


def config_from_json(default: Any, values: Mapping[str, Any]) -> Any:
    """``default`` (a ``Config`` or ``Hyper``) with the fields saved in JSON (``config.json``, a
    preset, a sweep's ``best_preset.json``): lists back to tuples. Raises :class:`UnknownFields`
    (a ValueError) for fields ``default`` does not have; callers word the message."""
    names = {f.name for f in dataclasses.fields(default)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UnknownFields(unknown, names)
    return dataclasses.replace(default, **{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _check_env(env: str, algo: Any, params: Any) -> None:
    """``envs.make(env)`` must build an env whose observations the trained policy accepts."""
    import jax

    import envs

    if not isinstance(env, str):
        raise ValueError(
            f"env must be the env id or MODULE:ATTRIBUTE spec the algorithm was made with, "
            f"not {type(env).__name__}: config.json stores it and agents.load builds it again"
        )
    made, env_params = envs.make(env)
    obs, _ = jax.eval_shape(lambda key: made.reset(key, env_params), jax.random.key(0))
    first = jax.tree.map(lambda x: x[0], params)
    try:
        jax.eval_shape(
            lambda p, o: algo.act(p, o, jax.random.key(0), True),
            first,
            jax.ShapeDtypeStruct((1, *obs.shape), obs.dtype),
        )
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"env {env!r} does not fit the trained policy ({type(err).__name__}: {err}); give "
            "the env id or spec the algorithm was made with"
        ) from None


def save_run(
    result: Any,
    run_dir: str | os.PathLike[str],
    env: str,
    *,
    seeds: Sequence[int] | None = None,
    per_seed_metrics: str = "auto",
) -> Path:
    """Write ``result`` (an ``rl.TrainResult``) as a run folder; returns its path.

    Args:
      result: what :func:`rl.train` (or ``run_batch``) returned.
      run_dir: the folder; it must not exist or be empty.
      env: the env id or ``MODULE:ATTRIBUTE`` spec the algorithm was made with.
      seeds: the seed of each run; only needed for a result of ``run_batch`` (``rl.train``
        records them).
      per_seed_metrics: the per-seed metric files (:func:`per_seed_format`): ``"auto"``,
        ``"csv"``, ``"parquet"`` or ``"none"``.

    Raises:
      ValueError: the folder is not empty, the result has no updates or several hyperparameter
        settings, the seeds do not fit, or ``env`` cannot be built or does not fit the policy.
    """
    import jax

    from rl.engine.checkpoint import Checkpointer
    from rl.host import plots

    algo = result.algo
    if algo is None:
        raise ValueError("this TrainResult does not record its algorithm; save the result of rl.train or run_batch")
    given = result.seeds if seeds is None else seeds
    seeds = None if given is None else [int(s) for s in given]
    if seeds is None or len(seeds) != result.num_runs:
        raise ValueError(f"give seeds=[...], one per run ({result.num_runs}); got {seeds}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(
            f"the runs' seeds {seeds} repeat: this result trained several hyperparameter settings; a "
            "run folder holds one setting: train each with its own rl.train call, or use rl.sweep"
        )
    hyper = _one_setting(result.hypers)
    per_seed = per_seed_format(per_seed_metrics, len(seeds))
    if not result.metrics or result.num_updates == 0:
        raise ValueError("this result has no updates to save")
    _check_env(env, algo, result.params)
    run_dir = Path(run_dir)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise ValueError(f"{str(run_dir)!r} already exists and is not empty; choose a new folder")
    run_dir.mkdir(parents=True, exist_ok=True)

    sharding = getattr(jax.tree.leaves(result.params)[0], "sharding", None)
    devices = [] if sharding is None else sorted(sharding.device_set, key=lambda d: d.id)
    write_json(
        run_dir / "config.json",
        {
            "agent": algo.name,
            "env": env,
            "preset": None,
            "preset_file": None,
            "seeds": seeds,
            "num_chunks": result.num_chunks,
            "checkpoint_every": 0,
            "keep_checkpoints": 1,
            "per_seed_metrics": per_seed,
            "config": config_to_json(algo.config),
            "hyper": hyper,
            "jax_version": jax.__version__,
            "devices": [str(d) for d in devices],
            "saved_by": SAVED_BY,
        },
    )
    labels = [{"seed": s} for s in seeds]
    sink = metric_sinks(run_dir, labels, per_seed, algo.steps_per_update)
    try:
        sink.write(result.metrics, 0, algo.steps_per_update)
    finally:
        sink.close()
    ret, count = result.metrics.get("episode_return"), result.metrics.get("episodes")
    if ret is not None and count is not None:
        env_steps = (np.arange(ret.shape[1]) + 1) * algo.steps_per_update
        plots.plot_learning_curve(
            run_dir / "curve.png", env_steps, ret, count, title=f"{algo.name} on {env} ({len(seeds)} seeds)"
        )
    if writes_params_npz(len(seeds)):
        _save_params(run_dir / "params.npz", result.params)
    with Checkpointer(run_dir / "checkpoints", every=0, max_to_keep=1, asynchronous=False) as checkpointer:
        checkpointer.save(
            result.state,
            update=result.num_updates,
            chunk=result.num_chunks,
            metrics=result.metrics,
            meta={
                "num_runs": result.num_runs,
                "num_updates": algo.num_updates,
                "steps_per_update": algo.steps_per_update,
                "agent": algo.name,
                "saved_by": SAVED_BY,
            },
        )

    summary: dict[str, Any] = {
        "agent": algo.name,
        "env": env,
        "preset": None,
        "num_seeds": len(seeds),
        "seeds": seeds,
        "status": result.status,
        "num_updates": result.num_updates,
        "total_timesteps": result.env_steps_per_run,
    }
    if ret is not None and count is not None:
        summary.update(final_return_summary(ret, count, seeds=seeds))
    if algo.evaluation is not None and "eval_return" in result.metrics:
        summary.update(final_eval_return_summary(result.metrics["eval_return"], algo.evaluation))
    summary["params"] = "params.npz" if writes_params_npz(len(seeds)) else f"checkpoints/{result.num_updates}"
    summary.update(
        {
            "compile_seconds": result.compile_seconds,
            "run_seconds": result.run_seconds,
            "env_steps_per_second": result.env_steps_per_second,
            "num_chunks": result.num_chunks,
            "num_devices": len(devices) or None,
            "runs_per_device": result.num_runs // len(devices) if devices else None,
            "checkpoint_update": result.num_updates,
            "run_dir": str(run_dir),
            "saved_by": SAVED_BY,
        }
    )
    write_json(run_dir / "summary.json", summary)
    return run_dir
