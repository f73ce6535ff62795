"""A sweep's plan: its configurations, seeds and compile groups, laid out before anything compiles.

:func:`plan` validates every swept name and value (``rl.sweep.space``), takes the grid's
cartesian product times the random draws, and groups the configurations by their shape-setting
values: one :class:`Group` (one compiled program) per distinct assignment, each padded with
duplicate runs where its runs do not divide the devices. :meth:`SweepPlan.describe` says what
will happen (compiles, padding) before it happens.
"""

from __future__ import annotations

import dataclasses
import itertools
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rl.engine import distributed
from rl.engine.runner import Algorithm, make_mesh, seed_keys
from rl.errors import ConfigError
from rl.sweep.space import Param, _check_name, _display, _grid_values, _hashable, parse_distribution, sweepable

__all__ = ["Group", "SweepPlan", "plan"]


@dataclass
class Group:
    """Configurations sharing their shape-setting values: one compiled program."""

    static: dict[str, Any]  # the shape-setting swept values (empty when none is swept)
    config: Any  # the agent Config of this group
    algo: Algorithm
    config_ids: list[int]  # indices into SweepPlan.configs, in run order
    hypers: list[Any]  # one validated Hyper per configuration
    num_seeds: int = 0
    num_padded: int = 0  # duplicate runs added so the runs split evenly over the devices

    @property
    def num_runs(self) -> int:
        """Real runs: configurations x seeds (padding excluded)."""
        return len(self.config_ids) * self.num_seeds


@dataclass
class SweepPlan:
    """Everything :func:`sweep` will run, validated, before anything compiles."""

    agent: str
    env_id: str
    base_config: Any
    base_hyper: Any
    names: list[str]  # swept names, grid first, in the order given
    traced: list[str]
    static: list[str]
    configs: list[dict[str, Any]]  # one assignment of the swept names per configuration
    seeds: list[int]
    groups: list[Group]
    num_devices: int
    space: dict[str, Any]  # the grid and distributions as given, for sweep.json

    @property
    def num_runs(self) -> int:
        return len(self.configs) * len(self.seeds)

    def describe(self) -> list[str]:
        """What will happen, said before compiling (compiles, padding)."""
        c, s = len(self.configs), len(self.seeds)
        lines = [
            f"sweep {self.agent} on {self.env_id}: {c} configuration(s) x {s} seed(s) = "
            f"{self.num_runs} runs over {self.num_devices} device(s)"
            + (f" in {distributed.process_count()} processes" if distributed.process_count() > 1 else "")
        ]
        if self.traced:
            lines.append(f"  traced (vmapped, no recompile): {', '.join(self.traced)}")
        if len(self.groups) == 1:
            lines.append("  one compile for all configurations x seeds")
        else:
            lines.append(
                f"  shape-setting {', '.join(self.static)} takes {len(self.groups)} values: "
                f"the sweep compiles {len(self.groups)} times, once per value"
            )
        for g in self.groups:
            if g.num_padded:
                lines.append(
                    f"  padding{_group_label(g)}: {g.num_runs} runs do not split evenly over "
                    f"{self.num_devices} devices; {g.num_padded} duplicate run(s) added and dropped "
                    f"from every output"
                )
        return lines


def _group_label(g: Group) -> str:
    return f" ({', '.join(f'{k}={_display(v)}' for k, v in g.static.items())})" if g.static else ""


def _resolve_env(env: Any, env_params: Any) -> tuple[str, Any, Any]:
    if isinstance(env, str):
        import envs

        made, params = envs.make(env)
        return env, made, params if env_params is None else env_params
    if env_params is None:
        raise ConfigError("env_params", None, "give env_params with an env object (or pass an env id)")
    return str(getattr(env, "name", type(env).__name__)), env, env_params


def _seed_list(seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ConfigError("num_seeds", int(seeds), "must be a positive integer")
        return list(range(int(seeds)))
    out = [int(s) for s in seeds]
    if not out:
        raise ConfigError("seeds", seeds, "give at least one seed")
    if len(set(out)) != len(out):
        raise ConfigError("seeds", out, "every seed must be distinct")
    return out


def _configurations(
    params: Mapping[str, Param],
    grid: Mapping[str, Any],
    sample: Mapping[str, Any],
    num_samples: int | None,
    sample_seed: int,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The grid's cartesian product, times ``num_samples`` random draws (grid-major)."""
    for name in grid:
        _check_name(params, name, "grid")
    for name in sample:
        _check_name(params, name, "sample")
    both = sorted(set(grid) & set(sample))
    if both:
        raise ConfigError("sample", both[0], "is also in the grid; sweep each name one way only")
    grid_values = {name: _grid_values(params[name], values) for name, values in grid.items()}
    dists = {name: parse_distribution(params[name], spec) for name, spec in sample.items()}
    if dists and num_samples is None:
        raise ConfigError("samples", None, "random search needs the number of draws: give samples=N (--samples N)")
    if num_samples is not None:
        if not dists:
            raise ConfigError("samples", num_samples, "draws nothing: also give sample NAME=DIST (--sample)")
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise ConfigError("samples", num_samples, "must be a positive integer")
    rng = np.random.default_rng(sample_seed)
    drawn = {name: d.draw(rng, int(num_samples)) for name, d in dists.items()}  # type: ignore[arg-type]
    draws = [{n: drawn[n][i] for n in drawn} for i in range(int(num_samples or 0))] or [{}]
    points = [dict(zip(grid_values, combo)) for combo in itertools.product(*grid_values.values())]
    configs = [{**g, **d} for g in points for d in draws]
    space = {
        "grid": {n: [_display(v) for v in vs] for n, vs in grid_values.items()},
        "sample": {n: d.spec() for n, d in dists.items()},
        "samples": num_samples,
        "sample_seed": sample_seed,
    }
    return configs, space


def plan(
    agent: types.ModuleType,
    env: Any = "CartPole-v1",
    *,
    grid: Mapping[str, Any] | None = None,
    sample: Mapping[str, Any] | None = None,
    num_samples: int | None = None,
    seeds: int | Sequence[int] = 8,
    config: Any = None,
    hyper: Any = None,
    sample_seed: int = 0,
    pad: bool = True,
    mesh: jax.sharding.Mesh | None = None,
    env_params: Any = None,
) -> SweepPlan:
    """Validate a sweep and lay out its runs; compiles nothing (see :func:`sweep`)."""
    params = sweepable(agent)
    grid, sample = dict(grid or {}), dict(sample or {})
    configs, space = _configurations(params, grid, sample, num_samples, sample_seed)
    seeds = _seed_list(seeds)
    base_config = agent.Config() if config is None else config
    base_hyper = agent.Hyper() if hyper is None else hyper
    env_id, env_obj, env_params = _resolve_env(env, env_params)
    names = list(grid) + list(sample)
    traced = [n for n in names if params[n].traced]
    static = [n for n in names if not params[n].traced]
    mesh = make_mesh() if mesh is None else mesh
    num_devices = int(mesh.devices.size)

    groups: dict[tuple, Group] = {}
    for index, values in enumerate(configs):
        key = tuple((n, _hashable(values[n])) for n in static)
        if key not in groups:
            cfg = dataclasses.replace(base_config, **{n: values[n] for n in static})
            groups[key] = Group({n: values[n] for n in static}, cfg, agent.make(cfg, env_obj, env_params), [], [])
        h = dataclasses.replace(base_hyper, **{n: values[n] for n in traced})
        h.validate()
        groups[key].config_ids.append(index)
        groups[key].hypers.append(h)
    for g in groups.values():
        g.num_seeds = len(seeds)
        g.num_padded = (-g.num_runs) % num_devices
        if g.num_padded and not pad:
            ok = ", ".join(str(k) for k in range(num_devices, 4 * num_devices + 1, num_devices))
            raise ConfigError(
                "num_runs",
                g.num_runs,
                f"{len(g.config_ids)} configuration(s){_group_label(g)} x {len(seeds)} seed(s) do not split evenly "
                f"over the {num_devices} devices; make the runs a multiple of {num_devices} (e.g. {ok}) "
                f"or allow padding with duplicate runs (pad=True, the default; CLI: --pad True)",
            )
    sweep_plan = SweepPlan(
        agent=next(iter(groups.values())).algo.name,
        env_id=env_id,
        base_config=base_config,
        base_hyper=base_hyper,
        names=names,
        traced=traced,
        static=static,
        configs=configs,
        seeds=seeds,
        groups=list(groups.values()),
        num_devices=num_devices,
        space=space,
    )
    return sweep_plan


def _stacked_inputs(g: Group, seeds: list[int]) -> tuple[jax.Array, Any]:
    """Keys and hypers of a group's runs, hyper-major as ``rl.train``, padded with duplicates."""
    h, s = len(g.hypers), len(seeds)
    keys = seed_keys(seeds * h)
    names = [f.name for f in dataclasses.fields(g.hypers[0])]
    columns = {n: np.array([float(getattr(x, n)) for x in g.hypers]) for n in names}
    stacked = dataclasses.replace(
        g.hypers[0], **{n: jnp.repeat(jnp.asarray(v, jnp.float32), s) for n, v in columns.items()}
    )
    if g.num_padded:
        index = np.concatenate([np.arange(h * s), np.arange(g.num_padded) % (h * s)])
        keys = keys[index]
        stacked = jax.tree.map(lambda x: x[index], stacked)
    return keys, stacked
