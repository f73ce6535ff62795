"""Running a sweep: :func:`sweep` trains every compile group of its plan and reports.

Each group of the plan (``rl.sweep.plan``) is one ``rl.engine.runner.run_batch`` over all its
configurations x seeds; one progress bar (:class:`SweepProgress`, the host's
``rl.host.progress.Progress``) counts the env steps of every run. The result is a
:class:`SweepResult`; its summary, table and report files come from ``rl.sweep.report``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import jax
import numpy as np

from rl.device.evaluation import EVAL_RETURN, final_eval_returns, with_evaluation
from rl.engine import distributed
from rl.engine.runner import ChunkReport, make_mesh, run_batch
from rl.errors import ConfigError
from rl.host import stats
from rl.host.files import write_json
from rl.host.progress import Progress
from rl.sweep.plan import SweepPlan, _group_label, _resolve_env, _stacked_inputs, plan
from rl.sweep.report import (
    _label,
    _plan_record,
    _prepare_out,
    best_preset,
    print_ranking,
    results_table,
    summarize,
    write_report,
)
from rl.sweep.space import _display

__all__ = ["SweepProgress", "SweepResult", "sweep"]


class SweepProgress(Progress):
    """One bar for the whole sweep: the env steps of all its runs (configurations x seeds x steps).

    The host's progress bar (a rich bar on a terminal, else one plain line per chunk, e.g.
    ``[ 50.0%] sweep env steps 16,384/32,768 (4 configs x 2 seeds x steps) | ... | return 21.5``),
    counting every run's steps together; silent when disabled (e.g. on processes > 0), and
    :meth:`say` prints only when ``verbose``.
    """

    label = "sweep"
    line_label = "sweep env steps"
    first_note = "compiling"

    def __init__(self, total: int, what: str, enabled: bool = True, verbose: bool = True, file: IO[str] | None = None):
        self.unit = f"({what})"
        super().__init__(total, num_runs=1, enabled=enabled, file=file, verbose=verbose)


@dataclass
class SweepResult:
    """A finished sweep: raw curves, the tidy table, per-configuration statistics."""

    plan: SweepPlan
    metrics: list[dict[str, np.ndarray]]  # per configuration: each metric [S, U] (seeds in plan order)
    env_steps: list[np.ndarray]  # per configuration: [U] env steps per run at each update
    final: np.ndarray  # [C, S] final return per configuration and seed (NaN: no episode ended)
    summary: Any  # pandas DataFrame, one row per configuration, sorted by rank
    compile_seconds: float
    run_seconds: float
    out: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> int:
        """Index of the best configuration (rank 1)."""
        return int(self.summary.iloc[0]["config"])

    def best_values(self) -> dict[str, Any]:
        return dict(self.plan.configs[self.best])

    def table(self) -> Any:
        """The tidy results (pandas): one row per configuration x seed x update."""
        return results_table(self)

    def best_preset(self) -> dict[str, Any]:
        return best_preset(self)


def sweep(
    agent: types.ModuleType,
    env: Any = "CartPole-v1",
    *,
    grid: Mapping[str, Any] | None = None,
    sample: Mapping[str, Any] | None = None,
    num_samples: int | None = None,
    seeds: int | Sequence[int] = 8,
    config: Any = None,
    hyper: Any = None,
    sample_seed: int = 0,
    num_chunks: int = 10,
    pad: bool = True,
    mesh: jax.sharding.Mesh | None = None,
    env_params: Any = None,
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
    verbose: bool = True,
    plot_top: int = 10,
    file: IO[str] | None = None,
    evaluation: Any = None,
    track: Mapping[str, Any] | None = None,
) -> SweepResult:
    """Train every configuration x seed and rank the configurations.

    Args:
      agent: an agent module (``agents.get("ppo")``): ``Config``, ``Hyper``, ``make``.
      env: an env id for ``envs.make``, or an env object together with ``env_params``.
      grid: name -> values (a list, or text ``"1e-4,3e-4"``); the sweep takes their product.
      sample: name -> :class:`Distribution` or text ``"loguniform:1e-5:1e-2"``,
        ``"uniform:0:0.1"``, ``"choice:64,128"``; ``num_samples`` draws each, combined
        with every grid point.
      num_samples: number of random draws (required with ``sample``).
      seeds: a number of seeds (0..n-1) or the seeds themselves; every configuration
        runs every seed.
      config, hyper: the base settings the swept names override (agent defaults).
      sample_seed: seed of the random search draws (the same on every host).
      num_chunks: host round trips per compile group (progress granularity).
      pad: pad a group whose runs do not divide the device count with duplicate runs
        (dropped from every output); False refuses such a sweep.
      mesh: 1-D device mesh (default: every device of every process).
      out: folder for the report (must not exist or be empty); None writes nothing.
      progress: show the sweep's progress bar (configurations x seeds x env steps).
      verbose: print the plan (compiles, padding) first and the ranking and best
        configuration at the end.
      plot_top: configurations drawn in the learning-curve and profile plots (0 = all).
      file: where messages and the bar go (default stdout).
      evaluation: an ``rl.device.evaluation.EvalConfig``: every run plays evaluation episodes in the
        jitted program (the same start states for all), and the configurations are scored and
        ranked by the final evaluation return instead of the training episodes' (kept in
        ``result.extra["final_training"]``). None (default): no evaluation episodes.
      track: log every configuration to Weights & Biases as its own run (needs the ``wandb``
        package): a mapping with ``project`` and optionally ``entity``, ``group`` (default: the
        ``out`` folder's name, else ``sweep-<agent>-<env>``) and ``name`` (a prefix of the run
        names; each run is named by its configuration, ``#3 learning_rate=0.001``). Each W&B run
        gets the curves TensorBoard would show over that configuration's seeds
        (:class:`rl.host.sinks.WandbSink`) and, as its config, the agent, env, swept values,
        seeds and base settings. wandb's local files go to ``out`` (or ``$WANDB_DIR``).

    Raises:
      ConfigError: for an unknown name (the message lists the sweepable ones), an
        empty or malformed value list, invalid values, or runs that do not divide
        the devices with ``pad=False``; before anything compiles.
    """
    if isinstance(num_chunks, bool) or not isinstance(num_chunks, int) or num_chunks < 1:
        raise ConfigError("num_chunks", num_chunks, "must be a positive integer")
    if isinstance(plot_top, bool) or not isinstance(plot_top, int) or plot_top < 0:
        raise ConfigError("plot_top", plot_top, "must be an integer >= 0 (0 plots every configuration)")
    if evaluation is not None:
        evaluation.validate()
    if track is not None:
        _Trackers.check(track)
    the_plan = plan(
        agent,
        env,
        grid=grid,
        sample=sample,
        num_samples=num_samples,
        seeds=seeds,
        config=config,
        hyper=hyper,
        sample_seed=sample_seed,
        pad=pad,
        mesh=mesh,
        env_params=env_params,
    )
    mesh = make_mesh() if mesh is None else mesh
    primary = distributed.is_primary()
    if evaluation is not None:
        _, env_obj, env_params_obj = _resolve_env(env, env_params)
        for g in the_plan.groups:
            g.algo = with_evaluation(g.algo, env_obj, env_params_obj, evaluation)
    played = None if evaluation is None else _eval_record(evaluation, the_plan.groups)  # episodes resolved
    out_dir = _prepare_out(out) if primary and out is not None else (Path(out) if out is not None else None)
    distributed.assert_same_on_all_processes(
        {
            "configs": [{k: _display(v) for k, v in c.items()} for c in the_plan.configs],
            "seeds": the_plan.seeds,
            "num_chunks": num_chunks,
        },
        "the sweep's configurations and seeds",
    )
    if primary and out_dir is not None:
        record = _plan_record(the_plan, num_chunks, mesh)
        record["evaluation"] = played
        write_json(out_dir / "sweep.json", record, default=str)

    total = sum(g.num_runs * g.algo.num_updates * g.algo.steps_per_update for g in the_plan.groups)
    what = f"{len(the_plan.configs)} configs x {len(the_plan.seeds)} seeds x steps"
    num_seeds = len(the_plan.seeds)
    metrics: list[dict[str, np.ndarray] | None] = [None] * len(the_plan.configs)
    env_steps: list[np.ndarray | None] = [None] * len(the_plan.configs)
    compile_seconds = run_seconds = 0.0
    trackers = _Trackers(track, the_plan, out_dir) if primary and track is not None else None
    with (
        SweepProgress(total, what, enabled=progress and primary, verbose=verbose and primary, file=file) as bar,
        contextlib.ExitStack() as open_runs,
    ):
        for line in the_plan.describe():
            bar.say(line)
        for gi, g in enumerate(the_plan.groups):
            keys, hypers = _stacked_inputs(g, the_plan.seeds)
            real = g.num_runs
            if len(the_plan.groups) > 1:
                bar.say(
                    f"compile group {gi + 1}/{len(the_plan.groups)}{_group_label(g)}: "
                    f"{len(g.config_ids)} configuration(s) x {num_seeds} seeds ..."
                )

            group_runs = [] if trackers is None else [open_runs.enter_context(trackers.open(c)) for c in g.config_ids]

            def on_chunk(report: ChunkReport, g=g, real=real, before=run_seconds, group_runs=group_runs) -> None:
                for h, wandb_run in enumerate(group_runs):  # configuration h's seeds: rows h*S ... (h+1)*S-1
                    rows = slice(h * num_seeds, (h + 1) * num_seeds)
                    wandb_run.write(
                        {k: v[rows] for k, v in report.metrics.items()}, report.first_update, g.algo.steps_per_update
                    )
                ret, n = report.metrics["episode_return"][:real, -1], report.metrics["episodes"][:real, -1]
                note = f"return {np.mean(ret[n > 0]):.1f}" if np.any(n > 0) else "return n/a"
                bar.advance(
                    report.num_updates * g.algo.steps_per_update * real,
                    run_seconds=before + report.elapsed_seconds,
                    note=note,
                )

            result = run_batch(g.algo, keys, hypers, num_chunks=num_chunks, mesh=mesh, on_chunk=on_chunk)
            compile_seconds += result.compile_seconds
            run_seconds += result.run_seconds
            steps = (np.arange(g.algo.num_updates) + 1) * g.algo.steps_per_update
            for h, config_id in enumerate(g.config_ids):
                rows = slice(h * num_seeds, (h + 1) * num_seeds)  # padded runs lie beyond `real`
                metrics[config_id] = {k: np.asarray(v[rows]) for k, v in result.metrics.items()}
                env_steps[config_id] = steps
            del result
            for wandb_run in group_runs:  # a group's W&B runs end with it: a large sweep keeps few open
                wandb_run.close()

    final = np.stack([stats.final_return(m["episode_return"], m["episodes"], stats.FINAL_FRACTION) for m in metrics])
    extra: dict[str, Any] = {}
    if evaluation is not None and EVAL_RETURN in metrics[0]:  # score by the final evaluation episodes
        extra = {"final_training": final, "scored_by": "final evaluation return"}
        final = np.stack([final_eval_returns(m[EVAL_RETURN])[0] for m in metrics])
        if primary and verbose:
            print(f"scores: the final evaluation return ({_eval_words(played)})", file=file)
    res = SweepResult(
        plan=the_plan,
        metrics=metrics,
        env_steps=env_steps,
        final=final,  # type: ignore[arg-type]
        summary=summarize(the_plan, final),
        compile_seconds=compile_seconds,
        run_seconds=run_seconds,
        out=out_dir,
        extra=extra,
    )
    if primary:
        if out_dir is not None:
            write_report(res, out_dir, plot_top=plot_top)
        if verbose:
            print_ranking(res, file=file)
    return res


class _Trackers:
    """Opens one W&B run (:class:`rl.host.sinks.WandbSink`) per configuration of a sweep."""

    KEYS = ("project", "entity", "group", "name")

    @classmethod
    def check(cls, track: Mapping[str, Any]) -> None:
        """A well-formed ``track`` mapping and an importable wandb, else one error (before anything compiles)."""
        from rl.host.sinks import import_wandb

        if not isinstance(track, Mapping):
            raise ConfigError("track", track, "must be a mapping with a W&B project, e.g. {'project': 'my-sweeps'}")
        unknown = sorted(set(track) - set(cls.KEYS))
        if unknown:
            raise ConfigError("track", dict(track), f"unknown key(s) {unknown}; allowed: {', '.join(cls.KEYS)}")
        for key in cls.KEYS:
            value = track.get(key)
            if (key == "project" or value is not None) and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(
                    f"track.{key}", value, "must be a non-empty string" + (" (required)" if key == "project" else "")
                )
        import_wandb()  # ModuleNotFoundError naming the extra to install

    def __init__(self, track: Mapping[str, Any], the_plan: SweepPlan, out_dir: Path | None):
        self.plan, self.out_dir = the_plan, out_dir
        self.project, self.entity, self.prefix = track["project"], track.get("entity"), track.get("name")
        env_name = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in the_plan.env_id)
        self.group = track.get("group") or (
            out_dir.name if out_dir is not None else f"sweep-{the_plan.agent}-{env_name}"
        )

    def open(self, config_id: int) -> Any:
        from rl.host.runs import config_to_json
        from rl.host.sinks import WandbSink

        p = self.plan
        label = _label(p, config_id)
        config = {
            "agent": p.agent,
            "env": p.env_id,
            "sweep_config": config_id,
            **{name: _display(value) for name, value in p.configs[config_id].items()},
            "seeds": p.seeds,
            "base_config": config_to_json(p.base_config),
            "base_hyper": config_to_json(p.base_hyper),
            "sweep_dir": None if self.out_dir is None else str(self.out_dir),
        }
        try:
            return WandbSink(
                [{"seed": s} for s in p.seeds],
                project=self.project,
                entity=self.entity,
                group=self.group,
                name=f"{self.prefix} {label}" if self.prefix else label,
                config=config,
                directory=os.environ.get("WANDB_DIR") or self.out_dir,
            )
        except OSError:
            raise
        except Exception as err:  # noqa: BLE001 - wandb's own errors (login, network) as one line
            raise ConfigError(
                "track",
                self.project,
                f"W&B could not start ({type(err).__name__}: {err}); run `wandb login`, or set "
                "WANDB_MODE=offline to keep wandb's files locally and `wandb sync` them later",
            ) from None


def _eval_record(evaluation: Any, groups: Sequence[Any]) -> dict[str, Any]:
    """``evaluation`` as played: ``episodes`` resolved (a list where groups' budgets differ)."""
    played = sorted({g.algo.evaluation.config.episodes for g in groups if g.algo.evaluation is not None})
    episodes = played[0] if len(played) == 1 else (played or evaluation.episodes)
    return {**dataclasses.asdict(evaluation), "episodes": episodes}


def _eval_words(record: dict[str, Any]) -> str:
    episodes = record["episodes"]
    count = "/".join(map(str, episodes)) if isinstance(episodes, list) else str(episodes)
    return f"{count} {record['mode']} episode{'' if episodes == 1 else 's'} per seed after the last update"
