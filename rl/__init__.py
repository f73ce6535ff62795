"""The agent-agnostic engine: rollouts, returns, the runner, host-side tools."""

from rl.errors import ConfigError
from rl.runner import Algorithm, ChunkReport, TrainResult, run_batch, train

__all__ = ["Algorithm", "ChunkReport", "ConfigError", "TrainResult", "run_batch", "train"]
