"""A2C: the loss and the optimizer against NumPy, probe environments, bad input, and learning
on CartPole-v1 and Acrobot-v1 at the rl-baselines3-zoo presets."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import envs
import rl
from agents import a2c
from experiments import presets
from rl.errors import ConfigError
from rl.host import stats

SMALL = a2c.Config(num_envs=4, num_steps=5, total_timesteps=4 * 5 * 4)


def _make(env_id, config=SMALL, **overrides):
    env, params = envs.make(env_id)
    return a2c.make(dataclasses.replace(config, **overrides), env, params)


def _static(env_id="CartPole-v1", config=SMALL):
    env, params = envs.make(env_id)
    space = env.action_space(params)
    return a2c.Static(
        config, envs.vectorize(env, config.num_envs), params, a2c.network(config, space), envs.is_discrete(space)
    )


def _final(result):
    return stats.final_return(result.metrics["episode_return"], result.metrics["episodes"])


# ---------------------------------------------------------------- loss and optimizer


def test_loss_matches_numpy_reference():
    static = _static()
    params = jax.jit(static.network.init)(jax.random.key(0), jnp.zeros((1, 4)))
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(8, 4)).astype(np.float32)
    action = rng.integers(0, 2, size=8)
    adv = rng.normal(size=8).astype(np.float32)
    target = rng.normal(size=8).astype(np.float32)
    hyper = a2c.Hyper(vf_coef=0.5, ent_coef=0.01)
    total, m = jax.jit(functools.partial(a2c.loss, static))(params, a2c.Batch(obs, action, adv, target), hyper)

    # Reference (SB3's A2C.train): L = -mean(log pi(a|s) A) + .5 mean((V - R)^2) - .01 H
    logits, value = static.network.apply(params, obs)
    logp_all = np.asarray(jax.nn.log_softmax(logits))
    pg = -np.mean(logp_all[np.arange(8), action] * adv)
    vl = np.mean((np.asarray(value) - target) ** 2)
    ent = -np.mean(np.sum(np.exp(logp_all) * logp_all, axis=1))
    np.testing.assert_allclose(m["policy_loss"], pg, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m["value_loss"], vl, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m["entropy"], ent, rtol=1e-5)
    np.testing.assert_allclose(total, pg + 0.5 * vl - 0.01 * ent, rtol=1e-5, atol=1e-6)

    # normalize_advantages standardises A within the batch before the policy term
    static = static._replace(config=dataclasses.replace(SMALL, normalize_advantages=True))
    _, m = jax.jit(functools.partial(a2c.loss, static))(params, a2c.Batch(obs, action, adv, target), hyper)
    adv_n = (adv - adv.mean()) / (adv.std() + 1e-8)
    np.testing.assert_allclose(m["policy_loss"], -np.mean(logp_all[np.arange(8), action] * adv_n), rtol=1e-5, atol=1e-6)


def test_gaussian_loss_matches_numpy_reference():
    static = _static("Pendulum-v1", dataclasses.replace(SMALL, log_std_init=-0.5))
    params = jax.jit(static.network.init)(jax.random.key(0), jnp.zeros((1, 3)))
    rng = np.random.default_rng(1)
    obs = rng.normal(size=(6, 3)).astype(np.float32)
    action = rng.normal(size=(6, 1)).astype(np.float32)
    adv = rng.normal(size=6).astype(np.float32)
    _, m = jax.jit(functools.partial(a2c.loss, static))(
        params, a2c.Batch(obs, action, adv, np.zeros(6, np.float32)), a2c.Hyper()
    )
    (mean, log_std), _ = static.network.apply(params, obs)
    mean, std = np.asarray(mean), np.exp(np.asarray(log_std))
    np.testing.assert_allclose(std, np.exp(-0.5), rtol=1e-6)
    logp = np.sum(-0.5 * ((action - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi), axis=1)
    np.testing.assert_allclose(m["policy_loss"], -np.mean(logp * adv), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m["entropy"], np.mean(np.sum(0.5 + 0.5 * np.log(2 * np.pi) + np.log(std), 1)), rtol=1e-5)


def test_optimizer_is_pytorch_rmsprop_after_clipping():
    # torch.optim.RMSprop(alpha=0.99, eps) as SB3 builds it: v = .99 v + .01 g^2 from v = 0, no
    # bias correction, step -lr g / (sqrt(v) + eps) with eps OUTSIDE the root. eps = 0.1 makes
    # the placement visible: inside the root the first step would differ by about 10%.
    hyper = a2c.Hyper(max_grad_norm=1.0, rms_prop_eps=0.1)
    lr = 0.01
    tx = a2c._optimizer(hyper, jnp.float32(lr))
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    state = tx.init(params)
    grads = [np.array([0.3, -0.1, 0.2]), np.array([3.0, 4.0, 0.0]), np.array([-0.5, 0.05, 0.4])]
    p, v = np.array([1.0, -2.0, 0.5]), np.zeros(3)
    for g in grads:
        updates, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
        params = optax.apply_updates(params, updates)
        g = g * min(1.0, 1.0 / np.linalg.norm(g))  # the second gradient has norm 5: clipped to 1
        v = 0.99 * v + 0.01 * g**2
        p = p - lr * g / (np.sqrt(v) + 0.1)
        np.testing.assert_allclose(params["w"], p, rtol=1e-5)


def test_learn_is_one_gradient_step_on_the_whole_batch():
    # onpolicy.epochs with one epoch of one minibatch: the loss of the whole (shuffled) batch,
    # one optimizer step, whatever the key
    static, hyper = _static(), a2c.Hyper()

    @jax.jit
    def both(key):
        state = a2c.init(static, key, hyper)
        transitions, *_ = a2c.collect(static, state, hyper, jax.random.fold_in(key, 1))
        batch = a2c.targets(static, state.params, transitions, hyper)
        params, _, metrics = a2c.learn(static, state, batch, hyper, jax.random.fold_in(key, 2))
        grads = jax.grad(lambda p: a2c.loss(static, p, batch, hyper)[0])(state.params)
        updates, _ = a2c._optimizer(hyper, hyper.learning_rate).update(grads, state.opt_state, state.params)
        return batch, params, optax.apply_updates(state.params, updates), metrics, optax.global_norm(grads)

    batch, params, expected, metrics, grad_norm = both(jax.random.key(0))
    assert batch.obs.shape == (SMALL.batch_size, 4)
    for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["grad_norm"], grad_norm, rtol=1e-5)


# ---------------------------------------------------------------- probes
# (the discrete probes: the probe matrix, tests/test_probes.py)

PROBE_CONFIG = a2c.Config(num_envs=8, num_steps=5, total_timesteps=20_000)


def _probe(env_id, obs, seeds, steps=20_000, **hyper):
    """Train on `seeds`; the policy output and value at `obs` of each run, seeds first."""
    algo = _make(env_id, PROBE_CONFIG, total_timesteps=steps)
    result = rl.train(algo, a2c.Hyper(**{"learning_rate": 1e-3, **hyper}), seeds=seeds)
    env, params = envs.make(env_id)
    network = a2c.network(algo.config, env.action_space(params))
    policy_out, value = jax.vmap(network.apply, (0, None))(result.params, jnp.asarray(obs))
    return policy_out, np.asarray(value)


def test_probe_continuous_mean_action_tracks_the_observation(seeds):
    # r = -(a - s)^2, one step: the best mean action is s. The probe observations lie 0.5
    # apart, so the wrong answer (a neighbour's action) is 0.5 away. Margin: half of it, 0.25.
    # Actions are clipped to [-1, 1] before the reward, which pushes the mean at s = +-0.75
    # outwards while the std is wide: with lr 1e-3 (std still 0.38 at 40k steps) it was at
    # +-1.1, with 3e-3 (std 0.1) within 0.06 of s on seeds 0, 1000 and 2000.
    obs = np.array([[-0.75], [-0.25], [0.25], [0.75]], np.float32)
    (mean, _), _ = _probe("Probe-ContinuousAction-v0", obs, seeds(0), steps=40_000, learning_rate=3e-3)
    np.testing.assert_allclose(np.asarray(mean)[0], obs, atol=0.25)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "env_id, overrides, field",
    [
        ("CartPole-v1", dict(num_envs=0), "num_envs"),
        ("CartPole-v1", dict(num_steps=-5), "num_steps"),
        ("CartPole-v1", dict(hidden_sizes=(64, 0)), "hidden_sizes"),
        ("CartPole-v1", dict(activation="sigmoidal"), "activation"),
        ("CartPole-v1", dict(total_timesteps=10), "total_timesteps"),
        ("CartPole-v1", dict(anneal_lr=1), "anneal_lr"),
        ("CartPole-v1", dict(log_std_init=-0.5), "log_std_init"),
        ("CartPole-v1", dict(state_dependent_std=True), "state_dependent_std"),
        ("Pendulum-v1", dict(state_dependent_std=True, log_std_init=-1.0), "log_std_init"),
    ],
)
def test_invalid_config_names_the_field(env_id, overrides, field):
    with pytest.raises(ConfigError) as err:
        _make(env_id, **overrides)
    assert err.value.field == field and field in str(err.value)


@pytest.mark.parametrize(
    "field, value",
    [
        ("learning_rate", -1.0),
        ("gamma", 1.5),
        ("gae_lambda", -0.1),
        ("max_grad_norm", 0.0),
        ("rms_prop_eps", 0.0),
        ("ent_coef", float("nan")),
        ("reward_scale", float("inf")),
    ],
)
def test_invalid_hyper_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        dataclasses.replace(a2c.Hyper(), **{field: value}).validate()


# ---------------------------------------------------------------- learning


# Final returns measured at the presets (4 seeds each at seed shifts 0, 1000 and 2000):
# CartPole 500 on 11 of the 12 seeds, one (seed 2002) fell back to 260 (4-seed means 500, 500,
# 440); seeds 3000-3015 all 500, so 1 seed in 28 below 475. Acrobot: every seed between -80.6
# and -85.4, 4-seed means -82.5, -82.6 and -83.9. One learning test (Acrobot) keeps make test within
# its budget; CartPole is validated at its preset on 8 seeds (README, make validate).


def _preset_final(name, seeds):
    preset = presets.get(name)
    algo = _make(preset.env, a2c.Config(**preset.config))
    return _final(rl.train(algo, a2c.Hyper(**preset.hyper), seeds=seeds.range(4)))


@pytest.mark.slow
def test_acrobot_rlzoo_preset_learns(seeds):
    final = _preset_final("rlzoo-a2c-acrobot", seeds)
    # the 4-seed mean: -100 leaves a margin of 16 below the lowest mean measured (-83.9); a
    # policy that never swings up scores -500
    assert final.mean() >= -100, final
