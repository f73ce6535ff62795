"""Export the final scores of run and sweep folders for rliable: ``{algorithm: [runs, tasks]}``.

    python -m experiments.scores runs/ppo-cartpole runs/ppo-acrobot runs/dqn-cartpole runs/dqn-acrobot \\
        --normalize CartPole-v1=0:500 Acrobot-v1=-500:0 --out scores.npz
    python -m experiments.scores tuned=runs/a default=runs/b      # LABEL=FOLDER names an algorithm
    python -m experiments.scores runs/lr-sweep                     # one algorithm per configuration

Prints each algorithm's matrix (runs x tasks) with its IQM and a 95% stratified-bootstrap
interval (``rl.host.stats.stratified_bootstrap_ci``); ``--out FILE.npz`` writes the ``score_dict``
(``dict(np.load(FILE.npz))``, as rliable's ``get_interval_estimates`` takes it) and FILE.json
beside it (the task of each column, the seed of each score, the folders). How folders become
rows and columns, and what is refused: ``rl/host/scores.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import tyro

from experiments.train import UsageError, tyro_cli


@dataclass(frozen=True)
class ScoresArgs:
    """Export the final scores of run and sweep folders as rliable's score_dict."""

    folders: Annotated[tuple[str, ...], tyro.conf.Positional, tyro.conf.arg(metavar="[LABEL=]FOLDER")]
    """run folders (experiments.train) or sweep folders (experiments.sweep); LABEL= names the algorithm"""
    metric: str = "final_return"
    """the per-seed score in each run's summary.json (<metric>_per_seed)"""
    normalize: tuple[str, ...] = ()
    """TASK=LOW:HIGH for every task: scores become (score - LOW) / (HIGH - LOW); default raw returns"""
    out: str | None = None
    """write the score_dict to this .npz file (and its description to the .json beside it)"""


def _ranges(specs: Sequence[str]) -> dict[str, tuple[float, float]] | None:
    """``("CartPole-v1=0:500", ...)`` -> ``{"CartPole-v1": (0.0, 500.0)}``; None for none."""
    if not specs:
        return None
    ranges = {}
    for spec in specs:
        task, _, bounds = spec.rpartition("=")
        low, sep, high = bounds.partition(":")
        try:
            if not task or not sep:
                raise ValueError
            ranges[task] = (float(low), float(high))
        except ValueError:
            raise UsageError(f"--normalize {spec!r}: write TASK=LOW:HIGH, e.g. CartPole-v1=0:500") from None
    return ranges


def export(args: ScoresArgs) -> None:
    """Collect the scores, print them, and write ``--out``."""
    from rl.host import scores, stats

    try:
        table = scores.collect(args.folders, metric=args.metric, normalize=_ranges(args.normalize))
    except ValueError as err:
        raise UsageError(str(err)) from None
    kind = "normalised" if table.normalize else "raw"
    print(f"{args.metric} ({kind}) on {len(table.tasks)} task(s): {', '.join(table.tasks)}")
    for name, matrix in table.scores.items():
        runs = matrix.shape[0]
        if stats.too_few_for_ci(runs) is None:
            iqm = stats.stratified_bootstrap_ci(matrix)
            what = f"IQM {iqm.point:.4g} (95% CI {iqm.low:.4g} .. {iqm.high:.4g})"
        else:
            what = f"IQM {stats.iqm(matrix):.4g} ({stats.too_few_for_ci(runs, 'runs')})"
        print(f"  {name}: {runs} runs x {matrix.shape[1]} task(s), {what}")
    if len(table.tasks) > 1 and table.normalize is None:
        print(
            "note: raw returns of different tasks are on different scales; give --normalize TASK=LOW:HIGH "
            "for each task before aggregating over tasks"
        )
    if args.out is not None:
        try:
            npz, meta = table.save(args.out)
        except ValueError as err:
            raise UsageError(str(err)) from None
        print(f"wrote {npz} (score_dict: dict(np.load(...))) and {meta}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        export(tyro_cli(ScoresArgs, args=argv, prog="python -m experiments.scores"))
        return 0
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # --out cannot be written
        where = f"could not write {err.filename}: " if getattr(err, "filename", None) else ""
        print(f"error: {where}{err.strerror or err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
