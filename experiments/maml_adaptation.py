"""MAML's 2-D navigation figure (Finn et al., 2017, fig. 4 left): return on held-out goals after
0, 1, 2, 3 policy-gradient steps, from three initialisations trained with the same env-step budget:

* ``MAML``: the meta-learned initialisation (``agents.maml``, one inner step in training);
* ``pretrained``: one policy trained on all goals together (``agents.maml`` with
  ``num_inner_steps=0``: REINFORCE on the mixed task distribution, Adam, the same budget);
* ``random``: the initialisation MAML started from, untrained.

Every inner step is one SGD step of step size ``inner_lr`` on the REINFORCE surrogate of a fresh
rollout of ``num_envs`` episodes, for all three (``agents.maml.adaptation_returns``). The held-out
goals are drawn from a key that training never uses. Prints a table (mean and 95% bootstrap CI
over seeds) and writes a plot::

    python -m experiments.maml_adaptation --seeds 8 --out runs/maml_adaptation
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import jax
import numpy as np

import envs
import rl
from agents import maml
from rl.host import plots, stats

ENV_ID = "Navigation2D-v0"
EVAL_KEY = 10**6  # the held-out goals' key: training draws its tasks from the runs' keys (seeds < EVAL_KEY)
METHODS = ("MAML", "pretrained", "random")


def compare(
    config: maml.Config,
    hyper: maml.Hyper,
    seeds: list[int],
    *,
    num_eval_tasks: int = 40,
    max_inner_steps: int = 3,
    eval_key: int = EVAL_KEY,
) -> dict[str, np.ndarray]:
    """Train MAML and the pretrained policy on ``seeds``; ``{method: [S, max_inner_steps + 1]}`` mean
    returns on ``num_eval_tasks`` held-out goals after 0..max_inner_steps inner steps."""
    env, env_params = envs.make(ENV_ID)
    configs = {"MAML": config, "pretrained": dataclasses.replace(config, num_inner_steps=0)}
    results = {name: rl.train(maml.make(c, env, env_params), hyper, seeds=seeds) for name, c in configs.items()}
    static = maml.build(config, env, env_params)
    tasks = maml.sample_tasks(static, jax.random.key(eval_key), num_eval_tasks)
    eval_keys = jax.random.split(jax.random.key(eval_key + 1), len(seeds))  # same rollouts keys for each method

    @jax.jit
    def evaluate(params, key):
        return jax.vmap(maml.adaptation_returns, in_axes=(None, 0, None, 0, None, None))(
            static, params, tasks, key, hyper, max_inner_steps
        )

    # the init MAML started from; one key at a time (vmapped orthogonal inits can hang on CPU, rl.engine.runner)
    init = jax.jit(lambda k: maml.init(static, k, hyper).params)
    random_init = jax.tree.map(lambda *x: jax.numpy.stack(x), *(init(k) for k in results["MAML"].keys))
    params = {"MAML": results["MAML"].params, "pretrained": results["pretrained"].params, "random": random_init}
    return {name: np.asarray(evaluate(params[name], eval_keys)) for name in METHODS}


def table(returns: dict[str, np.ndarray]) -> str:
    """Mean [95% CI] per method and number of inner steps, over the seeds with a finite return (a
    diverged run is left out and counted in the last column)."""
    steps = next(iter(returns.values())).shape[1]
    header = "".join(f"{f'{k} step' + ('s' if k != 1 else ''):>26}" for k in range(steps))
    lines = [f"{'method':<12}{header}  non-finite seeds"]
    for name, r in returns.items():
        cells = []
        for k in range(steps):
            x = r[np.isfinite(r[:, k]), k]
            low, high = stats.bootstrap_ci(x)
            cells.append(f"{x.mean():8.1f} [{low:7.1f}, {high:7.1f}]")
        bad = int(np.sum(~np.all(np.isfinite(r), axis=1)))
        lines.append(f"{name:<12}" + "".join(f"{c:>26}" for c in cells) + f"  {bad}")
    return "\n".join(lines)


def plot(returns: dict[str, np.ndarray], path: Path) -> Path:
    curves = {}
    for name, r in returns.items():
        r = r[np.all(np.isfinite(r), axis=1)]
        ci = np.array([stats.bootstrap_ci(r[:, k]) for k in range(r.shape[1])])
        curves[name] = (np.arange(r.shape[1]), r.mean(axis=0), ci[:, 0], ci[:, 1])
    return plots.plot_curves(
        path,
        curves,
        title=f"2-D navigation ({ENV_ID}), held-out goals",
        ylabel="return after adaptation",
        xlabel="number of policy-gradient steps",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=8, help="seeds per method")
    parser.add_argument("--meta-updates", type=int, default=100, help="MAML's meta-updates (the budget)")
    parser.add_argument("--meta-batch-size", type=int, default=20)
    parser.add_argument("--num-envs", type=int, default=20, help="episodes per task and rollout")
    parser.add_argument("--hidden", type=int, default=100, help="width of the two hidden layers")
    parser.add_argument("--learning-rate", type=float, default=1e-2, help="outer Adam step size")
    parser.add_argument("--inner-lr", type=float, default=0.1)
    parser.add_argument(
        "--inner-steps", type=int, default=1, help="inner policy-gradient steps MAML trains through (the paper: 1)"
    )
    parser.add_argument("--first-order", action="store_true")
    parser.add_argument("--eval-tasks", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("runs/maml_adaptation"))
    args = parser.parse_args(argv)
    config = maml.Config(
        meta_batch_size=args.meta_batch_size,
        num_envs=args.num_envs,
        hidden_sizes=(args.hidden, args.hidden),
        first_order=args.first_order,
        num_inner_steps=args.inner_steps,
    )
    config = dataclasses.replace(config, total_timesteps=config.steps_per_update * args.meta_updates)
    hyper = maml.Hyper(inner_lr=args.inner_lr, learning_rate=args.learning_rate)
    start = time.time()
    returns = compare(config, hyper, list(range(args.seeds)), num_eval_tasks=args.eval_tasks)
    seconds = time.time() - start
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"config": dataclasses.asdict(config), "hyper": dataclasses.asdict(hyper), "seconds": seconds}
    record["returns"] = {name: np.where(np.isfinite(r), r, None).tolist() for name, r in returns.items()}
    (args.out / "returns.json").write_text(json.dumps(record, indent=1))
    print(table(returns))
    print(f"{args.seeds} seeds, {config.total_timesteps:,} env steps per run, {seconds:.0f} s on {jax.devices()[0]}")
    path = plot(returns, args.out / "adaptation.png")
    print(f"wrote {path} and {args.out / 'returns.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
