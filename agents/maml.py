"""Model-agnostic meta-learning for RL (MAML; Finn et al., 2017, arXiv:1703.03400, Algorithm 3).

Meta-learns a policy initialisation ``theta`` from which K policy-gradient steps on a new task
give a good policy for it. One meta-update (one ``update``)::

    sample a batch of tasks T_i ~ p(T)                                        (sample_tasks)
    for every task, vmapped:                                                   (meta_loss)
        theta_0 = theta
        for k = 0 .. K-1:                                                      (adapt)
            D_k  = num_envs episodes of pi_{theta_k} in T_i                    (collect)
            theta_{k+1} = theta_k - alpha grad L(theta_k, D_k)                 (inner_step)
        D_K = num_envs episodes of pi_{theta_K} in T_i
        L_i(theta) = L(theta_K(theta), D_K)
    theta <- Adam step on grad_theta mean_i L_i(theta)                         (learn)

``L(theta, D) = -mean_{t, episodes} log pi_theta(a_t | s_t) A_t`` is the REINFORCE surrogate
(Williams, 1992) with ``A_t = G_t - b(s_t, t)``: ``G_t`` the discounted reward-to-go and ``b`` the
linear feature baseline of Duan et al. (2016) (``baseline="linear"``, as the MAML code), refitted
by ridge regression on each batch, or none; advantages are standardised per batch
(``normalize_advantages``, rllab's ``center_adv``). The data ``D_k`` are constants: gradients flow
through the inner updates, not through the sampling of actions, as in the paper's implementation.

Second order (default): ``jax.grad`` differentiates through the inner gradient steps, Hessian
terms included. ``first_order=True`` stops the gradient at each inner gradient (FOMAML: the
meta-gradient is the post-adaptation gradient evaluated at ``theta_K``).

Where this differs from the paper: the outer step is Adam on the post-adaptation surrogate (the
paper used TRPO); the baseline is refitted on each batch in closed form (rllab fits it on the
previous batch). ``num_inner_steps=0`` turns the agent into ordinary multi-task REINFORCE on the
mixed task distribution, the "pretrained" comparison of the paper's figures.

The task distribution is the env's: an env with a ``sample_task(key, env_params) -> env_params``
method (``envs.navigation.Navigation2D``) gives every task its own parameters; an env without one
is a single task (every task is ``env_params``). Each rollout starts from fresh resets and lasts
``num_steps`` steps; the return is the finite-horizon one, cut at every episode end and at the end
of the rollout, with no bootstrap (there is no critic; with ``num_steps`` equal to the episode
length, as in the paper's 2-D navigation where H = 100, each rollout is exactly one episode per
env, and the time limit is the task's horizon, not an interruption).

Defaults are the paper's 2-D navigation settings: 20 tasks per meta-update, 20 episodes per task
and rollout, H = 100, one inner step with alpha = 0.1, a (100, 100) ReLU policy, gamma = 0.99.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple

import chex
import distrax
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

import envs
from agents.networks import ACTIVATION, MLP, linear_head, policy_distribution
from rl.device import onpolicy
from rl.device.returns import n_step_targets
from rl.device.rollout import rollout
from rl.engine.runner import Algorithm, bind
from rl.errors import Count, NonNegativeCount, Positive, Unit, Widths, check, one_of, validate_config, validate_hyper

Array = chex.Array
BASELINES = ("linear", "none")
BASELINE_RIDGE = 1e-5  # rllab LinearFeatureBaseline's reg_coeff


@dataclass(frozen=True)
class Config:
    """Shape-setting settings of MAML: changing one recompiles."""

    meta_batch_size: Count = 20
    """tasks per meta-update (vmapped)"""
    num_envs: Count = 20
    """parallel environments (episodes) per task and rollout"""
    num_steps: Count = 100
    """steps per rollout (the paper's horizon H)"""
    num_inner_steps: NonNegativeCount = 1
    """K, policy-gradient steps of adaptation; 0: multi-task REINFORCE without adaptation"""
    first_order: bool = False
    """stop the gradient at the inner gradients (first-order MAML)"""
    baseline: Annotated[str, one_of(BASELINES)] = "linear"
    """linear (Duan et al.'s linear feature baseline, refitted per batch) or none"""
    normalize_advantages: bool = True
    """standardise advantages within each batch (rllab's center_adv)"""
    total_timesteps: Count = 20 * 20 * 100 * 2 * 200
    """env steps per run, all tasks and rollouts counted (rounded down to whole meta-updates)"""
    hidden_sizes: Widths = (100, 100)
    """hidden layer widths of the policy MLP"""
    activation: Annotated[str, ACTIVATION] = "relu"
    """hidden activation: one of tanh, relu, gelu, elu, silu, leaky_relu"""
    log_std_init: float | None = None
    """continuous actions only: initial log std of the state-independent Gaussian std (default 0)"""

    @property
    def steps_per_update(self) -> int:
        return self.meta_batch_size * (self.num_inner_steps + 1) * self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        return self.total_timesteps // self.steps_per_update

    def validate(self, action_space: Any) -> None:
        """Raise ``ConfigError`` naming the first invalid field."""
        validate_config(self)
        check(
            self.total_timesteps >= self.steps_per_update,
            "total_timesteps",
            self.total_timesteps,
            "must be at least one meta-update = meta_batch_size * (num_inner_steps + 1) * num_envs * num_steps "
            f"= {self.steps_per_update}",
        )
        check(
            self.log_std_init is None or not envs.is_discrete(action_space),
            "log_std_init",
            self.log_std_init,
            "applies to continuous action spaces only; this env's actions are discrete",
        )


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Hyper:
    """Traced settings of MAML: a sweep may give each a batch axis."""

    inner_lr: Positive = 0.1
    """alpha, step size of the inner (adaptation) SGD steps"""
    learning_rate: Positive = 1e-2
    """Adam step size of the outer (meta) update"""
    gamma: Unit = 0.99
    """discount of the reward-to-go"""
    max_grad_norm: Positive = 1.0
    """clip the meta-gradient to this global norm (optax.clip_by_global_norm)"""

    def validate(self) -> None:
        """Raise ``ConfigError`` for values outside their range (any shape)."""
        validate_hyper(self)


class State(NamedTuple):
    """Training carry of one MAML run (no env state: every rollout starts from resets)."""

    params: hk.Params  # the meta-learned initialisation theta
    opt_state: optax.OptState  # (clip, adam) states of the outer optimizer
    key: chex.PRNGKey  # this run's key, split every update
    update_idx: Array  # int32[] meta-updates done so far


class Batch(NamedTuple):
    """One rollout as policy-gradient data: every field `[T * B, ...]`, constants of the loss."""

    obs: Array
    action: Array
    advantage: Array  # A_t = G_t - b(s_t, t), standardised when normalize_advantages


class Static(NamedTuple):
    """What the factory closes over: settings, env, task sampler and network (not traced)."""

    config: Config
    env: Any  # vectorised env (num_envs copies)
    env_params: Any
    sample_task: Any  # (key, env_params) -> env_params of one task, or None: one task
    network: hk.Transformed
    discrete: bool


def network(config: Config, action_space: Any) -> hk.Transformed:
    """The policy ``obs[B, ...] -> policy_out``: an MLP, then logits or a Gaussian mean with a
    state-independent log std (read with ``agents.networks.policy_distribution``)."""
    discrete = envs.is_discrete(action_space)
    action_dim = action_space.n if discrete else int(np.prod(action_space.shape))
    log_std_init = 0.0 if config.log_std_init is None else config.log_std_init

    def forward(obs):
        features = MLP(config.hidden_sizes, config.activation, name="policy")(obs)
        out = linear_head(action_dim, 0.01, name="policy_head")(features)
        if discrete:
            return out
        log_std = hk.get_parameter("log_std", (action_dim,), init=hk.initializers.Constant(log_std_init))
        return out, jnp.broadcast_to(log_std, out.shape)

    return hk.without_apply_rng(hk.transform(forward))


def _policy(static: Static, params: hk.Params, obs: Array) -> distrax.Distribution:
    return policy_distribution(static.network.apply(params, obs), static.discrete)


def _optimizer(hyper: Hyper) -> optax.GradientTransformation:
    return onpolicy.optimizer(hyper.max_grad_norm, hyper.learning_rate, optax.scale_by_adam())


def init(static: Static, key: chex.PRNGKey, hyper: Hyper) -> State:
    """Fresh initialisation theta and outer optimizer state for one run."""
    key, net_key, env_key = jax.random.split(key, 3)
    obs, _ = static.env.reset(env_key, static.env_params)
    params = static.network.init(net_key, obs)
    return State(params=params, opt_state=_optimizer(hyper).init(params), key=key, update_idx=jnp.int32(0))


def act(static: Static, params: hk.Params, obs: Array, key: chex.PRNGKey, deterministic: bool = False) -> Array:
    """Actions for a batch of observations `[B, ...]` (mode if deterministic)."""
    dist = _policy(static, params, obs)
    return dist.mode() if deterministic else dist.sample(seed=key)


def sample_tasks(static: Static, key: chex.PRNGKey, num_tasks: int) -> Any:
    """``num_tasks`` task parameters (every leaf with a leading task axis) from the env's distribution."""
    if static.sample_task is None:
        return jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x), (num_tasks, *jnp.shape(x))), static.env_params)
    return jax.vmap(static.sample_task, in_axes=(0, None))(jax.random.split(key, num_tasks), static.env_params)


def collect(static: Static, params: hk.Params, task: Any, key: chex.PRNGKey):
    """``num_envs`` fresh episodes of ``pi_params`` in ``task``, ``num_steps`` steps each.

    Returns ``(transitions [T, B], EpisodeStats)``. The actions are data: no gradient flows
    into the sampling.
    """
    params = jax.lax.stop_gradient(params)
    reset_key, rollout_key = jax.random.split(key)
    obs, env_state = static.env.reset(reset_key, task)

    def policy(obs, k):
        return _policy(static, params, obs).sample(seed=k), ()

    transitions, _, _, stats = rollout(static.env, task, policy, env_state, obs, rollout_key, static.config.num_steps)
    return transitions, stats


def episode_time(terminated_t: Array, truncated_t: Array) -> Array:
    """Steps since the episode began, `[T, B]` int32, for a rollout that starts at a reset."""
    done_t = jnp.logical_or(terminated_t, truncated_t)

    def step(t, done):
        return jnp.where(done, 0, t + 1), t

    _, time_t = jax.lax.scan(step, jnp.zeros(done_t.shape[1], jnp.int32), done_t)
    return time_t


def linear_baseline(obs_t: Array, time_t: Array, return_t: Array) -> Array:
    """Duan et al.'s (2016) linear feature baseline, fitted to ``return_t`` and evaluated there.

    Features ``[o, o^2, t/100, (t/100)^2, (t/100)^3, 1]`` with ``o = clip(obs, -10, 10)``
    (rllab's ``LinearFeatureBaseline``), least squares with ridge ``1e-5``, solved as the least
    squares problem of the features stacked on ``sqrt(1e-5) I`` (SVD: no NaN where the normal
    equations are singular in f32, e.g. a feature constant over the batch).

    Args:
      obs_t: `[N, ...]` observations.
      time_t: `[N]` steps since the episode began.
      return_t: `[N]` returns to fit.

    Returns:
      `[N]` baseline values (a constant of the loss: gradients stopped).
    """
    chex.assert_rank([time_t, return_t], 1)
    o = jnp.clip(obs_t.reshape(obs_t.shape[0], -1).astype(jnp.float32), -10.0, 10.0)
    t = (time_t.astype(jnp.float32) / 100.0)[:, None]
    features = jnp.concatenate([o, o**2, t, t**2, t**3, jnp.ones_like(t)], axis=1)
    width = features.shape[1]
    stacked = jnp.concatenate([features, jnp.sqrt(BASELINE_RIDGE) * jnp.eye(width)], axis=0)
    weights = jnp.linalg.lstsq(stacked, jnp.concatenate([return_t, jnp.zeros(width)]))[0]
    return jax.lax.stop_gradient(features @ weights)


def targets(static: Static, transitions, hyper: Hyper) -> Batch:
    """Reward-to-go minus the baseline, flattened to a `[T * B]` batch.

    ``G_t = r_t + gamma (1 - done_t) G_{t+1}``, zero after the rollout's last step
    (``rl.device.returns.n_step_targets`` with lambda = 1 and zero bootstrap values).
    """
    reward = transitions.reward
    g = n_step_targets(reward, jnp.zeros_like(reward), transitions.terminated, transitions.truncated, hyper.gamma, 1.0)
    g = onpolicy.flatten_time(g[..., None])[:, 0]
    obs = onpolicy.flatten_time(transitions.obs)
    if static.config.baseline == "linear":
        time_t = onpolicy.flatten_time(episode_time(transitions.terminated, transitions.truncated)[..., None])[:, 0]
        advantage = g - linear_baseline(obs, time_t, g)
    else:
        advantage = g
    if static.config.normalize_advantages:
        advantage = onpolicy.normalize(advantage)
    batch = Batch(obs=obs, action=onpolicy.flatten_time(transitions.action), advantage=advantage)
    return jax.lax.stop_gradient(batch)


def loss(static: Static, params: hk.Params, batch: Batch) -> Array:
    """REINFORCE surrogate ``L = -mean_n log pi_params(a_n | s_n) A_n`` on a batch `[N]`.

    Its gradient is the policy gradient estimate (Williams, 1992); ``A`` is data.
    """
    chex.assert_rank(batch.advantage, 1)
    return -jnp.mean(_policy(static, params, batch.obs).log_prob(batch.action) * batch.advantage)


def inner_step(static: Static, params: hk.Params, batch: Batch, hyper: Hyper) -> hk.Params:
    """One SGD step of adaptation, ``params - inner_lr * grad L(params, batch)``.

    Differentiable in ``params`` (second order); with ``first_order`` the inner gradient is a
    constant of the meta-gradient.
    """
    grads = jax.grad(loss, argnums=1)(static, params, batch)
    if static.config.first_order:
        grads = jax.lax.stop_gradient(grads)
    return jax.tree.map(lambda p, g: p - hyper.inner_lr * g, params, grads)


def adapt(static: Static, params: hk.Params, task: Any, key: chex.PRNGKey, hyper: Hyper, num_inner_steps: int):
    """``num_inner_steps`` rounds of collect -> inner_step in one task.

    Returns ``(adapted params, [EpisodeStats of each round's rollout])``.
    """
    stats = []
    for step_key in jax.random.split(key, num_inner_steps):
        transitions, step_stats = collect(static, params, task, step_key)
        params = inner_step(static, params, targets(static, transitions, hyper), hyper)
        stats.append(step_stats)
    return params, stats


def meta_loss(static: Static, params: hk.Params, task: Any, key: chex.PRNGKey, hyper: Hyper):
    """``L(theta_K(params), D_K)`` in one task, with the episode statistics of the first and of the
    last (post-adaptation) rollout: ``(loss, (pre EpisodeStats, post EpisodeStats))``."""
    adapt_key, post_key = jax.random.split(key)
    adapted, stats = adapt(static, params, task, adapt_key, hyper, static.config.num_inner_steps)
    transitions, post = collect(static, adapted, task, post_key)
    pre = stats[0] if stats else post
    return loss(static, adapted, targets(static, transitions, hyper)), (pre, post)


def learn(static: Static, state: State, tasks: Any, hyper: Hyper, key: chex.PRNGKey):
    """One Adam step on the meta-gradient ``grad_theta mean_i L_i(theta)`` over the task batch."""

    def batch_loss(params):
        keys = jax.random.split(key, static.config.meta_batch_size)
        losses, stats = jax.vmap(meta_loss, in_axes=(None, None, 0, 0, None))(static, params, tasks, keys, hyper)
        pre, post = jax.tree.map(jnp.sum, stats)  # EpisodeStats are sums: add up the tasks'
        return losses.mean(), {"pre": pre, "post": post}

    return onpolicy.gradient_step(lambda p, _: batch_loss(p), _optimizer(hyper), state.params, state.opt_state, None)


def update(static: Static, state: State, hyper: Hyper) -> tuple[State, dict[str, Array]]:
    """One meta-update: sample tasks, adapt in each, one outer step; pre/post-adaptation returns."""
    key, task_key, learn_key = jax.random.split(state.key, 3)
    tasks = sample_tasks(static, task_key, static.config.meta_batch_size)
    params, opt_state, out = learn(static, state, tasks, hyper, learn_key)
    pre, post = out.pop("pre"), out.pop("post")
    metrics = {
        **out,
        **post.as_metrics(),  # episode_return: the post-adaptation return, MAML's objective
        "pre_return": pre.as_metrics()["episode_return"],
        "post_return": post.as_metrics()["episode_return"],
    }
    new_state = state._replace(params=params, opt_state=opt_state, key=key, update_idx=state.update_idx + 1)
    return new_state, metrics


def adaptation_returns(
    static: Static, params: hk.Params, tasks: Any, key: chex.PRNGKey, hyper: Hyper, num_inner_steps: int
) -> Array:
    """Mean return over ``tasks`` (leading task axis) after 0, 1, ..., ``num_inner_steps`` inner steps
    from ``params``, each step on a fresh rollout of ``num_envs`` episodes: `[num_inner_steps + 1]`.

    The evaluation of the paper's adaptation figures (held-out tasks: draw ``tasks`` from a key
    that training never used).
    """

    def one_task(task, task_key):
        returns, p = [], params
        for i, step_key in enumerate(jax.random.split(task_key, num_inner_steps + 1)):
            transitions, stats = collect(static, p, task, step_key)
            returns.append(stats.as_metrics()["episode_return"])
            if i < num_inner_steps:
                p = inner_step(static, p, targets(static, transitions, hyper), hyper)
        return jnp.stack(returns)

    num_tasks = jax.tree.leaves(tasks)[0].shape[0]
    return jax.vmap(one_task)(tasks, jax.random.split(key, num_tasks)).mean(axis=0)


def build(config: Config, env: Any, env_params: Any) -> Static:
    """Validate ``config`` and close over the env (its ``sample_task``, if any, is the task
    distribution) and the network."""
    action_space = env.action_space(env_params)
    config.validate(action_space)
    venv = envs.vectorize(env, config.num_envs)
    sampler = getattr(env, "sample_task", None)
    return Static(config, venv, env_params, sampler, network(config, action_space), envs.is_discrete(action_space))


def make(config: Config, env: Any, env_params: Any) -> Algorithm:
    """Build MAML for ``env``: validates ``config`` first, compiles nothing."""
    static = build(config, env, env_params)
    return bind("maml", static, init, update, act, config.steps_per_update, config.num_updates)
