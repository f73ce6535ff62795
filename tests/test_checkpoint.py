"""Checkpoints, resume, signals, divergence, agents.load and experiments.evaluate.

The runner's semantics are tested on a toy algorithm (compiles in a second); the end-to-end
guarantees of the issue on PPO through the CLI:

* an interrupted (Ctrl-C) and resumed run, and a run killed with SIGKILL and resumed, give
  metrics files that are byte-identical and parameters that are bit-identical to an
  uninterrupted run with the same seed;
* the run folder stays readable after SIGKILL, and only the chunks since the last checkpoint
  are lost;
* a NaN stops training at the end of its chunk, names the update and the seed, and never
  overwrites the last good checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import agents
import envs
from experiments import evaluate as evaluate_cli
from experiments import train as train_cli
from rl.engine import runner
from rl.engine.checkpoint import Checkpointer, StopOnSignals, has_checkpoint
from rl.errors import ConfigError


@pytest.fixture(autouse=True, scope="module")
def allow_rank_promotion():
    """Haiku's orthogonal initializer promotes ranks implicitly; another test module sets
    jax_numpy_rank_promotion='raise' globally at import, which must not leak into these runs."""
    with jax.numpy_rank_promotion("allow"):
        yield


# ------------------------------------------------------------------------------ a toy algorithm


class ToyState(NamedTuple):
    params: dict  # {"w": f32[3]}
    opt_state: tuple  # (momentum f32[3],)
    env_state: dict  # {"x": f32[2]}, holds an inf on purpose: env states are not watched
    key: jax.Array
    update_idx: jax.Array


def toy_algorithm(num_updates: int = 12, nan_at: int = -1) -> runner.Algorithm:
    """Noisy momentum steps; runs with hyper["bad"] > 0 turn their parameters to NaN at update nan_at."""

    def init(key, hyper):
        key, init_key = jax.random.split(key)
        w = jax.random.normal(init_key, (3,))
        return ToyState({"w": w}, (jnp.zeros(3),), {"x": jnp.array([jnp.inf, 0.0])}, key, jnp.int32(0))

    def update(state, hyper):
        key, noise_key = jax.random.split(state.key)
        momentum = 0.9 * state.opt_state[0] + jax.random.normal(noise_key, (3,))
        w = state.params["w"] - hyper["lr"] * momentum
        w = jnp.where((hyper["bad"] > 0) & (state.update_idx == nan_at), jnp.nan, w)
        metrics = {"loss": jnp.sum(w**2), "episode_return": jnp.sum(w), "episodes": jnp.int32(1)}
        return ToyState({"w": w}, (momentum,), state.env_state, key, state.update_idx + 1), metrics

    return runner.Algorithm(init, update, lambda p, o, k, d=False: o, 4, num_updates, "toy", None)


def toy_hyper(bad=(0.0, 0.0)):
    return {"lr": jnp.full((len(bad),), 0.1), "bad": jnp.asarray(bad, jnp.float32)}


def key_safe(tree):
    """Host copy of a tree with typed keys as their uint32 data, for exact comparison."""

    def leaf(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.asarray(x)

    return jax.tree.map(leaf, tree)


def assert_trees_equal(a, b):
    jax.tree.map(np.testing.assert_array_equal, key_safe(a), key_safe(b))


# ------------------------------------------------------------------------------ runner


def test_nonfinite_watches_parameters_optimizer_and_losses_only():
    finite = ToyState(
        {"w": jnp.ones(3)}, (jnp.zeros(3),), {"x": jnp.array([jnp.inf, 0.0])}, jax.random.key(0), jnp.int32(0)
    )
    assert int(runner.nonfinite(finite, {"loss": 1.0, "episode_return": jnp.nan})) == 0
    assert int(runner.nonfinite(finite._replace(params={"w": jnp.array([0.0, jnp.nan, 0.0])}), {})) == 1
    assert int(runner.nonfinite(finite._replace(opt_state=(jnp.array([jnp.inf, 0, 0]),)), {})) == 1
    assert int(runner.nonfinite(finite, {"value_loss": jnp.nan})) == 1
    assert int(runner.nonfinite(finite, {"grad_norm": jnp.inf})) == 1


def test_stop_and_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    algo, keys = toy_algorithm(), runner.seed_keys([3, 4])
    full = runner.run_batch(algo, keys, toy_hyper(), num_chunks=6)
    assert full.status == "completed" and full.metrics["loss"].shape == (2, 12)

    reports = []
    with Checkpointer(tmp_path / "ckpt", every=4) as ckpt:
        part = runner.run_batch(
            algo,
            keys,
            toy_hyper(),
            num_chunks=6,
            checkpointer=ckpt,
            on_chunk=reports.append,
            should_stop=lambda: len(reports) >= 2,
        )
    # stop requested after chunk 2 was drained; chunk 3 was in flight and finished too
    assert part.status == "interrupted" and part.num_updates == 6 and part.checkpoint_step == 6
    with Checkpointer(tmp_path / "ckpt", every=4) as ckpt:
        resumed = runner.run_batch(algo, keys, toy_hyper(), num_chunks=6, checkpointer=ckpt, resume=True)
        assert ckpt.steps() == [8, 12]  # every 4 chunks (= 8 updates) and at the end; 2 kept
    assert resumed.status == "completed" and resumed.start_update == 6
    for name in full.metrics:
        np.testing.assert_array_equal(resumed.metrics[name], full.metrics[name])
    assert_trees_equal(resumed.state, full.state)


@pytest.mark.parametrize("room_for_a_copy", [True, False])
def test_a_checkpoint_saved_while_the_next_chunk_computes_holds_its_own_chunk(tmp_path, monkeypatch, room_for_a_copy):
    # every chunk is due: each save but the last is of a device copy taken before the next chunk
    # was dispatched (and reused the state's buffers), written once its chunk was drained;
    # without room for the copy, each save waits for its chunk
    monkeypatch.setattr(runner, "copy_fits", lambda *args: room_for_a_copy)
    algo, keys = toy_algorithm(), runner.seed_keys([3, 4])
    full = runner.run_batch(algo, keys, toy_hyper(), num_chunks=6)
    with Checkpointer(tmp_path / "ckpt", every=1, max_to_keep=6) as ckpt:
        saved = runner.run_batch(algo, keys, toy_hyper(), num_chunks=6, checkpointer=ckpt)
        assert ckpt.steps() == [2, 4, 6, 8, 10, 12]
    assert_trees_equal(saved.state, full.state)
    for step in (8, 10, 12):  # resume from the one saved after chunk 3 of 6
        shutil.rmtree(tmp_path / "ckpt" / str(step))
    with Checkpointer(tmp_path / "ckpt", every=0) as ckpt:
        resumed = runner.run_batch(algo, keys, toy_hyper(), num_chunks=6, checkpointer=ckpt, resume=True)
    assert resumed.start_update == 6
    for name in full.metrics:  # the checkpoint's metrics: exactly updates 1 to 6
        np.testing.assert_array_equal(resumed.metrics[name], full.metrics[name])
    assert_trees_equal(resumed.state, full.state)


@pytest.mark.parametrize("wait", [True, False])
def test_the_final_checkpoint_is_saved_after_the_clock_stops(tmp_path, wait):
    # run_seconds is training time: a final save that takes 1 s must not be in it; with
    # wait_for_checkpoint=False the call returns before the files are waited for
    class SlowSave(Checkpointer):
        waited = False

        def save(self, *args, **kwargs):
            time.sleep(1.0)
            super().save(*args, **kwargs)

        def wait(self):
            self.waited = True
            super().wait()

    algo, keys = toy_algorithm(), runner.seed_keys([3, 4])
    with SlowSave(tmp_path / "ckpt", every=0) as ckpt:
        t0 = time.perf_counter()
        result = runner.run_batch(algo, keys, toy_hyper(), num_chunks=2, checkpointer=ckpt, wait_for_checkpoint=wait)
        call = time.perf_counter() - t0
        assert call - result.run_seconds >= 1.0  # the save's 1 s: in the call, not in run_seconds
        assert ckpt.waited == wait
        assert result.checkpoint_step == algo.num_updates  # pending or written: named either way
        ckpt.wait()
        assert ckpt.steps() == [algo.num_updates]


def test_a_device_copy_is_taken_only_where_it_fits_beside_the_chunk():
    class Memory(NamedTuple):  # the fields of a compiled program's memory_analysis()
        argument_size_in_bytes: int
        output_size_in_bytes: int
        temp_size_in_bytes: int
        alias_size_in_bytes: int

    state = {"buffer": jnp.zeros(250_000, jnp.float32)}  # 1,000,000 bytes
    chunk = Memory(
        argument_size_in_bytes=1_000_000,
        output_size_in_bytes=1_000_000,
        temp_size_in_bytes=500_000,
        alias_size_in_bytes=1_000_000,
    )  # donated: the output reuses the argument
    assert runner.copy_fits(state, chunk, None)  # CPU: host memory
    assert runner.copy_fits(state, chunk, 3_000_000)  # 2.5 MB of 2.7 usable
    assert not runner.copy_fits(state, chunk, 2_500_000)  # 2.5 MB of 2.25 usable


# The memory and meta-learning agents at tiny sizes, 6 updates each: agent -> (env id, Config
# fields). RL² is recurrent PPO across trials (rppo's build and update), so it stands for rppo too.
MEMORY_AND_META = {
    "rl2": (
        "BernoulliBandit-uniform-misc",
        dict(num_envs=4, num_steps=20, num_minibatches=2, cell_size=8, total_timesteps=480),
    ),
    "maml": (
        "Navigation2D-v0",
        dict(meta_batch_size=2, num_envs=2, num_steps=10, hidden_sizes=(8,), total_timesteps=480),
    ),
    "metagrad": ("CartPole-v1", dict(num_envs=4, num_steps=8, hidden_sizes=(8,), total_timesteps=192)),
}


@pytest.mark.parametrize("name", list(MEMORY_AND_META))
@pytest.mark.usefixtures("haiku_init_allows_rank_promotion")
def test_memory_and_meta_agents_sweep_in_one_program_and_resume_bit_identical(tmp_path, name):
    import rl

    module = agents.get(name)
    env_id, fields = MEMORY_AND_META[name]
    env, env_params = envs.make(env_id)
    algo = module.make(module.Config(**fields), env, env_params)
    assert algo.num_updates == 6
    # 2 learning rates x 2 seeds in one program, as a sweep runs them
    hyper = dataclasses.replace(module.Hyper(), learning_rate=jnp.array([1e-3, 1e-2]))
    traces = []
    counted = algo._replace(update=lambda state, h: (traces.append(1), algo.update(state, h))[1])
    full = rl.train(counted, hyper, seeds=[0, 1], num_chunks=3)
    assert len(traces) == 1  # traced (and compiled) once for the 4 runs
    p = [np.asarray(x) for x in jax.tree.leaves(full.state.params)]
    assert any(not np.array_equal(x[0], x[1]) for x in p)  # seeds differ
    assert any(not np.array_equal(x[0], x[2]) for x in p)  # learning rates differ
    reports = []
    with Checkpointer(tmp_path / "ckpt", every=1) as ckpt:
        part = rl.train(
            algo,
            hyper,
            seeds=[0, 1],
            num_chunks=3,
            checkpointer=ckpt,
            on_chunk=reports.append,
            should_stop=lambda: len(reports) >= 1,
        )
    assert part.status == "interrupted" and 0 < part.num_updates < 6
    with Checkpointer(tmp_path / "ckpt", every=1) as ckpt:
        resumed = rl.train(algo, hyper, seeds=[0, 1], num_chunks=3, checkpointer=ckpt, resume=True)
    assert resumed.status == "completed" and resumed.start_update == part.num_updates
    for metric in full.metrics:
        np.testing.assert_array_equal(resumed.metrics[metric], full.metrics[metric], err_msg=metric)
    assert_trees_equal(resumed.state, full.state)


def test_asyncio_errors_of_orbax_tasks_and_futures_are_dropped_and_others_kept():
    # a failed checkpoint write leaves orbax's sibling writes unawaited; asyncio logs each when it
    # is collected, as a Task (orbax's coroutine in the message) or a _GatheringFuture (orbax only
    # in the traceback). The failure itself is reported once; those pages must not reach stderr.
    import logging

    from rl.engine.checkpoint import _ORBAX_TASKS

    def record(message, code_file=None):
        exc_info = None
        if code_file is not None:
            try:
                exec(compile("raise ValueError('OUT_OF_RANGE')", code_file, "exec"))
            except ValueError as exc:
                exc_info = (ValueError, exc, exc.__traceback__)
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, message, None, exc_info)

    orbax_file = os.path.join(os.sep, "venv", "site-packages", "orbax", "checkpoint", "serialization.py")
    task = record(f"Task exception was never retrieved\nfuture: <Task coro=<write() at {orbax_file}:193>>")
    future = record("_GatheringFuture exception was never retrieved", orbax_file)
    other = record("_GatheringFuture exception was never retrieved", os.path.join(os.sep, "mine", "job.py"))
    assert not _ORBAX_TASKS.filter(task) and not _ORBAX_TASKS.filter(future)
    assert _ORBAX_TASKS.filter(other) and _ORBAX_TASKS.filter(record("Task exception was never retrieved"))


def test_resume_refuses_another_chunk_schedule(tmp_path):
    algo, keys = toy_algorithm(), runner.seed_keys([0, 1])
    with Checkpointer(tmp_path, every=1) as ckpt:
        runner.run_batch(algo, keys, toy_hyper(), num_chunks=3, checkpointer=ckpt, should_stop=lambda: True)
        runner.run_batch(algo, keys, toy_hyper(), num_chunks=3, checkpointer=ckpt)
        with pytest.raises(ConfigError, match="num_chunks"):
            runner.run_batch(algo, keys, toy_hyper(), num_chunks=4, checkpointer=ckpt, resume=True)


def test_a_crashed_save_is_ignored_and_older_ones_are_pruned(tmp_path):
    algo, keys = toy_algorithm(), runner.seed_keys([0, 1])
    with Checkpointer(tmp_path, every=1, max_to_keep=2) as ckpt:
        runner.run_batch(algo, keys, toy_hyper(), num_chunks=6, checkpointer=ckpt)
        assert ckpt.steps() == [10, 12]
    # what SIGKILL in the middle of a save leaves behind: an unfinished temporary folder
    (tmp_path / "14.orbax-checkpoint-tmp-1234567").mkdir()
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.latest_step() == 12
        abstract = jax.eval_shape(jax.vmap(algo.init), keys, toy_hyper())
        restored = ckpt.restore(abstract)
    assert restored.update == 12 and restored.chunk == 6 and restored.metrics["loss"].shape == (2, 12)
    assert restored.state.key.dtype == keys.dtype
    assert has_checkpoint(tmp_path) and not has_checkpoint(tmp_path / "nothing")


@pytest.mark.parametrize("every", [1, 0], ids=["checkpoint-every-chunk", "pipelined"])
def test_divergence_stops_at_the_end_of_its_chunk_and_keeps_the_last_good_checkpoint(tmp_path, every):
    algo, keys = toy_algorithm(nan_at=7), runner.seed_keys([0, 1])
    seen = []
    with Checkpointer(tmp_path, every=every, max_to_keep=3) as ckpt:
        result = runner.run_batch(
            algo,
            keys,
            toy_hyper(bad=(0.0, 1.0)),
            num_chunks=6,
            checkpointer=ckpt,
            on_chunk=lambda r: seen.append(r.first_update),
            stop_on_divergence=True,
        )
        steps = ckpt.steps()
    assert result.status == "diverged"
    assert result.divergence == [runner.Divergence(run=1, update=7)]
    assert seen == [0, 2, 4, 6]  # metrics reach the host up to the end of the diverged chunk
    assert result.num_updates == 8 and result.metrics["nonfinite"][1, 7] == 1
    assert result.metrics["nonfinite"][0].sum() == 0
    assert steps == ([2, 4, 6] if every else [])  # never a checkpoint of the diverged state
    if every:
        with Checkpointer(tmp_path) as ckpt:
            restored = ckpt.restore(jax.eval_shape(jax.vmap(algo.init), keys, toy_hyper()))
        assert np.all(np.isfinite(restored.state.params["w"]))


def test_without_stop_on_divergence_every_run_trains_to_the_end():
    # what a sweep wants: one setting blowing up must not stop the others
    algo, keys = toy_algorithm(nan_at=3), runner.seed_keys([0, 1, 2])
    result = runner.run_batch(algo, keys, toy_hyper(bad=(0.0, 1.0, 1.0)), num_chunks=6)
    assert result.status == "completed" and result.num_updates == 12
    assert result.divergence == [runner.Divergence(1, 3), runner.Divergence(2, 3)]
    assert np.all(np.isfinite(np.asarray(result.state.params["w"][0])))


def test_stop_on_signals_sets_a_flag_and_restores_the_handlers():
    before = {s: signal.getsignal(s) for s in StopOnSignals.SIGNALS}
    with StopOnSignals(file=io.StringIO()) as stop:
        assert not stop()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop() and stop.requested == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C aborts at once
    assert {s: signal.getsignal(s) for s in StopOnSignals.SIGNALS} == before

    def in_thread():
        with StopOnSignals() as stop:  # handlers can only be set in the main thread: no-op
            assert not stop()

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()


# ------------------------------------------------------------------------------ CLI, end to end

PPO_ARGS = [
    "ppo",
    "--eval-every",
    "0",  # evaluation episodes are tested in test_evaluation.py; here they would only compile
    "--env",
    "CartPole-v1",
    "--num-seeds",
    "2",
    "--num-envs",
    "4",
    "--num-steps",
    "8",
    "--num-minibatches",
    "2",
    "--update-epochs",
    "1",
    "--hidden-sizes",
    "16",
    "--total-timesteps",
    "512",
    "--num-chunks",
    "8",
    "--checkpoint-every",
    "2",
    "--normalize-obs",
    "True",
    "--progress",
    "False",
]  # 16 updates in 8 chunks of 2; a checkpoint every 4 updates


def run_main(main, argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """An uninterrupted PPO run (CartPole, normalize_obs, 2 seeds)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    code, stdout, stderr = run_main(train_cli.main, [*PPO_ARGS, "--out", str(out)])
    assert code == 0, stderr
    return out


def assert_same_results(run: Path, reference: Path) -> None:
    for name in ("metrics.csv", "metrics.jsonl"):
        assert (run / name).read_bytes() == (reference / name).read_bytes(), f"{name} differs"
    got, want = np.load(run / "params.npz"), np.load(reference / "params.npz")
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert (
        summary["final_return_per_seed"]
        == json.loads((reference / "summary.json").read_text())["final_return_per_seed"]
    )


def test_reference_run_folder(reference_run):
    summary = json.loads((reference_run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["num_updates"] == 16
    assert Checkpointer(reference_run / "checkpoints").steps() == [12, 16]
    frame = pd.read_csv(reference_run / "metrics.csv")
    assert len(frame) == 2 * 16 and set(frame["nonfinite"]) == {0}


def test_ctrl_c_checkpoints_and_resume_is_bit_identical(reference_run, tmp_path, monkeypatch):
    from rl.host import sinks

    out = tmp_path / "run"
    original, chunks = sinks.CsvSink.write, []

    def write_then_ctrl_c(self, *args, **kwargs):
        original(self, *args, **kwargs)
        chunks.append(1)
        if len(chunks) == 3:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(sinks.CsvSink, "write", write_then_ctrl_c)
    code, stdout, stderr = run_main(train_cli.main, [*PPO_ARGS, "--out", str(out)])
    assert code == 128 + signal.SIGINT, stderr
    assert "SIGINT received" in stderr
    # chunk 4 was in flight when the signal came: it finishes, then the checkpoint is saved
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["num_updates"] == 8
    assert summary["checkpoint_update"] == 8 and summary["signal"] == "SIGINT"
    assert f"resume with: python -m experiments.train --resume {out}" in stdout
    assert not (out / "params.npz").exists()

    monkeypatch.setattr(sinks.CsvSink, "write", original)
    code, stdout, stderr = run_main(train_cli.main, ["--resume", str(out), "--progress", "False"])
    assert code == 0, stderr
    assert "resuming at update 8" in stdout
    assert_same_results(out, reference_run)
    assert json.loads((out / "summary.json").read_text())["resumed_at_update"] == 8
    code, _, stderr = run_main(train_cli.main, ["--resume", str(out)])
    assert code == 2 and "nothing to resume" in stderr


KILL_SCRIPT = """
import sys, time
from rl.host import sinks
original = sinks.CsvSink.write
def slow_write(self, *args, **kwargs):
    original(self, *args, **kwargs)
    time.sleep(0.25)  # room for the test to kill -9 between chunks
sinks.CsvSink.write = slow_write
from experiments.train import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_keeps_the_folder_readable_and_resumes_bit_identical(reference_run, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, *PPO_ARGS, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    rows_per_chunk = 2 * 2  # 2 seeds x 2 updates
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:  # past the first checkpoint (update 4) and one more chunk
            csv = out / "metrics.csv"
            # saving is asynchronous: under load the files of the checkpoint can land after
            # later chunks' rows, so wait for its finalised folder (orbax renames it to the step)
            ckpts = out / "checkpoints"
            saved = [int(p.name) for p in ckpts.iterdir() if p.name.isdigit()] if ckpts.is_dir() else []
            if (
                csv.exists()
                and csv.read_bytes().count(b"\n") > 1 + 3 * rows_per_chunk
                and any(step >= 4 for step in saved)
            ):
                break
            assert proc.poll() is None, f"the run ended before it was killed: {proc.stderr.read()!r}"
            time.sleep(0.02)
        else:
            pytest.fail("the run did not get past its first checkpoint in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    # readable: every JSON file parses, the metrics parse, the newest checkpoint is complete
    config = json.loads((out / "config.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert config["agent"] == "ppo" and summary["status"] == "running"
    assert summary["resume_command"] == f"python -m experiments.train --resume {out}"
    rows = len(pd.read_csv(out / "metrics.csv"))
    with Checkpointer(out / "checkpoints") as ckpt:
        saved = ckpt.latest_step()
    assert saved is not None and saved >= 4
    assert rows >= 2 * saved  # the chunks since the checkpoint are the only ones to redo

    code, stdout, stderr = run_main(train_cli.main, ["--resume", str(out), "--progress", "False"])
    assert code == 0, stderr
    assert f"resuming at update {saved}" in stdout
    assert_same_results(out, reference_run)


def test_divergence_names_update_and_seed(tmp_path):
    out = tmp_path / "run"
    argv = [
        *PPO_ARGS,
        "--out",
        str(out),
        "--learning-rate",
        "1e30",
        "--max-grad-norm",
        "1e30",
        "--anneal-lr",
        "False",
        "--seed",
        "5",
    ]
    code, stdout, stderr = run_main(train_cli.main, argv)
    assert code == 1
    message = [line for line in stderr.splitlines() if line.startswith("error: training diverged")]
    assert len(message) == 1, stderr
    assert "at update 0 of seed 5" in message[0] and "no checkpoint was saved before it" in message[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert {(d["seed"], d["update"]) for d in summary["divergence"]} == {(5, 0), (6, 0)}
    assert Checkpointer(out / "checkpoints").latest_step() is None  # nothing NaN was saved


# ------------------------------------------------------------------------------ agents.load


def test_load_applies_the_runs_observation_statistics(reference_run):
    from agents import ppo

    policy = agents.load(reference_run)
    config, act = policy[:2]
    assert config == policy.config and config.normalize_obs and config.hidden_sizes == (16,)
    assert policy.seed == 0 and policy.update == 16 and policy.obs_stats is not None
    assert float(policy.obs_stats.count) > 1  # statistics of training, not the prior

    obs = jax.random.normal(jax.random.key(1), (5, 4))
    key = jax.random.key(2)
    env, env_params = envs.make("CartPole-v1")
    algo = ppo.make(config, env, env_params)
    normalizer = envs.NormalizeObservation(envs.VecEnv(env, 1))
    expected = algo.act(policy.params, normalizer.normalize(policy.obs_stats, obs), key, True)
    np.testing.assert_array_equal(act(obs, key, deterministic=True), expected)
    assert act(obs[0], key, deterministic=True).shape == ()  # one observation -> one action
    raw = algo.act(policy.params, obs, key, True)  # without the statistics: another input
    assert not np.array_equal(normalizer.normalize(policy.obs_stats, obs), obs) and raw.shape == (5,)

    params = np.load(reference_run / "params.npz")
    np.testing.assert_array_equal(params["actor/linear/w"][0], policy.params["actor/linear"]["w"])
    other = agents.load(reference_run, seed=1)
    assert other.run == 1 and not np.array_equal(other.params["actor/linear"]["w"], policy.params["actor/linear"]["w"])
    with pytest.raises(ValueError, match="seed 9 was not trained"):
        agents.load(reference_run, seed=9)
    with pytest.raises(ValueError, match="not a run folder"):
        agents.load(reference_run / "checkpoints")


# ------------------------------------------------------------------------------ evaluate


@pytest.mark.parametrize(
    "env_id, expected_return, expected_length",
    [
        ("Probe-OneStep-v0", 1.0, 1),  # one step, reward +1
        ("Probe-Truncation-v0", 5.0, 5),  # +1 per step, truncated after 5 steps
    ],
)
def test_play_episodes_counts_the_first_episode_of_each_env(env_id, expected_return, expected_length):
    env, env_params = envs.make(env_id)

    def policy(params, obs_stats, obs, key, deterministic):
        return jnp.zeros(obs.shape[:1], jnp.int32)

    results = evaluate_cli.play_episodes(
        policy, jnp.zeros((2, 1)), None, env, env_params, jax.random.split(jax.random.key(0), 2), 7, True, 50
    )
    assert results.returns.shape == (2, 7)
    np.testing.assert_array_equal(results.returns, expected_return)
    np.testing.assert_array_equal(results.lengths, expected_length)
    assert results.finished.all()


def test_evaluate_cli_reports_mean_return_with_ci(reference_run, tmp_path):
    report_path = tmp_path / "eval.json"
    code, stdout, stderr = run_main(
        evaluate_cli.main,
        [
            str(reference_run),
            "--episodes",
            "16",
            "--out",
            str(report_path),
            "--gif",
            str(tmp_path / "x.gif"),
        ],
    )
    assert code == 0, stderr
    report = json.loads(report_path.read_text())
    assert report["policy"] == "greedy" and [r["seed"] for r in report["per_run"]] == [0, 1]
    for run in report["per_run"] + [report["overall"]]:
        low, high = run["ci95"]
        assert low <= run["mean_return"] <= high
    assert "all 2 seeds: mean return" in stdout
    # CartPole is drawn by gymnasium's classic-control renderer: a GIF, or why not (no pygame)
    assert (report["gif"] and (tmp_path / "x.gif").read_bytes()[:4] == b"GIF8") or (
        "GIF skipped: cannot draw CartPole-v1" in stdout and "pygame" in report["gif_skipped"]
    )

    code, _, stderr = run_main(evaluate_cli.main, [str(reference_run), "--episodes", "0"])
    assert code == 2 and stderr.startswith("error: --episodes")
    code, _, stderr = run_main(evaluate_cli.main, [str(tmp_path / "nope")])
    assert code == 2 and "not a run folder" in stderr


def test_gif_of_an_env_gymnax_draws_and_a_clear_skip_otherwise(tmp_path):
    env, env_params = envs.make("Catch-bsuite")
    act = lambda obs, key, deterministic: jnp.int32(1)  # noqa: E731
    assert evaluate_cli.render_gif(act, env, env_params, jax.random.key(0), tmp_path / "c.gif") is None
    assert (tmp_path / "c.gif").read_bytes()[:4] == b"GIF8"
    probe, probe_params = envs.make("Probe-OneStep-v0")
    reason = evaluate_cli.render_gif(act, probe, probe_params, jax.random.key(0), tmp_path / "p.gif")
    assert reason.startswith("gymnax's visualizer cannot draw Probe-OneStep-v0")
    assert not (tmp_path / "p.gif").exists()


def test_parameters_that_go_nonfinite_behind_finite_losses_are_caught_at_the_chunk_end():
    # The state is read once per chunk, not every update (memory traffic at thousands of seeds):
    # parameters that turn NaN while the reported loss stays finite are flagged at the last
    # update of their chunk, and training stops there.
    base = toy_algorithm(nan_at=5)

    def update(state, hyper):
        state, metrics = base.update(state, hyper)
        return state, {**metrics, "loss": jnp.float32(1.0)}  # a loss blind to the parameters

    algo, keys = base._replace(update=update), runner.seed_keys([0, 1])
    result = runner.run_batch(algo, keys, toy_hyper(bad=(0.0, 1.0)), num_chunks=3, stop_on_divergence=True)
    assert result.status == "diverged"
    assert result.divergence == [runner.Divergence(run=1, update=7)]  # chunk [4, 8): its last update
    assert result.metrics["nonfinite"][0].sum() == 0
