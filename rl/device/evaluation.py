"""Evaluation episodes inside the jitted training program, for any agent.

Published figures (gymnax-blines, rl-baselines3-zoo, CleanRL's evaluation) are mostly the
return of *evaluation* episodes: the trained policy, acting greedily (or sampling, but without
the exploration schedule of training), on fresh episodes. What training reports instead are its
own episodes, with exploration noise. This module plays evaluation episodes of the current
policy every K updates inside the scanned update loop, without a host round trip:

* :func:`play_episodes` plays E episodes at once on E parallel copies of the env (one
  ``lax.while_loop`` until each copy's first episode has ended, at most ``max_steps`` steps;
  later episodes of a copy are ignored, an episode still running at ``max_steps`` counts its
  return so far);
* :class:`EvalConfig` says how often (``every`` updates, and always after the last update of
  the budget), how many episodes, greedy (``act(..., deterministic=True)``) or stochastic, and
  the evaluation seed;
* :func:`with_evaluation` gives an ``rl.engine.runner.Algorithm`` its :class:`Evaluation`; the runner
  then reports ``eval_return`` and ``eval_length`` (means over the E episodes) at every update
  where an evaluation is due and NaN at every other update (:func:`evaluate_if_due`, a
  ``lax.cond`` on the global update index, which is the same for every run, so it stays a real
  branch under the runner's vmap over runs).

Agent-agnostic: it needs only the algorithm's ``act(params, obs[B, ...], key, deterministic)``,
the ``params`` field of its training state and the env it was made for. Observations are
normalised with the running statistics in the training state when the agent normalises them
(an ``envs.NormalizeObservationState`` anywhere in the state), frozen, as ``agents.load`` does;
continuous actions are clipped to the action space, as in training.

Randomness: the episodes' start states and (stochastic mode) action samples come from
``jax.random.key(seed)`` alone. This constant is deliberate: every run and every evaluation
point plays the same E start states, so runs are compared on the same episodes (paired), and
an evaluation curve moves only because the policy changed. The training key in the state is
never read, so training with evaluation on is bit-identical to training with it off (tested).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from rl.errors import check

__all__ = [
    "EVAL_LENGTH",
    "EVAL_METRICS",
    "EVAL_MODES",
    "EVAL_RETURN",
    "Episodes",
    "EvalConfig",
    "Evaluation",
    "auto_every",
    "default_max_steps",
    "env_for_eval",
    "evaluate_if_due",
    "evaluated_updates",
    "final_eval_returns",
    "is_due",
    "make_evaluation",
    "obs_statistics",
    "play_episodes",
    "resolve",
    "with_evaluation",
]

EVAL_RETURN = "eval_return"  # per-update metric: mean return of the evaluation episodes, NaN if none
EVAL_LENGTH = "eval_length"  # per-update metric: their mean length in steps, NaN if none
EVAL_METRICS: tuple[str, ...] = (EVAL_RETURN, EVAL_LENGTH)
EVAL_MODES: tuple[str, ...] = ("greedy", "stochastic")
DEFAULT_MAX_STEPS = 10_000  # an episode's cap for an env without max_steps_in_episode
AUTO_MAX_EVALUATIONS = 10  # auto_every: at most this many evaluations over a training budget
AUTO_COST_FRACTION = 0.05  # auto_every, auto_episodes: evaluation env steps at most this fraction of training's
AUTO_EPISODES = 32  # auto_episodes: the episodes per evaluation of a budget that affords them


class Episodes(NamedTuple):
    """Per episode: ``returns`` f32[E], ``lengths`` i32[E], ``finished`` bool[E]."""

    returns: chex.Array
    lengths: chex.Array
    finished: chex.Array


def env_for_eval(env: Any, env_params: Any) -> Any:
    """The single env as training steps it: continuous actions clipped to the Box (``envs.vectorize``)."""
    import envs

    if not envs.is_discrete(env.action_space(env_params)):
        return envs.ClipAction(env)
    return env


def default_max_steps(env_params: Any) -> int:
    """The env's own time limit when it has one, else :data:`DEFAULT_MAX_STEPS`."""
    limit = getattr(env_params, "max_steps_in_episode", None)
    return int(limit) if limit is not None else DEFAULT_MAX_STEPS


def play_episodes(
    policy: Callable[[chex.Array, chex.PRNGKey], chex.Array],
    env: Any,
    env_params: Any,
    key: chex.PRNGKey,
    num_episodes: int,
    max_steps: int,
    carry: Any = None,
) -> Episodes:
    """Play the first episode of each of ``num_episodes`` env copies (one run; jit- and vmap-able).

    ``policy(obs[E, ...], key) -> action[E, ...]``. ``env`` is one unbatched env (wrap it with
    :func:`env_for_eval` first to clip continuous actions). The copies are reset from
    ``split(key)[0]`` and step until every one has ended an episode, or for ``max_steps``
    steps; an episode's return and length stop counting at its end (the env's automatic
    reset starts another episode that is ignored). ``finished`` is False for an episode still
    running after ``max_steps`` steps; its return so far is counted.

    A recurrent policy gives ``carry``, its initial carry (leading axis ``num_episodes``, e.g.
    ``Algorithm.recurrent.initial_carry(E)``): then ``policy(obs, key, carry) -> (action, carry)``,
    and the carry is put back to the initial one where an episode ended (terminated or truncated).
    """
    import envs

    venv = envs.VecEnv(env, num_episodes)
    reset_key, key = jax.random.split(key)
    obs, state = venv.reset(reset_key, env_params)
    initial = () if carry is None else carry  # () : a memoryless policy, nothing is carried
    loop = (
        jnp.int32(0),
        state,
        obs,
        initial,
        key,
        jnp.zeros((num_episodes,), jnp.float32),
        jnp.zeros((num_episodes,), jnp.int32),
        jnp.zeros((num_episodes,), bool),
    )

    def running(c):
        t, *_, done = c
        return (t < max_steps) & ~jnp.all(done)

    def step(c):
        t, state, obs, memory, key, ret, length, done = c
        key, act_key, step_key = jax.random.split(key, 3)
        if carry is None:
            action = policy(obs, act_key)
        else:
            action, memory = policy(obs, act_key, memory)
        obs, state, reward, terminated, truncated, _ = venv.step(step_key, state, action, env_params)
        ended = terminated | truncated
        memory = jax.tree.map(
            lambda m, m0: jnp.where(ended.reshape(ended.shape + (1,) * (m.ndim - 1)), m0, m), memory, initial
        )
        active = ~done
        ret = ret + jnp.where(active, reward.astype(jnp.float32), 0.0)
        length = length + active.astype(jnp.int32)
        return t + 1, state, obs, memory, key, ret, length, done | ended

    _, _, _, _, _, ret, length, done = jax.lax.while_loop(running, step, loop)
    return Episodes(ret, length, done)


def obs_statistics(state: Any) -> Any:
    """The observation-normalisation statistics in a training carry (``env_state`` dropped), or None."""
    from envs import NormalizeObservationState

    is_stats = lambda x: isinstance(x, NormalizeObservationState)  # noqa: E731
    found = [x for x in jax.tree.leaves(state, is_leaf=is_stats) if is_stats(x)]
    return found[0]._replace(env_state=None) if found else None


@dataclass(frozen=True)
class EvalConfig:
    """When and how the runner plays evaluation episodes (static: it sets loop lengths)."""

    every: int | None = None
    """evaluate after every ``every``-th update and after the last update of the budget; 0 = off;
    None = :func:`auto_every` (at most 5% of the training's env steps, at least the final one)"""
    episodes: int | None = None
    """episodes per evaluation and run, played in parallel (the first episode of each env copy);
    None = :func:`auto_episodes` (32, fewer on a budget too small for 32 at 5% of its env steps)"""
    mode: str = "greedy"
    """greedy: the policy's deterministic action (its mode or argmax); stochastic: sampled actions"""
    seed: int = 0
    """seed of the evaluation episodes: the same start states for every run and every evaluation"""
    max_steps: int | None = None
    """cap on an episode's steps (default: the env's max_steps_in_episode, else 10,000)"""

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first bad field as ``eval_<field>`` (the CLI's ``--eval-<field>``)."""

        def is_int(v: Any) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        check(
            self.every is None or (is_int(self.every) and self.every >= 0),
            "eval_every",
            self.every,
            "must be an integer >= 0 (updates between evaluations; 0 = no evaluation) or None (automatic)",
        )
        check(
            self.episodes is None or (is_int(self.episodes) and 1 <= self.episodes <= 2**24),
            "eval_episodes",
            self.episodes,
            "must be an integer in [1, 2**24] (episodes per evaluation and seed) or None (automatic)",
        )
        check(self.mode in EVAL_MODES, "eval_mode", self.mode, f"must be one of {', '.join(EVAL_MODES)}")
        check(is_int(self.seed) and 0 <= self.seed < 2**31, "eval_seed", self.seed, "must be an integer in [0, 2**31)")
        if self.max_steps is not None:
            check(
                is_int(self.max_steps) and 1 <= self.max_steps < 2**31,
                "eval_max_steps",
                self.max_steps,
                "must be an integer in [1, 2**31) or None (the env's time limit)",
            )

    @property
    def deterministic(self) -> bool:
        return self.mode == "greedy"


class Evaluation(NamedTuple):
    """What ``rl.engine.runner.Algorithm.evaluation`` holds: the schedule and one run's evaluation.

    ``inputs`` picks what the evaluation reads from the training state (parameters,
    observation statistics), and only that enters the ``lax.cond``: a replay buffer in the
    state is never an operand of the branch.
    """

    every: int  # evaluate after updates u with (u + 1) % every == 0, and after the last one
    inputs: Callable[[Any], Any]  # one run's training state -> what the evaluation reads
    run: Callable[[Any], dict[str, chex.Array]]  # inputs -> {eval_return, eval_length}, f32 scalars
    config: EvalConfig

    def evaluate(self, state: Any) -> dict[str, chex.Array]:
        """The evaluation metrics of one run's training state (jit- and vmap-able)."""
        return self.run(self.inputs(state))


def auto_every(num_updates: int, steps_per_update: int, episodes: int, max_steps: int) -> int:
    """The default evaluation interval: as many evaluations as cost at most 5% of training's env steps.

    One evaluation plays at most ``episodes * max_steps`` env steps; the number of evaluations
    is ``floor(0.05 * num_updates * steps_per_update / (episodes * max_steps))``, clipped to
    [1, 10], spread evenly (the last update is evaluated in any case). E.g. PPO on Pendulum-v1
    at the gymnax-blines preset (1M steps, 32 episodes of 200 steps): 7 evaluations, every 279
    of 1953 updates; PPO on CartPole-v1 at 500k steps (32 episodes of up to 500 steps): only
    the final one. Evaluation steps cost less than training steps (no gradient), so this is
    a bound on the run-time cost too.
    """
    evaluations = math.floor(AUTO_COST_FRACTION * num_updates * steps_per_update / (episodes * max_steps))
    evaluations = min(max(evaluations, 1), AUTO_MAX_EVALUATIONS)
    return max(1, math.ceil(num_updates / evaluations))


def auto_episodes(num_updates: int, steps_per_update: int, max_steps: int) -> int:
    """The default episodes per evaluation: 32, or as many as cost at most 5% of training's env steps.

    ``min(32, max(1, floor(0.05 * num_updates * steps_per_update / max_steps)))``: one
    evaluation of E episodes plays at most ``E * max_steps`` env steps. A budget of at least
    640 episodes' worth of steps plays 32 (PPO on CartPole-v1 at 500k steps, 500-step
    episodes); a smaller one fewer, down to one episode per run (e.g. 400 updates of 16 steps:
    6,400 training steps, where 32 episodes of up to 500 steps would cost 2.5 times the
    training's steps). The count depends on the run's own budget only, never on how many runs
    are batched with it, so a seed evaluates the same alone or among thousands.
    """
    affordable = math.floor(AUTO_COST_FRACTION * num_updates * steps_per_update / max_steps)
    return min(max(affordable, 1), AUTO_EPISODES)


def resolve(config: EvalConfig, algo: Any, env: Any, env_params: Any) -> EvalConfig:
    """``config`` with ``max_steps``, ``episodes`` and ``every`` resolved for ``algo`` (an ``Algorithm``).

    ``env``/``env_params``: what the algorithm was made with. ``max_steps`` None: the env's
    time limit (times the trials of an agent that wraps its env, RL²'s); ``episodes`` None:
    :func:`auto_episodes`; ``every`` None: :func:`auto_every` (0 stays 0: no evaluation).
    """
    config.validate()
    if getattr(algo, "wrap_env", None) is not None:  # the agent acts in a wrapped env (RL²'s trials)
        env = algo.wrap_env(env)
        if config.max_steps is None:  # one of its episodes may be several inner ones (a trial)
            trial = getattr(env, "episodes_per_trial", 1)
            config = dataclasses.replace(config, max_steps=default_max_steps(env_params) * trial)
    max_steps = config.max_steps or default_max_steps(env_params)
    config = dataclasses.replace(config, max_steps=max_steps)
    if config.episodes is None:
        config = dataclasses.replace(config, episodes=auto_episodes(algo.num_updates, algo.steps_per_update, max_steps))
    if config.every is None:
        config = dataclasses.replace(
            config, every=auto_every(algo.num_updates, algo.steps_per_update, config.episodes, max_steps)
        )
    return config


def make_evaluation(
    act: Callable[..., chex.Array], env: Any, env_params: Any, config: EvalConfig, recurrent: Any = None
) -> Evaluation:
    """One run's evaluation: ``config.episodes`` episodes of ``act`` with the state's parameters.

    ``act(params, obs[E, ...], key, deterministic)`` is ``Algorithm.act``; with ``recurrent``
    (``Algorithm.recurrent``, an ``rl.engine.runner.Recurrent``) the episodes are played by its ``act``
    instead, the carry kept from step to step and reset at episode ends; ``env`` the unbatched,
    unwrapped env the algorithm was made with. ``evaluate(state)`` reads ``state.params`` and
    the observation statistics in ``state`` (when there are any; ``Evaluation.inputs``) and
    returns f32 scalars ``eval_return`` and ``eval_length``: the means over the episodes.
    """
    import envs

    config.validate()
    if config.every is None or config.episodes is None:
        raise ValueError("make_evaluation needs config.every and config.episodes set; resolve() sets None (automatic)")
    eval_env = env_for_eval(env, env_params)
    max_steps = config.max_steps or default_max_steps(env_params)
    config = dataclasses.replace(config, max_steps=max_steps)  # as played: summary.json records it
    normalizer = envs.NormalizeObservation(envs.VecEnv(env, config.episodes))  # its normalize() only

    def inputs(state: Any) -> tuple[Any, Any]:
        return state.params, obs_statistics(state)

    def run(read: tuple[Any, Any]) -> dict[str, chex.Array]:
        params, stats = read

        def policy(obs, key, *carry):
            if stats is not None:
                obs = normalizer.normalize(stats, obs)
            if recurrent is not None:
                return recurrent.act(params, *carry, obs, key, config.deterministic)
            return act(params, obs, key, config.deterministic)

        carry = None if recurrent is None else recurrent.initial_carry(config.episodes)
        key = jax.random.key(config.seed)
        episodes = play_episodes(policy, eval_env, env_params, key, config.episodes, max_steps, carry)
        return {EVAL_RETURN: jnp.mean(episodes.returns), EVAL_LENGTH: jnp.mean(episodes.lengths.astype(jnp.float32))}

    return Evaluation(every=config.every, inputs=inputs, run=run, config=config)


def with_evaluation(algo: Any, env: Any, env_params: Any, config: EvalConfig) -> Any:
    """``algo`` (an ``rl.engine.runner.Algorithm``) with evaluation episodes per ``config``; ``every == 0``: none.

    ``env``/``env_params``: what the algorithm was made with (``envs.make(env_id)``)::

        algo = rl.device.evaluation.with_evaluation(ppo.make(config, env, env_params), env, env_params,
                                             rl.device.evaluation.EvalConfig(every=10))   # None: automatic
        result = rl.train(algo, ppo.Hyper(), seeds=range(8))   # result.metrics["eval_return"]
    """
    config = resolve(config, algo, env, env_params)
    if getattr(algo, "wrap_env", None) is not None:  # the agent acts in a wrapped env (RL²'s trials)
        env = algo.wrap_env(env)
    if config.every == 0:
        return algo._replace(evaluation=None)
    recurrent = getattr(algo, "recurrent", None)
    return algo._replace(evaluation=make_evaluation(algo.act, env, env_params, config, recurrent))


def is_due(update: Any, every: int, num_updates: int) -> Any:
    """Whether an evaluation follows update ``update`` (0-based): every ``every``-th, and the last."""
    done = update + 1
    return (done % every == 0) | (done == num_updates)


def evaluate_if_due(evaluation: Evaluation, state: Any, update: chex.Array, num_updates: int) -> dict[str, chex.Array]:
    """``evaluation.evaluate(state)`` after a due update, else NaN for every evaluation metric.

    ``update`` must be the same for every run (not batched), so the ``lax.cond`` stays a
    branch under vmap instead of becoming a select that evaluates at every update. The NaN
    branch mirrors the real one's outputs (``jax.eval_shape``).
    """
    read = evaluation.inputs(state)
    shapes = jax.eval_shape(evaluation.run, read)
    skipped = lambda _: jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype), shapes)  # noqa: E731
    return jax.lax.cond(is_due(update, evaluation.every, num_updates), evaluation.run, skipped, read)


def evaluated_updates(num_updates: int, every: int) -> np.ndarray:
    """The 0-based updates after which an evaluation is played (host side, for checks and plots)."""
    if every <= 0:
        return np.zeros((0,), np.int64)
    return np.flatnonzero(is_due(np.arange(num_updates), every, num_updates))


def final_eval_returns(eval_return: np.ndarray) -> tuple[np.ndarray, int | None]:
    """``[N]`` per-run return of the last evaluation in ``[N, U]`` metrics, and its update (None if none).

    The runner evaluates after the last update of a completed budget, so this is the
    evaluation of the final policy; runs are evaluated at the same updates.
    """
    eval_return = np.asarray(eval_return, dtype=np.float64)
    played = np.flatnonzero(np.any(~np.isnan(eval_return), axis=0))
    if not played.size:
        return np.full(eval_return.shape[:1], np.nan), None
    last = int(played[-1])
    return eval_return[:, last], last
