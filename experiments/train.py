"""Train an agent on many seeds at once and write a run folder.

    python -m experiments.train ppo --env CartPole-v1 --num-seeds 8
    python -m experiments.train ppo --preset purejaxrl-cartpole --learning-rate 1e-3
    python -m experiments.train ppo --help        # every field, its default and meaning
    python -m experiments.train --resume RUN_DIR  # continue an interrupted run

The run folder (``runs/<timestamp>-<agent>-<env>/`` or ``--out DIR``) holds
config.json, metrics_over_seeds.csv (statistics over seeds per update), the
per-seed metrics (``--per-seed-metrics``: metrics.csv and metrics.jsonl up to
32 seeds, one metrics.parquet for more), tensorboard/, curve.png, params.npz
(final parameters, leading axis = seed; up to 32 seeds, else they are read
from the final checkpoint), checkpoints/ (the whole training
state every ``--checkpoint-seconds``, 180 by default, or every ``--checkpoint-every``
chunks when given, whichever comes first, and at the end; see rl/engine/checkpoint.py) and summary.json
(``status``: running, completed, interrupted, diverged or failed; the final
return of the training episodes and, beside it, ``final_eval_return``: the
evaluation episodes played after the last update, see ``--eval-*`` and
rl/device/evaluation.py).

``--track`` also logs the TensorBoard curves and config.json to Weights & Biases
(``pip install -e ".[wandb]"``; ``--wandb-project``, ``--wandb-entity``,
``--wandb-group``, ``--wandb-name``, the name defaulting to the run folder's):
wandb's local files go to RUN_DIR/wandb/ (or ``$WANDB_DIR``), ``WANDB_MODE=offline``
keeps them there for a later ``wandb sync``, and ``--resume`` continues the same
W&B run (its id is in RUN_DIR/wandb_run.json).

Ctrl-C or SIGTERM lets the chunk in flight finish, saves a checkpoint, marks
the run interrupted and prints the ``--resume`` command; ``--resume`` then
continues it with its saved settings, and the metrics and parameters come out
bit-identical to those of an uninterrupted run on the same machine. A NaN or
inf in the parameters, optimizer state or a loss stops training at the end of
that chunk, names the update and the seed, and keeps the last good checkpoint.

Faults: a run folder is claimed by one process at a time (an advisory lock on
the folder), so a second training or resume with the same folder is refused.
A write that fails (full disk, file size limit) stops training with one
``error:`` line; what was saved stays, and summary.json says ``failed`` and
why. ``--resume`` checks config.json against the checkpoint and the metric
files before it changes any file, and falls back past a damaged newest
checkpoint. The memory a configuration needs is estimated before compiling.

Exit status: 0 completed, 1 diverged or failed (summary.json says which),
2 bad input (one ``error:`` line), 128 + signal number when interrupted (130
for Ctrl-C, 143 for SIGTERM).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import io
import json
import math
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import numpy as np

C = TypeVar("C")
H = TypeVar("H")


@dataclass(frozen=True)
class TrainArgs(Generic[C, H]):
    """Train one agent on one environment over several seeds in parallel."""

    config: C
    hyper: H
    env: str = "CartPole-v1"
    """environment id: any gymnax id, one registered with envs.register, or an env of your own as MODULE:ATTRIBUTE (an env class, a factory or an env object) or MODULE:ENV_ID (a module that registers ENV_ID when imported); MODULE must be importable (current folder or PYTHONPATH)"""
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

    checkpoint_every: int = 0
    """also save the whole training state every K chunks; 0 = by the clock only (it is always saved at the end and on Ctrl-C/SIGTERM)"""
    checkpoint_seconds: float = 180.0
    """save once this many seconds have passed since the last save (or every K chunks, whichever comes first); 0 = off"""
    keep_checkpoints: int = 2
    """checkpoints kept in RUN_DIR/checkpoints (older ones are deleted)"""
    per_seed_metrics: Literal["auto", "csv", "parquet", "none"] = "auto"
    """per-seed, per-update metric rows: csv = metrics.csv and metrics.jsonl, parquet = one metrics.parquet (float32, zstd), none = only the statistics over seeds in metrics_over_seeds.csv and TensorBoard; auto = csv up to 32 seeds, else parquet"""
    eval_every: int | None = None
    """evaluation episodes after every N updates and after the last one, inside the jitted program (metric eval_return, final_eval_return in summary.json); default: as many evaluations as cost at most 5% of the training's env steps (at most 10, at least the final one); 0 = off"""
    eval_episodes: int | None = None
    """episodes per evaluation and seed, played in parallel; every seed plays the same start states; default: 32, or fewer (down to 1) where 32 would cost more than 5% of a seed's training env steps"""
    eval_mode: Literal["greedy", "stochastic"] = "greedy"
    """greedy: the policy's deterministic action (mode, argmax); stochastic: act(deterministic=False), e.g. sampled actions, DQN/PQN's eval_epsilon"""
    eval_seed: int = 0
    """seed of the evaluation episodes' start states (and stochastic actions), the same for every seed and evaluation"""
    track: bool = False
    """also log to Weights & Biases (needs pip install -e ".[wandb]"): the TensorBoard curves and the run config; --track alone means --track True; WANDB_MODE=offline writes wandb's local files only"""
    wandb_project: str | None = None
    """W&B project (with --track; default jaxrl-engine)"""
    wandb_entity: str | None = None
    """W&B entity, a user or team (with --track; default: your wandb default)"""
    wandb_group: str | None = None
    """W&B group of the run (with --track; default none)"""
    wandb_name: str | None = None
    """W&B run name (with --track; default: the run folder's name)"""
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
    from rl.host.runs import UnknownFields, config_from_json

    if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
        raise UsageError(f"{what}: the fields must be a JSON object of name: value, not {type(values).__name__}")
    try:
        return config_from_json(obj, values)
    except UnknownFields as err:
        raise UsageError(
            f"{what} sets unknown field(s) {err.unknown}; fields are: {', '.join(sorted(err.names))}"
        ) from None


MAX_PRESET_FILE_BYTES = 1 << 20  # a preset is a few hundred bytes of JSON


def _load_preset_file(path: str) -> Any:
    """``presets.load_file``, with every way a file can be unusable as one :class:`UsageError`."""
    from experiments import presets

    where = f"--preset-file {path!r}"
    try:
        if Path(path).is_file() and Path(path).stat().st_size > MAX_PRESET_FILE_BYTES:
            raise UsageError(f"{where} is larger than {MAX_PRESET_FILE_BYTES:,} bytes; it is not a preset")
        preset = presets.load_file(path)
    except UnicodeError:
        raise UsageError(f"{where} is not a text file; give a JSON preset as written by experiments.sweep") from None
    except ValueError as err:
        raise UsageError(str(err)) from None
    except (OSError, TypeError, KeyError, AttributeError) as err:
        reason = (
            f"{err.strerror} (errno {err.errno})"
            if isinstance(err, OSError) and err.errno
            else f"{type(err).__name__}: {err}"
        )
        raise UsageError(
            f"{where} cannot be used: {reason}; give a JSON object with the keys agent, env, "
            "config and hyper (as experiments.sweep writes in best_preset.json)"
        ) from None
    for key, kind in (("agent", str), ("env", str), ("config", dict), ("hyper", dict)):
        if not isinstance(getattr(preset, key), kind):
            raise UsageError(
                f"{where}: {key!r} must be a JSON {'string' if kind is str else 'object'}, not {getattr(preset, key)!r}"
            )
    return preset


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
    preset = _resolve(presets.get, name) if name is not None else _load_preset_file(path)
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
            from experiments import presets

            print(
                f"usage: python -m experiments.train AGENT [--help] [OPTIONS]\n\nagents: {names}\n\n"
                f"{presets.help_text()}"
            )
            raise SystemExit(0)
        raise UsageError(f"name an agent first: python -m experiments.train AGENT ...; agents: {names}")
    agent_name, rest = argv[0], _bare_track(argv[1:])
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
        description=help_description(RunArgs, agent_name),
    )
    return agent_name, args


def _bare_track(argv: list[str]) -> list[str]:
    """``--track`` alone, as CleanRL spells it, is ``--track True`` (every other bool flag takes True/False)."""
    out = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg == "--track" and (i + 1 == len(argv) or argv[i + 1] not in ("True", "False")):
            out.append("True")
    return out


def help_description(args_type: type, agent_name: str) -> str:
    """The top of ``--help``: what the command does and every preset with its agent and env."""
    from experiments import presets

    return f"{(args_type.__doc__ or '').strip()}\n\n{presets.help_text(agent_name)}"


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
    """The run folder; refuses one that holds files (nothing is overwritten).

    Only a first check: :func:`claim_folder` decides, under the folder's lock.
    """
    if args.out is not None:
        path = Path(args.out)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise UsageError(f"--out {str(path)!r} already exists and is not empty; choose a new folder")
        return path
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    env_name = re.sub(r"[^A-Za-z0-9._-]+", "_", args.env)  # an env spec "my_envs:MyEnv" -> my_envs_MyEnv
    base = Path("runs") / f"{stamp}-{agent_name}-{env_name}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


class FolderLock:
    """An exclusive advisory lock (``flock``) on a folder, held until :meth:`release` or exit.

    The lock is taken on the folder itself, so no lock file is added to it; the
    kernel drops it when the process ends, even after ``kill -9``.
    """

    def __init__(self, path: Path, fd: int, created: Sequence[Path] = ()) -> None:
        self.path, self._fd, self.created = path, fd, list(created)

    def release(self, discard: bool = False) -> None:
        """Drop the lock; with ``discard``, also remove the folders the claim created if still empty."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None
        if discard:
            _remove_empty(self.created)

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _os_reason(err: OSError) -> str:
    return f"{err.strerror} (errno {err.errno})" if err.errno else str(err)


def claim_folder(path: str | os.PathLike[str], flag: str, *, empty: bool) -> FolderLock:
    """Create ``path`` if needed and lock it for this process; refuse a folder another process holds.

    ``empty`` (a new run or report) also refuses a folder that holds anything. Every
    way the path can be unusable (a file, under a file, a name too long, read-only,
    in use) is one :class:`UsageError` naming ``flag``; nothing is left behind then.
    """
    import fcntl

    text = os.fspath(path)
    if not text.strip():
        raise UsageError(f"{flag} is empty; give a folder")
    path = Path(text)
    created: list[Path] = []
    try:
        if path.exists() and not path.is_dir():
            raise UsageError(f"{flag} {text!r} is a file, not a folder; choose a new folder")
        created = [p for p in [path, *path.parents] if not p.exists()]
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except UsageError:
        raise
    except (OSError, ValueError) as err:  # ValueError: a NUL byte in the path
        _remove_empty(created)
        why = _os_reason(err) if isinstance(err, OSError) else str(err)
        raise UsageError(f"{flag} {text!r} cannot be used as a folder: {why}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UsageError(
            f"{flag} {text!r} is in use by another process (a training, resume or sweep "
            "writing it); wait for it to end or choose another folder"
        ) from None
    except OSError:  # a file system without flock (some network mounts): go on unlocked
        pass
    lock = FolderLock(path, fd, created)
    if empty and any(path.iterdir()):
        lock.release()
        raise UsageError(f"{flag} {text!r} already exists and is not empty; choose a new folder")
    try:  # write a file there and remove it: the only sure test (root passes os.access anywhere)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as err:
        lock.release()
        _remove_empty(created)
        raise UsageError(
            f"{flag} {text!r} is not writable ({_os_reason(err)}); choose a folder you can write to"
        ) from None
    return lock


def _remove_empty(folders: list[Path]) -> None:
    """Remove folders this process created (innermost first) if they are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _claim_new_run_dir(agent_name: str, args: TrainArgs) -> FolderLock:
    """Lock ``--out``, or the first free ``runs/<timestamp>-<agent>-<env>[-i]`` folder."""
    if args.out is not None:
        return claim_folder(args.out, "--out", empty=True)
    base = run_dir_for(agent_name, args)
    for i in range(1000):
        try:
            return claim_folder(base if i == 0 else Path(f"{base}-{i}"), "--out", empty=True)
        except UsageError as err:
            if "in use" not in str(err) and "not empty" not in str(err):
                raise
    raise UsageError(f"no free run folder next to {str(base)!r}; give --out")


def write_json(path: Path, data: Any) -> None:
    """Atomic JSON write: a crash leaves the old file or the new one, never half."""
    from rl.host.files import write_json as write

    write(path, data, default=_jsonable)


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if dataclasses.is_dataclass(x):
        return dataclasses.asdict(x)
    return str(x)


def save_params(path: Path, params: Any) -> None:
    """Save a (nested dict) parameter pytree as ``.npz`` keyed ``module/name``."""
    from rl.host.runs import _save_params

    _save_params(path, params)


def prepare(agent_name: str, args: TrainArgs):
    """Validate everything and build the algorithm; nothing is compiled here."""
    import agents
    import envs
    from rl.engine.runner import check_divisible, make_mesh
    from rl.errors import check
    from rl.host.runs import PER_SEED_FORMATS

    module = _resolve(agents.get, agent_name)

    def positive_int(name: str, value: Any, minimum: int = 1) -> None:
        check(
            isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
            name,
            value,
            "must be a positive integer" if minimum == 1 else f"must be an integer >= {minimum}",
        )

    positive_int("num_seeds", args.num_seeds)
    check(args.num_seeds <= 2**31, "num_seeds", args.num_seeds, f"must not exceed 2**31 = {2**31}")
    positive_int("num_chunks", args.num_chunks)
    positive_int("seed", args.seed, minimum=0)
    check(args.seed + args.num_seeds <= 2**31, "seed", args.seed, f"seed + num_seeds must not exceed 2**31 = {2**31}")
    if hasattr(args, "checkpoint_every"):
        positive_int("checkpoint_every", args.checkpoint_every, minimum=0)
        positive_int("keep_checkpoints", args.keep_checkpoints)
    seconds = getattr(args, "checkpoint_seconds", 0.0)
    check(
        isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds) and seconds >= 0,
        "checkpoint_seconds",
        seconds,
        "must be a finite number of seconds >= 0 (0 = off)",
    )
    per_seed = getattr(args, "per_seed_metrics", "auto")
    check(per_seed in PER_SEED_FORMATS, "per_seed_metrics", per_seed, f"must be one of {', '.join(PER_SEED_FORMATS)}")
    wandb_settings(args)  # --track and --wandb-*: wandb importable, no W&B flag without --track
    eval_config = eval_config_of(args)
    eval_config.validate()  # --eval-every, --eval-episodes, --eval-mode, --eval-seed
    env, env_params = _resolve(envs.make, args.env)
    algo = module.make(args.config, env, env_params)
    args.hyper.validate()
    mesh = make_mesh()
    check_divisible(args.num_seeds, mesh)
    check_memory(module, args, algo, env, env_params, mesh)
    algo = add_evaluation(algo, eval_config, env, env_params, args.num_seeds, mesh)
    return algo, mesh


DEFAULT_WANDB_PROJECT = "jaxrl-engine"
WANDB_FLAGS = ("wandb_project", "wandb_entity", "wandb_group", "wandb_name")
WANDB_STATE_FILE = "wandb_run.json"  # the W&B run id and last step logged, for --resume (rl.host.sinks.WandbSink)


def wandb_settings(args: TrainArgs) -> dict[str, Any] | None:
    """``--track``'s W&B settings as config.json stores them (None without ``--track``), checked.

    A ``--wandb-*`` flag without ``--track``, an empty one, or ``--track`` without the wandb
    package is a :class:`UsageError` (before anything compiles).
    """
    given = {name: getattr(args, name, None) for name in WANDB_FLAGS}
    if not getattr(args, "track", False):
        stray = [f"--{name.replace('_', '-')}" for name, value in given.items() if value is not None]
        if stray:
            raise UsageError(f"{', '.join(stray)} only apply with --track; add --track to log to W&B, or drop them")
        return None
    for name, value in given.items():
        if value is not None and not value.strip():
            raise UsageError(f"--{name.replace('_', '-')} is empty; give a name or leave the flag out")
    from rl.host.sinks import import_wandb

    try:
        import_wandb()
    except ModuleNotFoundError as err:
        raise UsageError(f"--track: {err}") from None
    return {
        "project": given["wandb_project"] or DEFAULT_WANDB_PROJECT,
        "entity": given["wandb_entity"],
        "group": given["wandb_group"],
        "name": given["wandb_name"],
    }


def open_wandb(settings: dict[str, Any], run_dir: Path, labels: list[dict[str, Any]], resumed_at: int | None) -> Any:
    """The W&B sink of a run folder: config.json as the W&B config, named after the folder by default.

    wandb keeps its local files in ``RUN_DIR/wandb/`` unless ``$WANDB_DIR`` says elsewhere; the
    run id and last step logged are kept in ``RUN_DIR/wandb_run.json``, so ``--resume``
    continues the same W&B run. A W&B run that cannot start (not logged in, no network) is a
    :class:`UsageError` that says so.
    """
    from rl.host.sinks import WandbSink

    try:
        return WandbSink(
            labels,
            project=settings["project"],
            entity=settings["entity"],
            group=settings["group"],
            name=settings["name"] or run_dir.name,
            config={**_read_json(run_dir / CONFIG_FILE), "run_dir": str(run_dir)},
            directory=os.environ.get("WANDB_DIR") or run_dir,
            state_file=run_dir / WANDB_STATE_FILE,
            resume_from_update=resumed_at,
        )
    except (OSError, UsageError):
        raise
    except Exception as err:  # noqa: BLE001 - wandb's own errors (login, network) as one line
        raise UsageError(
            f"--track: W&B could not start ({type(err).__name__}: {err}); run `wandb login`, or set "
            "WANDB_MODE=offline to keep wandb's files locally and `wandb sync` them later"
        ) from None


def eval_record(algo: Any, args: TrainArgs) -> dict[str, Any]:
    """The evaluation settings as config.json stores them: ``every`` resolved (0 = off), as ``--resume`` reads them."""
    on = algo.evaluation is not None
    config = algo.evaluation.config if on else eval_config_of(args)
    return {"every": config.every if on else 0, "episodes": config.episodes, "mode": config.mode, "seed": config.seed}


def eval_config_of(args: TrainArgs) -> Any:
    """The ``rl.device.evaluation.EvalConfig`` of the ``--eval-*`` flags (a TrainArgs without them: the defaults)."""
    from rl.device.evaluation import EvalConfig

    default = EvalConfig()
    return EvalConfig(
        every=getattr(args, "eval_every", default.every),
        episodes=getattr(args, "eval_episodes", default.episodes),
        mode=getattr(args, "eval_mode", default.mode),
        seed=getattr(args, "eval_seed", default.seed),
    )


def add_evaluation(algo: Any, config: Any, env: Any, env_params: Any, num_seeds: int, mesh: Any) -> Any:
    """``algo`` with its evaluation episodes (``rl.device.evaluation.with_evaluation``); refuses ``--eval-episodes``
    whose env states cannot fit in memory."""
    import jax

    from rl.device import evaluation, memory

    config = evaluation.resolve(config, algo, env, env_params)  # episodes and every: None -> automatic
    if config.every != 0:
        obs, state = jax.eval_shape(env.reset, jax.random.key(0), env_params)
        per_episode = memory.tree_bytes((obs, state)) + 16  # + return, length, done
        memory.check_fits(
            memory.Need(per_episode, 0),
            num_seeds * config.episodes,
            list(mesh.devices.flat),
            runs_field="eval_episodes",
            runs_value=config.episodes,
            runs_per_unit=num_seeds,
            unit="evaluation episodes (all seeds)",
        )
    return evaluation.with_evaluation(algo, env, env_params, config)


def check_memory(module: Any, args: TrainArgs, algo: Any, env: Any, env_params: Any, mesh: Any) -> None:
    """Refuse, naming the field, a configuration whose training state cannot fit in memory (rl/device/memory.py)."""
    from rl.device import memory

    def need_of(config: Any) -> int:
        return memory.need_per_run(module.make(config, env, env_params), args.hyper).total

    memory.check_fits(
        memory.need_per_run(algo, args.hyper),
        args.num_seeds,
        list(mesh.devices.flat),
        runs_field="num_seeds",
        culprit=lambda: memory.largest_field(args.config, need_of),
    )


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
        if not isinstance(saved, dict):
            raise TypeError(f"it holds a JSON {type(saved).__name__}, not an object")
        agent_name = saved["agent"]
        module = _resolve(agents.get, agent_name)
        seeds = [int(x) for x in saved["seeds"]]
        episodes = saved.get("eval", {}).get("episodes", 32)  # None: evaluation off, episodes never resolved
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
            checkpoint_seconds=float(saved.get("checkpoint_seconds", 0.0)),
            # the files the run writes; a folder from before this setting has metrics.csv and .jsonl
            per_seed_metrics=saved.get("per_seed_metrics", "csv"),
            # a folder from before evaluation episodes was trained without them
            eval_every=int(saved.get("eval", {}).get("every", 0)),
            eval_episodes=None if episodes is None else int(episodes),
            eval_mode=saved.get("eval", {}).get("mode", "greedy"),
            eval_seed=int(saved.get("eval", {}).get("seed", 0)),
            # --track: a tracked run goes on logging to its W&B run (a folder from before the flag was not tracked)
            **(
                {}
                if saved.get("wandb") is None
                else {
                    "track": True,
                    **{f"wandb_{key}": saved["wandb"][key] for key in ("project", "entity", "group", "name")},
                }
            ),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError, IndexError, OSError) as err:
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


DEFAULT_CHECKPOINT_SECONDS = 180.0  # RunArgs.checkpoint_seconds: at most ~3 minutes of training lost to a crash
RECORD_KEYS = ("agent", "env", "seeds", "num_chunks", "config", "hyper")  # what a checkpoint must match


def run_record(agent_name: str, args: TrainArgs, seeds: list[int]) -> dict[str, Any]:
    """What decides a run's results, as config.json holds it; stored with every checkpoint."""
    record = {
        "agent": agent_name,
        "env": args.env,
        "seeds": seeds,
        "num_chunks": args.num_chunks,
        "config": dataclasses.asdict(args.config),
        "hyper": dataclasses.asdict(args.hyper),
    }
    return json.loads(json.dumps(record, default=_jsonable))  # tuples -> lists, as read back


def run(agent_name: str, args: TrainArgs, *, resume: bool = False) -> dict[str, Any]:
    """Train (or, with ``resume``, continue ``args.out``), write the run folder, return the summary.

    The library entry point behind the CLI. ``args`` may be a :class:`TrainArgs`
    (no checkpoint flags: a checkpoint every 3 minutes and at the end, 2 kept) or a :class:`RunArgs`.

    The folder is locked for the whole call (:func:`claim_folder`). A resume checks
    config.json against the checkpoint and the metric files before it changes any file,
    and cuts the metric files back to the checkpoint only once it has been read back.
    A failed write (full disk, file size limit) ends the run with status ``failed``
    (one ``error:`` line; what was saved is kept).
    """
    import jax

    from rl.engine.checkpoint import Checkpointer, CheckpointMismatchError, CheckpointReadError, StopOnSignals
    from rl.engine.runner import chunk_schedule, train
    from rl.host.progress import Progress
    from rl.host.runs import metric_sinks, per_seed_format
    from rl.host.sinks import MultiSink
    from rl.host.stats import mean_over_episodes

    algo, mesh = prepare(agent_name, args)
    every, keep = getattr(args, "checkpoint_every", 0), getattr(args, "keep_checkpoints", 2)
    seconds = float(getattr(args, "checkpoint_seconds", DEFAULT_CHECKPOINT_SECONDS))
    seeds = list(range(args.seed, args.seed + args.num_seeds))
    labels = [{"seed": s} for s in seeds]
    per_seed = per_seed_format(getattr(args, "per_seed_metrics", "auto"), len(seeds))  # csv, parquet or none
    record = run_record(agent_name, args, seeds)
    tracking = wandb_settings(args)  # None without --track
    schedule = chunk_schedule(algo.num_updates, args.num_chunks)
    lock = claim_folder(args.out, "--resume", empty=False) if resume else _claim_new_run_dir(agent_name, args)
    with lock as run_dir:
        try:
            checkpointer = Checkpointer(
                run_dir / CHECKPOINT_DIR, every=every, seconds=seconds, max_to_keep=keep, set_aside_damaged=True
            )
        except OSError as err:
            raise UsageError(f"cannot create {str(run_dir / CHECKPOINT_DIR)!r}: {_os_reason(err)}") from None
        sinks: list[Any] = []
        done = {"updates": 0}

        def open_sinks(resumed_at: int | None) -> None:
            # metrics_over_seeds.csv, the per-seed files and TensorBoard (rl.host.runs.metric_sinks); W&B with --track
            folder_sinks = metric_sinks(run_dir, labels, per_seed, algo.steps_per_update, resumed_at)
            if tracking is None:
                sinks.append(folder_sinks)
                return
            try:
                sinks.append(MultiSink([folder_sinks, open_wandb(tracking, run_dir, labels, resumed_at)]))
            except BaseException:
                folder_sinks.close()
                raise

        def write_running(start: int) -> None:
            write_json(
                run_dir / SUMMARY_FILE,
                {
                    "agent": agent_name,
                    "env": args.env,
                    "status": "running",
                    "seeds": seeds,
                    "started_at_update": start,
                    "num_updates": algo.num_updates,
                    "resume_command": resume_command(run_dir),
                    "run_dir": str(run_dir),
                },
            )

        try:
            if resume:  # reads only: nothing changes before the checkpoint has been read back
                start_update = _check_resume(checkpointer, run_dir, record, algo, schedule, len(seeds), per_seed)
            else:
                start_update = 0
                write_json(
                    run_dir / CONFIG_FILE,
                    {
                        "agent": agent_name,
                        "env": args.env,
                        "preset": args.preset,
                        "preset_file": args.preset_file,
                        "seeds": seeds,
                        "num_chunks": args.num_chunks,
                        "checkpoint_every": every,
                        "keep_checkpoints": keep,
                        "checkpoint_seconds": seconds,
                        "per_seed_metrics": per_seed,
                        "eval": eval_record(algo, args),
                        "wandb": tracking,
                        "config": dataclasses.asdict(args.config),
                        "hyper": dataclasses.asdict(args.hyper),
                        "jax_version": jax.__version__,
                        "devices": [str(d) for d in mesh.devices.flat],
                    },
                )
                write_running(0)
                open_sinks(None)
            done["updates"] = start_update
            total_steps = algo.num_updates * algo.steps_per_update
            verb = f"resuming at update {start_update} of" if resume else "training"
            num_chunks = len(schedule)  # the chunks really used
            print(
                f"{agent_name} on {args.env}: {verb} {len(seeds)} seeds x {total_steps:,} env steps, "
                f"{algo.num_updates} updates in {num_chunks} chunk(s), {mesh.devices.size} device(s); "
                f"compiling ...",
                flush=True,
            )
            with (
                Progress(
                    total_steps, len(seeds), enabled=args.progress, start_env_steps=start_update * algo.steps_per_update
                ) as progress,
                StopOnSignals() as stop,
            ):

                def on_chunk(report):
                    if not sinks:  # a resume's first chunk: the checkpoint it continues was read back
                        _cut_metric_files(run_dir, len(seeds) * report.first_update)
                        write_running(report.first_update)
                        open_sinks(report.first_update)
                    sinks[0].write(report.metrics, report.first_update, algo.steps_per_update)
                    done["updates"] = report.first_update + report.num_updates
                    # every episode completed in the chunk, and steps/s over running time (no compile)
                    progress.advance(
                        report.num_updates * algo.steps_per_update,
                        mean_over_episodes(report.metrics["episode_return"], report.metrics["episodes"]),
                        run_seconds=report.elapsed_seconds,
                    )

                try:
                    result = train(
                        algo,
                        args.hyper,
                        seeds,
                        num_chunks=args.num_chunks,
                        mesh=mesh,
                        on_chunk=on_chunk,
                        checkpointer=checkpointer,
                        resume=resume,
                        should_stop=stop,
                        checkpoint_meta={"run": record},
                        wait_for_checkpoint=False,  # its files are written while finish() plots
                    )
                except (CheckpointReadError, CheckpointMismatchError) as err:
                    raise UsageError(str(err)) from None
            for sink in sinks:
                sink.close()
            if result.status == "interrupted":
                result.extra["signal"] = stop.requested
            # the final checkpoint is written in the background; summary.json names it only once it is
            return finish(run_dir, agent_name, args, algo, result, seeds, before_summary=checkpointer.close)
        except UsageError:
            _close_quietly(sinks, checkpointer)
            raise
        except KeyboardInterrupt:  # a second Ctrl-C: stop at once, without a new checkpoint
            _close_quietly(sinks, checkpointer)
            return _stopped_by_fault(run_dir, agent_name, args, seeds, algo, done["updates"], None)
        except Exception as err:  # noqa: BLE001 - a failed write, or anything else that ends the run early
            _close_quietly(sinks, checkpointer)
            if isinstance(err, OSError) or "RESOURCE_EXHAUSTED" in str(err):
                return _stopped_by_fault(run_dir, agent_name, args, seeds, algo, done["updates"], err)
            if resume and not sinks:
                raise  # nothing was changed in the folder: its summary still says what it said
            _stopped_by_fault(run_dir, agent_name, args, seeds, algo, done["updates"], err, quiet=True)
            raise


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _close_quietly(sinks: list[Any], checkpointer: Any) -> None:
    """Close the sinks and the checkpointer after a failure; a second failure is not reported."""
    for closing in [*(sink.close for sink in sinks), checkpointer.close]:
        try:
            closing()
        except Exception:  # noqa: BLE001 - the first failure is the one reported
            pass


def _saved_steps(run_dir: Path) -> list[int]:
    """Updates of the finished checkpoints in the folder (orbax renames a checkpoint to its step when done)."""
    folder = run_dir / CHECKPOINT_DIR
    try:
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir())
    except OSError:
        return []


def _fault_text(err: BaseException) -> str:
    """One line: what failed and why (a file and its OS error where there is one)."""
    from rl.engine.checkpoint import CheckpointWriteError, short_reason

    if isinstance(err, CheckpointWriteError):
        return str(err)
    if "RESOURCE_EXHAUSTED" in str(err):
        return f"out of memory: {short_reason(err)}; use fewer seeds or smaller settings"
    if isinstance(err, OSError):
        where = f"could not write {err.filename}: " if getattr(err, "filename", None) else "a write failed: "
        return where + short_reason(err)
    return f"{type(err).__name__}: {short_reason(err)}"


def _stopped_by_fault(
    run_dir: Path,
    agent_name: str,
    args: TrainArgs,
    seeds: list[int],
    algo: Any,
    updates: int,
    err: BaseException | None,
    quiet: bool = False,
) -> dict[str, Any]:
    """summary.json and one message for a run that a fault ended (``err``) or a second Ctrl-C (None).

    The checkpoints saved before it stay; the summary says ``failed`` (or ``interrupted``),
    why, and how to resume when a checkpoint exists.
    """
    steps = _saved_steps(run_dir)
    step = steps[-1] if steps else None
    summary: dict[str, Any] = {
        "agent": agent_name,
        "env": args.env,
        "preset": args.preset,
        "num_seeds": len(seeds),
        "seeds": seeds,
        "status": "interrupted" if err is None else "failed",
        "num_updates": updates,
        "total_timesteps": updates * algo.steps_per_update,
        "checkpoint_update": step,
        "run_dir": str(run_dir),
    }
    if err is None:
        summary.update(signal="SIGINT", error="aborted at once by a second Ctrl-C; the chunk in flight was not saved")
    else:
        summary["error"] = _fault_text(err)
    if step is not None:
        summary["resume_command"] = resume_command(run_dir)
    try:
        write_json(run_dir / SUMMARY_FILE, summary)
        unsaved = ""
    except OSError as second:
        unsaved = f" (summary.json could not be updated either: {_os_reason(second)})"
    if quiet:
        return summary
    kept = (
        f"the checkpoint at update {step} is kept; resume with: {resume_command(run_dir)}"
        if step is not None
        else "no checkpoint was saved; start the run again"
    )
    if err is None:
        print(
            f"{agent_name} on {args.env}: aborted after update {updates} (second Ctrl-C); {kept}{unsaved}", flush=True
        )
    else:
        print(
            f"error: training stopped after update {updates} of {algo.num_updates}: {summary['error']}; "
            f"{kept}{unsaved}",
            file=sys.stderr,
            flush=True,
        )
    return summary


def _check_resume(
    checkpointer: Any,
    run_dir: Path,
    record: dict[str, Any],
    algo: Any,
    schedule: list[int],
    num_runs: int,
    per_seed: str = "csv",
) -> int:
    """Everything a resume needs, checked without changing a file; the update it starts from.

    The run must not be complete; a checkpoint must exist with a readable record;
    config.json must still say what the checkpoint was saved with (field by field);
    the per-seed metric files (``per_seed``: csv, parquet or none) must hold every row the
    checkpoint covers.
    """
    summary = _read_json(run_dir / SUMMARY_FILE)
    if summary.get("status") == "completed":
        raise UsageError(f"the run in {str(run_dir)!r} is complete; there is nothing to resume")
    if not checkpointer.steps():
        raise UsageError(
            f"{str(run_dir)!r} has no checkpoint to resume from (the run stopped before its first one); start it again"
        )
    found = checkpointer.readable_meta()
    if found is None:
        raise UsageError(
            f"no checkpoint in {str(checkpointer.directory)!r} can be read (their records are "
            "damaged); start the run again"
        )
    step, meta = found
    config_path = run_dir / CONFIG_FILE
    saved = meta.get("run")
    if isinstance(saved, dict):
        for key in RECORD_KEYS:
            diff = _first_difference(saved.get(key), record[key], key)
            if diff is not None:
                where, then, now = diff
                raise UsageError(
                    f"{config_path} no longer matches the checkpoint at update {step}: {where} is {now!r} "
                    f"there but was {then!r} when it was saved; put it back to resume (a changed setting "
                    "needs a new run)"
                )
    else:  # a checkpoint from before records were stored: check what it holds
        for key, now in (
            ("agent", algo.name),
            ("num_runs", num_runs),
            ("num_updates", algo.num_updates),
            ("steps_per_update", algo.steps_per_update),
            ("schedule", schedule),
        ):
            if key in meta and meta[key] != now:
                raise UsageError(
                    f"{config_path} no longer matches the checkpoint at update {step}: it gives {key} {now!r} "
                    f"but the checkpoint has {meta[key]!r}; put config.json back to resume"
                )
    rows = num_runs * int(meta.get("update", step))
    if per_seed == "csv":
        for name, header in (("metrics.csv", True), ("metrics.jsonl", False)):
            _check_rows(run_dir / name, rows + (1 if header else 0))
    elif per_seed == "parquet":
        from rl.host import columnar

        problem = columnar.check_covers(run_dir / "metrics.parquet", num_runs, int(meta.get("update", step)))
        if problem is not None:
            raise UsageError(f"{problem}; the run folder was modified, start the run again")
    return step


def _first_difference(then: Any, now: Any, where: str) -> tuple[str, Any, Any] | None:
    """``(path, then, now)`` of the first value that differs between two JSON values, or None."""
    if isinstance(then, dict) and isinstance(now, dict):
        for key in [*then, *(k for k in now if k not in then)]:
            diff = _first_difference(then.get(key), now.get(key), f"{where}.{key}")
            if diff is not None:
                return diff
        return None
    return None if then == now else (where, then, now)


def _count_lines(path: Path) -> int:
    """Complete (newline-ended) lines of a file, read in blocks."""
    count = 0
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            count += block.count(b"\n")
    return count


def _check_rows(path: Path, keep: int) -> None:
    """A metric file must hold the ``keep`` lines a checkpoint covers (header included)."""
    if not path.exists():
        if keep > 1:
            raise UsageError(f"{path} is missing; it cannot be rebuilt, start the run again")
        return
    lines = _count_lines(path)
    if lines < keep:
        raise UsageError(
            f"{path} has {lines} lines but the checkpoint covers {keep}; the run folder was "
            "modified, start the run again"
        )


def _cut_metric_files(run_dir: Path, rows: int) -> None:
    """Cut metrics.csv (header + ``rows``) and metrics.jsonl (``rows``) back to what the checkpoint covers.

    The sinks write each chunk as N * L complete lines, so the rows of the
    first ``u`` updates are the first ``N * u`` lines; later rows (written
    after the checkpoint) would otherwise appear twice once training continues.
    """
    for name, keep in (("metrics.csv", rows + 1), ("metrics.jsonl", rows)):
        path = run_dir / name
        if not path.exists():
            continue
        _check_rows(path, keep)
        size, seen = 0, 0
        with path.open("rb") as f:
            while seen < keep:
                line = f.readline()
                size, seen = size + len(line), seen + 1
        with path.open("r+b") as f:
            f.truncate(size)
            f.flush()
            os.fsync(f.fileno())


def finish(
    run_dir: Path,
    agent_name: str,
    args: TrainArgs,
    algo,
    result,
    seeds,
    before_summary: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Curve, parameters and summary.json of a batch of runs that stopped (for any reason).

    ``before_summary`` runs after the curve and params.npz are written and before summary.json
    (the CLI waits there for the final checkpoint, written meanwhile in the background).
    """
    started = time.perf_counter()
    from rl.host import plots
    from rl.host.runs import final_eval_return_summary, final_return_summary, writes_params_npz

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
    import jax

    num_devices = len(jax.tree.leaves(result.state)[0].sharding.device_set)
    ret, count = result.metrics.get("episode_return"), result.metrics.get("episodes")
    if ret is not None and ret.shape[1]:
        env_steps = (np.arange(ret.shape[1]) + 1) * algo.steps_per_update
        plots.plot_learning_curve(
            run_dir / "curve.png", env_steps, ret, count, title=f"{agent_name} on {args.env} ({len(seeds)} seeds)"
        )
    if result.status == "completed":
        # mean, per seed, and a 95% CI only from enough seeds (else their range and why); quantiles, worst seeds
        summary.update(final_return_summary(ret, count, seeds=seeds))
        if algo.evaluation is not None and "eval_return" in result.metrics:  # beside it: evaluation episodes
            summary.update(final_eval_return_summary(result.metrics["eval_return"], algo.evaluation))
        if writes_params_npz(len(seeds)):
            save_params(run_dir / "params.npz", result.params)
            summary["params"] = "params.npz"
        else:  # a second copy of every seed's parameters would dominate the folder: agents.load reads them here
            summary["params"] = f"{CHECKPOINT_DIR}/{result.checkpoint_step}"
    if before_summary is not None:
        before_summary()
    summary.update(
        {
            "compile_seconds": result.compile_seconds,
            "run_seconds": result.run_seconds,
            "env_steps_per_second": result.env_steps_per_second,
            # after training: the final checkpoint (written meanwhile), curve.png, params.npz
            "finish_seconds": time.perf_counter() - started,
            "num_chunks": result.num_chunks,
            # a run's numbers are reproducible bit for bit at the same runs per device (README "Randomness")
            "num_devices": num_devices,
            "runs_per_device": len(seeds) // num_devices,
            "resumed_at_update": result.start_update if result.start_update else None,
            "checkpoint_update": result.checkpoint_step,
            "run_dir": str(run_dir),
        }
    )
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
            print(
                f"{s['agent']} on {s['env']}: interrupted before the first chunk finished; nothing was "
                f"saved, start the run again.\n{where}",
                flush=True,
            )
            return
        print(
            f"{s['agent']} on {s['env']}: interrupted after update {s['num_updates']} of {planned_updates} "
            f"({s['total_timesteps']:,} env steps per seed); checkpoint saved at update {ckpt}.\n"
            f"  resume with: {s['resume_command']}\n{where}",
            flush=True,
        )
        return
    if status == "diverged":
        first = min(s["divergence"], key=lambda d: d["update"])
        others = len(s["divergence"]) - 1
        ckpt = s.get("checkpoint_update")
        kept = (
            f"the last good checkpoint (update {ckpt}) is kept in {s['run_dir']}/{CHECKPOINT_DIR}"
            if ckpt is not None
            else "no checkpoint was saved before it"
        )
        print(
            f"error: training diverged: NaN or inf in the parameters, optimizer state or a loss at "
            f"update {first['update']} of seed {first['seed']}"
            + (f" (and {others} more run(s), see summary.json)" if others else "")
            + f"; stopped after update {s['num_updates']}; {kept}.\n{where}",
            file=sys.stderr,
            flush=True,
        )
        return
    from rl.host.aggregate import describe_seeds
    from rl.host.runs import FEW_SEEDS, describe_final_eval_return, describe_final_return

    few = len(s["final_return_per_seed"]) <= FEW_SEEDS
    if few:
        seed_lines = "  per seed: " + ", ".join("-" if x is None else f"{x:.1f}" for x in s["final_return_per_seed"])
    else:  # quantiles over the seeds and the worst few; every seed is in summary.json
        seed_lines = "\n".join(describe_seeds(s)) or "  per seed: in summary.json"
    evaluated = describe_final_eval_return(s)  # the evaluation episodes after the last update, if played
    if evaluated is not None:
        seed_lines += f"\n  {evaluated}"
        if few and s["final_eval_return_mean"] is not None:
            seed_lines += "\n  eval per seed: " + ", ".join(
                "-" if x is None else f"{x:.1f}" for x in s["final_eval_return_per_seed"]
            )
    head = describe_final_return(s)
    print(
        f"{s['agent']} on {s['env']}, {s['num_seeds']} seeds x {s['total_timesteps']:,} steps: {head}\n"
        f"{seed_lines}\n"
        f"  compile {s['compile_seconds']:.1f} s, run {s['run_seconds']:.1f} s, "
        f"{s['env_steps_per_second']:,.0f} env steps/s (all seeds)\n"
        f"{where}",
        flush=True,
    )


def exit_status(summary: dict[str, Any]) -> int:
    """0 completed, 1 diverged or failed, 128 + signal number when interrupted."""
    status = summary.get("status")
    if status in ("diverged", "failed"):
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
    except OSError as err:  # a path that fails in a way no check above foresaw: still one line
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        print(f"error: {where}{_os_reason(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before training started: nothing was written
        print("error: interrupted before training started", file=sys.stderr)
        return 128 + signal.SIGINT


if __name__ == "__main__":
    raise SystemExit(main())
