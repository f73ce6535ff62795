"""Training progress display: a rich progress bar on a terminal, plain lines elsewhere.

On a terminal (or in Jupyter) :class:`Progress` shows a rich progress bar with the environment
steps per run done out of the total, the throughput in steps per second summed over all runs, and
the mean return of the episodes completed in the latest chunk. The throughput counts running time
only when :meth:`Progress.advance` is given it (``run_seconds``, e.g.
``ChunkReport.elapsed_seconds``, which excludes compilation); otherwise it is the wall time since
entering. When the output is not a terminal (CI logs, files, pipes) it prints one concise plain
line per :meth:`Progress.advance` instead, so logs stay readable and nothing depends on terminal
control codes. With ``enabled=False`` it prints nothing.

The sweep's bar (``rl.sweep.run.SweepProgress``) is this class with another label and unit: the
env steps of all its runs together, and a note in place of the return.
"""

from __future__ import annotations

import math
import sys
import time
from types import TracebackType
from typing import IO, TYPE_CHECKING, Self

if TYPE_CHECKING:
    import rich.console
    import rich.progress

__all__ = ["Progress", "format_line"]


def _is_interactive(console: rich.console.Console) -> bool:
    """Whether a live bar suits `console`: a notebook, or a real TTY that is not a dumb terminal.

    Unlike ``console.is_terminal`` this ignores ``FORCE_COLOR``/``TTY_COMPATIBLE``, which CI
    systems set to get colours: a live bar there would fill the log with redraws.
    """
    if console.is_jupyter:
        return True
    try:
        isatty = console.file.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False
    return isatty and console.is_interactive


def _format_return(mean_return: float | None) -> str:
    return "n/a" if mean_return is None or math.isnan(mean_return) else f"{mean_return:.2f}"


def format_line(done: int, total: int, steps_per_second: float, mean_return: float | None) -> str:
    """One plain progress line, e.g. ``[ 50.0%] env steps 1,000/2,000 per run | 8,000 steps/s | return 21.50``."""
    return _plain_line("env steps", "per run", done, total, steps_per_second, f"return {_format_return(mean_return)}")


def _plain_line(what: str, unit: str, done: int, total: int, steps_per_second: float, note: str) -> str:
    percent = 100.0 * done / total
    return f"[{percent:5.1f}%] {what} {done:,}/{total:,} {unit} | {steps_per_second:,.0f} steps/s | {note}"


class Progress:
    """Context manager that reports training progress.

    Args:
      total_env_steps: environment steps per run at the end of training.
      num_runs: number of runs trained together (throughput counts the steps of all of them).
      enabled: False prints nothing at all.
      start_env_steps: environment steps per run already done (when resuming a checkpoint).
      file: where to write; None means ``sys.stdout`` at the time of writing.
      verbose: False also silences :meth:`say`.

    Usage::

        with Progress(total_env_steps, num_runs) as progress:
            for chunk in chunks:
                progress.advance(chunk_env_steps_per_run, mean_return)
    """

    label = "training"  # the bar's label
    line_label = "env steps"  # a plain line's words before the counts
    unit = "per run"  # after the counts
    first_note = "return n/a"  # the bar's note before the first chunk

    def __init__(
        self,
        total_env_steps: int,
        num_runs: int,
        enabled: bool = True,
        start_env_steps: int = 0,
        file: IO[str] | None = None,
        verbose: bool = True,
    ) -> None:
        if total_env_steps <= 0 or num_runs <= 0:
            raise ValueError(f"need total_env_steps > 0 and num_runs > 0, got {total_env_steps} and {num_runs}.")
        if not 0 <= start_env_steps <= total_env_steps:
            raise ValueError(f"start_env_steps must lie in [0, {total_env_steps}], got {start_env_steps}.")
        self.total_env_steps = total_env_steps
        self.num_runs = num_runs
        self.enabled = enabled
        self.verbose = verbose
        self.done = start_env_steps
        self._start_env_steps = start_env_steps
        self._file = file
        self._start_time: float | None = None
        self._run_seconds: float | None = None
        self._bar: rich.progress.Progress | None = None
        self._task: rich.progress.TaskID | None = None

    def __enter__(self) -> Self:
        self._start_time = time.monotonic()
        if self.enabled:
            self._bar = self._rich_bar_if_interactive()
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task(
                self.label, total=self.total_env_steps, completed=self.done, rate="", note=self.first_note
            )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def _rich_bar_if_interactive(self) -> rich.progress.Progress | None:
        """A rich progress bar when writing to a terminal or notebook, else None."""
        import rich.console
        import rich.progress

        console = rich.console.Console(file=self._file)
        if not _is_interactive(console):
            return None
        return rich.progress.Progress(
            rich.progress.TextColumn("[bold]{task.description}"),
            rich.progress.BarColumn(),
            rich.progress.TextColumn("{task.completed:,.0f}/{task.total:,.0f} env steps " + self.unit),
            rich.progress.TextColumn("{task.fields[rate]}"),
            rich.progress.TextColumn("{task.fields[note]}"),
            rich.progress.TimeElapsedColumn(),
            rich.progress.TimeRemainingColumn(),
            console=console,
        )

    def steps_per_second(self) -> float:
        """Environment steps per second, summed over all runs.

        Over the running time last given to :meth:`advance` (``run_seconds``), else over the wall
        time since entering.
        """
        if self._start_time is None:
            return 0.0
        elapsed = time.monotonic() - self._start_time if self._run_seconds is None else self._run_seconds
        return self.num_runs * (self.done - self._start_env_steps) / max(elapsed, 1e-9)

    def say(self, line: str) -> None:
        """A message: above the bar on a terminal, else a plain line; nothing when not verbose."""
        if not self.verbose:
            return
        if self._bar is not None:
            self._bar.console.print(line, highlight=False, markup=False)
        else:
            print(line, file=self._file or sys.stdout, flush=True)

    def advance(
        self,
        env_steps_per_run_done: int,
        mean_return: float | None = None,
        run_seconds: float | None = None,
        note: str | None = None,
    ) -> None:
        """Record `env_steps_per_run_done` more environment steps per run (a delta, not a total).

        Args:
          env_steps_per_run_done: steps each run took since the previous call, e.g.
            ``num_updates_in_chunk * steps_per_update``.
          mean_return: mean return of the episodes completed since the previous call, over all
            runs (e.g. :func:`rl.host.stats.mean_over_episodes` of the chunk); None or NaN when no
            episode ended.
          run_seconds: seconds spent running all the steps done since entering, compilation
            excluded (``ChunkReport.elapsed_seconds``); the rate is then steps / run_seconds.
          note: what to show in place of ``return <mean_return>`` (the sweep's running return).
        """
        if self._start_time is None:
            raise RuntimeError("Progress.advance called outside its context; use `with Progress(...) as progress:`.")
        if env_steps_per_run_done < 0:
            raise ValueError(f"env_steps_per_run_done is a non-negative delta, got {env_steps_per_run_done}.")
        if run_seconds is not None:
            self._run_seconds = float(run_seconds)
        self.done = min(self.done + env_steps_per_run_done, self.total_env_steps)
        if not self.enabled:
            return
        rate = self.steps_per_second()
        note = f"return {_format_return(mean_return)}" if note is None else note
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=self.done, rate=f"{rate:,.0f} steps/s", note=note)
        else:
            line = _plain_line(self.line_label, self.unit, self.done, self.total_env_steps, rate, note)
            print(line, file=self._file or sys.stdout, flush=True)
