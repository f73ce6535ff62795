"""Hyperparameter sweeps: many configurations x seeds in one compile, with a report.

    import rl
    from agents import ppo
    result = rl.sweep(ppo, "CartPole-v1", grid={"learning_rate": [1e-4, 3e-4, 1e-3],
                                                "ent_coef": [0.0, 0.01]}, seeds=16, out="runs/lr")
    result = rl.sweep(ppo, "CartPole-v1", sample={"learning_rate": "loguniform:1e-5:1e-2"},
                      num_samples=32, seeds=4)

``experiments.sweep`` is a thin command line over :func:`sweep`, so the library
call and the CLI do the same thing and write the same folder.

The package, by concern:

* ``space``: the sweepable names of an agent (:func:`sweepable`), grid values and
  :class:`Distribution` s of random search, parsed and checked;
* ``plan``: the configurations, seeds and compile groups (:func:`plan`), laid out
  before anything compiles;
* ``run``: :func:`sweep` itself, its progress bar and :class:`SweepResult`;
* ``report``: the summary and ranking, the tidy table, the report files and plots.

It trains with ``rl.engine`` and reports with the host tools of ``rl.host``
(statistics, plots, progress bar, atomic file writes).

How the runs are laid out
-------------------------
A *configuration* is one assignment of values to the swept names; a *run* is a
(configuration, seed) pair. The swept names are of two kinds:

* **traced** (fields of the agent's ``Hyper``): all their values x all seeds
  become one batch of runs with a leading axis, trained by one
  ``jit(shard_map(vmap(...)))`` of the runner: ONE compile for the whole sweep;
* **shape-setting** (fields of the agent's ``Config``): each distinct value
  needs its own compiled program, so the configurations are split into
  *compile groups*, one per distinct shape-setting assignment. The sweep says
  so before compiling anything.

Within a group the runs are hyper-major (run ``h * S + s`` has configuration
``h`` and ``seeds[s]``, as ``rl.train``) and the key of seed ``s`` is
``jax.random.key(s)``: every configuration sees the same seeds, and every host
of a multi-host run derives the same keys. All runs of a group are sharded
over every device of the mesh. A group whose run count does not divide the
device count is *padded* with duplicates of its first runs (which are dropped
from every output, and the sweep says so), or refused with ``pad=False``.

Memory stays flat in the number of env steps: agents log scalars per update,
never per step, and the host keeps ``[runs, updates]`` arrays only.

The report
----------
With ``out`` set, the primary process writes (nothing is overwritten):

* ``sweep.json``: the space, seeds, base config and hyper, devices, groups;
* ``results.csv`` and ``results.parquet``: the tidy table, one row per
  configuration x seed x update, with the swept values as columns;
* ``summary.csv``/``summary.json``: per configuration the final return
  (episode-weighted mean of the last 5% of updates, ``rl.host.stats.final_return``)
  as mean and interquartile mean with stratified-bootstrap 95% CIs, and the rank
  (by IQM, then mean);
* ``profiles.csv`` and ``performance_profile.png``: performance profiles
  (fraction of seeds with final return > tau) with bootstrap bands;
* ``learning_curves.png``: mean return per configuration against env steps
  (episodes binned over steps, ``rl.host.stats.learning_curve``) with 95% bands;
* ``final_vs_<name>.png`` per swept name;
* ``best_preset.json``: the best configuration as a preset for
  ``python -m experiments.train AGENT --preset-file``.
"""

from rl.sweep.plan import Group, SweepPlan, plan
from rl.sweep.plan import _stacked_inputs as _stacked_inputs
from rl.sweep.report import _bootstrap as _bootstrap
from rl.sweep.report import _plan_record as _plan_record
from rl.sweep.report import best_preset, print_ranking, results_table, summarize, write_report
from rl.sweep.run import SweepProgress, SweepResult, sweep
from rl.sweep.space import Distribution, Param, parse_distribution, parse_spec, sweepable

# ``rl.sweep`` is both this function (an attribute of the ``rl`` package, set by rl/__init__.py)
# and this package (in sys.modules, for ``from rl.sweep import plan``); the function says so.
sweep.__module__ = "rl.sweep"

__all__ = [
    "Distribution",
    "Group",
    "Param",
    "SweepPlan",
    "SweepProgress",
    "SweepResult",
    "best_preset",
    "parse_distribution",
    "parse_spec",
    "plan",
    "print_ranking",
    "results_table",
    "summarize",
    "sweep",
    "sweepable",
    "write_report",
]
