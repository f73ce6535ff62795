"""A plain single-file PPO in the PureJaxRL style, for speed comparison only.

This is the shape of PureJaxRL's ``ppo.py`` (Lu et al., 2022): flax.linen
actor-critic, environments vmapped by hand, everything in one nested ``train``
closure jitted and vmapped over seeds (only the network init is mapped seed by
seed: see ``train_seeds``). It treats ``terminated or truncated`` as one
``done`` flag, and keeps the episode statistics of PureJaxRL's LogWrapper
(``log_step``), returning them at every step as its metrics, as PureJaxRL does.
With the same config and keys it computes the same parameters as PureJaxRL's
own ppo.py (bit for bit on a CPU; checked with ``--purejaxrl`` at 1 and 16
seeds), so the benchmark can stand it in for PureJaxRL without a checkout.
``experiments.benchmark`` times it next to the library's PPO at the same
settings on the same machine; it is not used anywhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import distrax
import flax.linen as nn
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.linen.initializers import constant, orthogonal
from flax.training.train_state import TrainState

CONFIG = dict(
    LR=2.5e-4,
    NUM_ENVS=4,
    NUM_STEPS=128,
    TOTAL_TIMESTEPS=500_000,
    UPDATE_EPOCHS=4,
    NUM_MINIBATCHES=4,
    GAMMA=0.99,
    GAE_LAMBDA=0.95,
    CLIP_EPS=0.2,
    ENT_COEF=0.01,
    VF_COEF=0.5,
    MAX_GRAD_NORM=0.5,
    ENV_NAME="CartPole-v1",
    ANNEAL_LR=True,
)


class ActorCritic(nn.Module):
    action_dim: Sequence[int]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x):
        act = nn.relu if self.activation == "relu" else nn.tanh
        a = act(nn.Dense(64, kernel_init=orthogonal(np.sqrt(2)), bias_init=constant(0.0))(x))
        a = act(nn.Dense(64, kernel_init=orthogonal(np.sqrt(2)), bias_init=constant(0.0))(a))
        logits = nn.Dense(self.action_dim, kernel_init=orthogonal(0.01), bias_init=constant(0.0))(a)
        c = act(nn.Dense(64, kernel_init=orthogonal(np.sqrt(2)), bias_init=constant(0.0))(x))
        c = act(nn.Dense(64, kernel_init=orthogonal(np.sqrt(2)), bias_init=constant(0.0))(c))
        value = nn.Dense(1, kernel_init=orthogonal(1.0), bias_init=constant(0.0))(c)
        return distrax.Categorical(logits=logits), jnp.squeeze(value, axis=-1)


class Transition(NamedTuple):
    done: jnp.ndarray
    action: jnp.ndarray
    value: jnp.ndarray
    reward: jnp.ndarray
    log_prob: jnp.ndarray
    obs: jnp.ndarray
    info: dict


class LogState(NamedTuple):
    """PureJaxRL's LogWrapper statistics, one value per env."""

    episode_returns: jnp.ndarray  # float32: return so far of the running episode
    episode_lengths: jnp.ndarray  # int32
    returned_episode_returns: jnp.ndarray  # float32: return of the last episode that ended
    returned_episode_lengths: jnp.ndarray  # int32
    timestep: jnp.ndarray  # int32: steps taken


def log_step(log: LogState, reward, done, info):
    """LogWrapper's update after one step, and the info it returns (PureJaxRL's per-step metrics)."""
    new_return, new_length = log.episode_returns + reward, log.episode_lengths + 1
    log = LogState(
        episode_returns=new_return * (1 - done),
        episode_lengths=new_length * (1 - done),
        returned_episode_returns=log.returned_episode_returns * (1 - done) + new_return * done,
        returned_episode_lengths=log.returned_episode_lengths * (1 - done) + new_length * done,
        timestep=log.timestep + 1,
    )
    info = {
        "discount": info["discount"],
        "returned_episode_returns": log.returned_episode_returns,
        "returned_episode_lengths": log.returned_episode_lengths,
        "timestep": log.timestep,
        "returned_episode": done,
    }
    return log, info


def make_train(config):
    num_updates = config["TOTAL_TIMESTEPS"] // config["NUM_STEPS"] // config["NUM_ENVS"]
    minibatch_size = config["NUM_ENVS"] * config["NUM_STEPS"] // config["NUM_MINIBATCHES"]
    env, env_params = gymnax.make(config["ENV_NAME"])

    def linear_schedule(count):
        frac = 1.0 - (count // (config["NUM_MINIBATCHES"] * config["UPDATE_EPOCHS"])) / num_updates
        return config["LR"] * frac

    network = ActorCritic(env.action_space(env_params).n, activation=config.get("ACTIVATION", "tanh"))

    def init(rng):
        _, _rng = jax.random.split(rng)
        return network.init(_rng, jnp.zeros(env.observation_space(env_params).shape))

    def train(rng, network_params=None):
        rng, _rng = jax.random.split(rng)
        if network_params is None:
            network_params = network.init(_rng, jnp.zeros(env.observation_space(env_params).shape))
        tx = optax.chain(
            optax.clip_by_global_norm(config["MAX_GRAD_NORM"]), optax.adam(learning_rate=linear_schedule, eps=1e-5)
        )
        train_state = TrainState.create(apply_fn=network.apply, params=network_params, tx=tx)
        rng, _rng = jax.random.split(rng)
        obsv, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(_rng, config["NUM_ENVS"]), env_params)
        zeros = jnp.zeros(config["NUM_ENVS"])
        ints = jnp.zeros(config["NUM_ENVS"], jnp.int32)
        log = LogState(zeros, ints, zeros, ints, ints)

        def _update_step(runner_state, unused):
            def _env_step(runner_state, unused):
                train_state, env_state, last_obs, log, rng = runner_state
                rng, _rng = jax.random.split(rng)
                pi, value = network.apply(train_state.params, last_obs)
                action = pi.sample(seed=_rng)
                log_prob = pi.log_prob(action)
                rng, _rng = jax.random.split(rng)
                obsv, env_state, reward, term, trunc, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                    jax.random.split(_rng, config["NUM_ENVS"]), env_state, action, env_params
                )
                done = jnp.logical_or(term, trunc)
                log, info = log_step(log, reward, done, info)
                transition = Transition(done, action, value, reward, log_prob, last_obs, info)
                return (train_state, env_state, obsv, log, rng), transition

            runner_state, traj_batch = jax.lax.scan(_env_step, runner_state, None, config["NUM_STEPS"])
            train_state, env_state, last_obs, log, rng = runner_state
            _, last_val = network.apply(train_state.params, last_obs)

            def _calculate_gae(traj_batch, last_val):
                def _get_advantages(gae_and_next_value, transition):
                    gae, next_value = gae_and_next_value
                    delta = transition.reward + config["GAMMA"] * next_value * (1 - transition.done) - transition.value
                    gae = delta + config["GAMMA"] * config["GAE_LAMBDA"] * (1 - transition.done) * gae
                    return (gae, transition.value), gae

                _, advantages = jax.lax.scan(
                    _get_advantages, (jnp.zeros_like(last_val), last_val), traj_batch, reverse=True, unroll=16
                )
                return advantages, advantages + traj_batch.value

            advantages, targets = _calculate_gae(traj_batch, last_val)

            def _update_epoch(update_state, unused):
                def _update_minbatch(train_state, batch_info):
                    traj_batch, advantages, targets = batch_info

                    def _loss_fn(params, traj_batch, gae, targets):
                        pi, value = network.apply(params, traj_batch.obs)
                        log_prob = pi.log_prob(traj_batch.action)
                        value_pred_clipped = traj_batch.value + (value - traj_batch.value).clip(
                            -config["CLIP_EPS"], config["CLIP_EPS"]
                        )
                        value_loss = (
                            0.5
                            * jnp.maximum(jnp.square(value - targets), jnp.square(value_pred_clipped - targets)).mean()
                        )
                        ratio = jnp.exp(log_prob - traj_batch.log_prob)
                        gae = (gae - gae.mean()) / (gae.std() + 1e-8)
                        loss_actor = -jnp.minimum(
                            ratio * gae,
                            jnp.clip(ratio, 1.0 - config["CLIP_EPS"], 1.0 + config["CLIP_EPS"]) * gae,
                        ).mean()
                        entropy = pi.entropy().mean()
                        return loss_actor + config["VF_COEF"] * value_loss - config["ENT_COEF"] * entropy

                    grads = jax.grad(_loss_fn)(train_state.params, traj_batch, advantages, targets)
                    return train_state.apply_gradients(grads=grads), None

                train_state, traj_batch, advantages, targets, rng = update_state
                rng, _rng = jax.random.split(rng)
                batch_size = minibatch_size * config["NUM_MINIBATCHES"]
                permutation = jax.random.permutation(_rng, batch_size)
                batch = jax.tree.map(
                    lambda x: x.reshape((batch_size,) + x.shape[2:]), (traj_batch, advantages, targets)
                )
                shuffled = jax.tree.map(lambda x: jnp.take(x, permutation, axis=0), batch)
                minibatches = jax.tree.map(
                    lambda x: jnp.reshape(x, [config["NUM_MINIBATCHES"], -1] + list(x.shape[1:])), shuffled
                )
                train_state, _ = jax.lax.scan(_update_minbatch, train_state, minibatches)
                return (train_state, traj_batch, advantages, targets, rng), None

            update_state = (train_state, traj_batch, advantages, targets, rng)
            update_state, _ = jax.lax.scan(_update_epoch, update_state, None, config["UPDATE_EPOCHS"])
            train_state, rng = update_state[0], update_state[-1]
            return (train_state, env_state, last_obs, log, rng), traj_batch.info

        rng, _rng = jax.random.split(rng)
        runner_state = (train_state, env_state, obsv, log, _rng)
        runner_state, metric = jax.lax.scan(_update_step, runner_state, None, num_updates)
        return {"runner_state": runner_state, "metrics": metric}

    def train_seeds(rngs):
        """``vmap(train)`` over seeds, with each seed's network initialised by ``lax.map``.

        PureJaxRL vmaps ``train`` whole, so its orthogonal initialisers become one
        batched LAPACK QR; on a 2-core CPU jaxlib runs two of those at once on its
        2-thread pool, each waits for work the other blocks, and the process
        hangs (gdb: both workers in ``jax::ParallelBatchMap`` of ``sgeqrf``).
        Initialising seed by seed, as the library does, avoids it; init runs
        once, so the training loop timed here is PureJaxRL's as it is.
        """
        return jax.vmap(train)(rngs, jax.lax.map(init, rngs))

    return train_seeds, num_updates
