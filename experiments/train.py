"""Train an agent on many seeds at once and write a run folder.

    python -m experiments.train ppo --env CartPole-v1 --num-seeds 8
    python -m experiments.train ppo --preset purejaxrl-cartpole --learning-rate 1e-3
    python -m experiments.train ppo --help        # every field, its default and meaning

The run folder (``runs/<timestamp>-<agent>-<env>/`` or ``--out DIR``) holds
config.json, metrics.csv, metrics.jsonl, tensorboard/, curve.png, params.npz
(final parameters, leading axis = seed) and summary.json.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, Sequence, TypeVar

import numpy as np

C = TypeVar("C")
H = TypeVar("H")


@dataclass(frozen=True)
class TrainArgs(Generic[C, H]):
    """Train one agent on one environment over several seeds in parallel."""

    config: C
    hyper: H
    env: str = "CartPole-v1"
    """environment id: any gymnax id or one registered with envs.register"""
    num_seeds: int = 8
    """seeds trained in parallel (vmapped, split over all devices)"""
    seed: int = 0
    """first seed; the runs use seed, seed+1, ..., seed+num_seeds-1"""
    out: str | None = None
    """run folder (default runs/<timestamp>-<agent>-<env>); must not exist or be empty"""
    num_chunks: int = 20
    """host round trips for progress and metrics; 1 = the whole training is one jitted scan"""
    preset: str | None = None
    """published settings to start from (see experiments/presets.py); later flags override it"""
    preset_file: str | None = None
    """JSON preset file (as written by experiments.sweep); later flags override it"""
    progress: bool = True
    """show a progress bar"""


class UsageError(ValueError):
    """Bad command-line input; reported as one line, exit status 2."""


def _resolve(fn, *args):
    """Call a lookup (agent, env, preset); its ValueError becomes a UsageError."""
    try:
        return fn(*args)
    except ValueError as err:
        raise UsageError(str(err)) from None


def _take_flag(argv: list[str], flag: str) -> str | None:
    """Value of ``--flag V`` or ``--flag=V`` in argv (left in place for tyro)."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _replace_fields(obj: Any, values: dict[str, Any], what: str) -> Any:
    names = {f.name for f in dataclasses.fields(obj)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UsageError(f"{what} sets unknown field(s) {unknown}; fields are: {', '.join(sorted(names))}")
    return dataclasses.replace(obj, **{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def default_args(agent_name: str, argv: Sequence[str] = ()) -> TrainArgs:
    """Defaults for ``agent_name``, with ``--preset``/``--preset-file`` applied."""
    import agents
    from experiments import presets

    module = _resolve(agents.get, agent_name)
    args = TrainArgs(config=module.Config(), hyper=module.Hyper())
    name, path = _take_flag(list(argv), "--preset"), _take_flag(list(argv), "--preset-file")
    if name is not None and path is not None:
        raise UsageError("give --preset or --preset-file, not both")
    if name is None and path is None:
        return args
    preset = _resolve(presets.get, name) if name is not None else _resolve(presets.load_file, path)
    if preset.agent != agent_name:
        raise UsageError(f"preset {preset.name!r} is for agent {preset.agent!r}, not {agent_name!r}")
    return dataclasses.replace(
        args,
        env=preset.env,
        config=_replace_fields(args.config, preset.config, f"preset {preset.name!r}"),
        hyper=_replace_fields(args.hyper, preset.hyper, f"preset {preset.name!r}"),
        preset=name,
        preset_file=path,
    )


def parse(argv: Sequence[str]) -> tuple[str, TrainArgs]:
    """``[agent, *flags]`` -> the agent name and its typed arguments (tyro)."""
    import tyro

    import agents

    argv = list(argv)
    if not argv or argv[0].startswith("-"):
        names = ", ".join(sorted(agents.AGENTS))
        if argv and argv[0] in ("-h", "--help"):
            print(f"usage: python -m experiments.train AGENT [--help] [OPTIONS]\n\nagents: {names}")
            raise SystemExit(0)
        raise UsageError(f"name an agent first: python -m experiments.train AGENT ...; agents: {names}")
    agent_name, rest = argv[0], argv[1:]
    module = _resolve(agents.get, agent_name)
    defaults = default_args(agent_name, rest)
    arg_type = TrainArgs[module.Config, module.Hyper]  # type: ignore[name-defined]
    args = tyro.cli(
        arg_type,
        default=defaults,
        args=rest,
        prog=f"python -m experiments.train {agent_name}",
        config=(tyro.conf.FlagConversionOff, tyro.conf.OmitArgPrefixes),
    )
    return agent_name, args


def run_dir_for(agent_name: str, args: TrainArgs) -> Path:
    """The run folder; refuses one that holds files (nothing is overwritten)."""
    if args.out is not None:
        path = Path(args.out)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise UsageError(f"--out {str(path)!r} already exists and is not empty; choose a new folder")
        return path
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{stamp}-{agent_name}-{args.env}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


def write_json(path: Path, data: Any) -> None:
    """Atomic JSON write: a crash leaves the old file or the new one, never half."""
    _atomic_write(path, lambda f: f.write(json.dumps(data, indent=2, default=_jsonable).encode()))


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if dataclasses.is_dataclass(x):
        return dataclasses.asdict(x)
    return str(x)


_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_params(path: Path, params: Any) -> None:
    """Save a (nested dict) parameter pytree as ``.npz`` keyed ``module/name``."""
    import jax

    flat = {
        "/".join(str(getattr(k, "key", k)) for k in key_path): np.asarray(leaf)
        for key_path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]
    }
    _atomic_write(path, lambda f: np.savez(f, **flat))


def prepare(agent_name: str, args: TrainArgs):
    """Validate everything and build the algorithm; nothing is compiled here."""
    import agents
    import envs
    from rl.errors import check
    from rl.runner import check_divisible, make_mesh

    module = _resolve(agents.get, agent_name)
    check(isinstance(args.num_seeds, int) and args.num_seeds > 0, "num_seeds", args.num_seeds,
          "must be a positive integer")
    check(isinstance(args.num_chunks, int) and args.num_chunks > 0, "num_chunks", args.num_chunks,
          "must be a positive integer")
    env, env_params = _resolve(envs.make, args.env)
    algo = module.make(args.config, env, env_params)
    args.hyper.validate()
    mesh = make_mesh()
    check_divisible(args.num_seeds, mesh)
    return algo, mesh


def run(agent_name: str, args: TrainArgs) -> dict[str, Any]:
    """Train, write the run folder, return the summary (library entry point)."""
    import jax

    from rl import plots, stats
    from rl.progress import Progress
    from rl.runner import train
    from rl.sinks import CsvSink, JsonlSink, MultiSink, TensorBoardSink

    algo, mesh = prepare(agent_name, args)
    run_dir = run_dir_for(agent_name, args)
    seeds = list(range(args.seed, args.seed + args.num_seeds))
    labels = [{"seed": s} for s in seeds]
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", {
        "agent": agent_name, "env": args.env, "preset": args.preset, "preset_file": args.preset_file,
        "seeds": seeds, "num_chunks": args.num_chunks,
        "config": dataclasses.asdict(args.config), "hyper": dataclasses.asdict(args.hyper),
        "jax_version": jax.__version__, "devices": [str(d) for d in mesh.devices.flat],
    })
    sink = MultiSink([
        CsvSink(run_dir / "metrics.csv", labels),
        JsonlSink(run_dir / "metrics.jsonl", labels),
        TensorBoardSink(run_dir / "tensorboard", labels),
    ])
    total_steps = algo.num_updates * algo.steps_per_update
    print(f"{agent_name} on {args.env}: {len(seeds)} seeds x {total_steps:,} env steps, "
          f"{algo.num_updates} updates in {args.num_chunks} chunk(s), {mesh.devices.size} device(s); "
          f"compiling ...", flush=True)
    with Progress(total_steps, len(seeds), enabled=args.progress) as progress:

        def on_chunk(report):
            sink.write(report.metrics, report.first_update, algo.steps_per_update)
            ret, n = report.metrics["episode_return"][:, -1], report.metrics["episodes"][:, -1]
            progress.advance(
                report.num_updates * algo.steps_per_update,
                float(np.mean(ret[n > 0])) if np.any(n > 0) else None,
            )

        result = train(algo, args.hyper, seeds, num_chunks=args.num_chunks, mesh=mesh, on_chunk=on_chunk)
    sink.close()
    return finish(run_dir, agent_name, args, algo, result, seeds)


def finish(run_dir: Path, agent_name: str, args: TrainArgs, algo, result, seeds) -> dict[str, Any]:
    """Curve, parameters and summary.json of a finished batch of runs."""
    from rl import plots, stats

    ret, count = result.metrics["episode_return"], result.metrics["episodes"]
    env_steps = (np.arange(ret.shape[1]) + 1) * algo.steps_per_update
    plots.plot_learning_curve(run_dir / "curve.png", env_steps, ret, count,
                              title=f"{agent_name} on {args.env} ({len(seeds)} seeds)")
    save_params(run_dir / "params.npz", result.params)
    final = stats.final_return(ret, count, fraction=0.05)
    valid = final[np.isfinite(final)]
    low, high = stats.bootstrap_ci(valid) if valid.size else (float("nan"), float("nan"))
    summary = {
        "agent": agent_name,
        "env": args.env,
        "preset": args.preset,
        "num_seeds": len(seeds),
        "seeds": seeds,
        "total_timesteps": result.env_steps_per_run,
        "num_updates": int(ret.shape[1]),
        "final_return_mean": float(np.mean(valid)) if valid.size else None,
        "final_return_ci95": [float(low), float(high)] if valid.size else None,
        "final_return_per_seed": [float(x) if np.isfinite(x) else None for x in final],
        "compile_seconds": result.compile_seconds,
        "run_seconds": result.run_seconds,
        "env_steps_per_second": result.env_steps_per_second,
        "num_chunks": result.num_chunks,
        "status": "completed",
        "run_dir": str(run_dir),
    }
    write_json(run_dir / "summary.json", summary)
    print_summary(summary)
    return summary


def print_summary(s: dict[str, Any]) -> None:
    mean, ci = s["final_return_mean"], s["final_return_ci95"]
    per_seed = ", ".join("-" if x is None else f"{x:.1f}" for x in s["final_return_per_seed"])
    head = f"final return {mean:.2f} (95% CI {ci[0]:.2f} .. {ci[1]:.2f})" if mean is not None else \
        "final return: no episode ended in the last 5% of training"
    print(f"{s['agent']} on {s['env']}, {s['num_seeds']} seeds x {s['total_timesteps']:,} steps: {head}\n"
          f"  per seed: {per_seed}\n"
          f"  compile {s['compile_seconds']:.1f} s, run {s['run_seconds']:.1f} s, "
          f"{s['env_steps_per_second']:,.0f} env steps/s (all seeds)\n"
          f"  run folder: {s['run_dir']}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    from rl.errors import ConfigError

    argv = sys.argv[1:] if argv is None else list(argv)
    import envs

    try:
        agent_name, args = parse(argv)
        run(agent_name, args)
        return 0
    except (ConfigError, UsageError, envs.EnvUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
