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
    row = validate.Row(preset="p", agent="dqn", env="CartPole-v1", steps=500_000, num_seeds=8, mean=484.71,
                       ci_low=470.1, ci_high=497.3, per_seed=[], published="498.38", source="src", seconds=90.0)
    assert validate.format_row(row) == (
        "| p | dqn | CartPole-v1 | 500,000 | 8 | 484.7 [470.1, 497.3] | 498.38 | src | 1.5 |\n")
    assert validate.format_row(validate.Row(**{**row.__dict__, "mean": float("nan")})).count("no episode ended") == 1


@pytest.mark.parametrize("argv, message", [
    (["--only", "nope"], "unknown preset(s) ['nope']"),
    (["--num-seeds", "0"], "num_seeds=0 is invalid"),
])
def test_bad_arguments_fail_before_anything_runs(argv, message, capsys, tmp_path):
    assert validate.main([*argv, "--out", str(tmp_path / "v")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "v").exists()
