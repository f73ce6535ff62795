"""Adapters of other suites (envs.suites) against the suites themselves.

Each adapter test drives the adapter and the suite's own loop (with the suite's own automatic
reset wrapper) from the same reset key and the same actions, across several episode ends including
time limits, and asserts: the same observations (after the automatic reset), rewards and episode
ends; `info["final_observation"]` equal to the observation the suite's reset replaced; and the
suite's own rule for termination vs truncation (each adapter module's docstring). Episodes cut by
the time limit must be exactly `limit` steps long, and every test sees both kinds of ending where
the suite can produce both within a short run.

A suite that is not installed skips its tests with the extra to install; the error a user gets
then is tested by hiding the suite's package.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import suites


@pytest.fixture(autouse=True)
def suites_allow_rank_promotion():
    """The suites' own code (navix, Jumanji, ...) relies on implicit rank promotion; ours runs inside it."""
    with jax.numpy_rank_promotion("allow"):
        yield


def need(suite: str):
    """Skip unless `suite` is installed, saying which extra installs it."""
    extra = suites.SUITES[suite].extra
    return pytest.importorskip(
        suites.SUITES[suite].package,
        reason=f'the {suite} suite is not installed (optional extra: pip install -e ".[{extra}]")',
    )


# ----------------------------------------------------------------------------------------------
# Helpers


def flat(raw_obs) -> np.ndarray:
    """A suite's observation as the adapter flattens it, written independently: NumPy, leaf order."""
    return np.concatenate([np.asarray(leaf, np.float32).reshape(-1) for leaf in jax.tree.leaves(raw_obs)])


def flat_steps(raw_obs) -> np.ndarray:
    """`flat` for a [T, ...] stack of observations -> [T, features]."""
    leaves = jax.tree.leaves(raw_obs)
    steps = leaves[0].shape[0]
    return np.concatenate([np.asarray(leaf, np.float32).reshape(steps, -1) for leaf in leaves], axis=1)


def drive(env, params, key, actions, prepare=lambda state: state):
    """Reset from `key`, `prepare` the state, step with `actions[t]`; obs0 and per-step outputs on T."""

    @jax.jit
    def run(key, actions):
        obs0, state = env.reset(key, params)
        state = prepare(state)

        def body(state, inputs):
            step_key, action = inputs
            obs, state, reward, terminated, truncated, info = env.step(step_key, state, action, params)
            out = {
                "obs": obs,
                "reward": reward,
                "terminated": terminated,
                "truncated": truncated,
                "final": info["final_observation"],
            }
            return state, out

        keys = jax.random.split(jax.random.fold_in(key, 1), actions.shape[0])
        return obs0, jax.lax.scan(body, state, (keys, actions))[1]

    obs0, out = run(key, actions)
    return np.asarray(obs0), jax.tree.map(np.asarray, out)


def episodes(terminated: np.ndarray, truncated: np.ndarray) -> list[tuple[int, str]]:
    """(length, "terminated" / "truncated") of every episode that ended, counted step by step."""
    ended, length = [], 0
    for term, trunc in zip(terminated, truncated):
        length += 1
        if term or trunc:
            ended.append((length, "terminated" if term else "truncated"))
            length = 0
    return ended


def assert_same_run(ours: dict, theirs: dict, obs0: np.ndarray, their_obs0: np.ndarray, *, exact: bool = True):
    """Same first obs, obs after each step, rewards, terminated, truncated and final observations."""
    check = (
        np.testing.assert_array_equal
        if exact
        else (lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5))
    )
    check(obs0, their_obs0)
    check(ours["obs"], theirs["obs"])
    check(ours["final"], theirs["final"])
    check(ours["reward"], theirs["reward"])
    np.testing.assert_array_equal(ours["terminated"], theirs["terminated"])
    np.testing.assert_array_equal(ours["truncated"], theirs["truncated"])


def assert_time_limit(ours: dict, limit: int, *, both: bool = True):
    """Truncated episodes last exactly `limit` steps, others at most that; both kinds occur."""
    ended = episodes(ours["terminated"], ours["truncated"])
    kinds = {kind for _, kind in ended}
    assert all(n == limit for n, kind in ended if kind == "truncated"), ended
    assert all(n <= limit for n, _ in ended), ended
    assert "truncated" in kinds, ended
    if both:
        assert "terminated" in kinds, ended
    # Where the episode did not end, the next observation is the one the step reached.
    going_on = ~(ours["terminated"] | ours["truncated"])
    np.testing.assert_array_equal(ours["obs"][going_on], ours["final"][going_on])


def random_actions(key, num_steps: int, num_actions: int) -> jax.Array:
    return jax.random.randint(key, (num_steps,), 0, num_actions, jnp.int32)


def assert_spaces(env, params, obs0: np.ndarray, ours: dict):
    space = env.observation_space(params)
    assert obs0.shape == tuple(space.shape) and obs0.dtype == np.float32
    assert ours["obs"].shape[1:] == tuple(space.shape)
    assert bool(space.contains(jnp.asarray(ours["obs"]))) and bool(space.contains(jnp.asarray(ours["final"])))
    assert ours["reward"].dtype == np.float32
    assert ours["terminated"].dtype == np.bool_ and ours["truncated"].dtype == np.bool_


# ----------------------------------------------------------------------------------------------
# navix


def test_navix_matches_navix_with_its_lazy_reset():
    navix = need("navix")
    limit, steps = 6, 60
    env, params = envs.make("navix/Navix-Empty-5x5-v0", max_steps=limit)
    assert params.max_steps_in_episode == limit and env.name == "navix/Navix-Empty-5x5-v0"
    key = jax.random.key(3)
    # Mostly "forward" (2) with some turns, so that the goal is reached before the time limit at times.
    actions = jnp.where(jax.random.bernoulli(key, 0.6, (steps,)), 2, random_actions(jax.random.key(4), steps, 2))
    obs0, ours = drive(env, params, key, actions)

    suite_env = navix.make("Navix-Empty-5x5-v0", max_steps=limit)

    @jax.jit
    def theirs(key, actions):
        first = suite_env.reset(key)

        def body(timestep, action):
            reached = suite_env.step(timestep, action)
            # navix's own reset: the step after an episode end returns env.reset(...) whatever the action.
            following = jax.lax.cond(reached.step_type > 0, lambda t: suite_env.step(t, action), lambda t: t, reached)
            return following, {
                "obs": following.observation,
                "reward": reached.reward,
                "terminated": reached.step_type == 2,
                "truncated": reached.step_type == 1,
                "final": reached.observation,
            }

        return first.observation, jax.lax.scan(body, first, actions)[1]

    their_obs0, their_out = theirs(key, actions)
    their_out = {k: flat_steps(v) if k in ("obs", "final") else np.asarray(v) for k, v in their_out.items()}
    assert_same_run(ours, their_out, obs0, flat(their_obs0))
    assert_time_limit(ours, limit)
    assert_spaces(env, params, obs0, ours)


def test_navix_keeps_the_grid_shape_on_request_and_rejects_another_time_limit():
    need("navix")
    env, params = envs.make("navix/Navix-Empty-5x5-v0", flatten=False)
    assert env.observation_space(params).shape == (5, 5, 3)
    obs, _ = env.reset(jax.random.key(0), params)
    assert obs.shape == (5, 5, 3) and obs.dtype == jnp.float32
    with pytest.raises(ValueError, match=r"fixes its time limit.*envs.make\('navix/Navix-Empty-5x5-v0', max_steps=7\)"):
        env.reset(jax.random.key(0), params.replace(max_steps_in_episode=7))


def test_navix_unknown_name_suggests_the_closest():
    need("navix")
    with pytest.raises(
        ValueError, match=r"unknown env id 'navix/Navix-Empty-5x5-v1'; did you mean: navix/Navix-Empty-5x5-v0"
    ):
        envs.make("navix/Navix-Empty-5x5-v1")


# ----------------------------------------------------------------------------------------------
# Jumanji


def test_jumanji_matches_jumanji_auto_reset_wrapper():
    jumanji = need("jumanji")
    from jumanji.wrappers import AutoResetWrapper

    limit, steps = 10, 80
    env, params = envs.make("jumanji/Snake-v1", time_limit=limit)
    assert params.max_steps_in_episode == limit
    key = jax.random.key(0)
    actions = random_actions(jax.random.key(1), steps, 4)
    obs0, ours = drive(env, params, key, actions)

    wrapped = AutoResetWrapper(jumanji.make("Snake-v1", time_limit=limit), next_obs_in_extras=True)

    @jax.jit
    def theirs(key, actions):
        state, first = wrapped.reset(key)

        def body(state, action):
            state, timestep = wrapped.step(state, action)
            final = timestep.extras["next_obs"]  # the observation AutoResetWrapper replaced
            last = timestep.last()
            # Snake ends at its time limit with `termination` (discount 0); its step counter says why.
            time_up = final.step_count >= limit
            return state, {
                "obs": timestep.observation,
                "reward": timestep.reward,
                "final": final,
                "terminated": last & (timestep.discount == 0) & ~time_up,
                "truncated": last & ((timestep.discount > 0) | time_up),
            }

        return first.observation, jax.lax.scan(body, state, actions)[1]

    their_obs0, their_out = theirs(key, actions)
    their_out = {k: flat_steps(v) if k in ("obs", "final") else np.asarray(v) for k, v in their_out.items()}
    assert_same_run(ours, their_out, obs0, flat(their_obs0))
    assert_time_limit(ours, limit)
    assert_spaces(env, params, obs0, ours)


def test_jumanji_obs_key_keeps_one_field_as_an_image():
    need("jumanji")
    env, params = envs.make("jumanji/Snake-v1", obs_key="grid", flatten=False)
    assert env.observation_space(params).shape == (12, 12, 5)
    with pytest.raises(ValueError, match=r"obs_key 'board' is not a field.*'grid'"):
        envs.make("jumanji/Snake-v1", obs_key="board")[0].reset(jax.random.key(0))
    with pytest.raises(ValueError, match="flatten=False keeps one array, but the observation has 3 fields"):
        envs.make("jumanji/Snake-v1", flatten=False)[0].reset(jax.random.key(0))


def test_jumanji_multi_discrete_actions_are_one_joint_index():
    jumanji = need("jumanji")
    env, params = envs.make("jumanji/Minesweeper-v0")
    suite_env = jumanji.make("Minesweeper-v0")
    rows, cols = (int(n) for n in suite_env.action_spec.num_values)
    assert env.action_space(params).n == rows * cols
    key = jax.random.key(0)
    _, state = env.reset(key, params)
    suite_state, _ = suite_env.reset(key)
    joint = 2 * cols + 3  # row 2, column 3 in C order
    obs, *_ = env.step(key, state, jnp.int32(joint), params)
    _, timestep = suite_env.step(suite_state, jnp.array([2, 3], jnp.int32))
    np.testing.assert_array_equal(obs, flat(timestep.observation))


# ----------------------------------------------------------------------------------------------
# XLand-MiniGrid


def test_xminigrid_matches_its_gym_auto_reset_wrapper():
    xminigrid = need("xminigrid")
    from xminigrid.wrappers import GymAutoResetWrapper

    limit = 6
    env, params = envs.make("xminigrid/MiniGrid-Empty-5x5", max_steps=limit)
    assert params.max_steps_in_episode == limit
    key = jax.random.key(0)
    # The agent starts at (1, 1) facing east, the goal is at (3, 3): forward, forward, turn right
    # (1), forward, forward reaches it in 5 steps; then 6 turns run into the time limit; five times.
    to_goal, turning = [0, 0, 1, 0, 0], [1, 2, 1, 2, 1, 2]
    actions = jnp.asarray((to_goal + turning) * 5, jnp.int32)
    obs0, ours = drive(env, params, key, actions)

    suite_env, suite_params = xminigrid.make("MiniGrid-Empty-5x5", max_steps=limit)
    wrapped = GymAutoResetWrapper(suite_env)

    @jax.jit
    def theirs(key, actions):
        first = wrapped.reset(suite_params, key)

        def body(timestep, action):
            reached = suite_env.step(suite_params, timestep, action)  # the step before the wrapper's reset
            timestep = wrapped.step(suite_params, timestep, action)
            return timestep, {
                "obs": timestep.observation,
                "reward": timestep.reward,
                "final": reached.observation,
                "terminated": timestep.last() & (timestep.discount == 0),
                "truncated": reached.state.step_num == limit,
            }

        return first.observation, jax.lax.scan(body, first, actions)[1]

    their_obs0, their_out = theirs(key, actions)
    their_out = {k: flat_steps(v) if k in ("obs", "final") else np.asarray(v) for k, v in their_out.items()}
    assert_same_run(ours, their_out, obs0, flat(their_obs0))
    assert_time_limit(ours, limit)
    assert_spaces(env, params, obs0, ours)


def test_xminigrid_time_limit_in_params_is_used():
    need("xminigrid")
    env, params = envs.make("xminigrid/MiniGrid-Empty-8x8")
    params = params.replace(max_steps_in_episode=4)
    _, ours = drive(env, params, jax.random.key(0), jnp.full((12,), 1, jnp.int32))  # turning right: never done
    np.testing.assert_array_equal(ours["truncated"], np.arange(1, 13) % 4 == 0)
    assert not ours["terminated"].any()


def test_xland_ruleset_default_and_view():
    need("xminigrid")
    env, params = envs.make("xminigrid/XLand-MiniGrid-R1-9x9")
    view = params.suite_params.view_size
    assert env.observation_space(params).shape == (view * view * 2,)
    assert env.action_space(params).n == 6


# ----------------------------------------------------------------------------------------------
# Craftax


def test_craftax_classic_matches_its_auto_reset_env():
    need("craftax")
    from craftax.craftax_env import make_craftax_env_from_name

    name, limit, steps = "Craftax-Classic-Symbolic-v1", 5, 12
    env, params = envs.make(f"craftax/{name}", max_timesteps=limit)
    assert params.max_steps_in_episode == limit
    key = jax.random.key(0)
    actions = random_actions(jax.random.key(1), steps, 17)

    def dying(state):  # the first episode ends by death at its first step; random play then lives on
        return state.replace(player_health=jnp.full_like(state.player_health, -5))

    obs0, ours = drive(env, params, key, actions, prepare=dying)

    auto = make_craftax_env_from_name(name, auto_reset=True)
    plain = make_craftax_env_from_name(name, auto_reset=False)
    suite_params = auto.default_params.replace(max_timesteps=limit)

    @jax.jit
    def theirs(key, actions):
        first_obs, state = auto.reset(key, suite_params)

        def body(state, inputs):
            step_key, action = inputs
            # the step before the reset: AutoReset's step steps with the first half of the split key
            final, reached, *_ = plain.step(jax.random.split(step_key)[0], state, action, suite_params)
            obs, state, reward, done, _ = auto.step(step_key, state, action, suite_params)
            return state, {
                "obs": obs,
                "reward": reward,
                "final": final,
                "done": done,
                "time_up": reached.timestep >= limit,
            }

        keys = jax.random.split(jax.random.fold_in(key, 1), actions.shape[0])
        return first_obs, jax.lax.scan(body, dying(state), (keys, actions))[1]

    their_obs0, their_out = jax.tree.map(np.asarray, theirs(key, actions))
    their_out["truncated"] = their_out["time_up"]
    # Craftax's done mixes the time limit with death; what is left once the time limit is taken out:
    their_out["terminated"] = their_out["done"] & ~their_out["time_up"]
    # to 1e-5, not bit for bit: the two are different XLA programs, and one of Craftax's float
    # observations differed in its last bit when compiled at XLA -O0 (the suite's setting, conftest)
    assert_same_run(ours, their_out, obs0, their_obs0, exact=False)
    assert_time_limit(ours, limit)
    assert episodes(ours["terminated"], ours["truncated"])[0] == (1, "terminated")
    assert_spaces(env, params, obs0, ours)


def test_craftax_symbolic_spaces():
    need("craftax")
    env, params = envs.make("craftax/Craftax-Symbolic-v1")
    assert params.max_steps_in_episode == 100_000
    assert env.observation_space(params).shape == (8268,) and env.action_space(params).n == 43


# ----------------------------------------------------------------------------------------------
# Brax


@pytest.mark.filterwarnings("ignore:Brax System:UserWarning")  # "not actively maintained", said at every build
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # brax's own use of mujoco's Data fields
@pytest.mark.parametrize("backend", ["generalized", "mjx"])
def test_brax_matches_brax_training_wrappers(backend):
    need("brax")
    from brax import envs as brax_envs

    name, limit, steps = "inverted_pendulum", 8, 40
    env, params = envs.make(f"brax/{name}", episode_length=limit, backend=backend)
    assert params.max_steps_in_episode == limit
    key = jax.random.key(0)
    actions = jax.random.uniform(jax.random.key(1), (steps, 1), minval=-1.0, maxval=1.0)
    obs0, ours = drive(env, params, key, actions)

    wrapped = brax_envs.create(name, episode_length=limit, auto_reset=True, backend=backend)
    plain = brax_envs.get_environment(name, backend=backend)

    @jax.jit
    def theirs(key, actions):
        first = wrapped.reset(key)

        def body(state, action):
            final = plain.step(state, action).obs  # the physics step before AutoResetWrapper's reset
            state = wrapped.step(state, action)
            truncated = state.info["truncation"] > 0
            return state, {
                "obs": state.obs,
                "reward": state.reward,
                "final": final,
                "terminated": (state.done > 0) & ~truncated,
                "truncated": truncated,
            }

        return first.obs, jax.lax.scan(body, first, actions)[1]

    their_obs0, their_out = jax.tree.map(np.asarray, theirs(key, actions))
    assert_same_run(ours, their_out, obs0, their_obs0, exact=False)
    assert_time_limit(ours, limit)
    assert_spaces(env, params, obs0, ours)


# ----------------------------------------------------------------------------------------------
# Registry: missing extras, unknown prefixes, env objects, agents


@pytest.mark.parametrize(
    "env_id",
    [
        "brax/ant",
        "craftax/Craftax-Symbolic-v1",
        "jumanji/Snake-v1",
        "navix/Navix-Empty-5x5-v0",
        "xminigrid/XLand-MiniGrid-R1-9x9",
    ],
)
def test_missing_suite_is_one_error_naming_the_extra(monkeypatch, env_id):
    suite = env_id.split("/")[0]
    monkeypatch.setitem(sys.modules, suites.SUITES[suite].package, None)  # import now fails
    with pytest.raises(envs.SuiteNotInstalledError) as caught:
        envs.make(env_id)
    message = str(caught.value)
    assert f"needs the {suite} suite, which is not installed" in message
    assert f'pip install -e ".[{suite}]"' in message
    assert isinstance(caught.value, envs.EnvUnavailableError) and caught.value.extra == suite
    assert not suites.installed(suite)


@pytest.mark.parametrize(
    "example",
    [
        "brax/ant",
        "craftax/Craftax-Symbolic-v1",
        "jumanji/Snake-v1",
        "navix/Navix-Empty-5x5-v0",
        "xminigrid/XLand-MiniGrid-R1-9x9",
    ],
)
def test_suite_ids_are_listed_with_their_prefix(example):
    suite = example.split("/")[0]
    need(suite)
    assert suites.installed(suite) and example in suites.ids(suite)


def test_unknown_prefix_names_the_suites():
    with pytest.raises(ValueError, match=r"'Navix' is not a suite prefix; did you mean navix/\.\.\.\?"):
        envs.make("Navix/Navix-Empty-5x5-v0")
    with pytest.raises(ValueError, match=r"suite prefixes are brax/, craftax/, jumanji/, navix/, xminigrid/"):
        envs.make("gym/CartPole-v1")


def test_unknown_plain_id_mentions_the_suites():
    with pytest.raises(ValueError, match=r"another suite's env: brax/\.\.\."):
        envs.make("Snake-v1")


def test_an_env_object_is_accepted_where_an_id_is():
    env, params = envs.make("CartPole-v1")
    assert envs.make(env) == (env, params)
    with pytest.raises(ValueError, match="an env object takes no arguments"):
        envs.make(env, max_steps=3)


def test_ppo_trains_on_a_suite_env():
    need("navix")
    import rl
    from agents import ppo

    env, params = envs.make("navix/Navix-Empty-5x5-v0", max_steps=6)  # every update sees episode ends
    config = ppo.Config(num_envs=4, num_steps=8, num_minibatches=2, update_epochs=1, total_timesteps=4 * 8 * 2)
    result = rl.train(ppo.make(config, env, params), ppo.Hyper(), seeds=[0])
    assert result.num_updates == 2
    assert (result.metrics["episodes"] >= 4).all() and np.isfinite(result.metrics["episode_return"]).all()
