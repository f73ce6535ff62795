"""Replay inside jit and vmap, n-step returns, target updates, schedules."""

import jax
import jax.numpy as jnp
import numpy as np

from rl.device import offpolicy, replay
from rl.device.rollout import Transition


def _transition(t, num_envs=2, terminated=None, truncated=None):
    """Step t of num_envs envs: obs = t, reward = t + 1, next_obs = t + 0.5."""
    z = jnp.zeros(num_envs, bool)
    return Transition(
        obs=jnp.full((num_envs, 1), float(t)),
        action=jnp.zeros(num_envs, jnp.int32),
        reward=jnp.full(num_envs, t + 1.0),
        terminated=z if terminated is None else terminated,
        truncated=z if truncated is None else truncated,
        next_obs=jnp.full((num_envs, 1), t + 0.5),
        extras=None,
    )


def _fill(buffer, steps, num_envs=2):
    state = replay.init(buffer, replay.stored(jax.tree.map(lambda x: x[0], _transition(0, num_envs))))
    for t in range(steps):
        state = replay.add(buffer, state, _transition(t, num_envs))
    return state


def test_sample_under_jit_and_vmap_of_seeds():
    buffer = replay.make_buffer(buffer_size=64, batch_size=8, learning_starts=8, num_envs=2)

    def run(key):
        state = replay.init(buffer, replay.stored(jax.tree.map(lambda x: x[0], _transition(0))))

        def body(s, t):
            tr = _transition(0)
            tr = tr._replace(obs=tr.obs + t, reward=tr.reward + t, next_obs=tr.next_obs + t)
            return replay.add(buffer, s, tr), None

        state, _ = jax.lax.scan(body, state, jnp.arange(10.0))
        return buffer.can_sample(state), replay.first(replay.sample(buffer, state, key))

    can, batch = jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(0), 3))
    assert can.shape == (3,) and bool(can.all())
    assert batch.obs.shape == (3, 8, 1)
    # each stored transition keeps obs = t, reward = t + 1, next_obs = t + 0.5
    np.testing.assert_allclose(batch.reward, batch.obs[..., 0] + 1.0)
    np.testing.assert_allclose(batch.next_obs, batch.obs + 0.5)


def test_cannot_sample_before_learning_starts():
    buffer = replay.make_buffer(buffer_size=64, batch_size=4, learning_starts=10, num_envs=2)
    assert not bool(buffer.can_sample(_fill(buffer, 4)))  # 4 steps/env < 10 // 2
    assert bool(buffer.can_sample(_fill(buffer, 5)))


def test_n_step_return_stops_at_episode_ends():
    # rewards 1, 2, 4, bootstrap values 10, 20, 40, gamma 0.5, n = 3.
    r = jnp.array([[1.0, 2.0, 4.0]] * 3)
    b = jnp.array([[10.0, 20.0, 40.0]] * 3)
    term = jnp.array([[False, False, False], [False, True, False], [False, False, False]])
    trunc = jnp.array([[False, False, False], [False, False, False], [True, False, False]])
    seq = replay.Stored(obs=None, action=None, reward=r, terminated=term, truncated=trunc, next_obs=None)
    got = replay.n_step_return(seq, b, 0.5)
    # no end:         1 + .5*2 + .25*4 + .125*40 = 8
    # terminated @1:  1 + .5*2 = 2                 (bootstrap 0)
    # truncated @0:   1 + .5*10 = 6                (bootstrap from final obs)
    np.testing.assert_allclose(got, [8.0, 2.0, 6.0])


def test_target_updates_and_schedules():
    online, target = {"w": jnp.ones(3)}, {"w": jnp.zeros(3)}
    np.testing.assert_allclose(offpolicy.polyak(online, target, 0.1)["w"], 0.1)
    np.testing.assert_allclose(offpolicy.periodic_copy(online, target, jnp.int32(10), 5)["w"], 1.0)
    np.testing.assert_allclose(offpolicy.periodic_copy(online, target, jnp.int32(11), 5)["w"], 0.0)
    eps = jax.jit(offpolicy.linear_schedule)(1.0, 0.05, 100.0, jnp.array([0, 50, 100, 200]))
    np.testing.assert_allclose(eps, [1.0, 0.525, 0.05, 0.05], rtol=1e-6)
    a = offpolicy.gaussian_noise(jax.random.key(0), jnp.full((1000, 1), 0.9), 0.5, -1.0, 1.0)
    assert float(a.max()) <= 1.0 and float(a.min()) >= -1.0 and float(a.std()) > 0.1
