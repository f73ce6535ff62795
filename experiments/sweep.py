"""Sweep hyperparameters x seeds (one compile for every traced value) and write a report.

    python -m experiments.sweep ppo --env CartPole-v1 --num-seeds 16 \\
        --grid learning_rate=1e-4,3e-4,1e-3 --grid ent_coef=0,0.01
    python -m experiments.sweep ppo --sample learning_rate=loguniform:1e-5:1e-2 --samples 32
    python -m experiments.sweep ppo --grid num_envs=4,8      # shape-setting: one compile per value
    python -m experiments.sweep ppo --help                    # every flag; base settings as in train

``--grid NAME=V1,V2,...`` (repeatable) sweeps the product of the lists;
``--sample NAME=DIST`` (repeatable; DIST is ``uniform:LOW:HIGH``,
``loguniform:LOW:HIGH`` or ``choice:V1,V2,...``) draws ``--samples N`` random
configurations, combined with every grid point. Every other flag (``--preset``,
``--preset-file``, ``--num-envs``, ``--learning-rate``, ...) sets the base
settings exactly as in ``experiments.train``. Tuples are written with ``x``:
``--grid hidden_sizes=64x64,256x256``.

The report folder (``runs/<timestamp>-sweep-<agent>-<env>/`` or ``--out``) is
described in ``rl/sweep.py``; its ``best_preset.json`` trains the winner:
``python -m experiments.train ppo --preset-file .../best_preset.json``.

Multi-host: run the same command on every host with
``--coordinator-address HOST0:PORT --num-processes N --process-id I`` (or the
environment variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
JAX_PROCESS_ID). Every host derives the same configurations and keys; the
runs are sharded over the devices of all hosts, gathered on every host, and
only process 0 prints and writes files.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Sequence

import tyro

from experiments.train import C, H, TrainArgs, UsageError, _resolve, _take_flag, default_args


@dataclass(frozen=True)
class SweepArgs(TrainArgs[C, H]):
    """Sweep hyperparameters over seeds: one compile for all traced values x seeds, sharded over every device."""

    out: str | None = None
    """report folder (default runs/<timestamp>-sweep-<agent>-<env>); must not exist or be empty"""
    grid: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """NAME=V1,V2,...: sweep the product of the value lists"""
    sample: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """NAME=uniform:LOW:HIGH | loguniform:LOW:HIGH | choice:V1,V2,...: random search"""
    samples: int | None = None
    """number of random configurations drawn from the --sample distributions"""
    sample_seed: int = 0
    """seed of the random search draws"""
    pad: bool = True
    """pad runs that do not divide the device count with duplicate runs (dropped from all outputs); False refuses"""
    plot_top: int = 10
    """configurations drawn in the curve and profile plots (best first; 0 = all)"""
    coordinator_address: str | None = None
    """multi-host: HOST:PORT of process 0 (or JAX_COORDINATOR_ADDRESS)"""
    num_processes: int | None = None
    """multi-host: number of processes (or JAX_NUM_PROCESSES)"""
    process_id: int | None = None
    """multi-host: this process's index, 0 writes the report (or JAX_PROCESS_ID)"""


def parse(argv: Sequence[str]) -> tuple[str, SweepArgs]:
    """``[agent, *flags]`` -> the agent name and its typed sweep arguments."""
    import agents

    argv = list(argv)
    if not argv or argv[0].startswith("-"):
        names = ", ".join(sorted(agents.AGENTS))
        if argv and argv[0] in ("-h", "--help"):
            print(f"usage: python -m experiments.sweep AGENT [--help] [OPTIONS]\n\nagents: {names}")
            raise SystemExit(0)
        raise UsageError(f"name an agent first: python -m experiments.sweep AGENT ...; agents: {names}")
    agent_name, rest = argv[0], argv[1:]
    module = _resolve(agents.get, agent_name)
    base = default_args(agent_name, rest)
    defaults = SweepArgs(**{f.name: getattr(base, f.name) for f in dataclasses.fields(TrainArgs)})
    args = tyro.cli(
        SweepArgs[module.Config, module.Hyper],  # type: ignore[name-defined]
        default=defaults,
        args=rest,
        prog=f"python -m experiments.sweep {agent_name}",
        config=(tyro.conf.FlagConversionOff, tyro.conf.OmitArgPrefixes),
    )
    return agent_name, args


def _specs(items: Sequence[str], what: str) -> dict[str, str]:
    from rl.errors import ConfigError
    from rl.sweep import parse_spec

    out: dict[str, str] = {}
    for item in items:
        name, values = parse_spec(item, what)
        if name in out:
            raise ConfigError(what, name, "given twice; give each name once with all its values")
        out[name] = values
    return out


def out_dir_for(agent_name: str, args: SweepArgs) -> Path:
    """``--out``, or a new ``runs/<timestamp>-sweep-<agent>-<env>`` folder."""
    if args.out is not None:
        return Path(args.out)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{stamp}-sweep-{agent_name}-{args.env}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


# TrainArgs fields the sweep reads; any other train flag is refused, never silently ignored
READS = {"config", "hyper", "env", "num_seeds", "seed", "out", "num_chunks", "preset", "preset_file", "progress"}


def run(agent_name: str, args: SweepArgs) -> Any:
    """Run the sweep the arguments describe (library entry point); returns the ``SweepResult``."""
    import agents
    import rl
    from rl.errors import check

    module = _resolve(agents.get, agent_name)
    for f in dataclasses.fields(TrainArgs):
        if f.name not in READS and f.default is not dataclasses.MISSING and getattr(args, f.name) != f.default:
            raise UsageError(f"--{f.name.replace('_', '-')} is a train option the sweep does not support")
    check(isinstance(args.num_seeds, int) and args.num_seeds > 0, "num_seeds", args.num_seeds,
          "must be a positive integer")
    grid, sample = _specs(args.grid, "grid"), _specs(args.sample, "sample")
    return rl.sweep(
        module,
        args.env,
        grid=grid,
        sample=sample,
        num_samples=args.samples,
        seeds=list(range(args.seed, args.seed + args.num_seeds)),
        config=args.config,
        hyper=args.hyper,
        sample_seed=args.sample_seed,
        num_chunks=args.num_chunks,
        pad=args.pad,
        out=out_dir_for(agent_name, args),
        progress=args.progress,
        plot_top=args.plot_top,
    )


def _start_distributed(argv: Sequence[str]) -> None:
    """Join the multi-host run before anything touches a JAX backend.

    The flags are read from argv here (tyro parses them again later) because
    ``jax.distributed.initialize`` must precede every JAX computation, and
    building the defaults may already create arrays.
    """
    from rl import distributed

    def flag(name: str) -> str | None:
        value = _take_flag(list(argv), name)
        return None if value in (None, "None") else value

    distributed.initialize(flag("--coordinator-address"), flag("--num-processes"), flag("--process-id"))


def main(argv: Sequence[str] | None = None) -> int:
    from rl.errors import ConfigError

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        _start_distributed(argv)  # before `import envs`, which already creates arrays
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
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
