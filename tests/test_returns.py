"""GAE and TD(lambda) targets against plain NumPy references."""

import chex
import jax
import numpy as np
import pytest
import rlax
from absl.testing import parameterized

from rl.device.returns import SUM_UNROLL, _discounted_sum, gae_advantages, n_step_targets


@pytest.fixture(autouse=True)
def strict_rank_promotion():
    """Implicit rank promotion is an error here, and only here (not process-wide)."""
    with jax.numpy_rank_promotion("raise"):
        yield


def numpy_gae(r, v, boot, term, trunc, gamma, lam):
    """Textbook backward recursion, one env column at a time, with explicit ifs."""
    T, B = r.shape
    adv = np.zeros((T, B))
    for b in range(B):
        next_adv = 0.0
        for t in reversed(range(T)):
            if term[t, b]:
                delta = r[t, b] - v[t, b]  # real end: bootstrap with zero
                next_adv = 0.0
            else:
                # truncated or ongoing: bootstrap from the successor's value
                delta = r[t, b] + gamma * boot[t, b] - v[t, b]
                if trunc[t, b]:
                    next_adv = 0.0  # the next row belongs to another episode
            adv[t, b] = delta + gamma * lam * next_adv
            next_adv = adv[t, b]
    return adv


def numpy_lambda_targets(r, boot, term, trunc, gamma, lam):
    T, B = r.shape
    g = np.zeros((T, B))
    for b in range(B):
        for t in reversed(range(T)):
            disc = 0.0 if term[t, b] else gamma
            last = t == T - 1 or term[t, b] or trunc[t, b]
            tail = boot[t, b] if last else (1 - lam) * boot[t, b] + lam * g[t + 1, b]
            g[t, b] = r[t, b] + disc * tail
    return g


def _episodes(seed, T=12, B=5):
    """Random data with terminations and truncations (some on the last step)."""
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(T, B)).astype(np.float32)
    v = rng.normal(size=(T, B)).astype(np.float32)
    boot = rng.normal(size=(T, B)).astype(np.float32)
    term = rng.random((T, B)) < 0.15
    trunc = (rng.random((T, B)) < 0.15) & ~term
    term[-1, 0], trunc[-1, 1] = True, True  # both kinds at the rollout's end
    term[3, 2], trunc[4, 2] = True, True  # back to back in one column
    return r, v, boot, term, trunc


@pytest.mark.parametrize("T", [1, SUM_UNROLL - 1, SUM_UNROLL, 2 * SUM_UNROLL + 5, 128])
def test_unrolled_sum_is_rlax_recursion_at_every_length(T):
    # The reverse sum runs SUM_UNROLL steps per loop iteration: a length it does not divide leaves a
    # remainder, where an off-by-one (a step dropped, or summed twice) is off by O(1), not rounding.
    rng = np.random.default_rng(T)
    x = rng.normal(size=(T, 3)).astype(np.float32)
    d = rng.uniform(0.5, 1.0, size=(T, 3)).astype(np.float32)
    ref = jax.vmap(lambda x, d: rlax.discounted_returns(x, d, 0.0), in_axes=1, out_axes=1)(x, d)
    np.testing.assert_allclose(jax.jit(_discounted_sum)(x, d), ref, rtol=1e-5, atol=1e-5)


class GaeTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((0, 0.99, 0.95, 12), (1, 0.9, 1.0, 12), (2, 0.97, 0.0, 12), (3, 0.99, 0.95, 37))
    def test_matches_numpy_reference(self, seed, gamma, lam, T):
        r, v, boot, term, trunc = _episodes(seed, T)
        adv, ret = self.variant(gae_advantages)(r, v, boot, term, trunc, gamma, lam)
        expected = numpy_gae(r, v, boot, term, trunc, gamma, lam)
        np.testing.assert_allclose(adv, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ret, expected + v, rtol=1e-5, atol=1e-5)

    def test_agrees_with_rlax_without_truncation(self):
        # With no truncation the bootstrap of step t is v_{t+1} (the next row),
        # so rlax's own GAE on values[0..T] must agree.
        rng = np.random.default_rng(3)
        T, B = 10, 3
        r = rng.normal(size=(T, B)).astype(np.float32)
        values = rng.normal(size=(T + 1, B)).astype(np.float32)
        term = rng.random((T, B)) < 0.2
        adv, _ = gae_advantages(r, values[:-1], values[1:], term, np.zeros_like(term), 0.99, 0.95)
        disc = 0.99 * (1.0 - term)
        ref = jax.vmap(
            lambda r, d, v: rlax.truncated_generalized_advantage_estimation(r, d, 0.95, v),
            in_axes=1,
            out_axes=1,
        )(r, disc, values)
        np.testing.assert_allclose(adv, ref, rtol=1e-5, atol=1e-5)

    def test_truncation_bootstraps_termination_does_not(self):
        # One step each, reward 1, value estimates 0, successor value 10:
        # truncated -> A = 1 + 0.5 * 10 = 6; terminated -> A = 1.
        ones = np.ones((1, 2), np.float32)
        adv, _ = gae_advantages(
            ones, 0 * ones, 10 * ones, np.array([[False, True]]), np.array([[True, False]]), 0.5, 0.9
        )
        np.testing.assert_allclose(adv, [[6.0, 1.0]])

    def test_rank_is_checked(self):
        with pytest.raises(AssertionError):
            x = np.zeros(4, np.float32)
            gae_advantages(x, x, x, x > 0, x > 0, 0.9, 0.9)


class LambdaTargetTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((0, 0.99, 0.9), (1, 0.9, 0.0), (2, 0.95, 1.0))
    def test_matches_numpy_reference(self, seed, gamma, lam):
        r, _, boot, term, trunc = _episodes(seed)
        got = self.variant(n_step_targets)(r, boot, term, trunc, gamma, lam)
        np.testing.assert_allclose(got, numpy_lambda_targets(r, boot, term, trunc, gamma, lam), rtol=1e-5, atol=1e-5)

    def test_one_step_target(self):
        # lambda = 0: G_t = r_t + gamma (1 - terminated) * b_t.
        # r=[1,2], b=[3,4], terminated=[0,1]: G = [1 + .5*3, 2] = [2.5, 2].
        got = n_step_targets(
            np.array([[1.0], [2.0]]),
            np.array([[3.0], [4.0]]),
            np.array([[False], [True]]),
            np.array([[False], [False]]),
            0.5,
            0.0,
        )
        np.testing.assert_allclose(got, [[2.5], [2.0]])
