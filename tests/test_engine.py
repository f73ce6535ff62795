"""Runner across devices, chunk schedule, and the train CLI end to end."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from experiments import train
from rl.runner import chunk_schedule

ROOT = Path(__file__).resolve().parents[1]

SHARD_SCRIPT = textwrap.dedent(
    """
    import sys, json, numpy as np, jax
    import envs, rl
    from agents import ppo
    n_dev = int(sys.argv[1])
    mesh = rl.runner.make_mesh(jax.devices()[:n_dev])
    env, p = envs.make("CartPole-v1")
    algo = ppo.make(ppo.Config(num_envs=4, num_steps=32, num_minibatches=2, update_epochs=2,
                               total_timesteps=4 * 32 * 6), env, p)
    r = rl.train(algo, ppo.Hyper(), seeds=range(8), num_chunks=2, mesh=mesh)
    leaves = jax.tree.leaves(jax.device_get(r.params))
    np.savez(sys.argv[2], loss=r.metrics["value_loss"], ret=r.metrics["episode_return"],
             **{f"p{i}": x for i, x in enumerate(leaves)})
    print("devices", len(jax.devices()), "mesh", mesh.devices.size)
    """
)


def _run(script, *args, devices=4):
    # Single-threaded Eigen: with several forced host devices on few cores,
    # XLA CPU can deadlock its shared thread pool (see rl/runner._sharded).
    flags = f"--xla_force_host_platform_device_count={devices} --xla_cpu_multi_thread_eigen=false"
    env = dict(os.environ, XLA_FLAGS=flags,
               JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_sharded_over_four_devices_equals_one_device(tmp_path):
    # The same 8 seeds on a 1-device mesh and on a 4-device mesh (2 seeds per
    # device) must give the same per-seed metrics and parameters.
    assert "mesh 4" in _run(SHARD_SCRIPT, "4", str(tmp_path / "four.npz"))
    assert "mesh 1" in _run(SHARD_SCRIPT, "1", str(tmp_path / "one.npz"))
    four, one = np.load(tmp_path / "four.npz"), np.load(tmp_path / "one.npz")
    for k in one.files:
        np.testing.assert_allclose(four[k], one[k], rtol=1e-6, atol=1e-6, err_msg=k)


def test_chunk_schedule_prefers_equal_chunks():
    assert chunk_schedule(976, 20) == [61] * 16  # a divisor near 20: one compiled length
    assert chunk_schedule(10, 1) == [10]
    assert chunk_schedule(3, 10) == [1, 1, 1]
    s = chunk_schedule(97, 10)  # prime: equal chunks and one shorter tail
    assert sum(s) == 97 and len(set(s)) == 2


def test_cli_writes_a_complete_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    code = train.main(["ppo", "--env", "CartPole-v1", "--num-seeds", "2", "--num-envs", "4",
                       "--num-steps", "32", "--num-minibatches", "2", "--total-timesteps", "2560",
                       "--num-chunks", "2", "--out", str(out), "--progress", "False"])
    assert code == 0
    for name in ["config.json", "metrics.csv", "metrics.jsonl", "curve.png", "params.npz", "summary.json"]:
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").iterdir())
    summary = json.loads((out / "summary.json").read_text())
    for key in ["agent", "env", "num_seeds", "total_timesteps", "final_return_mean", "final_return_ci95",
                "final_return_per_seed", "compile_seconds", "run_seconds", "env_steps_per_second"]:
        assert key in summary, key
    assert summary["num_seeds"] == 2 and summary["total_timesteps"] == 2560
    assert len(summary["final_return_per_seed"]) == 2
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["num_envs"] == 4 and config["hyper"]["learning_rate"] == 2.5e-4
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 20  # header + 2 seeds x 20 updates
    params = np.load(out / "params.npz")
    assert all(params[k].shape[0] == 2 for k in params.files)  # leading seed axis
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same folder again: refused, nothing overwritten
    assert train.main(["ppo", "--out", str(out), "--total-timesteps", "2560"]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["ppo", "--env", "CartPole-v2"], "CartPole-v1"),
        (["ppx"], "ppo"),
        ([], "name an agent"),
        (["ppo", "--num-minibatches", "3"], "num_minibatches"),
        (["ppo", "--activation", "swish"], "activation"),
        (["ppo", "--total-timesteps", "100"], "total_timesteps"),
        (["ppo", "--num-envs", "0"], "num_envs"),
        (["ppo", "--log-std-init", "0.5"], "continuous"),
        (["ppo", "--learning-rate", "-3"], "learning_rate"),
        (["ppo", "--num-seeds", "0"], "num_seeds"),
        (["ppo", "--preset", "cleanrl-cartpole"], "purejaxrl-cartpole"),
    ],
)
def test_cli_bad_input_is_one_clear_line(argv, needle, capsys, tmp_path):
    assert train.main(argv + ["--out", str(tmp_path / "x")] if argv else argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and needle in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()  # refused before anything was written


def test_help_lists_every_field(capsys):
    with pytest.raises(SystemExit) as exit_:
        train.main(["ppo", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for flag in ["--num-envs", "--hidden-sizes", "--learning-rate", "--max-grad-norm", "--preset",
                 "--num-seeds", "--env", "--state-dependent-std"]:
        assert flag in text, flag
