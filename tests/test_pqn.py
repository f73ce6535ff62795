"""PQN: Q(lambda) targets and loss against NumPy; probes; CartPole."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax
from absl.testing import parameterized

import envs
import rl
from agents import networks, pqn
from rl.errors import ConfigError
from rl.host import stats

# haiku's Orthogonal initializer needs rank promotion (tests/conftest.py); the leaf functions are
# checked under "raise" below.
pytestmark = pytest.mark.usefixtures("haiku_init_allows_rank_promotion")


def numpy_q_lambda(r, q_next, term, trunc, gamma, lam):
    """Backward recursion with explicit ifs, one env column at a time.

    G_t = r_t                                   if terminated at t
        = r_t + gamma max_a Q(s'_t, a)          if truncated at t or t = T - 1
        = r_t + gamma [(1 - lam) max_a Q(s'_t, a) + lam G_{t+1}]   otherwise
    """
    T, B = r.shape
    g = np.zeros((T, B))
    for b in range(B):
        for t in reversed(range(T)):
            best = q_next[t, b].max()
            if term[t, b]:
                g[t, b] = r[t, b]
            elif trunc[t, b] or t == T - 1:
                g[t, b] = r[t, b] + gamma * best
            else:
                g[t, b] = r[t, b] + gamma * ((1 - lam) * best + lam * g[t + 1, b])
    return g


def _rollout(seed, T=10, B=4, A=3):
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(T, B)).astype(np.float32)
    q_next = rng.normal(size=(T, B, A)).astype(np.float32)
    term = rng.random((T, B)) < 0.15
    trunc = (rng.random((T, B)) < 0.15) & ~term
    term[-1, 0], trunc[-1, 1], term[2, 2], trunc[3, 2] = True, True, True, True
    return r, q_next, term, trunc


class TargetTest(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.enter_context(jax.numpy_rank_promotion("raise"))

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((0, 0.99, 0.95), (1, 0.9, 0.0), (2, 0.5, 1.0))
    def test_q_lambda_matches_numpy(self, seed, gamma, lam):
        r, q_next, term, trunc = _rollout(seed)
        got = self.variant(pqn.q_lambda_targets)(r, q_next, term, trunc, gamma, lam)
        np.testing.assert_allclose(got, numpy_q_lambda(r, q_next, term, trunc, gamma, lam), rtol=1e-5, atol=1e-5)

    def test_lambda_zero_is_one_step_q_learning(self):
        # lambda = 0: G_t = r_t + gamma (1 - terminated_t) max_a Q(s'_t, a), which is
        # rlax.q_learning's target (its TD error against Q(s, a) = 0).
        r, q_next, term, trunc = _rollout(3)
        got = pqn.q_lambda_targets(r, q_next, term, trunc, 0.9, 0.0)
        discount = 0.9 * (1.0 - term.astype(np.float32))
        zeros = np.zeros_like(q_next)
        rlax_target = jax.vmap(jax.vmap(rlax.q_learning))(zeros, np.zeros(r.shape, np.int32), r, discount, q_next)
        np.testing.assert_allclose(got, rlax_target, rtol=1e-5, atol=1e-6)

    def test_truncation_bootstraps_termination_does_not(self):
        # one step each, r = 1, max Q(s') = 10, gamma 0.5: truncated 1 + 5 = 6, terminated 1
        q_next = np.array([[[10.0, 0.0], [10.0, 0.0]]], np.float32)
        got = pqn.q_lambda_targets(
            np.ones((1, 2), np.float32), q_next, np.array([[False, True]]), np.array([[True, False]]), 0.5, 0.9
        )
        np.testing.assert_allclose(got, [[6.0, 1.0]])


def _make(env_id="Probe-OneStep-v0", **overrides):
    env, params = envs.make(env_id)
    base = dict(
        num_envs=16,
        num_steps=8,
        num_minibatches=4,
        update_epochs=4,
        total_timesteps=16_384,
        hidden_sizes=(32,),
        anneal_lr=False,
    )
    config = pqn.Config(**{**base, **overrides})
    return config, pqn.make(config, env, params), env, params


def _network(config, env, params):
    return networks.q_network(env.action_space(params).n, config.hidden_sizes, config.activation, config.layer_norm)


def test_loss_matches_numpy():
    config, _, env, params = _make("Probe-ActionReward-v0")
    net = _network(config, env, params)
    rng = np.random.default_rng(0)
    batch = pqn.Batch(
        obs=rng.normal(size=(8, 2)).astype(np.float32),
        action=rng.integers(0, 2, 8).astype(np.int32),
        target=rng.normal(size=8).astype(np.float32),
    )
    online = net.init(jax.random.key(0), batch.obs)
    with jax.numpy_rank_promotion("raise"):
        got, aux = jax.jit(lambda p, b: pqn.loss(pqn.Static(config, None, None, net), p, b, pqn.Hyper()))(online, batch)
    q = np.asarray(net.apply(online, batch.obs))[np.arange(8), batch.action]
    # L = mean 0.5 (G - Q(s, a))^2
    np.testing.assert_allclose(got, np.mean(0.5 * (batch.target - q) ** 2), rtol=1e-5)
    np.testing.assert_allclose(aux["q_mean"], q.mean(), rtol=1e-5)


def _train_probe(env_id, hyper, seeds, **overrides):
    config, algo, env, params = _make(env_id, **overrides)
    result = rl.train(algo, hyper, seeds=seeds)
    net = _network(config, env, params)
    return result, lambda obs: np.asarray(jax.vmap(net.apply, (0, None))(result.params, jnp.asarray(obs)))


PROBE_HYPER = dict(learning_rate=1e-2, eps_start=1.0, eps_end=0.1, exploration_fraction=0.3)


def test_probe_action_reward_q_values(seeds):
    # one step, r = +1 if a == bit else -1: Q(onehot(bit)) = +1 for a = bit, -1 otherwise.
    # The greedy action must be the bit; wrong answer for the values: 0, what a critic blind to
    # the observation fits (the bit is a fair coin: each action's mean reward is 0). Margin: half
    # the gap, 0.5.
    result, q = _train_probe("Probe-ActionReward-v0", pqn.Hyper(**PROBE_HYPER), seeds(0, 1))
    for values in q(np.eye(2, dtype=np.float32)):
        np.testing.assert_array_equal(values.argmax(-1), [0, 1])
        np.testing.assert_allclose(values, [[1.0, -1.0], [-1.0, 1.0]], atol=0.5)
    # two seeds: different initial parameters and exploration, hence different final ones
    for leaf in jax.tree.leaves(result.params):
        assert not np.allclose(leaf[0], leaf[1])


def test_config_errors_name_the_field():
    box, box_params = envs.make("Pendulum-v1")
    with pytest.raises(ConfigError, match="discrete"):
        pqn.make(pqn.Config(), box, box_params)
    with pytest.raises(ConfigError, match="num_minibatches"):
        _make(num_minibatches=3)
    with pytest.raises(ConfigError, match="q_lambda"):
        pqn.Hyper(q_lambda=1.5).validate()


# Settings for the learning test: purejaxql's CartPole network, batch and epochs, with the
# budget cut to 200k steps (the learning rate, annealed to 0 over it, raised to 3e-4) and
# epsilon ending at 0.05 instead of 0.2, since the test scores the exploring policy.
CARTPOLE = dict(
    num_envs=32,
    num_steps=64,
    num_minibatches=16,
    update_epochs=4,
    total_timesteps=200_000,
    hidden_sizes=(256, 256),
    layer_norm=True,
    anneal_lr=True,
)
CARTPOLE_HYPER = dict(learning_rate=3e-4, eps_end=0.05, exploration_fraction=0.2, reward_scale=0.1)


# Why 2 of 3 and not every seed: seeds 1000-1002 end at 500, 500 and 246; seed 1002 is at 500
# from 25% to 80% of the budget, then falls back to about 225 (Q-learning without replay that sees
# only balanced states). Seeds 0-2 and 2000-2002 end at 500. A learner that does not learn stays
# near 24 (the first 5% of updates), so it fails on every seed.
@pytest.mark.slow
def test_cartpole_reaches_475_on_2_of_3_seeds(seeds):
    env, params = envs.make("CartPole-v1")
    algo = pqn.make(pqn.Config(**CARTPOLE), env, params)
    result = rl.train(algo, pqn.Hyper(**CARTPOLE_HYPER), seeds=seeds(0, 1, 2))
    # as experiments.train reports it: mean return of the episodes of the last 5% of updates
    final = stats.final_return(result.metrics["episode_return"], result.metrics["episodes"], 0.05)
    assert np.sum(final >= 475) >= 2, final
