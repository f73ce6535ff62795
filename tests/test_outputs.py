"""What the user sees: curves, metrics, progress, CIs, help, env specs, saved runs, README.

One test (at least) per item of the issue "What the user sees":

* curve.png and the sweep's learning curves: returns binned over env steps, continuous for a
  single-env off-policy run (a real DQN run through the CLI, and SAC-like synthetic metrics);
* ``rl.train(...).metrics["episode_return"]`` is NaN where no episode ended;
* the progress line: the mean over the chunk's episodes, steps/s of running, the real chunk count;
* too few seeds for a 95% CI are said so (summary, printout, curve legend, evaluate);
* ``--help`` names every preset with its agent and env, and the grid syntax of list fields;
* an env of the user's own module through the CLI, ``agents.load`` and ``experiments.evaluate``;
* ``TrainResult.save`` writes a run folder that ``agents.load`` and ``experiments.evaluate`` read;
* README: one ``make test`` duration, self-contained snippets; curve PNGs get the usual file mode.

Trainings are tiny (a few hundred env steps); the two real agents compile once each.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import io
import json
import os
import re
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

import agents
import envs
import rl
import rl.host.runs
from envs import registry
from experiments import evaluate as evaluate_cli
from experiments import presets
from experiments import sweep as sweep_cli
from experiments import train as train_cli
from rl.engine import runner
from rl.host import plots, progress, stats

pytestmark = pytest.mark.usefixtures("haiku_init_allows_rank_promotion")

README = Path(__file__).resolve().parents[1] / "README.md"
UMASK = os.umask(0)
os.umask(UMASK)
FILE_MODE = 0o666 & ~UMASK  # what open() gives a new file

# A single-env DQN on CartPole: 972 updates of 1 env step, an episode every ~10 to 20 of them, so
# most updates complete no episode (the case whose per-update curve fell apart into spikes).
DQN_FLAGS = [
    "--eval-every",
    "0",  # evaluation episodes are tested in test_evaluation.py; here they would only compile
    "--num-seeds",
    "2",
    "--num-envs",
    "1",
    "--train-frequency",
    "1",
    "--total-timesteps",
    "972",
    "--buffer-size",
    "1000",
    "--batch-size",
    "32",
    "--learning-starts",
    "200",
    "--target-update-interval",
    "100",
    "--hidden-sizes",
    "16",
    "16",
]


def run_main(main, argv):
    """(exit code, stdout, stderr) of a CLI main."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


# ------------------------------------------------------------------------------ an env of the user's own

USER_MODULE = "user_envs_for_test_outputs"
USER_MODULE_SOURCE = '''
"""A user's module: an env class, a factory, an env object, and an id registered on import."""
import envs
from gymnax.environments.classic_control import CartPole


class MyCartPole(CartPole):
    """CartPole under another name: nothing in the package knows it."""


def make_env():
    return MyCartPole()


ENV = MyCartPole()
if "MyCartPole-v0" not in envs.registered_ids():  # a module may be imported again
    envs.register("MyCartPole-v0", make_env)
'''


@pytest.fixture(scope="module")
def user_module(tmp_path_factory):
    """The module above, importable like a file in the current folder; forgotten afterwards."""
    folder = tmp_path_factory.mktemp("user_code")
    (folder / f"{USER_MODULE}.py").write_text(USER_MODULE_SOURCE)
    saved_registry, saved_path = dict(registry._own_registry), list(sys.path)
    sys.path.insert(0, str(folder))
    try:
        yield USER_MODULE
    finally:
        sys.path[:] = saved_path
        registry._own_registry.clear()
        registry._own_registry.update(saved_registry)
        sys.modules.pop(USER_MODULE, None)


def test_env_spec_forms_and_errors(user_module):
    for spec in (
        f"{user_module}:MyCartPole",
        f"{user_module}:make_env",
        f"{user_module}:ENV",
        f"{user_module}:MyCartPole-v0",
    ):
        env, params = envs.make(spec)
        assert type(env).__name__ == "MyCartPole" and params == env.default_params, spec
    assert envs.is_spec(f"{user_module}:ENV") and not envs.is_spec("CartPole-v1")
    with pytest.raises(ValueError, match=r"unknown env id 'no_such_module_xyz:Env': cannot import module"):
        envs.make("no_such_module_xyz:Env")
    with pytest.raises(ValueError, match=r"has no attribute 'Nope' and registers no env id 'Nope'"):
        envs.make(f"{user_module}:Nope")
    with pytest.raises(ValueError, match=r"gave str, which is not a gymnax-style env"):
        envs.make("os:sep")
    with pytest.raises(ValueError, match="an env spec is MODULE:ATTRIBUTE"):
        envs.make(":MyCartPole")
    with pytest.raises(ValueError, match=r"calling os.getenv\(\) failed \(TypeError"):
        envs.make("os:getenv")
    # on the command line: one error line, before anything compiles
    code, stdout, stderr = run_main(train_cli.main, ["ppo", "--env", "no_such_module_xyz:Env"])
    assert code == 2 and stdout == "" and stderr.startswith("error: unknown env id 'no_such_module_xyz:Env'")


# ------------------------------------------------------------------------------ a real single-env off-policy run


# the tests of the one DQN run share a worker under pytest-xdist, so it trains once
DQN_RUN_GROUP = pytest.mark.xdist_group("test_outputs_dqn_cli_run")


@pytest.fixture(scope="module")
def dqn_cli_run(tmp_path_factory, user_module):
    """DQN with one env per seed on the user's own env, through the CLI: (folder, stdout, stderr)."""
    base = tmp_path_factory.mktemp("dqn")
    cwd = os.getcwd()
    os.chdir(base)  # no --out: the run folder is named runs/<stamp>-dqn-<env>
    try:
        with jax.numpy_rank_promotion("allow"):
            code, stdout, stderr = run_main(train_cli.main, ["dqn", "--env", f"{user_module}:MyCartPole", *DQN_FLAGS])
    finally:
        os.chdir(cwd)
    assert code == 0, stderr
    (run_dir,) = (base / "runs").iterdir()
    return run_dir.resolve(), stdout, stderr


@DQN_RUN_GROUP
def test_cli_curve_of_a_single_env_off_policy_run_is_continuous(dqn_cli_run):
    run_dir, _, _ = dqn_cli_run
    frame = pd.read_csv(run_dir / "metrics.csv")
    returns = frame.pivot(index="seed", columns="update", values="episode_return").to_numpy()
    episodes = frame.pivot(index="seed", columns="update", values="episodes").to_numpy()
    env_steps = np.sort(frame["env_steps"].unique())
    # per update, most entries are missing, and a curve drawn per update would be broken up
    assert np.isnan(returns).mean() > 0.8
    figure, curve = plots.learning_curve_figure(env_steps, returns, episodes, "dqn")
    (line, *_) = figure.axes[0].lines
    y = np.asarray(line.get_ydata(), dtype=np.float64)
    # binned over env steps: one unbroken line through every bin, across the whole run
    assert np.all(np.isfinite(curve.mean)) and len(y) == len(curve.mean) >= 10 and np.all(np.isfinite(y))
    assert curve.env_steps[0] < 0.1 * env_steps[-1] and curve.env_steps[-1] > 0.9 * env_steps[-1]
    # the bins hold every episode: the episode-weighted mean over bins is the mean over episodes
    np.testing.assert_allclose(
        np.nansum(curve.runs * curve.counts, axis=1) / curve.counts.sum(axis=1),
        np.nansum(returns * episodes, axis=1) / episodes.sum(axis=1),
    )
    png = run_dir / "curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_mode & 0o777 == FILE_MODE


@DQN_RUN_GROUP
def test_cli_progress_banner_summary_and_env_spec(dqn_cli_run):
    run_dir, stdout, _ = dqn_cli_run
    # --num-chunks 20 (the default) over 972 updates: 18 equal chunks of 54 are used, and said
    assert runner.chunk_schedule(972, 20) == [54] * 18 and runner.chunk_schedule(96, 20) == [6] * 16
    assert "972 updates in 18 chunk(s)" in stdout
    lines = [line for line in stdout.splitlines() if line.startswith("[")]
    assert len(lines) == 18
    # the return is the mean of the chunk's completed episodes (2 seeds x 54 steps: several);
    # the last update of a chunk alone ends an episode about 1 time in 10
    shown = [re.search(r"return (\S+)$", line).group(1) for line in lines]
    assert all(value != "n/a" for value in shown), shown
    # the run folder stores the env spec; its name replaces the colon
    assert run_dir.name.endswith(f"-dqn-{USER_MODULE}_MyCartPole")
    assert json.loads((run_dir / "config.json").read_text())["env"] == f"{USER_MODULE}:MyCartPole"
    # 2 seeds: no 95% CI claimed, the range and the reason instead
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_return_ci95"] is None and "too few" in summary["final_return_ci95_note"]
    low, high = summary["final_return_range"]
    assert low == min(summary["final_return_per_seed"]) and high == max(summary["final_return_per_seed"])
    assert "too few seeds for a 95% CI" in stdout and "95% CI" not in stdout.replace("for a 95% CI", "")


@DQN_RUN_GROUP
def test_cli_run_of_a_user_env_loads_and_evaluates(dqn_cli_run, user_module):
    run_dir, _, _ = dqn_cli_run
    policy = agents.load(run_dir, seed=1)
    assert type(policy.env).__name__ == "MyCartPole" and policy.env_id == f"{user_module}:MyCartPole"
    code, stdout, stderr = run_main(evaluate_cli.main, [str(run_dir), "--episodes", "3"])
    assert code == 0, stderr
    assert "all 2 seeds: mean return" in stdout and "too few seeds for a 95% CI over seeds" in stdout


# ------------------------------------------------------------------------------ NaN where no episode ended


def alternating_algorithm(num_updates: int = 8) -> runner.Algorithm:
    """An episode of return 10 + u ends at every odd update u; none at even ones."""
    import jax.numpy as jnp

    def init(key, hyper):
        return {"params": jnp.zeros(()), "u": jnp.int32(0)}

    def update(state, hyper):
        u = state["u"]
        ended = (u % 2 == 1).astype(jnp.int32)
        metrics = {
            "episode_return": jnp.where(ended > 0, 10.0 + u, 0.0).astype(jnp.float32),
            "episode_length": ended.astype(jnp.float32) * 5.0,
            "episodes": ended,
            "loss": jnp.float32(1.0),
        }
        return {"params": state["params"], "u": u + 1}, metrics

    return runner.Algorithm(init, update, lambda p, o, k, d=False: o, 1, num_updates, "toy", None)


def test_train_metrics_are_nan_where_no_episode_ended():
    result = rl.train(alternating_algorithm(), {"lr": 0.1}, seeds=[0, 1], num_chunks=2)
    ret, length, count = (result.metrics[k] for k in ("episode_return", "episode_length", "episodes"))
    assert ret.shape == (2, 8) and ret.dtype == np.float32
    assert np.all(np.isnan(ret[:, ::2])) and np.all(np.isnan(length[:, ::2])) and np.all(count[:, ::2] == 0)
    np.testing.assert_array_equal(ret[:, 1::2], [[11, 13, 15, 17]] * 2)
    np.testing.assert_array_equal(result.metrics["loss"], 1.0)  # other metrics untouched
    # a naive mean now says "not a measurement" instead of averaging in fake zeros; masked means work
    assert np.isnan(ret.mean())
    assert np.nanmean(ret) == 14.0 and stats.mean_over_episodes(ret, count) == 14.0
    # the consumers: final return of the last half (updates 4..7: returns 15 and 17) and the sinks
    np.testing.assert_array_equal(stats.final_return(ret, count, fraction=0.5), [16.0, 16.0])
    assert result.seeds == [0, 1] and result.algo.name == "toy"


def test_mean_over_episodes_weights_by_episodes():
    ret = np.array([[2.0, np.nan, 4.0], [10.0, 0.0, np.nan]])
    count = np.array([[1, 0, 3], [1, 0, 0]])
    # (1 * 2 + 3 * 4 + 1 * 10) / (1 + 3 + 1) = 24 / 5
    assert stats.mean_over_episodes(ret, count) == pytest.approx(24 / 5)
    assert np.isnan(stats.mean_over_episodes(ret, np.zeros_like(count)))


# ------------------------------------------------------------------------------ curves


def test_binning_hand_example():
    env_steps = np.array([10.0, 20, 30, 40, 50, 60])
    values = np.array([[1.0, np.nan, 3, np.nan, 5, 7], [2.0, 2, np.nan, np.nan, np.nan, np.nan]])
    counts = np.array([[1, 0, 2, 0, 1, 1], [1, 1, 0, 0, 0, 0]])
    centres, binned, bin_counts = stats.bin_over_env_steps(env_steps, values, counts, num_bins=3)
    # bins of updates {0, 1}, {2, 3}, {4, 5}: steps 0..20, 20..40, 40..60 -> centres 10, 30, 50
    np.testing.assert_array_equal(centres, [10.0, 30.0, 50.0])
    # run 0: 1; (2 * 3) / 2 = 3; (5 + 7) / 2 = 6.  run 1: (2 + 2) / 2 = 2, then no episode
    np.testing.assert_array_equal(binned[0], [1.0, 3.0, 6.0])
    np.testing.assert_array_equal(binned[1, 0], 2.0)
    assert np.isnan(binned[1, 1:]).all()
    np.testing.assert_array_equal(bin_counts, [[1, 2, 2], [2, 0, 0]])


def test_moving_average_ignores_nan_and_truncates_at_the_ends():
    y = np.array([1.0, np.nan, 3.0, 5.0, np.nan])
    # window 3 centred: [1], [1, 3], [3, 5], [3, 5], [5]
    np.testing.assert_allclose(stats.moving_average(y, 3), [1.0, 2.0, 4.0, 4.0, 5.0])
    np.testing.assert_array_equal(stats.moving_average(y, 1), y)


def test_sac_like_run_with_one_episode_every_200_updates_gets_a_curve(tmp_path):
    # SAC on Pendulum with one env: one update per env step, one 200-step episode per 200 updates.
    num_runs, num_updates = 4, 4_000
    env_steps = np.arange(1, num_updates + 1, dtype=np.float64)
    counts = np.zeros((num_runs, num_updates), np.int32)
    counts[:, 199::200] = 1
    returns = np.where(counts > 0, -1500.0 + 0.3 * env_steps + np.arange(num_runs)[:, None], np.nan)
    # per update, every defined point sits between NaNs: a line through them draws nothing
    per_update, _, _ = stats.curve_mean_ci(returns, counts)
    finite = np.isfinite(per_update)
    assert not np.any(finite[1:] & finite[:-1])
    figure, curve = plots.learning_curve_figure(env_steps, returns, counts, "sac", smooth=3)
    # 20 episodes per run -> 10 bins of 2 episodes, all defined; raw, smoothed and the band drawn
    assert len(curve.mean) == 10 and np.all(np.isfinite(curve.mean)) and np.all(np.isfinite(curve.smoothed))
    assert [len(line.get_ydata()) for line in figure.axes[0].lines] == [10, 10]
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert legend == ["mean of 4 runs, per bin", "the same, smoothed over 3 bins", "95% bootstrap CI over the 4 runs"]
    assert np.all(np.diff(curve.mean) > 0)  # the trend survives binning
    path = plots.plot_learning_curve(tmp_path / "curve.png", env_steps, returns, counts, "sac")
    assert path.stat().st_mode & 0o777 == FILE_MODE


def test_sweep_learning_curves_are_binned(tmp_path, monkeypatch):
    drawn = {}
    real = plots.plot_curves

    def capture(path, curves, *args, **kwargs):
        drawn[Path(path).name] = (curves, kwargs)
        return real(path, curves, *args, **kwargs)

    monkeypatch.setattr(plots, "plot_curves", capture)
    config = agents.get("dqn").Config(
        num_envs=1,
        train_frequency=10,
        total_timesteps=600,
        buffer_size=500,
        batch_size=16,
        learning_starts=100,
        target_update_interval=100,
        hidden_sizes=(8,),
    )
    rl.sweep(
        agents.get("dqn"),
        "CartPole-v1",
        grid={"learning_rate": [1e-3, 3e-4]},
        seeds=2,
        config=config,
        out=tmp_path / "sweep",
        progress=False,
        verbose=False,
        num_chunks=2,
    )
    curves, kwargs = drawn["learning_curves.png"]
    assert len(curves) == 2
    for _, mean, _, _ in curves.values():
        assert len(mean) >= 5 and np.all(np.isfinite(mean))  # per update it would be mostly NaN
    assert "too few for a 95% CI" in kwargs["title"]


# ------------------------------------------------------------------------------ progress


def test_progress_rate_counts_running_time_only(capsys):
    import time

    with progress.Progress(total_env_steps=1_000, num_runs=4) as bar:
        time.sleep(0.2)  # "compiling": not part of the rate when run_seconds is given
        bar.advance(500, mean_return=float("nan"), run_seconds=0.5)
        bar.advance(500, mean_return=12.5, run_seconds=1.0)
    first, second = capsys.readouterr().out.splitlines()
    # 4 runs x 500 steps / 0.5 s = 4,000 steps/s; then 4 x 1,000 / 1.0 s = 4,000 steps/s
    assert "| 4,000 steps/s | return n/a" in first and "| 4,000 steps/s | return 12.50" in second


# ------------------------------------------------------------------------------ too few seeds for a CI


@pytest.mark.parametrize("n", [1, 2, 3])
def test_bootstrap_interval_of_up_to_3_values_is_their_range(n):
    values = np.array([3.0, 7.0, 4.0])[:n]
    assert stats.bootstrap_ci(values) == (values.min(), values.max())
    assert "too few for a 95% CI" in stats.too_few_for_ci(n)


def test_enough_seeds_for_a_ci():
    assert stats.too_few_for_ci(stats.MIN_RUNS_FOR_CI) is None
    values = np.arange(8.0)
    low, high = stats.bootstrap_ci(values)
    assert values.min() < low < high < values.max()  # from 4 on, an interval inside the range
    summary = rl.host.runs.final_return_summary(np.tile(values[:, None], (1, 20)), np.ones((8, 20)))
    assert summary["final_return_ci95"] == [low, high] and "final_return_ci95_note" not in summary


# ------------------------------------------------------------------------------ --help


def test_help_names_every_preset_with_agent_and_env(capsys):
    with pytest.raises(SystemExit) as exit_:
        train_cli.main(["sac", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for preset in presets.PRESETS.values():
        assert re.search(rf"{re.escape(preset.name)}\s+{preset.agent} on {re.escape(preset.env)}\n", text), preset.name
    with pytest.raises(SystemExit):
        train_cli.main(["--help"])
    text = capsys.readouterr().out
    assert all(name in text for name in presets.PRESETS)


def test_sweep_help_documents_the_grid_syntax_of_list_fields(capsys):
    with pytest.raises(SystemExit) as exit_:
        sweep_cli.parse(["ppo", "--help"])
    assert exit_.value.code == 0
    text = re.sub(r"[\s│]+", " ", capsys.readouterr().out)
    assert "hidden_sizes=64x64, 256x256x256" in text and "join their elements with x" in text
    assert "cleanrl-dqn-cartpole dqn on CartPole-v1" in text


# ------------------------------------------------------------------------------ TrainResult.save


def test_saved_result_is_a_run_folder_for_load_and_evaluate(tmp_path, user_module):
    from agents import ppo

    spec = f"{user_module}:MyCartPole-v0"  # MODULE:ENV_ID, registered when the module is imported
    env, env_params = envs.make(spec)
    config = ppo.Config(
        num_envs=2, num_steps=16, num_minibatches=2, update_epochs=1, total_timesteps=320, hidden_sizes=(8,)
    )
    algo = ppo.make(config, env, env_params)
    result = rl.train(algo, ppo.Hyper(), seeds=[3, 4], num_chunks=2)
    run_dir = result.save(tmp_path / "run", env=spec)

    for name in ("config.json", "metrics.csv", "metrics.jsonl", "curve.png", "params.npz", "summary.json"):
        assert (run_dir / name).is_file(), name
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["env"] == spec and saved["seeds"] == [3, 4] and saved["agent"] == "ppo"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["num_updates"] == 10
    frame = pd.read_csv(run_dir / "metrics.csv")
    assert (
        len(frame) == 2 * 10
        and frame["episode_return"].isna().sum() == np.isnan(result.metrics["episode_return"]).sum()
    )

    policy = agents.load(run_dir, seed=4)
    assert policy.update == 10 and policy.config == config
    np.testing.assert_array_equal(jax.tree.leaves(policy.params)[0], jax.tree.leaves(result.params)[0][1])
    obs, _ = policy.env.reset(jax.random.key(0), policy.env_params)
    expected = algo.act(jax.tree.map(lambda x: x[1], result.params), obs[None], jax.random.key(1), True)[0]
    assert policy.act(obs, jax.random.key(1), deterministic=True) == expected
    code, stdout, stderr = run_main(evaluate_cli.main, [str(run_dir), "--episodes", "2", "--run", "0"])
    assert code == 0, stderr
    assert f"ppo on {spec}" in stdout and "seed 3: mean return" in stdout
    assert "too few episodes for a 95% CI" in stdout  # 2 episodes: their range, said so

    with pytest.raises(ValueError, match="already exists and is not empty"):
        result.save(run_dir, env=spec)
    with pytest.raises(ValueError, match="does not fit the trained policy"):
        result.save(tmp_path / "other", env="Acrobot-v1")  # 6 observations, not 4
    assert not (tmp_path / "other").exists()


# ------------------------------------------------------------------------------ README


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def _undefined_names(source: str) -> set[str]:
    """Names a snippet loads but neither imports, assigns nor gets from builtins."""
    tree = ast.parse(source)
    bound = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - bound


def test_readme_snippets_are_self_contained_and_say_what_holds():
    text = README.read_text()
    blocks = [textwrap.dedent(b) for b in _python_blocks(text)]
    assert len(blocks) >= 2
    for i, block in enumerate(blocks):  # run in order, each block may use what the ones before bound
        assert not _undefined_names("\n".join(blocks[: i + 1])), block
    hyper_axis = next(b for b in blocks if "jnp.array([1e-4" in b)
    assert "import jax.numpy as jnp" in hyper_axis
    # one place states how long `make test` takes: the Tests section, where it was measured
    (make_test,) = [line for line in text.splitlines() if line.startswith("make test")]
    assert "minute" not in make_test, make_test
    # what the result holds where no episode ended, how to save it, env specs, too few seeds
    for needle in ("NaN", "result.save(", "MODULE:ATTRIBUTE", "too few"):
        assert needle in text, needle
