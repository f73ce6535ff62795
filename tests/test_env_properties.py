"""Property tests (hypothesis) of every registered environment and of the training wrapper stack.

For each env id, hypothesis draws the seed and the time limit (``max_steps_in_episode``, small so
that truncation happens within the trajectory) and one jitted function plays T random steps. On
the host we check:

* observations (reset, step and ``final_observation``) lie in the observation space (shape and
  bounds), and the reset state is valid: in the space, ``time == 0``, not terminal;
* ``final_observation`` is the observation ``step_env`` produced before the automatic reset; the
  returned observation is that one where the episode goes on and the reset observation where it
  ended;
* ``truncated`` is exactly "the episode has lasted max_steps_in_episode steps" (counted here on
  the host, independently of the env's clock) and ``terminated`` is the env's own
  ``is_terminal`` of the pre-reset state;
* stepping is deterministic given the key (the same call twice is bit-identical, and re-stepping
  the recorded states one by one under ``vmap`` gives the same transitions);

and for the wrapper stack that training uses (FlattenObservation, ClipAction, EpisodeStatistics,
VecEnv, NormalizeObservation) that it preserves all of it: each member of the batch is the raw env
driven by the same key split, rewards and flags are unchanged, observations and final observations
are the raw ones flattened and normalised with the statistics in the state, and the episode
statistics sum the raw rewards.

MNISTBandit-bsuite is left out: building it downloads MNIST (tests run offline). Three gymnax envs
emit observations outside their own observation space (``OBS_SPACE_BUGS``): for them that one
check is skipped, everything else holds.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments import spaces
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import envs

# BernoulliBandit-uniform-misc is a wrapper (envs.DomainRandomization), not a raw gymnax env with
# step_env/reset_env: its contract is tested in tests/test_meta.py.
ENV_IDS = [i for i in envs.registered_ids() if i not in ("MNISTBandit-bsuite", "BernoulliBandit-uniform-misc")]
# Representatives of every kind of space for the (costlier) wrapper-stack test: discrete/Box
# actions, vector/image/integer/Discrete observations, time-limit-only episodes.
WRAPPER_ENV_IDS = [
    "CartPole-v1",
    "Pendulum-v1",
    "Breakout-MinAtar",
    "FourRooms-misc",
    "FrozenLake-misc",
    "Reacher-misc",
    "Probe-Truncation-v0",
]
# gymnax bugs found by these tests: observations that leave the env's own observation space.
# The in-space check is skipped for them (every other property is still checked).
OBS_SPACE_BUGS = {
    "MemoryChain-bsuite": "the context bits are +-1 but the Box's low is 0",
    "MetaMaze-misc": "the last-reward entry reaches 10 (the goal reward) but the Box's high is 1",
    "GaussianBandit-misc": "the last reward is Gaussian (negative too) and the normalised time is -1 at "
    "reset, but the Box's low is 0",
}
# Envs whose is_terminal ignores the state: every step ends an episode, the reset state included.
ALWAYS_TERMINAL = {"SimpleBandit-bsuite"}
T = 24  # steps per trajectory
NUM_ENVS = 3  # batch of the wrapper stack
EXAMPLES = settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(0, 2**31 - 1)
time_limits = st.one_of(st.integers(1, 9), st.none())  # None: the env's default limit


@pytest.fixture(autouse=True, scope="module")
def allow_rank_promotion():
    """Some gymnax envs (Swimmer-misc) promote ranks implicitly; another test module sets
    jax_numpy_rank_promotion='raise' globally at import, which must not leak in here."""
    with jax.numpy_rank_promotion("allow"):
        yield


def with_limit(params, limit):
    """params with time limit ``limit`` (same dtype as the default: some envs keep float clocks)."""
    if limit is None:
        return params
    return params.replace(max_steps_in_episode=type(params.max_steps_in_episode)(limit))


def has_is_terminal(env, params) -> bool:
    obs, state = env.reset(jax.random.key(0), params)
    try:
        env.is_terminal(state, params)
    except NotImplementedError:
        return False
    return True


# ------------------------------------------------------------------------------------ raw envs


# Cheaper XLA optimisation: these programs run microseconds, compiling them is the cost.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def compile_fast(fn, *example_args):
    """jit ``fn`` and compile it once for arguments shaped like ``example_args``."""
    return jax.jit(fn).lower(*example_args).compile(compiler_options=FAST_COMPILE)


@functools.cache
def raw_program(env_id: str):
    """(env, default params, compiled play(key, params) -> (reset, steps, recomputed))."""
    env, default_params = envs.make(env_id)
    check_terminal = has_is_terminal(env, default_params)

    def play(key, params):
        reset_key, key = jax.random.split(key)
        obs0, state0 = env.reset(reset_key, params)
        space = env.observation_space(params)

        def body(carry, k):
            state, obs = carry
            act_key, step_key = jax.random.split(k)
            action = env.action_space(params).sample(act_key)
            obs2, state2, reward, terminated, truncated, info = env.step(step_key, state, action, params)
            out = dict(
                state=state,
                action=action,
                step_key=jax.random.key_data(step_key),
                obs=obs2,
                final=info["final_observation"],
                reward=reward,
                terminated=terminated,
                truncated=truncated,
                in_space=space.contains(obs2),
                final_in_space=space.contains(info["final_observation"]),
            )
            return (state2, obs2), out

        _, steps = jax.lax.scan(body, (state0, obs0), jax.random.split(key, T))

        # Recompute every step from its recorded (state, action, key), each on its own (vmap): what
        # gymnax's automatic reset is made of, with its key split (also a determinism check).
        def parts(step_key, state, action):
            st_key, re_key = jax.random.split(jax.random.wrap_key_data(step_key))
            obs_st, state_st, reward, _, _ = env.step_env(st_key, state, action, params)
            obs_re, _ = env.reset_env(re_key, params)
            terminal = env.is_terminal(state_st, params) if check_terminal else jnp.bool_(False)
            return dict(obs_st=obs_st, obs_re=obs_re, reward=reward, is_terminal=terminal)

        again = jax.vmap(parts)(steps["step_key"], steps["state"], steps["action"])
        reset = dict(
            obs=obs0,
            state=state0,
            in_space=space.contains(obs0),
            terminal=env.is_terminal(state0, params) if check_terminal else jnp.bool_(False),
        )
        return reset, steps, again

    # Swimmer-misc relies on implicit rank promotion itself; these tests hold nothing else to it.
    with jax.numpy_rank_promotion("allow"):
        compiled = compile_fast(play, jax.random.key(0), default_params)
    return env, default_params, compiled, check_terminal


def close(a, b, what):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-5, atol=1e-5, err_msg=what)


def assert_obs_shape(space, obs, what):
    if isinstance(space, spaces.Discrete):
        assert obs.shape == (), f"{what}: Discrete observation of shape {obs.shape}"
        return
    assert tuple(obs.shape) == tuple(space.shape), f"{what}: shape {obs.shape} != space {space.shape}"


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_raw_env_properties(env_id):
    env, default_params, play, check_terminal = raw_program(env_id)

    @EXAMPLES
    @given(seed=seeds, limit=time_limits)
    def check(seed, limit):
        params = with_limit(default_params, limit)
        max_steps = int(params.max_steps_in_episode)
        key = jax.random.key(seed)
        reset, steps, again = jax.device_get(play(key, params))
        space = env.observation_space(params)

        # reset state is valid
        assert_obs_shape(space, np.asarray(reset["obs"]), "reset")
        assert float(reset["state"].time) == 0
        if env_id not in ALWAYS_TERMINAL:
            assert not bool(reset["terminal"]), "the reset state is already terminal"

        # observations in the space
        assert_obs_shape(space, np.asarray(steps["obs"][0]), "step")
        assert_obs_shape(space, np.asarray(steps["final"][0]), "final")
        if env_id not in OBS_SPACE_BUGS:
            assert bool(reset["in_space"]), f"reset observation {reset['obs']} outside {space}"
            for t in range(T):
                assert bool(steps["in_space"][t]), f"step {t}: obs {steps['obs'][t]} outside {space}"
                assert bool(steps["final_in_space"][t]), f"step {t}: final obs {steps['final'][t]} outside {space}"

        # final_observation is the pre-reset observation; obs is the reset one where an episode ended
        done = np.asarray(steps["terminated"]) | np.asarray(steps["truncated"])
        close(steps["final"], again["obs_st"], "final_observation != step_env's observation")
        expected_obs = np.where(
            done.reshape((T,) + (1,) * (np.ndim(steps["obs"]) - 1)), again["obs_re"], again["obs_st"]
        )
        close(steps["obs"], expected_obs, "obs != reset obs where done, step obs elsewhere")
        close(steps["reward"], again["reward"], "reward differs when the step is recomputed")

        # termination and truncation rules
        if check_terminal:
            np.testing.assert_array_equal(steps["terminated"], again["is_terminal"])
        elapsed = 0
        for t in range(T):
            elapsed += 1
            assert bool(steps["truncated"][t]) == (elapsed >= max_steps), (
                f"step {t}: truncated={steps['truncated'][t]} after {elapsed} steps with limit {max_steps}"
            )
            if done[t]:
                elapsed = 0

        # determinism: the same key gives bit-identical trajectories
        jax.tree.map(np.testing.assert_array_equal, (reset, steps, again), jax.device_get(play(key, params)))

    check()


# ------------------------------------------------------------------------------------ wrapper stack


@functools.cache
def wrapped_program(env_id: str):
    """Both training stacks (plain, normalize_obs) around env_id and the raw env, in one jit.

    Member b of a VecEnv is the raw env driven by key ``split(step_key, NUM_ENVS)[b]``, so the raw
    env is stepped here with those keys (and the clipped actions) for comparison.
    """
    raw, default_params = envs.make(env_id)
    flat = envs.FlattenObservation(raw)
    stacks = {name: envs.vectorize(flat, NUM_ENVS, normalize_obs=name == "normalize_obs") for name in STACKS}
    action_space = raw.action_space(default_params)
    box = isinstance(action_space, spaces.Box)

    def sample_actions(key, params):
        acts = jax.vmap(raw.action_space(params).sample)(jax.random.split(key, NUM_ENVS))
        return acts * 2.0 if box else acts  # outside the box half the time: ClipAction must clip

    def play(key, params):
        reset_key, key = jax.random.split(key)
        resets = {name: stack.reset(reset_key, params) for name, stack in stacks.items()}
        raw_obs0, raw_state0 = jax.vmap(flat.reset, in_axes=(0, None))(jax.random.split(reset_key, NUM_ENVS), params)

        def body(carry, k):
            states, raw_state = carry
            act_key, step_key = jax.random.split(k)
            action = sample_actions(act_key, params)
            raw_action = jnp.clip(action, action_space.low, action_space.high) if box else action
            raw_obs, raw_state, raw_reward, raw_term, raw_trunc, raw_info = jax.vmap(
                flat.step, in_axes=(0, 0, 0, None)
            )(jax.random.split(step_key, NUM_ENVS), raw_state, raw_action, params)
            out = dict(
                raw_obs=raw_obs,
                raw_final=raw_info["final_observation"],
                raw_reward=raw_reward,
                raw_terminated=raw_term,
                raw_truncated=raw_trunc,
            )
            new_states = {}
            for name, stack in stacks.items():
                obs, state, reward, term, trunc, info = stack.step(step_key, states[name], action, params)
                new_states[name] = state
                out[name] = dict(
                    obs=obs,
                    final=info["final_observation"],
                    reward=reward,
                    terminated=term,
                    truncated=trunc,
                    episode_return=info["episode_return"],
                    episode_done=info["episode_done"],
                    mean=getattr(state, "mean", jnp.zeros(())),
                    var=getattr(state, "var", jnp.ones(())),
                )
            return (new_states, raw_state), out

        states0 = {name: state for name, (_, state) in resets.items()}
        _, steps = jax.lax.scan(body, (states0, raw_state0), jax.random.split(key, T))
        return {name: obs for name, (obs, _) in resets.items()} | {"raw_obs": raw_obs0}, steps

    with jax.numpy_rank_promotion("allow"):
        compiled = compile_fast(play, jax.random.key(0), default_params)
    return stacks["plain"], default_params, compiled


STACKS = ("plain", "normalize_obs")
EPSILON, CLIP = 1e-8, 10.0  # NormalizeObservation's defaults, as envs.vectorize uses them


def normalized(x, mean, var):
    return np.clip((np.asarray(x, np.float64) - mean) / np.sqrt(var + EPSILON), -CLIP, CLIP)


@pytest.mark.parametrize("env_id", WRAPPER_ENV_IDS)
def test_wrapper_stack_preserves_env_properties(env_id):
    plain, default_params, play = wrapped_program(env_id)

    @EXAMPLES
    @given(seed=seeds, limit=time_limits)
    def check(seed, limit):
        params = with_limit(default_params, limit)
        reset, steps = jax.device_get(play(jax.random.key(seed), params))
        space = plain.observation_space(params)  # one env's flattened space
        done = np.asarray(steps["raw_terminated"]) | np.asarray(steps["raw_truncated"])

        # the raw env itself: final_observation differs from obs only where an episode ended
        same = np.all(steps["raw_final"] == steps["raw_obs"], axis=-1)
        assert np.all(same[~done]), "final_observation != obs on a step that did not end an episode"

        for name in STACKS:
            out = steps[name]
            assert reset[name].shape == (NUM_ENVS,) + tuple(space.shape)
            # rewards and flags are the raw env's, member by member
            np.testing.assert_array_equal(out["reward"], steps["raw_reward"])
            np.testing.assert_array_equal(out["terminated"], steps["raw_terminated"])
            np.testing.assert_array_equal(out["truncated"], steps["raw_truncated"])
            np.testing.assert_array_equal(out["episode_done"], done)
            # observations: the raw ones (flattened), normalised with the state's statistics
            if name == "normalize_obs":
                mean, var = out["mean"][:, None], out["var"][:, None]  # [T, 1, obs_dim]
                np.testing.assert_allclose(out["obs"], normalized(steps["raw_obs"], mean, var), rtol=1e-4, atol=1e-4)
                np.testing.assert_allclose(
                    out["final"], normalized(steps["raw_final"], mean, var), rtol=1e-4, atol=1e-4
                )
                assert np.all(np.abs(out["obs"]) <= CLIP) and np.all(np.abs(out["final"]) <= CLIP)
            else:
                np.testing.assert_array_equal(reset[name], reset["raw_obs"])
                np.testing.assert_array_equal(out["obs"], steps["raw_obs"])
                np.testing.assert_array_equal(out["final"], steps["raw_final"])
                if env_id not in OBS_SPACE_BUGS:
                    low = np.broadcast_to(space.low, space.shape)
                    high = np.broadcast_to(space.high, space.shape)
                    assert np.all(out["obs"] >= low) and np.all(out["obs"] <= high)
            # episode statistics: the sum of the raw rewards since the last episode end
            running = np.zeros(NUM_ENVS, np.float64)
            for t in range(T):
                running += steps["raw_reward"][t]
                expected = np.where(done[t], running, 0.0)
                np.testing.assert_allclose(out["episode_return"][t], expected, rtol=1e-5, atol=1e-4)
                running[done[t]] = 0.0

    check()
