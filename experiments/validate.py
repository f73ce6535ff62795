"""Reproduce the published presets and print how close we come.

    python -m experiments.validate                        # every preset, 8 seeds each
    python -m experiments.validate --only cleanrl-dqn-cartpole --num-seeds 4
    python -m experiments.validate --only gymnax-blines-breakout-minatar --total-timesteps 1000000

Each preset of ``experiments.presets.PRESETS`` is trained at its published
budget (its config as given, every other field at the agent's default) on
``--num-seeds`` seeds in parallel (``rl.train``). It gets two scores, as
``experiments.train`` reports them: per seed, the mean return of the training
episodes completed in the last 5% of training (``rl.host.stats.final_return``), and
the mean return of 32 greedy evaluation episodes of the final policy, played in
the jitted program after the last update (``rl.device.evaluation``; the same start
states for every seed). The table gives each as the mean over seeds with a 95%
percentile-bootstrap interval, next to the published figure and its source; the
one of the same kind as the published figure (``Preset.published_episodes``:
evaluation or training episodes) is in bold, so like is compared with like.
Results go to
``runs/validate-<timestamp>/table.md`` (and ``results.json``), one row at a time,
so an interrupted validation keeps the rows it finished.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rl.host.stats import FINAL_FRACTION  # as experiments.train: episodes of the last 5% of updates

# the evaluation episodes of every preset, played once after the last update (experiments.train's defaults)
EVAL_EPISODES, EVAL_MODE, EVAL_SEED = 32, "greedy", 0


@dataclass(frozen=True)
class ValidateArgs:
    """Train every preset at its published budget and compare with the published result."""

    only: tuple[str, ...] = ()
    """preset names to run (default: all of experiments.presets.PRESETS)"""
    num_seeds: int = 8
    """seeds per preset, trained in parallel"""
    seed: int = 0
    """first seed; the runs use seed, ..., seed + num_seeds - 1"""
    out: str | None = None
    """results folder (default runs/validate-<timestamp>)"""
    total_timesteps: int | None = None
    """env steps per seed for every preset instead of its published budget (a reduced budget for a
    small machine; the table's steps column says what ran, and the published figure's budget stays
    in its text)"""


@dataclass
class Row:
    """One line of the table."""

    preset: str
    agent: str
    env: str
    steps: int  # env steps per seed
    num_seeds: int
    mean: float  # mean over seeds of the final return (nan if no episode ended)
    ci_low: float
    ci_high: float
    per_seed: list[float]
    published: str | None
    source: str
    seconds: float  # wall time of the preset, compilation included
    eval_mean: float = float("nan")  # mean over seeds of the final evaluation return
    eval_ci_low: float = float("nan")
    eval_ci_high: float = float("nan")
    eval_per_seed: list[float] = dataclasses.field(default_factory=list)
    published_episodes: str = "training"  # what the published figure averages: "eval" or "training"
    eval_mode: str = EVAL_MODE  # how the evaluation episodes chose actions: "greedy" or "stochastic"
    budget: int | None = None  # the preset's own total_timesteps when --total-timesteps replaced it


def build(preset, total_timesteps: int | None = None) -> tuple[Any, Any]:
    """The algorithm and hyperparameters a preset describes (nothing compiled), at
    ``total_timesteps`` env steps per seed if given.

    The algorithm plays :data:`EVAL_EPISODES` evaluation episodes once, after its last update,
    choosing actions as the preset's source did (``Preset.eval_mode``).
    """
    import agents
    import envs
    from rl.device import evaluation
    from rl.host.runs import config_from_json

    module = agents.get(preset.agent)
    fields = preset.config if total_timesteps is None else {**preset.config, "total_timesteps": total_timesteps}
    config = config_from_json(module.Config(), fields)
    hyper = config_from_json(module.Hyper(), preset.hyper)
    hyper.validate()
    env, env_params = envs.make(preset.env)
    algo = module.make(config, env, env_params)
    final_only = evaluation.EvalConfig(
        every=algo.num_updates, episodes=EVAL_EPISODES, mode=preset.eval_mode, seed=EVAL_SEED
    )
    return evaluation.with_evaluation(algo, env, env_params, final_only), hyper


def run_preset(preset, num_seeds: int, first_seed: int = 0, total_timesteps: int | None = None) -> Row:
    """Train one preset on ``num_seeds`` seeds (at ``total_timesteps`` env steps each if given,
    else at its own budget) and summarise its final return."""
    import rl
    from rl.device import evaluation
    from rl.host import stats

    start = time.perf_counter()
    algo, hyper = build(preset, total_timesteps)
    result = rl.train(algo, hyper, seeds=range(first_seed, first_seed + num_seeds))
    final = stats.final_return(result.metrics["episode_return"], result.metrics["episodes"], FINAL_FRACTION)
    mean, low, high = stats.finite_interval(final)  # over the seeds with a score; NaN if none
    evaluated, _ = evaluation.final_eval_returns(result.metrics[evaluation.EVAL_RETURN])
    eval_mean, eval_low, eval_high = stats.finite_interval(evaluated)
    return Row(
        preset=preset.name,
        agent=preset.agent,
        env=preset.env,
        steps=result.env_steps_per_run,
        num_seeds=num_seeds,
        mean=mean,
        ci_low=float(low),
        ci_high=float(high),
        per_seed=[float(x) for x in final],
        published=preset.published,
        source=preset.source,
        seconds=time.perf_counter() - start,
        eval_mean=eval_mean,
        eval_ci_low=eval_low,
        eval_ci_high=eval_high,
        eval_per_seed=[float(x) for x in evaluated],
        published_episodes=preset.published_episodes,
        eval_mode=preset.eval_mode,
        budget=None if total_timesteps is None else preset.config.get("total_timesteps"),
    )


HEADER = (
    "| preset | agent | env | steps | seeds | ours, training episodes: mean [95% CI] | "
    "ours, eval episodes: mean [95% CI] | published | source | wall (min) |\n"
    "|---|---|---|---:|---:|---|---|---|---|---:|\n"
)
NOTE = (
    "Training episodes: the last 5% of training, with exploration. Eval episodes: "
    f"{EVAL_EPISODES} {EVAL_MODE} episodes per seed after the last update (sampled actions where the row "
    "says so, as its source evaluated), the same start states for every seed. In bold: the one of the "
    "same kind as the published figure.\n"
)


def format_row(row: Row) -> str:
    def cell(mean: float, low: float, high: float, missing: str, like: bool) -> str:
        if not np.isfinite(mean):
            return missing
        text = f"{mean:.1f} [{low:.1f}, {high:.1f}]"
        return f"**{text}**" if like and row.published else text

    training = cell(row.mean, row.ci_low, row.ci_high, "no episode ended", row.published_episodes == "training")
    evaluated = cell(row.eval_mean, row.eval_ci_low, row.eval_ci_high, "-", row.published_episodes == "eval")
    if row.eval_mode != EVAL_MODE and evaluated != "-":
        evaluated += f" ({row.eval_mode})"
    steps = f"{row.steps:,}" + (f" (preset: {row.budget:,})" if row.budget is not None else "")
    return (
        f"| {row.preset} | {row.agent} | {row.env} | {steps} | {row.num_seeds} | {training} | {evaluated} | "
        f"{row.published or '-'} | {row.source} | {row.seconds / 60:.1f} |\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    import tyro

    from experiments import presets
    from rl.errors import ConfigError

    args = tyro.cli(
        ValidateArgs,
        args=sys.argv[1:] if argv is None else list(argv),
        prog="python -m experiments.validate",
        config=(tyro.conf.FlagConversionOff,),
    )
    unknown = sorted(set(args.only) - set(presets.PRESETS))
    if unknown:
        print(f"error: unknown preset(s) {unknown}; known: {', '.join(sorted(presets.PRESETS))}", file=sys.stderr)
        return 2
    if args.total_timesteps is not None and args.total_timesteps < 1:
        print(f"error: total_timesteps={args.total_timesteps} is invalid: must be a positive integer", file=sys.stderr)
        return 2
    if args.num_seeds < 1:
        print(f"error: num_seeds={args.num_seeds} is invalid: must be a positive integer", file=sys.stderr)
        return 2
    names = list(args.only) or list(presets.PRESETS)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path("runs") / f"validate-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    from experiments.benchmark import machine, machine_line

    where = machine_line(machine()) + "\n\n"
    table, rows = out / "table.md", []
    table.write_text(where + NOTE + "\n" + HEADER)
    print(f"validating {len(names)} preset(s) on {args.num_seeds} seeds each -> {table}", flush=True)
    print(where + NOTE + "\n" + HEADER, end="", flush=True)
    for name in names:
        try:
            row = run_preset(presets.get(name), args.num_seeds, args.seed, args.total_timesteps)
        except ConfigError as err:
            print(f"| {name} | error: {err} |", flush=True)
            continue
        rows.append(row)
        line = format_row(row)
        with table.open("a") as f:
            f.write(line)
        (out / "results.json").write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
        print(line, end="", flush=True)
    print(f"\nwritten: {table}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
