"""SAC: losses and targets against NumPy, probe environments with analytic answers,
bad input, seeds, and learning on Pendulum-v1."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import envs
import rl
from agents import sac
from rl.device import offpolicy
from rl.errors import ConfigError
from rl.host import stats

# haiku's Orthogonal initializer needs rank promotion (tests/conftest.py); leaf functions and
# `update` are checked under "raise" below.
pytestmark = pytest.mark.usefixtures("haiku_init_allows_rank_promotion")


class Strict(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.enter_context(jax.numpy_rank_promotion("raise"))


# A small continuous-control setting for the probes: 4 envs, tiny networks.
PROBE = sac.Config(num_envs=4, total_timesteps=4 * 1_000, learning_starts=256, batch_size=64, hidden_sizes=(32, 32))


def _train(env_id, seeds, config=PROBE, hyper=sac.Hyper(), env=None):
    """Train on `seeds` with the runner; returns (static, per-seed params list, result)."""
    env, env_params = envs.make(env_id) if env is None else (env, env.default_params)
    result = rl.train(sac.make(config, env, env_params), hyper, seeds=list(seeds))
    params = [jax.tree.map(lambda x, i=i: x[i], result.params) for i in range(len(seeds))]
    return sac.build(config, env, env_params), params, result


# ---------------------------------------------------------------- leaf functions vs NumPy


def numpy_squashed_log_prob(mean, log_std, noise, low, high, h=1e-6):
    """log pi(a) by the change of variables, with the Jacobian taken by finite differences.

    u = mean + std * noise has log density sum_i log N(u_i; mean_i, std_i); the map
    u -> a = c + s tanh(u) acts per coordinate, so log pi(a) = log N(u) - sum_i log|da_i/du_i|,
    here with da/du = (f(u + h) - f(u - h)) / 2h in float64.
    """
    mean, log_std, noise = (np.asarray(x, np.float64) for x in (mean, log_std, noise))
    std = np.exp(log_std)
    u = mean + std * noise
    c, s = (high + low) / 2.0, (high - low) / 2.0
    f = lambda x: c + s * np.tanh(x)
    log_normal = -0.5 * ((u - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
    jacobian = (f(u + h) - f(u - h)) / (2 * h)
    return f(u), np.sum(log_normal - np.log(jacobian), axis=-1)


class SquashedGaussianTest(Strict):
    @chex.variants(with_jit=True, without_jit=True)
    def test_log_prob_matches_change_of_variables(self):
        rng = np.random.default_rng(0)
        mean = rng.normal(size=(16, 3)).astype(np.float32)
        log_std = rng.uniform(-2.0, 0.5, size=(16, 3)).astype(np.float32)
        noise = rng.normal(size=(16, 3)).astype(np.float32)
        low = np.array([-2.0, 0.0, -1.0], np.float32)
        high = np.array([2.0, 1.0, 3.0], np.float32)
        action, log_prob = self.variant(sac.squashed_gaussian)(mean, log_std, noise, low, high)
        ref_action, ref_log_prob = numpy_squashed_log_prob(mean, log_std, noise, low, high)
        np.testing.assert_allclose(action, ref_action, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(log_prob, ref_log_prob, rtol=1e-3, atol=1e-3)
        assert np.all(np.asarray(action) >= low) and np.all(np.asarray(action) <= high)

    def test_density_integrates_to_one_over_the_bounds(self):
        # Pendulum's Box [-2, 2]: evaluate pi(a) on a grid by inverting a = 2 tanh(u),
        # noise = (u - mean) / std, and integrate. Leaving out the log(scale) or the tanh
        # term of the Jacobian would give 2 or a wrong value instead of 1.
        mean, log_std = 0.3, -0.5
        a = np.linspace(-2.0, 2.0, 200_001)[1:-1]
        u = np.arctanh(a / 2.0)
        noise = (u - mean) / np.exp(log_std)
        col = lambda x: jnp.asarray(np.broadcast_to(x, a.shape)[:, None], jnp.float32)
        _, log_prob = sac.squashed_gaussian(col(mean), col(log_std), col(noise), jnp.array([-2.0]), jnp.array([2.0]))
        density = np.exp(np.asarray(log_prob, np.float64))
        np.testing.assert_allclose(np.trapezoid(density, a), 1.0, atol=2e-3)


class TargetsAndLossesTest(Strict):
    @chex.variants(with_jit=True, without_jit=True)
    def test_soft_td_target_takes_the_min_of_the_twins(self):
        r = jnp.array([1.0, 2.0, -1.0])
        terminated = np.array([False, True, False])
        discount = 0.9 * (1.0 - terminated)  # truncation keeps the bootstrap; only termination zeroes it
        q = jnp.array([[5.0, 7.0, -2.0], [6.0, 3.0, -4.0]])
        log_pi = jnp.array([-1.0, 0.5, 2.0])
        y = self.variant(sac.soft_td_target)(r, jnp.asarray(discount), q, log_pi, 0.2)
        # y0 = 1 + .9 (min(5, 6) - .2 * -1)  = 1 + .9 * 5.2 = 5.68
        # y1 = 2 + 0                          = 2            (terminated)
        # y2 = -1 + .9 (min(-2, -4) - .2 * 2) = -1 + .9 * -4.4 = -4.96
        np.testing.assert_allclose(y, [5.68, 2.0, -4.96], rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_discrete_soft_value_is_the_exact_expectation(self):
        rng = np.random.default_rng(1)
        q = rng.normal(size=(2, 5, 3)).astype(np.float32)
        logits = rng.normal(size=(5, 3)).astype(np.float32)
        p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        v = self.variant(sac.discrete_soft_value)(q, p, np.log(p), 0.3)
        # sum over actions of pi(a) (min(Q1, Q2)(a) - alpha log pi(a)), per state
        expected = [
            sum(p[b, a] * (min(q[0, b, a], q[1, b, a]) - 0.3 * np.log(p[b, a])) for a in range(3)) for b in range(5)
        ]
        np.testing.assert_allclose(v, expected, rtol=1e-5)

    def test_critic_and_actor_losses(self):
        q = jnp.array([[1.0, 3.0], [2.0, 0.0]])
        y = jnp.array([0.0, 1.0])
        # critic: 1/2 mean((1, 2)^2) + 1/2 mean((2, -1)^2) = 1/2 * 2.5 + 1/2 * 2.5 = 2.5
        np.testing.assert_allclose(offpolicy.critic_loss(q, y), 2.5)
        # actor: mean(alpha log pi - min(Q1, Q2)) = mean(.5 * -1 - 1, .5 * 2 - 0) = mean(-1.5, 1) = -.25
        np.testing.assert_allclose(sac.actor_loss(q, jnp.array([-1.0, 2.0]), 0.5), -0.25)
        # discrete: mean_b sum_a p (alpha log p - min Q) with one state, p = (.5, .5):
        # .5 (.1 log .5 - 1) + .5 (.1 log .5 - 0) = .1 log .5 - .5
        p = jnp.array([[0.5, 0.5]])
        got = sac.discrete_actor_loss(q[:, None, :], p, jnp.log(p), 0.1)  # Q1 = (1, 3), Q2 = (2, 0)
        np.testing.assert_allclose(got, 0.1 * np.log(0.5) - 0.5, rtol=1e-6)

    @parameterized.parameters((-3.0, -1), (3.0, +1))
    def test_entropy_tuning_moves_alpha_towards_the_target(self, log_pi, direction):
        # Target entropy -1 (one action dimension); the entropy estimate is -log pi.
        # log pi = -3: entropy 3 > -1, too random, alpha must fall (direction -1);
        # log pi = +3: entropy -3 < -1, too greedy, alpha must rise (direction +1).
        # d/d log_alpha of -alpha (log pi + target) = -alpha (log pi - 1) with alpha = .5.
        log_alpha = jnp.float32(np.log(0.5))
        grad = jax.grad(sac.alpha_loss)(log_alpha, jnp.full((4,), log_pi), -1.0)
        np.testing.assert_allclose(grad, -0.5 * (log_pi - 1.0), rtol=1e-6)
        assert np.sign(-grad) == direction  # a gradient-descent step moves log alpha this way
        # discrete form: H(pi) = log 2 for a uniform 2-action policy; target .1 < log 2 -> alpha falls
        p = jnp.array([[0.5, 0.5]])
        grad = jax.grad(sac.discrete_alpha_loss)(log_alpha, p, jnp.log(p), 0.1)
        np.testing.assert_allclose(grad, 0.5 * (np.log(2) - 0.1), rtol=1e-6)  # > 0: descent lowers alpha


class ColoredNoiseTest(Strict):
    @parameterized.parameters(0.0, 1.0, 2.0)
    def test_powerlaw_noise_has_unit_variance_and_the_spectral_slope(self, exponent):
        x = np.asarray(sac.powerlaw_noise(jax.random.key(0), exponent, 256, (2048,)), np.float64)
        assert x.shape == (2048, 256)
        # unit variance within a sequence (the f = 0 term, a per-sequence offset, is not counted)
        np.testing.assert_allclose(x.var(axis=-1).mean(), 1.0, rtol=0.1)
        # mean periodogram |X(f)|^2 against f on log-log axes: slope -exponent
        f = np.fft.rfftfreq(256)[1:-1]
        power = np.mean(np.abs(np.fft.rfft(x, axis=-1)[:, 1:-1]) ** 2, axis=0)
        slope = np.polyfit(np.log(f), np.log(power), 1)[0]
        np.testing.assert_allclose(slope, -exponent, atol=0.1)

    def test_sequences_restart_at_episode_ends_and_when_used_up(self):
        env, env_params = envs.make("Pendulum-v1")
        static = sac.build(dataclasses.replace(PROBE, noise_exponent=1.0, noise_horizon=4), env, env_params)
        noise = sac._fresh_noise(static, jax.random.key(0), 3)
        assert noise.sequences.shape == (3, 4, 1)
        noise = noise._replace(t=jnp.array([0, 1, 3], jnp.int32))
        # env 0 goes on, env 1 ended its episode, env 2 used its last (4th) step
        moved = sac.advance_noise(static, noise, jnp.array([False, True, False]), jax.random.key(1))
        np.testing.assert_array_equal(moved.t, [1, 0, 0])
        np.testing.assert_array_equal(moved.sequences[0], noise.sequences[0])  # same sequence
        assert not np.allclose(moved.sequences[1], noise.sequences[1])  # fresh ones
        assert not np.allclose(moved.sequences[2], noise.sequences[2])


@pytest.mark.parametrize("env_id, noise_exponent", [("Pendulum-v1", 0.0), ("Pendulum-v1", 1.0), ("CartPole-v1", 0.0)])
def test_update_traces_under_strict_rank_promotion(env_id, noise_exponent):
    env, env_params = envs.make(env_id)
    algo = sac.make(dataclasses.replace(PROBE, noise_exponent=noise_exponent), env, env_params)
    state = jax.eval_shape(algo.init, jax.random.key(0), sac.Hyper())  # haiku init: "allow"
    with jax.numpy_rank_promotion("raise"):
        jax.eval_shape(algo.update, state, sac.Hyper())


# ---------------------------------------------------------------- probes


def test_probe_continuous_action_mean_tracks_the_observation(seeds, assert_tracks_the_observation):
    # r = -(a - obs)^2, one step, terminated: Q(s, a) = -(a - obs)^2 (no bootstrap) and the
    # policy's mean action (tanh of the Gaussian mean) must follow obs; the tolerances and the
    # wrong answers they exclude are in tests/conftest.py (_assert_tracks_the_observation).
    # a low initial temperature: the soft-optimal policy exp(Q / alpha) has std sqrt(alpha / 2)
    hyper = sac.Hyper(actor_lr=3e-3, critic_lr=3e-3, alpha=0.05)
    static, params, _ = _train("Probe-ContinuousAction-v0", seeds(0, 1), hyper=hyper)
    for p in params:
        assert_tracks_the_observation(
            lambda obs, action, p=p: static.critic.apply(p.critic, obs, action),
            lambda obs, p=p: sac.act(static, p, obs, jax.random.key(0), deterministic=True),
        )
    # two seeds share no parameters
    for a, b in zip(jax.tree.leaves(params[0]), jax.tree.leaves(params[1])):
        assert not np.allclose(a, b)


def test_probe_one_step_value_is_one(seeds):
    # Discrete(1) actions: discrete SAC with one action (log pi = 0), r = +1 then terminated:
    # Q = 1. Wrong answers: 0 (nothing fitted) and, with gamma 0.5, 1 / (1 - 0.5) = 2
    # (bootstrapping through the termination). Margin: half the gap of 1.
    static, params, _ = _train("Probe-OneStep-v0", seeds(0, 1), hyper=sac.Hyper(critic_lr=3e-3, gamma=0.5))
    for p in params:
        np.testing.assert_allclose(static.critic.apply(p.critic, jnp.zeros((1, 1))), 1.0, atol=0.5)


def test_probe_truncation_bootstraps_from_the_final_observation(seeds):
    # r = +1 forever, cut by a time limit every 5 steps. With one action log pi = 0 (no entropy
    # term), so Q = 1 / (1 - gamma) = 10 only if truncation bootstraps from next_obs. Wrong
    # answer: treating it as termination gives at most 1 + .9 + ... + .9^4 = 4.1 (the obs is
    # always [0]: the fixed point 1 + .9 * 4/5 * Q gives 3.6). Margin: half the gap of 5.9, 2.9.
    config = dataclasses.replace(PROBE, total_timesteps=4 * 2_000)
    static, params, _ = _train(
        "Probe-Truncation-v0", seeds(0, 1), config, sac.Hyper(critic_lr=3e-2, gamma=0.9, tau=0.1)
    )
    for p in params:
        np.testing.assert_allclose(static.critic.apply(p.critic, jnp.zeros((1, 1))), 10.0, atol=2.9)


def test_probe_action_reward_discrete_policy_picks_the_bit(seeds):
    # obs one-hot(bit), r = +1 for action == bit else -1, one step: Q(s, bit) = 1, Q(s, other) = -1.
    # With a low entropy target (0.1 nats of log 2 = 0.69) the policy must put most mass on the
    # bit: right answer pi(bit) = 0.98 (the entropy of (0.98, 0.02) is 0.1 nats; seeds 0, 1, 1000,
    # 1001, 2000, 2001 reach 0.96), wrong answer 0.5 (a policy blind to the observation); the bound
    # 0.74 is halfway. Wrong answer for Q: 0, what a critic blind to the observation fits (the bit
    # is a fair coin: each action's mean reward is 0); margin half the gap, 0.5.
    config = dataclasses.replace(PROBE, target_entropy=0.1)
    static, params, _ = _train("Probe-ActionReward-v0", seeds(0, 1), config, sac.Hyper(actor_lr=3e-3, critic_lr=3e-3))
    obs = jnp.eye(2)
    for p in params:
        greedy = sac.act(static, p, obs, jax.random.key(0), deterministic=True)
        np.testing.assert_array_equal(greedy, [0, 1])
        probs = jax.nn.softmax(static.actor.apply(p.actor, obs))
        assert np.all(np.diag(probs) > 0.74), probs
        q = static.critic.apply(p.critic, obs)  # [2, 2 obs, 2 actions]
        np.testing.assert_allclose(q, np.broadcast_to(2 * np.eye(2) - 1, (2, 2, 2)), atol=0.5)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "env_id, overrides, field",
    [
        ("Pendulum-v1", dict(num_envs=0), "num_envs"),
        ("Pendulum-v1", dict(batch_size=-1), "batch_size"),
        ("Pendulum-v1", dict(gradient_steps=0), "gradient_steps"),
        ("Pendulum-v1", dict(learning_starts=-1), "learning_starts"),
        ("Pendulum-v1", dict(total_timesteps=100, learning_starts=1000), "learning_starts"),
        ("Pendulum-v1", dict(buffer_size=10, learning_starts=100), "buffer_size"),
        ("Pendulum-v1", dict(hidden_sizes=()), "hidden_sizes"),
        ("Pendulum-v1", dict(activation="sigmoidal"), "activation"),
        ("Pendulum-v1", dict(log_std_min=3.0), "log_std_min"),
        ("Pendulum-v1", dict(target_entropy=float("nan")), "target_entropy"),
        ("CartPole-v1", dict(target_entropy=1.0), "target_entropy"),  # above log 2
        ("CartPole-v1", dict(target_entropy=-0.1), "target_entropy"),
        ("CartPole-v1", dict(noise_exponent=1.0), "noise_exponent"),  # colored noise: Box actions only
        ("Pendulum-v1", dict(noise_exponent=-1.0), "noise_exponent"),
        ("Pendulum-v1", dict(noise_exponent=1.0, noise_horizon=0), "noise_horizon"),
    ],
)
def test_invalid_config_names_the_field(env_id, overrides, field):
    env, env_params = envs.make(env_id)
    with pytest.raises(ConfigError) as err:
        sac.make(dataclasses.replace(sac.Config(), **overrides), env, env_params)
    assert err.value.field == field and field in str(err.value)


@pytest.mark.parametrize("field, value", [("actor_lr", 0.0), ("gamma", 1.5), ("tau", 0.0), ("alpha", -1.0)])
def test_invalid_hyper_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        dataclasses.replace(sac.Hyper(), **{field: value}).validate()


def test_defaults_follow_the_papers():
    env, env_params = envs.make("Pendulum-v1")
    assert sac.build(sac.Config(), env, env_params).target_entropy == -1.0  # -dim(A)
    env, env_params = envs.make("CartPole-v1")
    static = sac.build(sac.Config(), env, env_params)
    np.testing.assert_allclose(static.target_entropy, 0.98 * np.log(2))  # Christodoulou (2019)
    assert sac.Config(total_timesteps=5_000).replay_capacity == 5_000  # never larger than training


# ---------------------------------------------------------------- learning


# Reduced Pendulum budget for the suite (the rl-zoo preset takes 20k steps with 256-unit
# networks): 8 envs give 24 episodes per run in the last 5% of updates, so the final return
# is a mean over many episodes, not 3 or 4 of them.
PENDULUM = sac.Config(num_envs=8, total_timesteps=80_000, learning_starts=2_000, batch_size=128, hidden_sizes=(64, 64))


@pytest.mark.slow
def test_pendulum_learns(seeds):
    env, env_params = envs.make("Pendulum-v1")
    hyper = sac.Hyper(actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3)
    result = rl.train(sac.make(PENDULUM, env, env_params), hyper, seeds=seeds(0, 1))
    final = stats.final_return(result.metrics["episode_return"], result.metrics["episodes"], 0.05)
    # The mean of the 2 seeds. Right answer: both learn, about -150 (seeds 0, 1, 1000, 1001, 2000,
    # 2001 ended between -165 and -131). Wrong answer: one seed stays where an untrained policy
    # is (about -1240: the first 5% of updates of TD3's run), which pulls the mean to -690. The
    # bound -400 is about halfway. (TD3 at these settings has a seed that ends at -378: see
    # tests/test_td3.py; a bound of -250 on every seed would be tuned to SAC's seeds.)
    assert final.mean() >= -400, final
