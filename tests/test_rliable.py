"""``rl.host.stats`` against rliable 1.2, the reference code of Agarwal et al. (NeurIPS 2021), on fixed data.

What must agree, and how closely:

* the interquartile mean: exactly (both are ``scipy.stats.trim_mean(x, 0.25)`` of the pooled
  scores; ``rl.host.aggregate.over_seeds`` computes its own from prefix sums, so to float precision);
* the stratified percentile bootstrap, the one-task bootstrap and the performance profile, given
  the very resamples rliable drew: to float precision. rliable draws its run indices in
  ``StratifiedBootstrap.update_indices``; the tests record them and hand them to ``rl.host.stats`` in
  place of its own generator's draws, so any difference left is one of definition (what is
  resampled, which statistic, which quantile rule, ``>`` or ``>=``);
* the same intervals from independent resamples (each library's own generator): within the
  Monte-Carlo error of a bootstrap quantile (see the test), which a bootstrap that ignores the
  strata misses by far.

rliable draws from NumPy's global random state (``np.random.choice``), whatever ``random_state``
it is given; the fixture below seeds that state and puts it back afterwards.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.stats

from rl.host import aggregate, scores, stats

rliable = pytest.importorskip("rliable", reason="rliable is in the test extra: pip install -e '.[test]'")
from rliable import library as rly  # noqa: E402
from rliable import metrics  # noqa: E402


def fixed_scores() -> np.ndarray:
    """``[10 runs, 5 tasks]`` skewed scores on task scales 0.2 .. 4, rounded to 0.1 so values tie."""
    rng = np.random.default_rng(2021)
    scales = np.array([0.2, 0.5, 1.0, 2.0, 4.0])
    return np.round(rng.gamma(2.0, size=(10, 5)) * scales, 1)


@pytest.fixture
def global_numpy_seed():
    """Seed NumPy's global random state (rliable's source of randomness) and restore it afterwards."""
    saved = np.random.get_state()
    np.random.seed(0)
    try:
        yield
    finally:
        np.random.set_state(saved)


@pytest.fixture
def rliable_draws(monkeypatch, global_numpy_seed):
    """Record rliable's run indices, and make ``rl.host.stats`` resample with them instead of its own.

    Yields the list the draws are appended to (one ``[runs, tasks]`` array per resample).
    """
    draws: list[np.ndarray] = []
    original = rly.StratifiedBootstrap.update_indices

    def recording(self):
        indices = original(self)
        draws.append(indices[0])
        return indices

    def replayed() -> np.ndarray:
        assert draws, "rliable drew nothing yet"
        return np.stack(draws)  # [B, runs, tasks]

    def stratified_run_index(rng, shape, num_resamples):
        run_index = replayed()
        assert run_index.shape == (num_resamples, *shape)
        return run_index

    def resample_indices(rng, num_items, num_resamples):
        run_index = replayed()  # a one-task bootstrap: [B, runs, 1]
        assert run_index.shape == (num_resamples, num_items, 1)
        return run_index[..., 0]

    monkeypatch.setattr(rly.StratifiedBootstrap, "update_indices", recording)
    monkeypatch.setattr(stats, "_stratified_run_index", stratified_run_index)
    monkeypatch.setattr(stats, "_resample_indices", resample_indices)
    return draws


def rliable_interval(scores: np.ndarray, func, reps: int) -> tuple[float, float, float]:
    """rliable's point estimate and percentile 95% interval of ``func`` over ``[runs, tasks]`` scores."""
    points, intervals = rly.get_interval_estimates(
        {"algo": scores}, lambda x: np.array([func(x)]), method="percentile", reps=reps
    )
    (low,), (high,) = intervals["algo"]
    return float(points["algo"][0]), float(low), float(high)


# ----------------------------------------------------------------------------- point estimates


@pytest.mark.parametrize("shape", [(10, 5), (7, 3), (4, 1), (1, 6), (9, 2)])
def test_iqm_is_rliable_aggregate_iqm_exactly(shape):
    # (7, 3): 21 scores, trim_mean cuts int(0.25 * 21) = 5 from each end, and so does rliable
    scores = np.random.default_rng(sum(shape)).normal(size=shape) ** 3
    assert stats.iqm(scores) == metrics.aggregate_iqm(scores)


def test_over_seeds_iqm_is_rliable_aggregate_iqm_per_update():
    # [N seeds, L updates] with NaN where no episode ended: per update, the IQM over the seeds that
    # have a value is rliable's IQM of that column's values ([runs, 1 task])
    rng = np.random.default_rng(5)
    values = rng.normal(size=(23, 12)) ** 3
    values[rng.random(values.shape) < 0.3] = np.nan
    got = aggregate.over_seeds(values)["iqm"]
    for update in range(values.shape[1]):
        column = values[:, update]
        want = metrics.aggregate_iqm(column[~np.isnan(column)][:, None])
        np.testing.assert_allclose(got[update], want, rtol=1e-12, err_msg=f"update {update}")


# ----------------------------------------------------------------------------- the same resamples


def test_stratified_bootstrap_on_rliables_resamples_is_rliables_interval(rliable_draws):
    scores = fixed_scores()
    want = rliable_interval(scores, metrics.aggregate_iqm, reps=2_000)
    assert len(rliable_draws) == 2_000  # one draw per resample, nothing else
    got = stats.stratified_bootstrap_ci(scores, statistic=stats.iqm, num_resamples=2_000)
    np.testing.assert_allclose(tuple(got), want, rtol=1e-12)
    assert got.point == want[0]


def test_statistic_evaluated_per_resample_on_rliables_resamples(rliable_draws):
    # rliable's median of the per-task mean scores: a statistic rl.host.stats evaluates once per resample
    scores = fixed_scores()
    want = rliable_interval(scores, metrics.aggregate_median, reps=500)
    got = stats.stratified_bootstrap_ci(scores, statistic=lambda m: np.median(m.mean(axis=0)), num_resamples=500)
    np.testing.assert_allclose(tuple(got), want, rtol=1e-12)


def test_one_task_bootstrap_ci_on_rliables_resamples_is_rliables_interval(rliable_draws):
    # one task: rliable's stratified bootstrap of a [runs, 1] matrix is the plain percentile
    # bootstrap over runs, which is what stats.bootstrap_ci does for one score per run
    x = fixed_scores()[:, 3]
    _, *want = rliable_interval(x[:, None], np.mean, reps=2_000)
    np.testing.assert_allclose(stats.bootstrap_ci(x, num_resamples=2_000), want, rtol=1e-12)


def test_performance_profile_on_rliables_resamples_is_rliables_profile(rliable_draws):
    scores = fixed_scores()
    # thresholds at score values (the scores tie at 0.1 steps): a run scoring exactly tau is not
    # above it; counting it (>=) moved the profile at every one of these taus
    taus = np.unique(scores)[::3]
    profiles, bands = rly.create_performance_profile({"algo": scores}, taus, reps=2_000)
    profile, low, high = stats.performance_profile(scores, taus, num_resamples=2_000)
    np.testing.assert_array_equal(profile, profiles["algo"])
    np.testing.assert_allclose(np.stack([low, high]), bands["algo"], rtol=1e-12, atol=1e-15)
    at_least = (scores[..., None] >= taus).mean(axis=(0, 1))
    assert np.all(at_least > profile)  # the difference the ties make


# ----------------------------------------------------------------------------- independent resamples


def test_stratified_bootstrap_agrees_with_rliable_within_monte_carlo_error(global_numpy_seed):
    """Independent bootstraps: each end of the interval within the Monte-Carlo error of a quantile.

    A percentile-bootstrap end is the p-quantile (p = 0.025 or 0.975) of B resampled IQMs. Where
    the bootstrap distribution has CDF F, an empirical p-quantile q from B draws has F(q) = p with
    standard deviation sqrt(p (1 - p) / B), whatever the shape of F (the order-statistic
    argument behind distribution-free quantile intervals). rliable's end q_r (B_r resamples) is
    placed in our bootstrap distribution by its empirical CDF from B_o resamples, which itself
    errs by sqrt(p (1 - p) / B_o); independent errors add in variance, so
        |F_o(q_r) - p| <= z * sqrt(p (1 - p) * (1 / B_r + 1 / B_o)),  z = 4,
    which fails by chance with probability 6e-5 per end (the seeds are fixed: it either always
    passes or never does). With B_r = 5,000 and B_o = 100,000 the band is p +- 0.009: rliable's
    2.5% end must lie between our 1.6% and 3.4% quantiles.
    """
    scores = fixed_scores()
    reps_r, reps_o, z = 5_000, 100_000, 4.0
    point, *ends_r = rliable_interval(scores, metrics.aggregate_iqm, reps=reps_r)
    got = stats.stratified_bootstrap_ci(scores, statistic=stats.iqm, num_resamples=reps_o, seed=7)
    assert got.point == point
    # our bootstrap distribution: the resamples stratified_bootstrap_ci drew with this seed
    run_index = stats._stratified_run_index(np.random.default_rng(7), scores.shape, reps_o)
    estimates = np.sort(stats._stratified_estimates(scores, run_index, stats.iqm))
    assert stats._percentile_interval(estimates, 0.95) == (got.low, got.high)

    def position(value: float) -> float:
        """Empirical CDF of our estimates at `value`, ties counted half (the IQMs take few values)."""
        return (np.searchsorted(estimates, value, "left") + np.searchsorted(estimates, value, "right")) / 2 / reps_o

    def within_error(value: float, p: float) -> bool:
        return abs(position(value) - p) <= z * math.sqrt(p * (1 - p) * (1 / reps_r + 1 / reps_o))

    for end, p in zip(ends_r, (0.025, 0.975)):
        assert within_error(end, p), (end, p, position(end))
    # the tolerance tells the definitions apart: a bootstrap that pools the 50 scores and
    # ignores the tasks (resampling any score for any task) gives another interval on this data
    pooled = stats.bootstrap_ci(scores.ravel(), statistic=stats.iqm, num_resamples=reps_r, seed=7)
    assert not any(within_error(end, p) for end, p in zip(pooled, (0.025, 0.975))), pooled


def test_scipy_trim_mean_cut_is_floor_of_a_quarter():
    # the shared definition behind both IQMs, by hand: 6 values cut int(1.5) = 1 from each end
    x = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 100.0])
    assert scipy.stats.trim_mean(x, 0.25) == metrics.aggregate_iqm(x[:, None]) == (1 + 2 + 3 + 4) / 4


# ----------------------------------------------------------------------------- export: rl.host.scores


def write_run_folder(folder, agent, env, seeds, per_seed, hyper=None, status="completed"):
    """A run folder as far as the export reads it: config.json and summary.json as experiments.train writes them.

    (tests/test_wandb.py exports a folder written by a real training through the CLI.)
    """
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(
        json.dumps(
            {
                "agent": agent,
                "env": env,
                "seeds": list(seeds),
                "config": {"hidden_sizes": [16], "num_envs": 4},
                "hyper": hyper or {"learning_rate": 0.001},
            }
        )
    )
    (folder / "summary.json").write_text(
        json.dumps(
            {
                "agent": agent,
                "env": env,
                "status": status,
                "seeds": list(seeds),
                "final_return_per_seed": list(per_seed),
            }
        )
    )
    return folder


@pytest.fixture
def four_tasks_of_two_agents(tmp_path):
    """ppo and dqn on CartPole and Acrobot; ppo's CartPole seeds come in two folders (0-1 and 2-3)."""
    return [
        write_run_folder(tmp_path / "ppo-cp-a", "ppo", "CartPole-v1", [0, 1], [500.0, 450.0]),
        write_run_folder(tmp_path / "ppo-ab", "ppo", "Acrobot-v1", [0, 1, 2, 3], [-80.0, -90.0, -100.0, -500.0]),
        write_run_folder(tmp_path / "ppo-cp-b", "ppo", "CartPole-v1", [3, 2], [100.0, 250.0]),  # seed order 3, 2
        write_run_folder(tmp_path / "dqn-cp", "dqn", "CartPole-v1", [0, 1, 2], [200.0, 300.0, 400.0]),
        write_run_folder(tmp_path / "dqn-ab", "dqn", "Acrobot-v1", [0, 1, 2], [-200.0, -250.0, -300.0]),
    ]


def test_run_folders_become_rliables_score_dict(four_tasks_of_two_agents, tmp_path, global_numpy_seed):
    table = scores.collect(four_tasks_of_two_agents, normalize={"CartPole-v1": (0, 500), "Acrobot-v1": (-500, 0)})
    assert table.tasks == ("CartPole-v1", "Acrobot-v1")  # the order the folders gave them
    # ppo: CartPole from two folders, stacked in seed order (500, 450, 250, 100) / 500;
    # Acrobot (score + 500) / 500: (420, 410, 400, 0) / 500
    np.testing.assert_allclose(table.scores["ppo"], [[1.0, 0.84], [0.9, 0.82], [0.5, 0.8], [0.2, 0.0]])
    np.testing.assert_array_equal(table.seeds["ppo"], [[0, 0], [1, 1], [2, 2], [3, 3]])
    np.testing.assert_allclose(table.scores["dqn"], [[0.4, 0.6], [0.6, 0.5], [0.8, 0.4]])
    assert table.sources["ppo"] == [str(p) for p in np.array(four_tasks_of_two_agents)[[0, 2, 1]]]
    # the saved .npz is the score_dict itself, which rliable takes as it is
    npz, meta = table.save(tmp_path / "out" / "scores.npz")
    score_dict = dict(np.load(npz))
    assert sorted(score_dict) == ["dqn", "ppo"]
    points, intervals = rly.get_interval_estimates(score_dict, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=200)
    for name, matrix in table.scores.items():
        np.testing.assert_array_equal(score_dict[name], matrix)
        assert points[name][0] == stats.iqm(matrix) and intervals[name].shape == (2, 1)
    record = json.loads(meta.read_text())
    assert record["tasks"] == ["CartPole-v1", "Acrobot-v1"] and record["metric"] == "final_return"
    assert record["algorithms"]["dqn"]["seeds"] == [[0, 0], [1, 1], [2, 2]]
    assert record["normalize"] == {"CartPole-v1": [0.0, 500.0], "Acrobot-v1": [-500.0, 0.0]}


def test_labels_name_algorithms_and_raw_scores_by_default(tmp_path):
    a = write_run_folder(tmp_path / "a", "ppo", "CartPole-v1", [0, 1], [10.0, 20.0])
    b = write_run_folder(tmp_path / "b", "ppo", "CartPole-v1", [0, 1], [30.0, 40.0], hyper={"learning_rate": 3e-4})
    with pytest.raises(ValueError, match=r"other settings \(hyper.learning_rate \(0.001 vs 0.0003\)\).*LABEL=FOLDER"):
        scores.collect([a, b])
    table = scores.collect([f"fast={a}", ("slow", b)])
    assert table.normalize is None and table.tasks == ("CartPole-v1",)
    np.testing.assert_array_equal(table.scores["fast"], [[10.0], [20.0]])
    np.testing.assert_array_equal(table.scores["slow"], [[30.0], [40.0]])


def test_a_sweep_folder_gives_one_algorithm_per_configuration(tmp_path):
    import types

    from agents import ppo
    from rl.sweep import _plan_record, plan, summarize

    # sweep.json and summary.json from the sweep's own record and summary (what write_report writes)
    tiny = ppo.Config(num_envs=4, num_steps=8, num_minibatches=2, total_timesteps=512)
    the_plan = plan(
        ppo,
        grid={"learning_rate": [1e-3, 3e-4]},
        seeds=[5, 6],
        config=tiny,
        mesh=types.SimpleNamespace(devices=np.empty(1)),
    )
    final = np.array([[100.0, 120.0], [40.0, 60.0]])  # [configurations, seeds]
    folder = tmp_path / "sweep"
    folder.mkdir()
    record = _plan_record(the_plan, 2, types.SimpleNamespace(devices=np.array(["cpu:0"])))
    (folder / "sweep.json").write_text(json.dumps(record))
    summary = summarize(the_plan, final)
    (folder / "summary.json").write_text(json.dumps({"configurations": json.loads(summary.to_json(orient="records"))}))
    table = scores.collect([f"ppo-lr={folder}"])
    assert table.tasks == ("CartPole-v1",)
    np.testing.assert_array_equal(table.scores["ppo-lr[learning_rate=0.001]"], [[100.0], [120.0]])
    np.testing.assert_array_equal(table.scores["ppo-lr[learning_rate=0.0003]"], [[40.0], [60.0]])
    np.testing.assert_array_equal(table.seeds["ppo-lr[learning_rate=0.0003]"], [[5], [6]])
    with pytest.raises(ValueError, match="is a sweep"):
        scores.collect([folder], metric="final_eval_return")


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("missing_task", r"dqn has no scores on \['Acrobot-v1'\].*every algorithm needs every task"),
        ("unequal_runs", r"ppo has \{'CartPole-v1': 2, 'Acrobot-v1': 3\} runs per task"),
        ("no_score", r"seed\(s\) \[1\] have no score"),
        ("not_completed", r"did not complete \(status 'interrupted'\)"),
        ("repeated_seed", r"seed\(s\) \[1\] of ppo on CartPole-v1 appear in more than one"),
        ("other_metric", r"has no 'final_eval_return_per_seed'; metrics there: final_return"),
        ("normalize_missing", r"normalize needs a \(low, high\) for exactly the tasks .*missing \['Acrobot-v1'\]"),
        ("normalize_empty", r"need two finite, different numbers"),
    ],
)
def test_what_does_not_form_a_matrix_is_refused(tmp_path, case, pattern):
    cp = write_run_folder(tmp_path / "cp", "ppo", "CartPole-v1", [0, 1], [1.0, 2.0])
    ab = write_run_folder(tmp_path / "ab", "ppo", "Acrobot-v1", [0, 1], [3.0, 4.0])
    kwargs, folders = {}, [cp, ab]
    if case == "missing_task":
        folders.append(write_run_folder(tmp_path / "dqn", "dqn", "CartPole-v1", [0, 1], [5.0, 6.0]))
    elif case == "unequal_runs":
        folders[1] = write_run_folder(tmp_path / "ab3", "ppo", "Acrobot-v1", [0, 1, 2], [3.0, 4.0, 5.0])
    elif case == "no_score":
        folders[1] = write_run_folder(tmp_path / "none", "ppo", "Acrobot-v1", [0, 1], [3.0, None])
    elif case == "not_completed":
        folders[1] = write_run_folder(tmp_path / "int", "ppo", "Acrobot-v1", [0, 1], [3.0, 4.0], status="interrupted")
    elif case == "repeated_seed":
        folders.append(write_run_folder(tmp_path / "cp2", "ppo", "CartPole-v1", [1, 2], [5.0, 6.0]))
    elif case == "other_metric":
        kwargs["metric"] = "final_eval_return"
    elif case == "normalize_missing":
        kwargs["normalize"] = {"CartPole-v1": (0, 500)}
    elif case == "normalize_empty":
        kwargs["normalize"] = {"CartPole-v1": (0, 500), "Acrobot-v1": (1.0, 1.0)}
    with pytest.raises(ValueError, match=pattern):
        scores.collect(folders, **kwargs)


def test_cli_prints_iqm_and_writes_the_score_dict(four_tasks_of_two_agents, tmp_path, capsys):
    from experiments import scores as scores_cli

    out = tmp_path / "scores.npz"
    argv = [
        *map(str, four_tasks_of_two_agents),
        "--normalize",
        "CartPole-v1=0:500",
        "Acrobot-v1=-500:0",
        "--out",
        str(out),
    ]
    assert scores_cli.main(argv) == 0
    stdout = capsys.readouterr().out
    assert "final_return (normalised) on 2 task(s): CartPole-v1, Acrobot-v1" in stdout
    iqm = stats.stratified_bootstrap_ci(np.load(out)["ppo"])
    assert f"ppo: 4 runs x 2 task(s), IQM {iqm.point:.4g} (95% CI {iqm.low:.4g} .. {iqm.high:.4g})" in stdout
    assert "dqn: 3 runs x 2 task(s), IQM" in stdout and "too few for a 95% CI" in stdout
    assert out.with_suffix(".json").exists()
    # raw returns of two tasks: said to be on different scales
    assert scores_cli.main(list(map(str, four_tasks_of_two_agents))) == 0
    assert "different scales" in capsys.readouterr().out
    # bad input: one error line, exit status 2
    for bad, message in (
        (["--normalize", "CartPole-v1"], "write TASK=LOW:HIGH"),
        ([str(tmp_path / "nowhere")], "is not a folder"),
        (["--out", str(tmp_path / "s.csv")], "must end in .npz"),
    ):
        assert scores_cli.main([*map(str, four_tasks_of_two_agents), *bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
