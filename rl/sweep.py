"""Hyperparameter sweeps: many configurations x seeds in one compile, with a report.

    import rl
    from agents import ppo
    result = rl.sweep(ppo, "CartPole-v1", grid={"learning_rate": [1e-4, 3e-4, 1e-3],
                                                "ent_coef": [0.0, 0.01]}, seeds=16, out="runs/lr")
    result = rl.sweep(ppo, "CartPole-v1", sample={"learning_rate": "loguniform:1e-5:1e-2"},
                      num_samples=32, seeds=4)

``experiments.sweep`` is a thin command line over :func:`sweep`, so the library
call and the CLI do the same thing and write the same folder.

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

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import math
import os
import sys
import time
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import jax
import jax.numpy as jnp
import numpy as np

from rl.device.evaluation import EVAL_RETURN, final_eval_returns
from rl.engine import distributed
from rl.engine.runner import Algorithm, ChunkReport, make_mesh, run_batch, seed_keys
from rl.errors import ConfigError
from rl.host import stats
from rl.host.files import atomic_write_path, write_json

__all__ = [
    "Distribution",
    "SweepPlan",
    "SweepResult",
    "parse_distribution",
    "parse_spec",
    "plan",
    "sweep",
    "sweepable",
]

FINAL_FRACTION = stats.FINAL_FRACTION  # final return = episodes of the last 5% of updates (as experiments.train)
NUM_RESAMPLES = 2_000  # bootstrap resamples for every interval (rliable's default)
SAMPLE_DIGITS = 6  # significant digits kept of a randomly drawn value
SAMPLERS = ("uniform", "loguniform", "choice")


# ----------------------------------------------------------------------------- the search space


@dataclass(frozen=True)
class Param:
    """One sweepable name of an agent."""

    name: str
    traced: bool  # a Hyper field (one compile) rather than a Config field (one compile per value)
    type: Any  # the field's annotation, resolved
    default: Any


def sweepable(agent: types.ModuleType) -> dict[str, Param]:
    """Every name an agent lets a sweep vary: its ``Hyper`` and ``Config`` fields."""
    out: dict[str, Param] = {}
    for cls, traced in ((agent.Config, False), (agent.Hyper, True)):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            out[f.name] = Param(f.name, traced, hints.get(f.name, type(default)), default)
    return out


def _names_help(params: Mapping[str, Param]) -> str:
    traced = ", ".join(n for n, p in params.items() if p.traced)
    static = ", ".join(n for n, p in params.items() if not p.traced)
    return f"sweepable names: traced (one compile): {traced}; shape-setting (one compile per value): {static}"


def _check_name(params: Mapping[str, Param], name: str, what: str) -> Param:
    if name not in params:
        close = difflib.get_close_matches(name, params, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(what, name, f"unknown hyperparameter; {hint}{_names_help(params)}")
    return params[name]


def parse_spec(spec: str, what: str) -> tuple[str, str]:
    """``"NAME=REST"`` -> ``(NAME, REST)``, as given to ``--grid`` and ``--sample``."""
    name, sep, rest = spec.partition("=")
    if not sep or not name.strip():
        example = "learning_rate=1e-4,3e-4" if what == "grid" else "learning_rate=loguniform:1e-5:1e-2"
        raise ConfigError(what, spec, f"write NAME=VALUES, e.g. {example}")
    return name.strip(), rest.strip()


def _union_args(t: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        return typing.get_args(t)
    return None


def _parse_text(t: Any, text: str) -> Any:
    """A value of type ``t`` from text; raises ValueError when it does not parse."""
    union = _union_args(t)
    if union is not None:
        if text.lower() == "none" and type(None) in union:
            return None
        for option in union:
            if option is not type(None):
                try:
                    return _parse_text(option, text)
                except ValueError:
                    pass
        raise ValueError(text)
    if typing.get_origin(t) is tuple:
        (elem, *_rest) = typing.get_args(t) or (str,)
        parts = text.split("x")
        if any(not p for p in parts):
            raise ValueError(text)
        return tuple(_parse_text(elem, p) for p in parts)
    if t is bool:
        low = text.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ValueError(text)
    if t is int:
        try:
            return int(text)
        except ValueError:
            value = float(text)
            if not value.is_integer():
                raise
            return int(value)
    if t is float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(text)
        return value
    if t is str:
        return text
    raise ValueError(text)


def _type_hint(t: Any) -> str:
    union = _union_args(t)
    if union is not None:
        return " or ".join(_type_hint(u) for u in union)
    if typing.get_origin(t) is tuple:
        return "integers joined by x, e.g. 64x64"
    return {
        bool: "true or false",
        int: "an integer",
        float: "a finite number",
        str: "a string",
        type(None): "none",
    }.get(t, str(t))


def _value(param: Param, item: Any, what: str) -> Any:
    """One swept value: text is parsed by the field's type, other values are checked."""
    if isinstance(item, str):
        text = item.strip()
        if not text:
            raise ConfigError(what, item, f"an empty value; each value must be {_type_hint(param.type)}")
        try:
            return _parse_text(param.type, text)
        except ValueError:
            raise ConfigError(what, item, f"must be {_type_hint(param.type)}") from None
    if isinstance(item, list):
        item = tuple(item)
    if param.traced or param.type is float:
        if isinstance(item, bool) or not isinstance(item, (int, float, np.number)) or not math.isfinite(item):
            raise ConfigError(what, item, "must be a finite number")
        return float(item)
    return item


def _grid_values(param: Param, values: Any, what: str | None = None) -> list[Any]:
    what = what or f"grid {param.name}"
    items = values.split(",") if isinstance(values, str) and values.strip() else values
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or len(items) == 0:
        raise ConfigError(
            what,
            values,
            "an empty or malformed value list; give one or more values, "
            f"e.g. {param.name}=V1,V2 (each {_type_hint(param.type)})",
        )
    out = [_value(param, item, what) for item in items]
    seen = []
    for v in out:
        if v in seen:
            raise ConfigError(what, values, f"lists {v!r} twice; give each value once")
        seen.append(v)
    return out


@dataclass(frozen=True)
class Distribution:
    """Where random search draws one swept name from.

    ``uniform``/``loguniform`` between ``low`` and ``high`` (floats only;
    loguniform draws ``exp(U(log low, log high))``), or ``choice`` among
    ``choices`` with equal probability (any type, shape-setting ones too).
    Written on the command line as ``uniform:LOW:HIGH``,
    ``loguniform:LOW:HIGH`` and ``choice:V1,V2,...``.
    """

    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()

    def draw(self, rng: np.random.Generator, n: int) -> list[Any]:
        if self.kind == "choice":
            return [self.choices[i] for i in rng.integers(0, len(self.choices), size=n)]
        lo, hi = float(self.low), float(self.high)  # type: ignore[arg-type]
        if self.kind == "loguniform":
            raw = np.exp(rng.uniform(math.log(lo), math.log(hi), size=n))
        else:
            raw = rng.uniform(lo, hi, size=n)
        # a readable value (6 significant digits, far finer than any tuning needs)
        return [float(f"{x:.{SAMPLE_DIGITS}g}") for x in raw]

    def spec(self) -> str:
        if self.kind == "choice":
            return "choice:" + ",".join(str(_display(c)) for c in self.choices)
        return f"{self.kind}:{self.low:g}:{self.high:g}"


def parse_distribution(param: Param, spec: str | Distribution) -> Distribution:
    """``"loguniform:1e-5:1e-2"`` (or a :class:`Distribution`) checked against ``param``."""
    what = f"sample {param.name}"
    if isinstance(spec, Distribution):
        kind, parts = spec.kind, None
    else:
        kind, _, rest = str(spec).partition(":")
        kind, parts = kind.strip(), rest
    if kind not in SAMPLERS:
        raise ConfigError(what, spec, "write one of uniform:LOW:HIGH, loguniform:LOW:HIGH, choice:V1,V2,...")
    if kind == "choice":
        choices = spec.choices if isinstance(spec, Distribution) else parts
        return Distribution("choice", choices=tuple(_grid_values(param, choices, what)))
    if not (param.traced or param.type is float):
        raise ConfigError(what, spec, f"{param.name} is {_type_hint(param.type)}: use choice:V1,V2,...")
    if isinstance(spec, Distribution):
        low, high = spec.low, spec.high
    else:
        bounds = parts.split(":")
        if len(bounds) != 2:
            raise ConfigError(what, spec, f"write {kind}:LOW:HIGH, e.g. {kind}:1e-5:1e-2")
        low, high = (_value(param, b, what) for b in bounds)
    low, high = _value(param, low, what), _value(param, high, what)
    if not low < high:
        raise ConfigError(what, spec, "needs LOW < HIGH")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(what, spec, "loguniform needs LOW > 0")
    return Distribution(kind, low, high)


def _display(value: Any) -> Any:
    """A swept value as a table cell: tuples as ``64x64``, everything else as is."""
    if isinstance(value, tuple):
        return "x".join(str(v) for v in value)
    return value


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


# ----------------------------------------------------------------------------- planning


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


# ----------------------------------------------------------------------------- progress


class SweepProgress:
    """One bar for the whole sweep: configurations x seeds x env steps.

    A rich bar on a terminal, else one plain line per chunk (as
    ``rl.host.progress.Progress``); silent when disabled (e.g. on processes > 0).
    """

    def __init__(self, total: int, what: str, enabled: bool = True, verbose: bool = True, file: IO[str] | None = None):
        self.total, self.what, self.enabled, self.verbose, self.file = total, what, enabled, verbose, file
        self.done = 0
        self._bar = None
        self._task = None
        self._start = time.monotonic()

    def __enter__(self) -> SweepProgress:
        self._start = time.monotonic()
        if self.enabled:
            import rich.console
            import rich.progress

            from rl.host.progress import _is_interactive

            console = rich.console.Console(file=self.file)
            if _is_interactive(console):
                self._bar = rich.progress.Progress(
                    rich.progress.TextColumn("[bold]sweep"),
                    rich.progress.BarColumn(),
                    rich.progress.TextColumn("{task.completed:,.0f}/{task.total:,.0f} env steps"),
                    rich.progress.TextColumn(f"({self.what})"),
                    rich.progress.TextColumn("{task.fields[rate]}"),
                    rich.progress.TextColumn("{task.fields[note]}"),
                    rich.progress.TimeElapsedColumn(),
                    rich.progress.TimeRemainingColumn(),
                    console=console,
                )
                self._bar.start()
                self._task = self._bar.add_task("sweep", total=self.total, rate="", note="compiling")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def say(self, line: str) -> None:
        """A message above the bar (or a plain line)."""
        if not self.verbose:
            return
        if self._bar is not None:
            self._bar.console.print(line, highlight=False, markup=False)
        else:
            print(line, file=self.file or sys.stdout, flush=True)

    def advance(self, env_steps: int, note: str, run_seconds: float | None = None) -> None:
        """``env_steps`` more (all runs together); the rate uses ``run_seconds`` (no compiles) if given."""
        self.done = min(self.done + env_steps, self.total)
        if not self.enabled:
            return
        seconds = time.monotonic() - self._start if run_seconds is None else run_seconds
        rate = f"{self.done / max(seconds, 1e-9):,.0f} steps/s"
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, rate=rate, note=note)  # type: ignore[arg-type]
        else:
            pct = 100.0 * self.done / self.total
            print(
                f"[{pct:5.1f}%] sweep env steps {self.done:,}/{self.total:,} ({self.what}) | {rate} | {note}",
                file=self.file or sys.stdout,
                flush=True,
            )


# ----------------------------------------------------------------------------- running


@dataclass
class SweepResult:
    """A finished sweep: raw curves, the tidy table, per-configuration statistics."""

    plan: SweepPlan
    metrics: list[dict[str, np.ndarray]]  # per configuration: each metric [S, U] (seeds in plan order)
    env_steps: list[np.ndarray]  # per configuration: [U] env steps per run at each update
    final: np.ndarray  # [C, S] final return per configuration and seed (NaN: no episode ended)
    summary: Any  # pandas DataFrame, one row per configuration, sorted by rank
    compile_seconds: float
    run_seconds: float
    out: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> int:
        """Index of the best configuration (rank 1)."""
        return int(self.summary.iloc[0]["config"])

    def best_values(self) -> dict[str, Any]:
        return dict(self.plan.configs[self.best])

    def table(self) -> Any:
        """The tidy results (pandas): one row per configuration x seed x update."""
        return results_table(self)

    def best_preset(self) -> dict[str, Any]:
        return best_preset(self)


def sweep(
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
    num_chunks: int = 10,
    pad: bool = True,
    mesh: jax.sharding.Mesh | None = None,
    env_params: Any = None,
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
    verbose: bool = True,
    plot_top: int = 10,
    file: IO[str] | None = None,
    evaluation: Any = None,
) -> SweepResult:
    """Train every configuration x seed and rank the configurations.

    Args:
      agent: an agent module (``agents.get("ppo")``): ``Config``, ``Hyper``, ``make``.
      env: an env id for ``envs.make``, or an env object together with ``env_params``.
      grid: name -> values (a list, or text ``"1e-4,3e-4"``); the sweep takes their product.
      sample: name -> :class:`Distribution` or text ``"loguniform:1e-5:1e-2"``,
        ``"uniform:0:0.1"``, ``"choice:64,128"``; ``num_samples`` draws each, combined
        with every grid point.
      num_samples: number of random draws (required with ``sample``).
      seeds: a number of seeds (0..n-1) or the seeds themselves; every configuration
        runs every seed.
      config, hyper: the base settings the swept names override (agent defaults).
      sample_seed: seed of the random search draws (the same on every host).
      num_chunks: host round trips per compile group (progress granularity).
      pad: pad a group whose runs do not divide the device count with duplicate runs
        (dropped from every output); False refuses such a sweep.
      mesh: 1-D device mesh (default: every device of every process).
      out: folder for the report (must not exist or be empty); None writes nothing.
      progress: show the sweep's progress bar (configurations x seeds x env steps).
      verbose: print the plan (compiles, padding) first and the ranking and best
        configuration at the end.
      plot_top: configurations drawn in the learning-curve and profile plots (0 = all).
      file: where messages and the bar go (default stdout).
      evaluation: an ``rl.device.evaluation.EvalConfig``: every run plays evaluation episodes in the
        jitted program (the same start states for all), and the configurations are scored and
        ranked by the final evaluation return instead of the training episodes' (kept in
        ``result.extra["final_training"]``). None (default): no evaluation episodes.

    Raises:
      ConfigError: for an unknown name (the message lists the sweepable ones), an
        empty or malformed value list, invalid values, or runs that do not divide
        the devices with ``pad=False``; before anything compiles.
    """
    if isinstance(num_chunks, bool) or not isinstance(num_chunks, int) or num_chunks < 1:
        raise ConfigError("num_chunks", num_chunks, "must be a positive integer")
    if isinstance(plot_top, bool) or not isinstance(plot_top, int) or plot_top < 0:
        raise ConfigError("plot_top", plot_top, "must be an integer >= 0 (0 plots every configuration)")
    if evaluation is not None:
        evaluation.validate()
    the_plan = plan(
        agent,
        env,
        grid=grid,
        sample=sample,
        num_samples=num_samples,
        seeds=seeds,
        config=config,
        hyper=hyper,
        sample_seed=sample_seed,
        pad=pad,
        mesh=mesh,
        env_params=env_params,
    )
    mesh = make_mesh() if mesh is None else mesh
    primary = distributed.is_primary()
    if evaluation is not None:
        from rl.device.evaluation import with_evaluation

        _, env_obj, env_params_obj = _resolve_env(env, env_params)
        for g in the_plan.groups:
            g.algo = with_evaluation(g.algo, env_obj, env_params_obj, evaluation)
    out_dir = _prepare_out(out) if primary and out is not None else (Path(out) if out is not None else None)
    distributed.assert_same_on_all_processes(
        {
            "configs": [{k: _display(v) for k, v in c.items()} for c in the_plan.configs],
            "seeds": the_plan.seeds,
            "num_chunks": num_chunks,
        },
        "the sweep's configurations and seeds",
    )
    if primary and out_dir is not None:
        record = _plan_record(the_plan, num_chunks, mesh)
        record["evaluation"] = None if evaluation is None else dataclasses.asdict(evaluation)
        write_json(out_dir / "sweep.json", record, default=str)

    total = sum(g.num_runs * g.algo.num_updates * g.algo.steps_per_update for g in the_plan.groups)
    what = f"{len(the_plan.configs)} configs x {len(the_plan.seeds)} seeds x steps"
    num_seeds = len(the_plan.seeds)
    metrics: list[dict[str, np.ndarray] | None] = [None] * len(the_plan.configs)
    env_steps: list[np.ndarray | None] = [None] * len(the_plan.configs)
    compile_seconds = run_seconds = 0.0
    with SweepProgress(total, what, enabled=progress and primary, verbose=verbose and primary, file=file) as bar:
        for line in the_plan.describe():
            bar.say(line)
        for gi, g in enumerate(the_plan.groups):
            keys, hypers = _stacked_inputs(g, the_plan.seeds)
            real = g.num_runs
            if len(the_plan.groups) > 1:
                bar.say(
                    f"compile group {gi + 1}/{len(the_plan.groups)}{_group_label(g)}: "
                    f"{len(g.config_ids)} configuration(s) x {num_seeds} seeds ..."
                )

            def on_chunk(report: ChunkReport, g=g, real=real, before=run_seconds) -> None:
                ret, n = report.metrics["episode_return"][:real, -1], report.metrics["episodes"][:real, -1]
                note = f"return {np.mean(ret[n > 0]):.1f}" if np.any(n > 0) else "return n/a"
                bar.advance(
                    report.num_updates * g.algo.steps_per_update * real,
                    note,
                    run_seconds=before + report.elapsed_seconds,
                )

            result = run_batch(g.algo, keys, hypers, num_chunks=num_chunks, mesh=mesh, on_chunk=on_chunk)
            compile_seconds += result.compile_seconds
            run_seconds += result.run_seconds
            steps = (np.arange(g.algo.num_updates) + 1) * g.algo.steps_per_update
            for h, config_id in enumerate(g.config_ids):
                rows = slice(h * num_seeds, (h + 1) * num_seeds)  # padded runs lie beyond `real`
                metrics[config_id] = {k: np.asarray(v[rows]) for k, v in result.metrics.items()}
                env_steps[config_id] = steps
            del result

    final = np.stack([stats.final_return(m["episode_return"], m["episodes"], FINAL_FRACTION) for m in metrics])
    extra: dict[str, Any] = {}
    if evaluation is not None and EVAL_RETURN in metrics[0]:  # score by the final evaluation episodes
        extra = {"final_training": final, "scored_by": "final evaluation return"}
        final = np.stack([final_eval_returns(m[EVAL_RETURN])[0] for m in metrics])
        if primary and verbose:
            print(f"scores: the final evaluation return ({_eval_words(evaluation)})", file=file)
    res = SweepResult(
        plan=the_plan,
        metrics=metrics,
        env_steps=env_steps,
        final=final,  # type: ignore[arg-type]
        summary=summarize(the_plan, final),
        compile_seconds=compile_seconds,
        run_seconds=run_seconds,
        out=out_dir,
        extra=extra,
    )
    if primary:
        if out_dir is not None:
            write_report(res, out_dir, plot_top=plot_top)
        if verbose:
            print_ranking(res, file=file)
    return res


def _eval_words(evaluation: Any) -> str:
    return f"{evaluation.episodes} {evaluation.mode} episodes per seed after the last update"


# ----------------------------------------------------------------------------- statistics


def _bootstrap(x: np.ndarray, statistic: Callable[..., np.ndarray], seed: int = 0) -> stats.Interval:
    """Percentile-bootstrap 95% interval of ``statistic`` over one configuration's seeds
    (``rl.host.stats.bootstrap_ci``; with one task this is the stratified bootstrap); NaN scores
    (seeds that finished no episode) are left out."""
    x = x[np.isfinite(x)]
    if x.size == 0:
        return stats.Interval(math.nan, math.nan, math.nan)
    low, high = stats.bootstrap_ci(x, num_resamples=NUM_RESAMPLES, seed=seed, statistic=statistic)
    return stats.Interval(float(statistic(x, axis=None)), low, high)


def summarize(the_plan: SweepPlan, final: np.ndarray) -> Any:
    """Per configuration: mean and IQM of the final return with 95% CIs, and the rank.

    Ranked by IQM (robust to one lucky or broken seed), ties by mean;
    configurations where no seed finished an episode come last.
    """
    import pandas as pd

    rows = []
    group_of = {c: gi for gi, g in enumerate(the_plan.groups) for c in g.config_ids}
    for c, values in enumerate(the_plan.configs):
        scores = final[c]
        mean, iqm = _bootstrap(scores, np.mean), _bootstrap(scores, stats.iqm)
        rows.append(
            {
                "config": c,
                **{n: _display(values[n]) for n in the_plan.names},
                "compile_group": group_of[c],
                "num_seeds": int(scores.size),
                "num_scored": int(np.isfinite(scores).sum()),
                "iqm": iqm.point,
                "iqm_low": iqm.low,
                "iqm_high": iqm.high,
                "mean": mean.point,
                "mean_low": mean.low,
                "mean_high": mean.high,
                "final_return_per_seed": json.dumps(
                    [None if not math.isfinite(v) else round(float(v), 4) for v in scores]
                ),
            }
        )
    frame = pd.DataFrame(rows)
    order = sorted(
        range(len(rows)), key=lambda i: (-_nan_low(rows[i]["iqm"]), -_nan_low(rows[i]["mean"]), rows[i]["config"])
    )
    frame = frame.iloc[order].reset_index(drop=True)
    frame.insert(1, "rank", np.arange(1, len(rows) + 1))
    return frame


def _nan_low(x: float) -> float:
    return -math.inf if not math.isfinite(x) else x


def results_table(res: SweepResult) -> Any:
    """One row per configuration x seed x update, as pandas (also written as CSV and Parquet).

    Columns: ``config``, ``seed``, the swept values, ``update``, ``env_steps``
    (per run), then every metric (per-episode metrics are NaN where no episode
    ended). A metric named like a swept name (PPO logs the annealed
    ``learning_rate``) is renamed ``<name>_metric``.
    """
    import pandas as pd

    from rl.host.sinks import chunk_table

    frames = []
    for c, values in enumerate(res.plan.configs):
        labels = [{"config": c, "seed": s, **{n: _display(values[n]) for n in res.plan.names}} for s in res.plan.seeds]
        m = {(f"{k}_metric" if k in values else k): v for k, v in res.metrics[c].items()}
        spu = int(res.env_steps[c][0])
        frames.append(pd.DataFrame(chunk_table(labels, m, 0, spu)))
    return pd.concat(frames, ignore_index=True).infer_objects()


def best_preset(res: SweepResult) -> dict[str, Any]:
    """The best configuration as a preset file ``experiments.train --preset-file`` reads."""
    p, row = res.plan, res.summary.iloc[0]
    values = p.configs[res.best]
    config = dataclasses.replace(p.base_config, **{n: values[n] for n in p.static})
    hyper = dataclasses.replace(p.base_hyper, **{n: values[n] for n in p.traced})
    swept = ", ".join(f"{n}={_display(values[n])}" for n in p.names) or "base settings"
    return {
        "name": f"sweep-best-{p.agent}-{p.env_id}",
        "agent": p.agent,
        "env": p.env_id,
        "config": _plain(dataclasses.asdict(config)),
        "hyper": {k: float(v) for k, v in dataclasses.asdict(hyper).items()},
        "source": f"rl.sweep: best of {len(p.configs)} configuration(s) x {len(p.seeds)} seeds "
        f"by IQM of the final return ({swept})",
        "published": f"IQM final return {row['iqm']:.2f} (95% CI {row['iqm_low']:.2f} .. {row['iqm_high']:.2f}), "
        f"mean {row['mean']:.2f} over seeds {p.seeds}",
    }


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


# ----------------------------------------------------------------------------- report files


def _prepare_out(out: str | os.PathLike[str]) -> Path:
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError("out", str(path), "already exists and is not empty; choose a new folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _plan_record(p: SweepPlan, num_chunks: int, mesh: jax.sharding.Mesh) -> dict[str, Any]:
    return {
        "agent": p.agent,
        "env": p.env_id,
        **p.space,
        "traced": p.traced,
        "shape_setting": p.static,
        "seeds": p.seeds,
        "num_chunks": num_chunks,
        "num_configurations": len(p.configs),
        "num_runs": p.num_runs,
        "configurations": [{"config": i, **{k: _display(v) for k, v in c.items()}} for i, c in enumerate(p.configs)],
        "compile_groups": [
            {
                "static": {k: _display(v) for k, v in g.static.items()},
                "configs": g.config_ids,
                "padded_runs": g.num_padded,
            }
            for g in p.groups
        ],
        "base_config": _plain(dataclasses.asdict(p.base_config)),
        "base_hyper": _plain(dataclasses.asdict(p.base_hyper)),
        "devices": [str(d) for d in mesh.devices.flat],
        "num_processes": distributed.process_count(),
        "jax_version": jax.__version__,
    }


def _label(p: SweepPlan, c: int) -> str:
    text = ", ".join(
        f"{n}={_display(p.configs[c][n]):.3g}"
        if isinstance(p.configs[c][n], float)
        else f"{n}={_display(p.configs[c][n])}"
        for n in p.names
    )
    return f"#{c} {text}" if text else f"#{c}"


def write_report(res: SweepResult, out: Path, plot_top: int = 10) -> None:
    """Every report file (see the module docstring) into ``out``."""
    from rl.host import plots

    p = res.plan
    table = results_table(res)
    atomic_write_path(out / "results.csv", lambda tmp: table.to_csv(tmp, index=False, lineterminator="\n"))
    atomic_write_path(out / "results.parquet", lambda tmp: table.to_parquet(tmp, index=False))
    table = None  # free it before the plots (a large sweep's table is big)
    summary = res.summary
    atomic_write_path(out / "summary.csv", lambda tmp: summary.to_csv(tmp, index=False, lineterminator="\n"))
    write_json(
        out / "summary.json",
        {
            "final_return": f"episode-weighted mean return of the last {FINAL_FRACTION:.0%} of updates per seed",
            "ranking": "by IQM of the final return over seeds, then mean; 95% CIs from a stratified bootstrap "
            f"({NUM_RESAMPLES} resamples)",
            "compile_seconds": res.compile_seconds,
            "run_seconds": res.run_seconds,
            "configurations": json.loads(summary.to_json(orient="records")),
        },
        default=str,
    )
    preset = best_preset(res)
    write_json(out / "best_preset.json", preset, default=str)

    ranked = [int(c) for c in summary["config"]]
    shown = ranked[: plot_top or None]
    # profiles: configurations spread over the ranks (best to worst); the top ones often all saturate
    spread = [ranked[i] for i in np.unique(np.linspace(0, len(ranked) - 1, len(shown)).round().astype(int))]
    # learning curves: episodes binned over env steps (continuous for every agent), bootstrap bands
    curves = {}
    for c in shown:
        m = res.metrics[c]
        curve = stats.learning_curve(res.env_steps[c], m["episode_return"], m["episodes"])
        curves[_label(p, c)] = (curve.env_steps, curve.mean, curve.low, curve.high)
    which = f"top {len(shown)} of {len(p.configs)}" if len(shown) < len(p.configs) else f"{len(p.configs)}"
    band = "95% CI" if stats.too_few_for_ci(len(p.seeds)) is None else "band: range of the seeds, too few for a 95% CI"
    plots.plot_curves(
        out / "learning_curves.png",
        curves,
        title=f"{p.agent} on {p.env_id}: {which} configurations, {len(p.seeds)} seeds ({band})",
        xlabel="environment steps per run (episodes pooled in bins)",
    )
    # performance profiles
    scored = res.final[np.isfinite(res.final)]
    if scored.size:
        taus = np.linspace(scored.min(), scored.max(), 101)
        import pandas as pd

        rows, profiles = [], {}
        for c in range(len(p.configs)):
            x = res.final[c][np.isfinite(res.final[c])]
            if not x.size:
                continue
            profiles[c] = stats.performance_profile(x, taus, num_resamples=NUM_RESAMPLES)
            prof, low, high = profiles[c]
            rows.append(pd.DataFrame({"config": c, "tau": taus, "fraction": prof, "low": low, "high": high}))
        prof_curves = {
            f"rank {ranked.index(c) + 1}: {_label(p, c)}": (taus, *profiles[c]) for c in spread if c in profiles
        }
        frame = pd.concat(rows, ignore_index=True)
        atomic_write_path(out / "profiles.csv", lambda tmp: frame.to_csv(tmp, index=False, lineterminator="\n"))
        if prof_curves:
            plots.plot_curves(
                out / "performance_profile.png",
                prof_curves,
                title=f"performance profiles ({len(spread)} of {len(p.configs)} configurations "
                f"spread over the ranking, {len(p.seeds)} seeds)",
                ylabel="fraction of seeds with final return > tau",
                xlabel="final return threshold tau",
            )
    for name in p.names:
        _plot_param(out / f"final_vs_{name}.png", res, name)


def _plot_param(path: Path, res: SweepResult, name: str) -> None:
    """Final return against one swept name.

    When each value belongs to one configuration (one swept name, or random
    search) each configuration is a point with its IQM and 95% CI. When
    several configurations share a value (a grid over several names) the
    seeds of all of them are pooled per value: the marginal effect of ``name``.
    """
    from matplotlib.figure import Figure

    from rl.host import plots

    p = res.plan
    by_value: dict[Any, list[int]] = {}
    for c, values in enumerate(p.configs):
        by_value.setdefault(_hashable(values[name]), []).append(c)
    pooled = any(len(cs) > 1 for cs in by_value.values())
    xs = list(by_value)
    points = [_bootstrap(res.final[cs].ravel(), stats.iqm) for cs in by_value.values()]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
    order = sorted(range(len(xs)), key=lambda i: xs[i]) if numeric else list(range(len(xs)))
    keep = [i for i in order if math.isfinite(points[i].point)]
    fig = Figure(figsize=plots.FIGURE_SIZE, dpi=plots.DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.grid(True, alpha=0.3)
    what = "pooled over the other swept names" if pooled else "one point per configuration"
    ax.set_title(f"final return vs {name} (IQM over seeds, 95% CI; {what})", fontsize="medium")
    ax.set_xlabel(name)
    ax.set_ylabel("final return (IQM)")
    y = np.array([points[i].point for i in keep])
    err = np.array([[points[i].point - points[i].low for i in keep], [points[i].high - points[i].point for i in keep]])
    if numeric:
        x = np.array([float(xs[i]) for i in keep])
        sampled = name in p.space.get("sample", {})
        ax.errorbar(x, y, yerr=err, marker="o", capsize=4, linestyle="none" if sampled else "-")
        positive = x.size > 0 and np.all(x > 0)
        if positive and (
            str(p.space.get("sample", {}).get(name, "")).startswith("loguniform") or x.max() / x.min() >= 10
        ):
            ax.set_xscale("log")
    else:
        ax.errorbar(np.arange(len(keep)), y, yerr=err, marker="o", capsize=4, linestyle="none")
        ax.set_xticks(np.arange(len(keep)), [str(_display(xs[i])) for i in keep])
    atomic_write_path(path, lambda tmp: fig.savefig(tmp, format="png"))


def print_ranking(res: SweepResult, top: int = 10, file: IO[str] | None = None) -> None:
    """The ranking's head and the best configuration, as the CLI prints them."""
    p, s = res.plan, res.summary
    file = file or sys.stdout
    print(f"\nranking by IQM of the final return ({len(p.seeds)} seeds each; 95% CIs):", file=file)
    width = max([len(n) for n in p.names] + [6])
    head = (
        "  rank config  " + "  ".join(f"{n:>{width}}" for n in p.names) + "   IQM [95% CI]              mean [95% CI]"
    )
    print(head, file=file)
    for _, row in s.head(top).iterrows():
        vals = "  ".join(f"{_fmt(row[n]):>{width}}" for n in p.names)
        print(
            f"  {row['rank']:>4} {row['config']:>6}  {vals}   "
            f"{_fmt(row['iqm']):>8} [{_fmt(row['iqm_low'])} .. {_fmt(row['iqm_high'])}]   "
            f"{_fmt(row['mean']):>8} [{_fmt(row['mean_low'])} .. {_fmt(row['mean_high'])}]",
            file=file,
        )
    if len(s) > top:
        print(f"  ... {len(s) - top} more in summary.csv", file=file)
    best = s.iloc[0]
    values = ", ".join(f"{n}={_fmt(best[n])}" for n in p.names) or "the base settings"
    print(
        f"best: configuration {best['config']} ({values}): IQM final return {_fmt(best['iqm'])} "
        f"(95% CI {_fmt(best['iqm_low'])} .. {_fmt(best['iqm_high'])})",
        file=file,
    )
    print(f"compile {res.compile_seconds:.1f} s, run {res.run_seconds:.1f} s", file=file)
    if res.out is not None:
        print(
            f"report: {res.out}\nbest preset: python -m experiments.train {p.agent} "
            f"--preset-file {res.out / 'best_preset.json'}",
            file=file,
            flush=True,
        )


def _fmt(x: Any) -> str:
    if isinstance(x, (float, np.floating)):
        return "nan" if not math.isfinite(x) else f"{x:.4g}"
    return str(x)
