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
settings exactly as in ``experiments.train``. A list field's values join their
elements with ``x``: ``--grid hidden_sizes=64x64,256x256`` sweeps two
architectures; booleans are ``true``/``false``; ``none`` where a field allows it.

``--track`` logs every configuration to Weights & Biases as its own run (the curves over its
seeds, as TensorBoard shows them, and its settings as the W&B config), grouped under
``--wandb-group`` (default: the report folder's name) in ``--wandb-project``; wandb's local
files go to the report folder (``WANDB_MODE=offline`` keeps them there for ``wandb sync``).

The report folder (``runs/<timestamp>-sweep-<agent>-<env>/`` or ``--out``) is
described in ``rl/sweep/__init__.py``; its ``best_preset.json`` trains the winner:
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
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from experiments.train import (
    C,
    H,
    TrainArgs,
    UsageError,
    _bare_track,
    _os_reason,
    _resolve,
    _take_flag,
    claim_folder,
    default_args,
    help_description,
    tyro_cli,
)


@dataclass(frozen=True)
class SweepArgs(TrainArgs[C, H]):
    """Sweep hyperparameters over seeds: one compile for all traced values x seeds, sharded over every device."""

    out: str | None = None
    """report folder (default runs/<timestamp>-sweep-<agent>-<env>); must not exist or be empty"""
    grid: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """NAME=V1,V2,...: sweep the product of the value lists (repeat --grid for each NAME); a list field's values join their elements with x, e.g. hidden_sizes=64x64,256x256x256; booleans true/false; none where a field allows it"""
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
    eval_every: int = 0
    """evaluation episodes after every N updates and after the last one, inside the jitted program (metric eval_return); the configurations are then scored and ranked by the final evaluation return instead of the training episodes'; 0 = none (default)"""
    eval_episodes: int | None = None
    """with --eval-every: episodes per evaluation and seed, played in parallel; every seed plays the same start states"""
    eval_mode: Literal["greedy", "stochastic"] = "greedy"
    """with --eval-every: greedy (the policy's deterministic action) or stochastic (act(deterministic=False))"""
    eval_seed: int = 0
    """with --eval-every: seed of the evaluation episodes' start states, the same for every run"""
    track: bool = False
    """also log every configuration to Weights & Biases as its own run (needs pip install -e ".[wandb]"): the curves over its seeds and its settings; --track alone means --track True; WANDB_MODE=offline writes wandb's local files only"""
    wandb_project: str | None = None
    """W&B project (with --track; default jaxrl-engine)"""
    wandb_entity: str | None = None
    """W&B entity, a user or team (with --track; default: your wandb default)"""
    wandb_group: str | None = None
    """W&B group of the sweep's runs, one run per configuration (with --track; default: the report folder's name)"""
    wandb_name: str | None = None
    """prefix of the W&B run names, each named by its configuration, e.g. '#3 learning_rate=0.001' (with --track; default none)"""
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
            from experiments import presets

            print(
                f"usage: python -m experiments.sweep AGENT [--help] [OPTIONS]\n\nagents: {names}\n\n"
                f"{presets.help_text()}"
            )
            raise SystemExit(0)
        raise UsageError(f"name an agent first: python -m experiments.sweep AGENT ...; agents: {names}")
    agent_name, rest = argv[0], _bare_track(argv[1:])
    module = _resolve(agents.get, agent_name)
    base = default_args(agent_name, rest)
    defaults = SweepArgs(**{f.name: getattr(base, f.name) for f in dataclasses.fields(TrainArgs)})
    args = tyro_cli(  # parse errors: one error line, as in experiments.train
        SweepArgs[module.Config, module.Hyper],  # type: ignore[name-defined]
        default=defaults,
        args=rest,
        prog=f"python -m experiments.sweep {agent_name}",
        config=(tyro.conf.FlagConversionOff, tyro.conf.OmitArgPrefixes),
        description=help_description(SweepArgs, agent_name),
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
    env_name = re.sub(r"[^A-Za-z0-9._-]+", "_", args.env)  # an env spec "my_envs:MyEnv" -> my_envs_MyEnv
    base = Path("runs") / f"{stamp}-sweep-{agent_name}-{env_name}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


# TrainArgs fields the sweep reads; any other train flag is refused, never silently ignored
READS = {
    "config",
    "hyper",
    "env",
    "num_seeds",
    "seed",
    "out",
    "num_chunks",
    "preset",
    "preset_file",
    "progress",
    "track",
}
READS |= {"wandb_project", "wandb_entity", "wandb_group", "wandb_name"}


def run(agent_name: str, args: SweepArgs) -> Any:
    """Run the sweep the arguments describe (library entry point); returns the ``SweepResult``."""
    import agents
    import rl
    from rl.errors import check

    module = _resolve(agents.get, agent_name)
    for f in dataclasses.fields(TrainArgs):
        if f.name not in READS and f.default is not dataclasses.MISSING and getattr(args, f.name) != f.default:
            raise UsageError(f"--{f.name.replace('_', '-')} is a train option the sweep does not support")
    check(
        isinstance(args.num_seeds, int) and args.num_seeds > 0,
        "num_seeds",
        args.num_seeds,
        "must be a positive integer",
    )
    check(isinstance(args.seed, int) and args.seed >= 0, "seed", args.seed, "must be an integer >= 0")
    check(args.seed + args.num_seeds <= 2**31, "seed", args.seed, f"seed + num_seeds must not exceed 2**31 = {2**31}")
    check(
        isinstance(args.sample_seed, int) and 0 <= args.sample_seed < 2**63,
        "sample_seed",
        args.sample_seed,
        "must be an integer in [0, 2**63)",
    )
    grid, sample = _specs(args.grid, "grid"), _specs(args.sample, "sample")
    evaluation = _evaluation(args)
    tracking = _tracking(args)
    _check_memory(module, args, grid, sample)
    out = out_dir_for(agent_name, args)
    lock = claim_folder(out, "--out", empty=True) if _primary() else None
    discard = True  # bad input found by rl.sweep before it writes: leave no folder behind
    try:
        result = rl.sweep(
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
            out=out,
            progress=args.progress,
            plot_top=args.plot_top,
            evaluation=evaluation,
            track=tracking,
        )
        discard = False
        return result
    finally:
        if lock is not None:
            lock.release(discard=discard)


def _evaluation(args: SweepArgs) -> Any:
    """The ``rl.device.evaluation.EvalConfig`` of ``--eval-*``, or None: a sweep plays evaluation episodes
    only when ``--eval-every N`` (N >= 1) asks for them, and then ranks by their final return."""
    from experiments.train import eval_config_of
    from rl.device.evaluation import EvalConfig

    config = eval_config_of(args)
    config.validate()  # --eval-every, --eval-episodes, --eval-mode, --eval-seed
    if config.every == 0:
        default = EvalConfig()
        for name in ("episodes", "mode", "seed"):
            if getattr(config, name) != getattr(default, name):
                raise UsageError(
                    f"--eval-{name} needs --eval-every N: a sweep plays evaluation episodes only when asked"
                )
        return None
    return config


def _tracking(args: SweepArgs) -> dict[str, str] | None:
    """``--track``'s W&B settings for ``rl.sweep`` (None without it), checked as in ``experiments.train``:
    one W&B run per configuration, grouped under ``--wandb-group`` (default: the report folder's
    name) and named ``--wandb-name`` (a prefix, default none) plus the configuration."""
    from experiments.train import wandb_settings

    settings = wandb_settings(args)
    return None if settings is None else {key: value for key, value in settings.items() if value is not None}


def _primary() -> bool:
    from rl.engine import distributed

    return distributed.is_primary()


MIN_RUN_BYTES = 1024  # a run's parameters alone take more: the floor when a shape-setting field is swept


def _check_memory(module: Any, args: SweepArgs, grid: dict[str, str], sample: dict[str, str]) -> None:
    """Refuse, before the configurations are even listed, a sweep whose runs cannot fit in memory.

    Runs = seeds x grid points x samples. One run's need comes from the base settings
    (rl/device/memory.py) when only traced fields are swept; a swept shape-setting field may
    shrink it, so then only a floor of ``MIN_RUN_BYTES`` per run is assumed.
    """
    import envs
    from rl.device import memory
    from rl.engine.runner import make_mesh
    from rl.sweep import sweepable

    params = sweepable(module)
    points = math.prod(len(values.split(",")) for values in grid.values())
    configs = points * (args.samples or 1)
    if any(name in params and not params[name].traced for name in [*grid, *sample]):
        need = memory.Need(device=MIN_RUN_BYTES, host=0)
    else:
        env, env_params = _resolve(envs.make, args.env)
        need = memory.need_per_run(module.make(args.config, env, env_params), args.hyper)
    devices = list(make_mesh().devices.flat)
    # the configurations with one seed each first: when even they cannot fit, name what made them many
    if args.samples:
        memory.check_fits(
            need,
            configs,
            devices,
            runs_field="samples",
            runs_value=args.samples,
            runs_per_unit=points,
            unit="runs (configurations x 1 seed)",
        )
    else:
        memory.check_fits(
            need,
            configs,
            devices,
            runs_field="grid",
            runs_value=list(args.grid),
            runs_per_unit=configs,
            unit="runs (grid points x 1 seed)",
        )
    memory.check_fits(
        need,
        configs * args.num_seeds,
        devices,
        runs_field="num_seeds",
        runs_value=args.num_seeds,
        runs_per_unit=configs,
        unit="runs (configurations x seeds)",
    )


def _start_distributed(argv: Sequence[str]) -> None:
    """Join the multi-host run before anything touches a JAX backend.

    The flags are read from argv here (tyro parses them again later) because
    ``jax.distributed.initialize`` must precede every JAX computation, and
    building the defaults may already create arrays.
    """
    from rl.engine import distributed

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
    except (ConfigError, UsageError, envs.EnvUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        run(agent_name, args)
        return 0
    except (ConfigError, UsageError, envs.EnvUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a report file that cannot be written (full disk, file size limit, ...)
        where = f"could not write {err.filename}: " if getattr(err, "filename", None) else ""
        print(f"error: the sweep stopped: {where}{_os_reason(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
