"""Multi-host training: one process per host, all driving one global device mesh.

JAX runs multi-host as *multi-controller*: every process runs the same Python
program, sees every device of every process in ``jax.devices()`` but can only
touch its own (``jax.local_devices()``). This module holds the few places where
the engine has to care:

* :func:`initialize` starts ``jax.distributed`` from flags or the environment
  (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``),
  before any JAX computation. Given nothing, it does nothing: one process.
* :func:`put_global` places inputs that every process computed identically
  (PRNG keys from the seeds, hyperparameters) on the global mesh. Each process
  supplies only its own shards, so no data crosses hosts; the runs therefore
  start from exactly the keys a single-process run would use.
* :func:`to_host` brings outputs back as NumPy: a gather across processes
  (``process_allgather``) when the array spans hosts, else ``device_get``.
  Every process ends up with the full result; by convention only
  :func:`is_primary` (process 0) writes files or prints.

In a single process both :func:`put_global` and :func:`to_host` reduce to
``jax.device_put`` / ``jax.device_get``, so single-process results are
bit-identical to what they were before multi-host support.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax
import numpy as np

from rl.errors import ConfigError

__all__ = [
    "ENV_VARS",
    "assert_same_on_all_processes",
    "initialize",
    "is_primary",
    "process_count",
    "process_index",
    "put_global",
    "to_host",
]

# argument name -> environment variable read when the argument is None
ENV_VARS: dict[str, str] = {
    "coordinator_address": "JAX_COORDINATOR_ADDRESS",
    "num_processes": "JAX_NUM_PROCESSES",
    "process_id": "JAX_PROCESS_ID",
}


def _from_env(name: str, value: Any) -> Any:
    if value is not None:
        return value
    raw = os.environ.get(ENV_VARS[name])
    return raw if raw not in (None, "") else None


def _as_int(name: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(
            name, value, f"must be an integer (flag --{name.replace('_', '-')} or {ENV_VARS[name]})"
        ) from None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | str | None = None,
    process_id: int | str | None = None,
) -> bool:
    """Join a multi-process run; returns whether one was started.

    Each argument falls back to its environment variable (:data:`ENV_VARS`).
    With none of the three set this is a single-process run and nothing
    happens; with only some set a :class:`ConfigError` names the missing one
    (a half-configured cluster would otherwise hang waiting for peers).
    ``num_processes == 1`` also runs alone, without a coordinator.

    Must be called before any JAX computation. On CPU, cross-process
    collectives need gloo, which is switched on here.
    """
    values = {
        "coordinator_address": _from_env("coordinator_address", coordinator_address),
        "num_processes": _from_env("num_processes", num_processes),
        "process_id": _from_env("process_id", process_id),
    }
    given = {k for k, v in values.items() if v is not None}
    if not given:
        return False
    missing = sorted(set(values) - given)
    if missing:
        name = missing[0]
        raise ConfigError(
            name,
            None,
            f"a multi-process run needs all of coordinator_address, num_processes and process_id; "
            f"set --{name.replace('_', '-')} or {ENV_VARS[name]}",
        )
    address = str(values["coordinator_address"])
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError("coordinator_address", address, "must be HOST:PORT of process 0, e.g. 10.0.0.1:1234")
    n = _as_int("num_processes", values["num_processes"])
    i = _as_int("process_id", values["process_id"])
    if n < 1:
        raise ConfigError("num_processes", n, "must be >= 1")
    if not 0 <= i < n:
        raise ConfigError("process_id", i, f"must lie in [0, {n - 1}] for num_processes={n}")
    if n == 1:
        return False
    if jax.distributed.is_initialized():
        return True
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=address, num_processes=n, process_id=i)
    return True


def process_index() -> int:
    return jax.process_index()


def process_count() -> int:
    return jax.process_count()


def is_primary() -> bool:
    """Whether this is process 0: the one that prints and writes files."""
    return jax.process_index() == 0


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _put_leaf(x: Any, sharding: jax.sharding.Sharding) -> jax.Array:
    """One host-identical array onto a global sharding; each process fills its own shards."""
    if _is_key(x):
        # Typed keys cannot be built shard by shard; their uint32 data can.
        data = _put_leaf(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def put_global(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    """Place a pytree that every process holds identically on ``sharding``.

    Single process (or a sharding of local devices only): ``jax.device_put``,
    unchanged. Across processes ``device_put`` refuses non-addressable
    devices, so each leaf is assembled from the local shards of the full
    host value (``jax.make_array_from_callback``).
    """
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda x: _put_leaf(x, sharding), tree)


def _get_leaf(x: Any) -> Any:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        if _is_key(x):
            return jax.random.wrap_key_data(
                multihost_utils.process_allgather(jax.random.key_data(x), tiled=True),
                impl=jax.random.key_impl(x),
            )
        # tiled=True returns the global array itself (not stacked per process)
        return multihost_utils.process_allgather(x, tiled=True)
    return jax.device_get(x)


def to_host(tree: Any) -> Any:
    """NumPy copies of a pytree of (possibly multi-host) arrays, on every process.

    A collective when any leaf spans processes: every process must call it at
    the same point of the program (the runner does, once per chunk).
    """
    if all(not isinstance(x, jax.Array) or x.is_fully_addressable for x in jax.tree.leaves(tree)):
        return jax.device_get(tree)
    return jax.tree.map(_get_leaf, tree)


def assert_same_on_all_processes(value: Any, what: str) -> None:
    """Fail loudly if the processes disagree on ``value`` (e.g. the sweep's runs).

    Every process must compute the same configurations and keys from the same
    command line; a host started with other flags would silently train other
    runs into the same result table. Compares a hash of ``value``'s JSON.
    """
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).digest()
    words = np.frombuffer(digest[:16], dtype=np.uint32)
    multihost_utils.assert_equal(words, f"the processes disagree on {what}; start every process with the same flags")
