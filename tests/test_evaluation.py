"""Evaluation episodes inside the jitted training program (rl/device/evaluation.py).

* hand-made policies on probe envs give the analytic evaluation return, greedy and stochastic,
  with the observation statistics of the training state applied;
* the runner reports ``eval_return`` after every ``every``-th and the last update, NaN
  elsewhere, across chunks and a resume, without touching the training: with evaluation on,
  training is bit-identical to training with it off;
* ``summary.json`` has ``final_eval_return_*`` beside ``final_return_*``, config.json the
  settings ``--resume`` reads back, and bad ``--eval-*`` flags are one error line.

Trainings are tiny; PPO compiles twice (evaluation off and on), the CLI run once more.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
import rl
from agents import ppo
from experiments import train as train_cli
from rl.device import evaluation
from rl.engine import checkpoint, runner
from rl.errors import ConfigError
from rl.host.runs import final_eval_return_summary, score_summary

pytestmark = pytest.mark.usefixtures("haiku_init_allows_rank_promotion")


class ParamsOnly(NamedTuple):
    """The least a training state must have for evaluation: ``params``."""

    params: Any


class WithStats(NamedTuple):
    """A state whose env_state holds observation statistics (as PPO's with normalize_obs)."""

    params: Any
    env_state: Any


def run_eval(env_id: str, act, state: Any, **config) -> dict[str, float]:
    env, env_params = envs.make(env_id)
    evaluated = evaluation.make_evaluation(act, env, env_params, evaluation.EvalConfig(every=1, **config))
    return {k: float(v) for k, v in jax.jit(evaluated.evaluate)(state).items()}


# ------------------------------------------------------------------------------ analytic returns


def bit_policy(params, obs, key, deterministic=False):
    """Probe-ActionReward-v0 shows one-hot(bit): greedy picks the bit (r = +1), otherwise the other (r = -1)."""
    bit = jnp.argmax(obs, axis=-1)
    return jnp.where(deterministic, bit, 1 - bit)


def test_greedy_and_stochastic_modes_reach_act_as_deterministic_true_and_false():
    state = ParamsOnly(params=jnp.zeros(()))
    greedy = run_eval("Probe-ActionReward-v0", bit_policy, state, episodes=16)
    # every episode is one step with reward +1 when the action is the bit: return exactly 1
    assert greedy == {"eval_return": 1.0, "eval_length": 1.0}
    stochastic = run_eval("Probe-ActionReward-v0", bit_policy, state, episodes=16, mode="stochastic")
    assert stochastic == {"eval_return": -1.0, "eval_length": 1.0}  # the wrong action: -1 every time


def test_truncated_episodes_and_the_step_cap():
    state = ParamsOnly(params=jnp.zeros(()))
    zero = lambda params, obs, key, deterministic=False: jnp.zeros(obs.shape[:1], jnp.int32)  # noqa: E731
    # +1 per step, truncated by the time limit after 5 steps: return 5, length 5
    assert run_eval("Probe-Truncation-v0", zero, state, episodes=3) == {"eval_return": 5.0, "eval_length": 5.0}
    # capped at 3 steps: the episodes still running count their return so far
    assert run_eval("Probe-Truncation-v0", zero, state, episodes=3, max_steps=3) == {
        "eval_return": 3.0,
        "eval_length": 3.0,
    }
    env, env_params = envs.make("Probe-Truncation-v0")
    played = evaluation.play_episodes(
        lambda obs, key: jnp.zeros(obs.shape[:1], jnp.int32), env, env_params, jax.random.key(0), 4, 3
    )
    assert not np.any(played.finished) and np.all(np.asarray(played.lengths) == 3)


def test_continuous_actions_see_the_training_states_observation_statistics():
    # Probe-ContinuousAction-v0: obs ~ U[-1, 1], one step, r = -(a - obs)^2; the best action is the obs.
    stats = envs.NormalizeObservationState(
        env_state=None, mean=jnp.zeros((1,)), var=jnp.full((1,), 4.0), count=jnp.float32(100.0)
    )
    undo = lambda params, obs, key, deterministic=False: params * obs  # noqa: E731  (a = 2 * obs / 2 = obs)
    # the statistics sit anywhere in the state, as NormalizeObservation's state in PPO's env_state
    normalised = run_eval("Probe-ContinuousAction-v0", undo, WithStats(jnp.float32(2.0), stats), episodes=64)
    # obs is divided by sqrt(4 + 1e-8) = 2 before act, which multiplies it by 2 again: a = obs, r = 0
    assert normalised["eval_length"] == 1.0 and abs(normalised["eval_return"]) < 1e-6
    raw = run_eval("Probe-ContinuousAction-v0", undo, ParamsOnly(params=jnp.float32(2.0)), episodes=64)
    # without statistics a = 2 obs, clipped to the Box [-1, 1] as in training: r = -obs^2 for |obs| <= 1/2,
    # -(1 - |obs|)^2 above; its mean over U[-1, 1] is -(1/24 + 1/24) = -1/12 (64 episodes: standard error 0.01)
    assert raw["eval_return"] == pytest.approx(-1 / 12, abs=0.03)


# ------------------------------------------------------------------------------ schedule and runner


def test_schedule_every_kth_and_the_last_update():
    np.testing.assert_array_equal(evaluation.evaluated_updates(10, 4), [3, 7, 9])
    np.testing.assert_array_equal(evaluation.evaluated_updates(8, 4), [3, 7])
    np.testing.assert_array_equal(evaluation.evaluated_updates(5, 100), [4])
    assert evaluation.evaluated_updates(5, 0).size == 0
    # automatic: at most 5% of training's env steps, 1 to 10 evaluations
    assert evaluation.auto_every(1953, 512, 32, 200) == 279  # Pendulum, gymnax-blines: 7 evaluations
    assert evaluation.auto_every(976, 512, 32, 500) == 976  # CartPole at 500k steps: only the final one
    assert evaluation.auto_every(100_000, 10_000, 32, 500) == 10_000  # a long run: 10 evaluations


def test_automatic_episodes_cost_at_most_5_percent_of_the_budget_down_to_one():
    assert evaluation.auto_episodes(976, 512, 500) == 32  # CartPole at 500k steps: the full 32
    assert evaluation.auto_episodes(640, 500, 500) == 32  # exactly 640 episodes' worth of steps
    assert evaluation.auto_episodes(639, 500, 500) == 31  # one update less: 31 (31 x 500 <= 5% of 319,500)
    assert evaluation.auto_episodes(195, 512, 500) == 9  # CartPole at 100k steps
    assert evaluation.auto_episodes(400, 16, 500) == 1  # 6,400 steps: one episode, never none
    assert evaluation.auto_episodes(1, 1, 10_000) == 1
    for updates, steps, limit in [(976, 512, 500), (195, 512, 500), (1953, 512, 200), (300, 128, 1_000)]:
        episodes, budget = evaluation.auto_episodes(updates, steps, limit), 0.05 * updates * steps
        assert episodes * limit <= budget  # within 5% of the training's env steps ...
        assert episodes == 32 or (episodes + 1) * limit > budget  # ... and as many as that affords, up to 32


def test_resolve_fills_episodes_from_the_budget_and_keeps_what_is_given():
    env, env_params = envs.make("CartPole-v1")
    tiny = ppo.make(ppo.Config(num_envs=1, num_steps=16, total_timesteps=6_400), env, env_params)
    config = evaluation.resolve(evaluation.EvalConfig(), tiny, env, env_params)
    assert (config.episodes, config.every, config.max_steps) == (1, 400, 500)
    given = evaluation.resolve(evaluation.EvalConfig(episodes=8, every=0), tiny, env, env_params)
    assert (given.episodes, given.every) == (8, 0)
    full = ppo.make(ppo.Config(num_envs=4, num_steps=128, total_timesteps=500_000), env, env_params)
    assert evaluation.with_evaluation(full, env, env_params, evaluation.EvalConfig()).evaluation.config.episodes == 32
    # one run's count depends on its own budget, not on how many runs train beside it
    assert evaluation.with_evaluation(tiny, env, env_params, evaluation.EvalConfig()).evaluation.config.episodes == 1


class Toy(NamedTuple):
    params: jax.Array  # f32[]
    key: jax.Array


def toy_algorithm(num_updates: int, every: int) -> runner.Algorithm:
    """A random walk; its 'evaluation' reports the parameter, so what is evaluated is checkable."""

    def init(key, hyper):
        return Toy(jnp.float32(0.0), key)

    def update(state, hyper):
        key, step_key = jax.random.split(state.key)
        params = state.params + jax.random.normal(step_key)
        return Toy(params, key), {"loss": params**2, "episode_return": params, "episodes": jnp.int32(1)}

    config = evaluation.EvalConfig(every=every)
    run = lambda params: {"eval_return": params, "eval_length": jnp.float32(1.0)}  # noqa: E731
    return runner.Algorithm(
        init,
        update,
        lambda p, o, k, d=False: o,
        1,
        num_updates,
        "toy",
        None,
        evaluation.Evaluation(every, lambda state: state.params, run, config),
    )


def test_runner_evaluates_the_state_after_due_updates_across_chunks_and_a_resume(tmp_path):
    algo, keys, hyper = toy_algorithm(12, 5), runner.seed_keys([0, 1]), {"lr": jnp.zeros((2,))}
    full = runner.run_batch(algo, keys, hyper, num_chunks=4)  # chunks of 3: evaluations at 4, 9, 11
    ret = full.metrics["eval_return"]
    due = np.zeros(12, bool)
    due[[4, 9, 11]] = True
    assert np.all(np.isnan(ret[:, ~due]))
    # the state after the update is evaluated: the parameter the update reported
    np.testing.assert_array_equal(ret[:, due], full.metrics["episode_return"][:, due])
    off = runner.run_batch(algo._replace(evaluation=None), keys, hyper, num_chunks=4)
    assert "eval_return" not in off.metrics
    np.testing.assert_array_equal(off.metrics["episode_return"], full.metrics["episode_return"])
    reports: list = []
    with checkpoint.Checkpointer(tmp_path / "ckpt", every=1) as ckpt:
        part = runner.run_batch(
            algo,
            keys,
            hyper,
            num_chunks=4,
            checkpointer=ckpt,
            on_chunk=reports.append,
            should_stop=lambda: len(reports) >= 1,
        )
    assert part.status == "interrupted" and part.num_updates < 12
    with checkpoint.Checkpointer(tmp_path / "ckpt", every=1) as ckpt:
        resumed = runner.run_batch(algo, keys, hyper, num_chunks=4, checkpointer=ckpt, resume=True)
    assert resumed.start_update == part.num_updates
    np.testing.assert_array_equal(resumed.metrics["eval_return"], ret)  # NaN where NaN, equal elsewhere


def test_ppo_training_is_bit_identical_with_evaluation_on_and_off(tmp_path):
    # a probe env keeps the two compiles small; what could differ is the update's program, not the env
    env, env_params = envs.make("Probe-ActionReward-v0")
    config = ppo.Config(
        num_envs=2,
        num_steps=8,
        num_minibatches=1,
        update_epochs=1,
        total_timesteps=6 * 16,
        hidden_sizes=(16,),
        normalize_obs=True,
    )
    algo = ppo.make(config, env, env_params)
    evaluated = evaluation.with_evaluation(algo, env, env_params, evaluation.EvalConfig(every=4, episodes=4))
    off = rl.train(algo, ppo.Hyper(), seeds=[0, 1], num_chunks=3)  # 6 updates in chunks of 2
    on = rl.train(evaluated, ppo.Hyper(), seeds=[0, 1], num_chunks=3)
    for name, values in off.metrics.items():
        np.testing.assert_array_equal(on.metrics[name], values, err_msg=name)
    key_data = lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x  # noqa: E731
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(key_data(a), key_data(b)), off.state, on.state)
    # evaluated after updates 3 (in the second chunk) and 5 (the last), NaN elsewhere
    ret, length = on.metrics["eval_return"], on.metrics["eval_length"]
    assert np.all(np.isfinite(ret[:, [3, 5]])) and np.all(np.isnan(ret[:, [0, 1, 2, 4]]))
    assert np.all(length[:, [3, 5]] == 1) and np.all(np.abs(ret[:, [3, 5]]) <= 1)  # one step, r = +-1
    # the last evaluation is the final policy's, on the same start states as an evaluation afterwards
    final = jax.jit(jax.vmap(evaluated.evaluation.evaluate))(on.state)
    np.testing.assert_allclose(ret[:, 5], np.asarray(final["eval_return"]), rtol=1e-6)
    # result.save puts it in summary.json beside the final return, as the CLI does
    summary = json.loads((on.save(tmp_path / "saved", env="Probe-ActionReward-v0") / "summary.json").read_text())
    assert summary["final_eval_return_per_seed"] == ret[:, 5].tolist() and "final_return_per_seed" in summary
    assert summary["eval"]["final_update"] == 5 and summary["eval"]["every"] == 4


# ------------------------------------------------------------------------------ summaries and the CLI


def test_final_eval_return_summary_has_the_final_return_fields():
    eval_return = np.array(
        [[np.nan, 10.0, np.nan], [np.nan, 20.0, np.nan], [np.nan, 30.0, np.nan], [np.nan, 40.0, np.nan]]
    )
    evaluated = evaluation.Evaluation(2, lambda s: s, lambda s: {}, evaluation.EvalConfig(every=2, episodes=8))
    summary = final_eval_return_summary(eval_return, evaluated)
    assert summary["final_eval_return_per_seed"] == [10.0, 20.0, 30.0, 40.0]
    assert summary["final_eval_return_mean"] == 25.0
    low, high = summary["final_eval_return_ci95"]
    assert 10.0 <= low < 25.0 < high <= 40.0
    assert summary["eval"] == {
        "every": 2,
        "episodes": 8,
        "mode": "greedy",
        "seed": 0,
        "max_steps": None,
        "final_update": 1,
    }
    few = score_summary(np.array([1.0, np.nan]), "final_eval_return")
    assert few["final_eval_return_per_seed"] == [1.0, None] and few["final_eval_return_ci95"] is None
    assert few["final_eval_return_range"] == [1.0, 1.0] and "too few" in few["final_eval_return_ci95_note"]


TINY = [
    "ppo",
    "--env",
    "CartPole-v1",
    "--num-seeds",
    "2",
    "--num-envs",
    "2",
    "--num-steps",
    "8",
    "--num-minibatches",
    "1",
    "--update-epochs",
    "1",
    "--total-timesteps",
    "48",
    "--hidden-sizes",
    "16",
    "--num-chunks",
    "2",
    "--progress",
    "False",
]  # 3 updates


def run_main(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = train_cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def test_cli_default_evaluates_the_final_policy_into_summary_and_config(tmp_path):
    out = tmp_path / "run"
    code, stdout, stderr = run_main([*TINY, "--out", str(out)])
    assert code == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    config = json.loads((out / "config.json").read_text())
    # a tiny budget (48 steps): one episode per seed, evaluated only after the last of the 3 updates
    assert config["eval"] == {"every": 3, "episodes": 1, "mode": "greedy", "seed": 0}
    assert summary["eval"]["final_update"] == 2 and summary["eval"]["max_steps"] == 500
    per_seed = summary["final_eval_return_per_seed"]
    assert len(per_seed) == 2 and all(1.0 <= x <= 500.0 for x in per_seed)
    assert summary["final_eval_return_mean"] == pytest.approx(np.mean(per_seed))
    assert "final_eval_return_range" in summary and "final_return_mean" in summary  # 2 seeds: a range
    assert "eval return (greedy, 1 episode per seed)" in stdout and "eval per seed:" in stdout
    rows = (out / "metrics.csv").read_text().splitlines()
    column = rows[0].split(",").index("eval_return")
    cells = [row.split(",")[column] for row in rows[1:]]  # seed-major: updates 0, 1, 2 of each seed
    assert cells[0] == cells[1] == cells[3] == cells[4] == "" and cells[2] and cells[5]
    # --resume reads the settings back as they were resolved
    _, args = train_cli.load_run_config(out)
    assert (args.eval_every, args.eval_episodes, args.eval_mode, args.eval_seed) == (3, 1, "greedy", 0)


def test_run_folder_from_before_evaluation_resumes_without_it(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    config = {
        "agent": "ppo",
        "env": "CartPole-v1",
        "seeds": [0, 1],
        "num_chunks": 2,
        "config": dataclasses.asdict(ppo.Config()),
        "hyper": dataclasses.asdict(ppo.Hyper()),
    }
    (out / "config.json").write_text(json.dumps(config))
    _, args = train_cli.load_run_config(out)
    assert args.eval_every == 0


@pytest.mark.parametrize(
    "flags, field",
    [
        (["--eval-every", "-1"], "eval_every"),
        (["--eval-episodes", "0"], "eval_episodes"),
        (["--eval-seed", "-3"], "eval_seed"),
        (["--eval-mode", "best"], "--eval-mode"),
        # 512 seeds x 2**24 episodes of CartPole's 52-byte env state: 416 GiB, refused by the memory check
        (["--num-seeds", "512", "--eval-episodes", str(2**24)], "eval_episodes=16777216 is invalid: 8,589,934,592"),
    ],
)
def test_bad_eval_flags_are_one_error_line_before_anything_compiles(flags, field, tmp_path):
    code, stdout, stderr = run_main([*TINY, *flags, "--out", str(tmp_path / "x")])
    assert code == 2 and stderr.startswith("error: ") and field in stderr and stderr.count("\n") == 1
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match="eval_mode"):
        evaluation.EvalConfig(mode="best").validate()
