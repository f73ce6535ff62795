"""Return and advantage estimation in `[T, B]` form.

Every function here keeps *termination* and *truncation* apart:

* on **termination** the episode really ended: the bootstrap value is zero;
* on **truncation** (a time limit) the episode was cut: the bootstrap value is
  the value of ``info["final_observation"]``, the observation *before* the
  automatic reset (``Transition.next_obs``; where no episode ended it is the
  next observation, so one array serves every step);
* in both cases the trace is cut, because the next row of the rollout belongs
  to a new episode.

The per-trajectory work is delegated to rlax (which takes one unbatched
trajectory); batching over the environment axis is an explicit
``jax.vmap(..., in_axes=1, out_axes=1)``.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import rlax

Array = chex.Array


# Steps of the reverse sum per loop iteration. A GPU runs each iteration of a loop as kernels of
# its own (and the loop's condition as one more), and the sum's work per step is one multiply-add
# on a [B] vector: at 1 seed, rlax's scan over 128 steps was 128 x 4 of an update's 6,340 kernels
# (the GPU-compiled program, `make bench BENCH_ARGS="--only hlo --target h200"`). 16 steps per
# iteration, as PureJaxRL's GAE, runs it as 8 iterations.
SUM_UNROLL = 16


def _discounted_sum(x_t: Array, discount_t: Array) -> Array:
    """`y_t = x_t + discount_t * y_{t+1}`, `y_T = 0`, for one trajectory `[T]` (or `[T, B]`).

    The recursion of ``rlax.discounted_returns`` with zero bootstrap (the same arithmetic, checked
    against it in tests/test_returns.py), as a reverse scan of ``SUM_UNROLL`` steps per iteration:
    rlax's scan takes no ``unroll``.
    """

    def step(y_next, xd):
        x, d = xd
        y = x + d * y_next
        return y, y

    _, y_t = jax.lax.scan(step, jnp.zeros_like(x_t[-1]), (x_t, discount_t), reverse=True, unroll=SUM_UNROLL)
    return y_t


def gae_advantages(
    r_t: Array,
    v_t: Array,
    bootstrap_t: Array,
    terminated_t: Array,
    truncated_t: Array,
    gamma: float | Array,
    lambda_: float | Array,
) -> tuple[Array, Array]:
    """Generalised advantage estimation with truncation-aware bootstrapping.

    Schulman et al. (2016), "High-Dimensional Continuous Control Using
    Generalized Advantage Estimation", eq. 16, with the episode boundary made
    explicit::

        delta_t = r_t + gamma * (1 - terminated_t) * bootstrap_t - v_t
        A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}
        done_t  = terminated_t or truncated_t

    The paper writes ``V(s_{t+1})`` for ``bootstrap_t``; here it is the value
    of the true successor state, which on truncation is the final observation
    (``Transition.next_obs``). ``A_T = 0`` after the last step of the
    rollout, whose own ``bootstrap_t`` carries the tail.

    rlax's ``truncated_generalized_advantage_estimation`` reads ``v_t`` and the
    bootstrap value from one array and so cannot bootstrap from a final
    observation that differs from the next row; the TD errors are therefore
    formed here and the reverse discounted sum is ``rlax.discounted_returns``.

    Args:
      r_t: `[T, B]` rewards.
      v_t: `[T, B]` values of the observations the actions were taken in.
      bootstrap_t: `[T, B]` value of the true successor of each step, i.e. of
        ``info["final_observation"]`` (ignored where terminated).
      terminated_t: `[T, B]` bool, the episode terminated at step t.
      truncated_t: `[T, B]` bool, the episode was truncated at step t.
      gamma: discount, scalar (may be traced).
      lambda_: GAE lambda, scalar (may be traced).

    Returns:
      ``(advantages, returns)``, each `[T, B]`; ``returns = advantages + v_t``
      are the value targets.
    """
    chex.assert_rank([r_t, v_t, bootstrap_t, terminated_t, truncated_t], 2)
    chex.assert_equal_shape([r_t, v_t, bootstrap_t, terminated_t, truncated_t])
    not_terminated = 1.0 - terminated_t.astype(r_t.dtype)
    not_done = 1.0 - jnp.logical_or(terminated_t, truncated_t).astype(r_t.dtype)
    delta_t = r_t + gamma * not_terminated * bootstrap_t - v_t
    trace_t = gamma * lambda_ * not_done
    advantages = _discounted_sum(delta_t, trace_t)
    return advantages, advantages + v_t


def n_step_targets(
    r_t: Array,
    bootstrap_t: Array,
    terminated_t: Array,
    truncated_t: Array,
    gamma: float | Array,
    lambda_: float | Array,
) -> Array:
    """TD(lambda) return targets ``G_t`` for `[T, B]` with truncation handled.

    ``G_t = r_t + gamma (1 - terminated_t) [(1 - lambda_t) b_t + lambda_t G_{t+1}]``
    with ``lambda_t = lambda * (1 - done_t)`` so the trace is cut at every
    episode end, and ``b_t`` the bootstrap value of step t's successor
    (e.g. ``max_a Q(next_obs_t, a)``). With ``lambda = 0`` this is the one-step target,
    with ``lambda = 1`` the Monte-Carlo return bootstrapped at the rollout end.
    """
    chex.assert_rank([r_t, bootstrap_t, terminated_t, truncated_t], 2)
    chex.assert_equal_shape([r_t, bootstrap_t, terminated_t, truncated_t])
    not_terminated = 1.0 - terminated_t.astype(r_t.dtype)
    not_done = 1.0 - jnp.logical_or(terminated_t, truncated_t).astype(r_t.dtype)
    lam_t = lambda_ * not_done
    # G_t = r_t + g_t (1-lam_t) b_t + g_t lam_t G_{t+1}: a discounted sum of
    # x_t = r_t + g_t (1 - lam_t) b_t with per-step discount g_t lam_t, where
    # the last step bootstraps fully (lam_{T-1} is treated as 0).
    g_t = gamma * not_terminated
    lam_t = lam_t.at[-1].set(0.0)
    x_t = r_t + g_t * (1.0 - lam_t) * bootstrap_t
    return _discounted_sum(x_t, g_t * lam_t)


def vtrace(
    r_t: Array,
    v_t: Array,
    bootstrap_t: Array,
    terminated_t: Array,
    truncated_t: Array,
    rho_t: Array,
    gamma: float | Array,
    lambda_: float | Array = 1.0,
    clip_rho_threshold: float | Array = 1.0,
    clip_pg_rho_threshold: float | Array = 1.0,
) -> tuple[Array, Array]:
    """V-trace targets and policy-gradient advantages (Espeholt et al., 2018, eq. 1 and 4).

    With ``rho_t = pi(a_t|x_t) / mu(a_t|x_t)``, ``rhobar_t = min(clip_rho_threshold, rho_t)``
    and ``c_t = lambda * min(1, rho_t)``::

        delta_t = rhobar_t (r_t + gamma (1 - terminated_t) b_t - V(x_t))
        v_s     = V(x_s) + delta_s + gamma c_s (1 - done_s) (v_{s+1} - V(x_{s+1}))
        A^pg_t  = min(clip_pg_rho_threshold, rho_t) (r_t + gamma (1 - terminated_t) q_t - V(x_t))

    where ``b_t`` is the value of step t's true successor (``info["final_observation"]`` on
    truncation) and ``q_t = v_{t+1}`` inside an episode, ``b_t`` at its end and at the
    rollout's last step. The trace is cut at every episode end (termination or truncation),
    as in ``gae_advantages``; rlax's ``vtrace_td_error_and_advantage`` reads the next row's
    target at truncations, so only its ``rlax.vtrace`` errors are used here. With
    ``rho_t = 1`` (on-policy) ``v_s`` are exactly the targets of ``gae_advantages`` with the
    same lambda.

    Args:
      r_t, v_t, bootstrap_t, rho_t: `[T, B]` rewards, values ``V(x_t)``, successor values and
        importance ratios.
      terminated_t, truncated_t: `[T, B]` bool.
      gamma, lambda_, clip_rho_threshold, clip_pg_rho_threshold: scalars (may be traced).

    Returns:
      ``(v_s, pg_advantages)``, each `[T, B]`, without gradient.
    """
    chex.assert_rank([r_t, v_t, bootstrap_t, terminated_t, truncated_t, rho_t], 2)
    chex.assert_equal_shape([r_t, v_t, bootstrap_t, terminated_t, truncated_t, rho_t])
    discount_t = gamma * (1.0 - terminated_t.astype(r_t.dtype))
    done_t = jnp.logical_or(terminated_t, truncated_t)
    lambda_t = lambda_ * (1.0 - done_t.astype(r_t.dtype))

    def one(v, b, r, d, rho, lam):
        return rlax.vtrace(v, b, r, d, rho, lam, clip_rho_threshold, stop_target_gradients=True)

    errors = jax.vmap(one, in_axes=1, out_axes=1)(v_t, bootstrap_t, r_t, discount_t, rho_t, lambda_t)
    v_s = jax.lax.stop_gradient(errors + v_t)
    next_target = jnp.concatenate([v_s[1:], bootstrap_t[-1:]], axis=0)
    q_t = jnp.where(done_t, bootstrap_t, next_target)
    pg_rho = jnp.minimum(clip_pg_rho_threshold, rho_t)
    return v_s, jax.lax.stop_gradient(pg_rho * (r_t + discount_t * q_t - v_t))
