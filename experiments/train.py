"""Train an agent on many seeds at once and write a run folder.

    python -m experiments.train ppo --env CartPole-v1 --num-seeds 8
    python -m experiments.train ppo --preset purejaxrl-cartpole --learning-rate 1e-3
    python -m experiments.train ppo --help        # every field, its default and meaning
    python -m experiments.train --resume RUN_DIR  # continue an interrupted run

The run folder (``runs/<timestamp>-<agent>-<env>/`` or ``--out DIR``) holds
config.json, metrics.csv, metrics.jsonl, tensorboard/, curve.png, params.npz
(final parameters, leading axis = seed), checkpoints/ (the whole training
state every ``--checkpoint-every`` chunks and at the end; see
rl/checkpoint.py) and summary.json (``status``: running, completed,
interrupted or diverged).

Ctrl-C or SIGTERM lets the chunk in flight finish, saves a checkpoint, marks
the run interrupted and prints the ``--resume`` command; ``--resume`` then
continues it with its saved settings, and the metrics and parameters come out
bit-identical to those of an uninterrupted run on the same machine. A NaN or
inf in the parameters, optimizer state or a loss stops training at the end of
that chunk, names the update and the seed, and keeps the last good checkpoint.

Exit status: 0 completed, 1 diverged, 2 bad input (one ``error:`` line),
128 + signal number when interrupted (130 for Ctrl-C, 143 for SIGTERM).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import io
import json
import os
import re
import signal
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


@dataclass(frozen=True)
class RunArgs(TrainArgs[C, H]):
    """Train one agent on one environment over several seeds in parallel."""

    checkpoint_every: int = 5
    """save the whole training state every K chunks (and always at the end and on Ctrl-C/SIGTERM); 0 = only then"""
    keep_checkpoints: int = 2
    """checkpoints kept in RUN_DIR/checkpoints (older ones are deleted)"""
    resume: str | None = None
    """continue the interrupted run in this folder with its saved settings (no other flag but --progress)"""


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
    base = default_args(agent_name, rest)
    defaults = RunArgs(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})
    arg_type = RunArgs[module.Config, module.Hyper]  # type: ignore[name-defined]
    args = tyro_cli(
        arg_type,
        default=defaults,
        args=rest,
        prog=f"python -m experiments.train {agent_name}",
        config=(tyro.conf.FlagConversionOff, tyro.conf.OmitArgPrefixes),
    )
    return agent_name, args


def tyro_cli(arg_type: Any, *, args: list[str], prog: str, **kwargs: Any) -> Any:
    """``tyro.cli`` whose parse errors become one-line :class:`UsageError` s.

    tyro prints a multi-line box and exits with status 2; its text is captured
    and condensed to its first message line plus a pointer to ``--help``.
    ``--help`` itself prints as usual.
    """
    import tyro

    if any(a in ("-h", "--help") for a in args):
        return tyro.cli(arg_type, args=args, prog=prog, **kwargs)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(captured):
            return tyro.cli(arg_type, args=args, prog=prog, **kwargs)
    except SystemExit as exit_:
        if exit_.code in (0, None):
            raise
        raise UsageError(f"{_tyro_message(captured.getvalue())}; see {prog} --help") from None


def _tyro_message(text: str) -> str:
    """The message of a tyro error box: the block after its title, as one line."""
    blocks: list[list[str]] = [[]]
    for line in text.splitlines():
        line = re.sub(r"[\u2500-\u257f]", "", line).strip()  # box-drawing characters
        if line and set(line) <= set("-"):  # a separator
            blocks.append([])
        elif line:
            blocks[-1].append(line)
    blocks = [b for b in blocks if b]
    body = blocks[1] if len(blocks) > 1 else (blocks[0] if blocks else ["invalid command line"])
    return " ".join(body).rstrip(".")


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

    def positive_int(name: str, value: Any, minimum: int = 1) -> None:
        check(isinstance(value, int) and not isinstance(value, bool) and value >= minimum, name, value,
              "must be a positive integer" if minimum == 1 else f"must be an integer >= {minimum}")

    positive_int("num_seeds", args.num_seeds)
    positive_int("num_chunks", args.num_chunks)
    positive_int("seed", args.seed, minimum=0)
    check(args.seed + args.num_seeds <= 2**31, "seed", args.seed,
          f"seed + num_seeds must not exceed 2**31 = {2**31}")
    if hasattr(args, "checkpoint_every"):
        positive_int("checkpoint_every", args.checkpoint_every, minimum=0)
        positive_int("keep_checkpoints", args.keep_checkpoints)
    env, env_params = _resolve(envs.make, args.env)
    algo = module.make(args.config, env, env_params)
    args.hyper.validate()
    mesh = make_mesh()
    check_divisible(args.num_seeds, mesh)
    return algo, mesh


CONFIG_FILE, SUMMARY_FILE, CHECKPOINT_DIR = "config.json", "summary.json", "checkpoints"


def resume_command(run_dir: Path) -> str:
    return f"python -m experiments.train --resume {run_dir}"


def load_run_config(run_dir: str | os.PathLike[str]) -> tuple[str, RunArgs]:
    """The agent name and the arguments a run folder was started with (its config.json)."""
    import agents

    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise UsageError(f"{str(run_dir)!r} is not a run folder: it has no {CONFIG_FILE}")
    try:
        saved = json.loads(path.read_text())
        agent_name = saved["agent"]
        module = _resolve(agents.get, agent_name)
        seeds = [int(x) for x in saved["seeds"]]
        args = RunArgs(
            config=_replace_fields(module.Config(), saved["config"], f"{path}"),
            hyper=_replace_fields(module.Hyper(), saved["hyper"], f"{path}"),
            env=saved["env"],
            num_seeds=len(seeds),
            seed=seeds[0],
            out=str(run_dir),
            num_chunks=int(saved["num_chunks"]),
            preset=saved.get("preset"),
            preset_file=saved.get("preset_file"),
            checkpoint_every=int(saved.get("checkpoint_every", 0)),
            keep_checkpoints=int(saved.get("keep_checkpoints", 2)),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        if isinstance(err, UsageError):
            raise
        raise UsageError(f"{path} is damaged or from another version ({type(err).__name__}: {err})") from None
    if seeds != list(range(args.seed, args.seed + args.num_seeds)):
        raise UsageError(f"{path} lists seeds {seeds}, which are not consecutive; cannot resume it")
    return agent_name, args


def _resume_flags(argv: list[str]) -> tuple[str, bool] | None:
    """``(run_dir, progress)`` when argv asks to resume; rejects any other flag."""
    if not any(a == "--resume" or a.startswith("--resume=") for a in argv):
        return None
    rest, run_dir, progress = list(argv), None, True
    if rest and not rest[0].startswith("-"):
        rest.pop(0)  # an agent name may come first; config.json decides
    while rest:
        arg = rest.pop(0)
        flag, _, value = arg.partition("=")
        if flag in ("--resume", "--progress") and not value:
            if not rest:
                raise UsageError(f"{flag} needs a value")
            value = rest.pop(0)
        if flag == "--resume":
            run_dir = value
        elif flag == "--progress" and value in ("True", "False"):
            progress = value == "True"
        else:
            raise UsageError(
                f"--resume continues a run with the settings in its config.json; drop {arg!r} "
                "(only --progress True/False may be given)"
            )
    return str(run_dir), progress


def run(agent_name: str, args: TrainArgs, *, resume: bool = False) -> dict[str, Any]:
    """Train (or, with ``resume``, continue ``args.out``), write the run folder, return the summary.

    The library entry point behind the CLI. ``args`` may be a :class:`TrainArgs`
    (no checkpoint flags: checkpoints every 5 chunks, 2 kept) or a :class:`RunArgs`.
    """
    import jax

    from rl.checkpoint import Checkpointer, StopOnSignals
    from rl.progress import Progress
    from rl.runner import train
    from rl.sinks import CsvSink, JsonlSink, MultiSink, TensorBoardSink

    algo, mesh = prepare(agent_name, args)
    every, keep = getattr(args, "checkpoint_every", 5), getattr(args, "keep_checkpoints", 2)
    if resume:
        run_dir = Path(args.out)
        summary = _read_json(run_dir / SUMMARY_FILE)
        if summary.get("status") == "completed":
            raise UsageError(f"the run in {str(run_dir)!r} is complete; there is nothing to resume")
    else:
        run_dir = run_dir_for(agent_name, args)
    seeds = list(range(args.seed, args.seed + args.num_seeds))
    labels = [{"seed": s} for s in seeds]
    checkpointer = Checkpointer(run_dir / CHECKPOINT_DIR, every=every, max_to_keep=keep)
    start_update = 0
    if resume:
        start_update = _start_of_resume(checkpointer, run_dir, len(seeds))
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / CONFIG_FILE, {
            "agent": agent_name, "env": args.env, "preset": args.preset, "preset_file": args.preset_file,
            "seeds": seeds, "num_chunks": args.num_chunks, "checkpoint_every": every, "keep_checkpoints": keep,
            "config": dataclasses.asdict(args.config), "hyper": dataclasses.asdict(args.hyper),
            "jax_version": jax.__version__, "devices": [str(d) for d in mesh.devices.flat],
        })
    write_json(run_dir / SUMMARY_FILE, {
        "agent": agent_name, "env": args.env, "status": "running", "seeds": seeds,
        "started_at_update": start_update, "num_updates": algo.num_updates,
        "resume_command": resume_command(run_dir), "run_dir": str(run_dir),
    })
    sink = MultiSink([
        CsvSink(run_dir / "metrics.csv", labels, resume=resume),
        JsonlSink(run_dir / "metrics.jsonl", labels, resume=resume),
        TensorBoardSink(run_dir / "tensorboard", labels, resume_from_update=start_update if resume else None,
                        steps_per_update=algo.steps_per_update),
    ])
    total_steps = algo.num_updates * algo.steps_per_update
    verb = f"resuming at update {start_update} of" if resume else "training"
    print(f"{agent_name} on {args.env}: {verb} {len(seeds)} seeds x {total_steps:,} env steps, "
          f"{algo.num_updates} updates in {args.num_chunks} chunk(s), {mesh.devices.size} device(s); "
          f"compiling ...", flush=True)
    try:
        with Progress(total_steps, len(seeds), enabled=args.progress,
                      start_env_steps=start_update * algo.steps_per_update) as progress, \
                StopOnSignals() as stop:

            def on_chunk(report):
                sink.write(report.metrics, report.first_update, algo.steps_per_update)
                ret, n = report.metrics["episode_return"][:, -1], report.metrics["episodes"][:, -1]
                progress.advance(
                    report.num_updates * algo.steps_per_update,
                    float(np.mean(ret[n > 0])) if np.any(n > 0) else None,
                )

            result = train(algo, args.hyper, seeds, num_chunks=args.num_chunks, mesh=mesh, on_chunk=on_chunk,
                           checkpointer=checkpointer, resume=resume, should_stop=stop)
    finally:
        sink.close()
        checkpointer.close()
    if result.status == "interrupted":
        result.extra["signal"] = stop.requested
    return finish(run_dir, agent_name, args, algo, result, seeds)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _start_of_resume(checkpointer, run_dir: Path, num_runs: int) -> int:
    """Updates done at the newest checkpoint; cuts the metric files back to that update."""
    step = checkpointer.latest_step()
    if step is None:
        raise UsageError(
            f"{str(run_dir)!r} has no checkpoint to resume from (the run stopped before its first one); "
            "start it again"
        )
    rows = num_runs * int(checkpointer.read_meta(step)["update"])
    _keep_rows(run_dir / "metrics.csv", rows, header=True)
    _keep_rows(run_dir / "metrics.jsonl", rows, header=False)
    return step


def _keep_rows(path: Path, rows: int, header: bool) -> None:
    """Cut a metric file to its header and first ``rows`` rows: what the checkpoint covers.

    The sinks write each chunk as N * L complete lines, so the rows of the
    first ``u`` updates are the first ``N * u`` lines; later rows (written
    after the checkpoint) would otherwise appear twice once training continues.
    """
    if not path.exists():
        if rows:
            raise UsageError(f"{path} is missing; it cannot be rebuilt, start the run again")
        return
    keep = rows + (1 if header else 0)
    with path.open("rb") as f:
        lines = f.readlines()
    complete = [line for line in lines if line.endswith(b"\n")]
    if len(complete) < keep:
        raise UsageError(
            f"{path} has {len(complete)} lines but the checkpoint covers {keep}; the run folder was "
            "modified, start the run again"
        )
    size = sum(len(line) for line in complete[:keep])
    with path.open("r+b") as f:
        f.truncate(size)
        f.flush()
        os.fsync(f.fileno())


def finish(run_dir: Path, agent_name: str, args: TrainArgs, algo, result, seeds) -> dict[str, Any]:
    """Curve, parameters and summary.json of a batch of runs that stopped (for any reason)."""
    from rl import plots, stats

    summary: dict[str, Any] = {
        "agent": agent_name,
        "env": args.env,
        "preset": args.preset,
        "num_seeds": len(seeds),
        "seeds": seeds,
        "status": result.status,
        "num_updates": result.num_updates,
        "total_timesteps": result.env_steps_per_run,
    }
    ret, count = result.metrics.get("episode_return"), result.metrics.get("episodes")
    if ret is not None and ret.shape[1]:
        env_steps = (np.arange(ret.shape[1]) + 1) * algo.steps_per_update
        plots.plot_learning_curve(run_dir / "curve.png", env_steps, ret, count,
                                  title=f"{agent_name} on {args.env} ({len(seeds)} seeds)")
    if result.status == "completed":
        save_params(run_dir / "params.npz", result.params)
        final = stats.final_return(ret, count, fraction=0.05)
        valid = final[np.isfinite(final)]
        low, high = stats.bootstrap_ci(valid) if valid.size else (float("nan"), float("nan"))
        summary.update({
            "final_return_mean": float(np.mean(valid)) if valid.size else None,
            "final_return_ci95": [float(low), float(high)] if valid.size else None,
            "final_return_per_seed": [float(x) if np.isfinite(x) else None for x in final],
        })
    summary.update({
        "compile_seconds": result.compile_seconds,
        "run_seconds": result.run_seconds,
        "env_steps_per_second": result.env_steps_per_second,
        "num_chunks": result.num_chunks,
        "resumed_at_update": result.start_update if result.start_update else None,
        "checkpoint_update": result.checkpoint_step,
        "run_dir": str(run_dir),
    })
    if result.status == "diverged":
        summary["divergence"] = [
            {"seed": seeds[d.run % len(seeds)], "run": d.run, "update": d.update} for d in result.divergence
        ]
    if result.status == "interrupted":
        summary["signal"] = result.extra.get("signal")
    if result.status != "completed" and result.checkpoint_step is not None:
        summary["resume_command"] = resume_command(run_dir)
    write_json(run_dir / SUMMARY_FILE, summary)
    print_summary(summary, algo.num_updates)
    return summary


def print_summary(s: dict[str, Any], planned_updates: int | None = None) -> None:
    status = s.get("status", "completed")
    where = f"  run folder: {s['run_dir']}"
    if status == "interrupted":
        ckpt = s.get("checkpoint_update")
        if ckpt is None:
            print(f"{s['agent']} on {s['env']}: interrupted before the first chunk finished; nothing was "
                  f"saved, start the run again.\n{where}", flush=True)
            return
        print(f"{s['agent']} on {s['env']}: interrupted after update {s['num_updates']} of {planned_updates} "
              f"({s['total_timesteps']:,} env steps per seed); checkpoint saved at update {ckpt}.\n"
              f"  resume with: {s['resume_command']}\n{where}", flush=True)
        return
    if status == "diverged":
        first = min(s["divergence"], key=lambda d: d["update"])
        others = len(s["divergence"]) - 1
        ckpt = s.get("checkpoint_update")
        kept = (f"the last good checkpoint (update {ckpt}) is kept in {s['run_dir']}/{CHECKPOINT_DIR}"
                if ckpt is not None else "no checkpoint was saved before it")
        print(f"error: training diverged: NaN or inf in the parameters, optimizer state or a loss at "
              f"update {first['update']} of seed {first['seed']}"
              + (f" (and {others} more run(s), see summary.json)" if others else "")
              + f"; stopped after update {s['num_updates']}; {kept}.\n{where}", file=sys.stderr, flush=True)
        return
    mean, ci = s["final_return_mean"], s["final_return_ci95"]
    per_seed = ", ".join("-" if x is None else f"{x:.1f}" for x in s["final_return_per_seed"])
    head = f"final return {mean:.2f} (95% CI {ci[0]:.2f} .. {ci[1]:.2f})" if mean is not None else \
        "final return: no episode ended in the last 5% of training"
    print(f"{s['agent']} on {s['env']}, {s['num_seeds']} seeds x {s['total_timesteps']:,} steps: {head}\n"
          f"  per seed: {per_seed}\n"
          f"  compile {s['compile_seconds']:.1f} s, run {s['run_seconds']:.1f} s, "
          f"{s['env_steps_per_second']:,.0f} env steps/s (all seeds)\n"
          f"{where}", flush=True)


def exit_status(summary: dict[str, Any]) -> int:
    """0 completed, 1 diverged, 128 + signal number when interrupted."""
    status = summary.get("status")
    if status == "diverged":
        return 1
    if status == "interrupted":
        name = summary.get("signal") or "SIGINT"
        return 128 + int(getattr(signal, name, signal.SIGINT))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from rl.errors import ConfigError

    argv = sys.argv[1:] if argv is None else list(argv)
    import envs

    try:
        resuming = _resume_flags(argv)
        if resuming is not None:
            run_dir, progress = resuming
            agent_name, args = load_run_config(run_dir)
            summary = run(agent_name, dataclasses.replace(args, progress=progress), resume=True)
        else:
            agent_name, args = parse(argv)
            if args.resume is not None:  # only reachable through odd spellings; be safe
                raise UsageError("give --resume RUN_DIR alone")
            summary = run(agent_name, args)
        return exit_status(summary)
    except (ConfigError, UsageError, envs.EnvUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
