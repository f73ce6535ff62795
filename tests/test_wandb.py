"""The Weights & Biases sink and ``--track``, offline: what wandb wrote is read back and checked.

wandb in offline mode (``WANDB_MODE=offline``) writes each run's records to
``<dir>/wandb/offline-run-<time>-<id>/run-<id>.wandb``, the file ``wandb sync`` uploads later: a
LevelDB-style log of ``wandb.proto.wandb_internal_pb2.Record`` protos (the run with its config,
one ``history`` record per ``log`` call, ...). :func:`wandb_records` parses it, so the tests see
exactly what would reach W&B:

* the sink logs TensorBoard's curves: the same tags at the same steps with the same values as
  :class:`rl.host.sinks.TensorBoardSink`'s event file, NaN left out, per-run curves only up to 16 runs;
* ``--track`` through the CLI: the config, the name (the run folder's), every update once with
  the means and IQMs of ``metrics_over_seeds.csv``; interrupted and resumed, the same W&B run id
  continues and no step is logged twice;
* flags are checked before anything compiles; a missing wandb names the extra to install.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import struct
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

from experiments import train as train_cli
from rl.host import scores, sinks

pytest.importorskip("wandb", reason="wandb is in the test extra: pip install -e '.[test]' (or '.[wandb]')")
from wandb.proto import wandb_internal_pb2  # noqa: E402

LOG_BLOCK = 32 * 1024  # the log's block size: a record never straddles a block boundary
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4  # record fragment types, as in LevelDB's log format


def wandb_records(path: Path) -> list:
    """The records of one ``run-<id>.wandb`` file.

    Layout: a 7-byte header (``:W&B``, magic, version), then blocks of 32 KiB holding fragments
    ``[crc u32][length u16][type u8][data]``; a record is one FULL fragment or FIRST, MIDDLE...,
    LAST; a block's tail shorter than a fragment header is zero padding.
    """
    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    records, pending, position = [], b"", 7
    while position + 7 <= len(data):
        left = LOG_BLOCK - position % LOG_BLOCK
        if left < 7:
            position += left
            continue
        _, length, kind = struct.unpack_from("<IHB", data, position)
        if kind == 0:  # padding up to the block's end
            position += left
            continue
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
        else:
            assert kind in (FIRST, MIDDLE), kind
    return records


class OfflineRun:
    """What one offline W&B run segment holds: its run record, config and history rows."""

    def __init__(self, path: Path):
        self.path = path
        records = wandb_records(path)
        (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        self.run = run
        self.config = {item.key: json.loads(item.value_json) for item in run.config.update if item.key != "_wandb"}
        self.history: dict[int, dict[str, float]] = {}
        for record in records:
            if record.WhichOneof("record_type") == "history":
                row = {
                    (item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in record.history.item
                }
                step = row.pop("_step")
                assert step not in self.history, f"step {step} logged twice in {path}"
                self.history[step] = {k: v for k, v in row.items() if not k.startswith("_")}


def offline_runs(wandb_dir: Path, count: int = 1, timeout: float = 60.0) -> list[OfflineRun]:
    """The ``count`` offline run segments under ``wandb_dir``, oldest first, once wandb has written them.

    ``run.finish()`` returns before wandb's service has written a finished run's file (it does by
    the time the process exits): wait until each file ends with its ``exit`` record.
    """
    deadline = time.monotonic() + timeout
    while True:
        paths = sorted(wandb_dir.glob("wandb/offline-run-*/run-*.wandb"))
        done = [p for p in paths if any(r.WhichOneof("record_type") == "exit" for r in wandb_records(p))]
        if len(done) >= count or time.monotonic() > deadline:
            assert len(paths) == len(done) == count, (paths, done)
            return [OfflineRun(p) for p in paths]
        time.sleep(0.1)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """wandb offline and silent, with every folder of its own (config, cache, data) under tmp_path."""
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        folder = tmp_path / name.lower()
        folder.mkdir()
        monkeypatch.setenv(name, str(folder))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    return tmp_path


def tfrecord_scalars(folder: Path) -> dict[tuple[str, int], float]:
    """``{(tag, step): value}`` of every TensorBoard event file in ``folder``."""
    from tensorboardX.proto import event_pb2

    scalars = {}
    for path in folder.glob("events.out.tfevents.*"):
        data, position = path.read_bytes(), 0
        while position < len(data):  # [length u64][crc u32][event][crc u32]
            (length,) = struct.unpack_from("<Q", data, position)
            event = event_pb2.Event()
            event.ParseFromString(data[position + 12 : position + 12 + length])
            position += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars[(value.tag, event.step)] = value.simple_value
    return scalars


def chunk(num_runs: int, num_updates: int, seed: int) -> dict[str, np.ndarray]:
    """Metrics of a chunk: returns and a loss; some (run, update) pairs completed no episode."""
    rng = np.random.default_rng(seed)
    episodes = rng.integers(0, 3, size=(num_runs, num_updates))
    episodes[:, 0] = 0  # no run completed an episode in the chunk's first update
    return {
        "episode_return": rng.normal(100.0, 30.0, (num_runs, num_updates)).astype(np.float32),
        "episode_length": rng.integers(10, 200, (num_runs, num_updates)).astype(np.float32),
        "episodes": episodes.astype(np.float32),
        "loss": rng.normal(size=(num_runs, num_updates)).astype(np.float32),
    }


# ----------------------------------------------------------------------------- the sink


@pytest.mark.parametrize("num_runs", [3, 20])
def test_sink_logs_what_tensorboard_shows(offline, num_runs):
    labels = [{"seed": s} for s in range(num_runs)]
    chunks = [chunk(num_runs, 4, seed=i) for i in range(2)]
    with (
        sinks.TensorBoardSink(offline / "tb", labels, steps_per_update=50) as tb,
        sinks.WandbSink(
            labels,
            project="proj",
            group="grp",
            name="tiny",
            config={"agent": "ppo", "lr": 1e-3},
            directory=offline,
            state_file=offline / "state.json",
        ) as wb,
    ):
        for i, metrics in enumerate(chunks):
            tb.write(metrics, first_update=4 * i, steps_per_update=50)
            wb.write(metrics, first_update=4 * i, steps_per_update=50)
    (run,) = offline_runs(offline)
    assert (run.run.project, run.run.run_group, run.run.display_name) == ("proj", "grp", "tiny")
    assert run.run.run_id == wb.run_id and run.config == {"agent": "ppo", "lr": 1e-3}
    # every (tag, step) TensorBoard has, with its value (TensorBoard stores float32), and nothing else
    tensorboard = tfrecord_scalars(offline / "tb")
    logged = {(tag, step): value for step, row in run.history.items() for tag, value in row.items()}
    assert logged.keys() == tensorboard.keys()
    for key, value in tensorboard.items():
        assert np.float32(logged[key]) == value, key
    # steps: (update + 1) * 50 env steps; the first update of each chunk has no episode, so no return
    assert sorted(run.history) == [50 * u for u in range(1, 9)]
    assert "episode_return/mean" not in run.history[50] and "loss/mean" in run.history[50]
    # update 1: the mean over the runs that completed an episode, of their (float32) returns
    ret, count = chunks[0]["episode_return"][:, 1], chunks[0]["episodes"][:, 1]
    assert run.history[100]["episode_return/mean"] == pytest.approx(float(np.mean(ret[count > 0])), rel=1e-6)
    # spread over runs with several runs; per-run curves only up to 16
    assert "episode_return/iqm" in run.history[100] and "episode_length/q95" in run.history[100]
    per_run = {tag for row in run.history.values() for tag in row if tag.startswith("episode_return/run_")}
    assert per_run == ({f"episode_return/run_{i}" for i in range(num_runs)} if num_runs <= 16 else set())
    assert json.loads((offline / "state.json").read_text())["last_step"] == 400


def test_resumed_sink_continues_the_run_and_skips_logged_steps(offline):
    labels = [{"seed": 0}, {"seed": 1}]
    metrics = chunk(2, 4, seed=0)
    state = offline / "state.json"
    with sinks.WandbSink(labels, project="p", directory=offline / "first", state_file=state) as first:
        first.write(metrics, first_update=0, steps_per_update=10)  # steps 10 .. 40
    # the run was interrupted after update 4, its checkpoint was at update 2: updates 2, 3 come again
    again = {name: values[:, 2:] for name, values in chunk(2, 6, seed=0).items()}
    with sinks.WandbSink(
        labels, project="p", directory=offline / "second", state_file=state, resume_from_update=2
    ) as second:
        second.write(again, first_update=2, steps_per_update=10)  # steps 30 .. 60, of which 50, 60 are new
    assert second.run_id == first.run_id
    (one,), (two,) = offline_runs(offline / "first"), offline_runs(offline / "second")
    assert one.run.run_id == two.run.run_id == first.run_id
    assert sorted(one.history) == [10, 20, 30, 40] and sorted(two.history) == [50, 60]
    # a run that is not resumed never reuses the id
    with sinks.WandbSink(labels, project="p", directory=offline / "third", state_file=state) as third:
        pass
    assert third.run_id != first.run_id


def test_missing_wandb_names_the_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` fails as if not installed
    with pytest.raises(ModuleNotFoundError, match=r'pip install -e "\.\[wandb\]"'):
        sinks.WandbSink([{"seed": 0}], project="p")
    out = tmp_path / "run"
    code = train_cli.main(["ppo", "--track", "--out", str(out), "--progress", "False"])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith("error: --track: logging to Weights & Biases needs the optional wandb package")
    assert "compiling" not in captured.out and not out.exists()  # refused before the folder and the compile


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--wandb-project", "p"], "--wandb-project only apply with --track"),
        (["--wandb-entity", "me", "--wandb-name", "n"], "--wandb-entity, --wandb-name only apply with --track"),
        (["--track", "--wandb-group", " "], "--wandb-group is empty"),
    ],
)
def test_wandb_flags_are_checked_before_compiling(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    code = train_cli.main(["ppo", *argv, "--out", str(out), "--progress", "False"])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.startswith(f"error: {message}") and captured.err.count("\n") == 1
    assert "compiling" not in captured.out and not out.exists()


def test_cli_sink_is_named_after_the_run_folder_and_says_when_wandb_cannot_start(offline, monkeypatch):
    run_dir = offline / "20261201-120000-ppo-CartPole-v1"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"agent": "ppo", "env": "CartPole-v1", "seeds": [0]}))
    settings = {"project": "p", "entity": None, "group": None, "name": None}
    with train_cli.open_wandb(settings, run_dir, [{"seed": 0}], None) as sink:
        sink.write({"loss": np.ones((1, 2))}, first_update=0, steps_per_update=5)
    # without $WANDB_DIR, wandb's files are in the run folder
    (run,) = offline_runs(run_dir)
    assert run.run.display_name == run_dir.name and run.run.project == "p"
    assert run.config == {"agent": "ppo", "env": "CartPole-v1", "seeds": [0], "run_dir": str(run_dir)}
    assert sorted(run.history) == [5, 10] and run.history[10] == {"loss/mean": 1.0}
    assert json.loads((run_dir / train_cli.WANDB_STATE_FILE).read_text())["id"] == run.run.run_id

    # wandb's own error (online without a login: wandb.errors.UsageError, "No API key configured. Use
    # `wandb login` to log in."; wandb reads WANDB_MODE once per process, so it is raised by hand here)
    # becomes one line that says what to do
    def no_login(*args, **kwargs):
        raise RuntimeError("No API key configured. Use `wandb login` to log in.")

    monkeypatch.setattr(sinks.WandbSink, "__init__", no_login)
    with pytest.raises(
        train_cli.UsageError,
        match=r"W&B could not start \(RuntimeError: No API key configured.*"
        r"run `wandb login`, or set WANDB_MODE=offline",
    ):
        train_cli.open_wandb(settings, run_dir, [{"seed": 0}], None)


# ----------------------------------------------------------------------------- --track through the CLI

TRACKED = [
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
    "--update-epochs",
    "1",
    "--hidden-sizes",
    "16",
    "--total-timesteps",
    "2048",
    "--num-chunks",
    "8",
    "--checkpoint-every",
    "2",
    "--eval-every",
    "0",
    "--progress",
    "False",
    "--track",
    "--wandb-project",
    "cli-test",
    "--wandb-group",
    "tiny",
]  # 16 updates of 128 env steps in 8 chunks of 2; a checkpoint every 4 updates


def run_main(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = train_cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def test_track_interrupted_and_resumed_logs_every_update_once_to_one_run(offline, monkeypatch):
    wandb_dir = offline / "wandb-dir"
    wandb_dir.mkdir()
    monkeypatch.setenv("WANDB_DIR", str(wandb_dir))  # else wandb's files go to RUN_DIR/wandb
    out = offline / "run"
    original, chunks = sinks.CsvSink.write, []

    def write_then_ctrl_c(self, *args, **kwargs):
        original(self, *args, **kwargs)
        chunks.append(1)
        if len(chunks) == 3:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(sinks.CsvSink, "write", write_then_ctrl_c)
    with jax.numpy_rank_promotion("allow"):
        code, _, stderr = run_main([*TRACKED, "--out", str(out)])
        assert code == 128 + signal.SIGINT, stderr
        monkeypatch.setattr(sinks.CsvSink, "write", original)
        code, stdout, stderr = run_main(["--resume", str(out), "--progress", "False"])
    assert code == 0, stderr
    assert "resuming at update 8" in stdout

    config = json.loads((out / "config.json").read_text())
    assert config["wandb"] == {"project": "cli-test", "entity": None, "group": "tiny", "name": None}
    first, resumed = offline_runs(wandb_dir, count=2)
    state = json.loads((out / "wandb_run.json").read_text())
    assert first.run.run_id == resumed.run.run_id == state["id"]
    assert state["last_step"] == 16 * 128 and not (out / "wandb").exists()
    for segment in (first, resumed):
        assert (segment.run.project, segment.run.run_group, segment.run.display_name) == ("cli-test", "tiny", "run")
        assert segment.config["agent"] == "ppo" and segment.config["hyper"] == config["hyper"]
        assert segment.config["run_dir"] == str(out)
    # the interrupted run logged updates 1..8 (chunk 4 was in flight at the signal), the resumed 9..16
    assert sorted(first.history) == [128 * u for u in range(1, 9)]
    assert sorted(resumed.history) == [128 * u for u in range(9, 17)]
    history = {**first.history, **resumed.history}
    # the means and IQMs over seeds of metrics_over_seeds.csv (float32 there), at every update
    table = pd.read_csv(out / "metrics_over_seeds.csv")
    for metric, stat in (
        ("episode_return", "mean"),
        ("episode_return", "iqm"),
        ("episode_length", "q95"),
        ("value_loss", "mean"),
    ):
        rows = table[table.metric == metric].dropna(subset=[stat])
        assert len(rows) >= 8, metric
        for env_steps, value in zip(rows.env_steps, rows[stat]):
            assert history[env_steps][f"{metric}/{stat}"] == pytest.approx(value, rel=1e-6), (metric, stat, env_steps)
    # and the folder exports to rliable's layout: one algorithm, one task, a score per seed
    table = scores.collect([out])
    summary = json.loads((out / "summary.json").read_text())
    np.testing.assert_array_equal(table.scores["ppo"][:, 0], summary["final_return_per_seed"])
    assert table.tasks == ("CartPole-v1",)


# ----------------------------------------------------------------------------- --track in a sweep

SWEPT = [
    "ppo",
    "--env",
    "CartPole-v1",
    "--num-seeds",
    "2",
    "--num-envs",
    "4",
    "--num-steps",
    "32",
    "--update-epochs",
    "1",
    "--hidden-sizes",
    "16",
    "--total-timesteps",
    "1024",
    "--num-chunks",
    "4",
    "--progress",
    "False",
    "--grid",
    "learning_rate=1e-3,3e-3",
    "--grid",
    "num_minibatches=1,2",
]  # 4 configurations in 2 compile groups (num_minibatches sets shapes), 8 updates of 128 env steps each


def test_sweep_track_logs_one_run_per_configuration(offline, capsys):
    from experiments import sweep as sweep_cli

    out = offline / "20261207-sweep-ppo"
    argv = [*SWEPT, "--out", str(out), "--track", "--wandb-project", "sweeps", "--wandb-name", "lr"]
    with jax.numpy_rank_promotion("allow"):
        result = sweep_cli.run(*sweep_cli.parse(argv))
    runs = offline_runs(out, count=4)  # without $WANDB_DIR, wandb's files are in the report folder
    by_config = {run.config["sweep_config"]: run for run in runs}
    assert sorted(by_config) == [0, 1, 2, 3]
    for c, values in enumerate(result.plan.configs):
        run = by_config[c]
        # one group per sweep (the report folder's name), each run named by its configuration
        assert (run.run.project, run.run.run_group) == ("sweeps", out.name)
        assert run.run.display_name.startswith(f"lr #{c} ") and "num_minibatches=" in run.run.display_name
        assert run.config["learning_rate"] == pytest.approx(values["learning_rate"])
        assert run.config["num_minibatches"] == values["num_minibatches"] and run.config["seeds"] == [0, 1]
        assert run.config["agent"] == "ppo" and run.config["sweep_dir"] == str(out)
        assert run.config["base_config"]["num_envs"] == 4
        # every update once, with this configuration's own curves over its 2 seeds
        assert sorted(run.history) == [128 * u for u in range(1, 9)]
        for u, step in enumerate(sorted(run.history)):
            loss = result.metrics[c]["value_loss"][:, u]
            assert run.history[step]["value_loss/mean"] == pytest.approx(float(np.mean(loss)), rel=1e-5)
            assert set(run.history[step]) >= {"episode_return/run_0", "episode_return/run_1"} or np.all(
                result.metrics[c]["episodes"][:, u] == 0
            )
    # two configurations' curves differ: no run got another's rows
    assert by_config[0].history[1024] != by_config[1].history[1024]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--wandb-name", "n"], "--wandb-name only apply with --track"),
        (["--track", "--wandb-project", ""], "--wandb-project is empty"),
    ],
)
def test_sweep_wandb_flags_are_checked_before_compiling(tmp_path, capsys, argv, message):
    from experiments import sweep as sweep_cli

    out = tmp_path / "sweep"
    code = sweep_cli.main([*SWEPT, *argv, "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.startswith(f"error: {message}") and captured.err.count("\n") == 1, captured.err
    assert "compiling" not in captured.out and not out.exists()


def test_sweep_track_is_checked_by_the_library():
    import agents
    import rl
    from rl.errors import ConfigError

    for track, field in (({"entity": "me"}, "track.project"), ({"project": "p", "team": "x"}, "track")):
        with pytest.raises(ConfigError, match=rf"^{field}="):
            rl.sweep(agents.get("ppo"), "CartPole-v1", grid={"learning_rate": [1e-3]}, seeds=1, track=track)
