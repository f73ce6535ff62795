"""``experiments.validate``: every preset is a valid config, and the table's own logic.

The learning figures themselves come from ``make validate``, not from tests.
"""

import pytest

from experiments import presets, validate


@pytest.mark.parametrize("name", sorted(presets.PRESETS))
def test_every_preset_builds(name):
    preset = presets.get(name)
    algo, hyper = validate.build(preset)  # validates config and hyper; nothing compiles
    assert algo.num_updates * algo.steps_per_update <= preset.config.get("total_timesteps", float("inf"))
    assert preset.source


def test_row_format_has_ci_published_and_wall_time():
    row = validate.Row(
        preset="p",
        agent="dqn",
        env="CartPole-v1",
        steps=500_000,
        num_seeds=8,
        mean=484.71,
        ci_low=470.1,
        ci_high=497.3,
        per_seed=[],
        published="498.38",
        source="src",
        seconds=90.0,
        eval_mean=500.0,
        eval_ci_low=500.0,
        eval_ci_high=500.0,
    )
    # a published figure of training episodes: the training column is the like-for-like one (bold)
    assert validate.format_row(row) == (
        "| p | dqn | CartPole-v1 | 500,000 | 8 | **484.7 [470.1, 497.3]** | 500.0 [500.0, 500.0] | 498.38 | src "
        "| 1.5 |\n"
    )
    assert validate.format_row(validate.Row(**{**row.__dict__, "mean": float("nan")})).count("no episode ended") == 1
    # a published figure of evaluation episodes: the eval column is bold; no published figure: neither
    evaluated = validate.format_row(validate.Row(**{**row.__dict__, "published_episodes": "eval"}))
    assert "| 484.7 [470.1, 497.3] | **500.0 [500.0, 500.0]** |" in evaluated
    assert "**" not in validate.format_row(validate.Row(**{**row.__dict__, "published": None}))


def test_eval_presets_are_the_ones_published_as_evaluation_episodes():
    kinds = {name: p.published_episodes for name, p in presets.PRESETS.items()}
    assert set(kinds.values()) <= {"eval", "training"}
    assert {n for n, k in kinds.items() if k == "eval"} == {
        n for n, p in presets.PRESETS.items() if p.published and "evaluation episodes" in p.published
    }
    algo, _ = validate.build(presets.get("rlzoo-sac-pendulum"))  # evaluates once, after the last update
    assert algo.evaluation.every == algo.num_updates and algo.evaluation.config.episodes == validate.EVAL_EPISODES


def test_presets_evaluate_as_their_source_and_a_reduced_budget_is_said():
    # gymnax-blines evaluates PPO with sampled actions; the validation does the same for its presets
    modes = {name: p.eval_mode for name, p in presets.PRESETS.items()}
    assert set(modes.values()) == {"greedy", "stochastic"}
    minatar = presets.get("gymnax-blines-breakout-minatar")
    algo, _ = validate.build(minatar, total_timesteps=64 * 128 * 3)
    assert algo.evaluation.config.mode == "stochastic" and algo.num_updates == 3
    assert validate.build(presets.get("purejaxrl-cartpole"))[0].evaluation.config.mode == "greedy"
    row = validate.Row(
        preset="p",
        agent="ppo",
        env="Breakout-MinAtar",
        steps=1_000_000,
        num_seeds=4,
        mean=10.0,
        ci_low=9.0,
        ci_high=11.0,
        per_seed=[],
        published="28.0",
        source="src",
        seconds=60.0,
        eval_mean=12.0,
        eval_ci_low=11.0,
        eval_ci_high=13.0,
        published_episodes="eval",
        eval_mode="stochastic",
        budget=10_000_000,
    )
    assert "| 1,000,000 (preset: 10,000,000) | 4 | 10.0 [9.0, 11.0] | **12.0 [11.0, 13.0]** (stochastic) |" in (
        validate.format_row(row)
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--only", "nope"], "unknown preset(s) ['nope']"),
        (["--num-seeds", "0"], "num_seeds=0 is invalid"),
        (["--total-timesteps", "0"], "total_timesteps=0 is invalid"),
    ],
)
def test_bad_arguments_fail_before_anything_runs(argv, message, capsys, tmp_path):
    assert validate.main([*argv, "--out", str(tmp_path / "v")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "v").exists()
