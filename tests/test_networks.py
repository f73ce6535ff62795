"""The networks shared by the agents: their linear layer's product and the CNN torso option of every
agent with an MLP."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import agents
import envs
import rl
from agents import networks
from rl.errors import ConfigError

pytestmark = pytest.mark.usefixtures("haiku_init_allows_rank_promotion")

# One update on MinAtar's 10x10xC images for each network builder with an MLP: actor_critic (PPO;
# A2C and IMPALA build the same), q_network (DQN; PQN builds it too; iqn_network has the same torso) and
# SAC's actor and critics (TD3's critics convolve the same way). Each agent passes `torso` through.
TINY = {
    "ppo": dict(num_envs=2, num_steps=8, num_minibatches=1, update_epochs=1, total_timesteps=16),
    "dqn": dict(
        num_envs=1,
        train_frequency=2,
        total_timesteps=8,
        learning_starts=2,
        buffer_size=8,
        batch_size=2,
        target_update_interval=2,
    ),
    "sac": dict(num_envs=1, total_timesteps=8, learning_starts=2, buffer_size=8, batch_size=2),
}


def _layer(cls):
    import haiku as hk

    return hk.without_apply_rng(hk.transform(lambda x: jnp.tanh(cls(3, name="layer")(x))))


@pytest.mark.parametrize("shape", [(5,), (7, 5), (2, 7, 5)])
def test_linear_is_haiku_linear_in_parameters_values_and_derivatives_of_two_orders(shape):
    # networks.Linear writes the weight gradient as transpose(x) @ dy on the CPU; the wrong answers:
    # a wrong contraction (leading axes of a rank-3 input), a transposed [out, in] gradient, or a
    # backward pass that cannot itself be differentiated (metagrad and MAML differentiate it).
    import haiku as hk
    import optax

    x = jax.random.normal(jax.random.key(0), shape)
    ours, haikus = _layer(networks.Linear), _layer(hk.Linear)
    params = haikus.init(jax.random.key(1), x)
    mine = ours.init(jax.random.key(1), x)
    assert jax.tree.structure(mine) == jax.tree.structure(params)
    jax.tree.map(np.testing.assert_array_equal, mine, params)

    def loss(net):
        return lambda p, x: jnp.sum(jnp.sin(net.apply(p, x)))

    def second(net):  # the gradient of the first gradient's squared norm
        first = jax.grad(loss(net), argnums=(0, 1))
        return jax.grad(lambda p, x: optax.tree.norm(first(p, x)) ** 2, argnums=(0, 1))

    close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6)
    close(ours.apply(params, x), haikus.apply(params, x))
    for fn in (lambda net: jax.grad(loss(net), argnums=(0, 1)), second):
        jax.tree.map(close, jax.jit(fn(ours))(params, x), jax.jit(fn(haikus))(params, x))
    # vmapped over runs (each with its own parameters), as the engine runs seeds
    stacked = jax.tree.map(lambda p: jnp.stack([p, 2 * p]), params)
    per_run = lambda net: jax.jit(jax.vmap(jax.grad(loss(net)), in_axes=(0, None)))  # noqa: E731
    jax.tree.map(close, per_run(ours)(stacked, x), per_run(haikus)(stacked, x))


def test_linear_weight_gradient_is_an_untransposed_product_on_the_cpu():
    # what the CPU program asks XLA for: transpose(x) [in, N] @ dy [N, out], not autodiff's
    # contraction over x's leading axis (which XLA's CPU backend does not give its fast matmul)
    x = jnp.ones((7, 5))
    net = _layer(networks.Linear)
    params = net.init(jax.random.key(0), x)
    grad = jax.jit(jax.grad(lambda p: jnp.sum(net.apply(p, x))))
    text = grad.trace(params).lower(lowering_platforms=("cpu",)).as_text()
    assert "stablehlo.transpose" in text
    assert "contracting_dims = [1] x [0], precision = [DEFAULT, DEFAULT] : (tensor<5x7xf32>, tensor<7x3xf32>)" in text
    assert "contracting_dims = [0] x [0]" not in text


def test_flat_features_applies_minatar_convolution():
    import haiku as hk

    fn = hk.without_apply_rng(hk.transform(lambda x: networks.flat_features(x, "cnn")))
    x = jnp.ones((3, 10, 10, 4))
    params = fn.init(jax.random.key(0), x)
    assert params["conv"]["w"].shape == (3, 3, 4, 16)  # 16 filters of 3x3
    assert fn.apply(params, x).shape == (3, 8 * 8 * 16)  # stride 1, no padding, flattened
    plain = hk.without_apply_rng(hk.transform(lambda x: networks.flat_features(x, "mlp")))
    assert plain.apply(plain.init(jax.random.key(0), x), x).shape == (3, 400) and not plain.init(jax.random.key(0), x)


def test_cnn_layer_norm_normalises_each_position_over_the_channels_before_the_relu():
    # purejaxql's PQN CNN: conv -> LayerNorm -> ReLU. At init (scale 1, offset 0) the 16
    # pre-ReLU channels of every position have mean 0 and variance 1.
    import haiku as hk

    fn = hk.without_apply_rng(hk.transform(lambda x: networks.flat_features(x, "cnn", layer_norm=True)))
    x = jax.random.bernoulli(jax.random.key(1), 0.3, (2, 10, 10, 4)).astype(jnp.float32)
    params = fn.init(jax.random.key(0), x)
    assert params["conv_norm"]["scale"].shape == (16,)
    pre = hk.without_apply_rng(hk.transform(lambda x: hk.Conv2D(16, 3, padding="VALID", name="conv")(x)))
    z = pre.apply({"conv": params["conv"]}, x)
    normed = (z - z.mean(-1, keepdims=True)) / jnp.sqrt(z.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(fn.apply(params, x), jax.nn.relu(normed).reshape(2, -1), atol=1e-5)
    assert "conv_norm" not in hk.transform(lambda x: networks.flat_features(x, "cnn")).init(jax.random.key(0), x)


@pytest.mark.parametrize("agent", sorted(TINY))
def test_cnn_torso_trains_on_images(agent):
    module = agents.get(agent)
    env, params = envs.make("Breakout-MinAtar")
    algo = module.make(module.Config(torso="cnn", hidden_sizes=(32,), **TINY[agent]), env, params)
    result = rl.train(algo, module.Hyper(), seeds=[0])
    names = [
        "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
        for path, _ in jax.tree_util.tree_flatten_with_path(result.params)[0]
    ]
    assert any("conv" in n for n in names), names
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(result.params))


@pytest.mark.parametrize("agent", ["ppo", "dqn", "td3"])
def test_cnn_torso_needs_image_observations(agent):
    module = agents.get(agent)
    env, params = envs.make("Pendulum-v1" if agent == "td3" else "CartPole-v1")
    with pytest.raises(ConfigError, match=r"torso='cnn' is invalid: cnn needs image observations"):
        module.make(module.Config(torso="cnn"), env, params)
