"""What on-policy agents share: rollout batches, learning-rate annealing, advantage
normalisation, and epochs of shuffled minibatch gradient steps.

PPO, PQN and A2C are each a ``targets`` and a ``loss`` on top of these; an agent
that learns from one fresh rollout per update needs nothing else from here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax
import rlax
from jax.flatten_util import ravel_pytree

from rl.errors import check

Array = chex.Array
Metrics = dict[str, Array]


class Rollout:
    """What an on-policy ``Config`` derives from ``num_envs``, ``num_steps`` and
    ``total_timesteps`` (and ``num_minibatches``, 1 where the agent has none): a base class of
    the agents' frozen dataclasses, with properties only, so it adds no field."""

    num_envs: int
    num_steps: int
    total_timesteps: int
    num_minibatches: int

    @property
    def batch_size(self) -> int:
        """Transitions per rollout: num_envs * num_steps."""
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_updates(self) -> int:
        """One update per rollout: total_timesteps // batch_size (a remainder is not run)."""
        return self.total_timesteps // self.batch_size


def check_batches(config: Any) -> None:
    """The checks that relate a rollout's fields (num_envs, num_steps, num_minibatches,
    total_timesteps); each field's own rule is checked before, by ``validate_config``."""
    batch_size = config.num_envs * config.num_steps
    if batch_size % config.num_minibatches:  # the message lists divisors: build it only when needed
        check(
            False,
            "num_minibatches",
            config.num_minibatches,
            f"must divide num_envs * num_steps = {batch_size} (divisors: {_divisors(batch_size)})",
        )
    check(
        config.total_timesteps >= batch_size,
        "total_timesteps",
        config.total_timesteps,
        f"must be at least one update = num_envs * num_steps = {batch_size}",
    )


def _divisors(n: int) -> str:
    """The first divisors of n, found in O(sqrt n) (n = num_envs * num_steps can be absurd)."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    divs = sorted(set(small + [n // d for d in small]))
    return ", ".join(map(str, divs[:12])) + (", ..." if len(divs) > 12 else "")


def flatten_time(batch: Any) -> Any:
    """Merge the leading `[T, B]` axes of every leaf into one `[T * B]` axis."""
    return jax.tree.map(lambda x: x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:]), batch)


def truncation_bound(env: Any, env_params: Any, num_steps: int) -> int | None:
    """At most how many times one env can be truncated in ``num_steps`` consecutive steps, where
    this is known before tracing; None where it is not.

    Known for an env that uses gymnax's own ``step`` and ``is_truncated``: it is truncated exactly
    when ``state.time`` reaches ``env_params.max_steps_in_episode`` (a concrete M >= 1), and an
    automatic reset restarts ``time`` at 0, so two truncations are at least M steps apart and
    ``num_steps`` steps hold at most ``ceil(num_steps / M)``. Any other env (a wrapper, another
    suite, an env of your own) gets None, and :func:`successor_values` values every successor.
    """
    from gymnax.environments.environment import Environment

    kind = type(env)
    if not isinstance(env, Environment) or kind.step is not Environment.step:
        return None
    if kind.is_truncated is not Environment.is_truncated:
        return None
    limit = getattr(env_params, "max_steps_in_episode", None)
    if isinstance(limit, jax.core.Tracer) or limit is None or isinstance(limit, bool):
        return None
    try:
        limit = int(limit)
    except (TypeError, ValueError):
        return None
    return -(-num_steps // limit) if limit >= 1 else None


def successor_values(value_of: Callable[[Array], Array], values: Array, transitions: Any, bound: int | None) -> Array:
    """``V(s'_t)`` `[T, B]`: the value of every step's true successor, ``next_obs`` (the final
    observation where an episode ended), for the targets' bootstrap.

    Where a step did not end its episode, its successor is the next step's observation, whose
    value the rollout already computed with the same parameters: ``values[t + 1]``. Valued here
    are only the last step's successors (B rows) and the final observations of truncated steps,
    at most ``bound`` per env (:func:`truncation_bound`), instead of all T x B successors. A
    terminated step keeps ``values[t + 1]``, which the targets multiply by 0. With ``bound=None``
    (or ``>= T``) every successor is valued, in one pass over `[T * B]` rows.

    Args:
      value_of: observations `[N, *obs_shape]` -> values `[N]`, with the rollout's parameters.
      values: `[T, B]` the rollout's values of the observations acted on.
      transitions: the rollout's ``Transition`` (`[T, B]` leaves): its ``next_obs``, each step's true
        successor, and ``truncated``.
      bound: at most this many truncations per env in the T steps (static), or None.
    """
    next_obs, truncated = transitions.next_obs, transitions.truncated
    num_steps, num_envs = values.shape
    if bound is None or bound >= num_steps:
        return value_of(flatten_time(next_obs)).reshape(values.shape)
    last = value_of(next_obs[-1]).reshape(1, num_envs)
    shifted = jnp.concatenate([values[1:], last], axis=0).astype(values.dtype)
    if bound == 0:
        return shifted
    # per env, the steps of its first `bound` truncations (padded with T - 1)
    steps = jax.vmap(
        lambda column: jnp.nonzero(column, size=bound, fill_value=num_steps - 1)[0], in_axes=1, out_axes=1
    )(truncated)  # [bound, B]
    envs_ = jnp.broadcast_to(jnp.arange(num_envs), steps.shape)
    rows = next_obs[steps, envs_]  # [bound, B, *obs_shape]
    final = value_of(rows.reshape((bound * num_envs,) + rows.shape[2:])).reshape(steps.shape)
    hit = truncated[steps, envs_]
    return shifted.at[steps, envs_].set(jnp.where(hit, final.astype(values.dtype), shifted[steps, envs_]))


def annealed(learning_rate, update_idx: Array, num_updates: int, anneal: bool) -> Array:
    """``learning_rate`` decayed linearly to 0 over ``num_updates`` when ``anneal``.

    ``update_idx`` is the number of updates already done (0 for the first).
    """
    frac = 1.0 - update_idx / num_updates
    return learning_rate * (frac if anneal else 1.0)


def normalize(advantage: Array) -> Array:
    """Standardise within the batch (mean 0, std 1; eps 1e-8 as in PPO implementations)."""
    return (advantage - advantage.mean()) / (advantage.std() + 1e-8)


def clipped_surrogate_loss(
    dist: Any,
    value: Array,
    action: Array,
    old_log_prob: Array,
    old_value: Array,
    advantage: Array,
    target: Array,
    hyper: Any,
    *,
    clip_value_loss: bool,
    normalize_advantages: bool,
) -> tuple[Array, Metrics]:
    """PPO's loss on one flat minibatch `[M]` (eq. 7 and 9 of Schulman et al., 2017).

    ``L = -E[min(r A, clip(r, 1-eps, 1+eps) A)] + vf_coef * L^V - ent_coef * H`` with
    ``r = pi(a|s) / pi_old(a|s)``; ``L^V`` is ``0.5 (V - R)^2``, or with ``clip_value_loss``
    the larger of that and ``0.5 (V_old + clip(V - V_old, -eps, eps) - R)^2``. ``dist`` and
    ``value`` are the current policy (a distrax distribution) and values at the minibatch's
    observations; ``hyper`` has ``clip_eps``, ``vf_coef`` and ``ent_coef``. Shared by
    ``agents.ppo`` and ``agents.rppo`` (which flattens its `[sequences, T]` minibatch first).
    """
    chex.assert_rank([old_log_prob, old_value, advantage, target], 1)
    log_ratio = dist.log_prob(action) - old_log_prob
    ratio = jnp.exp(log_ratio)
    advantage = normalize(advantage) if normalize_advantages else advantage
    policy_loss = rlax.clipped_surrogate_pg_loss(ratio, advantage, hyper.clip_eps)
    value_loss = 0.5 * jnp.square(value - target)
    if clip_value_loss:
        clipped = old_value + jnp.clip(value - old_value, -hyper.clip_eps, hyper.clip_eps)
        value_loss = jnp.maximum(value_loss, 0.5 * jnp.square(clipped - target))
    value_loss = value_loss.mean()
    entropy = dist.entropy().mean()
    total = policy_loss + hyper.vf_coef * value_loss - hyper.ent_coef * entropy
    return total, {
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": entropy,
        "approx_kl": jnp.mean((ratio - 1.0) - log_ratio),
        "clip_fraction": jnp.mean(jnp.abs(ratio - 1.0) > hyper.clip_eps),
    }


def optimizer(max_grad_norm, learning_rate, scale_by: optax.GradientTransformation) -> optax.GradientTransformation:
    """Global-norm clipping, then ``scale_by`` (Adam, RAdam, ...), then a step of -learning_rate.

    Both ``max_grad_norm`` and ``learning_rate`` may be traced (swept, annealed); the
    optimizer state does not depend on them, so it is built once with any value.
    """
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), scale_by, optax.scale(-learning_rate))


def gradient_step(
    loss_fn: Callable[[Any, Any], tuple[Array, Metrics]],
    tx: optax.GradientTransformation,
    params: Any,
    opt_state: Any,
    batch: Any,
) -> tuple[Any, Any, Metrics]:
    """One optimizer step on ``loss_fn(params, batch) -> (loss, metrics)``.

    Returns ``(params, opt_state, metrics)`` with ``loss`` and ``grad_norm`` (before
    clipping) added to the metrics.
    """
    (value, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    metrics = {**metrics, "loss": value, "grad_norm": optax.global_norm(grads)}
    return optax.apply_updates(params, updates), opt_state, metrics


def permutation(key: chex.PRNGKey, n: int) -> Array:
    """A uniformly random permutation of ``range(n)`` (int32[n]): ``jax.random.permutation``'s
    method, sort by random keys, with the index packed into the keys.

    ``jax.random.permutation`` sorts (random key, index) pairs. XLA runs a sort of two operands
    through a generic comparator; a sort of one uint32 array takes its native fast path (on a
    2-core CPU 17 us against 73 us for n = 512, and PPO shuffles every epoch). So the index
    goes into the low ``k = bit_length(n - 1)`` bits and ``32 - k`` random bits above it. Equal
    random bits keep the previous order, the bias of sort-based shuffling; as in
    ``jax.random.permutation``, more rounds (each tie-broken by the last round's random order)
    are sorted until ``(2**k)**3 <= 2**(rounds * (32 - k))``: one round up to n = 256, two up
    to 4096, three up to 65536. Past n = 2**22 it is ``jax.random.permutation`` itself.
    """
    k = max(1, (n - 1).bit_length())
    if k > 22:
        return jax.random.permutation(key, n)
    random_bits = 32 - k
    rounds = -(-3 * k // random_bits)
    low = jnp.uint32((1 << k) - 1)
    perm = jnp.arange(n, dtype=jnp.uint32)
    for round_key in jax.random.split(key, rounds):
        bits = jax.random.bits(round_key, (n,), jnp.uint32)
        perm = jax.lax.sort((bits & ~low) | perm) & low
    return perm.astype(jnp.int32)


def epochs(
    loss_fn: Callable[[Any, Any], tuple[Array, Metrics]],
    tx: optax.GradientTransformation,
    params: Any,
    opt_state: Any,
    batch: Any,
    key: chex.PRNGKey,
    *,
    update_epochs: int,
    num_minibatches: int,
) -> tuple[Any, Any, Metrics]:
    """``update_epochs`` passes over ``batch``, each in ``num_minibatches`` shuffled minibatches.

    Args:
      loss_fn: ``(params, minibatch) -> (loss, metrics)`` for one minibatch.
      tx: the optimizer; one step per minibatch.
      batch: a pytree whose leaves share a leading axis of length
        ``num_minibatches * minibatch_size``.
      key: one fresh permutation per epoch is drawn from it.

    Returns:
      ``(params, opt_state, metrics)``, the metrics averaged over every step, with
      ``loss`` and ``grad_norm`` (the norm before clipping) added.
    """
    batch_size = jax.tree.leaves(batch)[0].shape[0]
    minibatch_size = batch_size // num_minibatches

    # The metrics are summed in the loops' carry as one vector and divided once at the end.
    # Stacking them per step instead writes each metric to its row of an [epochs, minibatches]
    # array at every step, and summing them one by one adds each scalar on its own: either way
    # one kernel per metric per step on a GPU (7 of PPO's 63 per minibatch step at 1 seed).
    one = jax.tree.map(lambda x: jax.ShapeDtypeStruct((minibatch_size, *x.shape[1:]), x.dtype), batch)
    shapes = jax.eval_shape(lambda p, o, mb: gradient_step(loss_fn, tx, p, o, mb)[2], params, opt_state, one)
    zeros, unravel = ravel_pytree(jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes))

    def minibatch_step(carry, minibatch):
        params, opt_state, sums = carry
        params, opt_state, metrics = gradient_step(loss_fn, tx, params, opt_state, minibatch)
        return (params, opt_state, sums + ravel_pytree(metrics)[0]), None

    def epoch(carry, epoch_key):
        perm = permutation(epoch_key, batch_size)
        minibatches = jax.tree.map(lambda x: x[perm].reshape((num_minibatches, minibatch_size) + x.shape[1:]), batch)
        return jax.lax.scan(minibatch_step, carry, minibatches)[0], None

    keys = jax.random.split(key, update_epochs)
    (params, opt_state, sums), _ = jax.lax.scan(epoch, (params, opt_state, zeros), keys)
    return params, opt_state, unravel(sums / (update_epochs * num_minibatches))


def learn(
    static: Any,
    state: Any,
    batch: Any,
    hyper: Any,
    key: chex.PRNGKey,
    *,
    loss: Callable,
    optimizer: Callable[[Any, Array], optax.GradientTransformation],
) -> tuple[Any, Any, Metrics]:
    """``update_epochs`` passes of ``num_minibatches`` shuffled minibatch steps at the learning
    rate of this update (``hyper.learning_rate``, annealed when ``static.config.anneal_lr``).

    ``loss(static, params, minibatch, hyper) -> (loss, metrics)`` is the agent's loss and
    ``optimizer(hyper, learning_rate)`` its optimizer; ``state`` has ``params``,
    ``opt_state`` and ``update_idx``. Returns ``(params, opt_state, metrics)`` with the
    learning rate among the metrics.
    """
    config = static.config
    learning_rate = annealed(hyper.learning_rate, state.update_idx, config.num_updates, config.anneal_lr)
    params, opt_state, metrics = epochs(
        functools.partial(loss, static, hyper=hyper),
        optimizer(hyper, learning_rate),
        state.params,
        state.opt_state,
        batch,
        key,
        update_epochs=config.update_epochs,
        num_minibatches=config.num_minibatches,
    )
    return params, opt_state, {**metrics, "learning_rate": learning_rate}


def update(static: Any, state: Any, hyper: Any, *, collect: Callable, targets: Callable, learn: Callable):
    """One on-policy iteration: ``collect`` a rollout, compute its ``targets``, ``learn`` from them.

    The agent's functions take the shared argument order: ``collect(static, state, hyper, key)
    -> (transitions, env_state, obs, episodes)``, ``targets(static, params, transitions, hyper)``,
    ``learn(static, state, batch, hyper, key) -> (params, opt_state, metrics)``. ``state`` is a
    NamedTuple with ``params``, ``opt_state``, ``env_state``, ``obs``, ``key`` and ``update_idx``
    (its other fields are carried over). Returns ``(state, metrics)``.
    """
    key, rollout_key, learn_key = jax.random.split(state.key, 3)
    transitions, env_state, obs, episodes = collect(static, state, hyper, rollout_key)
    batch = targets(static, state.params, transitions, hyper)
    params, opt_state, metrics = learn(static, state, batch, hyper, learn_key)
    new_state = state._replace(
        params=params, opt_state=opt_state, env_state=env_state, obs=obs, key=key, update_idx=state.update_idx + 1
    )
    return new_state, {**metrics, **episodes.as_metrics()}
