"""The benchmark script's own logic (its figures come from ``make bench``, not from tests)."""

import jax.numpy as jnp
import pytest

from experiments import benchmark


def test_time_compiled_returns_median_of_repeats():
    ticks = iter([0.0, 1.0,  # compile: 1 s
                  10.0, 13.0,  # run 1: 3 s
                  20.0, 21.0,  # run 2: 1 s
                  30.0, 32.0])  # run 3: 2 s
    compile_s, run_s = benchmark._time_compiled(lambda x: x + 1, jnp.zeros(3), repeats=3,
                                                clock=lambda: next(ticks))
    assert (compile_s, run_s) == (1.0, 2.0)


def test_markdown_table_names_the_machine():
    rows = [benchmark.Row("ppo (this library)", 16, 8.04, 235117.2, "1.02x baseline")]
    md = benchmark.to_markdown(rows, {"cpu": "X", "cores": "2", "devices": "cpu x1", "jax": "0.10.2"})
    assert md.startswith("Machine: X, 2 cores, cpu x1, jax 0.10.2")
    assert "| ppo (this library) | 16 | 8.0 | 235,117 | 1.02x baseline |" in md


@pytest.mark.parametrize("argv, message", [
    (["--only", "nope"], "unknown benchmark group(s) ['nope']"),
    (["--repeats", "0"], "--repeats=0 is invalid"),
    (["--seeds", "0"], "--seeds=[0] is invalid"),
])
def test_bad_arguments_fail_before_anything_runs(argv, message, capsys, tmp_path):
    assert benchmark.main([*argv, "--out", str(tmp_path / "b")]) == 2
    assert message in capsys.readouterr().out
    assert not (tmp_path / "b").exists()
