"""MAML: the 2-D navigation env's analytic answers, the inner step against a hand-written
REINFORCE loss, the meta-gradient against finite differences (second order) and against first
order, task independence under vmap, bad input, and the adaptation result of the paper's 2-D
navigation figure at a small budget."""

import dataclasses
import functools

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import envs
import rl
from agents import maml
from experiments import maml_adaptation
from rl.errors import ConfigError

TINY = maml.Config(meta_batch_size=3, num_envs=4, num_steps=10, hidden_sizes=(4,), total_timesteps=10**6)


def _static(config=TINY, env_id="Navigation2D-v0"):
    env, params = envs.make(env_id)
    return maml.build(config, env, params)


def _params(static, seed=0):
    return maml.init(static, jax.random.key(seed), maml.Hyper()).params


def _batch(static, params, task, key, hyper=maml.Hyper()):
    transitions, _ = maml.collect(static, params, task, key)
    return maml.targets(static, transitions, hyper)


def _task(static, angle):
    return static.env_params.replace(goal=jnp.array([np.cos(angle), np.sin(angle)], jnp.float32))


# ---------------------------------------------------------------- the environment


def test_navigation_returns_match_the_analytic_answers():
    env, params = envs.make("Navigation2D-v0")
    task = env.sample_task(jax.random.key(3), params)

    def episode(action_of):
        obs, state = env.reset(jax.random.key(0), task)
        total, truncated = 0.0, False
        for t in range(100):
            obs, state, reward, terminated, truncated, _ = env.step(jax.random.key(t), state, action_of(obs), task)
            total += float(reward)
            assert not terminated
        return total, bool(truncated)

    # Full speed (0.1 per step) straight at the goal at distance 1: at the goal after 10 steps,
    # return -(0.9 + 0.8 + ... + 0.1 + 0) = -4.5; an action of 10 is clipped to 0.1 per axis.
    # The wrong answers: standing still earns -100, an unclipped step would reach the goal at once.
    goal = np.asarray(task.goal)
    best, truncated = episode(lambda obs: jnp.where(jnp.linalg.norm(goal - obs) > 0.05, 0.1 * goal, goal - obs))
    assert truncated  # the 100-step horizon ends the episode by truncation
    assert best == pytest.approx(-4.5, abs=0.01)
    still, _ = episode(lambda obs: jnp.zeros(2))
    assert still == pytest.approx(-100.0, abs=1e-3)
    clipped, _ = episode(lambda obs: jnp.array([10.0, 10.0]))
    assert clipped < -50.0  # moves (0.1, 0.1) a step: away from the goal after a few steps


def test_tasks_are_goals_on_the_upper_unit_semicircle():
    static = _static()
    tasks = maml.sample_tasks(static, jax.random.key(0), 500)
    goal = np.asarray(tasks.goal)
    np.testing.assert_allclose(np.linalg.norm(goal, axis=1), 1.0, rtol=1e-5)
    angle = np.arctan2(goal[:, 1], goal[:, 0])
    assert angle.min() >= 0.0 and angle.max() <= np.pi
    # uniform in angle: each third of [0, pi] holds about a third of 500 goals (binomial sd ~ 10.5)
    counts = np.histogram(angle, bins=3, range=(0, np.pi))[0]
    assert np.all(np.abs(counts - 500 / 3) < 45), counts


def test_an_env_without_a_task_distribution_is_one_task():
    static = _static(env_id="Pendulum-v1")
    assert static.sample_task is None
    tasks = maml.sample_tasks(static, jax.random.key(0), 3)
    for leaf, ref in zip(jax.tree.leaves(tasks), jax.tree.leaves(static.env_params)):
        assert leaf.shape[0] == 3
        np.testing.assert_allclose(leaf, np.broadcast_to(ref, leaf.shape), rtol=1e-6)


# ---------------------------------------------------------------- targets and baseline


def test_episode_time_restarts_after_every_episode_end():
    terminated = jnp.array([[0, 0], [1, 0], [0, 0], [0, 0]], bool)
    truncated = jnp.array([[0, 0], [0, 0], [0, 1], [0, 0]], bool)
    # env 0 ends at t = 1 (terminated), env 1 at t = 2 (truncated): the next step is step 0
    expected = np.array([[0, 0], [1, 1], [0, 2], [1, 0]])
    np.testing.assert_array_equal(maml.episode_time(terminated, truncated), expected)


def test_linear_baseline_fits_returns_that_are_linear_in_its_features():
    rng = np.random.default_rng(0)
    obs = rng.uniform(-1, 1, size=(200, 2)).astype(np.float32)
    time_t = rng.integers(0, 100, size=200)
    # G = 2 o_0 - o_1^2 + 3 t/100 + 1 is in the span of [o, o^2, t/100, ..., 1]: fitted exactly
    # (up to the 1e-5 ridge); a constant baseline (the mean) would leave the spread of G, sd ~ 1.3.
    g = 2 * obs[:, 0] - obs[:, 1] ** 2 + 3 * time_t / 100 + 1
    fitted = maml.linear_baseline(jnp.asarray(obs), jnp.asarray(time_t), jnp.asarray(g, jnp.float32))
    assert np.std(g) > 1.0
    np.testing.assert_allclose(fitted, g, atol=1e-2)


def test_targets_are_the_reward_to_go_without_a_baseline():
    config = dataclasses.replace(TINY, baseline="none", normalize_advantages=False)
    static = _static(config)
    params = _params(static)
    transitions, _ = maml.collect(static, params, _task(static, 1.0), jax.random.key(1))
    batch = maml.targets(static, transitions, maml.Hyper(gamma=0.9))
    r = np.asarray(transitions.reward)  # [T, B]; the rollout (10 steps) is inside one episode
    expected = np.zeros_like(r)
    for t in reversed(range(r.shape[0])):  # G_t = r_t + 0.9 G_{t+1}, G_T = 0
        expected[t] = r[t] + (0.9 * expected[t + 1] if t + 1 < r.shape[0] else 0.0)
    np.testing.assert_allclose(batch.advantage, expected.reshape(-1), rtol=1e-5)


# ---------------------------------------------------------------- inner step and meta-gradient


def reference_loss(static, params, batch):
    """-mean(log N(a; mu(s), sigma^2) A), the diagonal Gaussian log density written out."""
    mean, log_std = static.network.apply(params, batch.obs)
    z = (batch.action - mean) / jnp.exp(log_std)
    logp = jnp.sum(-0.5 * z**2 - log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)
    return -jnp.mean(logp * batch.advantage)


@pytest.mark.parametrize("first_order", [False, True])
def test_inner_step_is_one_sgd_step_on_the_reinforce_loss(first_order):
    static = _static(dataclasses.replace(TINY, first_order=first_order))
    params = _params(static)
    batch = _batch(static, params, _task(static, 0.5), jax.random.key(2))
    hyper = maml.Hyper(inner_lr=0.3)
    np.testing.assert_allclose(maml.loss(static, params, batch), reference_loss(static, params, batch), rtol=1e-5)
    stepped = jax.jit(functools.partial(maml.inner_step, static))(params, batch, hyper)
    grads = jax.grad(functools.partial(reference_loss, static))(params, batch)
    expected = jax.tree.map(lambda p, g: p - 0.3 * g, params, grads)
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), stepped, params)
    assert max(jax.tree.leaves(moved)) > 1e-3  # a step was taken
    for got, want in zip(jax.tree.leaves(stepped), jax.tree.leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _fixed_data_objective(static, params, task, key, hyper):
    """meta_loss's own data, collected the way meta_loss collects it (same keys), then
    ``f(theta) = L(theta - alpha grad L(theta, D_0), D_1)`` with D_0, D_1 held fixed."""
    adapt_key, post_key = jax.random.split(key)
    (step_key,) = jax.random.split(adapt_key, 1)
    d0 = _batch(static, params, task, step_key, hyper)
    d1 = _batch(static, maml.inner_step(static, params, d0, hyper), task, post_key, hyper)

    def second_order(theta):
        grads = jax.grad(maml.loss, argnums=1)(static, theta, d0)
        return maml.loss(static, jax.tree.map(lambda p, g: p - hyper.inner_lr * g, theta, grads), d1)

    return second_order


def test_second_order_meta_gradient_matches_finite_differences_and_differs_from_first_order():
    hyper = maml.Hyper(inner_lr=0.5)
    key, task = jax.random.key(5), None
    grads = {}
    for first_order in (False, True):
        static = _static(dataclasses.replace(TINY, first_order=first_order))
        task = _task(static, 2.0)
        params = _params(static)
        grads[first_order] = jax.jit(jax.grad(lambda p, s=static: maml.meta_loss(s, p, task, key, hyper)[0]))(params)
    f = jax.jit(_fixed_data_objective(_static(), params, task, key, hyper))
    # meta_loss's gradient is the gradient of f: the data are constants, the inner step is differentiated
    # (f32 and jit against eager: ~2e-4 apart; wrong data or a missing Hessian term change it by > 10%)
    for got, want in zip(jax.tree.leaves(grads[False]), jax.tree.leaves(jax.jit(jax.grad(f))(params))):
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-5)
    # central differences of f along random directions (f32, eps 1e-3: error ~ eps^2 f''' + 1e-7 / eps)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    rng = np.random.default_rng(0)
    g2, g1 = (jax.flatten_util.ravel_pytree(grads[fo])[0] for fo in (False, True))
    for _ in range(3):
        v = jnp.asarray(rng.normal(size=flat.shape), jnp.float32)
        v = v / jnp.linalg.norm(v)
        eps = 1e-3
        fd = (f(unravel(flat + eps * v)) - f(unravel(flat - eps * v))) / (2 * eps)
        second, first = float(g2 @ v), float(g1 @ v)
        # the first-order directional derivative leaves out the Hessian term alpha H g; here it is off
        # by |second - first|, which must be far larger than the finite-difference error it is judged by
        assert abs(second - first) > 10 * abs(second - fd), (second, first, float(fd))
        assert abs(second - fd) < 0.5 * abs(second - first)
    # first order: the gradient at the adapted parameters, grad L(theta_1, D_1)
    static = _static(dataclasses.replace(TINY, first_order=True))
    adapt_key, post_key = jax.random.split(key)
    (step_key,) = jax.random.split(adapt_key, 1)
    d0 = _batch(static, params, task, step_key, hyper)
    theta1 = maml.inner_step(static, params, d0, hyper)
    d1 = _batch(static, theta1, task, post_key, hyper)
    for got, want in zip(
        jax.tree.leaves(grads[True]), jax.tree.leaves(jax.grad(maml.loss, argnums=1)(static, theta1, d1))
    ):
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-5)


def test_tasks_are_independent_under_vmap():
    static = _static()
    params = _params(static)
    hyper = maml.Hyper()
    tasks = maml.sample_tasks(static, jax.random.key(0), 3)
    keys = jax.random.split(jax.random.key(1), 3)

    @jax.jit
    def per_task(tasks):
        def one(task, key):
            return jax.value_and_grad(lambda p: maml.meta_loss(static, p, task, key, hyper)[0])(params)

        return jax.vmap(one)(tasks, keys)

    losses, grads = per_task(tasks)
    moved = tasks.replace(goal=tasks.goal.at[2].set(jnp.array([-1.0, 0.0])))  # change task 2 only
    losses2, grads2 = per_task(moved)
    np.testing.assert_array_equal(losses[:2], losses2[:2])
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads2)):
        np.testing.assert_array_equal(a[:2], b[:2])
    assert losses[2] != losses2[2]
    # task 0 in the batch is task 0 alone
    alone = jax.jit(lambda task: maml.meta_loss(static, params, task, keys[0], hyper)[0])(
        jax.tree.map(lambda x: x[0], tasks)
    )
    np.testing.assert_allclose(losses[0], alone, rtol=1e-4)  # f32, batched against alone; other data: O(1)


def test_zero_inner_steps_is_multitask_reinforce():
    static = _static(dataclasses.replace(TINY, num_inner_steps=0))
    params = _params(static)
    task, key = _task(static, 1.0), jax.random.key(4)
    got = maml.meta_loss(static, params, task, key, maml.Hyper())[0]
    _, post_key = jax.random.split(key)
    np.testing.assert_allclose(got, maml.loss(static, params, _batch(static, params, task, post_key)), rtol=1e-6)


def test_two_seeds_differ_and_one_update_reports_pre_and_post_returns():
    static = _static()
    hyper = maml.Hyper()
    s0, s1 = (maml.init(static, jax.random.key(k), hyper) for k in (0, 1))
    assert not np.allclose(s0.params["policy/linear"]["w"], s1.params["policy/linear"]["w"])
    config = dataclasses.replace(TINY, num_steps=100)
    state, metrics = jax.jit(functools.partial(maml.update, _static(config)))(s0, hyper)
    # 100-step rollouts: one episode per env and task, counted once (post-adaptation); returns lie
    # between a straight dash to the goal (-4.5) and one straight away from it at the top speed
    # 0.1 sqrt(2): -sum_t (1 + 0.1 sqrt(2) t) = -814
    assert int(metrics["episodes"]) == 3 * 4 and int(state.update_idx) == 1
    for name in ("pre_return", "post_return"):
        assert -815.0 < float(metrics[name]) < -4.5
    assert np.isfinite(metrics["loss"]) and float(metrics["grad_norm"]) > 0


# ---------------------------------------------------------------- probe: adaptation is what pays


def _task_bit_returns(seeds, num_inner_steps):
    """Train on Probe-TaskBit-v0 (seeds 0, 1); mean return on 256 held-out tasks after 0 and 1
    inner steps, one row per seed."""
    env, params = envs.make("Probe-TaskBit-v0")
    config = maml.Config(
        meta_batch_size=8, num_envs=16, num_steps=1, num_inner_steps=num_inner_steps, hidden_sizes=(16,)
    )
    config = dataclasses.replace(config, total_timesteps=config.steps_per_update * 60)
    hyper = maml.Hyper(inner_lr=0.5, learning_rate=3e-2)
    result = rl.train(maml.make(config, env, params), hyper, seeds=seeds(0, 1))
    static = maml.build(config, env, params)
    tasks = maml.sample_tasks(static, jax.random.key(10**6), 256)  # a key training never uses
    evaluate = jax.jit(jax.vmap(lambda p: maml.adaptation_returns(static, p, tasks, jax.random.key(7), hyper, 1)))
    return np.asarray(evaluate(result.params))


def test_probe_one_inner_step_finds_the_task_bit(seeds):
    # Probe-TaskBit-v0: the rewarded action is a fair bit per task, invisible in the observation.
    # Before adapting, any policy returns 0 on average over tasks (exactly, in expectation; 256
    # tasks x 16 episodes give a standard error of 0.016). After one inner step on the task's 16
    # episodes the meta-learned init should return near 1. Wrong answers: 0 (no adaptation), below 0
    # (a step away from the rewarded action), and the return of the same step from an init trained
    # without adaptation (num_inner_steps=0). Measured, seeds 0-1, 1000-1001, 2000-2001: MAML 0.99
    # to 1.0 after the step, that init 0.24, 0.04, 0.24, 0.24, 0.05, -0.04. Margins: |before| < 0.1
    # (6 standard errors); after >= 0.5 for MAML, below 0.5 on average for the other init.
    maml_returns = _task_bit_returns(seeds, num_inner_steps=1)
    np.testing.assert_allclose(maml_returns[:, 0], 0.0, atol=0.1)
    assert (maml_returns[:, 1] >= 0.5).all(), maml_returns
    pretrained = _task_bit_returns(seeds, num_inner_steps=0)
    np.testing.assert_allclose(pretrained[:, 0], 0.0, atol=0.1)
    assert pretrained[:, 1].mean() < 0.5, pretrained


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("field", "value", "env_id", "match"),
    [
        ("total_timesteps", 100, "Navigation2D-v0", "at least one meta-update"),
        ("baseline", "value", "Navigation2D-v0", "must be one of linear, none"),
        ("num_inner_steps", -1, "Navigation2D-v0", "non-negative integer"),
        ("meta_batch_size", 0, "Navigation2D-v0", "positive integer"),
        ("first_order", 1, "Navigation2D-v0", "True or False"),
        ("log_std_init", -1.0, "CartPole-v1", "continuous action spaces only"),
    ],
)
def test_bad_config_is_one_clear_error(field, value, env_id, match):
    env, params = envs.make(env_id)
    with pytest.raises(ConfigError, match=match) as caught:
        maml.make(dataclasses.replace(TINY, **{field: value}), env, params)
    assert caught.value.field == field


def test_bad_hyper_is_one_clear_error():
    with pytest.raises(ConfigError, match="inner_lr"):
        maml.Hyper(inner_lr=0.0).validate()


# ---------------------------------------------------------------- learning: the paper's 2-D navigation


@pytest.mark.slow
def test_one_step_from_the_meta_learned_init_beats_random_and_pretrained_inits(seeds):
    config = maml.Config(meta_batch_size=10, num_envs=10, hidden_sizes=(32, 32))
    config = dataclasses.replace(config, total_timesteps=config.steps_per_update * 50)
    returns = maml_adaptation.compare(config, maml.Hyper(), seeds.range(4), num_eval_tasks=20, max_inner_steps=1)
    after_one = {name: r[:, 1].mean() for name, r in returns.items()}  # mean over 4 seeds of 20 held-out goals
    # Measured: seeds 0-3 MAML -38.3, pretrained -57.3, random -123.0; seeds 1000-1003 -36.3, -56.9,
    # -123.0. The wrong answers are MAML no better than either (a gap of 0); the margins are about half
    # the measured gaps (~20 and ~85).
    assert after_one["MAML"] > after_one["pretrained"] + 10, after_one
    assert after_one["MAML"] > after_one["random"] + 40, after_one
