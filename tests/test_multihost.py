"""Multi-host sweep: 2 processes x 2 CPU devices give the per-seed results of one process.

Two processes are started on 127.0.0.1 (a free port), each with 2 CPU devices
(``--xla_force_host_platform_device_count=2``), forming one 4-device mesh
through ``jax.distributed`` (gloo collectives). Process 0 gets the
coordinator from flags, process 1 from the JAX_* environment variables, so
both ways are exercised. The reference is the same command in one process
with 4 CPU devices: the same 4-way layout of runs over devices, so every run's
computation is identical and the per-update metrics must match bit for bit.

3 configurations x 2 seeds = 6 runs do not divide 4 devices, so the sweep
pads with 2 duplicate runs; the outputs must still hold exactly 6 runs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rl.engine import distributed
from rl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 300
SWEEP = [
    "ppo",
    "--env",
    "CartPole-v1",
    "--num-seeds",
    "2",
    "--grid",
    "learning_rate=1e-3,3e-3,1e-2",
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
    "--progress",
    "False",
    "--plot-top",
    "2",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(num_devices: int, **extra: str) -> dict[str, str]:
    # the coordinator settings come from each test; the suite's compile setting stays (conftest)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") or k == "JAX_DISABLE_MOST_OPTIMIZATIONS"}
    env.update(
        # single-threaded Eigen: with several CPU devices on 2 cores XLA's shared Eigen
        # pool intermittently wedges (runs hang in block_until_ready); this avoids it
        XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices} --xla_cpu_multi_thread_eigen=false",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=str(ROOT),
        **extra,
    )
    return env


def _sweep_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "experiments.sweep", *SWEEP, "--out", str(out), *extra]


@pytest.mark.xdist_group("multihost")
def test_two_processes_match_one_process(tmp_path: Path) -> None:
    port = _free_port()
    multi, single = tmp_path / "multi", tmp_path / "single"
    address = f"127.0.0.1:{port}"
    procs = [
        subprocess.Popen(
            _sweep_cmd(multi, "--coordinator-address", address, "--num-processes", "2", "--process-id", "0"),
            cwd=ROOT,
            env=_env(2),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ),
        subprocess.Popen(
            _sweep_cmd(multi),
            cwd=ROOT,
            env=_env(2, JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES="2", JAX_PROCESS_ID="1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ),
    ]
    try:
        # the single-process reference compiles while the pair runs
        ref = subprocess.run(_sweep_cmd(single), cwd=ROOT, env=_env(4), capture_output=True, text=True, timeout=TIMEOUT)
        outs = [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert ref.returncode == 0, ref.stderr[-3000:]
    for p, (_, stderr) in zip(procs, outs):
        assert p.returncode == 0, stderr[-3000:]
    stdout0, stdout1 = outs[0][0], outs[1][0]
    assert "in 2 processes" in stdout0 and "2 duplicate run(s)" in stdout0  # said up front
    # only process 0 prints (gloo's own connection lines aside, which its threads may print in
    # pieces: "[Gloo] Rank " on one line, "3 is connected to 3 peer ranks. ..." on the next, or
    # with a line break of their own, seen once as an empty line between them) ...
    gloo = ("[Gloo]", "peer ranks")
    assert [line for line in stdout1.splitlines() if line.strip() and not any(g in line for g in gloo)] == []
    assert "2 duplicate run(s)" in ref.stdout

    # ... and writes: one report, the 6 real runs only, equal to the single-process one
    a = pd.read_parquet(multi / "results.parquet")
    b = pd.read_parquet(single / "results.parquet")
    assert len(a) == 3 * 2 * 32  # configs x seeds x updates, no padded duplicate
    assert sorted(set(zip(a["config"], a["seed"]))) == [(c, s) for c in range(3) for s in range(2)]
    pd.testing.assert_frame_equal(a, b)  # bit-identical metrics, every seed and update
    sa, sb = pd.read_csv(multi / "summary.csv"), pd.read_csv(single / "summary.csv")
    assert sa["final_return_per_seed"].tolist() == sb["final_return_per_seed"].tolist()
    assert (multi / "best_preset.json").read_text() == (single / "best_preset.json").read_text()


def test_initialize_alone_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in distributed.ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)
    assert distributed.initialize() is False
    assert distributed.initialize("127.0.0.1:1", 1, 0) is False  # one process needs no coordinator
    assert distributed.is_primary()


def test_initialize_rejects_half_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in distributed.ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="num_processes"):
        distributed.initialize("127.0.0.1:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    with pytest.raises(ConfigError, match="process_id"):
        distributed.initialize("127.0.0.1:1234")
    with pytest.raises(ConfigError, match=r"must lie in \[0, 1\]"):
        distributed.initialize("127.0.0.1:1234", process_id=2)
    with pytest.raises(ConfigError, match="HOST:PORT"):
        distributed.initialize("localhost", process_id=0)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ConfigError, match="integer"):
        distributed.initialize("127.0.0.1:1234", process_id=0)


def test_put_global_and_to_host_are_device_put_and_get_in_one_process() -> None:
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from rl.engine.runner import RUN_AXIS, make_mesh, seed_keys

    sharding = NamedSharding(make_mesh(), P(RUN_AXIS))
    keys, x = distributed.put_global((seed_keys([3, 4]), jnp.arange(2.0)), sharding)
    np.testing.assert_array_equal(jax.random.key_data(keys), jax.random.key_data(seed_keys([3, 4])))
    assert distributed.to_host({"x": x})["x"].tolist() == [0.0, 1.0]
