"""The probe matrix: every agent entry x every probe environment, each with its analytic answer.

A new agent is one ``Entry``: the agent's name, config and hyper at probe scale, and how to read
its value at an observation. The probes (envs/probes.py) and their tolerances are shared; every
tolerance is half the gap between the right answer and a named wrong one. What an agent must get
right beyond the matrix (DQN's n-step sequences across a time limit, the Q-values of the
action-reward probe, the continuous-action probe of the actor-critics) stays in its own test file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import agents
import envs
import rl

pytestmark = pytest.mark.usefixtures("haiku_init_allows_rank_promotion")


def _actor_critic_value(module, config, env, env_params):
    net = module.network(config, env.action_space(env_params))
    return lambda params, obs: net.apply(params, obs)[1]


def _built_actor_critic_value(module, config, env, env_params):
    """The critic head of an agent whose network lives in its ``Static`` (``module.build``)."""
    static = module.build(config, env, env_params)
    return lambda params, obs: static.network.apply(params, obs)[1]


def _recurrent_value(module, config, env, env_params):
    """The value of each observation read as an episode's first, from the initial carry."""
    static = module.build(config, env, env_params)

    def value(params, obs):
        first = jnp.ones(obs.shape[:1], bool)
        return static.network.apply(params, obs, first, module.initial_carry(static, obs.shape[0]))[1]

    return value


def _max_q_value(module, config, env, env_params):
    net = module.network(config, env.action_space(env_params))
    return lambda params, obs: jnp.max(net.apply(params, obs), axis=-1)


def _epsilon_schedule(result, hyper):
    """An epsilon-greedy agent explores from eps_start down to eps_end (reached within the run)."""
    eps = np.asarray(result.metrics["epsilon"])
    np.testing.assert_array_equal(eps[:, 0], hyper["eps_start"])
    np.testing.assert_allclose(eps[:, -1], hyper["eps_end"], rtol=1e-6)


def _dqn_warm_up_then_epsilon(result, hyper):
    """No gradient step before learning_starts (loss 0 at the first update), then the schedule."""
    np.testing.assert_array_equal(np.asarray(result.metrics["loss"])[:, 0], 0.0)
    _epsilon_schedule(result, hyper)


def _dqn_value(module, config, env, env_params):
    static = module.build(config, env, env_params)  # only the network and the atoms are read
    return lambda params, obs: jnp.max(module.q_values(static, params, obs, jax.random.key(0)), axis=-1)


@dataclass(frozen=True)
class Entry:
    agent: str
    config: dict[str, Any]
    hyper: dict[str, Any]
    value: Callable  # (module, config, env, env_params) -> (params, obs[B, ...]) -> V[B]
    steps: int  # env steps per probe run (twice this for the truncation probe)
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    skip: dict[str, str] = field(default_factory=dict)  # probe id -> why its value cannot be read
    renamed: dict[str, str] = field(default_factory=dict)  # the probes' hyper name -> the agent's
    check: Callable | None = None  # (result, hyper) -> None: what else the agent must get right


DQN_PROBE = dict(
    num_envs=4,
    train_frequency=1,
    buffer_size=1000,
    batch_size=32,
    learning_starts=64,
    target_update_interval=40,
    hidden_sizes=(32,),
    eval_epsilon=0.0,
    num_atoms=41,
    num_quantiles=16,
)
DQN_HYPER = dict(learning_rate=1e-2, tau=1.0, eps_start=1.0, eps_end=0.1, exploration_fraction=0.3)
PPO_PROBE = dict(num_envs=8, num_steps=16, num_minibatches=2, update_epochs=4, anneal_lr=False)
A2C_PROBE = dict(num_envs=8, num_steps=5)
PQN_PROBE = dict(num_envs=16, num_steps=8, num_minibatches=4, update_epochs=4, hidden_sizes=(32,), anneal_lr=False)
PQN_HYPER = dict(learning_rate=1e-2, eps_start=1.0, eps_end=0.1, exploration_fraction=0.3, q_lambda=0.9)
IMPALA_PROBE = dict(num_envs=8, num_steps=16, anneal_lr=False, hidden_sizes=(32,))
IMPALA_HYPER = dict(learning_rate=3e-3, ent_coef=0.0)
RPPO_PROBE = dict(
    num_envs=8, num_steps=16, num_minibatches=2, anneal_lr=False, cell_size=16, hidden_sizes=(16,), head_sizes=(16,)
)
# a recurrent value is read from the initial carry: right for an episode's first observation only
RPPO_SKIP = {"Probe-Discount-v0": "V([1]) is the value after [0]; from the initial carry it is never trained"}


def _meta_parameters_stay_put(result, hyper):
    """Meta-gradient A2C on a probe: gamma and lambda cannot change the policy-gradient objective
    of any probe (one-step episodes end by termination, where neither enters a target; the other
    probes have one action, whose log-probability is 0), so their meta-gradient is exactly 0 and
    Adam leaves them at their initial values. The wrong answer, a meta-gradient that leaks through
    anything else, moves them at Adam's full step (1e-3 per update)."""
    for name, init in (("gamma", hyper["gamma_init"]), ("lambda", hyper["lambda_init"])):
        np.testing.assert_allclose(np.asarray(result.metrics[name]), init, rtol=0, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(np.asarray(result.metrics["meta_grad_norm"]), 0.0)


METAGRAD_PROBE = dict(num_envs=8, num_steps=8, hidden_sizes=(32,))
METAGRAD_HYPER = dict(learning_rate=3e-3, ent_coef=0.0, gamma_init=0.99, lambda_init=0.9)

# IMPALA at lag 3, where V-trace must correct the stale behaviour policy; lag 0 is on-policy and
# its targets are GAE's (tests/test_impala.py).
ENTRIES = [
    Entry("ppo", PPO_PROBE, dict(learning_rate=3e-3, ent_coef=0.0), _actor_critic_value, 20_000),
    Entry("a2c", A2C_PROBE, dict(learning_rate=1e-3), _actor_critic_value, 20_000),
    Entry("pqn", PQN_PROBE, PQN_HYPER, _max_q_value, 16_384, check=_epsilon_schedule),
    Entry("dqn", DQN_PROBE, DQN_HYPER, _dqn_value, 4000, check=_dqn_warm_up_then_epsilon),
    Entry("impala", {**IMPALA_PROBE, "policy_lag": 3}, IMPALA_HYPER, _actor_critic_value, 20_000, "impala-lag3"),
    Entry(
        "metagrad",
        METAGRAD_PROBE,
        METAGRAD_HYPER,
        _built_actor_critic_value,
        20_000,
        renamed={"gamma": "gamma_init"},
        check=_meta_parameters_stay_put,
    ),
    Entry("rppo", RPPO_PROBE, dict(learning_rate=3e-3, ent_coef=0.0), _recurrent_value, 20_000, skip=RPPO_SKIP),
    Entry("dqn", {**DQN_PROBE, "distributional": "c51"}, DQN_HYPER, _dqn_value, 4000, "c51"),
    Entry("dqn", {**DQN_PROBE, "distributional": "qr"}, DQN_HYPER, _dqn_value, 4000, "qr-dqn"),
    Entry("dqn", {**DQN_PROBE, "distributional": "iqn"}, DQN_HYPER, _dqn_value, 4000, "iqn"),
]
IDS = [e.label or e.agent for e in ENTRIES]


def train(entry: Entry, env_id: str, seeds, steps: int | None = None, **hyper):
    """Train ``entry`` on a probe; returns ``(value_fn of one run's params, result)``."""
    if env_id in entry.skip:
        pytest.skip(f"{entry.label or entry.agent} on {env_id}: {entry.skip[env_id]}")
    module = agents.get(entry.agent)
    env, env_params = envs.make(env_id)
    config = module.Config(**{**entry.config, "total_timesteps": steps or entry.steps})
    algo = module.make(config, env, env_params)
    hyper = {**entry.hyper, **{entry.renamed.get(k, k): v for k, v in hyper.items()}}
    result = rl.train(algo, module.Hyper(**hyper), seeds=seeds)
    if entry.check is not None:
        entry.check(result, hyper)
    value = entry.value(module, config, env, env_params)
    return (
        (lambda obs: np.asarray(jax.vmap(value, (0, None))(result.params, jnp.asarray(obs, jnp.float32)))),
        algo,
        result,
    )


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_one_step_value_is_one(entry, seeds):
    # r = +1 then termination: V = 1. Wrong answers: 0 (nothing fitted) and, with gamma 0.5,
    # 1 / (1 - 0.5) = 2 (bootstrapping through the termination). Margin: half the gap, 0.5.
    v, _, _ = train(entry, "Probe-OneStep-v0", seeds(0), gamma=0.5)
    np.testing.assert_allclose(v([[0.0]]), 1.0, atol=0.5)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_discount(entry, seeds):
    # r = 0 then +1 and termination: V([1]) = 1, V([0]) = gamma = 0.5. Wrong answers for V([0]):
    # 1 (no discount) and 0.25 (discounted twice). Margin: half the gap, 0.125.
    v, _, _ = train(entry, "Probe-Discount-v0", seeds(0), gamma=0.5)
    np.testing.assert_allclose(v([[0.0], [1.0]])[0], [0.5, 1.0], atol=0.125)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_truncation_bootstraps(entry, seeds):
    # r = +1 forever, time limit 5, obs always [0]: V = 1 / (1 - 0.8) = 5 only if truncation
    # bootstraps. Wrong answer: a learner that took the time limit for termination fits at most
    # the 5-step return 1 + .8 + .64 + .512 + .41 = 3.36 (less, averaged over the positions).
    # Margin: half the gap, 0.8.
    v, _, _ = train(entry, "Probe-Truncation-v0", seeds(0), steps=2 * entry.steps, gamma=0.8)
    np.testing.assert_allclose(v([[0.0]]), 5.0, atol=0.8)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_action_reward_greedy_action_is_the_bit(entry, seeds):
    # one step, r = +1 if a == bit else -1: the greedy action must be the bit in both states, for
    # both seeds (the wrong answer, a policy blind to the observation, gets one of the two wrong).
    _, algo, result = train(entry, "Probe-ActionReward-v0", seeds(0, 1))
    obs = jnp.eye(2, dtype=jnp.float32)
    greedy = jax.vmap(lambda p: algo.act(p, obs, jax.random.key(0), deterministic=True))(result.params)
    np.testing.assert_array_equal(np.asarray(greedy), [[0, 1], [0, 1]])
