"""The memory a training configuration needs, estimated before anything is compiled.

A configuration that cannot fit should be refused with one line naming the field to change,
not discovered minutes later by the kernel's out-of-memory killer or an XLA allocation
failure. The estimate is a *lower bound*, so nothing that fits is refused:

* the training carry of every run (parameters, optimizer states, env states, replay
  buffers, ...), from ``jax.eval_shape`` of ``algo.init``: shapes only, nothing allocated;
* the host copy of the per-update metrics, at least ``MIN_METRICS`` 4-byte scalars per run
  and update (the runner keeps the whole history for the summary and the checkpoints).

Activations and rollout buffers inside an update come on top and are not counted.

The budget is the memory available now: on CPU, ``MemAvailable`` of ``/proc/meminfo``
(capped by a cgroup limit); on an accelerator, each device's ``bytes_limit`` less what is in
use, for that device's share of the runs, plus the host's for the metrics.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from rl.errors import ConfigError

__all__ = [
    "MIN_METRICS",
    "Need",
    "available_host_bytes",
    "check_fits",
    "describe_bytes",
    "largest_field",
    "need_per_run",
]

MIN_METRICS = 4  # episode_return, episode_length, episodes, nonfinite: every agent reports at least these


class Need(NamedTuple):
    """Bytes one run needs at least: on its device, and on the host."""

    device: int  # the training carry
    host: int  # the metrics history

    @property
    def total(self) -> int:
        return self.device + self.host


def _leaf_bytes(leaf: Any) -> int:
    shape = tuple(int(d) for d in getattr(leaf, "shape", ()))
    dtype = getattr(leaf, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        key_shape = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(shape, dtype)).shape
        return math.prod(key_shape) * 4  # uint32 words
    itemsize = np.dtype(dtype).itemsize if dtype is not None else 8
    return math.prod(shape) * itemsize


def tree_bytes(tree: Any) -> int:
    """Bytes of every array leaf of an (abstract) pytree."""
    return sum(_leaf_bytes(leaf) for leaf in jax.tree.leaves(tree))


def need_per_run(algo: Any, hyper: Any) -> Need:
    """The lower bound of the memory one run of ``algo`` needs (see the module docstring)."""
    hyper = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.float32), hyper)
    state = jax.eval_shape(algo.init, jax.ShapeDtypeStruct((), jax.random.key(0).dtype), hyper)
    return Need(device=tree_bytes(state), host=int(algo.num_updates) * MIN_METRICS * 4)


def describe_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``; up to EiB, then powers of ten."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            return f"{n:,.0f} {unit}" if unit == "B" else (f"{n:.1f} {unit}" if n < 1e6 else f"{n:.3g} {unit}")
        n /= 1024
    return f"{n} B"  # unreachable


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_host_bytes() -> int | None:
    """Memory available to this process now (bytes), or None where it cannot be told."""
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
        except (ValueError, OSError, AttributeError):
            pass
    # a container's limit: cgroup v2, then v1 ("max" / a huge number mean no limit)
    for limit_path, usage_path in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        limit, usage = _read_int(limit_path), _read_int(usage_path)
        if limit is not None and usage is not None and limit < 2**60:
            found.append(max(limit - usage, 0))
            break
    return min(found) if found else None


def _device_budget(devices: list[Any]) -> tuple[int | None, str]:
    """(bytes free on the fullest device, where) for accelerators; (None, "") on CPU."""
    if not devices or devices[0].platform == "cpu":
        return None, ""
    free = []
    for device in devices:
        try:
            stats = device.memory_stats() or {}
        except Exception:  # noqa: BLE001 - a backend without memory statistics
            return None, ""
        if "bytes_limit" not in stats:
            return None, ""
        free.append(int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)))
    return min(free), f"per {devices[0].platform.upper()} device"


def check_fits(
    need: Need,
    num_runs: int,
    devices: list[Any],
    *,
    runs_field: str = "num_seeds",
    runs_value: Any = None,
    runs_per_unit: int = 1,
    culprit: Callable[[], tuple[str, Any] | None] | None = None,
    host_bytes: int | None = None,
    unit: str = "runs",
) -> None:
    """Raise :class:`ConfigError` when ``num_runs`` runs of ``need`` cannot fit in memory.

    Args:
      need: one run's lower bound (:func:`need_per_run`).
      num_runs: runs trained together.
      devices: the devices the runs are split over (``mesh.devices.flat``).
      runs_field, runs_value: the field named when one run fits but all of them do not
        (``num_seeds`` and its value by default); ``runs_per_unit`` runs come with each
        unit of it (e.g. the configurations of a sweep per seed).
      culprit: called when even one run does not fit: ``(field, value)`` of the config field
        to name (the one whose default value shrinks the need most, :func:`largest_field`),
        or None.
      host_bytes: the host budget (default: :func:`available_host_bytes`), for tests.
      unit: what is counted, in the message ("runs", "episodes", ...).
    """
    host = available_host_bytes() if host_bytes is None else host_bytes
    device_free, where = _device_budget(list(devices))
    per_device_runs = math.ceil(num_runs / max(len(devices), 1))
    if device_free is None:  # CPU: the devices are the host; carry and metrics share its memory
        budget, per_run, runs, where = host, need.total, num_runs, "on this host"
    else:
        budget, per_run, runs = device_free, need.device, per_device_runs
        if host is not None and need.host * num_runs > host:  # the metrics history lives on the host
            budget, per_run, runs, where = host, need.host, num_runs, "on this host, for the metrics history"
    if budget is None or per_run * runs <= budget:
        return
    fits = budget // per_run  # runs that fit in the budget (per device on an accelerator)
    if fits >= 1 and fits * num_runs // runs >= runs_per_unit:
        value = num_runs // runs_per_unit if runs_value is None else runs_value
        most = fits * num_runs // runs // runs_per_unit
        raise ConfigError(
            runs_field,
            value,
            f"{num_runs:,} {unit} need at least {describe_bytes(per_run * runs)} of memory {where} "
            f"({describe_bytes(per_run)} each) but {describe_bytes(budget)} is available; "
            f"use at most {most:,}",
        )
    named = culprit() if culprit is not None else None
    field, value = named if named is not None else ("config", "(all fields)")
    raise ConfigError(
        field,
        value,
        f"one of the {unit} needs at least {describe_bytes(per_run)} of memory {where} but {describe_bytes(budget)} "
        f"is available; make it smaller",
    )


def largest_field(config: Any, measure: Callable[[Any], int]) -> tuple[str, Any] | None:
    """The field of a config dataclass whose default value shrinks ``measure(config)`` most.

    Each field that differs from its default is set back to it, one at a time; a setting that
    ``measure`` rejects (raises) is skipped. ``(name, value)``, or None when no field shrinks it.
    """
    best, best_bytes = None, measure(config)
    for f in dataclasses.fields(config):
        if f.default is dataclasses.MISSING or getattr(config, f.name) == f.default:
            continue
        try:
            size = measure(dataclasses.replace(config, **{f.name: f.default}))
        except Exception:  # noqa: BLE001 - e.g. the default does not divide another field
            continue
        if size < best_bytes:
            best, best_bytes = (f.name, getattr(config, f.name)), size
    return best
