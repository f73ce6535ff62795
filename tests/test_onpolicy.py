"""rl.device.onpolicy's minibatch shuffle: a permutation, uniform, with the rounds it states."""

import collections

import jax
import jax.numpy as jnp
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


# ---------------------------------------------------------------- successor values (bootstrap)


def test_truncation_bound_of_gymnax_time_limits_and_unknown_elsewhere():
    import gymnax

    import envs

    env, params = gymnax.make("CartPole-v1")  # max_steps_in_episode 500
    assert onpolicy.truncation_bound(env, params, 128) == 1
    assert onpolicy.truncation_bound(env, params, 500) == 1
    assert onpolicy.truncation_bound(env, params, 501) == 2
    assert onpolicy.truncation_bound(env, params.replace(max_steps_in_episode=10), 25) == 3

    class OwnLimit(type(env)):  # truncates on a rule of its own: no bound can be read off
        def is_truncated(self, state, params):
            return state.time >= 3

    assert onpolicy.truncation_bound(OwnLimit(), params, 128) is None
    assert onpolicy.truncation_bound(envs.vectorize(env, 4), params, 128) is None  # a wrapper
    assert onpolicy.truncation_bound(object(), params, 128) is None


@pytest.mark.parametrize("max_steps", [10, 32, 500])
def test_successor_values_equal_valuing_every_successor(max_steps):
    # A random policy on CartPole with a time limit of `max_steps`, the rollout starting 5 steps
    # into the episodes: at 10, an env is truncated up to 4 times in 40 steps (the bound), all
    # before the last step; at 32 about once; at 500 never. Valuing only the last step and the
    # truncated final observations must give the values of all T x B successors wherever the
    # targets read them (everywhere but terminated steps). The wrong answers: the next step's
    # value where an episode was truncated (a reset observation's), or an env's 4th truncation
    # left out.
    import gymnax

    import envs
    from rl.device.rollout import rollout

    env, params = gymnax.make("CartPole-v1")
    params = params.replace(max_steps_in_episode=max_steps)
    num_steps, num_envs = 40, 8
    venv = envs.vectorize(env, num_envs)
    w = jax.random.normal(jax.random.key(1), (4,))
    value_of = lambda obs: jnp.tanh(obs @ w) + obs[..., 0]  # noqa: E731

    def policy(obs, key):
        return jax.random.randint(key, (num_envs,), 0, 2), value_of(obs)

    obs, state = venv.reset(jax.random.key(0), params)
    _, state, obs, _ = rollout(venv, params, policy, state, obs, jax.random.key(3), 5)
    transitions, *_ = rollout(venv, params, policy, state, obs, jax.random.key(2), num_steps)
    bound = onpolicy.truncation_bound(env, params, num_steps)
    assert bound == -(-num_steps // max_steps)
    got = onpolicy.successor_values(value_of, transitions.extras, transitions, bound)
    every = onpolicy.successor_values(value_of, transitions.extras, transitions, None)
    read = ~np.asarray(transitions.terminated)
    np.testing.assert_allclose(np.asarray(got)[read], np.asarray(every)[read], rtol=1e-6, atol=1e-6)
    truncated = np.asarray(transitions.truncated)
    if max_steps == 10:
        assert truncated[:-1].sum(axis=0).max() == bound  # every slot of the bound is used
    if max_steps < num_steps:
        # where truncated, the next row's value (a reset observation) is not the bootstrap
        shifted = np.asarray(transitions.extras)[1:]
        cut = truncated[:-1]
        assert cut.any() and not np.allclose(shifted[cut], np.asarray(every)[:-1][cut])


def test_packed_rows_give_back_every_leaf_bit_for_bit():
    from rl.device.rollout import PackedRows

    B, T = 3, 5
    rng = np.random.default_rng(0)
    special = np.array([np.nan, -0.0, 1e-45, np.inf, -np.inf, 3.5], np.float32)  # NaN, signed zero, denormal
    steps = [
        {
            "obs": jnp.asarray(rng.choice(special, (B, 2, 2))),
            "action": jnp.asarray(rng.integers(-(2**31), 2**31 - 1, B), jnp.int32),
            "flag": jnp.asarray(rng.random(B) < 0.5),
            "bits": jnp.asarray(rng.integers(0, 2**32 - 1, (B, 1)), jnp.uint32),
            "half": jnp.asarray(rng.normal(size=B), jnp.float16),  # not packed: another dtype
            "other_axis": jnp.asarray(rng.normal(size=(B + 1,)), jnp.float32),  # not packed: not [B, ...]
            "scalar": jnp.float32(t),  # not packed: no axis
        }
        for t in range(T)
    ]
    rows = PackedRows(B)
    packed = [rows.pack(step) for step in steps]
    assert packed[0][0].shape == (B, 4 + 1 + 1 + 1) and packed[0][0].dtype == jnp.uint32
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *packed)
    got = rows.unpack(stacked)
    want = jax.tree.map(lambda *xs: jnp.stack(xs), *steps)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape, name
        as_bits = lambda x: np.asarray(x).view(np.uint8)  # noqa: E731  (NaN == NaN, -0.0 != 0.0)
        np.testing.assert_array_equal(as_bits(got[name]), as_bits(want[name]), err_msg=name)


def test_rollout_is_the_steps_one_by_one():
    """The scan (per-env episode sums; the rows packed off the CPU) against stepping in a Python loop."""
    import gymnax

    import envs
    from rl.device.rollout import EpisodeStats, env_step, rollout

    env, params = gymnax.make("CartPole-v1")
    params = params.replace(max_steps_in_episode=16)  # truncations and terminations within 60 steps
    venv = envs.vectorize(env, 4)
    obs, state = venv.reset(jax.random.key(0), params)

    def policy(obs, key):
        return jax.random.randint(key, (4,), 0, 2), {"value": obs.sum(-1), "half": obs[:, 0].astype(jnp.float16)}

    transitions, end_state, end_obs, stats = jax.jit(rollout, static_argnums=(0, 2, 6))(
        venv, params, policy, state, obs, jax.random.key(1), 60
    )
    total, want = EpisodeStats.zero(), []
    for step_key in jax.random.split(jax.random.key(1), 60):
        act_key, env_key = jax.random.split(step_key)
        action, extras = policy(obs, act_key)
        transition, state, obs, step_stats = env_step(venv, params, state, obs, action, env_key, extras)
        total, want = total + step_stats.total(), want + [transition]
    want = jax.tree.map(lambda *xs: jnp.stack(xs), *want)
    assert int(total.count) > 4 and bool(jnp.any(want.truncated)) and bool(jnp.any(want.terminated))
    jax.tree.map(np.testing.assert_array_equal, transitions, want)
    jax.tree.map(np.testing.assert_array_equal, (end_state, end_obs), (state, obs))
    np.testing.assert_allclose(np.asarray(stats), np.asarray(total), rtol=1e-6)
