"""Faults and absurd input: each ends in one clear line, and nothing saved is lost.

* a run folder is claimed by one process (a lock); a second training, resume or sweep of it is
  refused;
* a write that fails (file size limit standing in for a full disk) stops the run with one
  ``error:`` line, keeps the checkpoints saved before it, and leaves summary.json saying
  ``failed`` and why; the run then resumes;
* ``--resume`` checks config.json against the checkpoint before it changes any file, refuses an
  edited seed list or learning rate naming the field, and falls back past a damaged newest
  checkpoint (so does ``experiments.evaluate``);
* the memory a configuration needs is estimated before compiling: absurd magnitudes are refused
  naming the field;
* every unusable path or number given to train, sweep and evaluate is one ``error:`` line (exit 2),
  never a traceback, and leaves no folder behind; ``evaluate --out`` never replaces a file;
* checkpoints are also saved on wall time (``--checkpoint-seconds``).

Training tests use a tiny PPO (16 units, 16 updates of 32 env steps) in-process, or in a
subprocess where the process needs a file size limit.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import pandas as pd
import pytest

from experiments import evaluate as evaluate_cli
from experiments import sweep as sweep_cli
from experiments import train as train_cli
from rl.device import memory
from rl.engine.checkpoint import Checkpointer, CheckpointWriteError, short_reason
from rl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

TINY = [
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
    "--progress",
    "False",
]  # 16 updates in 8 chunks of 2


@pytest.fixture(autouse=True, scope="module")
def allow_rank_promotion():
    """Haiku's orthogonal initializer promotes ranks; another module may set 'raise' globally."""
    with jax.numpy_rank_promotion("allow"):
        yield


def run_main(main, argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def one_error_line(err: str) -> str:
    """The single ``error:`` line of stderr (and no traceback)."""
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (to show that nothing changed)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def no_training(monkeypatch, tmp_path):
    """Fail at once if an input reaches training; run in tmp_path."""
    import rl
    import rl.engine.runner

    def refuse(*args, **kwargs):
        raise AssertionError("an unusable input reached training")

    monkeypatch.setattr(rl.engine.runner, "train", refuse)
    monkeypatch.setattr(rl, "sweep", refuse)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ------------------------------------------------------------------ an interrupted run, saved on the clock


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """A run stopped by Ctrl-C after update 8 that saved a checkpoint after every chunk.

    ``--checkpoint-every 0`` turns the chunk count off, and ``--checkpoint-seconds`` (a tiny
    value) makes every chunk due on the clock: the saves are the time-based ones.
    """
    from rl.host import sinks

    out = tmp_path_factory.mktemp("interrupted") / "run"
    original, chunks = sinks.CsvSink.write, []

    def write_then_ctrl_c(self, *args, **kwargs):
        original(self, *args, **kwargs)
        chunks.append(1)
        if len(chunks) == 3:  # chunk 4 (updates 7, 8) computes meanwhile: it finishes and is saved
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sinks.CsvSink, "write", write_then_ctrl_c)
        code, stdout, stderr = run_main(
            train_cli.main,
            [
                *TINY,
                "--out",
                str(out),
                "--checkpoint-every",
                "0",
                "--checkpoint-seconds",
                "1e-6",
                "--keep-checkpoints",
                "3",
            ],
        )
    assert code == 128 + signal.SIGINT, stderr
    return out


def copy_of(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


def test_checkpoints_are_saved_on_the_clock(interrupted):
    config = json.loads((interrupted / "config.json").read_text())
    assert config["checkpoint_every"] == 0 and config["checkpoint_seconds"] == 1e-6
    summary = json.loads((interrupted / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["checkpoint_update"] == 8
    # a save after every chunk (2 updates each), the newest 3 kept: only the clock made them due
    assert Checkpointer(interrupted / "checkpoints").steps() == [4, 6, 8]


def test_checkpointer_due_on_chunks_or_seconds_whichever_first(monkeypatch, tmp_path):
    import rl.engine.checkpoint as ckpt

    now = [1000.0]
    monkeypatch.setattr(ckpt.time, "monotonic", lambda: now[0])
    with Checkpointer(tmp_path / "checkpoints", every=5, seconds=60.0) as c:
        now[0] += 500.0  # compiling: the clock starts at the first due(), after the first chunk
        assert not c.due(1, 20)
        now[0] += 59.0
        assert not c.due(2, 20)
        now[0] += 1.0  # 60 s since the first chunk: due on the clock
        assert c.due(3, 20)
        assert c.due(5, 20) and c.due(20, 20)  # every 5 chunks, and the last chunk
    with pytest.raises(ConfigError, match="checkpoint_seconds"):
        Checkpointer(tmp_path / "checkpoints", seconds=float("nan"))


# ------------------------------------------------------------------ one process per run folder


def test_a_run_folder_is_claimed_by_one_process(interrupted, tmp_path, no_training):
    run = copy_of(interrupted, tmp_path)
    before = snapshot(run)
    new = tmp_path / "new"
    # another process holds both folders (as a training in progress would)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys\nfrom experiments.train import claim_folder\n"
                "a = claim_folder(sys.argv[1], '--out', empty=True)\nb = claim_folder(sys.argv[2], '--resume', empty=False)\n"
                "print('held', flush=True)\nsys.stdin.read()\n"
            ),
            str(new),
            str(run),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        for main, argv in (
            (train_cli.main, [*TINY, "--out", str(new)]),
            (train_cli.main, ["--resume", str(run)]),
            (sweep_cli.main, ["ppo", "--out", str(new), "--grid", "learning_rate=1e-3,1e-4"]),
        ):
            code, _, err = run_main(main, argv)
            assert code == 2 and "is in use by another process" in one_error_line(err), err
    finally:
        holder.communicate("")
    assert snapshot(run) == before and not any(new.iterdir())
    # once the holder has ended, the folder is free again (the kernel dropped its lock)
    with train_cli.claim_folder(new, "--out", empty=True):
        pass


def test_two_trainings_of_one_new_folder_start_one(tmp_path, no_training):
    out = tmp_path / "run"
    with train_cli.claim_folder(out, "--out", empty=True):  # the first, between its check and its writes
        code, _, err = run_main(train_cli.main, [*TINY, "--out", str(out)])
    assert code == 2 and "in use by another process" in one_error_line(err)
    assert list(out.iterdir()) == []


# ------------------------------------------------------------------ a full disk (a file size limit)


# A child under ``ulimit -f`` may leave truncated entries in the session's shared compilation cache
# (tests/conftest.py), which other tests would then read (and warn about): it neither reads nor writes it.
WITHOUT_SHARED_CACHE = {**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "false"}


def limited(argv: list[str], limit_kib: int | None = None) -> list[str]:
    """``argv`` run through bash with SIGXFSZ ignored (a write past the limit fails with EFBIG,
    as on a full disk) and, with ``limit_kib``, ``ulimit -f`` (KiB). ``exec`` keeps the pid."""
    import shlex

    limit = f"ulimit -f {limit_kib}; " if limit_kib is not None else ""
    return ["bash", "-c", f"trap '' XFSZ; {limit}exec {shlex.join(argv)}"]


SLOW_CHUNKS = """
import sys, time
from rl.host import sinks
original = sinks.CsvSink.write
def slow_write(self, *args, **kwargs):
    original(self, *args, **kwargs)
    time.sleep(0.3)  # room for the test to act between chunks
sinks.CsvSink.write = slow_write
from experiments.train import main
sys.exit(main(sys.argv[1:]))
"""


def assert_failed_cleanly(out: Path, code: int, stderr: str, reason: str) -> dict:
    assert code == 1, stderr
    line = one_error_line(stderr)
    assert reason in line and "resume with: python -m experiments.train --resume" in line, line
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and reason in summary["error"]
    assert summary["checkpoint_update"] is not None
    assert summary["checkpoint_update"] in Checkpointer(out / "checkpoints").steps()
    return summary


def test_full_disk_stops_with_one_line_keeps_the_checkpoints_and_resumes(tmp_path):
    """With ``ulimit -f`` the metric or TensorBoard file hits the limit after a few chunks.

    Before, the TensorBoard writer thread died and the loop blocked forever (deaf to SIGTERM).
    """
    out = tmp_path / "run"
    argv = [*TINY, "--total-timesteps", "4096", "--checkpoint-every", "1", "--out", str(out)]  # 128 updates
    proc = subprocess.run(
        limited([sys.executable, "-m", "experiments.train", *argv], limit_kib=40),
        cwd=ROOT,
        env=WITHOUT_SHARED_CACHE,
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = assert_failed_cleanly(out, proc.returncode, proc.stderr, "File too large")
    assert 0 < summary["num_updates"] < 128
    assert pd.read_csv(out / "metrics.csv", on_bad_lines="skip").shape[0] >= 2 * summary["checkpoint_update"]

    code, stdout, stderr = run_main(train_cli.main, ["--resume", str(out), "--progress", "False"])
    assert code == 0, stderr
    frame = pd.read_csv(out / "metrics.csv")
    assert len(frame) == 2 * 128 and not frame.duplicated(["seed", "update"]).any()
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"


def test_a_failed_checkpoint_write_keeps_the_saved_ones(tmp_path):
    """The limit is lowered under the running process after its first checkpoint: the next save fails.

    Before, orbax's failed background write ended in 853 lines of traceback.
    """
    out = tmp_path / "run"
    argv = [
        *TINY,
        "--hidden-sizes",
        "64",
        "64",
        "--checkpoint-every",
        "2",
        "--checkpoint-seconds",
        "0",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(
        limited([sys.executable, "-c", SLOW_CHUNKS, *argv]),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not (out / "checkpoints" / "4").is_dir():  # orbax renames a finished save to its step
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.02)
        # room for the metric files (a few KB), not for the next checkpoint's data file (~100 KB)
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (50_000, 50_000))
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    summary = assert_failed_cleanly(out, proc.returncode, stderr, "could not write a checkpoint")
    assert "File too large" in summary["error"] and summary["checkpoint_update"] == 4
    assert len(stderr.splitlines()) == 1, stderr  # no orbax log pages, no late tracebacks
    assert Checkpointer(out / "checkpoints").steps() == [4]


def test_a_failed_final_checkpoint_write_fails_the_run(tmp_path):
    """The final save's files are written while the CLI plots; a failure there still ends the run ``failed``.

    Only the final save (no mid-run ones), of a state with 16,384 envs per seed: each env-state
    leaf (128 KB, the observations 512 KB) is past the limit, which leaves room for every other
    file (curve.png ~40 KB, params.npz ~6 KB, the metric files a few KB). Sized by leaf, not by
    total: orbax may write the leaves in one data file or in several.
    """
    out = tmp_path / "run"
    argv = [
        *TINY,
        "--num-envs",
        "16384",
        "--total-timesteps",
        str(2 * 16384 * 8),
        "--checkpoint-seconds",
        "0",
        "--out",
        str(out),
    ]  # 2 updates
    proc = subprocess.run(
        limited([sys.executable, "-m", "experiments.train", *argv], limit_kib=100),
        cwd=ROOT,
        env=WITHOUT_SHARED_CACHE,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = one_error_line(proc.stderr)
    assert "could not write a checkpoint" in line and "no checkpoint was saved" in line, line
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "File too large" in summary["error"]
    assert summary["checkpoint_update"] is None and Checkpointer(out / "checkpoints").steps() == []
    assert len(pd.read_csv(out / "metrics.csv")) == 2 * 2  # every update was trained and logged


def test_checkpoint_write_error_is_one_line():
    err = ValueError(
        'OUT_OF_RANGE: Error writing "x" in OCDBT database: Failed writing: "/a/b": '
        "Failed to write 100206 bytes to file 15: File too large [os_error_code='27'] "
        "[tensorstore_spec='{...}']"
    )
    assert short_reason(err) == "File too large (errno 27)"
    assert issubclass(CheckpointWriteError, OSError)


# ------------------------------------------------------------------ resume: check everything first


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda c: c.update(seeds=[5, 6]), "seeds"),
        (lambda c: c["hyper"].update(learning_rate=1e-3), "hyper.learning_rate"),
        (lambda c: c["config"].update(num_envs=8, total_timesteps=1024), "config.num_envs"),
    ],
)
def test_resume_refuses_an_edited_config_and_changes_nothing(interrupted, tmp_path, edit, field):
    run = copy_of(interrupted, tmp_path)
    config = json.loads((run / "config.json").read_text())
    edit(config)
    (run / "config.json").write_text(json.dumps(config))
    before = snapshot(run)
    code, stdout, stderr = run_main(train_cli.main, ["--resume", str(run), "--progress", "False"])
    assert code == 2
    line = one_error_line(stderr)
    assert "no longer matches the checkpoint" in line and f"{field} is" in line, line
    assert snapshot(run) == before  # not a byte changed: the run can still be resumed once config.json is back


def _damage(checkpoint: Path) -> None:
    """Zero every data file of a checkpoint's state (as a bad disk or a half-copied folder would)."""
    for path in (checkpoint / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(b"\0" * path.stat().st_size)


def test_resume_and_evaluate_fall_back_past_a_damaged_newest_checkpoint(interrupted, tmp_path):
    run = copy_of(interrupted, tmp_path)
    _damage(run / "checkpoints" / "8")

    code, stdout, stderr = run_main(evaluate_cli.main, [str(run), "--episodes", "2"])
    assert code == 0, stderr
    assert "checkpoint(s) at update 8" in stderr and "using the newest good one, at update 6" in stderr
    assert "checkpoint at update 6" in stdout
    assert (run / "checkpoints" / "8").is_dir()  # evaluating changes nothing

    code, stdout, stderr = run_main(train_cli.main, ["--resume", str(run), "--progress", "False"])
    assert code == 0, stderr
    assert "using the newest good one, at update 6" in stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_at_update"] == 6
    frame = pd.read_csv(run / "metrics.csv")
    assert len(frame) == 2 * 16 and not frame.duplicated(["seed", "update"]).any()
    assert (run / "checkpoints" / "8.damaged").is_dir()  # kept aside, never deleted


def test_resume_with_every_checkpoint_damaged_is_one_line_and_changes_nothing(interrupted, tmp_path):
    run = copy_of(interrupted, tmp_path)
    for step in (4, 6, 8):
        _damage(run / "checkpoints" / str(step))
    before = snapshot(run)
    code, _, stderr = run_main(train_cli.main, ["--resume", str(run), "--progress", "False"])
    assert code == 2 and "can be read" in one_error_line(stderr)
    assert snapshot(run) == before


# ------------------------------------------------------------------ absurd magnitudes


@pytest.mark.parametrize(
    "main, argv, field",
    [
        (train_cli.main, ["ppo", "--num-seeds", "1000000000"], "num_seeds"),
        (train_cli.main, ["ppo", "--total-timesteps", str(10**18)], "total_timesteps"),
        (train_cli.main, ["ppo", "--hidden-sizes", "100000000", "100000000"], "hidden_sizes"),
        (train_cli.main, ["dqn", "--buffer-size", str(10**12)], "buffer_size"),
        (sweep_cli.main, ["ppo", "--num-seeds", "1000000000", "--grid", "learning_rate=1e-4,1e-3"], "num_seeds"),
        (
            sweep_cli.main,
            ["ppo", "--sample", "learning_rate=loguniform:1e-5:1e-2", "--samples", "1000000000"],
            "samples",
        ),
    ],
)
def test_a_configuration_that_cannot_fit_is_refused_naming_the_field(no_training, main, argv, field):
    start = time.monotonic()
    code, out, err = run_main(main, [*argv, "--progress", "False"])
    assert code == 2 and one_error_line(err).startswith(f"error: {field}="), err
    assert "of memory" in err and time.monotonic() - start < 60
    assert not (no_training / "runs").exists()


def test_memory_check_names_seeds_or_the_config_field():
    need, host = memory.Need(device=1000, host=24), []  # no accelerator: carry and metrics share the host
    memory.check_fits(need, 4, host, host_bytes=4096)  # 4 x 1024 fits exactly
    with pytest.raises(ConfigError, match=r"num_seeds=10 is invalid: .* use at most 4$"):
        memory.check_fits(need, 10, host, host_bytes=4096)
    with pytest.raises(ConfigError, match=r"buffer_size=99 is invalid: one of the runs needs"):
        memory.check_fits(need, 1, host, host_bytes=512, culprit=lambda: ("buffer_size", 99))


def test_ten_billion_ppo_envs_are_refused_at_once(tmp_path):
    # 1e10 envs (the 1e9 need at least 41 GiB, which a large host has): at least 410 GiB
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.train",
            "ppo",
            "--num-envs",
            str(10**10),
            "--total-timesteps",
            str(10**13),
            "--out",
            str(tmp_path / "run"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and one_error_line(proc.stderr).startswith("error: num_envs=")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ unusable paths and numbers


def _bad_inputs(tmp: Path) -> list[tuple[str, list[str]]]:
    (tmp / "file").write_text("x")
    (tmp / "full").mkdir()
    (tmp / "full" / "kept").write_text("y")
    (tmp / "binary.json").write_bytes(b"\x89PNG\x00\xff")
    (tmp / "list.json").write_text("[1, 2]")
    (tmp / "config5.json").write_text('{"agent": "ppo", "env": "CartPole-v1", "config": 5, "hyper": {}}')
    (tmp / "huge.json").write_bytes(b" " * (train_cli.MAX_PRESET_FILE_BYTES + 1))
    (tmp / "folder.json").mkdir()
    train, sweep = ["train", *TINY], ["sweep", "ppo", "--grid", "learning_rate=1e-3,1e-4"]
    return [
        *[
            (f"{cmd[0]} --out {what}", [*cmd, "--out", path])
            for cmd in (train, sweep)
            for what, path in (
                ("a file", str(tmp / "file")),
                ("under a file", str(tmp / "file" / "run")),
                ("not empty", str(tmp / "full")),
                ("empty string", ""),
                ("too long", str(tmp / ("x" * 300))),
                ("in /proc", "/proc/no-such-run"),
            )
        ],
        *[
            (f"preset file {what}", [*train, "--preset-file", str(tmp / name)])
            for what, name in (
                ("binary", "binary.json"),
                ("a JSON list", "list.json"),
                ("config not an object", "config5.json"),
                ("too large", "huge.json"),
                ("a folder", "folder.json"),
                ("missing", "missing.json"),
            )
        ],
        ("sweep preset file binary", [*sweep, "--preset-file", str(tmp / "binary.json")]),
        ("sweep flag without value", ["sweep", "ppo", "--grid"]),
        ("sweep unknown flag", [*sweep, "--no-such-flag", "1"]),
        ("sweep bad number", [*sweep, "--num-seeds", "x"]),
        ("sweep negative sample seed", [*sweep, "--sample-seed", "-1"]),
        ("train num_seeds past 2**31", ["train", *TINY, "--num-seeds", str(2**40)]),
        ("train checkpoint_seconds nan", ["train", *TINY, "--checkpoint-seconds", "nan"]),
        ("train checkpoint_seconds negative", ["train", *TINY, "--checkpoint-seconds", "-1"]),
        ("train learning rate 1e400", ["train", *TINY, "--learning-rate", "1e400"]),
        ("resume a file", ["train", "--resume", str(tmp / "file")]),
        ("resume a folder that is no run", ["train", "--resume", str(tmp / "full")]),
    ]


def test_unusable_paths_and_numbers_are_one_error_line(no_training):
    tmp = no_training
    mains = {"train": train_cli.main, "sweep": sweep_cli.main}
    for what, (command, *argv) in _bad_inputs(tmp):
        before = sorted(p.name for p in tmp.iterdir())
        code, out, err = run_main(mains[command], argv)
        assert code == 2, (what, code, err)
        one_error_line(err)
        assert sorted(p.name for p in tmp.iterdir()) == before, what  # no folder left behind
        assert (tmp / "file").read_text() == "x" and (tmp / "full" / "kept").read_text() == "y"
        assert not list(tmp.rglob("summary.json")), what


def test_evaluate_never_replaces_a_file_and_refuses_unusable_input(interrupted, tmp_path):
    (tmp_path / "report.json").write_text("mine")
    (tmp_path / "anim.gif").write_text("mine too")
    run = str(interrupted)
    for argv in (
        [run, "--out", str(tmp_path / "report.json")],
        [run, "--gif", str(tmp_path / "anim.gif")],
        [run, "--out", str(tmp_path / "report.json" / "x.json")],
        [run, "--out", "/proc/report.json"],
        [run, "--out", ""],
        [run, "--episodes", "0"],
        [run, "--episodes", str(10**13)],
        [run, "--seed", str(2**64)],
        [run, "--max-steps", str(2**40)],
        [run, "--run", "7"],
        [str(tmp_path / "report.json")],
    ):
        code, out, err = run_main(evaluate_cli.main, argv)
        assert code == 2, (argv, err)
        one_error_line(err)
    assert (tmp_path / "report.json").read_text() == "mine"
    assert (tmp_path / "anim.gif").read_text() == "mine too"
    with pytest.raises(train_cli.UsageError, match="not replaced"):  # a file that appears meanwhile
        evaluate_cli.write_new_json(tmp_path / "report.json", {"a": 1})
    assert (tmp_path / "report.json").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anim.gif", "report.json"]  # no temporary left
