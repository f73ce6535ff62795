"""Host-side statistics over a batch of runs (NumPy/SciPy only, never jitted).

Every function here works on plain NumPy arrays that the host pulled off the device:

* per-update metrics have shape ``[N, U]`` (N runs, U updates), e.g. ``episode_return`` together
  with ``episodes``, the number of episodes completed in that update (the return is meaningless
  where ``episodes == 0``);
* per-run scores have shape ``[N]``; scores over several tasks have shape ``[runs, tasks]``.

The aggregate metrics and interval estimates follow Agarwal et al., "Deep Reinforcement Learning
at the Edge of the Statistical Precipice" (NeurIPS 2021): interquartile mean, percentile
bootstrap confidence intervals, stratified bootstrap over tasks and performance profiles. We do
not depend on their ``rliable`` package: it fails to import with the dependencies that come with
pandas 3, and the handful of functions needed fit in this module.

All bootstrap functions take a ``seed`` and are deterministic given it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple, overload

import numpy as np
import scipy.stats

__all__ = [
    "Interval",
    "bootstrap_ci",
    "curve_mean_ci",
    "final_return",
    "iqm",
    "performance_profile",
    "stratified_bootstrap_ci",
]

# A statistic of a sample that reduces along `axis` (np.mean, np.median, iqm).
AxisStatistic = Callable[..., np.ndarray]
# An aggregate of a whole score matrix [runs, tasks] to one number (rliable's `aggregate_func`).
MatrixStatistic = Callable[[np.ndarray], float]


class Interval(NamedTuple):
    """A point estimate with the ends of its confidence interval."""

    point: float
    low: float
    high: float


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}; e.g. 0.95 for a 95% interval.")


def _check_same_shape(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray, ndim: int) -> None:
    if a.ndim != ndim or a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must both have rank {ndim} and the same shape, got {a.shape} and {b.shape}."
        )


def _interval_quantiles(confidence: float) -> tuple[float, float]:
    """Lower and upper quantile levels of a central `confidence` interval."""
    tail = (1.0 - confidence) / 2.0
    return tail, 1.0 - tail


def final_return(episode_return: np.ndarray, episodes: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """Per-run mean return of all episodes completed in the last `fraction` of updates.

    Each update's mean return is weighted by the number of episodes completed in it, so the result
    is the mean over episodes, not over updates:
    ``final[n] = sum_u episodes[n, u] * episode_return[n, u] / sum_u episodes[n, u]`` over the
    window ``u >= U - W`` with ``W = max(1, round(fraction * U))``.

    Args:
      episode_return: ``[N, U]`` mean return of the episodes completed in each update; values where
        ``episodes == 0`` are ignored (they may be NaN or garbage).
      episodes: ``[N, U]`` number of episodes completed in each update (non-negative).
      fraction: share of the updates, counted from the end, that form the window; in ``(0, 1]``.

    Returns:
      ``[N]`` float64 final return per run; NaN for a run with no episode in the window.
    """
    episode_return = np.asarray(episode_return, dtype=np.float64)
    episodes = np.asarray(episodes, dtype=np.float64)
    _check_same_shape("episode_return", episode_return, "episodes", episodes, ndim=2)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}; 0.05 averages the last 5% of updates.")
    if np.any(episodes < 0):
        raise ValueError("episodes holds negative counts; pass the number of episodes completed per update.")
    num_updates = episode_return.shape[1]
    if num_updates == 0:
        raise ValueError("episode_return has no updates (shape [N, 0]); train for at least one update.")
    window = max(1, round(fraction * num_updates))
    counts = episodes[:, -window:]
    returns = np.where(counts > 0, episode_return[:, -window:], 0.0)
    total = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (counts * returns).sum(axis=1) / total, np.nan)


def iqm(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Interquartile mean: the mean of the middle 50% of values (25% trimmed from each end).

    Equals ``scipy.stats.trim_mean(x, 0.25, axis)``; with ``axis=None`` all values are pooled,
    which on a ``[runs, tasks]`` matrix is rliable's IQM.
    """
    return scipy.stats.trim_mean(np.asarray(x, dtype=np.float64), 0.25, axis=axis)


def _resample_indices(rng: np.random.Generator, num_items: int, num_resamples: int) -> np.ndarray:
    """``[num_resamples, num_items]`` indices drawn uniformly with replacement."""
    return rng.integers(0, num_items, size=(num_resamples, num_items))


def bootstrap_ci(
    x: np.ndarray,
    confidence: float = 0.95,
    num_resamples: int = 10_000,
    seed: int = 0,
    statistic: AxisStatistic = np.mean,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of `statistic` over the runs in `x`.

    Draws `num_resamples` samples of size N with replacement, evaluates the statistic on each
    (vectorised: ``statistic(samples, axis=-1)`` on a ``[num_resamples, N]`` array) and returns
    the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles.

    Args:
      x: ``[N]`` one score per run, all finite (drop NaN runs first, e.g. ``x[~np.isnan(x)]``).
      confidence: coverage of the interval.
      num_resamples: number of bootstrap samples.
      seed: seed of the resampling; equal seeds give equal intervals.
      statistic: reduces a sample along ``axis`` (``np.mean``, ``np.median``, :func:`iqm`).

    Returns:
      ``(low, high)``; ``(x[0], x[0])`` when N == 1.
    """
    x = np.asarray(x, dtype=np.float64)
    _check_confidence(confidence)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"x must be a non-empty rank-1 array of per-run scores, got shape {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise ValueError("x holds NaN or inf; drop runs without a score first, e.g. x[np.isfinite(x)].")
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    samples = x[_resample_indices(rng, x.size, num_resamples)]
    estimates = statistic(samples, axis=-1)
    low, high = np.quantile(estimates, _interval_quantiles(confidence))
    return float(low), float(high)


def _as_score_matrix(scores: np.ndarray) -> np.ndarray:
    """Scores as a finite ``[runs, tasks]`` matrix; a rank-1 ``[runs]`` array is one task."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    if scores.ndim != 2 or scores.size == 0:
        raise ValueError(f"scores must be a non-empty [runs] or [runs, tasks] array, got shape {scores.shape}.")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores hold NaN or inf; drop or impute runs without a score first.")
    return scores


def _stratified_resamples(rng: np.random.Generator, scores: np.ndarray, num_resamples: int) -> np.ndarray:
    """``[num_resamples, runs, tasks]``: runs resampled with replacement independently per task."""
    num_runs, num_tasks = scores.shape
    run_index = rng.integers(0, num_runs, size=(num_resamples, num_runs, num_tasks))
    return scores[run_index, np.arange(num_tasks)]


def _stratified_interval(
    scores: np.ndarray, statistic: MatrixStatistic, confidence: float, num_resamples: int, seed: int
) -> Interval:
    scores = _as_score_matrix(scores)
    rng = np.random.default_rng(seed)
    resamples = _stratified_resamples(rng, scores, num_resamples)
    estimates = np.array([statistic(sample) for sample in resamples], dtype=np.float64)
    low, high = np.quantile(estimates, _interval_quantiles(confidence))
    return Interval(float(statistic(scores)), float(low), float(high))


@overload
def stratified_bootstrap_ci(
    scores: Mapping[str, np.ndarray],
    statistic: MatrixStatistic = ...,
    confidence: float = ...,
    num_resamples: int = ...,
    seed: int = ...,
) -> dict[str, Interval]: ...


@overload
def stratified_bootstrap_ci(
    scores: np.ndarray,
    statistic: MatrixStatistic = ...,
    confidence: float = ...,
    num_resamples: int = ...,
    seed: int = ...,
) -> Interval: ...


def stratified_bootstrap_ci(
    scores: Mapping[str, np.ndarray] | np.ndarray,
    statistic: MatrixStatistic = iqm,
    confidence: float = 0.95,
    num_resamples: int = 2_000,
    seed: int = 0,
) -> dict[str, Interval] | Interval:
    """Aggregate score with a stratified percentile bootstrap interval, as in rliable.

    Each bootstrap sample resamples the runs with replacement independently within each task
    (the tasks are the strata), then applies `statistic` to the resampled ``[runs, tasks]``
    matrix. Every algorithm in a dict uses the same seed, as rliable does.

    Args:
      scores: ``[runs, tasks]`` (or ``[runs]`` for one task) normalised scores, or a dict from
        algorithm name to such a matrix.
      statistic: aggregate of a whole ``[runs, tasks]`` matrix to one number; the default
        :func:`iqm` pools all scores; e.g. ``lambda m: np.median(m.mean(axis=0))`` for rliable's
        median of per-task means.
      confidence: coverage of the interval.
      num_resamples: number of bootstrap samples (rliable uses 2000 by default).
      seed: seed of the resampling.

    Returns:
      An :class:`Interval` ``(point, low, high)``, or a dict of them keyed like `scores`.
    """
    _check_confidence(confidence)
    if isinstance(scores, Mapping):
        return {
            name: _stratified_interval(matrix, statistic, confidence, num_resamples, seed)
            for name, matrix in scores.items()
        }
    return _stratified_interval(scores, statistic, confidence, num_resamples, seed)


def _fraction_at_least(samples: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """``[..., K]`` fraction of the values in the last two axes of `samples` that are >= each tau."""
    return np.stack([(samples >= tau).mean(axis=(-2, -1)) for tau in taus], axis=-1)


def performance_profile(
    scores: np.ndarray,
    taus: np.ndarray,
    confidence: float = 0.95,
    num_resamples: int = 2_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run-score distribution: the fraction of runs scoring at least each threshold tau.

    ``profile[k] = mean over runs (and tasks) of [score >= taus[k]]``, with a stratified
    bootstrap band (runs resampled within each task), as rliable's
    ``create_performance_profile``.

    Args:
      scores: ``[runs]`` or ``[runs, tasks]`` finite scores.
      taus: ``[K]`` thresholds.
      confidence: coverage of the band.
      num_resamples: number of bootstrap samples.
      seed: seed of the resampling.

    Returns:
      ``(profile, low, high)``, each ``[K]``.
    """
    _check_confidence(confidence)
    scores = _as_score_matrix(scores)
    taus = np.asarray(taus, dtype=np.float64)
    if taus.ndim != 1:
        raise ValueError(f"taus must be a rank-1 array of thresholds, got shape {taus.shape}.")
    profile = _fraction_at_least(scores, taus)
    resamples = _stratified_resamples(np.random.default_rng(seed), scores, num_resamples)
    low, high = np.quantile(_fraction_at_least(resamples, taus), _interval_quantiles(confidence), axis=0)
    return profile, low, high


def _column_nanquantile(samples: np.ndarray, levels: tuple[float, ...]) -> list[np.ndarray]:
    """Linear-interpolation quantiles of each column of ``[B, U]`` `samples`, ignoring NaN.

    Vectorised replacement for ``np.nanquantile(samples, q, axis=0)``, which falls back to a
    Python loop over columns. A column that is all NaN gives NaN.
    """
    ordered = np.sort(samples, axis=0)  # NaN sorts last
    num_valid = np.sum(~np.isnan(samples), axis=0)
    columns = np.arange(samples.shape[1])
    results = []
    for level in levels:
        position = level * np.maximum(num_valid - 1, 0)
        below = np.floor(position).astype(np.int64)
        above = np.minimum(below + 1, np.maximum(num_valid - 1, 0))
        weight = position - below
        value = (1.0 - weight) * ordered[below, columns] + weight * ordered[above, columns]
        results.append(np.where(num_valid > 0, value, np.nan))
    return results


def curve_mean_ci(
    values: np.ndarray,
    counts: np.ndarray | None = None,
    confidence: float = 0.95,
    num_resamples: int = 1_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean learning curve over runs with a percentile bootstrap band over runs.

    At each update u the mean is over the runs with ``counts[:, u] > 0`` (NaN where there is
    none). The band resamples whole runs with replacement: each bootstrap sample is a vector of
    multiplicities ``w[N]`` (how often each run was drawn), and its mean at u is
    ``sum_n w_n valid_nu values_nu / sum_n w_n valid_nu``, computed for all samples and updates at
    once as two ``[B, N] @ [N, U]`` products. Bootstrap samples that drew no valid run at u are
    left out of the quantiles at u.

    Args:
      values: ``[N, U]`` per-run, per-update values (e.g. ``episode_return``); entries with
        ``counts == 0`` are ignored.
      counts: ``[N, U]`` validity counts (e.g. ``episodes``); None treats every entry as valid
        (losses and other metrics defined at every update).
      confidence: coverage of the band.
      num_resamples: number of bootstrap samples B; memory is about ``B * U * 8`` bytes.
      seed: seed of the resampling.

    Returns:
      ``(mean, low, high)``, each ``[U]`` float64.
    """
    _check_confidence(confidence)
    values = np.asarray(values, dtype=np.float64)
    counts = np.ones_like(values) if counts is None else np.asarray(counts, dtype=np.float64)
    _check_same_shape("values", values, "counts", counts, ndim=2)
    num_runs = values.shape[0]
    if num_runs == 0:
        raise ValueError("values has no runs (shape [0, U]); pass at least one run.")
    valid = (counts > 0).astype(np.float64)
    masked = np.where(valid > 0, values, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = masked.sum(axis=0) / valid.sum(axis=0)
        rng = np.random.default_rng(seed)
        multiplicity = rng.multinomial(num_runs, np.full(num_runs, 1.0 / num_runs), size=num_resamples)
        sample_means = (multiplicity.astype(np.float64) @ masked) / (multiplicity @ valid)
    low, high = _column_nanquantile(sample_means, _interval_quantiles(confidence))
    return mean, low, high
