"""Compile for a datacenter GPU on a machine without one: XLA's deviceless GPU compilation.

The bench's ``hlo`` group counts the kernels and bytes of one compiled update. Compiled for the
machine's own CPU, the program is the CPU backend's; the GPU backend fuses differently (one
kernel per fusion, GEMMs as Triton or cuBLAS calls, loops as kernels per iteration). With jax's
CUDA plugin installed, ``jax.experimental.topologies`` describes a GPU from a target
configuration alone, and a ``jax.jit(...).lower(...).compile()`` against that topology runs the
GPU compiler (ptxas included) without a device: the same fusion decisions and kernel counts a
GPU machine's jax makes, except for autotuning, which needs the device (GEMM tilings then take
their defaults; the count of kernels does not change).

``make gpu-compiler`` installs the plugin matching jax, without its CUDA libraries (the compiler
loads none of them), into ``.gpu-compiler/`` beside the project, not into the venv: installed
there, every jax process would try to start a GPU at its first device query and print why it
could not. ``check`` puts that folder on ``sys.path`` for a GPU target only; a plugin installed
in the environment itself is used as it is.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# The GPU descriptions XLA's cost model and code generator read (xla/stream_executor's
# GpuDeviceInfoProto), from NVIDIA's published figures for the SXM parts.
_DEVICE = """
gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: 233472
  threads_per_core_limit: 2048
  core_count: 132
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {bandwidth}
  l2_cache_size: 52428800
  clock_rate_ghz: 1.98
  device_memory_size: {memory}
  shared_memory_per_block_optin: 232448
  cuda_compute_capability {{ major: 9 }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{ major: 9 minor: 8 }}
runtime_version {{ major: 13 minor: 0 }}
device_description_str: "{name}"
"""
TARGETS = {
    "h100": dict(name="NVIDIA H100 80GB HBM3", bandwidth=3_352_000_000_000, memory=85_520_000_000),
    "h200": dict(name="NVIDIA H200", bandwidth=4_800_000_000_000, memory=150_120_000_000),
}
HOST = "host"
PLUGIN_FOLDER = Path(__file__).resolve().parent.parent / ".gpu-compiler"  # where `make gpu-compiler` installs


def plugin_available() -> bool:
    """Whether jax's CUDA 13 plugin imports, from the environment or from ``PLUGIN_FOLDER``
    (added to ``sys.path`` here; jax finds its plugins there when its backends start)."""
    import importlib.util

    if PLUGIN_FOLDER.is_dir() and str(PLUGIN_FOLDER) not in sys.path:
        sys.path.append(str(PLUGIN_FOLDER))
    try:
        return importlib.util.find_spec("jax_plugins.xla_cuda13") is not None
    except ImportError:  # no jax_plugins package at all
        return False


class TargetError(ValueError):
    """A GPU target that cannot be compiled for here: names the field and what is allowed."""


def describe(target: str) -> str:
    """``host`` -> the machine's own devices; a GPU target -> its name, compiled without one."""
    if target == HOST:
        return "this machine's devices"
    return f"{TARGETS[target]['name']} (compiled here without one)"


def check(target: str) -> None:
    """Raise ``TargetError`` unless ``target`` is ``host`` or a known GPU whose compiler is installed."""
    if target == HOST:
        return
    if target not in TARGETS:
        raise TargetError(f"--hlo-target {target!r}: allowed are {HOST!r} and {', '.join(map(repr, TARGETS))}")
    if not plugin_available():
        import jax

        raise TargetError(
            f"--hlo-target {target}: compiling for a GPU needs jax's CUDA plugin, which is not installed; "
            f"`make gpu-compiler` adds it (pip install --no-deps jax-cuda13-plugin=={jax.__version__} "
            f"jax-cuda13-pjrt=={jax.__version__}; no GPU needed)"
        ) from None


def use_cpu_backend(target: str) -> None:
    """For a GPU target, keep jax's backends to the CPU: the plugin then only compiles, and jax
    does not try (and fail, without a GPU) to start a CUDA device. Before jax's first device query."""
    if target != HOST:
        import jax

        jax.config.update("jax_platforms", "cpu")


def sharding(target: str) -> Any:
    """The sharding that places a ``jax.ShapeDtypeStruct`` on ``target``'s one device (None: the host's default)."""
    check(target)
    if target == HOST:
        return None
    import jax
    from jax.experimental import topologies

    try:
        topology = topologies.get_topology_desc(
            platform="cuda", target_config=_DEVICE.format(**TARGETS[target]), topology="1x1x1"
        )
    except NotImplementedError:  # the plugin tried to start on a GPU, failed, and was dropped
        raise TargetError(
            f"--hlo-target {target}: jax dropped its CUDA plugin when it found no GPU to start; "
            "run with JAX_PLATFORMS=cpu (the benchmark's main sets it for a GPU target)"
        ) from None
    mesh = topologies.make_mesh(topology, (1,), ("device",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
