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
bootstrap interval over runs. ``--out FILE`` writes it as JSON.

``--gif`` renders one episode of the first evaluated run with gymnax's
visualizer, which draws Catch-bsuite, the MinAtar games, Pong-misc,
PointRobot-misc, MetaMaze-misc, FourRooms-misc and, when pygame is installed
(``pip install "gymnasium[classic-control]"``), Acrobot, CartPole, Pendulum and
MountainCar(Continuous); for any other environment it says so and skips the GIF.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, NamedTuple, Sequence

import numpy as np
import tyro

from experiments.train import UsageError, tyro_cli, write_json

# environments gymnax's Visualizer can draw (gymnax/visualize/visualizer.py)
GIF_ENVS: tuple[str, ...] = (
    "Acrobot-v1", "CartPole-v1", "Pendulum-v1", "MountainCar-v0", "MountainCarContinuous-v0",
    "Catch-bsuite", "Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar", "Seaquest-MinAtar",
    "SpaceInvaders-MinAtar", "Pong-misc", "PointRobot-misc", "MetaMaze-misc", "FourRooms-misc",
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
    import envs

    if not envs.is_discrete(env.action_space(env_params)):
        return envs.ClipAction(env)
    return env


def default_max_steps(env_params: Any) -> int:
    """The env's own time limit when it has one, else 10,000 steps."""
    limit = getattr(env_params, "max_steps_in_episode", None)
    return int(limit) if limit is not None else 10_000


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
) -> EpisodeResults:
    """Play ``num_episodes`` episodes for each of R runs at once (vmapped over runs).

    ``params``/``obs_stats``/``keys`` have a leading run axis R; ``policy`` is
    ``agents.Loaded.policy``. One jitted ``lax.while_loop`` steps all R * E
    envs until every episode has ended or ``max_steps`` steps were taken; an
    env's first episode is the one counted (later ones are ignored).
    """
    import jax
    import jax.numpy as jnp

    import envs

    venv = envs.VecEnv(_env_for_eval(env, env_params), num_episodes)

    def one_run(params, obs_stats, key):
        reset_key, key = jax.random.split(key)
        obs, state = venv.reset(reset_key, env_params)
        zeros = jnp.zeros((num_episodes,), jnp.float32)
        carry = (jnp.int32(0), state, obs, key, zeros, jnp.zeros((num_episodes,), jnp.int32),
                 jnp.zeros((num_episodes,), bool))

        def cond(c):
            t, *_, done = c
            return (t < max_steps) & ~jnp.all(done)

        def body(c):
            t, state, obs, key, ret, length, done = c
            key, act_key, step_key = jax.random.split(key, 3)
            action = policy(params, obs_stats, obs, act_key, deterministic)
            obs, state, reward, terminated, truncated, _ = venv.step(step_key, state, action, env_params)
            active = ~done
            ret = ret + jnp.where(active, reward.astype(jnp.float32), 0.0)
            length = length + active.astype(jnp.int32)
            done = done | terminated | truncated
            return t + 1, state, obs, key, ret, length, done

        _, _, _, _, ret, length, done = jax.lax.while_loop(cond, body, carry)
        return ret, length, done

    ret, length, done = jax.jit(jax.vmap(one_run))(params, obs_stats, keys)
    return EpisodeResults(np.asarray(ret), np.asarray(length), np.asarray(done))


def summarize(results: EpisodeResults, seeds: Sequence[int]) -> dict[str, Any]:
    """Mean return with 95% bootstrap CIs: per run over episodes, overall over runs."""
    from rl import stats

    per_run = []
    for seed, ret, fin in zip(seeds, results.returns, results.finished, strict=True):
        low, high = stats.bootstrap_ci(ret.astype(np.float64))
        per_run.append({
            "seed": int(seed), "mean_return": float(ret.mean()), "ci95": [low, high],
            "std_return": float(ret.std()), "episodes": int(ret.size),
            "unfinished_episodes": int((~fin).sum()),
        })
    means = np.array([r["mean_return"] for r in per_run])
    overall = {"mean_return": float(means.mean()), "ci95": list(stats.bootstrap_ci(means)),
               "ci_over": "runs" if len(per_run) > 1 else "episodes"}
    if len(per_run) == 1:
        overall["ci95"] = per_run[0]["ci95"]
    return {"per_run": per_run, "overall": overall}


def render_gif(
    act: Callable[..., Any], env: Any, env_params: Any, key: Any, path: str | Path,
    deterministic: bool = True, max_frames: int = 300,
) -> str | None:
    """Animate one episode of ``act(obs, key, deterministic)`` to ``path`` (a GIF).

    Returns None on success, else the reason the env cannot be drawn here.
    """
    name = getattr(env, "name", type(env).__name__)
    if name not in GIF_ENVS:
        return (f"gymnax's visualizer cannot draw {name}; it draws {', '.join(GIF_ENVS)}")
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

    for name, minimum in (("episodes", 1), ("seed", 0), ("gif_max_frames", 1)):
        value = getattr(args, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise UsageError(f"--{name.replace('_', '-')} must be an integer >= {minimum}, got {value!r}")
    if args.max_steps is not None and args.max_steps < 1:
        raise UsageError(f"--max-steps must be a positive integer, got {args.max_steps}")
    try:
        loaded = agents.load(args.run_dir, run=args.run)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from None
    runs = [loaded.run] if args.run is not None else list(range(len(loaded.seeds)))
    pick = lambda tree: None if tree is None else jax.tree.map(lambda x: x[np.array(runs)], tree)  # noqa: E731
    max_steps = args.max_steps or default_max_steps(loaded.env_params)
    deterministic = not args.stochastic
    keys = jax.random.split(jax.random.key(args.seed), len(runs))
    results = play_episodes(loaded.policy, pick(loaded.all_params), pick(loaded.all_obs_stats), loaded.env,
                            loaded.env_params, keys, args.episodes, deterministic, max_steps)
    report = {
        "run_dir": str(args.run_dir), "agent": loaded.agent, "env": loaded.env_id,
        "policy": "stochastic" if args.stochastic else "greedy", "episodes_per_run": args.episodes,
        "checkpoint_update": loaded.update, "max_steps": max_steps,
        **summarize(results, [loaded.seeds[r] for r in runs]),
    }
    if args.gif is not None:
        first = agents.load(args.run_dir, run=runs[0])
        reason = render_gif(first.act, first.env, first.env_params, jax.random.key(args.seed), args.gif,
                            deterministic, args.gif_max_frames)
        report["gif"] = None if reason else str(args.gif)
        report["gif_skipped"] = reason
    if args.out is not None:
        write_json(Path(args.out), report)
    print_report(report)
    return report


def print_report(r: dict[str, Any]) -> None:
    lines = [f"{r['agent']} on {r['env']}: {r['policy']} policy, {r['episodes_per_run']} episodes per run, "
             f"checkpoint at update {r['checkpoint_update']}"]
    for run in r["per_run"]:
        low, high = run["ci95"]
        unfinished = f", {run['unfinished_episodes']} unfinished after {r['max_steps']} steps" \
            if run["unfinished_episodes"] else ""
        lines.append(f"  seed {run['seed']}: mean return {run['mean_return']:.2f} "
                     f"(95% CI {low:.2f} .. {high:.2f}){unfinished}")
    if len(r["per_run"]) > 1:
        o = r["overall"]
        lines.append(f"  all {len(r['per_run'])} seeds: mean return {o['mean_return']:.2f} "
                     f"(95% CI over seeds {o['ci95'][0]:.2f} .. {o['ci95'][1]:.2f})")
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


if __name__ == "__main__":
    raise SystemExit(main())
