"""rl.device.onpolicy's minibatch shuffle: a permutation, uniform, with the rounds it states."""

import collections

import jax
import numpy as np
import pytest

from rl.device import onpolicy


@pytest.mark.parametrize("n", [1, 2, 3, 255, 256, 257, 512, 4096, 4097, 70_000])
def test_permutation_is_a_permutation(n):
    perm = np.asarray(onpolicy.permutation(jax.random.key(n), n))
    assert perm.dtype == np.int32
    np.testing.assert_array_equal(np.sort(perm), np.arange(n))


def test_permutation_is_uniform_over_the_24_orders_of_4():
    # 48,000 draws: 2,000 expected per order, sd 44. A shuffle that ignored a round's random
    # bits, or a key, would pile draws onto a few orders; 5 sd on each side excludes that.
    perms = jax.vmap(lambda k: onpolicy.permutation(k, 4))(jax.random.split(jax.random.key(0), 48_000))
    counts = collections.Counter(map(tuple, np.asarray(perms).tolist()))
    assert len(counts) == 24
    assert 2000 - 220 < min(counts.values()) and max(counts.values()) < 2000 + 220


def test_permutation_of_512_moves_each_element_uniformly():
    # two rounds of 23 random bits: where element 0 lands, over 512 slots and 8,192 draws, is
    # uniform. The chi-square statistic has mean 511 and sd 32; a shuffle whose later round
    # undid the first (or sorted by index) would be far above 511 + 5 sd.
    perms = np.asarray(jax.vmap(lambda k: onpolicy.permutation(k, 512))(jax.random.split(jax.random.key(1), 8192)))
    where = np.argmax(perms == 0, axis=1)
    counts = np.bincount(where, minlength=512)
    expected = 8192 / 512
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 511 + 5 * 32


@pytest.mark.parametrize("n, rounds", [(256, 1), (257, 2), (4096, 2), (4097, 3), (65_536, 3), (65_537, 4)])
def test_permutation_sorts_the_rounds_its_docstring_states(n, rounds):
    jaxpr = jax.make_jaxpr(lambda k: onpolicy.permutation(k, n))(jax.random.key(0))
    sorts = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "sort"]
    assert len(sorts) == rounds
    assert all(len(e.invars) == 1 for e in sorts)  # one packed operand: the fast sort
