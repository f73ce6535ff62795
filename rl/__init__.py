"""The agent-agnostic library.

* ``rl.device``: what the agents build on, traced into the jitted training program;
* ``rl.engine``: the runner (``train``, ``run_batch``), multi-host, checkpoints;
* ``rl.host``: host-side tools: statistics, metric sinks, the run folder, plots, progress;
* ``rl.sweep``: hyperparameter sweeps (``rl.sweep(...)``) on top of the engine and the host tools;
* ``rl.errors``: ``ConfigError`` and the field checks every configuration uses.
"""

from rl.engine.runner import Algorithm, ChunkReport, TrainResult, run_batch, train
from rl.errors import ConfigError
from rl.sweep import SweepResult, sweep  # binds rl.sweep to the function (the package: `from rl.sweep import ...`)

__all__ = ["Algorithm", "ChunkReport", "ConfigError", "SweepResult", "TrainResult", "run_batch", "sweep", "train"]
