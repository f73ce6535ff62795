"""Sweeps: the search space, the run layout, bad input, and one end-to-end CLI sweep.

Everything but ``test_cli_sweep_writes_the_report`` runs without compiling
(``rl.sweep.plan`` validates and lays out runs only). The end-to-end sweep is
the issue's example at a tiny budget: 2 learning rates x 2 entropy
coefficients x 2 seeds of PPO on CartPole in one compile.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

from agents import ppo
from experiments import sweep as sweep_cli
from experiments import train as train_cli
from rl.errors import ConfigError
from rl.host import stats
from rl.sweep import Distribution, _bootstrap, _stacked_inputs, parse_spec, plan

TINY = ppo.Config(num_envs=4, num_steps=32, num_minibatches=2, update_epochs=2, total_timesteps=4096)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _mesh(n: int) -> types.SimpleNamespace:
    """Stands in for an n-device mesh: planning reads only ``mesh.devices.size``."""
    return types.SimpleNamespace(devices=np.empty(n))


# ----------------------------------------------------------------------------- the space


def test_grid_is_the_product_in_order() -> None:
    p = plan(ppo, grid={"learning_rate": "1e-4,3e-4,1e-3", "ent_coef": [0, 0.01]}, seeds=16, config=TINY)
    assert [tuple(c.values()) for c in p.configs] == [
        (1e-4, 0.0),
        (1e-4, 0.01),
        (3e-4, 0.0),
        (3e-4, 0.01),
        (1e-3, 0.0),
        (1e-3, 0.01),
    ]
    assert p.num_runs == 6 * 16
    assert len(p.groups) == 1 and p.traced == ["learning_rate", "ent_coef"] and p.static == []
    assert "one compile for all configurations x seeds" in "\n".join(p.describe())


def test_random_search_is_seeded_and_inside_its_bounds() -> None:
    kw = dict(
        sample={"learning_rate": "loguniform:1e-5:1e-2", "ent_coef": "uniform:0:0.1"}, num_samples=32, config=TINY
    )
    a, b = plan(ppo, **kw), plan(ppo, **kw)
    c = plan(ppo, **kw, sample_seed=1)
    assert a.configs == b.configs != c.configs  # every host draws the same configurations
    lr = np.array([x["learning_rate"] for x in a.configs])
    assert len(a.configs) == 32 and np.all((lr >= 1e-5) & (lr <= 1e-2))
    # log-uniform: about as many draws per decade; a uniform draw would put ~90% in the top decade
    assert np.sum(lr < 1e-3) >= 12


def test_grid_times_samples_and_choice() -> None:
    p = plan(
        ppo,
        grid={"ent_coef": [0.0, 0.01]},
        sample={"gamma": Distribution("choice", choices=(0.9, 0.99))},
        num_samples=3,
        config=TINY,
    )
    assert len(p.configs) == 6 and {c["gamma"] for c in p.configs} <= {0.9, 0.99}


def test_shape_setting_values_compile_once_each_and_say_so() -> None:
    p = plan(
        ppo,
        grid={"learning_rate": [1e-4, 1e-3], "num_envs": "4,8", "hidden_sizes": "32x32,64x64"},
        config=TINY,
        seeds=2,
    )
    assert len(p.groups) == 4
    assert {g.config.num_envs for g in p.groups} == {4, 8}
    assert {g.config.hidden_sizes for g in p.groups} == {(32, 32), (64, 64)}
    assert all(len(g.config_ids) == 2 for g in p.groups)  # the learning rates share each compile
    text = "\n".join(p.describe())
    assert "the sweep compiles 4 times, once per value" in text and "num_envs, hidden_sizes" in text


def test_runs_are_hyper_major_and_padded_with_duplicates() -> None:
    p = plan(ppo, grid={"learning_rate": [1e-4, 1e-3, 1e-2]}, seeds=[5, 6], config=TINY, mesh=_mesh(4))
    g = p.groups[0]
    assert g.num_runs == 6 and g.num_padded == 2
    assert "2 duplicate run(s) added and dropped from every output" in "\n".join(p.describe())
    keys, hypers = _stacked_inputs(g, p.seeds)
    # runs h * S + s: (1e-4, 5), (1e-4, 6), (1e-3, 5), ..., then copies of runs 0 and 1
    np.testing.assert_allclose(hypers.learning_rate, np.float32([1e-4, 1e-4, 1e-3, 1e-3, 1e-2, 1e-2, 1e-4, 1e-4]))
    np.testing.assert_array_equal(hypers.gamma, np.float32([0.99] * 8))
    expected = jax.random.key_data(jax.numpy.stack([jax.random.key(s) for s in [5, 6, 5, 6, 5, 6, 5, 6]]))
    np.testing.assert_array_equal(jax.random.key_data(keys), expected)


def test_pad_false_refuses_with_a_clear_message() -> None:
    with pytest.raises(ConfigError, match=r"do not split evenly over the 4 devices.*multiple of 4.*pad=True"):
        plan(ppo, grid={"learning_rate": [1e-4, 1e-3, 1e-2]}, seeds=1, config=TINY, mesh=_mesh(4), pad=False)
    assert plan(ppo, grid={"learning_rate": [1e-4, 1e-3]}, seeds=2, config=TINY, mesh=_mesh(4), pad=False)


def test_bootstrap_is_rl_stats_stratified_bootstrap() -> None:
    x = np.array([10.0, 200.0, 35.0, 480.0, 500.0, np.nan, 90.0])
    finite = x[np.isfinite(x)]
    for fast, slow in ((stats.iqm, stats.iqm), (np.mean, lambda m: float(np.mean(m)))):
        ours = _bootstrap(x, fast)  # NaN (no episode ended) is left out, as the summary counts it
        ref = stats.stratified_bootstrap_ci(finite, statistic=slow, num_resamples=2000, seed=0)
        np.testing.assert_allclose(tuple(ours), tuple(ref), rtol=1e-12)
    assert all(np.isnan(v) for v in _bootstrap(np.array([np.nan]), np.mean))


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (
            dict(grid={"lerning_rate": [1e-3]}),
            r"unknown hyperparameter; did you mean learning_rate\?.*"
            r"traced \(one compile\): learning_rate, gamma.*shape-setting",
        ),
        (dict(sample={"bogus": "uniform:0:1"}, num_samples=2), r"sample='bogus'.*sweepable names"),
        (dict(grid={"learning_rate": []}), r"grid learning_rate.*empty or malformed value list"),
        (dict(grid={"learning_rate": ""}), r"grid learning_rate.*empty or malformed value list"),
        (dict(grid={"learning_rate": "1e-4,,1e-3"}), r"grid learning_rate=''.*empty value"),
        (dict(grid={"learning_rate": "1e-4,fast"}), r"grid learning_rate='fast'.*finite number"),
        (dict(grid={"learning_rate": "1e-4,1e-4"}), r"lists 0.0001 twice"),
        (dict(grid={"num_envs": "4,4.5"}), r"grid num_envs='4.5'.*integer"),
        (dict(grid={"hidden_sizes": "64x,32"}), r"joined by x"),
        (dict(grid={"learning_rate": [-1.0]}), r"learning_rate=-1.0 is invalid: must be > 0"),
        (dict(grid={"num_minibatches": [3]}), r"num_minibatches=3 is invalid: must divide"),
        (dict(sample={"learning_rate": "loguniform:1e-5:1e-2"}), r"samples=None.*give samples=N"),
        (dict(num_samples=4), r"draws nothing"),
        (dict(sample={"learning_rate": "loguniform:0:1"}, num_samples=2), r"LOW > 0"),
        (dict(sample={"learning_rate": "uniform:1:0"}, num_samples=2), r"LOW < HIGH"),
        (dict(sample={"learning_rate": "gauss:0:1"}, num_samples=2), r"uniform:LOW:HIGH"),
        (dict(sample={"learning_rate": "uniform:1"}, num_samples=2), r"uniform:LOW:HIGH"),
        (dict(sample={"num_envs": "uniform:1:8"}, num_samples=2), r"use choice"),
        (dict(grid={"gamma": [0.9]}, sample={"gamma": "uniform:0.9:0.99"}, num_samples=2), r"also in the grid"),
        (dict(seeds=0), r"num_seeds=0"),
        (dict(seeds=[1, 1]), r"distinct"),
    ],
)
def test_bad_input_is_a_config_error(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        plan(ppo, config=TINY, **kwargs)


def test_spec_needs_a_name_and_values() -> None:
    assert parse_spec("learning_rate=1e-4,3e-4", "grid") == ("learning_rate", "1e-4,3e-4")
    with pytest.raises(ConfigError, match="NAME=VALUES"):
        parse_spec("learning_rate", "grid")


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["--grid", "lerning_rate=1e-4"], "error: grid='lerning_rate' is invalid: unknown hyperparameter"),
        (["--grid", "learning_rate="], "error: grid learning_rate='' is invalid: an empty or malformed value list"),
        (
            ["--grid", "learning_rate=1", "--grid", "learning_rate=2"],
            "error: grid='learning_rate' is invalid: given twice",
        ),
        (["--coordinator-address", "127.0.0.1:1"], "error: num_processes=None is invalid"),
        (["--eval-episodes", "4"], "error: --eval-episodes needs --eval-every N"),
        (["--eval-every", "2", "--eval-episodes", "0"], "error: eval_episodes=0 is invalid"),
    ],
)
def test_cli_bad_input_is_one_error_line(argv, pattern, capsys, tmp_path: Path) -> None:
    code = sweep_cli.main(["ppo", *argv, "--out", str(tmp_path / "never")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(pattern) and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "never").exists()


# ----------------------------------------------------------------------------- end to end


def test_cli_sweep_writes_the_report(tmp_path: Path, capsys) -> None:
    out = tmp_path / "sweep"
    code = sweep_cli.main(
        [
            "ppo",
            "--env",
            "CartPole-v1",
            "--num-seeds",
            "2",
            "--grid",
            "learning_rate=1e-3,1e-2",
            "--grid",
            "ent_coef=0,0.01",
            "--total-timesteps",
            "4096",
            "--num-envs",
            "4",
            "--num-steps",
            "32",
            "--num-minibatches",
            "2",
            "--update-epochs",
            "2",
            "--num-chunks",
            "2",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "4 configuration(s) x 2 seed(s) = 8 runs" in printed and "one compile" in printed
    assert "sweep env steps 32,768/32,768 (4 configs x 2 seeds x steps)" in printed  # the whole sweep's bar
    assert "best: configuration" in printed and "--preset-file" in printed

    # the tidy table: one row per configuration x seed x update, CSV and Parquet alike
    table = pd.read_parquet(out / "results.parquet")
    assert len(table) == 4 * 2 * 32
    assert list(table.columns[:6]) == ["config", "seed", "learning_rate", "ent_coef", "update", "env_steps"]
    assert "learning_rate_metric" in table.columns  # PPO's logged (annealed) rate, renamed
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"), table, check_dtype=False, atol=1e-6)
    first = table[(table.config == 3) & (table.seed == 1)]
    assert first.learning_rate.unique().tolist() == [1e-2] and first.ent_coef.unique().tolist() == [0.01]

    # per configuration: mean and IQM with CIs, ranked by IQM
    summary = pd.read_csv(out / "summary.csv")
    assert summary["rank"].tolist() == [1, 2, 3, 4] and sorted(summary.config) == [0, 1, 2, 3]
    assert (summary.iqm.diff().dropna() <= 0).all()
    assert (summary.iqm_low <= summary.iqm).all() and (summary.iqm <= summary.iqm_high).all()
    assert (summary.mean_low <= summary["mean"]).all() and (summary["mean"] <= summary.mean_high).all()
    profiles = pd.read_csv(out / "profiles.csv")
    assert set(profiles.config) == {0, 1, 2, 3} and profiles.fraction.between(0, 1).all()
    for name in ("learning_curves", "performance_profile", "final_vs_learning_rate", "final_vs_ent_coef"):
        assert (out / f"{name}.png").read_bytes()[:8] == PNG_MAGIC
    record = json.loads((out / "sweep.json").read_text())
    assert record["grid"] == {"learning_rate": [1e-3, 1e-2], "ent_coef": [0.0, 0.01]} and record["seeds"] == [0, 1]

    # the best configuration is a preset that experiments.train accepts
    best = summary.iloc[0]
    preset = out / "best_preset.json"
    agent, args = train_cli.parse(["ppo", "--preset-file", str(preset)])
    assert agent == "ppo" and args.env == "CartPole-v1"
    assert args.hyper.learning_rate == best.learning_rate and args.hyper.ent_coef == best.ent_coef
    assert args.config == TINY


def test_evaluation_episodes_score_and_rank_the_configurations() -> None:
    import rl
    from rl.device.evaluation import EvalConfig, final_eval_returns

    res = rl.sweep(
        ppo,
        grid={"learning_rate": [1e-3, 1e-2]},
        seeds=2,
        config=TINY,
        evaluation=EvalConfig(every=16, episodes=4),
        progress=False,
        verbose=False,
    )
    eval_return = np.stack([m["eval_return"] for m in res.metrics])  # [config, seed, update]
    assert np.isfinite(eval_return[..., 15]).all() and np.isnan(eval_return[..., :15]).all()  # after updates 16, 32
    expected = np.stack([final_eval_returns(m["eval_return"])[0] for m in res.metrics])
    np.testing.assert_array_equal(res.final, expected)
    assert res.extra["scored_by"] == "final evaluation return" and res.extra["final_training"].shape == (2, 2)
    best = int(np.argmax(stats.iqm(res.final, axis=1)))  # ranked by the evaluation scores
    assert res.best == best or stats.iqm(res.final[res.best]) == stats.iqm(res.final[best])


def test_library_call_matches_its_plan() -> None:
    """``rl.sweep`` is the CLI's engine; check the exported name is the function."""
    import rl

    assert callable(rl.sweep) and rl.sweep.__module__ == "rl.sweep"
    with pytest.raises(ConfigError, match="unknown hyperparameter"):
        rl.sweep(ppo, grid={"nope": [1]}, config=TINY)
