"""Evaluate the policy of a finished (or interrupted) run; optionally animate one episode.

    python -m experiments.evaluate RUN_DIR --episodes 100              # greedy, every seed
    python -m experiments.evaluate RUN_DIR --stochastic --run 0        # sampled actions, first seed
    python -m experiments.evaluate RUN_DIR --gif episode.gif           # + an animated GIF

The parameters come from the run's newest checkpoint (``agents.load``), with
its observation-normalisation statistics applied when it used them. Each run's
``--episodes`` episodes are played in parallel environments, all runs at once
(vmapped), inside one jitted ``lax.while_loop`` that stops when every episode
has ended: the return of the first episode of each environment counts. The
report gives each run's mean return with a 95% bootstrap confidence interval
over its episodes and, for several runs, the mean over runs with a 95%
bootstrap interval over runs; with fewer than 4 episodes or runs that interval
is only their range, and the report says so (``ci_note``). ``--out FILE``
writes it as JSON.

``--gif`` renders one episode of the first evaluated run with gymnax's
visualizer, which draws Catch-bsuite, the MinAtar games, Pong-misc,
PointRobot-misc, MetaMaze-misc, FourRooms-misc and, when pygame is installed
(``pip install "gymnasium[classic-control]"``), Acrobot, CartPole, Pendulum and
MountainCar(Continuous); for any other environment it says so and skips the GIF.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import numpy as np
import tyro

from experiments.train import UsageError, _jsonable, tyro_cli

# environments gymnax's Visualizer can draw (gymnax/visualize/visualizer.py)
GIF_ENVS: tuple[str, ...] = (
    "Acrobot-v1",
    "CartPole-v1",
    "Pendulum-v1",
    "MountainCar-v0",
    "MountainCarContinuous-v0",
    "Catch-bsuite",
    "Asterix-MinAtar",
    "Breakout-MinAtar",
    "Freeway-MinAtar",
    "Seaquest-MinAtar",
    "SpaceInvaders-MinAtar",
    "Pong-misc",
    "PointRobot-misc",
    "MetaMaze-misc",
    "FourRooms-misc",
)
PYGAME_ENVS = GIF_ENVS[:5]  # drawn by gymnasium's classic-control renderer, which needs pygame


@dataclass(frozen=True)
class EvalArgs:
    """Evaluate a trained policy: mean episode return with a confidence interval."""

    run_dir: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]
    """run folder written by python -m experiments.train"""
    episodes: int = 100
    """episodes per evaluated run (played in parallel)"""
    stochastic: bool = False
    """sample actions from the policy instead of taking its greedy (mode) action"""
    run: int | None = None
    """evaluate only this run (index in the batch, 0 = first seed); default: every run"""
    seed: int = 0
    """seed of the evaluation episodes"""
    max_steps: int | None = None
    """stop an episode after this many steps (default: the env's max_steps_in_episode)"""
    gif: str | None = None
    """write an animated GIF of one episode of the first evaluated run to this path"""
    gif_max_frames: int = 300
    """at most this many steps of the episode are drawn in the GIF"""
    out: str | None = None
    """also write the report as JSON to this path"""


class EpisodeResults(NamedTuple):
    """Per run and episode: ``returns``/``lengths`` ``[R, E]``, ``finished`` ``[R, E]`` bool."""

    returns: np.ndarray
    lengths: np.ndarray
    finished: np.ndarray


def _env_for_eval(env: Any, env_params: Any) -> Any:
    """The single env as training stepped it: continuous actions clipped to the Box."""
    from rl.device.evaluation import env_for_eval

    return env_for_eval(env, env_params)


def default_max_steps(env_params: Any) -> int:
    """The env's own time limit when it has one, else 10,000 steps."""
    from rl.device.evaluation import default_max_steps as env_limit

    return env_limit(env_params)


def play_episodes(
    policy: Callable[..., Any],
    params: Any,
    obs_stats: Any,
    env: Any,
    env_params: Any,
    keys: Any,
    num_episodes: int,
    deterministic: bool,
    max_steps: int,
    recurrent: Any = None,
) -> EpisodeResults:
    """Play ``num_episodes`` episodes for each of R runs at once (vmapped over runs).

    ``params``/``obs_stats``/``keys`` have a leading run axis R; ``policy`` is
    ``agents.Loaded.policy``. One jitted ``lax.while_loop`` steps all R * E
    envs until every episode has ended or ``max_steps`` steps were taken; an
    env's first episode is the one counted (later ones are ignored): the
    episode loop of the evaluation during training, ``rl.device.evaluation.play_episodes``. With
    ``recurrent`` (``agents.Loaded.recurrent``) the episodes are played with memory: its
    ``policy`` keeps the carry from step to step, reset at episode ends.
    """
    import jax

    from rl.device.evaluation import play_episodes as play

    eval_env = _env_for_eval(env, env_params)

    def one_run(params, obs_stats, key):
        def act(obs, k, *carry):
            if recurrent is not None:
                return recurrent.policy(params, obs_stats, *carry, obs, k, deterministic)
            return policy(params, obs_stats, obs, k, deterministic)

        carry = None if recurrent is None else recurrent.initial_carry(num_episodes)
        return play(act, eval_env, env_params, key, num_episodes, max_steps, carry)

    ret, length, done = jax.jit(jax.vmap(one_run))(params, obs_stats, keys)
    return EpisodeResults(np.asarray(ret), np.asarray(length), np.asarray(done))


def summarize(results: EpisodeResults, seeds: Sequence[int]) -> dict[str, Any]:
    """Mean return with 95% bootstrap CIs: per run over episodes, overall over runs."""
    from rl.host import stats

    per_run = []
    for seed, ret, fin in zip(seeds, results.returns, results.finished, strict=True):
        low, high = stats.bootstrap_ci(ret.astype(np.float64))
        per_run.append(
            {
                "seed": int(seed),
                "mean_return": float(ret.mean()),
                "ci95": [low, high],
                "std_return": float(ret.std()),
                "episodes": int(ret.size),
                "unfinished_episodes": int((~fin).sum()),
            }
        )
        note = stats.too_few_for_ci(int(ret.size), "episodes")  # then the "CI" is their range
        if note is not None:
            per_run[-1]["ci_note"] = note
    means = np.array([r["mean_return"] for r in per_run])
    overall = {
        "mean_return": float(means.mean()),
        "ci95": list(stats.bootstrap_ci(means)),
        "ci_over": "runs" if len(per_run) > 1 else "episodes",
    }
    if len(per_run) == 1:
        overall["ci95"] = per_run[0]["ci95"]
        if "ci_note" in per_run[0]:
            overall["ci_note"] = per_run[0]["ci_note"]
    else:
        # with fewer than 4 runs the bootstrap "CI" over runs is just their range: say so
        note = stats.too_few_for_ci(len(per_run))
        if note is not None:
            overall["ci_note"] = note
    return {"per_run": per_run, "overall": overall}


def render_gif(
    act: Callable[..., Any],
    env: Any,
    env_params: Any,
    key: Any,
    path: str | Path,
    deterministic: bool = True,
    max_frames: int = 300,
) -> str | None:
    """Animate one episode of ``act(obs, key, deterministic)`` to ``path`` (a GIF).

    Returns None on success, else the reason the env cannot be drawn here.
    """
    name = getattr(env, "name", type(env).__name__)
    if name not in GIF_ENVS:
        return f"gymnax's visualizer cannot draw {name}; it draws {', '.join(GIF_ENVS)}"
    import jax
    import jax.numpy as jnp
    import matplotlib

    matplotlib.use("Agg")
    from gymnax.visualize import Visualizer

    step_env = _env_for_eval(env, env_params)

    @jax.jit
    def episode(key):
        reset_key, key = jax.random.split(key)
        obs, state = step_env.reset(reset_key, env_params)

        def body(c, k):
            state, obs, done = c
            act_key, step_key = jax.random.split(k)
            action = act(obs, act_key, deterministic)
            obs2, state2, reward, terminated, truncated, _ = step_env.step(step_key, state, action, env_params)
            return (state2, obs2, done | terminated | truncated), (state, reward, done)

        _, (states, rewards, done_before) = jax.lax.scan(
            body, (state, obs, jnp.bool_(False)), jax.random.split(key, max_frames)
        )
        return states, rewards, done_before

    states, rewards, done_before = jax.device_get(episode(key))
    frames = int(np.sum(~done_before))  # steps up to and including the episode's last one
    state_seq = [jax.tree.map(lambda x, i=i: x[i], states) for i in range(frames)]
    returns = np.cumsum(rewards[:frames])
    if name in PYGAME_ENVS:
        try:
            from gymnax.visualize import vis_gym

            vis_gym.render_gym_frame(name, state_seq[0], env_params)
        except Exception as err:  # gymnasium's DependencyNotInstalled and friends
            return f"cannot draw {name}: {err}"
    Visualizer(env, env_params, state_seq, returns).animate(str(path))
    return None


def evaluate(args: EvalArgs) -> dict[str, Any]:
    """Run the evaluation described by ``args``; print and return the report."""
    import jax

    import agents

    for name, minimum, maximum in (
        ("episodes", 1, None),
        ("seed", 0, 2**63 - 1),
        ("gif_max_frames", 1, None),
        ("max_steps", 1, 2**31 - 1),
    ):
        value = getattr(args, name)
        if value is None and name == "max_steps":
            continue
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value < minimum
            or (maximum is not None and value > maximum)
        ):
            allowed = f"an integer >= {minimum}" if maximum is None else f"an integer in [{minimum}, {maximum}]"
            raise UsageError(f"--{name.replace('_', '-')} must be {allowed}, got {value!r}")
    check_new_file(args.out, "--out")
    check_new_file(args.gif, "--gif")
    try:
        loaded = agents.load(args.run_dir, run=args.run)
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as err:
        what = str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"
        raise UsageError(
            f"cannot evaluate {str(args.run_dir)!r}: {what}" if not isinstance(err, ValueError) else what
        ) from None
    runs = [loaded.run] if args.run is not None else list(range(len(loaded.seeds)))
    check_memory(loaded, len(runs), args)
    pick = lambda tree: None if tree is None else jax.tree.map(lambda x: x[np.array(runs)], tree)  # noqa: E731
    max_steps = args.max_steps or default_max_steps(loaded.env_params)
    deterministic = not args.stochastic
    keys = jax.random.split(jax.random.key(args.seed), len(runs))
    results = play_episodes(
        loaded.policy,
        pick(loaded.all_params),
        pick(loaded.all_obs_stats),
        loaded.env,
        loaded.env_params,
        keys,
        args.episodes,
        deterministic,
        max_steps,
        loaded.recurrent,
    )
    report = {
        "run_dir": str(args.run_dir),
        "agent": loaded.agent,
        "env": loaded.env_id,
        "policy": "stochastic" if args.stochastic else "greedy",
        "episodes_per_run": args.episodes,
        "checkpoint_update": loaded.update,
        "max_steps": max_steps,
        **summarize(results, [loaded.seeds[r] for r in runs]),
    }
    if args.gif is not None:
        first = agents.load(args.run_dir, run=runs[0])
        reason = render_gif(
            first.act,
            first.env,
            first.env_params,
            jax.random.key(args.seed),
            args.gif,
            deterministic,
            args.gif_max_frames,
        )
        report["gif"] = None if reason else str(args.gif)
        report["gif_skipped"] = reason
    if args.out is not None:
        write_new_json(Path(args.out), report)
    print_report(report)
    return report


def check_new_file(path: str | None, flag: str) -> None:
    """A path to write must not exist (nothing is replaced) and must lie in a folder that can be written.

    Missing parent folders are fine (they are made when the file is written), as long as
    the nearest existing one is a writable folder.
    """
    import os
    import tempfile

    if path is None:
        return
    if not path.strip():
        raise UsageError(f"{flag} is empty; give a file name")
    target = Path(path)
    try:
        if target.exists() or target.is_symlink():
            raise UsageError(f"{flag} {path!r} already exists; it is never replaced, choose a new file name")
        if path.endswith(os.sep) or target.name in ("", ".", ".."):
            raise UsageError(f"{flag} {path!r} names a folder; give a file name")
        parent = target.absolute().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise UsageError(f"{flag} {path!r} lies under {str(parent)!r}, which is a file, not a folder")
        if len(target.name.encode()) > os.pathconf(parent, "PC_NAME_MAX"):
            raise UsageError(f"{flag} {path!r}: the file name is longer than this file system allows")
        try:  # write a file there and remove it: the only sure test (root passes os.access on /proc)
            tempfile.TemporaryFile(dir=parent).close()
        except OSError as err:
            raise UsageError(f"{flag} {path!r}: cannot write in {str(parent)!r}: {err.strerror or err}") from None
    except (OSError, ValueError) as err:
        if isinstance(err, UsageError):
            raise
        raise UsageError(f"{flag} {path!r} cannot be used: {err}") from None


def write_new_json(path: Path, data: Any) -> None:
    """Write JSON to a new file atomically, never replacing one (``rl.host.files.write_json``)."""
    from rl.host.files import write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_json(path, data, default=_jsonable, replace=False)  # refuses a name taken meanwhile
    except FileExistsError:
        raise UsageError(
            f"--out {str(path)!r} was created by someone else meanwhile; it is not replaced, choose a new file name"
        ) from None


def check_memory(loaded: Any, num_runs: int, args: EvalArgs) -> None:
    """Refuse ``--episodes`` or ``--gif-max-frames`` whose env states cannot fit in memory (rl/device/memory.py)."""
    import jax

    from rl.device import memory

    obs, state = jax.eval_shape(loaded.env.reset, jax.random.key(0), loaded.env_params)
    per_episode = memory.tree_bytes((obs, state)) + 16  # + return, length, done
    devices = jax.devices()[:1]  # play_episodes runs on the default device
    memory.check_fits(
        memory.Need(per_episode, 0),
        num_runs * args.episodes,
        devices,
        runs_field="episodes",
        runs_value=args.episodes,
        runs_per_unit=num_runs,
        unit="episodes (all runs)",
    )
    if args.gif is not None:
        memory.check_fits(
            memory.Need(memory.tree_bytes(state) + 8, 0),
            args.gif_max_frames,
            devices,
            runs_field="gif_max_frames",
            runs_value=args.gif_max_frames,
            unit="frames",
        )


def print_report(r: dict[str, Any]) -> None:
    lines = [
        f"{r['agent']} on {r['env']}: {r['policy']} policy, {r['episodes_per_run']} episodes per run, "
        f"checkpoint at update {r['checkpoint_update']}"
    ]
    for run in r["per_run"]:
        low, high = run["ci95"]
        unfinished = (
            f", {run['unfinished_episodes']} unfinished after {r['max_steps']} steps"
            if run["unfinished_episodes"]
            else ""
        )
        spread = (
            f"range {low:.2f} .. {high:.2f}; too few episodes for a 95% CI"
            if run.get("ci_note")
            else f"95% CI {low:.2f} .. {high:.2f}"
        )
        lines.append(f"  seed {run['seed']}: mean return {run['mean_return']:.2f} ({spread}){unfinished}")
    if len(r["per_run"]) > 1:
        o = r["overall"]
        spread = (
            f"range {o['ci95'][0]:.2f} .. {o['ci95'][1]:.2f}; too few seeds for a 95% CI over seeds"
            if o.get("ci_note")
            else f"95% CI over seeds {o['ci95'][0]:.2f} .. {o['ci95'][1]:.2f}"
        )
        lines.append(f"  all {len(r['per_run'])} seeds: mean return {o['mean_return']:.2f} ({spread})")
    if "gif" in r:
        lines.append(f"  GIF: {r['gif']}" if r["gif"] else f"  GIF skipped: {r['gif_skipped']}")
    print("\n".join(lines), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    from rl.errors import ConfigError

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = tyro_cli(EvalArgs, args=argv, prog="python -m experiments.evaluate")
        evaluate(args)
        return 0
    except (ConfigError, UsageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. the report or the GIF cannot be written (full disk)
        where = f"could not write {err.filename}: " if getattr(err, "filename", None) else ""
        print(f"error: {where}{err.strerror or err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
