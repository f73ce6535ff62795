"""Runner across devices, chunk schedule, and the train CLI end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import train
from rl.engine.runner import chunk_schedule

ROOT = Path(__file__).resolve().parents[1]

# The CLI's default path (`python -m experiments.train`) on a tiny PPO budget.
CLI = [
    "ppo",
    "--env",
    "CartPole-v1",
    "--num-envs",
    "4",
    "--num-steps",
    "32",
    "--num-minibatches",
    "2",
    "--update-epochs",
    "2",
    "--total-timesteps",
    str(4 * 32 * 12),
    "--progress",
    "False",
    "--eval-every",
    "0",  # evaluation episodes are tested in test_evaluation.py; here they would only compile
]


def _cli(out, *args, devices=1):
    # Single-threaded Eigen in every run (the guarantee is for equal XLA flags): with several
    # forced host devices on few cores XLA CPU can deadlock its shared thread pool.
    flags = f"--xla_force_host_platform_device_count={devices} --xla_cpu_multi_thread_eigen=false"
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.train", *CLI, *args, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    params = np.load(out / "params.npz")
    summary = json.loads((out / "summary.json").read_text())
    return {k: params[k] for k in params.files}, summary


# One device is tests/test_ppo.py::test_same_seed_is_deterministic_and_seeds_differ, in process.
@pytest.mark.parametrize("devices", [4])
def test_a_seed_is_reproduced_bit_for_bit_at_the_same_layout(tmp_path, devices):
    # What README "Randomness" guarantees: at the same number of devices and runs per device, a
    # run's numbers depend on its seed and settings only: not on the chunking, nor on which
    # other seeds share its batch or device. Seeds 0..2n-1 against seeds 1..2n (every seed gets
    # other batch-mates and another place) with other chunking: the shared seeds must agree
    # bit for bit. (Across layouts they need not: see the README for why.)
    n = 2 * devices
    a, sa = _cli(tmp_path / "a", "--num-seeds", str(n), "--seed", "0", devices=devices)
    b, sb = _cli(tmp_path / "b", "--num-seeds", str(n), "--seed", "1", "--num-chunks", "3", devices=devices)
    assert sa["num_devices"] == sb["num_devices"] == devices and sa["runs_per_device"] == 2
    for k in a:
        np.testing.assert_array_equal(a[k][1:], b[k][:-1], err_msg=k)
    assert sa["final_return_per_seed"][1:] == sb["final_return_per_seed"][:-1]


def test_chunk_schedule_prefers_equal_chunks():
    assert chunk_schedule(976, 20) == [61] * 16  # a divisor near 20: one compiled length
    assert chunk_schedule(10, 1) == [10]
    assert chunk_schedule(3, 10) == [1, 1, 1]
    s = chunk_schedule(97, 10)  # prime: equal chunks and one shorter tail
    assert sum(s) == 97 and len(set(s)) == 2


def test_cli_writes_a_complete_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    code = train.main(
        [
            "ppo",
            "--env",
            "CartPole-v1",
            "--num-seeds",
            "2",
            "--num-envs",
            "4",
            "--num-steps",
            "32",
            "--num-minibatches",
            "2",
            "--total-timesteps",
            "2560",
            "--num-chunks",
            "10",
            "--out",
            str(out),
            "--progress",
            "False",
        ]
    )
    assert code == 0
    # a run this short (well under the default 180 s) checkpoints once, after its last update;
    # a save every 5 chunks (the earlier default) would have kept updates 10 and 20
    steps = sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [20], steps
    for name in ["config.json", "metrics.csv", "metrics.jsonl", "curve.png", "params.npz", "summary.json"]:
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").iterdir())
    summary = json.loads((out / "summary.json").read_text())
    for key in [
        "agent",
        "env",
        "num_seeds",
        "total_timesteps",
        "final_return_mean",
        "final_return_ci95",
        "final_return_per_seed",
        "compile_seconds",
        "run_seconds",
        "env_steps_per_second",
        "finish_seconds",
    ]:
        assert key in summary, key
    assert summary["finish_seconds"] > 0  # the end work after training: final checkpoint, curve, params
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
    for flag in [
        "--num-envs",
        "--hidden-sizes",
        "--learning-rate",
        "--max-grad-norm",
        "--preset",
        "--num-seeds",
        "--env",
        "--state-dependent-std",
    ]:
        assert flag in text, flag


def test_seed_keys_are_the_keys_of_each_seed():
    import jax

    from rl.engine.runner import seed_keys

    seeds = [0, 1, 7, -1, -(2**31), 2**31 - 1, 2**31, 2**40]  # the last two take the loop
    keys = jax.random.key_data(seed_keys(seeds))
    for i, s in enumerate(seeds):
        np.testing.assert_array_equal(keys[i], jax.random.key_data(jax.random.key(s)), err_msg=str(s))
    np.testing.assert_array_equal(jax.random.key_data(seed_keys(seeds[:6])), keys[:6])


def test_init_is_sequential_only_on_cpu_devices():
    # lax.map init only where the batched-QR deadlock lives (CPU); vmapped on accelerators
    from types import SimpleNamespace

    from rl.engine.runner import init_sequentially

    mesh = lambda *platforms: SimpleNamespace(devices=np.array([SimpleNamespace(platform=p) for p in platforms]))
    assert init_sequentially(mesh("cpu")) and init_sequentially(mesh("cpu", "cpu"))
    assert not init_sequentially(mesh("gpu")) and not init_sequentially(mesh("tpu", "tpu"))
