"""Meta-gradient RL (Xu, van Hasselt and Silver, 2018, arXiv:1805.09801): an actor-critic whose
discount gamma and GAE lambda are meta-parameters, learned online through one update.

The return ``g_eta(tau)`` (GAE(lambda) targets with ``gamma = sigmoid(eta_gamma)`` and
``lambda = sigmoid(eta_lambda)``) shapes the update ``theta' = theta + f(tau, theta, eta)``; the
meta-parameters follow the gradient of a validation objective on the *next* rollout ``tau'``,
played by ``theta'``, with fixed reference values ``gamma_bar, lambda_bar`` (eq. 2-4)::

    state holds theta, eta and tau (the rollout theta collected)
    theta' = theta + f(tau, theta, eta)                   one A2C step, RMSprop (inner_update)
    tau'   = T steps in each of B envs with pi_theta'      (collect)
    eta   <- eta - beta grad_eta J'(tau', theta'(eta), eta_bar)     (meta_loss, via jax.vjp)
    state <- theta', eta, tau'

``f`` is A2C's step (policy gradient + ``vf_coef`` value loss - ``ent_coef`` entropy, as
``agents.a2c``) through global-norm clipping and RMSprop; ``dtheta'/deta`` differentiates the whole
step (the RMSprop accumulator carried in from earlier updates is a constant). The validation
objective is the policy-gradient term only, eq. 13 of the paper:
``J' = -mean log pi_theta'(a|s) (g_eta_bar(tau') - v_theta'(s))`` with the advantage a constant.
Each rollout is collected once: it is the validation data of one update and the training data of
the next. ``init`` collects the first one (those ``T * B`` steps are not counted in the budget).

Where this differs from the paper: the paper conditioned the policy and value on eta (an embedding
of it appended to the features); here they are not. Its meta-optimiser was Adam (as here) on
IMPALA; here the inner learner is A2C. Truncation is not termination: the targets bootstrap from
``info["final_observation"]`` on truncation (``rl.device.returns.gae_advantages``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import optax

import envs
from agents.networks import (
    ACTIVATION,
    actor_critic_act,
    actor_critic_of,
    policy_and_value,
)
from rl.device import onpolicy
from rl.device.returns import gae_advantages
from rl.device.rollout import rollout
from rl.engine.runner import Algorithm, bind
from rl.errors import (
    Count,
    NonNegative,
    Positive,
    Rule,
    Unit,
    Widths,
    check,
    validate_config,
    validate_hyper,
)

Array = chex.Array
RMS_DECAY = 0.99
OPEN_UNIT = Annotated[float, Rule(lambda v: (v > 0) & (v < 1), "must lie in (0, 1) (a sigmoid's value)")]


@dataclass(frozen=True)
class Config(onpolicy.Rollout):
    """Shape-setting settings of meta-gradient A2C: changing one recompiles."""

    num_envs: Count = 16
    """parallel environments per run"""
    num_steps: Count = 8
    """steps collected in each environment per update (rollout length T)"""
    total_timesteps: Count = 500_000
    """env steps per run (rounded down to whole updates)"""
    hidden_sizes: Widths = (64, 64)
    """hidden layer widths of the actor and of the critic MLP"""
    activation: Annotated[str, ACTIVATION] = "tanh"
    """hidden activation: one of tanh, relu, gelu, elu, silu, leaky_relu"""
    meta_gamma: bool = True
    """meta-learn the discount (else it stays at gamma_init)"""
    meta_lambda: bool = True
    """meta-learn lambda (else it stays at lambda_init)"""

    def validate(self, action_space: Any) -> None:
        """Raise ``ConfigError`` naming the first invalid field."""
        validate_config(self)
        check(
            self.total_timesteps >= self.batch_size,
            "total_timesteps",
            self.total_timesteps,
            f"must be at least one update = num_envs * num_steps = {self.batch_size}",
        )


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Hyper:
    """Traced settings: a sweep may give each a batch axis."""

    learning_rate: Positive = 7e-4
    """RMSprop step size of the actor-critic (the inner update)"""
    meta_learning_rate: Positive = 1e-3
    """beta, Adam step size of the meta-parameters (on their logits)"""
    gamma_init: OPEN_UNIT = 0.99
    """initial discount gamma = sigmoid(eta_gamma)"""
    lambda_init: OPEN_UNIT = 0.9
    """initial GAE lambda = sigmoid(eta_lambda)"""
    gamma_ref: Unit = 0.99
    """gamma_bar of the validation objective (fixed)"""
    lambda_ref: Unit = 1.0
    """lambda_bar of the validation objective (fixed)"""
    ent_coef: NonNegative = 0.01
    """entropy bonus coefficient of the inner loss"""
    vf_coef: NonNegative = 0.5
    """value loss coefficient of the inner loss"""
    max_grad_norm: Positive = 0.5
    """clip the inner gradient to this global norm"""
    rms_prop_eps: Positive = 1e-5
    """RMSprop epsilon, outside the square root as in PyTorch (as agents.a2c)"""

    def validate(self) -> None:
        """Raise ``ConfigError`` for values outside their range (any shape)."""
        validate_hyper(self)


class State(NamedTuple):
    """Training carry of one run."""

    params: hk.Params  # actor-critic theta
    opt_state: optax.OptState  # (clip, rms) states of the inner optimizer
    meta_params: Array  # f32[2] eta = (logit gamma, logit lambda)
    meta_opt_state: optax.OptState  # Adam state of eta
    transitions: Any  # [T, B] the rollout theta collected (the next update's training data)
    env_state: Any  # vectorised env state after that rollout
    obs: Array  # [num_envs, *obs_shape] observations after that rollout
    key: chex.PRNGKey
    update_idx: Array  # int32[]


class Batch(NamedTuple):
    """Flattened policy-gradient data: every field `[T * B, ...]`."""

    obs: Array
    action: Array
    advantage: Array
    target: Array


class Static(NamedTuple):
    config: Config
    env: Any  # vectorised env
    env_params: Any
    network: hk.Transformed
    discrete: bool
    truncation_bound: int | None = None  # onpolicy.truncation_bound of the raw env (None: unknown)


def discount_and_lambda(meta_params: Array) -> tuple[Array, Array]:
    """``(gamma, lambda) = sigmoid(eta)``."""
    chex.assert_shape(meta_params, (2,))
    values = jax.nn.sigmoid(meta_params)
    return values[0], values[1]


def _safe_sqrt(x: Array) -> Array:
    """``sqrt(x)`` with derivative 0 at ``x = 0`` (``jnp.sqrt``'s is infinite there)."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def scale_by_rms(decay: float, eps: Array) -> optax.GradientTransformation:
    """``optax.scale_by_rms(decay, eps, eps_in_sqrt=False)`` (SB3's RMSprop, as ``agents.a2c``),
    the same numbers, differentiable at a zero second moment.

    The meta-gradient differentiates the inner step through ``1 / (sqrt(nu) + eps)``. A parameter
    whose gradient has always been 0 (the logits of a single-action space, a dead ReLU unit) has
    ``nu = 0``, where ``jnp.sqrt``'s infinite derivative times its zero input derivative is NaN,
    and one NaN makes gamma and lambda NaN for good. Its derivative here is 0, the limit.
    """

    def init_fn(params: Any) -> optax.ScaleByRmsState:
        return optax.ScaleByRmsState(nu=optax.tree.zeros_like(params))

    def update_fn(updates: Any, state: optax.ScaleByRmsState, params: Any = None):
        del params
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, decay, 2)
        updates = jax.tree.map(lambda n, g: (1 / (_safe_sqrt(n) + eps)) * g, nu, updates)
        return updates, optax.ScaleByRmsState(nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def clip_by_global_norm(max_norm: Array) -> optax.GradientTransformation:
    """``optax.clip_by_global_norm``, the same numbers, differentiable at an all-zero gradient
    (a value fitted exactly on a probe): there optax's norm and its untaken ``t / norm`` branch
    have NaN derivatives, and the meta-gradient would carry them into gamma and lambda."""

    def update_fn(updates: Any, state: optax.EmptyState, params: Any = None):
        del params
        norm = _safe_sqrt(optax.tree.norm(updates, squared=True))
        trigger = norm < max_norm
        divisor = jnp.where(trigger, 1.0, norm)
        clipped = jax.tree.map(lambda t: jax.lax.select(trigger, t, (t / divisor.astype(t.dtype)) * max_norm), updates)
        return clipped, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def _optimizer(hyper: Hyper) -> optax.GradientTransformation:
    """A2C's optimizer (``rl.device.onpolicy.optimizer`` with SB3's RMSprop), differentiable everywhere."""
    return optax.chain(
        clip_by_global_norm(hyper.max_grad_norm),
        scale_by_rms(RMS_DECAY, hyper.rms_prop_eps),
        optax.scale(-hyper.learning_rate),
    )


def _meta_optimizer(hyper: Hyper) -> optax.GradientTransformation:
    return optax.adam(hyper.meta_learning_rate)


_policy = policy_and_value


def collect(static: Static, params: hk.Params, env_state: Any, obs: Array, key: chex.PRNGKey):
    """T steps in every env with ``pi_params``; extras are the values ``V(s_t)``."""
    params = jax.lax.stop_gradient(params)

    def policy(obs, k):
        dist, value = _policy(static, params, obs)
        return dist.sample(seed=k), value

    return rollout(static.env, static.env_params, policy, env_state, obs, key, static.config.num_steps)


def init(static: Static, key: chex.PRNGKey, hyper: Hyper) -> State:
    """Fresh theta, eta = logit(gamma_init, lambda_init), and the first rollout."""
    key, net_key, env_key, rollout_key = jax.random.split(key, 4)
    obs, env_state = static.env.reset(env_key, static.env_params)
    params = static.network.init(net_key, obs)
    meta_params = jax.scipy.special.logit(jnp.stack([hyper.gamma_init, hyper.lambda_init]).astype(jnp.float32))
    transitions, env_state, obs, _ = collect(static, params, env_state, obs, rollout_key)
    return State(
        params=params,
        opt_state=_optimizer(hyper).init(params),
        meta_params=meta_params,
        meta_opt_state=_meta_optimizer(hyper).init(meta_params),
        transitions=transitions,
        env_state=env_state,
        obs=obs,
        key=key,
        update_idx=jnp.int32(0),
    )


act = actor_critic_act  # actions for a batch of observations `[B, ...]` (mode if deterministic)


def targets(static: Static, params: hk.Params, transitions, gamma: Array, lambda_: Array) -> Batch:
    """GAE(lambda) advantages and lambda-return targets under ``(gamma, lambda_)``, `[T * B]`.

    Differentiable in ``gamma`` and ``lambda_``; the values (of ``params``) are constants.
    """
    value = jax.lax.stop_gradient(transitions.extras)  # the rollout was collected with ``params``
    value_of = lambda obs: static.network.apply(params, obs)[1]  # noqa: E731
    next_value = onpolicy.successor_values(value_of, value, transitions, static.truncation_bound)
    advantage, target = gae_advantages(
        transitions.reward,
        value,
        jax.lax.stop_gradient(next_value).reshape(transitions.reward.shape),
        transitions.terminated,
        transitions.truncated,
        gamma,
        lambda_,
    )
    batch = Batch(obs=transitions.obs, action=transitions.action, advantage=advantage, target=target)
    return onpolicy.flatten_time(batch)


def loss(static: Static, params: hk.Params, batch: Batch, hyper: Hyper):
    """A2C's loss ``-mean(log pi A) + vf_coef mean((V - G)^2) - ent_coef mean(H)`` (as ``agents.a2c``)."""
    chex.assert_rank([batch.advantage, batch.target], 1)
    dist, value = _policy(static, params, batch.obs)
    policy_loss = -jnp.mean(dist.log_prob(batch.action) * batch.advantage)
    value_loss = jnp.mean(jnp.square(value - batch.target))
    entropy = dist.entropy().mean()
    total = policy_loss + hyper.vf_coef * value_loss - hyper.ent_coef * entropy
    return total, {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy}


def inner_update(static: Static, meta_params: Array, state: State, hyper: Hyper):
    """``theta' = theta + f(tau, theta, eta)``: one clipped RMSprop step on A2C's loss of the stored
    rollout, a differentiable function of ``meta_params``. Returns ``(theta', (opt_state', metrics))``."""
    gamma, lambda_ = discount_and_lambda(meta_params)
    if not static.config.meta_gamma:
        gamma = jax.lax.stop_gradient(gamma)
    if not static.config.meta_lambda:
        lambda_ = jax.lax.stop_gradient(lambda_)
    batch = targets(static, state.params, state.transitions, gamma, lambda_)
    grads, metrics = jax.grad(lambda p: loss(static, p, batch, hyper), has_aux=True)(state.params)
    updates, opt_state = _optimizer(hyper).update(grads, state.opt_state, state.params)
    metrics = {**metrics, "grad_norm": optax.tree.norm(grads)}
    return optax.apply_updates(state.params, updates), (opt_state, metrics)


def meta_loss(static: Static, params: hk.Params, transitions, hyper: Hyper) -> Array:
    """The validation objective on ``tau'``: ``J' = -mean log pi_params(a|s) A_bar`` with ``A_bar``
    the GAE advantage under the reference ``(gamma_ref, lambda_ref)`` (a constant)."""
    batch = targets(static, params, transitions, hyper.gamma_ref, hyper.lambda_ref)
    dist, _ = _policy(static, params, batch.obs)
    return -jnp.mean(dist.log_prob(batch.action) * jax.lax.stop_gradient(batch.advantage))


def update(static: Static, state: State, hyper: Hyper) -> tuple[State, dict[str, Array]]:
    """Inner update on the stored rollout, the next rollout with theta', one meta step on eta."""
    key, rollout_key = jax.random.split(state.key)
    params, vjp_fn, (opt_state, metrics) = jax.vjp(
        lambda eta: inner_update(static, eta, state, hyper), state.meta_params, has_aux=True
    )
    transitions, env_state, obs, episodes = collect(static, params, state.env_state, state.obs, rollout_key)
    validation, dparams = jax.value_and_grad(lambda p: meta_loss(static, p, transitions, hyper))(params)
    (meta_grad,) = vjp_fn(dparams)
    updates, meta_opt_state = _meta_optimizer(hyper).update(meta_grad, state.meta_opt_state, state.meta_params)
    meta_params = optax.apply_updates(state.meta_params, updates)
    gamma, lambda_ = discount_and_lambda(meta_params)
    new_state = State(
        params=params,
        opt_state=opt_state,
        meta_params=meta_params,
        meta_opt_state=meta_opt_state,
        transitions=transitions,
        env_state=env_state,
        obs=obs,
        key=key,
        update_idx=state.update_idx + 1,
    )
    metrics = {
        **metrics,
        **episodes.as_metrics(),
        "meta_loss": validation,
        "meta_grad_norm": jnp.linalg.norm(meta_grad),
        "gamma": gamma,
        "lambda": lambda_,
    }
    return new_state, metrics


def build(config: Config, env: Any, env_params: Any) -> Static:
    action_space = env.action_space(env_params)
    config.validate(action_space)
    venv = envs.vectorize(env, config.num_envs)
    network = actor_critic_of(config, action_space)
    bound = onpolicy.truncation_bound(env, env_params, config.num_steps)
    return Static(config, venv, env_params, network, envs.is_discrete(action_space), bound)


def make(config: Config, env: Any, env_params: Any) -> Algorithm:
    """Build meta-gradient A2C for ``env``: validates ``config`` first, compiles nothing."""
    static = build(config, env, env_params)
    return bind("metagrad", static, init, update, act, config.batch_size, config.num_updates)
