"""RL² against Thompson sampling, UCB1 and random on held-out Bernoulli bandits (Duan et al., 2016, Table 1).

    python -m experiments.bandit_regret                        # 8 seeds, the rl2-bandit preset's budget
    python -m experiments.bandit_regret --num-seeds 4 --total-timesteps 500000

The task distribution is gymnax's BernoulliBandit-misc with its ``reward_prob`` drawn from U(0, 1)
at every trial (``envs.DomainRandomization``; the env id ``BernoulliBandit-uniform-misc``): two
arms with probabilities ``(p, 1 - p)``, ``p ~ U(0, 1)``, 100 pulls per trial (Wang et al., 2016's
"dependent arms" bandit). (gymnax's default ``reward_prob = 0.1`` gives only the two tasks
``(0.1, 0.9)`` and ``(0.9, 0.1)``, too few to hold any out.)

RL² trains on tasks drawn from the training seeds' keys; the held-out tasks are drawn once from
``--task-seed`` (never a training key: training keys come from ``jax.random.key(seed)``, these from
``jax.random.key(task_seed)`` folded with a constant) and every method plays the same tasks: the
arm probabilities each task really had (read from the env state) are given to the NumPy
references (``rl.host.bandits``). The score is the pseudo-regret after 100 pulls,
``sum_t (max_k p_k - p_{a_t})``, averaged over the tasks; RL² gets one value per training seed and
a 95% bootstrap confidence interval over seeds (``rl.host.stats.bootstrap_ci``); each reference gets
its mean over tasks with a bootstrap interval over tasks.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp
import numpy as np

import envs
import rl
from agents import rl2
from rl.host import bandits, stats

ENV_ID = "BernoulliBandit-uniform-misc"
HORIZON = 100
_TASK_STREAM = 0x7A5C  # folded into the task seed: held-out task keys never equal a training key


def held_out_tasks(num_tasks: int, task_seed: int):
    """The held-out tasks: ``(keys[N], reward_prob[N])`` of ``num_tasks`` trials."""
    key = jax.random.fold_in(jax.random.key(task_seed), _TASK_STREAM)
    prob_key, reset_key = jax.random.split(key)
    return jax.random.split(reset_key, num_tasks), jax.random.uniform(prob_key, (num_tasks,))


def rl2_regret(algo, params, keys, reward_prob, deterministic: bool = False, seed: int = 0):
    """RL²'s pseudo-regret on each held-out task over one trial of HORIZON pulls.

    Returns ``(regret f32[N], arm_probs f32[N, 2])``: the tasks' arm probabilities as the env drew
    them, for the references to play the same tasks.
    """
    env, base = envs.make("BernoulliBandit-misc")
    trials = rl2.wrap(algo.config, env)
    params_per_task = jax.vmap(lambda p: base.replace(reward_prob=p))(reward_prob)
    obs, state = jax.vmap(trials.reset)(keys, params_per_task)
    probs = state.env_state.reward_probs
    carry = algo.recurrent.initial_carry(keys.shape[0])

    def step(c, k):
        obs, state, carry = c
        act_key, env_key = jax.random.split(k)
        action, carry = algo.recurrent.act(params, carry, obs, act_key, deterministic)
        gap = probs.max(axis=1) - jnp.take_along_axis(probs, action[:, None], axis=1)[:, 0]
        obs, state, *_ = jax.vmap(trials.step)(jax.random.split(env_key, keys.shape[0]), state, action, params_per_task)
        return (obs, state, carry), gap

    step_keys = jax.random.split(jax.random.key(seed), HORIZON)
    _, gaps = jax.lax.scan(step, (obs, state, carry), step_keys)
    return gaps.sum(axis=0), probs


@dataclass(frozen=True)
class Args:
    """Settings of the regret table."""

    num_seeds: int = 8
    """training seeds of RL²"""
    seed_offset: int = 0
    """first training seed"""
    total_timesteps: int | None = None
    """env steps per seed (default: the rl2-bandit preset's)"""
    num_tasks: int = 1000
    """held-out tasks"""
    task_seed: int = 12345
    """seed of the held-out tasks"""


def preset_config_hyper(total_timesteps: int | None = None):
    """The rl2-bandit preset as (Config, Hyper)."""
    from experiments import presets

    preset = presets.get("rl2-bandit")
    config = replace(rl2.Config(), **preset.config)
    if total_timesteps is not None:
        config = replace(config, total_timesteps=total_timesteps)
    return config, rl2.Hyper(**preset.hyper)


def run(args: Args) -> str:
    config, hyper = preset_config_hyper(args.total_timesteps)
    env, env_params = envs.make(ENV_ID)
    algo = rl2.make(config, env, env_params)
    start = time.time()
    result = rl.train(algo, hyper, seeds=range(args.seed_offset, args.seed_offset + args.num_seeds))
    train_seconds = time.time() - start
    keys, reward_prob = held_out_tasks(args.num_tasks, args.task_seed)
    evaluate = jax.jit(lambda p, deterministic: rl2_regret(algo, p, keys, reward_prob, deterministic), static_argnums=1)
    rows = []
    for name, deterministic in (("RL² (sampled actions)", False), ("RL² (greedy)", True)):
        per_seed = []
        for i in range(args.num_seeds):
            regret, probs = evaluate(jax.tree.map(lambda x: x[i], result.state.params), deterministic)
            per_seed.append(float(np.mean(regret)))
        rows.append(
            (name, np.mean(per_seed), stats.bootstrap_ci(np.array(per_seed)), f"{args.num_seeds} training seeds")
        )
    probs = np.asarray(probs, np.float64)
    for name in ("thompson", "ucb1", "uniform"):
        regret = bandits.regret(name, probs, HORIZON, seed=args.task_seed)
        rows.append((_LABELS[name], regret.mean(), stats.bootstrap_ci(regret), "tasks"))
    lines = [
        f"Cumulative regret after {HORIZON} pulls on {args.num_tasks} held-out tasks of {ENV_ID} "
        f"(arms (p, 1 - p), p ~ U(0, 1)); lower is better. RL²: {config.total_timesteps:,} env steps per seed, "
        f"{args.num_seeds} seeds trained in {train_seconds:.0f} s on {_machine()}.",
        "",
        "| policy | regret (mean) | 95% CI | CI over |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {mean:.2f} | [{low:.2f}, {high:.2f}] | {over} |" for name, mean, (low, high), over in rows]
    return "\n".join(lines)


def _machine() -> str:
    device = jax.devices()[0]
    if device.platform == "cpu":
        return f"CPU ({os.cpu_count()} cores)"
    return f"{jax.device_count()} x {device.device_kind}"


_LABELS = {"thompson": "Thompson sampling (Beta(1, 1))", "ucb1": "UCB1", "uniform": "uniform random"}


def main() -> None:
    import tyro

    print(run(tyro.cli(Args)))


if __name__ == "__main__":
    main()
