"""The agent-agnostic engine: rollouts, returns, the runner, host-side tools."""

from rl.errors import ConfigError
from rl.runner import Algorithm, ChunkReport, TrainResult, run_batch, train
from rl.sweep import SweepResult, sweep  # binds rl.sweep to the function (the module: `from rl.sweep import ...`)

__all__ = ["Algorithm", "ChunkReport", "ConfigError", "SweepResult", "TrainResult", "run_batch", "sweep", "train"]
