"""A sweep's report: per-configuration statistics, the ranking, the tidy table and the files.

:func:`summarize` scores every configuration by the final return of its seeds (mean and IQM with
95% percentile-bootstrap intervals, ``rl.host.stats``) and ranks them; :func:`write_report`
writes the files the package docstring lists (atomically, ``rl.host.files``) and draws the
plots with ``rl.host.plots``; :func:`print_ranking` is what the command line prints at the end.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import jax
import numpy as np

from rl.engine import distributed
from rl.errors import ConfigError
from rl.host import plots, stats
from rl.host.files import atomic_write_path, write_json
from rl.host.runs import config_to_json
from rl.host.sinks import chunk_table
from rl.sweep.space import _display, _hashable

if TYPE_CHECKING:
    from rl.sweep.plan import SweepPlan
    from rl.sweep.run import SweepResult

__all__ = ["best_preset", "print_ranking", "results_table", "summarize", "write_report"]

NUM_RESAMPLES = 2_000  # bootstrap resamples for every interval (rliable's default)


def _bootstrap(x: np.ndarray, statistic: Callable[..., np.ndarray], seed: int = 0) -> stats.Interval:
    """Percentile-bootstrap 95% interval of ``statistic`` over one configuration's seeds
    (``rl.host.stats.finite_interval``; with one task this is the stratified bootstrap); NaN scores
    (seeds that finished no episode) are left out."""
    return stats.finite_interval(x, statistic, num_resamples=NUM_RESAMPLES, seed=seed)


def summarize(the_plan: SweepPlan, final: np.ndarray) -> Any:
    """Per configuration: mean and IQM of the final return with 95% CIs, and the rank.

    Ranked by IQM (robust to one lucky or broken seed), ties by mean;
    configurations where no seed finished an episode come last.
    """
    import pandas as pd

    rows = []
    group_of = {c: gi for gi, g in enumerate(the_plan.groups) for c in g.config_ids}
    for c, values in enumerate(the_plan.configs):
        scores = final[c]
        mean, iqm = _bootstrap(scores, np.mean), _bootstrap(scores, stats.iqm)
        rows.append(
            {
                "config": c,
                **{n: _display(values[n]) for n in the_plan.names},
                "compile_group": group_of[c],
                "num_seeds": int(scores.size),
                "num_scored": int(np.isfinite(scores).sum()),
                "iqm": iqm.point,
                "iqm_low": iqm.low,
                "iqm_high": iqm.high,
                "mean": mean.point,
                "mean_low": mean.low,
                "mean_high": mean.high,
                "final_return_per_seed": json.dumps(
                    [None if not math.isfinite(v) else round(float(v), 4) for v in scores]
                ),
            }
        )
    frame = pd.DataFrame(rows)
    order = sorted(
        range(len(rows)), key=lambda i: (-_nan_low(rows[i]["iqm"]), -_nan_low(rows[i]["mean"]), rows[i]["config"])
    )
    frame = frame.iloc[order].reset_index(drop=True)
    frame.insert(1, "rank", np.arange(1, len(rows) + 1))
    return frame


def _nan_low(x: float) -> float:
    return -math.inf if not math.isfinite(x) else x


def results_table(res: SweepResult) -> Any:
    """One row per configuration x seed x update, as pandas (also written as CSV and Parquet).

    Columns: ``config``, ``seed``, the swept values, ``update``, ``env_steps``
    (per run), then every metric (per-episode metrics are NaN where no episode
    ended). A metric named like a swept name (PPO logs the annealed
    ``learning_rate``) is renamed ``<name>_metric``.
    """
    import pandas as pd

    frames = []
    for c, values in enumerate(res.plan.configs):
        labels = [{"config": c, "seed": s, **{n: _display(values[n]) for n in res.plan.names}} for s in res.plan.seeds]
        m = {(f"{k}_metric" if k in values else k): v for k, v in res.metrics[c].items()}
        spu = int(res.env_steps[c][0])
        frames.append(pd.DataFrame(chunk_table(labels, m, 0, spu)))
    return pd.concat(frames, ignore_index=True).infer_objects()


def best_preset(res: SweepResult) -> dict[str, Any]:
    """The best configuration as a preset file ``experiments.train --preset-file`` reads."""
    p, row = res.plan, res.summary.iloc[0]
    values = p.configs[res.best]
    config = dataclasses.replace(p.base_config, **{n: values[n] for n in p.static})
    hyper = dataclasses.replace(p.base_hyper, **{n: values[n] for n in p.traced})
    swept = ", ".join(f"{n}={_display(values[n])}" for n in p.names) or "base settings"
    return {
        "name": f"sweep-best-{p.agent}-{p.env_id}",
        "agent": p.agent,
        "env": p.env_id,
        "config": config_to_json(config),
        "hyper": {k: float(v) for k, v in dataclasses.asdict(hyper).items()},
        "source": f"rl.sweep: best of {len(p.configs)} configuration(s) x {len(p.seeds)} seeds "
        f"by IQM of the final return ({swept})",
        "published": f"IQM final return {row['iqm']:.2f} (95% CI {row['iqm_low']:.2f} .. {row['iqm_high']:.2f}), "
        f"mean {row['mean']:.2f} over seeds {p.seeds}",
    }


def _prepare_out(out: str | os.PathLike[str]) -> Path:
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError("out", str(path), "already exists and is not empty; choose a new folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _plan_record(p: SweepPlan, num_chunks: int, mesh: jax.sharding.Mesh) -> dict[str, Any]:
    return {
        "agent": p.agent,
        "env": p.env_id,
        **p.space,
        "traced": p.traced,
        "shape_setting": p.static,
        "seeds": p.seeds,
        "num_chunks": num_chunks,
        "num_configurations": len(p.configs),
        "num_runs": p.num_runs,
        "configurations": [{"config": i, **{k: _display(v) for k, v in c.items()}} for i, c in enumerate(p.configs)],
        "compile_groups": [
            {
                "static": {k: _display(v) for k, v in g.static.items()},
                "configs": g.config_ids,
                "padded_runs": g.num_padded,
            }
            for g in p.groups
        ],
        "base_config": config_to_json(p.base_config),
        "base_hyper": config_to_json(p.base_hyper),
        "devices": [str(d) for d in mesh.devices.flat],
        "num_processes": distributed.process_count(),
        "jax_version": jax.__version__,
    }


def _label(p: SweepPlan, c: int) -> str:
    text = ", ".join(
        f"{n}={_display(p.configs[c][n]):.3g}"
        if isinstance(p.configs[c][n], float)
        else f"{n}={_display(p.configs[c][n])}"
        for n in p.names
    )
    return f"#{c} {text}" if text else f"#{c}"


def write_report(res: SweepResult, out: Path, plot_top: int = 10) -> None:
    """Every report file (see the package docstring) into ``out``."""
    p = res.plan
    table = results_table(res)
    atomic_write_path(out / "results.csv", lambda tmp: table.to_csv(tmp, index=False, lineterminator="\n"))
    atomic_write_path(out / "results.parquet", lambda tmp: table.to_parquet(tmp, index=False))
    table = None  # free it before the plots (a large sweep's table is big)
    summary = res.summary
    atomic_write_path(out / "summary.csv", lambda tmp: summary.to_csv(tmp, index=False, lineterminator="\n"))
    write_json(
        out / "summary.json",
        {
            "final_return": f"episode-weighted mean return of the last {stats.FINAL_FRACTION:.0%} of updates per seed",
            "ranking": "by IQM of the final return over seeds, then mean; 95% CIs from a stratified bootstrap "
            f"({NUM_RESAMPLES} resamples)",
            "compile_seconds": res.compile_seconds,
            "run_seconds": res.run_seconds,
            "configurations": json.loads(summary.to_json(orient="records")),
        },
        default=str,
    )
    preset = best_preset(res)
    write_json(out / "best_preset.json", preset, default=str)

    ranked = [int(c) for c in summary["config"]]
    shown = ranked[: plot_top or None]
    # profiles: configurations spread over the ranks (best to worst); the top ones often all saturate
    spread = [ranked[i] for i in np.unique(np.linspace(0, len(ranked) - 1, len(shown)).round().astype(int))]
    # learning curves: episodes binned over env steps (continuous for every agent), bootstrap bands
    curves = {}
    for c in shown:
        m = res.metrics[c]
        curve = stats.learning_curve(res.env_steps[c], m["episode_return"], m["episodes"])
        curves[_label(p, c)] = (curve.env_steps, curve.mean, curve.low, curve.high)
    which = f"top {len(shown)} of {len(p.configs)}" if len(shown) < len(p.configs) else f"{len(p.configs)}"
    band = "95% CI" if stats.too_few_for_ci(len(p.seeds)) is None else "band: range of the seeds, too few for a 95% CI"
    plots.plot_curves(
        out / "learning_curves.png",
        curves,
        title=f"{p.agent} on {p.env_id}: {which} configurations, {len(p.seeds)} seeds ({band})",
        xlabel="environment steps per run (episodes pooled in bins)",
    )
    # performance profiles
    scored = res.final[np.isfinite(res.final)]
    if scored.size:
        taus = np.linspace(scored.min(), scored.max(), 101)
        import pandas as pd

        rows, profiles = [], {}
        for c in range(len(p.configs)):
            x = res.final[c][np.isfinite(res.final[c])]
            if not x.size:
                continue
            profiles[c] = stats.performance_profile(x, taus, num_resamples=NUM_RESAMPLES)
            prof, low, high = profiles[c]
            rows.append(pd.DataFrame({"config": c, "tau": taus, "fraction": prof, "low": low, "high": high}))
        prof_curves = {
            f"rank {ranked.index(c) + 1}: {_label(p, c)}": (taus, *profiles[c]) for c in spread if c in profiles
        }
        frame = pd.concat(rows, ignore_index=True)
        atomic_write_path(out / "profiles.csv", lambda tmp: frame.to_csv(tmp, index=False, lineterminator="\n"))
        if prof_curves:
            plots.plot_curves(
                out / "performance_profile.png",
                prof_curves,
                title=f"performance profiles ({len(spread)} of {len(p.configs)} configurations "
                f"spread over the ranking, {len(p.seeds)} seeds)",
                ylabel="fraction of seeds with final return > tau",
                xlabel="final return threshold tau",
            )
    for name in p.names:
        _plot_param(out / f"final_vs_{name}.png", res, name)


def _plot_param(path: Path, res: SweepResult, name: str) -> None:
    """Final return against one swept name (``rl.host.plots.plot_final_vs_param``).

    When each value belongs to one configuration (one swept name, or random
    search) each configuration is a point with its IQM and 95% CI. When
    several configurations share a value (a grid over several names) the
    seeds of all of them are pooled per value: the marginal effect of ``name``.
    """
    p = res.plan
    by_value: dict[Any, list[int]] = {}
    for c, values in enumerate(p.configs):
        by_value.setdefault(_hashable(values[name]), []).append(c)
    pooled = any(len(cs) > 1 for cs in by_value.values())
    xs = list(by_value)
    points = [_bootstrap(res.final[cs].ravel(), stats.iqm) for cs in by_value.values()]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
    sampled = p.space.get("sample", {})
    log_x = False
    if numeric:  # a log axis for positive values drawn log-uniformly or spanning a factor of 10
        x = np.array([float(x) for x, point in zip(xs, points) if math.isfinite(point.point)])
        log_x = bool(x.size > 0 and np.all(x > 0)) and (
            str(sampled.get(name, "")).startswith("loguniform") or x.max() / x.min() >= 10
        )
    what = "pooled over the other swept names" if pooled else "one point per configuration"
    mean, low, high = (np.array(column, dtype=np.float64) for column in zip(*points))
    plots.plot_final_vs_param(
        path,
        np.array([float(x) for x in xs]) if numeric else np.array([str(_display(x)) for x in xs]),
        mean,
        low,
        high,
        param_name=name,
        log_x=log_x,
        title=f"final return vs {name} (IQM over seeds, 95% CI; {what})",
        ylabel="final return (IQM)",
        join=name not in sampled,  # random draws are points, not a curve
    )


def print_ranking(res: SweepResult, top: int = 10, file: IO[str] | None = None) -> None:
    """The ranking's head and the best configuration, as the CLI prints them."""
    p, s = res.plan, res.summary
    file = file or sys.stdout
    print(f"\nranking by IQM of the final return ({len(p.seeds)} seeds each; 95% CIs):", file=file)
    width = max([len(n) for n in p.names] + [6])
    head = (
        "  rank config  " + "  ".join(f"{n:>{width}}" for n in p.names) + "   IQM [95% CI]              mean [95% CI]"
    )
    print(head, file=file)
    for _, row in s.head(top).iterrows():
        vals = "  ".join(f"{_fmt(row[n]):>{width}}" for n in p.names)
        print(
            f"  {row['rank']:>4} {row['config']:>6}  {vals}   "
            f"{_fmt(row['iqm']):>8} [{_fmt(row['iqm_low'])} .. {_fmt(row['iqm_high'])}]   "
            f"{_fmt(row['mean']):>8} [{_fmt(row['mean_low'])} .. {_fmt(row['mean_high'])}]",
            file=file,
        )
    if len(s) > top:
        print(f"  ... {len(s) - top} more in summary.csv", file=file)
    best = s.iloc[0]
    values = ", ".join(f"{n}={_fmt(best[n])}" for n in p.names) or "the base settings"
    print(
        f"best: configuration {best['config']} ({values}): IQM final return {_fmt(best['iqm'])} "
        f"(95% CI {_fmt(best['iqm_low'])} .. {_fmt(best['iqm_high'])})",
        file=file,
    )
    print(f"compile {res.compile_seconds:.1f} s, run {res.run_seconds:.1f} s", file=file)
    if res.out is not None:
        print(
            f"report: {res.out}\nbest preset: python -m experiments.train {p.agent} "
            f"--preset-file {res.out / 'best_preset.json'}",
            file=file,
            flush=True,
        )


def _fmt(x: Any) -> str:
    if isinstance(x, (float, np.floating)):
        return "nan" if not math.isfinite(x) else f"{x:.4g}"
    return str(x)
