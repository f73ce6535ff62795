"""Task distributions (envs.meta: DomainRandomization, Trials) and the NumPy bandit references
(rl.host.bandits): parameters per episode, the step contract, trials against the unwrapped env."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from rl.host import bandits


def _fix_cartpole(key, p):
    """CartPole's derived fields follow the drawn masses and length."""
    return p.replace(total_mass=p.masscart + p.masspole, polemass_length=p.masspole * p.length)


def _cartpole_dr(length=(0.2, 1.5)):
    env, params = envs.make("CartPole-v1")
    dr = envs.DomainRandomization(env, {"length": length, "masspole": (0.05, 0.5)}, sample=_fix_cartpole)
    return env, params, dr


def _run(env, params, num_steps, key, action_fn):
    """Step one env num_steps times in a scan; returns per-step (obs, state, reward, term, trunc, info)."""
    obs, state = env.reset(key, params)

    def step(carry, k):
        obs, state = carry
        act_key, step_key = jax.random.split(k)
        out = env.step(step_key, state, action_fn(act_key), params)
        return (out[0], out[1]), (obs, state, *out)

    keys = jax.random.split(jax.random.fold_in(key, 1), num_steps)
    _, outs = jax.jit(lambda ks: jax.lax.scan(step, (obs, state), ks))(keys)
    return outs  # obs_before, state_before, obs_after, state_after, reward, term, trunc, info


# ---------------------------------------------------------------- DomainRandomization


def test_params_fixed_within_episode_and_new_each_episode():
    env, params, dr = _cartpole_dr()
    _, before, _, after, _, term, trunc, _ = _run(
        dr, params, 400, jax.random.key(0), lambda k: jax.random.bernoulli(k).astype(jnp.int32)
    )
    length = np.asarray(before.params.length)
    done = np.asarray(term | trunc)
    assert done.sum() >= 10  # random actions: CartPole episodes last ~20 steps
    episode = np.concatenate([[0], np.cumsum(done)[:-1]])
    per_episode = [np.unique(length[episode == e]) for e in range(done.sum())]
    # Wrong answer 1: a draw every step (several values in one episode).
    assert all(len(v) == 1 for v in per_episode)
    # Wrong answer 2: one draw for the whole run (the same value in every episode).
    values = np.array([v[0] for v in per_episode])
    assert np.all(values[1:] != values[:-1])
    assert values.min() >= 0.2 and values.max() <= 1.5
    # the sampling function ran after the ranges: derived fields follow the drawn ones
    np.testing.assert_allclose(before.params.polemass_length, before.params.masspole * before.params.length, rtol=1e-6)
    np.testing.assert_allclose(before.params.total_mass, before.params.masscart + before.params.masspole, rtol=1e-6)


def test_physics_uses_drawn_params_and_final_observation_is_the_old_episodes():
    env, params, dr = _cartpole_dr(length=(1.0, 1.5))  # twice the default 0.5 or more
    _, before, obs_after, after, _, term, trunc, info = _run(dr, params, 200, jax.random.key(3), lambda k: jnp.int32(1))
    t = 5  # a step inside the first episode (always pushing right ends it after ~10 steps)
    s = jax.tree.map(lambda x: x[t], before)
    step_key = jax.random.split(jax.random.split(jax.random.fold_in(jax.random.key(3), 1), 200)[t])[1]
    inner_key = jax.random.split(step_key, 3)[0]
    drawn_obs = env.step(inner_key, s.env_state, 1, s.params)[0]
    default_obs = env.step(inner_key, s.env_state, 1, params)[0]
    np.testing.assert_allclose(obs_after[t], drawn_obs, rtol=1e-6)
    # the drawn pole (length != 0.5) accelerates differently from the default one: theta_dot differs
    assert abs(float(drawn_obs[3] - default_obs[3])) > 1e-3
    # at the first episode end: final_observation from the old params, next obs from a reset
    end = int(np.argmax(np.asarray(term | trunc)))
    s_end = jax.tree.map(lambda x: x[end], before)
    end_key = jax.random.split(
        jax.random.split(jax.random.split(jax.random.fold_in(jax.random.key(3), 1), 200)[end])[1], 3
    )
    old = env.step(end_key[0], s_end.env_state, 1, s_end.params)
    np.testing.assert_allclose(info["final_observation"][end], old[5]["final_observation"], rtol=1e-6)
    new_params = jax.tree.map(lambda x: x[end], after.params)
    assert float(new_params.length) != float(s_end.params.length)
    np.testing.assert_allclose(obs_after[end], env.reset(end_key[2], new_params)[0], rtol=1e-6)
    assert np.all(np.abs(obs_after[end]) <= 0.05)  # CartPole's reset draws in [-0.05, 0.05]


def test_vectorized_envs_draw_their_own_params():
    _, params, dr = _cartpole_dr()
    venv = envs.vectorize(dr, 8)
    _, state = venv.reset(jax.random.key(0), params)
    lengths = np.asarray(state.env_state.params.length)
    assert lengths.shape == (8,) and len(np.unique(lengths)) == 8


def test_integer_field_drawn_inclusive():
    env, params = envs.make("CartPole-v1")
    dr = envs.DomainRandomization(env, {"max_steps_in_episode": (3, 5)})
    drawn = jax.vmap(lambda k: dr.draw(k, params).max_steps_in_episode)(jax.random.split(jax.random.key(0), 200))
    assert drawn.dtype == jnp.int32 and set(np.asarray(drawn).tolist()) == {3, 4, 5}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"ranges": {"lenght": (0.1, 1.0)}},
            "unknown parameter field 'lenght'.*known fields: max_steps_in_episode, gravity",
        ),
        ({"ranges": {"length": (1.0, 0.1)}}, "low <= high"),
        ({"ranges": {"length": (0.1, float("nan"))}}, "low <= high"),
        ({"ranges": {"length": 0.5}}, r"must be \(low, high\)"),
        ({}, "needs ranges"),
        ({"sample": 3}, "must be a function"),
    ],
)
def test_domain_randomization_bad_input(kwargs, message):
    env, _ = envs.make("CartPole-v1")
    with pytest.raises(ValueError, match=message):
        envs.DomainRandomization(env, **kwargs)


def test_boolean_field_rejected():
    env, _ = envs.make("BernoulliBandit-misc")
    with pytest.raises(ValueError, match="'normalize_time' is boolean"):
        envs.DomainRandomization(env, {"normalize_time": (0, 1)})


# ---------------------------------------------------------------- Trials


def _bandit(max_steps=5.0):
    env, params = envs.make("BernoulliBandit-misc")
    return env, params.replace(max_steps_in_episode=max_steps)


def test_trials_match_the_unwrapped_env_with_the_same_keys():
    env, params = _bandit()
    K, L, steps = 3, 5, 40  # 3 episodes of 5 pulls per trial
    trials = envs.Trials(env, K)
    key = jax.random.key(7)
    obs, state = trials.reset(key, params)
    ref_obs, ref_state = env.reset(key, params)
    trial_key, episode = key, 0
    np.testing.assert_array_equal(obs, np.concatenate([ref_obs, np.zeros(4)]))  # nothing before a trial
    step = jax.jit(trials.step)
    rng = np.random.default_rng(0)
    ends = []
    for i in range(steps):
        a = int(rng.integers(2))
        k = jax.random.key(100 + i)
        obs, state, r, term, trunc, info = step(k, state, a, params)
        step_key, new_trial_key = jax.random.split(k)
        o, ref_state, rr, rterm, rtrunc, rinfo = env.step(step_key, ref_state, a, params)
        assert float(r) == float(rr)
        done = bool(rterm | rtrunc)
        episode += done
        np.testing.assert_array_equal(
            info["final_observation"], np.concatenate([rinfo["final_observation"], np.eye(2)[a], [rr, done]])
        )
        if done and episode == K:  # trial end: a new task from a fresh key, blank extras
            ref_obs, ref_state = env.reset(new_trial_key, params)
            trial_key, episode = new_trial_key, 0
            expected = np.concatenate([ref_obs, np.zeros(4)])
        elif done:  # next inner episode: the trial's own reset (same task, same start)
            ref_obs, ref_state = env.reset(trial_key, params)
            expected = np.concatenate([ref_obs, np.eye(2)[a], [rr, 1.0]])
        else:
            expected = np.concatenate([o, np.eye(2)[a], [rr, 0.0]])
        np.testing.assert_array_equal(obs, expected)
        np.testing.assert_array_equal(state.env_state.reward_probs, ref_state.reward_probs)
        # the bandit's episodes end by truncation: so does the trial, and only the trial
        assert bool(trunc) == (done and episode == 0) and not bool(term)
        assert bool(info["inner_truncated"]) == done
        ends.append(bool(trunc))
    assert np.flatnonzero(ends).tolist() == [K * L - 1, 2 * K * L - 1]


def test_trials_keep_the_task_for_k_episodes_and_change_it_between_trials():
    env, params = _bandit(4.0)
    K, L = 3, 4
    trials = envs.vectorize(envs.Trials(env, K), 16)
    _, before, _, _, _, term, trunc, info = _run(
        trials, params, 5 * K * L, jax.random.key(1), lambda k: jnp.zeros(16, jnp.int32)
    )
    probs = np.asarray(before.env_state.env_state.reward_probs[..., 0])  # [T, 16]: p of arm 0
    trial_probs = probs.reshape(5, K * L, 16)
    assert np.all(trial_probs == trial_probs[:, :1])  # fixed within each trial of K episodes
    # changes between trials (gymnax draws p from {0.1, 0.9}: some of the 4 * 16 trial starts must differ)
    assert np.any(trial_probs[1:, 0] != trial_probs[:-1, 0])
    assert np.asarray(trunc).sum() == 5 * 16 and np.asarray(info["inner_truncated"]).sum() == 5 * K * 16


def test_trial_end_follows_the_last_inner_episode_or_terminates():
    env, params = envs.make("CartPole-v1")  # episodes end by termination (pole falls)
    for terminate_trials in (False, True):
        trials = envs.Trials(env, 2, terminate_trials=terminate_trials)
        *_, term, trunc, info = _run(trials, params, 300, jax.random.key(0), lambda k: jnp.int32(1))
        inner_ends = np.flatnonzero(np.asarray(info["inner_terminated"]))
        assert np.flatnonzero(np.asarray(term)).tolist() == inner_ends[1::2].tolist()
        assert not np.asarray(trunc).any()
    bandit, bparams = _bandit(3.0)
    *_, term, trunc, _ = _run(
        envs.Trials(bandit, 2, terminate_trials=True), bparams, 12, jax.random.key(0), lambda k: 0
    )
    assert np.flatnonzero(np.asarray(term)).tolist() == [5, 11] and not np.asarray(trunc).any()


def test_trials_around_domain_randomization_keep_params_and_start():
    env, params, dr = _cartpole_dr()
    trials = envs.Trials(dr, 3)
    obs_before, before, _, _, _, term, trunc, info = _run(
        trials, params, 400, jax.random.key(2), lambda k: jax.random.bernoulli(k).astype(jnp.int32)
    )
    length = np.asarray(before.env_state.params.length)
    inner_done = np.asarray(info["inner_terminated"] | info["inner_truncated"])
    trial_done = np.asarray(term | trunc)
    trial = np.concatenate([[0], np.cumsum(trial_done)[:-1]])
    assert trial_done.sum() >= 3
    for t in range(trial_done.sum()):
        assert len(np.unique(length[trial == t])) == 1
    assert len(np.unique(length[: np.flatnonzero(trial_done)[2] + 1])) == 3  # three trials, three draws
    starts = np.flatnonzero(inner_done[:-1] & ~trial_done[:-1]) + 1  # first steps of inner episodes 2, 3
    trial_starts = np.concatenate([[0], np.flatnonzero(trial_done[:-1]) + 1])
    # each inner episode restarts from its trial's reset: the trial's first observation again
    np.testing.assert_array_equal(obs_before[starts, :4], obs_before[trial_starts[trial[starts]], :4])
    assert np.all(obs_before[starts, 4 + 2 + 1] == 1.0)  # the episode-end flag is raised


def test_trials_keep_the_arm_order_of_a_randomized_bandit():
    """BernoulliBandit-uniform-misc draws reward_prob (DomainRandomization) and then, at reset, which
    arm gets it: a trial must keep both. Wrong answer: the arms swap between inner episodes of a
    trial (a restart that kept the parameters but drew a fresh reset)."""
    env, params = envs.make("BernoulliBandit-uniform-misc")
    params = params.replace(max_steps_in_episode=2.0)
    trials = envs.vectorize(envs.Trials(env, 4), 32)
    _, before, *_ = _run(trials, params, 24, jax.random.key(5), lambda k: jnp.zeros(32, jnp.int32))
    probs = np.asarray(before.env_state.env_state.env_state.reward_probs[..., 0]).reshape(3, 8, 32)
    assert np.all(probs == probs[:, :1])
    assert len(np.unique(probs)) == 3 * 32  # p ~ U(0, 1): a new task every trial in every env


def test_metamaze_goal_kept_within_trial():
    env, params = envs.make("MetaMaze-misc")
    params = params.replace(max_steps_in_episode=10)
    trials = envs.Trials(env, 3)
    _, before, *_ = _run(trials, params, 60, jax.random.key(4), lambda k: jax.random.randint(k, (), 0, 4))
    goals = np.asarray(before.env_state.goal).reshape(2, 30, 2)
    assert np.all(goals == goals[:, :1])


def test_trials_observation_space_and_bad_input():
    env, params = _bandit()
    trials = envs.Trials(env, 2)
    space = trials.observation_space(params)
    obs, _ = trials.reset(jax.random.key(0), params)
    assert space.shape == obs.shape == (4 + 2 + 2,)
    assert bool(space.contains(obs))
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="episodes_per_trial must be a positive integer"):
            envs.Trials(env, bad)


# ---------------------------------------------------------------- NumPy bandit references


def _tasks(n=400, seed=0):
    p = np.random.default_rng(seed).random(n)
    return np.stack([p, 1 - p], axis=1)


def test_regret_bookkeeping():
    probs = np.array([[0.2, 0.7], [0.9, 0.4]])
    # pulls (0, 1, 0) on task 0 lose 0.5, 0, 0.5; (0, 0, 1) on task 1 lose 0, 0, 0.5
    np.testing.assert_allclose(
        bandits.cumulative_regret(probs, np.array([[0, 1, 0], [0, 0, 1]])), [[0.5, 0.5, 1.0], [0.0, 0.0, 0.5]]
    )
    np.testing.assert_array_equal(bandits.regret("oracle", _tasks(), 100), 0.0)
    with pytest.raises(ValueError, match="unknown bandit policy 'thomson'"):
        bandits.regret("thomson", probs, 10)
    with pytest.raises(ValueError, match="lie in"):
        bandits.regret("ucb1", np.array([[0.5, 1.5]]), 10)


def test_uniform_regret_is_half_the_gap_per_pull():
    probs = _tasks()
    # E[R_T] = T * mean(max p - mean p) = T * mean(|2p - 1| / 2) = T / 4 for p ~ U(0, 1)
    r = bandits.regret("uniform", probs, 100, seed=1)
    expected = 100 * np.mean(probs.max(1) - probs.mean(1))
    assert abs(r.mean() - expected) < 0.1 * expected


def test_ucb1_regret_grows_logarithmically():
    gap = 0.3
    probs = np.tile([[0.3, 0.3 + gap]], (200, 1))
    r1000, r10000 = (bandits.regret("ucb1", probs, t, seed=0).mean() for t in (1000, 10000))
    # log growth: a decade of pulls adds about as much regret as the previous ones did (ratio
    # ln 10^4 / ln 10^3 = 1.33 asymptotically, measured ~2 after the burn-in); linear growth (a
    # policy that never settles) gives ratio 10. Threshold in between, on the log scale: sqrt(10).
    assert r1000 < r10000 < np.sqrt(10) * r1000
    # and below Auer et al.'s (2002) Theorem 1 bound: 8 ln T / gap + (1 + pi^2 / 3) gap
    assert r10000 < 8 * np.log(10000) / gap + (1 + np.pi**2 / 3) * gap


def test_thompson_beats_ucb1_and_random():
    probs = _tasks()
    ts, ucb, rnd = (bandits.regret(p, probs, 100, seed=2).mean() for p in ("thompson", "ucb1", "uniform"))
    # measured ~2.7, ~6, ~25: Thompson far below random (half the gap: < 12.5) and below UCB1
    assert ts < rnd / 2 and ts < ucb
