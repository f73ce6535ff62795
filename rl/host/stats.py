"""Host-side statistics over a batch of runs (NumPy/SciPy only, never jitted).

Every function here works on plain NumPy arrays that the host pulled off the device:

* per-update metrics have shape ``[N, U]`` (N runs, U updates), e.g. ``episode_return`` together
  with ``episodes``, the number of episodes completed in that update (the return is meaningless
  where ``episodes == 0``);
* per-run scores have shape ``[N]``; scores over several tasks have shape ``[runs, tasks]``.

The aggregate metrics and interval estimates follow Agarwal et al., "Deep Reinforcement Learning
at the Edge of the Statistical Precipice" (NeurIPS 2021): interquartile mean, percentile
bootstrap confidence intervals, stratified bootstrap over tasks and performance profiles. The
library does not depend on their ``rliable`` package (it pulls in ``arch`` and ``statsmodels``,
and its dependencies need pandas < 3); the handful of functions needed fit in this module, and
``tests/test_rliable.py`` checks them against rliable 1.2 on fixed data: the IQM exactly, the
stratified percentile bootstrap exactly on the same resamples and within its Monte-Carlo error
on independent ones, the performance profile (``score > tau``) exactly. Two differences in use,
not in definition: rliable's ``get_interval_estimates`` draws 50,000 resamples by default (2,000
here), and it draws them from NumPy's global random state whatever ``random_state`` it is given,
where these functions take a ``seed``. ``rl.host.scores`` exports final scores as rliable's
``score_dict`` (``{algorithm: [runs, tasks]}``) for rliable's own plots.

All bootstrap functions take a ``seed`` and are deterministic given it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import NamedTuple, overload

import numpy as np
import scipy.stats

__all__ = [
    "MIN_RUNS_FOR_CI",
    "BinnedCurve",
    "Interval",
    "bin_over_env_steps",
    "bootstrap_ci",
    "curve_mean_ci",
    "final_return",
    "finite_interval",
    "iqm",
    "learning_curve",
    "mean_over_episodes",
    "moving_average",
    "performance_profile",
    "stratified_bootstrap_ci",
    "too_few_for_ci",
]

# With n values the percentile bootstrap draws a resample of n copies of the smallest value with
# probability n * n**-n = n**(1 - n): 1 for n = 1, 1/2 for n = 2, 1/9 for n = 3, all above the
# 2.5% tail of a 95% interval, so for n <= 3 the "95% CI" is exactly the range [min, max] of the
# values (a point for n = 1). From n = 4 (1/64 < 2.5%) it starts to be an interval estimate.
MIN_RUNS_FOR_CI = 4
# bootstrap_ci draws its resamples in batches of at most this many values (bounds its memory).
BOOTSTRAP_BATCH_VALUES = 1 << 22

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


FINAL_FRACTION = 0.05  # the final return: the episodes completed in the last 5% of updates


def final_return(episode_return: np.ndarray, episodes: np.ndarray, fraction: float = FINAL_FRACTION) -> np.ndarray:
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


def mean_over_episodes(episode_return: np.ndarray, episodes: np.ndarray) -> float:
    """Mean return of all the episodes behind ``[N, U]`` per-update means (all runs, all updates).

    ``sum episodes * episode_return / sum episodes`` over the entries with ``episodes > 0`` and a
    finite return, e.g. over one chunk of a progress report; NaN when no episode ended.
    """
    episode_return = np.asarray(episode_return, dtype=np.float64)
    episodes = np.asarray(episodes, dtype=np.float64)
    if episode_return.shape != episodes.shape:
        raise ValueError(
            f"episode_return and episodes need one shape, got {episode_return.shape} and {episodes.shape}."
        )
    valid = (episodes > 0) & np.isfinite(episode_return)
    total = episodes[valid].sum()
    return float((episodes[valid] * episode_return[valid]).sum() / total) if total > 0 else math.nan


def too_few_for_ci(num: int, what: str = "seeds") -> str | None:
    """Why a 95% bootstrap interval over `num` values says nothing, or None when there are enough.

    Below :data:`MIN_RUNS_FOR_CI` (4) values the percentile bootstrap's 95% interval is exactly
    the range of the values (see the comment on ``MIN_RUNS_FOR_CI``), so reports show the range
    and this note instead of calling it a confidence interval.
    """
    if num >= MIN_RUNS_FOR_CI:
        return None
    return (
        f"{num} {what} are too few for a 95% CI: with fewer than {MIN_RUNS_FOR_CI} the bootstrap "
        "interval is just the range of the values"
    )


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
    # resamples in batches of at most ~4M values (64 MB of indices and samples): 10,000 resamples of
    # 2048 seeds at once would take 330 MB. Up to 419 values (at 10,000 resamples) it is one batch.
    batch = max(1, BOOTSTRAP_BATCH_VALUES // x.size)
    estimates = np.concatenate(
        [
            statistic(x[_resample_indices(rng, x.size, min(batch, num_resamples - start))], axis=-1)
            for start in range(0, num_resamples, batch)
        ]
    )
    low, high = np.quantile(estimates, _interval_quantiles(confidence))
    return float(low), float(high)


def finite_interval(
    x: np.ndarray,
    statistic: AxisStatistic = np.mean,
    confidence: float = 0.95,
    num_resamples: int = 10_000,
    seed: int = 0,
) -> Interval:
    """`statistic` of the finite values in `x` with their percentile bootstrap interval (:func:`bootstrap_ci`).

    NaN scores (runs that finished no episode) are left out; when none is left every field is NaN.
    """
    x = np.asarray(x)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return Interval(math.nan, math.nan, math.nan)
    low, high = bootstrap_ci(x, confidence, num_resamples, seed, statistic)
    return Interval(float(statistic(x, axis=None)), low, high)


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


def _stratified_run_index(rng: np.random.Generator, shape: tuple[int, int], num_resamples: int) -> np.ndarray:
    """``[num_resamples, runs, tasks]`` run indices drawn with replacement independently per task."""
    num_runs, num_tasks = shape
    return rng.integers(0, num_runs, size=(num_resamples, num_runs, num_tasks))


def _stratified_resamples(rng: np.random.Generator, scores: np.ndarray, num_resamples: int) -> np.ndarray:
    """``[num_resamples, runs, tasks]``: runs resampled with replacement independently per task."""
    run_index = _stratified_run_index(rng, scores.shape, num_resamples)
    return scores[run_index, np.arange(scores.shape[1])]


def _pooled(statistic: AxisStatistic) -> Callable[[np.ndarray], np.ndarray]:
    """A statistic of all the scores of each ``[runs, tasks]`` matrix in a ``[B, runs, tasks]`` stack."""
    return lambda samples: statistic(samples.reshape(samples.shape[0], -1), axis=-1)


# Matrix statistics that are evaluated on all resamples at once: the same numbers as calling them on
# each resample (to the last bits of a sum), about 20x faster than one scipy call per resample.
_BATCHED: dict[Callable[..., object], Callable[[np.ndarray], np.ndarray]] = {
    iqm: _pooled(iqm),
    np.mean: _pooled(np.mean),
}


def _stratified_estimates(scores: np.ndarray, run_index: np.ndarray, statistic: MatrixStatistic) -> np.ndarray:
    """``[B]`` values of `statistic` on the resamples ``scores[run_index[b], task]``.

    ``run_index`` is ``[B, runs, tasks]``: resample b takes run ``run_index[b, i, t]`` of task t as its row i.
    """
    resamples = scores[run_index, np.arange(scores.shape[1])]
    batched = _BATCHED.get(statistic)
    if batched is not None:
        return np.asarray(batched(resamples), dtype=np.float64)
    return np.array([statistic(sample) for sample in resamples], dtype=np.float64)


def _percentile_interval(estimates: np.ndarray, confidence: float) -> tuple[float, float]:
    """The percentile bootstrap interval: the central `confidence` quantiles of the estimates (linear)."""
    low, high = np.quantile(estimates, _interval_quantiles(confidence))
    return float(low), float(high)


def _stratified_interval(
    scores: np.ndarray, statistic: MatrixStatistic, confidence: float, num_resamples: int, seed: int
) -> Interval:
    scores = _as_score_matrix(scores)
    run_index = _stratified_run_index(np.random.default_rng(seed), scores.shape, num_resamples)
    low, high = _percentile_interval(_stratified_estimates(scores, run_index, statistic), confidence)
    return Interval(float(statistic(scores)), low, high)


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
    """Aggregate score with a stratified percentile bootstrap interval, as rliable's.

    Each bootstrap sample resamples the runs with replacement independently within each task
    (the tasks are the strata), then applies `statistic` to the resampled ``[runs, tasks]``
    matrix; the interval is the central `confidence` quantiles of those values (linear
    interpolation): rliable's ``get_interval_estimates(..., method="percentile",
    task_bootstrap=False)``. Every algorithm in a dict uses the same seed. :func:`iqm` and
    ``np.mean`` are evaluated on all resamples at once, any other statistic once per resample.

    Args:
      scores: ``[runs, tasks]`` (or ``[runs]`` for one task) normalised scores, or a dict from
        algorithm name to such a matrix.
      statistic: aggregate of a whole ``[runs, tasks]`` matrix to one number; the default
        :func:`iqm` pools all scores; e.g. ``lambda m: np.median(m.mean(axis=0))`` for rliable's
        median of per-task means.
      confidence: coverage of the interval.
      num_resamples: number of bootstrap samples (rliable's ``get_interval_estimates`` defaults to
        50,000, its performance profiles to 2,000).
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


def _fraction_above(samples: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """``[..., K]`` fraction of the values in the last two axes of `samples` that are > each tau."""
    return np.stack([(samples > tau).mean(axis=(-2, -1)) for tau in taus], axis=-1)


def performance_profile(
    scores: np.ndarray,
    taus: np.ndarray,
    confidence: float = 0.95,
    num_resamples: int = 2_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run-score distribution: the fraction of runs scoring above each threshold tau.

    ``profile[k] = mean over runs (and tasks) of [score > taus[k]]`` (strictly above, as the
    paper's score distribution and rliable's ``create_performance_profile``; a run scoring
    exactly tau does not count), with a stratified bootstrap band (runs resampled within each
    task).

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
    profile = _fraction_above(scores, taus)
    resamples = _stratified_resamples(np.random.default_rng(seed), scores, num_resamples)
    low, high = np.quantile(_fraction_above(resamples, taus), _interval_quantiles(confidence), axis=0)
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


class BinnedCurve(NamedTuple):
    """A learning curve over environment steps: episodes binned, then averaged over runs.

    Every array but ``runs`` and ``counts`` is ``[B]`` (one entry per bin); NaN where no run
    completed an episode in the bin.
    """

    env_steps: np.ndarray  # [B] centre of each bin, in environment steps per run
    mean: np.ndarray  # [B] mean over runs of each run's episode-weighted mean in the bin
    low: np.ndarray  # [B] lower end of the band over runs
    high: np.ndarray  # [B] upper end of the band over runs
    smoothed: np.ndarray  # [B] `mean` after a moving average over `smooth` bins (= mean when 0 or 1)
    runs: np.ndarray  # [N, B] each run's episode-weighted mean return in each bin (NaN: none ended)
    counts: np.ndarray  # [N, B] episodes each run completed in each bin
    bin_steps: float  # width of a bin in environment steps per run (the last one may differ)


def bin_over_env_steps(
    env_steps: np.ndarray, values: np.ndarray, counts: np.ndarray | None, num_bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group consecutive updates into `num_bins` bins of (nearly) equal env steps.

    Off-policy agents with one env complete an episode only every hundreds of updates, so their
    per-update returns are NaN almost everywhere; a bin of many updates pools the episodes that
    ended in it: ``binned[n, b] = sum_u counts[n, u] values[n, u] / sum_u counts[n, u]`` over the
    updates u of bin b whose value is defined (``counts > 0`` and finite).

    Args:
      env_steps: ``[U]`` environment steps per run at the end of each update (increasing).
      values: ``[N, U]`` per-update means, e.g. ``episode_return``.
      counts: ``[N, U]`` episodes behind each mean; None weighs every finite entry 1 (losses).
      num_bins: bins B, at most U; bin b holds updates ``edges[b] <= u < edges[b + 1]`` with
        ``edges = round(linspace(0, U, B + 1))``.

    Returns:
      ``(centres[B], binned[N, B], bin_counts[N, B])``: each bin's centre in env steps (midway
      between the start of its first update and the end of its last), the per-run means (NaN
      where a run has nothing in the bin) and the episodes (or entries) behind them.
    """
    env_steps = np.asarray(env_steps, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    counts = np.ones_like(values) if counts is None else np.asarray(counts, dtype=np.float64)
    _check_same_shape("values", values, "counts", counts, ndim=2)
    num_updates = values.shape[1]
    if env_steps.shape != (num_updates,):
        raise ValueError(f"env_steps must be [U] = [{num_updates}] like values' updates, got {env_steps.shape}.")
    if not 1 <= num_bins <= max(num_updates, 1) or num_updates == 0:
        raise ValueError(f"num_bins must lie in [1, U = {num_updates}], got {num_bins}.")
    edges = np.unique(np.round(np.linspace(0, num_updates, num_bins + 1)).astype(np.int64))
    valid = (counts > 0) & np.isfinite(values)
    weights = np.where(valid, counts, 0.0)
    weighted = np.add.reduceat(weights * np.where(valid, values, 0.0), edges[:-1], axis=1)
    bin_counts = np.add.reduceat(weights, edges[:-1], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        binned = np.where(bin_counts > 0, weighted / bin_counts, np.nan)
    starts = np.concatenate([[0.0], env_steps[:-1]])
    centres = (starts[edges[:-1]] + env_steps[edges[1:] - 1]) / 2.0
    return centres, binned, bin_counts


def moving_average(y: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of ``[B]`` values over `window` entries, ignoring NaN.

    The window is truncated at both ends; an entry whose window holds no finite value is NaN.
    ``window`` 0 or 1 returns a copy of `y`.
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"y must be rank 1, got shape {y.shape}.")
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 0:
        raise ValueError(f"window must be an integer >= 0 (0 or 1: no smoothing), got {window!r}.")
    if window <= 1:
        return y.copy()
    finite = np.isfinite(y)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, y, 0.0))])
    nums = np.concatenate([[0], np.cumsum(finite)])
    index = np.arange(y.size)
    lo = np.clip(index - (window - 1) // 2, 0, y.size)
    hi = np.clip(index + window // 2 + 1, 0, y.size)
    count = nums[hi] - nums[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (sums[hi] - sums[lo]) / count, np.nan)


def default_num_bins(
    counts: np.ndarray | None, num_updates: int, max_bins: int = 100, episodes_per_bin: int = 2
) -> int:
    """Bins for :func:`learning_curve`: about `episodes_per_bin` episodes per run in each bin.

    ``median over runs of the episodes a run completed // episodes_per_bin``, clipped to
    ``[1, min(max_bins, U)]``; ``min(max_bins, U)`` when there are no counts (losses).
    """
    limit = max(1, min(max_bins, num_updates))
    if counts is None:
        return limit
    totals = np.asarray(counts, dtype=np.float64).sum(axis=1)
    return int(np.clip(np.median(totals) // episodes_per_bin, 1, limit))


def learning_curve(
    env_steps: np.ndarray,
    values: np.ndarray,
    counts: np.ndarray | None = None,
    num_bins: int | None = None,
    smooth: int = 0,
    confidence: float = 0.95,
    num_resamples: int = 1_000,
    seed: int = 0,
) -> BinnedCurve:
    """Mean learning curve over runs against environment steps, with a bootstrap band over runs.

    The updates are binned over env steps (:func:`bin_over_env_steps`), so every agent gets a
    curve with a value in (nearly) every bin, whether it completes many episodes per update (PPO
    with many envs) or one every few hundred updates (SAC or DQN with one env). The mean over
    runs and its band are :func:`curve_mean_ci` of the per-run bin means; ``smoothed`` is a
    centred :func:`moving_average` of the mean over `smooth` bins (the band stays the raw one).

    Args:
      env_steps: ``[U]`` environment steps per run at the end of each update.
      values: ``[N, U]`` per-update means, e.g. ``episode_return`` (NaN where no episode ended).
      counts: ``[N, U]`` episodes behind each value (``episodes``); None for metrics defined at
        every update (losses).
      num_bins: bins; None picks :func:`default_num_bins` (about 2 episodes per run and bin, at
        most 100 bins).
      smooth: moving-average window in bins for ``smoothed`` (0 or 1: none).
      confidence: coverage of the band.
      num_resamples: bootstrap samples of the band.
      seed: seed of the resampling.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"values must be [N, U], got shape {values.shape}.")
    if num_bins is None:
        num_bins = default_num_bins(counts, values.shape[1])
    centres, binned, bin_counts = bin_over_env_steps(env_steps, values, counts, num_bins)
    mean, low, high = curve_mean_ci(binned, bin_counts, confidence, num_resamples, seed)
    total = float(np.asarray(env_steps, dtype=np.float64)[-1])
    return BinnedCurve(centres, mean, low, high, moving_average(mean, smooth), binned, bin_counts, total / centres.size)
