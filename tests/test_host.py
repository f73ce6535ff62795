"""Tests of the host-side pieces: statistics, metric sinks, progress display and plots."""

from __future__ import annotations

import csv
import io
import json
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rl.host import plots, progress, sinks, stats

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- stats


def test_final_return_hand_example() -> None:
    # U = 4 updates, fraction 0.5 -> window W = round(0.5 * 4) = 2: updates 2 and 3.
    episode_return = np.array(
        [
            [1.0, 2.0, 3.0, 4.0],
            [5.0, 6.0, np.nan, 999.0],  # NaN / 999 sit where episodes == 0: must be ignored
            [0.0, 0.0, 10.0, 20.0],
        ]
    )
    episodes = np.array([[1, 0, 2, 1], [3, 1, 0, 0], [0, 0, 1, 3]])
    final = stats.final_return(episode_return, episodes, fraction=0.5)
    # run 0: (2 * 3 + 1 * 4) / (2 + 1) = 10 / 3   (episode-weighted, not (3 + 4) / 2 = 3.5)
    # run 1: no episode in updates 2..3 -> NaN
    # run 2: (1 * 10 + 3 * 20) / (1 + 3) = 70 / 4 = 17.5
    np.testing.assert_allclose(final, [10.0 / 3.0, np.nan, 17.5])


def test_final_return_window_is_at_least_one_update() -> None:
    # fraction 0.05 of U = 4 rounds to 0 updates -> window of 1: the last update only.
    final = stats.final_return(np.array([[1.0, 2.0, 3.0, 4.0]]), np.ones((1, 4)), fraction=0.05)
    np.testing.assert_allclose(final, [4.0])


def test_final_return_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="same shape"):
        stats.final_return(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="fraction"):
        stats.final_return(np.zeros((2, 3)), np.zeros((2, 3)), fraction=0.0)


def test_iqm_hand_example() -> None:
    # 8 values, 25% cut from each end = 2 values each side: mean(3, 4, 5, 6) = 18 / 4 = 4.5
    assert stats.iqm(np.array([100.0, 1, 2, 3, 4, 5, 6, 7])) == pytest.approx(4.5)
    # along an axis: rows [1..8] and [2..9] -> 4.5 and 5.5
    rows = np.stack([np.arange(1.0, 9.0), np.arange(2.0, 10.0)])
    np.testing.assert_allclose(stats.iqm(rows, axis=-1), [4.5, 5.5])


def test_bootstrap_ci_covers_true_mean_and_is_deterministic() -> None:
    rng = np.random.default_rng(1)
    sample = rng.normal(5.0, 2.0, size=200)
    low, high = stats.bootstrap_ci(sample, seed=3)
    assert low < 5.0 < high
    # width ~ 2 * 1.96 * 2 / sqrt(200) = 0.55
    assert 0.4 < high - low < 0.7
    assert stats.bootstrap_ci(sample, seed=3) == (low, high)
    assert stats.bootstrap_ci(sample, seed=4) != (low, high)


def test_bootstrap_ci_coverage_is_near_nominal() -> None:
    rng = np.random.default_rng(0)
    trials = 300
    covered = sum(
        low <= 0.0 <= high
        for low, high in (
            stats.bootstrap_ci(rng.normal(0.0, 1.0, size=40), num_resamples=2_000, seed=i) for i in range(trials)
        )
    )
    # nominal 95%; the percentile bootstrap runs slightly narrow at N = 40. Binomial sd ~ 1.3%.
    assert 0.88 <= covered / trials <= 0.99


def test_bootstrap_ci_single_run_and_other_statistic() -> None:
    assert stats.bootstrap_ci(np.array([3.5])) == (3.5, 3.5)
    low, high = stats.bootstrap_ci(np.arange(20.0), statistic=stats.iqm, num_resamples=500)
    assert low <= stats.iqm(np.arange(20.0)) <= high
    with pytest.raises(ValueError, match="NaN"):
        stats.bootstrap_ci(np.array([1.0, np.nan]))


def test_stratified_bootstrap_resamples_within_tasks() -> None:
    # Task 0 scores all 0, task 1 all 1. Resampling runs within each task keeps every resample's
    # mean at exactly (0 + 1) / 2 = 0.5; pooled resampling would vary it.
    scores = np.stack([np.zeros(10), np.ones(10)], axis=1)  # [runs=10, tasks=2]
    interval = stats.stratified_bootstrap_ci(scores, statistic=np.mean, num_resamples=200)
    assert interval == stats.Interval(0.5, 0.5, 0.5)


def test_stratified_bootstrap_dict_and_iqm_point() -> None:
    rng = np.random.default_rng(0)
    scores = {"ppo": rng.normal(1.0, 0.3, (10, 3)), "dqn": rng.normal(0.5, 0.3, (10, 3))}
    intervals = stats.stratified_bootstrap_ci(scores, num_resamples=300)
    assert set(intervals) == {"ppo", "dqn"}
    for name, (point, low, high) in intervals.items():
        assert point == pytest.approx(stats.iqm(scores[name]))
        assert low <= point <= high
    assert intervals["dqn"].high < intervals["ppo"].low


def test_performance_profile_hand_example() -> None:
    # scores 1, 2, 3, 4: fraction > 0 is 4/4, > 2.5 is 2/4 (3 and 4), > 5 is 0/4
    profile, low, high = stats.performance_profile(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 2.5, 5.0]))
    np.testing.assert_allclose(profile, [1.0, 0.5, 0.0])
    assert np.all(low <= profile) and np.all(profile <= high)
    assert low[0] == high[0] == 1.0 and low[2] == high[2] == 0.0


def test_curve_mean_ci_shapes_and_nan_handling() -> None:
    values = np.array([[1.0, 5.0, np.nan, 2.0], [3.0, 999.0, np.nan, 4.0], [5.0, 7.0, np.nan, 6.0]])
    counts = np.array([[1, 1, 0, 1], [1, 0, 0, 1], [1, 2, 0, 1]])
    mean, low, high = stats.curve_mean_ci(values, counts)
    assert mean.shape == low.shape == high.shape == (4,)
    # update 0: (1 + 3 + 5) / 3 = 3; update 1 skips run 1: (5 + 7) / 2 = 6; update 2: no run -> NaN
    np.testing.assert_allclose(mean, [3.0, 6.0, np.nan, 4.0])
    assert np.isnan(low[2]) and np.isnan(high[2])
    finite = ~np.isnan(mean)
    assert np.all(low[finite] <= mean[finite]) and np.all(mean[finite] <= high[finite])
    # band stays within the range of the valid runs
    assert low[0] >= 1.0 and high[0] <= 5.0 and low[1] >= 5.0 and high[1] <= 7.0
    # deterministic
    np.testing.assert_array_equal(stats.curve_mean_ci(values, counts)[1], low)


def test_curve_mean_ci_single_valid_run_and_no_counts() -> None:
    values = np.array([[2.0, 3.0], [8.0, 9.0]])
    mean, low, high = stats.curve_mean_ci(values, np.array([[1, 1], [0, 1]]))
    # update 0 has only run 0: every resample that drew it has mean 2
    assert (mean[0], low[0], high[0]) == (2.0, 2.0, 2.0)
    mean_all, _, _ = stats.curve_mean_ci(values, None)
    np.testing.assert_allclose(mean_all, [5.0, 6.0])


def test_column_nanquantile_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(50, 6))
    samples[rng.random(samples.shape) < 0.3] = np.nan
    samples[:, 5] = np.nan
    low, high = stats._column_nanquantile(samples, (0.025, 0.975))
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expected = np.nanquantile(samples, [0.025, 0.975], axis=0)
    np.testing.assert_allclose(low, expected[0])
    np.testing.assert_allclose(high, expected[1])


# ----------------------------------------------------------------------------- sinks

RUN_LABELS = [
    {"config": 0, "seed": np.int64(0), "learning_rate": np.float32(3e-4)},
    {"config": 1, "seed": np.int64(1), "learning_rate": 1e-3},
]


def _chunk(num_updates: int = 3, offset: float = 0.0) -> dict[str, np.ndarray]:
    """Metrics for 2 runs: run 0 completes no episode in its first update."""
    episodes = np.ones((2, num_updates), dtype=np.int32)
    episodes[0, 0] = 0
    episode_return = np.arange(2 * num_updates, dtype=np.float32).reshape(2, num_updates) + offset
    episode_return[0, 0] = 0.0  # what a jitted masked mean typically leaves behind
    return {
        "episode_return": episode_return,
        "episodes": episodes,
        "loss": np.full((2, num_updates), 0.5, dtype=np.float32),
    }


def test_csv_round_trip_and_missing_returns(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    with sinks.CsvSink(path, RUN_LABELS) as sink:
        sink.write(_chunk(), first_update=0, steps_per_update=128)
        # readable mid-run: flushed after every write
        assert len(path.read_text().splitlines()) == 1 + 2 * 3
    frame = pd.read_csv(path)
    assert list(frame.columns) == [
        "config",
        "seed",
        "learning_rate",
        "update",
        "env_steps",
        "episode_return",
        "episodes",
        "loss",
    ]
    assert len(frame) == 6
    assert frame["env_steps"].tolist() == [128, 256, 384] * 2  # (update + 1) * 128
    first = frame[(frame.seed == 0) & (frame["update"] == 0)].iloc[0]
    assert np.isnan(first.episode_return) and first.episodes == 0
    assert frame.episode_return.notna().sum() == 5
    assert frame[(frame.seed == 1) & (frame["update"] == 2)].episode_return.item() == 5.0
    # float32 label 3e-4 and float32 loss 0.5 come back as the decimals they stand for
    assert frame.learning_rate.tolist() == [3e-4] * 3 + [1e-3] * 3
    # the raw row holds an empty cell, not a fake 0
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert rows[0]["episode_return"] == ""


def test_csv_resume_appends_without_second_header(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    with sinks.CsvSink(path, RUN_LABELS) as sink:
        sink.write(_chunk(), first_update=0, steps_per_update=10)
    with path.open("a") as file:
        file.write("0,0,0.0003,3,4")  # partial row of a crash mid-write: dropped on resume
    with sinks.CsvSink(path, RUN_LABELS, resume=True) as sink:
        sink.write(_chunk(), first_update=3, steps_per_update=10)
    lines = path.read_text().splitlines()
    assert sum(line.startswith("config,") for line in lines) == 1
    frame = pd.read_csv(path)
    assert len(frame) == 12
    assert sorted(frame["update"].unique().tolist()) == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="columns"):
        with sinks.CsvSink(path, RUN_LABELS, resume=True) as sink:
            sink.write({"loss": np.zeros((2, 1))}, first_update=6, steps_per_update=10)


def test_jsonl_round_trip_nulls_and_resume(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    with sinks.JsonlSink(path, RUN_LABELS) as sink:
        sink.write(_chunk(), first_update=0, steps_per_update=64)
    with sinks.JsonlSink(path, RUN_LABELS, resume=True) as sink:
        sink.write(_chunk(num_updates=1), first_update=3, steps_per_update=64)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 2 * 3 + 2 * 1
    first = records[0]
    assert first == {
        "config": 0,
        "seed": 0,
        "learning_rate": 3e-4,
        "update": 0,
        "env_steps": 64,
        "episode_return": None,
        "episodes": 0.0,
        "loss": 0.5,
    }
    assert type(first["seed"]) is int and type(first["loss"]) is float
    assert records[-1]["update"] == 3 and records[-1]["env_steps"] == 256
    frame = pd.read_json(path, lines=True)
    assert frame.episode_return.isna().sum() == 2  # update 0 and update 3 of run 0


def _awkward_floats(rng: np.random.Generator, n: int) -> np.ndarray:
    """Normal, tiny, huge, whole, signed-zero and non-finite float32 values."""
    special = np.array([0.1, -0.0, 0.0, 1e-30, 3e38, 500.0, 1e16, 1e-5, 123456789.0, np.nan, np.inf, -np.inf])
    values = rng.normal(0, 10, n) * 10.0 ** rng.integers(-8, 9, n)
    chosen = rng.random(n) < 0.3
    values[chosen] = rng.choice(special, int(chosen.sum()))
    return values.astype(np.float32)


def test_csv_sink_text_is_what_pandas_writes(tmp_path: Path) -> None:
    # the sink formats cells itself (4x faster than DataFrame.to_csv at one seed): byte for byte the same
    import pandas as pd

    rng = np.random.default_rng(3)
    labels = [
        {"config": 'a,"b"', "seed": 0, "lr": 0.001, "on": True, "tags": [1, 2]},
        {"config": "line\nbreak", "seed": 1, "lr": 1e-4, "on": False, "tags": None},
        {"config": "plain", "seed": 2, "lr": None, "on": 1, "tags": (3,)},
    ]
    metrics = {
        "episode_return": _awkward_floats(rng, 3 * 7).reshape(3, 7),
        "episodes": rng.integers(0, 2, (3, 7)).astype(np.int32),
        "loss": _awkward_floats(rng, 3 * 7).reshape(3, 7),
        "wide": rng.normal(size=(3, 7)),  # float64 keeps its own shortest decimal
    }
    path = tmp_path / "m.csv"
    with sinks.CsvSink(path, labels) as sink:
        sink.write(metrics, first_update=5, steps_per_update=16)
        sink.write(metrics, first_update=12, steps_per_update=16)
    expected = io.StringIO()
    for header, first in ((True, 5), (False, 12)):
        table = sinks.chunk_table(labels, metrics, first, 16)
        pd.DataFrame(table).to_csv(expected, header=header, index=False, lineterminator="\n", na_rep="")
    assert path.read_text() == expected.getvalue()


def test_tensorboard_events_are_encoded_as_protobuf_would():
    # TensorBoardSink encodes its events itself (building protobuf messages cost a 110 to 200 ms
    # stall once per run): byte for byte what the messages serialize to
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.summary_pb2 import Summary

    long_tag = "episode_return/" + "q" * 200  # a length past one varint byte
    cases = [
        ([("loss/mean", 0.25), ("é/ü", -0.0), (long_tag, 1e-40)], 300, 1_700_000_000.123),
        ([("", 0.0), ("x", np.inf), ("y", -np.inf), ("big", 1e39)], 2**40 + 7, 0.0),
        ([("only", 3.5)], 0, 12.5),  # proto3 leaves out a zero step (and a zero wall time above)
    ]
    for values, step, wall_time in cases:
        with np.errstate(over="ignore"):
            summary = Summary(value=[Summary.Value(tag=tag, simple_value=value) for tag, value in values])
        expected = Event(wall_time=wall_time, step=step, summary=summary).SerializeToString()
        assert sinks.scalar_event(values, step, wall_time) == expected
        parsed = Event.FromString(sinks.scalar_event(values, step, wall_time))
        assert [v.tag for v in parsed.summary.value] == [tag for tag, _ in values]


def test_float32_values_keep_their_shortest_decimal(tmp_path: Path) -> None:
    metrics = {"loss": np.array([[0.1, np.inf]], dtype=np.float32)}
    with sinks.CsvSink(tmp_path / "m.csv", [{"seed": 0}]) as csv_sink:
        csv_sink.write(metrics, first_update=0, steps_per_update=1)
    with sinks.JsonlSink(tmp_path / "m.jsonl", [{"seed": 0}]) as jsonl_sink:
        jsonl_sink.write(metrics, first_update=0, steps_per_update=1)
    assert (tmp_path / "m.csv").read_text().splitlines()[1:] == ["0,0,1,0.1", "0,1,2,inf"]
    # JSON has no infinity: written as null
    assert [json.loads(line)["loss"] for line in (tmp_path / "m.jsonl").read_text().splitlines()] == [0.1, None]


def test_sinks_reject_mismatched_runs(tmp_path: Path) -> None:
    with sinks.CsvSink(tmp_path / "m.csv", RUN_LABELS) as sink:
        with pytest.raises(ValueError, match="run labels"):
            sink.write({"loss": np.zeros((3, 2))}, first_update=0, steps_per_update=1)
        with pytest.raises(ValueError, match="episodes"):
            sink.write({"episode_return": np.zeros((2, 2))}, first_update=0, steps_per_update=1)
    with pytest.raises(ValueError, match="same label keys"):
        sinks.JsonlSink(tmp_path / "m.jsonl", [{"seed": 0}, {"config": 1}])


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


def test_tensorboard_sink_writes_events(tmp_path: Path) -> None:
    with sinks.TensorBoardSink(tmp_path / "tb", RUN_LABELS) as sink:
        sink.write(_chunk(), first_update=0, steps_per_update=100)
    (event_file,) = (tmp_path / "tb").glob("events.out.tfevents.*")
    scalars = {
        (value.tag, event.step): value.simple_value
        for event in _tfrecord_events(event_file)
        for value in event.summary.value
        if value.HasField("simple_value")
    }
    # update 0: run 0 has no episode, so the mean return is run 1's alone (3.0)
    assert scalars[("episode_return/mean", 100)] == pytest.approx(3.0)
    # update 1: mean of runs 1.0 and 4.0
    assert scalars[("episode_return/mean", 200)] == pytest.approx(2.5)
    assert ("episode_return/run_0", 100) not in scalars
    assert scalars[("episode_return/run_0", 300)] == pytest.approx(2.0)
    assert scalars[("loss/mean", 300)] == pytest.approx(0.5)


def test_tensorboard_records_are_checksummed_natively_and_check_out(tmp_path: Path) -> None:
    """tensorboardX checksums every record with the crc32c package (a dependency: its pure-Python
    fallback costs the host several ms per chunk); the checksums must match the pure-Python CRC."""
    from tensorboardX import crc32c as tb_crc

    assert tb_crc._crc32c_native is not None, "the crc32c package is not importable (pip install crc32c)"

    def masked(data: bytes) -> int:  # TFRecord's masked CRC, from tensorboardX's pure-Python CRC-32C
        x = tb_crc._crc32c(data) & 0xFFFFFFFF
        return (((x >> 15) | (x << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    with sinks.TensorBoardSink(tmp_path / "tb", RUN_LABELS) as sink:
        sink.write(_chunk(), first_update=0, steps_per_update=100)
    (event_file,) = (tmp_path / "tb").glob("events.out.tfevents.*")
    data, position, records = event_file.read_bytes(), 0, 0
    while position < len(data):
        header = data[position : position + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack_from("<I", data, position + 8)
        body = data[position + 12 : position + 12 + length]
        (body_crc,) = struct.unpack_from("<I", data, position + 12 + length)
        assert (header_crc, body_crc) == (masked(header), masked(body)), f"record {records}"
        position, records = position + 16 + length, records + 1
    assert records >= 4  # file version, run labels and one record per update of the chunk


def test_tensorboard_sink_on_resume_purges_points_past_the_checkpoint(tmp_path: Path) -> None:
    with sinks.TensorBoardSink(tmp_path / "tb", RUN_LABELS) as sink:
        sink.write(_chunk(), first_update=0, steps_per_update=100)  # steps 100, 200, 300
    with sinks.TensorBoardSink(tmp_path / "tb", RUN_LABELS, resume_from_update=1, steps_per_update=100) as sink:
        sink.write(_chunk(), first_update=1, steps_per_update=100)  # steps 200, 300, 400 again
    first, resumed = sorted((tmp_path / "tb").glob("events.out.tfevents.*"), key=lambda p: "resumed" in p.name)
    assert ("episode_return/mean", 300) in {  # the interrupted run's file is intact
        (v.tag, e.step) for e in _tfrecord_events(first) for v in e.summary.value
    }
    events = _tfrecord_events(resumed)
    # the interrupted run logged update 0 (step 100) before the checkpoint: keep it, purge from 101 on
    starts = [e for e in events if e.HasField("session_log") and e.session_log.status == e.session_log.START]
    assert [e.step for e in starts] == [101]
    assert not any(v.tag == "run_labels" for e in events for v in e.summary.value)  # logged once, not twice


def test_multi_sink_forwards_and_closes_all(tmp_path: Path) -> None:
    csv_sink = sinks.CsvSink(tmp_path / "m.csv", RUN_LABELS)
    jsonl_sink = sinks.JsonlSink(tmp_path / "m.jsonl", RUN_LABELS)
    multi = sinks.MultiSink([csv_sink, jsonl_sink])
    assert isinstance(multi, sinks.MetricSink)
    multi.write(_chunk(), first_update=0, steps_per_update=1)
    multi.close()
    assert len(pd.read_csv(tmp_path / "m.csv")) == len(pd.read_json(tmp_path / "m.jsonl", lines=True)) == 6


# ----------------------------------------------------------------------------- progress


class _FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_plain_lines_when_not_a_tty(capsys: pytest.CaptureFixture[str]) -> None:
    with progress.Progress(total_env_steps=1_000, num_runs=4) as bar:
        bar.advance(500, mean_return=12.25)
        bar.advance(500, mean_return=None)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert "500/1,000" in lines[0] and "return 12.25" in lines[0] and "steps/s" in lines[0]
    assert "[100.0%]" in lines[1] and "return n/a" in lines[1]
    assert "\x1b" not in "".join(lines)


def test_progress_disabled_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with progress.Progress(total_env_steps=10, num_runs=1, enabled=False) as bar:
        bar.advance(10, 1.0)
    assert capsys.readouterr().out == ""
    assert bar.done == 10


def test_progress_rich_bar_on_a_tty() -> None:
    out = _FakeTty()
    with progress.Progress(total_env_steps=2_000, num_runs=2, file=out) as bar:
        bar.advance(1_000, mean_return=3.0)
        bar.advance(1_000, mean_return=4.5)
    text = out.getvalue()
    assert "2,000/2,000" in text and "return 4.50" in text


def test_progress_needs_context() -> None:
    with pytest.raises(RuntimeError, match="with Progress"):
        progress.Progress(10, 1).advance(1)


# ----------------------------------------------------------------------------- plots


def test_plot_learning_curve_writes_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = np.cumsum(rng.normal(1.0, 1.0, (5, 50)), axis=1)
    counts = (rng.random((5, 50)) > 0.2).astype(np.int32)
    counts[:, 10] = 0  # an update without any episode: a gap, not a crash
    path = plots.plot_learning_curve(tmp_path / "out" / "curve.png", np.arange(1, 51) * 128, values, counts, "test")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in path.parent.iterdir()] == ["curve.png"]  # no temporary file left


def test_plot_curves_and_final_vs_param_write_png(tmp_path: Path) -> None:
    steps = np.arange(1, 21) * 10.0
    curves = {
        "lr=1e-3": plots.Curve(steps, steps / 10, steps / 10 - 1, steps / 10 + 1),
        "lr=3e-4": (steps[:10], np.ones(10), np.zeros(10), np.full(10, 2.0)),
    }
    assert plots.plot_curves(tmp_path / "curves.png", curves, "sweep").read_bytes()[:8] == PNG_MAGIC
    path = plots.plot_final_vs_param(
        tmp_path / "final.png",
        param_values=np.array([1e-3, 1e-4, 3e-4]),
        finals_mean=np.array([10.0, 5.0, np.nan]),
        finals_low=np.array([8.0, 4.0, np.nan]),
        finals_high=np.array([12.0, 6.0, np.nan]),
        param_name="learning_rate",
        log_x=True,
    )
    assert path.read_bytes()[:8] == PNG_MAGIC
