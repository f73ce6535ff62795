"""Speed figures (``make bench``): compile seconds and env steps per second.

    python -m experiments.benchmark                 # every group
    python -m experiments.benchmark --only ppo      # one group
    python -m experiments.benchmark --only scale --seeds 1,64,512,2048 --purejaxrl ~/purejaxrl
    python -m experiments.benchmark --only scale --small-ppo --seeds 2048   # the CPU CI case
    python -m experiments.benchmark --only hlo --purejaxrl ~/purejaxrl     # kernels of one update

Each group returns rows; all rows are printed as tables and written to
``runs/bench-<timestamp>/bench.json`` and ``bench.md`` with the machine they
came from. Groups:

* ``ppo``: PPO on CartPole-v1 at the PureJaxRL preset, next to a plain
  single-file PureJaxRL-style implementation (experiments/baselines) at the
  same settings, and the env-only ceiling: the same number of envs stepping
  with random actions through the same wrappers, no learning. The whole
  training is one jitted scan (one chunk) in every case.
* ``sweep``: 64 PPO CartPole configurations (learning rates) x 1 seed at the
  PureJaxRL preset as one ``rl.sweep`` (one compile) against 64 separate
  ``rl.train`` runs (64 compiles), with the speed-up in compile + run time.
  Timing all 64 separate runs takes a while (each compiles); ``--sweep-separate
  8`` times 8 of them and extrapolates.
* ``dqn``: DQN at the CleanRL preset and the one-env env-only ceiling.
* ``scale``: PPO at the ``purejaxrl-cartpole`` preset (or ``--small-ppo``) for
  each seed count, measured side by side in one run, each in a fresh process
  of its own, in turn: ``rl.train``; the CLI (``python -m experiments.train``
  as a user runs it, with the same settings); the env-only ceiling;
  PureJaxRL's own ``ppo.py`` when ``--purejaxrl`` gives a checkout (imported at
  run time, never copied into this repository; see
  experiments/baselines/purejaxrl_checkout.py);
  and the single-file replica in experiments/baselines. Each row gives
  compile, run and whole-process wall seconds, env steps/s, the final return
  (mean, sd and range over the seeds, so "same returns" can be checked) and
  the process's peak resident memory; the CLI's row also the size of its run
  folder; and every row its speed relative to PureJaxRL at the same seeds.
* ``hlo``: the compiled program of one PPO update (the body of the scan over
  updates, for the given seeds vmapped) for this library, PureJaxRL and the
  replica: kernels executed per update (loop trip counts applied), by kind,
  and the bytes they move, plus XLA's own cost analysis. See
  :func:`count_hlo`.

Every figure of the ppo and dqn groups is the median of ``--repeats`` timed
runs (default 3; compile seconds too, since each library run compiles
afresh): one timing on a shared machine can be off by a third. The scale
group times each process once by default (a 2048-seed row takes minutes);
``--scale-rounds R`` runs every process of a seed count once per round, R
rounds in turn, and reports the round with the median run time. Figures are
wall-clock on the current machine: run it on an idle machine.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments import gpu_target
from experiments.baselines import purejaxrl_checkout as checkout

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class BenchArgs:
    """Speed benchmarks: compile time and env steps per second."""

    seeds: tuple[int, ...] | None = None
    """numbers of seeds to time, each vmapped in one program; commas or spaces (default: 1,16; scale group 1,64,512,2048; hlo group 1)"""
    only: tuple[str, ...] = ()
    """benchmark groups to run (default: all)"""
    total_timesteps: int | None = None
    """env steps per seed for the ppo, scale and hlo groups (default: ppo 500,000; scale 32,768, or 400 updates with --small-ppo)"""
    out: str | None = None
    """output folder (default runs/bench-<timestamp>)"""
    sweep_configs: int = 64
    """sweep group: configurations (learning rates) x 1 seed in one compile"""
    sweep_separate: int = 64
    """sweep group: how many of the separate runs to time (the rest extrapolated from their mean)"""
    repeats: int = 3
    """ppo and dqn groups: timed runs per row; the median is reported"""
    dqn_timesteps: int = 100_000
    """env steps per seed for the DQN group (one env per seed, so it is far slower per step)"""
    purejaxrl: str | None = None
    """scale and hlo groups: a PureJaxRL checkout (git clone of luchris429/purejaxrl) or its purejaxrl/ppo.py, imported at run time; without it PureJaxRL is left out"""
    small_ppo: bool = False
    """scale and hlo groups: the small PPO of the CPU CI case (1 env, 16 steps, 1 epoch, 1 minibatch, 400 updates) in place of the preset's sizes"""
    num_chunks: int = 20
    """scale group: chunks (host round trips) of rl.train and of the CLI; 20 is the CLI's default"""
    timeout: float = 3600.0
    """scale group: seconds after which one measured process is stopped (its row says so)"""
    scale_rounds: int = 1
    """scale group: rounds per seed count, each running every process once in turn (interleaved, so a
    slow spell of a shared machine falls on all of them); a row is the round with its median run time"""
    keep_runs: bool = False
    hlo_target: str = "host"
    """hlo group: compile for this machine's devices ("host"), or for a GPU without one ("h100", "h200"; needs jax's CUDA plugin, see experiments/gpu_target.py)"""
    """scale group: keep the CLI's run folders (hundreds of MB at 2048 seeds) in the output folder"""


DEFAULT_SEEDS = {"scale": (1, 64, 512, 2048), "hlo": (1,)}  # other groups: (1, 16)
SCALE_TIMESTEPS = 32_768  # scale group default: 64 updates of the preset's 4 x 128 steps
SMALL_PPO = dict(num_envs=1, num_steps=16, update_epochs=1, num_minibatches=1)  # the CPU CI case ...
SMALL_PPO_UPDATES = 400  # ... with 20 chunks: 2048 seeds took 187.6 s by rl.train, 242.7 s by the CLI


def seeds_for(args: BenchArgs, group: str) -> tuple[int, ...]:
    """The seed counts a group times: ``--seeds``, else the group's default."""
    return args.seeds if args.seeds is not None else DEFAULT_SEEDS.get(group, (1, 16))


@dataclass
class Row:
    name: str
    seeds: int
    compile_seconds: float
    steps_per_second: float  # env steps of all seeds together, compile excluded
    note: str = ""


def _time_compiled(
    fn: Callable, *args, repeats: int = 1, clock: Callable[[], float] = time.perf_counter
) -> tuple[float, float]:
    """(compile seconds, median run seconds over ``repeats`` calls) of ``jax.jit(fn)(*args)``."""
    t0 = clock()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = clock() - t0
    runs = []
    for _ in range(repeats):
        t0 = clock()
        jax.block_until_ready(compiled(*args))
        runs.append(clock() - t0)
    return compile_s, float(np.median(runs))


def _median_train(make_result: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median compile seconds, median env steps/s) of ``repeats`` library runs (each compiles)."""
    results = [make_result() for _ in range(repeats)]
    return (
        float(np.median([r.compile_seconds for r in results])),
        float(np.median([r.env_steps_per_second for r in results])),
    )


def env_ceiling_seconds(
    env_id: str, num_envs: int, steps_per_env: int, num_seeds: int, repeats: int = 1
) -> tuple[float, float]:
    """(compile s, run s) of random actions in ``num_envs`` envs per seed, same wrappers, no learning."""
    import envs

    env, params = envs.make(env_id)
    venv = envs.vectorize(env, num_envs)
    space = env.action_space(params)

    def one_seed(key):
        key, reset_key = jax.random.split(key)
        obs, state = venv.reset(reset_key, params)

        def step(carry, k):
            state, total = carry
            act_key, step_key = jax.random.split(k)
            action = jax.vmap(space.sample)(jax.random.split(act_key, num_envs))
            _, state, reward, _, _, _ = venv.step(step_key, state, action, params)
            return (state, total + reward.sum()), None

        (_, total), _ = jax.lax.scan(step, (state, 0.0), jax.random.split(key, steps_per_env))
        return total

    keys = jnp.stack([jax.random.key(s) for s in range(num_seeds)])
    return _time_compiled(jax.vmap(one_seed), keys, repeats=repeats)


def env_ceiling(env_id: str, num_envs: int, steps_per_env: int, num_seeds: int, repeats: int = 1) -> Row:
    """Random actions in ``num_envs`` envs per seed, same wrappers, no learning."""
    compile_s, run_s = env_ceiling_seconds(env_id, num_envs, steps_per_env, num_seeds, repeats)
    return Row(
        f"env only ({env_id}, random actions)", num_seeds, compile_s, num_seeds * num_envs * steps_per_env / run_s
    )


def ppo_group(args: BenchArgs) -> list[Row]:
    """Library PPO vs PureJaxRL-style PPO vs env-only ceiling, CartPole-v1."""
    import envs
    import rl
    from agents import ppo
    from experiments import presets
    from experiments.baselines import purejaxrl_ppo

    preset = presets.get("purejaxrl-cartpole")
    config = dataclasses.replace(
        ppo.Config(**preset.config), total_timesteps=args.total_timesteps or preset.config["total_timesteps"]
    )
    env, env_params = envs.make("CartPole-v1")
    rows = []
    for n in seeds_for(args, "ppo"):
        algo = ppo.make(config, env, env_params)
        ours = Row(
            "ppo (this library)",
            n,
            *_median_train(
                lambda: rl.train(algo, ppo.Hyper(**preset.hyper), seeds=range(n), num_chunks=1), args.repeats
            ),
        )

        base_cfg = dict(purejaxrl_ppo.CONFIG, TOTAL_TIMESTEPS=config.total_timesteps)
        train_fn, num_updates = purejaxrl_ppo.make_train(base_cfg)
        keys = jax.random.split(jax.random.PRNGKey(0), n)
        c, r = _time_compiled(train_fn, keys, repeats=args.repeats)
        steps = n * num_updates * base_cfg["NUM_ENVS"] * base_cfg["NUM_STEPS"]
        base = Row("ppo (PureJaxRL-style single file)", n, c, steps / r)

        ceiling = env_ceiling("CartPole-v1", config.num_envs, config.num_updates * config.num_steps, n, args.repeats)
        ours.note = (
            f"{ours.steps_per_second / base.steps_per_second:.2f}x baseline, "
            f"{ours.steps_per_second / ceiling.steps_per_second:.0%} of env-only"
        )
        base.note = f"{base.steps_per_second / ceiling.steps_per_second:.0%} of env-only"
        rows += [ours, base, ceiling]
        _print_rows(rows[-3:])
    return rows


def sweep_group(args: BenchArgs) -> list[Row]:
    """A sweep of N PPO CartPole configurations x 1 seed in one compile vs N separate runs.

    The sweep is ``rl.sweep`` over N learning rates (log-spaced 1e-4..1e-2) at
    the PureJaxRL preset: one program, all runs vmapped. The separate runs are
    what one would do without it: ``rl.train`` once per learning rate, each
    compiling its own program. Both train the same runs (same keys and
    settings); the speed-up compares compile + run wall time.
    """
    import envs
    import rl
    from agents import ppo
    from experiments import presets

    preset = presets.get("purejaxrl-cartpole")
    config = dataclasses.replace(
        ppo.Config(**preset.config), total_timesteps=args.total_timesteps or preset.config["total_timesteps"]
    )
    hyper = ppo.Hyper(**preset.hyper)
    n = args.sweep_configs
    rates = [float(f"{x:.6g}") for x in np.geomspace(1e-4, 1e-2, n)]
    res = rl.sweep(
        ppo,
        "CartPole-v1",
        grid={"learning_rate": rates},
        seeds=[0],
        config=config,
        hyper=hyper,
        num_chunks=1,
        progress=False,
        verbose=False,
    )
    steps = n * config.num_updates * config.batch_size
    sweep_wall = res.compile_seconds + res.run_seconds
    env, env_params = envs.make("CartPole-v1")
    timed = max(1, min(args.sweep_separate, n))
    compile_s = run_s = 0.0
    for lr in rates[:timed]:
        result = rl.train(
            ppo.make(config, env, env_params), dataclasses.replace(hyper, learning_rate=lr), seeds=[0], num_chunks=1
        )
        compile_s, run_s = compile_s + result.compile_seconds, run_s + result.run_seconds
    scale = n / timed  # extrapolate the runs not timed from the timed ones' mean
    separate_wall = (compile_s + run_s) * scale
    timed_note = "" if timed == n else f", {timed} timed and x{scale:.1f}"
    rows = [
        Row(
            f"ppo sweep: {n} configs x 1 seed, one compile",
            n,
            res.compile_seconds,
            steps / res.run_seconds,
            f"{sweep_wall:.0f} s compile+run: {separate_wall / sweep_wall:.1f}x faster than {n} separate runs",
        ),
        Row(
            f"ppo: {n} separate runs (rl.train each)",
            1,
            compile_s * scale,
            steps / (run_s * scale),
            f"{separate_wall:.0f} s compile+run in all{timed_note}",
        ),
    ]
    _print_rows(rows)
    return rows


def dqn_group(args: BenchArgs) -> list[Row]:
    """DQN on CartPole-v1 at the CleanRL preset (one env, a gradient step every 10 env steps).

    Next to it the env-only ceiling of one env stepping with random actions: with one env
    the speed is set by the per-step work of a sequential scan, not by the learning.
    """
    import envs
    import rl
    from agents import dqn
    from experiments import presets

    preset = presets.get("cleanrl-dqn-cartpole")
    config = dataclasses.replace(dqn.Config(**preset.config), total_timesteps=args.dqn_timesteps)
    env, env_params = envs.make("CartPole-v1")
    algo = dqn.make(config, env, env_params)
    rows = []
    for n in seeds_for(args, "dqn"):
        ours = Row(
            "dqn (CleanRL preset)",
            n,
            *_median_train(
                lambda: rl.train(algo, dqn.Hyper(**preset.hyper), seeds=range(n), num_chunks=1), args.repeats
            ),
        )
        ceiling = env_ceiling(
            "CartPole-v1", config.num_envs, config.total_timesteps // config.num_envs, n, args.repeats
        )
        ours.note = f"{ours.steps_per_second / ceiling.steps_per_second:.0%} of env-only"
        rows += [ours, ceiling]
        _print_rows(rows[-2:])
    return rows


# --- scale: rl.train, the CLI, the env-only ceiling, PureJaxRL and the replica, side by side ------


@dataclass
class ScaleRow:
    """One measured process of the scale group; None where a figure does not apply or it failed."""

    name: str
    seeds: int
    compile_seconds: float | None = None
    run_seconds: float | None = None  # compile excluded
    wall_seconds: float | None = None  # the whole process, from start to exit
    steps_per_second: float | None = None  # env steps of all seeds per second of running
    return_mean: float | None = None  # final return: mean over seeds ...
    return_sd: float | None = None  # ... their standard deviation ...
    return_min: float | None = None  # ... and range
    return_max: float | None = None
    peak_rss_mb: float | None = None  # peak resident memory of the process
    folder_mb: float | None = None  # run folder written (the CLI)
    wall_vs_purejaxrl: float | None = None  # PureJaxRL's wall / this wall: > 1 is faster
    steps_vs_purejaxrl: float | None = None  # this steps/s / PureJaxRL's
    note: str = ""


def scale_settings(args: BenchArgs) -> tuple[Any, Any]:
    """(ppo.Config, ppo.Hyper) of the scale and hlo groups: the purejaxrl-cartpole preset, or --small-ppo."""
    from agents import ppo
    from experiments import presets

    preset = presets.get("purejaxrl-cartpole")
    config = ppo.Config(**preset.config)
    if args.small_ppo:
        config = dataclasses.replace(
            config, **SMALL_PPO, total_timesteps=SMALL_PPO_UPDATES * SMALL_PPO["num_envs"] * SMALL_PPO["num_steps"]
        )
    else:
        config = dataclasses.replace(config, total_timesteps=SCALE_TIMESTEPS)
    if args.total_timesteps is not None:
        config = dataclasses.replace(config, total_timesteps=args.total_timesteps)
    return config, ppo.Hyper(**preset.hyper)


def return_stats(per_seed: Any) -> dict[str, float | None]:
    """Mean, sd and range over the seeds of a per-seed final return (NaN/None: no episode in the window)."""
    values = np.array([np.nan if x is None else x for x in per_seed], dtype=np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return {"return_mean": None, "return_sd": None, "return_min": None, "return_max": None}
    return {
        "return_mean": float(values.mean()),
        "return_sd": float(values.std()),
        "return_min": float(values.min()),
        "return_max": float(values.max()),
    }


def _ppo_settings(spec: dict[str, Any]) -> tuple[Any, Any]:
    """(ppo.Config, ppo.Hyper) from a spec's JSON (lists back to tuples)."""
    from agents import ppo
    from rl.host.runs import config_from_json

    return config_from_json(ppo.Config(), spec["config"]), config_from_json(ppo.Hyper(), spec["hyper"])


def _compile_and_run(fn: Callable, *args: Any) -> tuple[float, float, Any]:
    """(compile s, run s, output) of one call of ``jax.jit(fn)``."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return compile_s, time.perf_counter() - t0, out


def _final_return(episode_return: Any, episodes: Any) -> list[float | None]:
    from rl.host import stats

    final = stats.final_return(np.asarray(episode_return), np.asarray(episodes))
    return [float(x) if np.isfinite(x) else None for x in final]


def _measure_train(spec: dict[str, Any]) -> dict[str, Any]:
    """``rl.train`` as a library user calls it, with the CLI's chunks."""
    import envs
    import rl
    from agents import ppo

    config, hyper = _ppo_settings(spec)
    env, env_params = envs.make("CartPole-v1")
    algo = ppo.make(config, env, env_params)
    t0 = time.perf_counter()
    result = rl.train(algo, hyper, seeds=range(spec["seeds"]), num_chunks=spec["num_chunks"])
    call = time.perf_counter() - t0
    return {
        "compile_seconds": result.compile_seconds,
        "run_seconds": result.run_seconds,
        "env_steps": result.num_runs * result.env_steps_per_run,
        "call_seconds": call,
        "final_return": _final_return(result.metrics["episode_return"], result.metrics["episodes"]),
    }


def _measure_env(spec: dict[str, Any]) -> dict[str, Any]:
    """The env-only ceiling: the same envs and wrappers stepping with random actions."""
    config, _ = _ppo_settings(spec)
    steps = config.num_updates * config.num_steps
    compile_s, run_s = env_ceiling_seconds("CartPole-v1", config.num_envs, steps, spec["seeds"])
    return {"compile_seconds": compile_s, "run_seconds": run_s, "env_steps": spec["seeds"] * config.num_envs * steps}


def _measure_purejaxrl(spec: dict[str, Any]) -> dict[str, Any]:
    """PureJaxRL's ppo.py as its README runs it: ``jax.jit(jax.vmap(make_train(config)))(rngs)``."""
    config, hyper = _ppo_settings(spec)
    module = checkout.load_purejaxrl(spec["purejaxrl"])
    rngs = jax.random.split(jax.random.PRNGKey(0), spec["seeds"])
    train = jax.vmap(module.make_train(checkout.purejaxrl_config(config, hyper)))
    compile_s, run_s, out = _compile_and_run(train, rngs)
    ret, count = checkout.purejaxrl_episodes(out["metrics"])
    return {
        "compile_seconds": compile_s,
        "run_seconds": run_s,
        "env_steps": spec["seeds"] * config.num_updates * config.batch_size,
        "final_return": _final_return(ret, count),
    }


def _measure_replica(spec: dict[str, Any]) -> dict[str, Any]:
    """The single-file replica in experiments/baselines at the same settings."""
    from experiments.baselines import purejaxrl_ppo

    config, hyper = _ppo_settings(spec)
    train_fn, _ = purejaxrl_ppo.make_train(checkout.purejaxrl_config(config, hyper))
    rngs = jax.random.split(jax.random.PRNGKey(0), spec["seeds"])
    compile_s, run_s, out = _compile_and_run(train_fn, rngs)
    ret, count = checkout.purejaxrl_episodes(out["metrics"])
    return {
        "compile_seconds": compile_s,
        "run_seconds": run_s,
        "env_steps": spec["seeds"] * config.num_updates * config.batch_size,
        "final_return": _final_return(ret, count),
    }


MEASURES: dict[str, tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "train": ("rl.train", _measure_train),
    "env": ("env only (random actions, same envs)", _measure_env),
    "purejaxrl": ("PureJaxRL ppo.py", _measure_purejaxrl),
    "replica": ("replica (experiments/baselines)", _measure_replica),
}


def _child_main(argv: list[str]) -> None:
    """One measured process: ``python -c ... KIND SPEC_JSON``; writes its figures to ``spec["result"]``."""
    kind, spec = argv[0], json.loads(argv[1])
    figures = MEASURES[kind][1](spec)
    Path(spec["result"]).write_text(json.dumps(figures))


def _kill_group(pid: int, fired: threading.Event) -> None:
    fired.set()
    try:
        os.killpg(pid, signal.SIGKILL)  # the measured process leads a session of its own
    except ProcessLookupError:
        pass


def run_measured(cmd: list[str], log: Path, timeout: float) -> tuple[int | None, float, float]:
    """Run ``cmd`` (output to ``log``): (exit status, None if stopped at ``timeout``; wall s; peak RSS MiB)."""
    fired = threading.Event()
    with open(log, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        timer = threading.Timer(timeout, _kill_group, (proc.pid, fired))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)  # the rusage of this one child: its peak RSS
        except BaseException:
            _kill_group(proc.pid, threading.Event())
            proc.wait()
            raise
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    rss_mb = usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)  # bytes on macOS, KiB on Linux
    return (None if fired.is_set() else proc.returncode), wall, rss_mb


def _child_command(kind: str, spec: dict[str, Any]) -> list[str]:
    entry = "import sys; from experiments.benchmark import _child_main; _child_main(sys.argv[1:])"
    return [sys.executable, "-c", entry, kind, json.dumps(spec)]


def cli_command(config: Any, seeds: int, num_chunks: int, run_dir: Path) -> list[str]:
    """``python -m experiments.train`` at the purejaxrl-cartpole preset with ``config``'s differences."""
    from experiments import presets

    preset = presets.get("purejaxrl-cartpole")
    flags = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value != preset.config.get(f.name, f.default):
            flags += [f"--{f.name.replace('_', '-')}", *(map(str, value) if isinstance(value, tuple) else [str(value)])]
    return [
        sys.executable,
        "-m",
        "experiments.train",
        "ppo",
        "--preset",
        preset.name,
        "--num-seeds",
        str(seeds),
        "--num-chunks",
        str(num_chunks),
        "--out",
        str(run_dir),
        *flags,
    ]


def _failure(rc: int | None, timeout: float, log: Path, out: Path) -> str:
    where = log.relative_to(out)
    return (
        f"stopped after {timeout:.0f} s (--timeout); see {where}" if rc is None else f"failed (exit {rc}); see {where}"
    )


def _measure_in_process(kind: str, seeds: int, spec: dict[str, Any], args: BenchArgs, out: Path) -> ScaleRow:
    """One of :data:`MEASURES` in a fresh process of its own."""
    name = MEASURES[kind][0]
    result = out / "figures" / f"{kind}-{seeds}.json"
    log = out / "logs" / f"{kind}-{seeds}.log"
    rc, wall, rss = run_measured(
        _child_command(kind, {**spec, "seeds": seeds, "result": str(result)}), log, args.timeout
    )
    row = ScaleRow(name, seeds, wall_seconds=wall, peak_rss_mb=rss)
    if rc != 0:
        row.note = _failure(rc, args.timeout, log, out)
        return row
    figures = json.loads(result.read_text())
    row.compile_seconds, row.run_seconds = figures["compile_seconds"], figures["run_seconds"]
    row.steps_per_second = figures["env_steps"] / figures["run_seconds"]
    if "final_return" in figures:
        vars(row).update(return_stats(figures["final_return"]))
    if "call_seconds" in figures:
        row.note = f"rl.train call {figures['call_seconds']:.1f} s"
    return row


def _measure_cli(config: Any, seeds: int, args: BenchArgs, out: Path) -> ScaleRow:
    """The CLI as a user runs it; its figures from the run folder's summary.json."""
    run_dir = out / "cli-runs" / f"{seeds}-seeds"
    log = out / "logs" / f"cli-{seeds}.log"
    rc, wall, rss = run_measured(cli_command(config, seeds, args.num_chunks, run_dir), log, args.timeout)
    row = ScaleRow("CLI (python -m experiments.train)", seeds, wall_seconds=wall, peak_rss_mb=rss)
    if run_dir.is_dir():
        row.folder_mb = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file()) / 2**20
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    if rc != 0 or summary.get("status") != "completed":
        row.note = (
            _failure(rc, args.timeout, log, out)
            if rc != 0
            else f"summary.json says {summary.get('status', 'nothing')}; see {log.relative_to(out)}"
        )
    else:
        row.compile_seconds, row.run_seconds = summary["compile_seconds"], summary["run_seconds"]
        row.steps_per_second = summary["env_steps_per_second"]
        vars(row).update(return_stats(summary["final_return_per_seed"]))
        from experiments.train import _read_json  # {} for a missing or unreadable file

        evaluation = _read_json(run_dir / "config.json").get("eval") or {}
        if evaluation.get("every"):  # the CLI's default: evaluation episodes, at most 5% of the training steps
            count = evaluation["episodes"]
            row.note = f"with {count} eval episode{'' if count == 1 else 's'} every {evaluation['every']} updates"
    if not args.keep_runs:
        shutil.rmtree(run_dir, ignore_errors=True)
        if run_dir.parent.is_dir() and not any(run_dir.parent.iterdir()):
            run_dir.parent.rmdir()
    return row


def compare_rows(rows: list[ScaleRow]) -> None:
    """Fill each row's speed relative to PureJaxRL's row, and the CLI's time relative to rl.train's."""
    by_name = {r.name: r for r in rows}
    base = by_name.get(MEASURES["purejaxrl"][0])
    for row in rows:
        if base is not None and base.wall_seconds and row.wall_seconds and base.steps_per_second is not None:
            row.wall_vs_purejaxrl = base.wall_seconds / row.wall_seconds
            if row.steps_per_second is not None:
                row.steps_vs_purejaxrl = row.steps_per_second / base.steps_per_second
    cli, lib = by_name.get("CLI (python -m experiments.train)"), by_name.get(MEASURES["train"][0])
    if cli and lib and cli.steps_per_second is not None and lib.steps_per_second is not None:
        cli.note = f"{cli.wall_seconds / lib.wall_seconds:.2f}x rl.train's wall" + (f"; {cli.note}" if cli.note else "")


def scale_group(args: BenchArgs, out: Path) -> list[ScaleRow]:
    """For each seed count: rl.train, the CLI, env only, PureJaxRL (if given) and the replica, one process each."""
    config, hyper = scale_settings(args)
    out = out.resolve()  # the measured processes run in the repository's root
    purejaxrl = str(Path(args.purejaxrl).expanduser().resolve()) if args.purejaxrl else None
    spec = {
        "config": dataclasses.asdict(config),
        "hyper": dataclasses.asdict(hyper),
        "num_chunks": args.num_chunks,
        "purejaxrl": purejaxrl,
    }
    for sub in ("logs", "figures"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    kinds = ["train", "cli", "env", *(["purejaxrl"] if args.purejaxrl else []), "replica"]
    print(
        f"  {config.num_updates} updates of {config.num_envs} envs x {config.num_steps} steps "
        f"({config.total_timesteps:,} env steps per seed), {args.num_chunks} chunks for rl.train and the CLI",
        flush=True,
    )
    rows: list[ScaleRow] = []
    for n in seeds_for(args, "scale"):
        rounds: list[list[ScaleRow]] = []
        for _ in range(max(1, args.scale_rounds)):
            rounds.append([])
            for kind in kinds:
                rounds[-1].append(
                    _measure_cli(config, n, args, out)
                    if kind == "cli"
                    else _measure_in_process(kind, n, spec, args, out)
                )
                _print_scale_row(rounds[-1][-1])
        batch = [median_round(list(measured)) for measured in zip(*rounds)]
        compare_rows(batch)
        rows += batch
        print(scale_table(batch), flush=True)
    return rows


def median_round(measured: list[ScaleRow]) -> ScaleRow:
    """One process's row over the rounds: the round with the median run time (the lower of the two
    middle ones for an even count), its note listing every round's run seconds; rounds that failed
    count only when all did (then the first)."""
    timed = sorted((r for r in measured if r.run_seconds is not None), key=lambda r: r.run_seconds)
    if len(measured) == 1 or not timed:
        return measured[0]
    row = dataclasses.replace(timed[(len(timed) - 1) // 2])
    runs = ", ".join(f"{r.run_seconds:.1f}" if r.run_seconds is not None else "failed" for r in measured)
    rounds = f"median of {len(measured)} rounds (run s: {runs})"
    row.note = f"{rounds}; {row.note}" if row.note else rounds
    return row


# --- hlo: the kernels and bytes of one update in the compiled program ---------------------------

# Instructions that launch no kernel on the CPU (aliases, tuples, constants).
_NOT_KERNELS = frozenset(
    {
        "parameter",
        "constant",
        "get-tuple-element",
        "tuple",
        "bitcast",
        "after-all",
        "opt-barrier",
        "partition-id",
        "replica-id",
    }
)
_DTYPE_BYTES = {
    "pred": 1,
    "s8": 1,
    "u8": 1,
    "s16": 2,
    "u16": 2,
    "f16": 2,
    "bf16": 2,
    "s32": 4,
    "u32": 4,
    "f32": 4,
    "s64": 8,
    "u64": 8,
    "f64": 8,
    "c64": 8,
    "c128": 16,
}
_ARRAY = re.compile(r"\b([a-z]+[0-9]*)\[([0-9,]*)\]")
_HEADER = re.compile(r"^(ENTRY )?%?([\w.\-]+) \(.*\) -> .*\{$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (.*?) ([a-z][\w\-]*)\((.*)$")
_CALLED = re.compile(r"\b(calls|condition|body|to_apply|true_computation|false_computation)=%?([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_SLICING = frozenset({"dynamic-slice", "slice", "gather"})  # read only what they return
_OP_NAME = re.compile(r'op_name="([^"]*)"')
# Path components of an op_name that say how a value was traced, not what computes it.
_TRACING = re.compile(
    r"^(jit\(.*\)|pjit|vmap\(\)|while|body|cond|closed_call|shard_map|checkpoint|remat|branch_\d+_fun)$"
)
REGION_DEPTH = 2  # path components kept in a region's name
REGIONS_SHOWN = 8  # regions per program in the hlo group's "where the bytes go" table


def region(op_name: str, depth: int = REGION_DEPTH) -> str:
    """The part of the program an instruction's ``op_name`` metadata names, tracing wrappers dropped.

    ``jit(chunk)/vmap()/while/body/closed_call/transpose(jvp(critic))/linear_1/dot_general`` ->
    ``transpose(jvp(critic))/linear_1``: the network module (haiku or flax names) and, under
    ``transpose(jvp(...))``, its gradient; an op outside any module keeps its primitive name.
    """
    parts = [part for part in op_name.split("/") if part and not _TRACING.match(part)]
    return "/".join(parts[:depth]) or "(unnamed)"


def _kernel_region(ins: Instruction, computations: dict[str, list[Instruction]]) -> str:
    """A kernel's region: its own op_name, else (a fusion) its root's, else the first one inside it."""
    found = _OP_NAME.search(ins.attrs)
    if found is None and ins.op == "fusion":
        body = computations.get(dict(_CALLED.findall(ins.attrs)).get("calls", ""), [])
        inner = sorted(body, key=lambda i: not i.root)  # the root first: it is what the fusion writes
        found = next((m for m in (_OP_NAME.search(i.attrs) for i in inner) if m), None)
    return region(found.group(1)) if found else f"(unnamed {ins.op})"


@dataclass
class Instruction:
    """One HLO instruction: ``%name = shape op(operands), attrs``."""

    name: str
    shape: str
    op: str
    operands: list[str]  # names of the operand instructions (for ``parameter``: empty)
    attrs: str  # the rest of the line: calls=, body=, backend_config=, ...
    root: bool = False


def shape_bytes(shape: str) -> int:
    """Bytes of an HLO shape (a tuple's elements summed): ``f32[4,64]{1,0}`` -> 1024."""
    return sum(
        _DTYPE_BYTES.get(dtype, 0) * math.prod(int(d) for d in dims.split(",") if d)
        for dtype, dims in _ARRAY.findall(shape)
    )


def _split_call(rest: str) -> tuple[str, str]:
    """``a, b), attrs`` -> (``a, b``, ``attrs``): the operand list up to its closing parenthesis."""
    depth = 1
    for i, ch in enumerate(rest):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            return rest[:i], rest[i + 1 :]
    return rest, ""


def parse_hlo(text: str) -> tuple[dict[str, list[Instruction]], str]:
    """The computations of a compiled HLO module's text (``compiled.as_text()``) and the entry's name."""
    computations: dict[str, list[Instruction]] = {}
    entry, current = "", None
    for line in text.splitlines():
        if current is None:
            head = _HEADER.match(line)
            if head:
                current = computations.setdefault(head.group(2), [])
                entry = head.group(2) if head.group(1) else entry
        elif line.strip() == "}":
            current = None
        elif match := _INSTRUCTION.match(line):
            name, shape, op, rest = match.groups()
            args, attrs = _split_call(rest)
            operands = [] if op == "parameter" else re.findall(r"%([\w.\-]+)", args)
            current.append(Instruction(name, shape, op, operands, attrs, line.lstrip().startswith("ROOT ")))
    if not entry:
        raise ValueError("no ENTRY computation in the HLO text; pass compiled.as_text()")
    return computations, entry


@dataclass
class HloCount:
    """Kernels of one compiled program, as executed (loop trip counts applied) and as written."""

    kernels: float = 0.0  # kernels executed
    bytes: float = 0.0  # estimated bytes they read and write
    ops: Counter = field(default_factory=Counter)  # kernels executed, by op
    static_kernels: int = 0  # kernel instructions in the program text (each loop body once)
    static_ops: Counter = field(default_factory=Counter)
    loops: int = 0  # while loops in the text, small ones compiled into one kernel included
    unknown_trip_counts: int = 0  # loops whose trip count XLA did not know (counted as 1)
    region_bytes: Counter = field(default_factory=Counter)  # estimated bytes by :func:`region`
    region_kernels: Counter = field(default_factory=Counter)  # kernels executed by :func:`region`


def _fusion_bytes(ins: Instruction, computations: dict[str, list[Instruction]], shapes: dict[str, str]) -> int:
    """Bytes a fusion reads and writes: a parameter only sliced counts its slices; an updated-in-place one nothing."""
    called = dict(_CALLED.findall(ins.attrs)).get("calls")
    body = computations.get(called, [])
    if not body:
        return shape_bytes(ins.shape) + sum(shape_bytes(shapes.get(o, "")) for o in ins.operands)
    users: dict[str, list[Instruction]] = {}
    for inner in body:
        for name in inner.operands:
            users.setdefault(name, []).append(inner)
    read = 0
    for param in (i for i in body if i.op == "parameter"):
        uses = users.get(param.name, [])
        if uses and all(u.op in _SLICING and u.operands[0] == param.name for u in uses):
            read += sum(shape_bytes(u.shape) for u in uses)
        elif not any(u.op == "dynamic-update-slice" and u.operands[0] == param.name for u in uses):
            read += shape_bytes(param.shape)
    root = next((i for i in body if i.root), body[-1])
    by_name = {i.name: i for i in body}
    outputs = [by_name[o] for o in root.operands if o in by_name] if root.op == "tuple" else [root]
    written = sum(
        shape_bytes(by_name[o.operands[1]].shape) if o.op == "dynamic-update-slice" else shape_bytes(o.shape)
        for o in outputs
    )
    return read + written


def kernel_bytes(ins: Instruction, computations: dict[str, list[Instruction]], shapes: dict[str, str]) -> int:
    """Estimated bytes one kernel reads and writes (XLA's in-place updates and slices read no whole buffer)."""
    if ins.op == "fusion":
        return _fusion_bytes(ins, computations, shapes)
    if ins.op == "dynamic-update-slice":
        return 2 * shape_bytes(shapes.get(ins.operands[1], ""))
    if ins.op in _SLICING:
        return 2 * shape_bytes(ins.shape)
    return shape_bytes(ins.shape) + sum(shape_bytes(shapes.get(o, "")) for o in ins.operands)


def _walk(
    computations: dict[str, list[Instruction]], shapes: dict[str, str], name: str, times: float, count: HloCount
) -> None:
    for ins in computations[name]:
        if ins.op in _NOT_KERNELS:
            continue
        called = dict(_CALLED.findall(ins.attrs))
        if ins.op == "while":
            trips = _TRIP_COUNT.search(ins.attrs)
            count.loops += 1
            count.unknown_trip_counts += trips is None
            n = int(trips.group(1)) if trips else 1
            _walk(computations, shapes, called["condition"], times * (n + 1), count)
            _walk(computations, shapes, called["body"], times * n, count)
        elif ins.op == "conditional":  # every branch counted: which one runs is data
            branches = _BRANCHES.search(ins.attrs)
            names = (
                re.findall(r"%?([\w.\-]+)", branches.group(1))
                if branches
                else [called[k] for k in ("true_computation", "false_computation") if k in called]
            )
            count.static_ops["conditional"] += 1
            for branch in names:
                _walk(computations, shapes, branch, times, count)
        elif ins.op == "call" and 'xla_cpu_small_call="true"' not in ins.attrs:
            _walk(computations, shapes, called["to_apply"], times, count)
        else:  # a kernel; a small call is a whole while loop XLA compiled into one function
            op = "loop in one kernel" if ins.op == "call" else ins.op
            count.loops += ins.op == "call"
            count.kernels += times
            count.ops[op] += times
            count.static_kernels += 1
            count.static_ops[op] += 1
            moved = times * kernel_bytes(ins, computations, shapes)
            count.bytes += moved
            where = _kernel_region(ins, computations)
            count.region_bytes[where] += moved
            count.region_kernels[where] += times


def count_hlo(text: str) -> HloCount:
    """Kernels and bytes of a compiled program, from ``jax.jit(f).lower(...).compile().as_text()``.

    A kernel is every instruction of an executed computation (the entry, loop bodies and
    conditions, branches, calls) that does work: fusions, custom calls, dots and copies
    left unfused, and so on; parameters, constants, tuples and bitcasts are not. A loop's
    body counts its known trip count times (XLA records it in ``backend_config``), its
    condition one time more. Bytes are each kernel's operands and result, except that a
    dynamic-update-slice writes only the update in place and a (dynamic) slice or gather
    reads only what it returns: an estimate of memory traffic, not a measurement. Both are also
    split by :func:`region` (``region_bytes``, ``region_kernels``): where in the program they go.
    """
    computations, entry = parse_hlo(text)
    shapes = {ins.name: ins.shape for body in computations.values() for ins in body}
    count = HloCount()
    _walk(computations, shapes, entry, 1, count)
    return count


def update_body(closed_jaxpr: Any, num_updates: int) -> Any:
    """The body of the outermost ``scan`` of length ``num_updates`` in a traced training: one update."""
    from jax.extend import core as jcore

    level = [closed_jaxpr.jaxpr]
    while level:
        for jaxpr in level:
            for eqn in jaxpr.eqns:
                if eqn.primitive.name == "scan" and eqn.params["length"] == num_updates:
                    return eqn.params["jaxpr"]
        level = [sub for jaxpr in level for eqn in jaxpr.eqns for sub in jcore.jaxprs_in_params(eqn.params)]
    raise ValueError(f"no scan over {num_updates} updates in the traced program")


def compile_update(body: Any, sharding: Any = None) -> Any:
    """``body`` (a closed jaxpr) compiled on its own: its carry and constants become parameters.

    ``sharding`` places them on another target's device (``gpu_target.sharding``): the program is
    then compiled for that target, which need not be on this machine."""
    from jax.extend import core as jcore

    avals = [jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding) for a in body.in_avals]
    return jax.jit(jcore.jaxpr_as_fun(body)).lower(*avals).compile()


def _library_training(config: Any, hyper: Any, seeds: int) -> Any:
    """The jaxpr of the library's chunk over all updates (rl.train's program, one device), vmapped over seeds."""
    import envs
    from agents import ppo
    from rl.engine import runner

    env, env_params = envs.make("CartPole-v1")
    algo = ppo.make(config, env, env_params)
    keys = runner.seed_keys(list(range(seeds)))
    hypers = runner.broadcast_hyper(hyper, seeds)
    state = jax.eval_shape(jax.vmap(algo.init), keys, hypers)
    return jax.make_jaxpr(jax.vmap(runner._scan_updates(algo, algo.num_updates)))(state, hypers)


def _purejaxrl_training(module: Any, config: Any, hyper: Any, seeds: int) -> Any:
    rngs = jax.random.split(jax.random.PRNGKey(0), seeds)
    return jax.make_jaxpr(jax.vmap(module.make_train(checkout.purejaxrl_config(config, hyper))))(rngs)


def _replica_training(config: Any, hyper: Any, seeds: int) -> Any:
    from experiments.baselines import purejaxrl_ppo

    train_fn, _ = purejaxrl_ppo.make_train(checkout.purejaxrl_config(config, hyper))
    return jax.make_jaxpr(train_fn)(jax.random.split(jax.random.PRNGKey(0), seeds))


@dataclass
class HloRow:
    name: str
    seeds: int
    kernels: float  # kernels executed in one update (loop trip counts applied)
    fusions: float
    custom_calls: float
    copies: float
    megabytes: float  # estimated MB read + written by those kernels
    static_kernels: int  # kernel instructions in the program text
    loops: int  # while loops in the program text
    xla_flops: float  # XLA's cost analysis, which counts each loop body once
    xla_megabytes: float
    compile_seconds: float
    ops: dict[str, float] = field(default_factory=dict)  # kernels executed per update, by op
    note: str = ""
    # where the bytes go: [region, MB, kernels] of the REGIONS_SHOWN regions moving the most, then the rest
    regions: list[list[Any]] = field(default_factory=list)
    target: str = gpu_target.HOST  # what the program was compiled for (experiments/gpu_target.py)


def top_regions(count: HloCount, shown: int = REGIONS_SHOWN) -> list[list[Any]]:
    """``[region, MB, kernels]`` of the ``shown`` regions moving the most bytes, then one row for the rest."""
    ranked = count.region_bytes.most_common()
    rows = [[name, moved / 2**20, count.region_kernels[name]] for name, moved in ranked[:shown]]
    rest = ranked[shown:]
    if rest:
        kernels = sum(count.region_kernels[name] for name, _ in rest)
        rows.append([f"{len(rest)} other regions", sum(moved for _, moved in rest) / 2**20, kernels])
    return rows


def hlo_row(name: str, seeds: int, body: Any, target: str = gpu_target.HOST) -> HloRow:
    """Compile one update's program for ``target`` and count it."""
    sharding = gpu_target.sharding(target)
    t0 = time.perf_counter()
    compiled = compile_update(body, sharding)
    compile_s = time.perf_counter() - t0
    count = count_hlo(compiled.as_text())
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
    note = (
        f"{count.unknown_trip_counts} loop(s) of unknown trip count counted once" if count.unknown_trip_counts else ""
    )
    return HloRow(
        name,
        seeds,
        count.kernels,
        count.ops["fusion"],
        count.ops["custom-call"],
        count.ops["copy"],
        count.bytes / 2**20,
        count.static_kernels,
        count.loops,
        float(cost.get("flops", math.nan)),
        float(cost.get("bytes accessed", math.nan)) / 2**20,
        compile_s,
        dict(count.ops),
        note,
        top_regions(count),
        target,
    )


def op_differences(row: HloRow, base: HloRow, top: int = 4) -> str:
    """The ops whose executed counts differ most between two programs: ``copy +1,234, fusion -56``."""
    ops = set(row.ops) | set(base.ops)
    diffs = sorted(((row.ops.get(o, 0) - base.ops.get(o, 0), o) for o in ops), key=lambda d: -abs(d[0]))
    return ", ".join(f"{op} {d:+,.0f}" for d, op in diffs[:top] if d)


def hlo_group(args: BenchArgs) -> list[HloRow]:
    """One update of the library, PureJaxRL (if given) and the replica: kernels and bytes, compiled on its own."""
    config, hyper = scale_settings(args)
    gpu_target.check(args.hlo_target)
    module = checkout.load_purejaxrl(args.purejaxrl) if args.purejaxrl else None
    rows: list[HloRow] = []
    print(f"  one update compiled for {gpu_target.describe(args.hlo_target)}", flush=True)
    for n in seeds_for(args, "hlo"):
        updates = 3 if n != 3 else 4  # a length no other scan at the top of these programs has
        cfg = dataclasses.replace(config, total_timesteps=updates * config.batch_size)
        programs = [("this library (rl.train's chunk)", lambda: _library_training(cfg, hyper, n))]
        if module is not None:
            programs.append(("PureJaxRL ppo.py", lambda: _purejaxrl_training(module, cfg, hyper, n)))
        programs.append(("replica (experiments/baselines)", lambda: _replica_training(cfg, hyper, n)))
        batch = [hlo_row(name, n, update_body(trace(), updates), args.hlo_target) for name, trace in programs]
        base = batch[1] if module is not None else batch[-1]
        batch[0].note = "; ".join(filter(None, [batch[0].note, f"vs {base.name}: {op_differences(batch[0], base)}"]))
        rows += batch
        print(hlo_table(batch), flush=True)
        print(regions_table(batch), flush=True)
    return rows


# name -> function(args) -> rows; other modules add their groups here.
GROUPS: dict[str, Callable[[BenchArgs], list[Any]]] = {
    "ppo": ppo_group,
    "sweep": sweep_group,
    "dqn": dqn_group,
    "scale": lambda args: scale_group(args, Path(args.out)),
    "hlo": hlo_group,
}


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "devices": ", ".join(sorted({d.device_kind for d in jax.devices()})) + f" x{jax.device_count()}",
        "jax": jax.__version__,
        "python": platform.python_version(),
    }


def _print_rows(rows: list[Row]) -> None:
    for r in rows:
        print(
            f"  {r.name:<42} seeds={r.seeds:<3} compile {r.compile_seconds:6.1f} s   "
            f"{r.steps_per_second:>12,.0f} steps/s   {r.note}",
            flush=True,
        )


def _num(x: float | None, fmt: str = ",.1f", suffix: str = "") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:{fmt}}{suffix}"


def final_return_text(row: ScaleRow) -> str:
    """``mean ± sd [min, max]`` over the seeds; one value for one seed; ``-`` without episodes."""
    if row.return_mean is None:
        return "-"
    if row.seeds == 1 or row.return_min == row.return_max:
        return f"{row.return_mean:.1f}"
    return f"{row.return_mean:.1f} ± {row.return_sd:.1f} [{row.return_min:.1f}, {row.return_max:.1f}]"


SCALE_COLUMNS = (
    "what",
    "seeds",
    "compile (s)",
    "run (s)",
    "wall (s)",
    "env steps/s",
    "final return",
    "peak RSS (MB)",
    "run folder (MB)",
    "vs PureJaxRL: wall",
    "vs PureJaxRL: steps/s",
    "note",
)


def _scale_cells(r: ScaleRow) -> list[str]:
    return [
        r.name,
        str(r.seeds),
        _num(r.compile_seconds),
        _num(r.run_seconds),
        _num(r.wall_seconds),
        _num(r.steps_per_second, ",.0f"),
        final_return_text(r),
        _num(r.peak_rss_mb, ",.0f"),
        _num(r.folder_mb, ",.1f"),
        _num(r.wall_vs_purejaxrl, ".2f", "x"),
        _num(r.steps_vs_purejaxrl, ".2f", "x"),
        r.note,
    ]


def _print_scale_row(r: ScaleRow) -> None:
    c = _scale_cells(r)
    print(
        f"  {c[0]:<38} seeds={c[1]:<5} compile {c[2]:>6} s  run {c[3]:>7} s  wall {c[4]:>7} s  "
        f"{c[5]:>11} steps/s  return {c[6]}  RSS {c[7]} MB  {c[11]}",
        flush=True,
    )


HLO_COLUMNS = (
    "program of one update",
    "seeds",
    "kernels run",
    "fusions",
    "custom calls",
    "copies",
    "MB moved (est.)",
    "kernels in text",
    "loops in text",
    "XLA MFLOP (loop bodies once)",
    "XLA MB accessed (loop bodies once)",
    "compile (s)",
    "note",
)


def _hlo_cells(r: HloRow) -> list[str]:
    return [
        r.name,
        str(r.seeds),
        _num(r.kernels, ",.0f"),
        _num(r.fusions, ",.0f"),
        _num(r.custom_calls, ",.0f"),
        _num(r.copies, ",.0f"),
        _num(r.megabytes, ",.2f"),
        str(r.static_kernels),
        str(r.loops),
        _num(r.xla_flops / 1e6, ",.2f"),
        _num(r.xla_megabytes, ",.2f"),
        _num(r.compile_seconds),
        r.note,
    ]


def _table(columns: tuple[str, ...], cells: list[list[str]]) -> list[str]:
    align = ["---"] + ["---:"] * (len(columns) - 2) + ["---"]
    return [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join(align) + "|",
        *["| " + " | ".join(c) + " |" for c in cells],
    ]


def scale_table(rows: list[ScaleRow]) -> str:
    return "\n".join(_table(SCALE_COLUMNS, [_scale_cells(r) for r in rows])) + "\n"


def hlo_table(rows: list[HloRow]) -> str:
    return "\n".join(_table(HLO_COLUMNS, [_hlo_cells(r) for r in rows])) + "\n"


REGION_COLUMNS = ("program of one update", "seeds", "MB moved (est.)", "share", "kernels run", "region (op_name)")


def _region_cells(rows: list[HloRow]) -> list[list[str]]:
    cells = []
    for r in rows:
        total = sum(moved for _, moved, _ in r.regions)
        for name, moved, kernels in r.regions:
            share = f"{moved / total:.0%}" if total else ""
            cells.append([r.name, str(r.seeds), _num(moved, ",.1f"), share, _num(kernels, ",.0f"), name])
    return cells


def regions_table(rows: list[HloRow]) -> str:
    """Where each program's bytes go, by the ``op_name`` of its kernels (:func:`region`)."""
    return "\n".join(_table(REGION_COLUMNS, _region_cells(rows))) + "\n"


def machine_line(info: dict[str, str]) -> str:
    """``Machine: <cpu>, <n> cores, <devices>, jax <version>`` for the head of a results table."""
    return f"Machine: {info['cpu']}, {info['cores']} cores, {info['devices']}, jax {info['jax']}"


def to_markdown(rows: list[Any], info: dict[str, str]) -> str:
    """The machine, then one table per kind of row (speed, scale, hlo and its regions), in that order."""
    lines = [machine_line(info)]
    speed = [r for r in rows if isinstance(r, Row)]
    if speed:
        lines += ["", "| benchmark | seeds | compile (s) | env steps/s | note |", "|---|---:|---:|---:|---|"]
        lines += [
            f"| {r.name} | {r.seeds} | {r.compile_seconds:.1f} | {r.steps_per_second:,.0f} | {r.note} |" for r in speed
        ]
    scale = [r for r in rows if isinstance(r, ScaleRow)]
    if scale:
        lines += ["", *_table(SCALE_COLUMNS, [_scale_cells(r) for r in scale])]
    hlo = [r for r in rows if isinstance(r, HloRow)]
    if hlo:
        targets = sorted({gpu_target.describe(r.target) for r in hlo})
        lines += [
            "",
            f"One update compiled for {', '.join(targets)}:",
            "",
            *_table(HLO_COLUMNS, [_hlo_cells(r) for r in hlo]),
        ]
        if any(r.regions for r in hlo):
            lines += ["", "Where the bytes go:", "", *_table(REGION_COLUMNS, _region_cells(hlo))]
    return "\n".join(lines) + "\n"


_BOOL_FLAGS = ("--small-ppo", "--keep-runs")
_LIST_FLAGS = ("--seeds", "--only")


def normalise_argv(argv: list[str]) -> list[str]:
    """``--seeds 1,64`` (or ``--seeds=1,64``) -> ``--seeds 1 64``, the same for ``--only``; a bare
    ``--small-ppo`` -> ``--small-ppo True``."""
    out: list[str] = []
    listing = False
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in _LIST_FLAGS and eq:
            out += [name, *filter(None, value.split(","))]
        elif listing and not arg.startswith("-"):
            out += list(filter(None, arg.split(",")))
            continue
        else:
            out.append(arg)
        listing = arg in _LIST_FLAGS
        following = argv[i + 1] if i + 1 < len(argv) else "-"
        if arg in _BOOL_FLAGS and following.startswith("-"):
            out.append("True")
    return out


def check_args(args: BenchArgs) -> str | None:
    """The first thing wrong with the arguments, as an ``error:`` line, or None."""
    unknown = sorted(set(args.only) - set(GROUPS))
    if unknown:
        return f"error: unknown benchmark group(s) {unknown}; groups: {', '.join(GROUPS)}"
    for name in ("repeats", "dqn_timesteps", "sweep_configs", "sweep_separate", "num_chunks", "total_timesteps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            return f"error: --{name.replace('_', '-')}={value} is invalid: must be an integer >= 1"
    if not args.timeout > 0:
        return f"error: --timeout={args.timeout} is invalid: must be a number of seconds > 0"
    if args.seeds is not None and (not args.seeds or min(args.seeds) < 1):
        return f"error: --seeds={list(args.seeds)} is invalid: must be one or more integers >= 1"
    groups = set(args.only or GROUPS)
    if args.hlo_target != gpu_target.HOST and "hlo" not in groups:
        return f"error: --hlo-target={args.hlo_target} applies to the hlo group only; add it with --only hlo"
    try:
        gpu_target.check(args.hlo_target)
    except gpu_target.TargetError as err:
        return f"error: {err}"
    if args.purejaxrl is not None:
        try:
            checkout.purejaxrl_ppo_file(args.purejaxrl)
        except ValueError as err:
            return f"error: {err}"
    if groups & {"scale", "hlo"}:
        config, _ = scale_settings(args)
        if config.num_updates < 1:
            return (
                f"error: --total-timesteps={config.total_timesteps} is invalid for the scale and hlo groups: "
                f"one update takes num_envs x num_steps = {config.batch_size} env steps"
            )
    if "ppo" in groups and args.total_timesteps is not None and args.total_timesteps < 512:
        return (
            f"error: --total-timesteps={args.total_timesteps} is invalid for the ppo group: one update of the "
            "PureJaxRL preset takes 4 envs x 128 steps = 512 env steps"
        )
    return None


def main(argv=None) -> int:
    import tyro

    argv = normalise_argv(list(sys.argv[1:] if argv is None else argv))
    args = tyro.cli(BenchArgs, args=argv, config=(tyro.conf.FlagConversionOff,))
    gpu_target.use_cpu_backend(args.hlo_target)  # before anything starts jax's backends
    error = check_args(args)
    if error:
        print(error)
        return 2
    out = Path(args.out or f"runs/bench-{dt.datetime.now():%Y%m%d-%H%M%S}")
    args = dataclasses.replace(args, out=str(out))
    info = machine()
    print(f"machine: {info}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[Any] = []
    for name, group in GROUPS.items():
        if not args.only or name in args.only:
            print(f"[{name}]", flush=True)
            rows += group(args)
    table = {Row: "speed", ScaleRow: "scale", HloRow: "hlo"}
    (out / "bench.json").write_text(
        json.dumps(
            {
                "machine": info,
                "args": dataclasses.asdict(args),
                "rows": [{"table": table.get(type(r), "other"), **dataclasses.asdict(r)} for r in rows],
            },
            indent=2,
        )
    )
    (out / "bench.md").write_text(to_markdown(rows, info))
    print("\n" + to_markdown(rows, info) + f"\nwritten to {out}/bench.md", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
