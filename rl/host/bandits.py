"""Reference policies for Bernoulli bandits in NumPy, and their cumulative regret.

The yardsticks of RL² on bandits (Duan et al., 2016, Table 1): a meta-learned agent is compared
with Thompson sampling, UCB1 and a uniformly random policy on the same tasks. A task is one row of
arm probabilities ``p[k]``; a policy pulls ``horizon`` times and its (pseudo-)regret is

    R_T = sum_{t < T} (max_k p[k] - p[a_t]),

the expected reward lost to the best arm, summed over the pulls (the sampled rewards only drive
the policy's learning; using expected rewards in the sum removes their noise from the score).

* ``thompson``: Thompson sampling (Thompson, 1933) with Beta(1, 1) priors: draw
  ``theta_k ~ Beta(1 + successes_k, 1 + failures_k)``, pull ``argmax_k theta_k``.
* ``ucb1``: UCB1 (Auer et al., 2002): pull each arm once, then
  ``argmax_k mean_k + sqrt(2 ln t / n_k)`` (t pulls so far).
* ``uniform``: an arm uniformly at random every pull.
* ``oracle``: always the best arm (regret 0; a check of the bookkeeping).

Every policy runs on all tasks at once (vectorised over the rows) and is deterministic given
``seed``. Ties in an argmax go to the lowest arm index.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["POLICIES", "cumulative_regret", "oracle", "regret", "thompson", "ucb1", "uniform"]

# policy(probs[N, K], horizon, rng) -> actions int[N, horizon]
BanditPolicy = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


def _check_probs(probs: np.ndarray) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"probs must be [tasks, arms] with at least 2 arms, got shape {probs.shape}")
    if not np.all((probs >= 0) & (probs <= 1)):
        raise ValueError("arm probabilities must lie in [0, 1]")
    return probs


def _play(probs: np.ndarray, horizon: int, rng: np.random.Generator, choose: Callable) -> np.ndarray:
    """Run ``choose(t, successes[N, K], pulls[N, K]) -> arms[N]`` for ``horizon`` pulls."""
    n, k = probs.shape
    successes = np.zeros((n, k))
    pulls = np.zeros((n, k))
    actions = np.zeros((n, horizon), dtype=np.int64)
    rows = np.arange(n)
    for t in range(horizon):
        arm = choose(t, successes, pulls)
        reward = rng.random(n) < probs[rows, arm]
        successes[rows, arm] += reward
        pulls[rows, arm] += 1
        actions[:, t] = arm
    return actions


def thompson(probs: np.ndarray, horizon: int, rng: np.random.Generator) -> np.ndarray:
    """Thompson sampling with Beta(1, 1) priors: actions int[N, horizon]."""
    probs = _check_probs(probs)
    return _play(probs, horizon, rng, lambda t, s, n: np.argmax(rng.beta(1.0 + s, 1.0 + n - s), axis=1))


def ucb1(probs: np.ndarray, horizon: int, rng: np.random.Generator) -> np.ndarray:
    """UCB1: each arm once (lowest index first), then the highest upper confidence bound."""
    probs = _check_probs(probs)

    def choose(t, s, n):
        bound = s / np.maximum(n, 1) + np.sqrt(2.0 * np.log(max(t, 1)) / np.maximum(n, 1))
        return np.argmax(np.where(n == 0, np.inf, bound), axis=1)

    return _play(probs, horizon, rng, choose)


def uniform(probs: np.ndarray, horizon: int, rng: np.random.Generator) -> np.ndarray:
    """An arm uniformly at random each pull."""
    probs = _check_probs(probs)
    return rng.integers(0, probs.shape[1], size=(probs.shape[0], horizon))


def oracle(probs: np.ndarray, horizon: int, rng: np.random.Generator) -> np.ndarray:
    """The best arm every pull."""
    probs = _check_probs(probs)
    return np.repeat(np.argmax(probs, axis=1)[:, None], horizon, axis=1)


POLICIES: dict[str, BanditPolicy] = {"thompson": thompson, "ucb1": ucb1, "uniform": uniform, "oracle": oracle}


def cumulative_regret(probs: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """``R_t`` after each pull: float[N, T], ``R_t = sum_{s <= t} (max_k p[k] - p[a_s])``."""
    probs = _check_probs(probs)
    actions = np.asarray(actions)
    if actions.ndim != 2 or actions.shape[0] != probs.shape[0]:
        raise ValueError(f"actions must be [tasks, pulls] = [{probs.shape[0]}, T], got shape {actions.shape}")
    gap = probs.max(axis=1, keepdims=True) - np.take_along_axis(probs, actions, axis=1)
    return np.cumsum(gap, axis=1)


def regret(policy: str | BanditPolicy, probs: np.ndarray, horizon: int, seed: int = 0) -> np.ndarray:
    """Total regret ``R_T`` of ``policy`` (a name in ``POLICIES`` or a function) per task: float[N]."""
    if isinstance(policy, str):
        if policy not in POLICIES:
            raise ValueError(f"unknown bandit policy {policy!r}; known: {', '.join(POLICIES)}")
        policy = POLICIES[policy]
    actions = policy(probs, horizon, np.random.default_rng(seed))
    return cumulative_regret(probs, actions)[:, -1]
