"""Learning-curve and sweep plots written as PNG files.

matplotlib is imported lazily inside each function, and figures are drawn with the Agg canvas
through ``matplotlib.figure.Figure`` (not pyplot), so plotting never changes the process-wide
backend, opens no window and works headless. Every file is written atomically: the figure is
saved to a temporary file in the target directory and moved over the target with ``os.replace``,
so a reader (or a crash) never sees a half-written PNG, which gets the mode of any new file
(``0666`` less the umask), not the ``0600`` of a temporary file.

Lines join the finite points of a curve: a point where a curve is undefined (NaN) is left out
rather than breaking the line, and the band is drawn over the same points.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from rl.host.files import atomic_write
from rl.host.stats import BinnedCurve, learning_curve, too_few_for_ci

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Curve", "learning_curve_figure", "plot_curves", "plot_final_vs_param", "plot_learning_curve"]

FIGURE_SIZE = (7.0, 4.5)
DPI = 120
BAND_ALPHA = 0.25
RAW_ALPHA = 0.35  # the unsmoothed mean under a smoothed one


class Curve(NamedTuple):
    """A mean curve with its confidence band, all ``[U]``."""

    env_steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


def _new_figure(title: str, xlabel: str, ylabel: str) -> Figure:
    from matplotlib.figure import Figure  # lazy: optional heavy backend

    figure = Figure(figsize=FIGURE_SIZE, dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    return figure


def save_png_atomically(figure: Figure, path: str | os.PathLike[str]) -> Path:
    """Save `figure` as a PNG at `path` via a temporary file in the same directory; returns the path."""
    return atomic_write(path, lambda file: figure.savefig(file, format="png"))


def _check_curve(label: str, curve: Curve) -> Curve:
    arrays = Curve(*(np.asarray(array, dtype=np.float64) for array in curve))
    shapes = {field: array.shape for field, array in zip(Curve._fields, arrays, strict=True)}
    if len(set(shapes.values())) != 1 or arrays.env_steps.ndim != 1:
        raise ValueError(f"curve {label!r} needs four rank-1 arrays of one length [U], got shapes {shapes}.")
    return arrays


def _draw_curve(figure: Figure, curve: Curve, label: str | None, band: bool = True) -> None:
    """The mean as one line through its finite points (a marker when there is one), and its band."""
    axes = figure.axes[0]
    shown = np.isfinite(curve.mean)
    marker = "o" if shown.sum() == 1 else None
    (line,) = axes.plot(curve.env_steps[shown], curve.mean[shown], label=label, marker=marker)
    banded = shown & np.isfinite(curve.low) & np.isfinite(curve.high)
    if band and banded.any():
        axes.fill_between(
            curve.env_steps[banded],
            curve.low[banded],
            curve.high[banded],
            color=line.get_color(),
            alpha=BAND_ALPHA,
            linewidth=0,
        )


def plot_curves(
    path: str | os.PathLike[str],
    curves: Mapping[str, Curve | tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    title: str,
    ylabel: str = "episode return",
    xlabel: str = "environment steps per run",
) -> Path:
    """Plot several mean curves with their bands (e.g. one per configuration) in one figure.

    Args:
      path: PNG file to write.
      curves: label → ``(env_steps[U], mean[U], low[U], high[U])``, e.g. the fields of
        :func:`rl.host.stats.learning_curve`; U may differ between curves. NaN points are left out and
        the line joins the finite ones.
      title: figure title.
      ylabel: y-axis label.
      xlabel: x-axis label.

    Returns:
      The path written.
    """
    if not curves:
        raise ValueError("curves is empty; pass at least one label → (env_steps, mean, low, high).")
    figure = _new_figure(title, xlabel, ylabel)
    for label, curve in curves.items():
        _draw_curve(figure, _check_curve(label, Curve(*curve)), label)
    if len(curves) > 1:
        figure.axes[0].legend(loc="best", fontsize="small")
    return save_png_atomically(figure, path)


def learning_curve_figure(
    env_steps: np.ndarray,
    values: np.ndarray,
    counts: np.ndarray | None,
    title: str,
    ylabel: str = "episode return",
    num_bins: int | None = None,
    smooth: int = 0,
) -> tuple[Figure, BinnedCurve]:
    """The figure :func:`plot_learning_curve` saves, and the curve drawn in it.

    The episodes are binned over environment steps (:func:`rl.host.stats.learning_curve`), so the
    curve is continuous for every agent, including off-policy agents with one env, which complete
    an episode only every few hundred updates. The band is the raw (unsmoothed) bootstrap band
    over runs; with fewer than :data:`rl.host.stats.MIN_RUNS_FOR_CI` runs it is only their range and is
    labelled so. With ``smooth`` > 1 the raw mean is drawn faintly under the smoothed one.
    """
    values = np.asarray(values, dtype=np.float64)
    env_steps = np.asarray(env_steps, dtype=np.float64)
    if values.ndim != 2 or env_steps.shape != values.shape[1:]:
        raise ValueError(
            f"need env_steps [U] and values [N, U] with the same U, got {env_steps.shape} and {values.shape}."
        )
    curve = learning_curve(env_steps, values, counts, num_bins=num_bins, smooth=smooth)
    num_runs = values.shape[0]
    xlabel = f"environment steps per run (episodes pooled in bins of {curve.bin_steps:,.0f} steps)"
    figure = _new_figure(title, xlabel, ylabel)
    runs = f"{num_runs} run" + ("s" if num_runs != 1 else "")
    if num_runs == 1:
        band_label = None
    elif too_few_for_ci(num_runs) is not None:
        band_label = f"range of the {num_runs} runs (too few for a 95% CI)"
    else:
        band_label = f"95% bootstrap CI over the {num_runs} runs"
    axes = figure.axes[0]
    x, shown = curve.env_steps, np.isfinite(curve.mean)
    marker = "o" if shown.sum() == 1 else None
    if smooth > 1:
        (raw,) = axes.plot(
            x[shown], curve.mean[shown], alpha=RAW_ALPHA, linewidth=1, marker=marker, label=f"mean of {runs}, per bin"
        )
        drawn = np.isfinite(curve.smoothed)
        axes.plot(
            x[drawn],
            curve.smoothed[drawn],
            color=raw.get_color(),
            marker=marker,
            label=f"the same, smoothed over {smooth} bins",
        )
    else:
        (raw,) = axes.plot(x[shown], curve.mean[shown], marker=marker, label=f"mean of {runs}")
    banded = shown & np.isfinite(curve.low) & np.isfinite(curve.high)
    if band_label is not None and banded.any():
        axes.fill_between(
            x[banded],
            curve.low[banded],
            curve.high[banded],
            color=raw.get_color(),
            alpha=BAND_ALPHA,
            linewidth=0,
            label=band_label,
        )
    axes.legend(loc="best", fontsize="small")
    return figure, curve


def plot_learning_curve(
    path: str | os.PathLike[str],
    env_steps: np.ndarray,
    values: np.ndarray,
    counts: np.ndarray | None,
    title: str,
    ylabel: str = "episode return",
    num_bins: int | None = None,
    smooth: int = 0,
) -> Path:
    """Plot the mean over runs of a per-update metric against env steps, with its band.

    Args:
      path: PNG file to write.
      env_steps: ``[U]`` environment steps per run at the end of each update (the x axis).
      values: ``[N, U]`` per-run values, e.g. ``episode_return`` (NaN where no episode ended).
      counts: ``[N, U]`` episodes behind each value (``episodes``; entries with 0 are skipped);
        None when every entry is valid (losses).
      title: figure title.
      ylabel: y-axis label.
      num_bins: bins over env steps (None: about 2 episodes per run and bin, at most 100; see
        :func:`rl.host.stats.default_num_bins`).
      smooth: moving-average window in bins for the drawn mean (0 or 1: none); the band stays raw.

    Returns:
      The path written.
    """
    figure, _ = learning_curve_figure(env_steps, values, counts, title, ylabel, num_bins, smooth)
    return save_png_atomically(figure, path)


def plot_final_vs_param(
    path: str | os.PathLike[str],
    param_values: np.ndarray,
    finals_mean: np.ndarray,
    finals_low: np.ndarray,
    finals_high: np.ndarray,
    param_name: str,
    log_x: bool = False,
    title: str | None = None,
    ylabel: str = "final return",
    join: bool = True,
) -> Path:
    """Plot final performance against one swept hyperparameter, with confidence intervals.

    Args:
      path: PNG file to write.
      param_values: ``[C]`` value of the hyperparameter per configuration (any order). Values
        that are not numbers (text, e.g. ``"64x64"``, or booleans) are categories: drawn evenly
        spaced in the order given, labelled with their text, not joined.
      finals_mean: ``[C]`` mean final return per configuration (NaN points are left out).
      finals_low: ``[C]`` lower end of its confidence interval.
      finals_high: ``[C]`` upper end of its confidence interval.
      param_name: x-axis label, e.g. ``"learning_rate"``.
      log_x: log-scaled x axis (learning rates, entropy coefficients); needs positive numbers.
      title: figure title; defaults to ``"<ylabel> vs <param_name>"``.
      ylabel: y-axis label.
      join: join the points with a line (False: points only, e.g. random-search draws).

    Returns:
      The path written.
    """
    values = np.asarray(param_values)
    categorical = values.dtype.kind not in "iuf"
    positions = np.arange(values.size) if categorical else values
    curve = _check_curve(param_name, Curve(positions, finals_mean, finals_low, finals_high))
    shown = np.flatnonzero(np.isfinite(curve.mean))
    if log_x and (categorical or np.any(curve.env_steps[shown] <= 0)):
        raise ValueError(f"log_x needs positive {param_name} values, got {values.tolist()}.")
    order = shown if categorical else shown[np.argsort(curve.env_steps[shown])]
    x, mean, low, high = (array[order] for array in curve)
    figure = _new_figure("", param_name, ylabel)
    axes = figure.axes[0]
    axes.set_title(title or f"{ylabel} vs {param_name}", fontsize="medium")  # a sweep's titles are long
    if categorical:
        x = np.arange(order.size)
        axes.set_xticks(x, [str(values[i]) for i in order])
    linestyle = "-" if join and not categorical else "none"
    axes.errorbar(x, mean, yerr=np.stack([mean - low, high - mean]), marker="o", capsize=4, linestyle=linestyle)
    if log_x:
        axes.set_xscale("log")
    return save_png_atomically(figure, path)
