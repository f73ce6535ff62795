"""Thousands of seeds: the host side at scale, on the CPU, with many seeds and tiny budgets.

* statistics over seeds (count, mean, IQM, quantiles) against NumPy/SciPy references, NaN-aware;
* ``metrics_over_seeds.csv`` grows with the updates only, and a resume cuts it back;
* ``metrics.parquet``: one part per chunk, compacted at the end; a resume drops the rows past the
  checkpoint, from parts or from a compacted file; a failed write raises one ``OSError`` that
  names the file;
* the CLI at 512 seeds: bounded files, no per-seed CSV/JSON lines or params.npz, a terminal
  summary of quantiles and the worst seeds, ``agents.load`` from the final checkpoint; a write
  that fails mid-run, then a resume, gives the files of an uninterrupted run; a divergence
  still stops with one line.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import struct
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
import scipy.stats

from experiments import train as train_cli
from rl.host import aggregate, columnar, runs, sinks

# ------------------------------------------------------------------------------ statistics over seeds


def test_over_seeds_matches_numpy_and_scipy_ignoring_nan() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(37, 9))
    values[rng.random(values.shape) < 0.3] = np.nan
    values[:, 3] = np.nan  # no seed has a value: every statistic NaN, count 0
    values[:-1, 4] = np.nan  # one seed: every statistic is its value
    got = aggregate.over_seeds(values)
    defined = [column[~np.isnan(column)] for column in values.T]
    np.testing.assert_array_equal(got["count"], [c.size for c in defined])
    for column, expected in enumerate(defined):
        if not expected.size:
            assert all(np.isnan(got[stat][column]) for stat in aggregate.STATS if stat != "count")
            continue
        assert got["mean"][column] == pytest.approx(expected.mean(), rel=1e-12)
        assert got["iqm"][column] == pytest.approx(scipy.stats.trim_mean(expected, 0.25), rel=1e-12)
        for stat, level in aggregate.QUANTILES.items():
            assert got[stat][column] == pytest.approx(np.quantile(expected, level), rel=1e-12, abs=1e-12), stat


def test_over_seeds_hand_example() -> None:
    # 8 seeds 1..8 (shuffled, one NaN seed added): IQM cuts floor(0.25 * 8) = 2 each end -> mean(3..6) = 4.5;
    # median at position 0.5 * 7 = 3.5 -> (4 + 5) / 2; q25 at 1.75 -> 2 + 0.75 = 2.75; q95 at 6.65 -> 7.65
    values = np.array([[5.0], [np.nan], [1.0], [8.0], [3.0], [2.0], [7.0], [4.0], [6.0]])
    got = {name: float(stat[0]) for name, stat in aggregate.over_seeds(values).items()}
    assert got == pytest.approx(
        {
            "count": 8,
            "mean": 4.5,
            "iqm": 4.5,
            "min": 1.0,
            "q05": 1.35,
            "q25": 2.75,
            "median": 4.5,
            "q75": 6.25,
            "q95": 7.65,
            "max": 8.0,
        }
    )


def _chunk(num_seeds: int, first: int, length: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A chunk of PPO-like metrics: no episode ends for about half of the (seed, update) pairs."""
    rng = np.random.default_rng(seed + first)
    episodes = rng.integers(0, 2, (num_seeds, length)).astype(np.int32)
    return {
        "episode_return": rng.normal(20, 5, (num_seeds, length)).astype(np.float32),  # 0 where no episode: masked
        "episodes": episodes,
        "value_loss": rng.random((num_seeds, length), dtype=np.float32),
        "nonfinite": np.zeros((num_seeds, length), np.int32),
    }


def test_aggregate_rows_are_over_the_seeds_that_ended_an_episode() -> None:
    metrics = _chunk(64, first=0, length=3)
    rows = pd.DataFrame(aggregate.chunk_rows(metrics, first_update=10, steps_per_update=16))
    assert list(rows.columns) == list(aggregate.COLUMNS)
    assert len(rows) == 3 * 4 and list(rows["update"][:4]) == [10] * 4  # update-major, one row per metric
    ret = rows[rows["metric"] == "episode_return"].reset_index(drop=True)
    ended = metrics["episodes"] > 0
    np.testing.assert_array_equal(ret["count"], ended.sum(axis=0))
    np.testing.assert_array_equal(ret["env_steps"], [176, 192, 208])  # (update + 1) * 16
    for u in range(3):
        own = metrics["episode_return"][ended[:, u], u]
        assert ret["median"][u] == pytest.approx(np.median(own), rel=1e-6)
        assert ret["mean"][u] == pytest.approx(own.mean(), rel=1e-6)
    assert rows["q95"].dtype == np.float32


@pytest.mark.parametrize("num_seeds", [1, 2, 5, 64])
def test_aggregate_csv_text_is_what_pandas_writes(tmp_path: Path, num_seeds: int) -> None:
    # row_cells formats a statistic only where it differs from the mean: the text must not change
    rng = np.random.default_rng(num_seeds)
    metrics = _chunk(num_seeds, first=0, length=9)
    awkward = np.array([0.1, -0.0, 0.0, 1e-30, 3e38, 1e16, np.nan, np.inf, -np.inf], np.float32)
    metrics["loss"] = rng.choice(awkward, (num_seeds, 9)).astype(np.float32)
    metrics["same"] = np.broadcast_to(rng.normal(size=9).astype(np.float32), (num_seeds, 9)).copy()
    metrics["negative_zero"] = np.full((num_seeds, 9), -0.0, np.float32)  # mean 0.0 (a sum), quantiles -0.0
    path = tmp_path / "metrics_over_seeds.csv"
    with aggregate.AggregateCsvSink(path) as sink:
        sink.write(metrics, 0, steps_per_update=16)
        sink.write(metrics, 9, steps_per_update=16)
    expected = io.StringIO()
    for header, first in ((True, 0), (False, 9)):
        frame = pd.DataFrame(aggregate.chunk_rows(metrics, first, 16), columns=list(aggregate.COLUMNS))
        frame.to_csv(expected, header=header, index=False, lineterminator="\n", na_rep="")
    assert path.read_text() == expected.getvalue()


def test_aggregate_csv_grows_with_updates_and_resume_cuts_it(tmp_path: Path) -> None:
    path = tmp_path / "metrics_over_seeds.csv"
    with aggregate.AggregateCsvSink(path) as sink:
        for first in (0, 4, 8):
            sink.write(_chunk(2048, first, 4), first, steps_per_update=16)
    frame = pd.read_csv(path)
    assert len(frame) == 12 * 4  # updates x metrics, whatever the number of seeds
    assert path.stat().st_size < 12 * 4 * 200
    with path.open("ab") as file:
        file.write(b"9,160,episode_ret")  # a crash in the middle of a row
    with aggregate.AggregateCsvSink(path, resume_from_update=6) as sink:  # the checkpoint was at update 6
        sink.write(_chunk(2048, 6, 6), 6, steps_per_update=16)
    again = pd.read_csv(path)
    assert list(again.groupby("update").size()) == [4] * 12  # every (update, metric) once
    pd.testing.assert_frame_equal(again[again["update"] < 6], frame[frame["update"] < 6])
    assert path.read_text().count("update,") == 1  # one header


# ------------------------------------------------------------------------------ metrics.parquet


def test_parquet_parts_compaction_and_resume(tmp_path: Path) -> None:
    path, labels = tmp_path / "metrics.parquet", [{"seed": s} for s in range(512)]
    sink = columnar.ParquetSink(path, labels)
    for first in (0, 4, 8):
        sink.write(_chunk(512, first, 4), first, steps_per_update=16)
    # killed here (no close): whole parts only, readable, covering the checkpoints they reach
    assert [p.name for p in sorted(columnar.parts_folder(path).iterdir())] == [
        "000000000-000000004.parquet",
        "000000004-000000008.parquet",
        "000000008-000000012.parquet",
    ]
    assert len(columnar.read(path)) == 512 * 12
    assert columnar.check_covers(path, 512, 8) is None
    assert "covers updates before 12" in columnar.check_covers(path, 512, 13)
    # resumed from the checkpoint at update 8: the part past it goes, training writes it again
    sink = columnar.ParquetSink(path, labels, resume_from_update=8)
    sink.write(_chunk(512, 8, 4, seed=1), 8, steps_per_update=16)
    sink.close()
    assert path.is_file() and not columnar.parts_folder(path).exists()
    frame = columnar.read(path)
    assert len(frame) == 512 * 12 and not frame.duplicated(["seed", "update"]).any()
    assert frame["value_loss"].dtype == np.float32 and frame["episodes"].dtype == np.int32
    late = frame[frame["update"] >= 8].sort_values(["seed", "update"])
    np.testing.assert_array_equal(late["value_loss"], _chunk(512, 8, 4, seed=1)["value_loss"].ravel())
    # NaN, not 0, where no episode ended
    np.testing.assert_array_equal(np.isnan(frame["episode_return"]), frame["episodes"] == 0)
    # a cleanly stopped (compacted) run resumed from update 6: back to one part [0, 6)
    sink = columnar.ParquetSink(path, labels, resume_from_update=6)
    assert not path.exists() and columnar.check_covers(path, 512, 6) is None
    assert [p.name for p in columnar.parts_folder(path).iterdir()] == ["000000000-000000006.parquet"]
    sink.write(_chunk(512, 6, 6), 6, steps_per_update=16)
    sink.close()
    assert len(columnar.read(path)) == 512 * 12


def test_parquet_is_compact(tmp_path: Path) -> None:
    # float32 noise costs at most ~4 bytes a value; labels, updates and counts almost nothing
    path = tmp_path / "metrics.parquet"
    with columnar.ParquetSink(path, [{"seed": s} for s in range(2048)]) as sink:
        for first in range(0, 16, 4):
            sink.write(_chunk(2048, first, 4), first, steps_per_update=16)
    rows = 2048 * 16
    assert path.stat().st_size < rows * (2 * 4 + 1)  # two float columns of noise, one count


def test_parquet_write_failure_names_the_file_and_keeps_earlier_parts(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "metrics.parquet"
    sink = columnar.ParquetSink(path, [{"seed": s} for s in range(4)])
    sink.write(_chunk(4, 0, 2), 0, steps_per_update=1)

    def full_disk(table, where):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(columnar, "_write_table", full_disk)
    with pytest.raises(OSError, match="No space left on device") as caught:
        sink.write(_chunk(4, 2, 2), 2, steps_per_update=1)
    assert caught.value.filename.endswith("000000002-000000004.parquet")
    assert [p.name for p in columnar.parts_folder(path).iterdir()] == ["000000000-000000002.parquet"]


def test_run_folder_sinks_by_per_seed_format(tmp_path: Path) -> None:
    assert runs.per_seed_format("auto", runs.FEW_SEEDS) == "csv"
    assert runs.per_seed_format("auto", runs.FEW_SEEDS + 1) == "parquet"
    assert runs.per_seed_format("none", 4) == "none"
    with pytest.raises(ValueError, match="per_seed_metrics must be one of"):
        runs.per_seed_format("jsonl", 4)
    expected = {"csv": {"metrics.csv", "metrics.jsonl"}, "parquet": {"metrics.parquet"}, "none": set()}
    for per_seed, files in expected.items():
        folder = tmp_path / per_seed
        with runs.metric_sinks(folder, [{"seed": s} for s in range(3)], per_seed, steps_per_update=8) as sink:
            sink.write(_chunk(3, 0, 2), 0, steps_per_update=8)
        written = {p.name for p in folder.iterdir()}
        assert written == {"metrics_over_seeds.csv", "tensorboard", *files}, per_seed


def _tfrecord_events(path: Path) -> list:
    """Parse a TFRecord event file: [len u64][crc u32][data][crc u32] per record."""
    from tensorboardX.proto import event_pb2

    data, events, position = path.read_bytes(), [], 0
    while position < len(data):
        (length,) = struct.unpack_from("<Q", data, position)
        event = event_pb2.Event()
        event.ParseFromString(data[position + 12 : position + 12 + length])
        events.append(event)
        position += 12 + length + 4
    return events


def test_tensorboard_logs_the_spread_over_seeds_not_every_seed(tmp_path: Path) -> None:
    metrics = _chunk(512, 0, 2)
    with sinks.TensorBoardSink(tmp_path / "tb", [{"seed": s} for s in range(512)], steps_per_update=10) as sink:
        sink.write(metrics, 0, steps_per_update=10)
    (event_file,) = (tmp_path / "tb").glob("events.out.tfevents.*")
    scalars = {
        (v.tag, e.step): v.simple_value
        for e in _tfrecord_events(event_file)
        for v in e.summary.value
        if v.HasField("simple_value")
    }
    ended = metrics["episodes"][:, 0] > 0
    assert scalars[("episode_return/median", 10)] == pytest.approx(np.median(metrics["episode_return"][ended, 0]))
    assert scalars[("episode_return/iqm", 10)] == pytest.approx(
        scipy.stats.trim_mean(metrics["episode_return"][ended, 0], 0.25), rel=1e-5
    )
    assert {tag.split("/")[1] for tag, _ in scalars if tag.startswith("episode_return/")} == {
        "mean",
        "iqm",
        "median",
        "q05",
        "q25",
        "q75",
        "q95",
        "min",
        "max",
    }  # no per-seed curves
    assert ("value_loss/mean", 20) in scalars


def test_seed_summary_names_the_worst_seeds() -> None:
    final = np.array([5.0, np.nan, 1.0, 9.0, 3.0])
    summary = aggregate.seed_summary(final, seeds=[10, 11, 12, 13, 14], worst=2)
    assert summary["final_return_worst"] == [{"seed": 12, "final_return": 1.0}, {"seed": 14, "final_return": 3.0}]
    assert summary["final_return_missing"] == 1
    assert summary["final_return_quantiles"]["median"] == pytest.approx(4.0)  # of 1, 3, 5, 9
    lines = aggregate.describe_seeds(summary)
    assert lines[0].startswith("  over seeds: min 1.0 | 5% ") and "IQM" in lines[0]
    assert "worst seeds: 12 (1.0), 14 (3.0); 1 seed ended no episode" in lines[1]


# ------------------------------------------------------------------------------ the CLI at 512 seeds

SEEDS = 512
CLI = [
    "ppo",
    "--eval-every",
    "0",  # evaluation episodes are tested in test_evaluation.py; here they would only compile
    "--env",
    "CartPole-v1",
    "--num-seeds",
    str(SEEDS),
    "--num-envs",
    "1",
    "--num-steps",
    "16",
    "--update-epochs",
    "1",
    "--num-minibatches",
    "1",
    "--hidden-sizes",
    "16",
    "--total-timesteps",
    str(16 * 8),
    "--num-chunks",
    "4",
    "--checkpoint-every",
    "2",
    "--progress",
    "False",
]  # 8 updates in 4 chunks of 2


def run_main(main, argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


# the tests that share the 512-seed run go to one xdist worker, so it is trained once
SHARES_THE_RUN = pytest.mark.xdist_group("test_scale_cli_512")


@pytest.fixture(scope="module")
def many_seeds_run(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("many") / "run"
    code, stdout, stderr = run_main(train_cli.main, [*CLI, "--out", str(out)])
    assert code == 0, stderr
    return out, stdout


def _parquet_rows(run: Path) -> pd.DataFrame:
    return columnar.read(run / "metrics.parquet").sort_values(["seed", "update"]).reset_index(drop=True)


@SHARES_THE_RUN
def test_many_seeds_folder_is_bounded_and_summarised(many_seeds_run) -> None:
    run, stdout = many_seeds_run
    files = {p.name for p in run.iterdir()}
    assert files == {
        "config.json",
        "metrics_over_seeds.csv",
        "metrics.parquet",
        "tensorboard",
        "curve.png",
        "checkpoints",
        "summary.json",
    }  # no metrics.csv, metrics.jsonl or params.npz
    over_seeds = pd.read_csv(run / "metrics_over_seeds.csv")
    per_seed = _parquet_rows(run)
    num_metrics = over_seeds["metric"].nunique()
    assert len(over_seeds) == 8 * num_metrics and len(per_seed) == SEEDS * 8
    assert (over_seeds[over_seeds["metric"] == "episodes"]["count"] == SEEDS).all()
    # the statistics over seeds are those of the per-seed rows
    ret = per_seed[per_seed["update"] == 7]["episode_return"].dropna()
    last = over_seeds[(over_seeds["metric"] == "episode_return") & (over_seeds["update"] == 7)].iloc[0]
    assert last["count"] == ret.size and last["median"] == pytest.approx(ret.median(), rel=1e-6)
    # what grows with seeds x updates costs at most ~4 bytes a value; the rest grows with updates
    values = SEEDS * 8 * len([c for c in per_seed.columns if c not in ("seed", "update", "env_steps")])
    assert (run / "metrics.parquet").stat().st_size < 4 * values
    folder = sum(p.stat().st_size for p in run.rglob("*") if p.is_file() and "checkpoints" not in p.parts)
    assert folder < (run / "metrics.parquet").stat().st_size + 400_000

    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["params"] == "checkpoints/8"
    assert len(summary["final_return_per_seed"]) == SEEDS and len(summary["final_return_worst"]) == 5
    assert set(summary["final_return_quantiles"]) == {"min", "q05", "q25", "median", "q75", "q95", "max"}
    assert json.loads((run / "config.json").read_text())["per_seed_metrics"] == "parquet"
    # the terminal: quantiles and the worst seeds, not 512 returns
    assert "over seeds: min" in stdout and "worst seeds:" in stdout and "per seed:" not in stdout
    assert len(stdout) < 1500, stdout


@SHARES_THE_RUN
def test_load_reads_every_seeds_parameters_from_the_final_checkpoint(many_seeds_run) -> None:
    import agents

    run, _ = many_seeds_run
    policy = agents.load(run, seed=SEEDS - 1)
    assert policy.run == SEEDS - 1 and policy.update == 8
    leaves = jax.tree.leaves(policy.all_params)
    assert all(leaf.shape[0] == SEEDS for leaf in leaves)
    first = agents.load(run)
    assert not np.array_equal(first.params["actor/linear"]["w"], policy.params["actor/linear"]["w"])


@SHARES_THE_RUN
def test_failed_write_then_resume_gives_the_files_of_an_uninterrupted_run(many_seeds_run, tmp_path, monkeypatch):
    reference, _ = many_seeds_run
    out = tmp_path / "run"
    original = columnar._write_table

    def disk_full_at_update_4(table, where):
        if "000000004-000000006" in Path(where).name:  # the third chunk, after the checkpoint at update 4
            raise OSError(errno.ENOSPC, "No space left on device")
        original(table, where)

    monkeypatch.setattr(columnar, "_write_table", disk_full_at_update_4)
    code, stdout, stderr = run_main(train_cli.main, [*CLI, "--out", str(out)])
    assert code == 1
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "000000004-000000006.parquet" in errors[0] and "No space left" in errors[0], stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["checkpoint_update"] == 4
    # metrics_over_seeds.csv got the third chunk's rows before the failure: the resume cuts them
    assert pd.read_csv(out / "metrics_over_seeds.csv")["update"].max() == 5

    monkeypatch.setattr(columnar, "_write_table", original)
    code, stdout, stderr = run_main(train_cli.main, ["--resume", str(out), "--progress", "False"])
    assert code == 0, stderr
    assert "resuming at update 4" in stdout
    assert (out / "metrics_over_seeds.csv").read_bytes() == (reference / "metrics_over_seeds.csv").read_bytes()
    pd.testing.assert_frame_equal(_parquet_rows(out), _parquet_rows(reference))
    done = json.loads((out / "summary.json").read_text())
    assert (
        done["final_return_per_seed"] == json.loads((reference / "summary.json").read_text())["final_return_per_seed"]
    )


def test_divergence_at_many_seeds_stops_with_one_line(tmp_path) -> None:
    out = tmp_path / "run"
    argv = [*CLI, "--out", str(out), "--learning-rate", "1e30", "--max-grad-norm", "1e30", "--anneal-lr", "False"]
    code, stdout, stderr = run_main(train_cli.main, argv)
    assert code == 1
    message = [line for line in stderr.splitlines() if line.startswith("error: training diverged")]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and len(summary["divergence"]) == SEEDS
    first = min(summary["divergence"], key=lambda d: d["update"])
    assert len(message) == 1 and f"at update {first['update']} of seed {first['seed']}" in message[0], stderr
    assert f"and {SEEDS - 1} more run(s)" in message[0]
    assert len(columnar.read(out / "metrics.parquet")) == SEEDS * 2  # the chunk where it diverged is kept
    assert pd.read_csv(out / "metrics_over_seeds.csv")["update"].max() == 1
