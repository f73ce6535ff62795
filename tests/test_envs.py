"""Tests for envs/: registry, wrappers and probe environments (all fast, all offline)."""

from __future__ import annotations

import urllib.error

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments import spaces
from gymnax.utils import load_mnist

import envs
from envs import registry

OFFLINE_GYMNAX_IDS = [i for i in gymnax.registered_envs if i != "MNISTBandit-bsuite"]
PROBE_IDS = list(envs.PROBES)


@pytest.fixture(autouse=True)
def strict_rank_promotion():
    """Our code must never rely on implicit rank promotion."""
    with jax.numpy_rank_promotion("raise"):
        yield


# ----------------------------------------------------------------------------------------------
# Helpers


def step_keys(seed: int, num_steps: int) -> jax.Array:
    """One key per step, identical for every env driven from the same seed."""
    return jax.random.split(jax.random.key(seed), num_steps)


def rollout(env, params, actions, seed: int = 0):
    """jit + lax.scan: reset from `seed`, then step with `actions[t]` and the keys of `step_keys`.

    Returns (first_obs, final_state, per-step (obs, reward, terminated, truncated, info)) with a
    leading time axis T on every per-step leaf.
    """

    @jax.jit
    def run(key):
        obs0, state0 = env.reset(key, params)

        def body(state, inputs):
            step_key, action = inputs
            obs, state, reward, terminated, truncated, info = env.step(step_key, state, action, params)
            return state, (obs, reward, terminated, truncated, info)

        keys = step_keys(seed + 1, actions.shape[0])
        state, outs = jax.lax.scan(body, state0, (keys, actions))
        return obs0, state, outs

    return run(jax.random.key(seed))


def constant_actions(value, num_steps: int = 40, batch: tuple[int, ...] = ()) -> jax.Array:
    """actions[T, *batch] all equal to `value` (int for discrete, float array for Box)."""
    value = jnp.asarray(value)
    return jnp.broadcast_to(value, (num_steps, *batch, *value.shape))


# ----------------------------------------------------------------------------------------------
# Registry


@pytest.mark.parametrize("env_id", OFFLINE_GYMNAX_IDS)
def test_gymnax_ids_make_reset_and_step_under_jit(env_id):
    env, params = envs.make(env_id)

    @jax.jit
    def reset_and_step(key):
        obs, state = env.reset(key, params)
        action = env.action_space(params).sample(key)
        return obs, env.step(key, state, action, params)

    # Swimmer-misc itself relies on implicit rank promotion; only our code is held to "raise".
    with jax.numpy_rank_promotion("allow"):
        obs0, (obs, _, reward, terminated, truncated, info) = reset_and_step(jax.random.key(0))
    assert obs.shape == obs0.shape == tuple(env.observation_space(params).shape)
    assert reward.shape == () and terminated.dtype == jnp.bool_ and truncated.dtype == jnp.bool_
    assert info["final_observation"].shape == obs.shape


def test_registered_ids_are_gymnax_plus_ours():
    ids = envs.registered_ids()
    ours = ["Navigation2D-v0", *PROBE_IDS, "BernoulliBandit-uniform-misc", "CartPole-NoVelocity-v1"]
    assert len(ids) == 26 + len(ours) and len(set(ids)) == len(ids)
    assert ids[:26] == list(gymnax.registered_envs) and sorted(ids[26:]) == sorted(ours)


def test_unknown_id_names_the_closest_ids():
    expected = r"unknown env id 'CartPole-v2'; did you mean: CartPole-v1, CartPole-NoVelocity-v1\?"
    with pytest.raises(ValueError, match=expected):
        envs.make("CartPole-v2")
    with pytest.raises(ValueError, match="Probe-OneStep-v0"):
        envs.make("probe-onestep-v1")
    with pytest.raises(ValueError, match=rf"known ids include: CartPole-v1.*lists all {len(envs.registered_ids())}"):
        envs.make("zzzzzzzz")


def test_non_str_id_is_a_clear_error():
    with pytest.raises(ValueError, match="env id must be a str.*got int 3"):
        envs.make(3)


@pytest.mark.parametrize(
    "failure",
    [urllib.error.URLError("no route to host"), OSError(101, "Network is unreachable")],
)
def test_mnist_offline_raises_one_clear_error(monkeypatch, failure):
    def no_network(url, filename, directory="/tmp/mnist"):
        raise failure

    monkeypatch.setattr(load_mnist, "_download", no_network)
    with pytest.raises(envs.EnvUnavailableError) as caught:
        envs.make("MNISTBandit-bsuite")
    message = str(caught.value)
    assert "MNISTBandit-bsuite needs to download MNIST" in message
    assert type(failure).__name__ in message and str(failure) in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.fixture
def isolated_registry(monkeypatch):
    """Register into a copy of the package registry so tests leave no ids behind."""
    monkeypatch.setattr(registry, "_own_registry", dict(registry._own_registry))


def test_register_rejects_duplicates(isolated_registry):
    with pytest.raises(ValueError, match="already registered"):
        envs.register("CartPole-v1", envs.probes.OneStepProbe)
    with pytest.raises(ValueError, match="already registered"):
        envs.register("Probe-OneStep-v0", envs.probes.OneStepProbe)


def test_register_then_make_and_bad_factories(isolated_registry):
    envs.register("MyProbe-v0", envs.probes.OneStepProbe)
    env, params = envs.make("MyProbe-v0")
    assert isinstance(env, envs.probes.OneStepProbe) and params == env.default_params
    with pytest.raises(TypeError, match="callable"):
        envs.register("Bad-v0", 42)
    envs.register("Tuple-v0", lambda: envs.make("Probe-OneStep-v0"))
    with pytest.raises(TypeError, match=r"not an \(env, params\) tuple"):
        envs.make("Tuple-v0")


# ----------------------------------------------------------------------------------------------
# EpisodeStatistics


def expected_episode_stats(rewards, done):
    """Reference: at a done step, the sum/count of rewards since the previous done; else 0."""
    returns, lengths, running_return, running_length = [], [], 0.0, 0
    for r, d in zip(np.asarray(rewards), np.asarray(done)):
        running_return, running_length = running_return + float(r), running_length + 1
        returns.append(running_return if d else 0.0)
        lengths.append(running_length if d else 0)
        if d:
            running_return, running_length = 0.0, 0
    return np.array(returns, np.float32), np.array(lengths, np.int32)


def test_episode_statistics_on_cartpole_with_a_fixed_action():
    env, params = envs.make("CartPole-v1")
    _, _, (_, reward, terminated, truncated, info) = rollout(
        envs.EpisodeStatistics(env), params, constant_actions(0, 40)
    )
    done = np.asarray(terminated | truncated)
    assert done.sum() >= 2, "pushing left always should end >= 2 episodes in 40 steps"
    np.testing.assert_array_equal(info["episode_done"], done)
    # CartPole pays +1 per step, so a finished episode's return is its length; 0 elsewhere.
    ends = np.flatnonzero(done)
    lengths = np.diff(np.concatenate([[-1], ends]))
    np.testing.assert_array_equal(info["episode_length"][ends], lengths)
    np.testing.assert_array_equal(info["episode_return"][ends], lengths.astype(np.float32))
    np.testing.assert_array_equal(info["episode_return"][~done], 0.0)
    np.testing.assert_array_equal(info["episode_length"][~done], 0)
    ref_returns, ref_lengths = expected_episode_stats(reward, done)
    np.testing.assert_array_equal(info["episode_return"], ref_returns)
    np.testing.assert_array_equal(info["episode_length"], ref_lengths)
    assert info["episode_return"].dtype == jnp.float32 and info["episode_length"].dtype == jnp.int32


def test_episode_statistics_restart_after_truncation():
    env, params = envs.make("Probe-Truncation-v0")
    _, state, (_, _, terminated, truncated, info) = rollout(
        envs.EpisodeStatistics(env), params, constant_actions(0, 12)
    )
    # +1 per step, truncated every 5 steps: episodes end at t = 4, 9 with return 5, length 5.
    expected = np.zeros(12, np.float32)
    expected[[4, 9]] = 5.0
    np.testing.assert_array_equal(info["episode_return"], expected)
    np.testing.assert_array_equal(truncated, expected > 0)
    assert not np.asarray(terminated).any()
    # Two steps into the third episode: accumulators hold only that episode.
    assert float(state.episode_return) == 2.0 and int(state.episode_length) == 2


def test_episode_statistics_rejects_batched_env():
    env, params = envs.make("CartPole-v1")
    wrapped = envs.EpisodeStatistics(envs.VecEnv(env, 2))
    obs, state = wrapped.reset(jax.random.key(0), params)
    with pytest.raises(AssertionError):
        wrapped.step(jax.random.key(1), state, jnp.zeros(2, jnp.int32), params)


# ----------------------------------------------------------------------------------------------
# final_observation through every wrapper


def raw_cartpole_rollout():
    """CartPole pushed left for 40 steps, unwrapped: (env, params, rollout output)."""
    env, params = envs.make("CartPole-v1")
    return env, params, rollout(env, params, constant_actions(0, 40))


def assert_final_obs_semantics(obs, final_obs, done):
    """final_observation differs from obs exactly where an automatic reset happened."""
    same = np.all(np.isclose(obs, final_obs), axis=tuple(range(done.ndim, obs.ndim)))
    np.testing.assert_array_equal(same, ~np.asarray(done))


@pytest.mark.parametrize("wrapper", ["EpisodeStatistics", "FlattenObservation"])
def test_single_env_wrappers_preserve_final_observation(wrapper):
    env, params, (_, _, (raw_obs, _, term, trunc, raw_info)) = raw_cartpole_rollout()
    wrapped = getattr(envs, wrapper)(env)
    _, _, (obs, _, _, _, info) = rollout(wrapped, params, constant_actions(0, 40))
    np.testing.assert_array_equal(info["final_observation"], raw_info["final_observation"])
    np.testing.assert_array_equal(obs, raw_obs)
    assert_final_obs_semantics(obs, info["final_observation"], term | trunc)


def test_clip_action_preserves_final_observation():
    env, params = envs.make("Probe-ContinuousAction-v0")
    actions = constant_actions(jnp.array([3.0]), 10)
    _, _, (_, _, _, _, raw_info) = rollout(env, params, actions)
    _, _, (obs, _, done, _, info) = rollout(envs.ClipAction(env), params, actions)
    np.testing.assert_array_equal(info["final_observation"], raw_info["final_observation"])
    assert_final_obs_semantics(obs, info["final_observation"], done)


def test_vec_env_preserves_final_observation():
    env, params = envs.make("CartPole-v1")
    vec = envs.VecEnv(env, 3)
    _, _, (obs, _, term, trunc, info) = rollout(vec, params, constant_actions(0, 40, (3,)))
    # Env b of the VecEnv is the plain env driven by key split(step_key, 3)[b]; check b = 2.
    _, _, (_, _, _, _, raw_info) = rollout(VecMember(env, 2, 3), params, constant_actions(0, 40))
    np.testing.assert_array_equal(info["final_observation"][:, 2], raw_info["final_observation"])
    assert_final_obs_semantics(obs, info["final_observation"], term | trunc)


class VecMember(envs.Wrapper):
    """Env number `index` of a `VecEnv(env, num_envs)`: uses the same key split as VecEnv."""

    def __init__(self, env, index, num_envs):
        super().__init__(env)
        self.index, self.n = index, num_envs

    def reset(self, key, params=None):
        return self._env.reset(jax.random.split(key, self.n)[self.index], params)

    def step(self, key, state, action, params=None):
        return self._env.step(jax.random.split(key, self.n)[self.index], state, action, params)


# ----------------------------------------------------------------------------------------------
# NormalizeObservation


def running_statistics_reference(seen_batches, prior_count=1e-4):
    """NumPy reference: mean/var after each batch of all observations so far, with the prior
    (mean 0, var 1, weight `prior_count`) mixed in exactly as a pooled sample would be."""
    means, variances = [], []
    for t in range(1, len(seen_batches) + 1):
        x = np.concatenate(seen_batches[:t]).astype(np.float64)
        n = len(x) + prior_count
        mean = x.sum(axis=0) / n
        sq_dev = ((x - mean) ** 2).sum(axis=0) + prior_count * (1.0 + mean**2)
        means.append(mean)
        variances.append(sq_dev / n)
    return np.stack(means), np.stack(variances)


def test_normalize_observation_matches_numpy_statistics_and_final_obs():
    env, params = envs.make("CartPole-v1")
    num_envs, num_steps = 4, 60
    actions = jax.random.randint(jax.random.key(7), (num_steps, num_envs), 0, 2)
    raw = envs.VecEnv(env, num_envs)
    norm = envs.NormalizeObservation(envs.VecEnv(env, num_envs))
    raw_obs0, _, (raw_obs, _, term, trunc, raw_info) = rollout(raw, params, actions)
    obs0, state, (obs, _, _, _, info) = rollout(norm, params, actions)
    assert np.asarray(term | trunc).any(), "the check below needs at least one automatic reset"

    # Statistics = NumPy mean/var of every observation returned (the reset batch, then each
    # step's batch), never of final observations; the 1e-4 prior count shifts them negligibly.
    seen = [np.asarray(raw_obs0)] + list(np.asarray(raw_obs))
    all_seen = np.concatenate(seen)
    np.testing.assert_allclose(state.count, len(all_seen) + 1e-4, rtol=1e-6)
    np.testing.assert_allclose(state.mean, all_seen.mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state.var, all_seen.var(axis=0), rtol=1e-4, atol=1e-5)

    # At every step t, obs and final_observation are normalised with the statistics updated
    # by that step's batch: clip((x - mean_t) / sqrt(var_t + 1e-8), -10, 10).
    means, variances = running_statistics_reference(seen)
    means, stds = means[:, None], np.sqrt(variances[:, None] + 1e-8)  # [T + 1, 1, 4]
    np.testing.assert_allclose(obs0, (seen[0] - means[0]) / stds[0], rtol=1e-4, atol=1e-4)
    expected_obs = np.clip((np.asarray(raw_obs) - means[1:]) / stds[1:], -10, 10)
    np.testing.assert_allclose(obs, expected_obs, rtol=1e-4, atol=1e-4)
    raw_final = np.asarray(raw_info["final_observation"])
    expected_final = np.clip((raw_final - means[1:]) / stds[1:], -10, 10)
    np.testing.assert_allclose(info["final_observation"], expected_final, rtol=1e-4, atol=1e-4)
    evaluation = norm.normalize(state, raw_info["final_observation"][-1])
    np.testing.assert_allclose(evaluation, info["final_observation"][-1], rtol=1e-6)
    assert_final_obs_semantics(obs, info["final_observation"], term | trunc)


def test_normalize_observation_uses_each_steps_statistics_for_final_obs():
    env, params = envs.make("Probe-Discount-v0")
    norm = envs.NormalizeObservation(envs.VecEnv(env, 2))
    no_op = jnp.zeros(2, jnp.int32)
    _, state = norm.reset(jax.random.key(0), params)  # sees [0], [0]
    _, state, _, _, _, _ = norm.step(jax.random.key(1), state, no_op, params)
    obs, state, _, terminated, _, info = norm.step(jax.random.key(2), state, no_op, params)
    assert np.asarray(terminated).all()
    # Seen: [0,0] at reset, [1,1], then [0,0] after the automatic reset; final obs [2,2] unseen.
    n = 6 + 1e-4
    mean = 2 / n
    var = (1e-4 * (0 - mean) ** 2 + 1e-4 + 4 * mean**2 + 2 * (1 - mean) ** 2) / n
    np.testing.assert_allclose(state.mean, [mean], rtol=1e-5)
    np.testing.assert_allclose(state.var, [var], rtol=1e-5)
    std = np.sqrt(var + 1e-8)
    np.testing.assert_allclose(obs, np.full((2, 1), (0 - mean) / std), rtol=1e-5)
    final_obs = info["final_observation"]
    np.testing.assert_allclose(final_obs, np.full((2, 1), (2 - mean) / std), rtol=1e-5)


def test_normalize_observation_clips_and_requires_vec_env():
    env, params = envs.make("Probe-OneStep-v0")
    norm = envs.NormalizeObservation(envs.VecEnv(env, 2), clip=3.0)
    _, state = norm.reset(jax.random.key(0), params)
    np.testing.assert_allclose(norm.normalize(state, jnp.full((1,), 1e6)), [3.0])
    np.testing.assert_allclose(norm.normalize(state, jnp.full((5, 1), -1e6)), np.full((5, 1), -3.0))
    with pytest.raises(ValueError, match="VecEnv"):
        envs.NormalizeObservation(env)


def test_normalize_observation_vmaps_over_seeds():
    env, params = envs.make("CartPole-v1")
    norm = envs.vectorize(env, 2, normalize_obs=True)
    keys = jax.random.split(jax.random.key(0), 3)
    obs, state = jax.jit(jax.vmap(norm.reset, in_axes=(0, None)))(keys, params)
    assert obs.shape == (3, 2, 4) and state.mean.shape == (3, 4) and state.count.shape == (3,)
    assert not np.allclose(state.mean[0], state.mean[1])


# ----------------------------------------------------------------------------------------------
# ClipAction, FlattenObservation, VecEnv


def test_clip_action_clips_to_the_box():
    env, params = envs.make("Pendulum-v1")
    clipped = envs.ClipAction(env)
    _, state = env.reset(jax.random.key(0), params)
    expected = env.step(jax.random.key(1), state, jnp.array([2.0]), params)
    got = jax.jit(clipped.step)(jax.random.key(1), state, jnp.array([50.0]), params)
    jax.tree.map(np.testing.assert_array_equal, got, expected)
    # Probe: reward -(clip(a) - obs)^2 with clip(a) = -1.
    probe, probe_params = envs.make("Probe-ContinuousAction-v0")
    obs, pstate = probe.reset(jax.random.key(3), probe_params)
    clipped_probe = envs.ClipAction(probe)
    reward = clipped_probe.step(jax.random.key(4), pstate, jnp.array([-7.0]), probe_params)[2]
    np.testing.assert_allclose(reward, -((-1.0 - obs[0]) ** 2), rtol=1e-6)
    with pytest.raises(ValueError, match="Box action space"):
        envs.ClipAction(envs.make("CartPole-v1")[0])


def test_flatten_observation_spaces_and_dtype():
    env, params = envs.make("Breakout-MinAtar")
    flat = envs.FlattenObservation(env)
    space = flat.observation_space(params)
    assert isinstance(space, spaces.Box) and space.shape == (400,) and space.dtype == jnp.float32
    obs, _ = flat.reset(jax.random.key(0), params)
    assert obs.shape == (400,) and obs.dtype == jnp.float32
    lake, lake_params = envs.make("FrozenLake-misc")
    flat_lake = envs.FlattenObservation(lake)
    lake_obs, _ = flat_lake.reset(jax.random.key(0), lake_params)
    assert lake_obs.shape == (1,) and lake_obs.dtype == jnp.float32
    assert flat_lake.observation_space(lake_params).shape == (1,)


def test_vec_env_shapes_and_spaces():
    env, params = envs.make("CartPole-v1")
    vec = envs.vectorize(env, 3)
    obs, state = vec.reset(jax.random.key(0), params)
    out = vec.step(jax.random.key(1), state, jnp.zeros(3, jnp.int32), params)
    obs, state, reward, terminated, truncated, info = out
    assert vec.num_envs == 3 and obs.shape == (3, 4)
    assert reward.shape == terminated.shape == truncated.shape == (3,)
    assert all(leaf.shape[0] == 3 for leaf in jax.tree.leaves((state, info)))
    assert set(info) >= {"final_observation", "episode_return", "episode_length", "episode_done"}
    assert vec.observation_space(params).shape == (4,) and vec.action_space(params).n == 2
    assert vec.num_actions == 2 and vec.name == "CartPole-v1" and vec.default_params == params
    with pytest.raises(AssertionError):
        vec.step(jax.random.key(1), state, jnp.zeros(4, jnp.int32), params)
    with pytest.raises(ValueError, match="num_envs"):
        envs.VecEnv(env, 0)


def test_vectorize_applies_clip_action_only_to_box_actions():
    pendulum = envs.vectorize(envs.make("Pendulum-v1")[0], 2, normalize_obs=True)
    assert isinstance(pendulum, envs.NormalizeObservation)
    assert isinstance(pendulum.unwrapped, gymnax.environments.classic_control.pendulum.Pendulum)
    assert isinstance(pendulum._env._env._env, envs.ClipAction)
    cartpole = envs.vectorize(envs.make("CartPole-v1")[0], 2)
    assert isinstance(cartpole, envs.VecEnv) and isinstance(cartpole._env, envs.EpisodeStatistics)
    assert cartpole.unwrapped is cartpole._env._env


@pytest.mark.parametrize(
    "env_id, make_wrapped, action, batch",
    [
        ("CartPole-v1", envs.EpisodeStatistics, 0, ()),
        ("Catch-bsuite", envs.FlattenObservation, 1, ()),
        ("Pendulum-v1", envs.ClipAction, jnp.array([3.0]), ()),
        ("CartPole-v1", lambda e: envs.VecEnv(e, 2), 1, (2,)),
        ("Pendulum-v1", lambda e: envs.vectorize(e, 2, normalize_obs=True), jnp.array([0.5]), (2,)),
    ],
)
def test_every_wrapper_runs_under_jit_and_scan(env_id, make_wrapped, action, batch):
    env, params = envs.make(env_id)
    wrapped = make_wrapped(env)
    obs0, _, (obs, reward, terminated, truncated, info) = rollout(wrapped, params, constant_actions(action, 8, batch))
    assert obs.shape == (8, *obs0.shape)
    assert reward.shape == terminated.shape == truncated.shape == (8, *batch)
    assert info["final_observation"].shape == obs.shape
    assert np.isfinite(np.asarray(obs)).all()


def test_space_helpers():
    cartpole, params = envs.make("CartPole-v1")
    pendulum, pparams = envs.make("Pendulum-v1")
    assert envs.is_discrete(cartpole.action_space(params))
    assert not envs.is_discrete(pendulum.action_space(pparams))
    assert envs.action_shape(cartpole.action_space(params)) == ()
    assert envs.action_shape(pendulum.action_space(pparams)) == (1,)
    assert envs.flat_obs_dim(envs.make("Breakout-MinAtar")[0].observation_space(None)) == 400
    assert envs.flat_obs_dim(spaces.Discrete(16)) == 1
    with pytest.raises(TypeError):
        envs.flat_obs_dim(spaces.Dict({}))


# ----------------------------------------------------------------------------------------------
# Probes


def test_probe_spaces_names_and_params():
    for env_id in PROBE_IDS:
        env, params = envs.make(env_id)
        obs, _ = env.reset(jax.random.key(0), params)
        assert env.name == env_id and obs.dtype == jnp.float32
        space = env.observation_space(params)
        assert obs.shape == space.shape and space.contains(obs)
    assert envs.make("Probe-Truncation-v0")[1].max_steps_in_episode == 5


@pytest.mark.parametrize("env_id", ["Probe-OneStep-v0", "Probe-ObsReward-v0"])
def test_one_step_value_probes(env_id):
    env, params = envs.make(env_id)
    _, _, (_, reward, terminated, truncated, info) = rollout(env, params, constant_actions(0, 32))
    assert np.asarray(terminated).all() and not np.asarray(truncated).any()
    # The episode's observation is the obs of the previous step (reset obs), kept as final obs.
    first_obs = np.asarray(info["final_observation"])[:, 0]
    if env_id == "Probe-OneStep-v0":
        np.testing.assert_array_equal(reward, 1.0)  # V = 1
        np.testing.assert_array_equal(first_obs, 0.0)
    else:
        np.testing.assert_array_equal(reward, first_obs)  # V(obs) = obs
        assert set(np.unique(first_obs)) == {-1.0, 1.0}


def test_discount_probe():
    env, params = envs.make("Probe-Discount-v0")
    obs0, _, (obs, reward, terminated, truncated, _) = rollout(env, params, constant_actions(0, 4))
    # [0] -> [1] (r=0) -> terminal (r=1), reset to [0] -> [1] -> terminal: V([0])=gamma, V([1])=1.
    np.testing.assert_array_equal(obs0, [0.0])
    np.testing.assert_array_equal(np.asarray(obs)[:, 0], [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(reward, [0.0, 1.0, 0.0, 1.0])
    np.testing.assert_array_equal(terminated, [False, True, False, True])
    assert not np.asarray(truncated).any()


def test_action_reward_probe():
    env, params = envs.make("Probe-ActionReward-v0")
    assert env.num_actions == 2 and env.action_space(params).n == 2
    obs, state = env.reset(jax.random.key(0), params)
    bit = int(np.argmax(obs))
    np.testing.assert_array_equal(obs, np.eye(2)[bit])
    right = env.step(jax.random.key(1), state, jnp.int32(bit), params)
    wrong = env.step(jax.random.key(1), state, jnp.int32(1 - bit), params)
    assert float(right[2]) == 1.0 and float(wrong[2]) == -1.0 and bool(right[3]) and bool(wrong[3])
    keys = jax.random.split(jax.random.key(1), 16)
    bits = [int(np.argmax(env.reset(k, params)[0])) for k in keys]
    assert set(bits) == {0, 1}


def test_task_bit_probe_pays_the_task_bit_and_averages_zero_over_tasks():
    env, params = envs.make("Probe-TaskBit-v0")
    assert env.action_space(params).n == 2 and params.bit == 1
    tasks = jax.vmap(env.sample_task, (0, None))(jax.random.split(jax.random.key(0), 256), params)
    bits = np.asarray(tasks.bit)
    assert 0.4 < bits.mean() < 0.6  # a fair bit: 256 draws, 5 standard deviations are 0.16

    def returns(action):
        def one(task, key):
            obs, state = env.reset(key, task)
            _, _, reward, terminated, truncated, _ = env.step(key, state, jnp.int32(action), task)
            return obs, reward, terminated, truncated

        return jax.vmap(one)(tasks, jax.random.split(jax.random.key(1), 256))

    for action in (0, 1):
        obs, reward, terminated, truncated = map(np.asarray, returns(action))
        np.testing.assert_array_equal(obs, 1.0)  # nothing in the observation shows the task
        np.testing.assert_array_equal(reward, np.where(bits == action, 1.0, -1.0))
        assert terminated.all() and not truncated.any()


def test_truncation_probe_is_truncated_never_terminated():
    env, params = envs.make("Probe-Truncation-v0")
    _, _, (_, reward, terminated, truncated, info) = rollout(env, params, constant_actions(0, 10))
    np.testing.assert_array_equal(reward, 1.0)
    assert not np.asarray(terminated).any()
    np.testing.assert_array_equal(np.flatnonzero(truncated), [4, 9])
    np.testing.assert_array_equal(info["discount"], 1.0)


def test_continuous_action_probe():
    env, params = envs.make("Probe-ContinuousAction-v0")
    space = env.action_space(params)
    assert isinstance(space, spaces.Box) and space.shape == (1,)
    obs, state = env.reset(jax.random.key(0), params)
    assert -1.0 <= float(obs[0]) <= 1.0
    best = env.step(jax.random.key(1), state, obs, params)
    off = env.step(jax.random.key(1), state, obs + 0.5, params)
    assert float(best[2]) == 0.0 and np.isclose(float(off[2]), -0.25) and bool(best[3])
