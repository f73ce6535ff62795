"""Learning-curve and sweep plots written as PNG files.

matplotlib is imported lazily inside each function, and figures are drawn with the Agg canvas
through ``matplotlib.figure.Figure`` (not pyplot), so plotting never changes the process-wide
backend, opens no window and works headless. Every file is written atomically: the figure is
saved to a temporary file in the target directory and moved over the target with ``os.replace``,
so a reader (or a crash) never sees a half-written PNG.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from rl.stats import curve_mean_ci

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Curve", "plot_curves", "plot_final_vs_param", "plot_learning_curve"]

FIGURE_SIZE = (7.0, 4.5)
DPI = 120
BAND_ALPHA = 0.25


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            figure.savefig(file, format="png")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _check_curve(label: str, curve: Curve) -> Curve:
    arrays = Curve(*(np.asarray(array, dtype=np.float64) for array in curve))
    shapes = {field: array.shape for field, array in zip(Curve._fields, arrays, strict=True)}
    if len(set(shapes.values())) != 1 or arrays.env_steps.ndim != 1:
        raise ValueError(f"curve {label!r} needs four rank-1 arrays of one length [U], got shapes {shapes}.")
    return arrays


def _draw_curve(figure: Figure, curve: Curve, label: str | None) -> None:
    axes = figure.axes[0]
    (line,) = axes.plot(curve.env_steps, curve.mean, label=label)
    axes.fill_between(curve.env_steps, curve.low, curve.high, color=line.get_color(), alpha=BAND_ALPHA, linewidth=0)


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
      curves: label → ``(env_steps[U], mean[U], low[U], high[U])``, e.g. from
        :func:`rl.stats.curve_mean_ci`; U may differ between curves. NaN points leave gaps.
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


def plot_learning_curve(
    path: str | os.PathLike[str],
    env_steps: np.ndarray,
    values: np.ndarray,
    counts: np.ndarray | None,
    title: str,
    ylabel: str = "episode return",
) -> Path:
    """Plot the mean over runs of a per-update metric with its 95% bootstrap band.

    Args:
      path: PNG file to write.
      env_steps: ``[U]`` environment steps per run at each update (the x axis).
      values: ``[N, U]`` per-run values, e.g. ``episode_return``.
      counts: ``[N, U]`` validity counts, e.g. ``episodes`` (entries with 0 are skipped); None
        when every entry is valid (losses).
      title: figure title.
      ylabel: y-axis label.

    Returns:
      The path written.
    """
    values = np.asarray(values, dtype=np.float64)
    env_steps = np.asarray(env_steps, dtype=np.float64)
    if values.ndim != 2 or env_steps.shape != values.shape[1:]:
        raise ValueError(
            f"need env_steps [U] and values [N, U] with the same U, got {env_steps.shape} and {values.shape}."
        )
    mean, low, high = curve_mean_ci(values, counts)
    label = f"mean of {values.shape[0]} runs, 95% CI"
    figure = _new_figure(title, "environment steps per run", ylabel)
    _draw_curve(figure, Curve(env_steps, mean, low, high), label)
    figure.axes[0].legend(loc="best", fontsize="small")
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
) -> Path:
    """Plot final performance against one swept hyperparameter, with confidence intervals.

    Args:
      path: PNG file to write.
      param_values: ``[C]`` value of the hyperparameter per configuration (any order).
      finals_mean: ``[C]`` mean final return per configuration (NaN points are left out).
      finals_low: ``[C]`` lower end of its confidence interval.
      finals_high: ``[C]`` upper end of its confidence interval.
      param_name: x-axis label, e.g. ``"learning_rate"``.
      log_x: log-scaled x axis (learning rates, entropy coefficients); needs positive values.
      title: figure title; defaults to ``"<ylabel> vs <param_name>"``.
      ylabel: y-axis label.

    Returns:
      The path written.
    """
    curve = _check_curve(param_name, Curve(param_values, finals_mean, finals_low, finals_high))
    if log_x and np.any(curve.env_steps <= 0):
        raise ValueError(f"log_x needs positive {param_name} values, got {curve.env_steps.tolist()}.")
    shown = np.flatnonzero(np.isfinite(curve.mean))
    order = shown[np.argsort(curve.env_steps[shown])]
    x, mean, low, high = (array[order] for array in curve)
    figure = _new_figure(title or f"{ylabel} vs {param_name}", param_name, ylabel)
    axes = figure.axes[0]
    axes.errorbar(x, mean, yerr=np.stack([mean - low, high - mean]), marker="o", capsize=4)
    if log_x:
        axes.set_xscale("log")
    return save_png_atomically(figure, path)
