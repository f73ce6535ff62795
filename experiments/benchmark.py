"""Speed figures (``make bench``): compile seconds and env steps per second.

    python -m experiments.benchmark                 # every benchmark, 1 and 16 seeds
    python -m experiments.benchmark --only ppo      # one group

Each group returns rows; all rows are printed as a table and written to
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

Every figure is the median of ``--repeats`` timed runs (default 3; compile
seconds too, since each library run compiles afresh): one timing on a shared
machine can be off by a third. Figures are wall-clock on the current machine:
run it on an idle machine.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class BenchArgs:
    """Speed benchmarks: compile time and env steps per second."""

    seeds: tuple[int, ...] = (1, 16)
    """numbers of seeds to time (vmapped in one program)"""
    only: tuple[str, ...] = ()
    """benchmark groups to run (default: all)"""
    total_timesteps: int = 500_000
    """env steps per seed for the PPO group"""
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


@dataclass
class Row:
    name: str
    seeds: int
    compile_seconds: float
    steps_per_second: float  # env steps of all seeds together, compile excluded
    note: str = ""


def _time_compiled(fn: Callable, *args, repeats: int = 1,
                   clock: Callable[[], float] = time.perf_counter) -> tuple[float, float]:
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
    return (float(np.median([r.compile_seconds for r in results])),
            float(np.median([r.env_steps_per_second for r in results])))


def env_ceiling(env_id: str, num_envs: int, steps_per_env: int, num_seeds: int, repeats: int = 1) -> Row:
    """Random actions in ``num_envs`` envs per seed, same wrappers, no learning."""
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
    compile_s, run_s = _time_compiled(jax.vmap(one_seed), keys, repeats=repeats)
    return Row(f"env only ({env_id}, random actions)", num_seeds, compile_s,
               num_seeds * num_envs * steps_per_env / run_s)


def ppo_group(args: BenchArgs) -> list[Row]:
    """Library PPO vs PureJaxRL-style PPO vs env-only ceiling, CartPole-v1."""
    import envs
    import rl
    from agents import ppo
    from experiments import presets
    from experiments.baselines import purejaxrl_ppo

    preset = presets.get("purejaxrl-cartpole")
    config = dataclasses.replace(ppo.Config(**preset.config), total_timesteps=args.total_timesteps)
    env, env_params = envs.make("CartPole-v1")
    rows = []
    for n in args.seeds:
        algo = ppo.make(config, env, env_params)
        ours = Row("ppo (this library)", n, *_median_train(
            lambda: rl.train(algo, ppo.Hyper(**preset.hyper), seeds=range(n), num_chunks=1), args.repeats))

        base_cfg = dict(purejaxrl_ppo.CONFIG, TOTAL_TIMESTEPS=args.total_timesteps)
        train_fn, num_updates = purejaxrl_ppo.make_train(base_cfg)
        keys = jax.random.split(jax.random.PRNGKey(0), n)
        c, r = _time_compiled(train_fn, keys, repeats=args.repeats)
        steps = n * num_updates * base_cfg["NUM_ENVS"] * base_cfg["NUM_STEPS"]
        base = Row("ppo (PureJaxRL-style single file)", n, c, steps / r)

        ceiling = env_ceiling("CartPole-v1", config.num_envs, config.num_updates * config.num_steps, n,
                              args.repeats)
        ours.note = (f"{ours.steps_per_second / base.steps_per_second:.2f}x baseline, "
                     f"{ours.steps_per_second / ceiling.steps_per_second:.0%} of env-only")
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
    config = dataclasses.replace(ppo.Config(**preset.config), total_timesteps=args.total_timesteps)
    hyper = ppo.Hyper(**preset.hyper)
    n = args.sweep_configs
    rates = [float(f"{x:.6g}") for x in np.geomspace(1e-4, 1e-2, n)]
    res = rl.sweep(ppo, "CartPole-v1", grid={"learning_rate": rates}, seeds=[0], config=config, hyper=hyper,
                   num_chunks=1, progress=False, verbose=False)
    steps = n * config.num_updates * config.batch_size
    sweep_wall = res.compile_seconds + res.run_seconds
    env, env_params = envs.make("CartPole-v1")
    timed = max(1, min(args.sweep_separate, n))
    compile_s = run_s = 0.0
    for lr in rates[:timed]:
        result = rl.train(ppo.make(config, env, env_params), dataclasses.replace(hyper, learning_rate=lr),
                          seeds=[0], num_chunks=1)
        compile_s, run_s = compile_s + result.compile_seconds, run_s + result.run_seconds
    scale = n / timed  # extrapolate the runs not timed from the timed ones' mean
    separate_wall = (compile_s + run_s) * scale
    timed_note = "" if timed == n else f", {timed} timed and x{scale:.1f}"
    rows = [
        Row(f"ppo sweep: {n} configs x 1 seed, one compile", n, res.compile_seconds, steps / res.run_seconds,
            f"{sweep_wall:.0f} s compile+run: {separate_wall / sweep_wall:.1f}x faster than {n} separate runs"),
        Row(f"ppo: {n} separate runs (rl.train each)", 1, compile_s * scale, steps / (run_s * scale),
            f"{separate_wall:.0f} s compile+run in all{timed_note}"),
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
    for n in args.seeds:
        ours = Row("dqn (CleanRL preset)", n, *_median_train(
            lambda: rl.train(algo, dqn.Hyper(**preset.hyper), seeds=range(n), num_chunks=1), args.repeats))
        ceiling = env_ceiling("CartPole-v1", config.num_envs, config.total_timesteps // config.num_envs, n,
                              args.repeats)
        ours.note = f"{ours.steps_per_second / ceiling.steps_per_second:.0%} of env-only"
        rows += [ours, ceiling]
        _print_rows(rows[-2:])
    return rows


# name -> function(args) -> rows; other modules add their groups here.
GROUPS: dict[str, Callable[[BenchArgs], list[Row]]] = {
    "ppo": ppo_group, "sweep": sweep_group, "dqn": dqn_group,
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
        print(f"  {r.name:<42} seeds={r.seeds:<3} compile {r.compile_seconds:6.1f} s   "
              f"{r.steps_per_second:>12,.0f} steps/s   {r.note}", flush=True)


def machine_line(info: dict[str, str]) -> str:
    """``Machine: <cpu>, <n> cores, <devices>, jax <version>`` for the head of a results table."""
    return f"Machine: {info['cpu']}, {info['cores']} cores, {info['devices']}, jax {info['jax']}"


def to_markdown(rows: list[Row], info: dict[str, str]) -> str:
    lines = [machine_line(info), "",
             "| benchmark | seeds | compile (s) | env steps/s | note |", "|---|---:|---:|---:|---|"]
    lines += [f"| {r.name} | {r.seeds} | {r.compile_seconds:.1f} | {r.steps_per_second:,.0f} | {r.note} |"
              for r in rows]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    import tyro

    args = tyro.cli(BenchArgs, args=argv, config=(tyro.conf.FlagConversionOff,))
    unknown = sorted(set(args.only) - set(GROUPS))
    if unknown:
        print(f"error: unknown benchmark group(s) {unknown}; groups: {', '.join(GROUPS)}")
        return 2
    for field in ("repeats", "total_timesteps", "dqn_timesteps", "sweep_configs", "sweep_separate"):
        if getattr(args, field) < 1:
            print(f"error: --{field.replace('_', '-')}={getattr(args, field)} is invalid: must be an integer >= 1")
            return 2
    if not args.seeds or min(args.seeds) < 1:
        print(f"error: --seeds={list(args.seeds)} is invalid: must be one or more integers >= 1")
        return 2
    info = machine()
    print(f"machine: {info}", flush=True)
    rows: list[Row] = []
    for name, group in GROUPS.items():
        if not args.only or name in args.only:
            print(f"[{name}]", flush=True)
            rows += group(args)
    out = Path(args.out or f"runs/bench-{dt.datetime.now():%Y%m%d-%H%M%S}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps({"machine": info, "rows": [dataclasses.asdict(r) for r in rows]},
                                               indent=2))
    (out / "bench.md").write_text(to_markdown(rows, info))
    print("\n" + to_markdown(rows, info) + f"\nwritten to {out}/bench.md", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
