"""Presets: published settings, chosen with ``--preset NAME``.

A preset fixes an agent, an environment and the config/hyper fields its source
used; every other field keeps the agent's default, and any field can still be
overridden on the command line after the preset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Preset:
    name: str
    agent: str
    env: str
    config: dict[str, Any]
    hyper: dict[str, Any]
    source: str  # where the settings were published
    published: str | None = None  # the published result, as its source states it
    # what the published figure averages: "eval" (evaluation episodes of the trained policy) or
    # "training" (training episodes, with exploration); experiments.validate compares like with like
    published_episodes: str = "training"
    # how the source played its evaluation episodes: "greedy" (the most likely action) or
    # "stochastic" (actions sampled from the policy); experiments.validate evaluates the same way
    eval_mode: str = "greedy"
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. num_seeds for validation


PRESETS: dict[str, Preset] = {}


def register(preset: Preset) -> Preset:
    if preset.name in PRESETS:
        raise ValueError(f"preset {preset.name!r} is already registered")
    PRESETS[preset.name] = preset
    return preset


register(
    Preset(
        name="purejaxrl-cartpole",
        agent="ppo",
        env="CartPole-v1",
        config=dict(
            num_envs=4,
            num_steps=128,
            num_minibatches=4,
            update_epochs=4,
            total_timesteps=500_000,
            hidden_sizes=(64, 64),
            activation="tanh",
            anneal_lr=True,
        ),
        hyper=dict(
            learning_rate=2.5e-4,
            gamma=0.99,
            gae_lambda=0.95,
            clip_eps=0.2,
            ent_coef=0.01,
            vf_coef=0.5,
            max_grad_norm=0.5,
        ),
        source="PureJaxRL purejaxrl/ppo.py (Lu et al., 2022), CartPole-v1 config",
    )
)

register(
    Preset(
        name="gymnax-blines-acrobot",
        agent="ppo",
        env="Acrobot-v1",
        config=dict(
            num_envs=16,
            num_steps=32,
            num_minibatches=4,
            update_epochs=4,
            total_timesteps=500_000,
            hidden_sizes=(64, 64),
            activation="relu",
            anneal_lr=False,
        ),
        hyper=dict(
            learning_rate=5e-4,
            gamma=0.99,
            gae_lambda=0.95,
            clip_eps=0.2,
            ent_coef=0.01,
            vf_coef=0.5,
            max_grad_norm=1.0,
        ),
        source="gymnax-blines agents/Acrobot-v1/ppo.yaml and utils/models.py (ReLU MLPs) (Lange, 2022)",
    )
)

register(
    Preset(
        name="gymnax-blines-pendulum",
        agent="ppo",
        env="Pendulum-v1",
        config=dict(
            num_envs=32,
            num_steps=16,
            num_minibatches=4,
            update_epochs=4,
            total_timesteps=1_000_000,
            hidden_sizes=(64, 64),
            activation="relu",
            state_dependent_std=True,
            anneal_lr=False,
        ),
        hyper=dict(
            learning_rate=5e-4,
            gamma=0.99,
            gae_lambda=0.95,
            clip_eps=0.2,
            ent_coef=0.01,
            vf_coef=0.5,
            max_grad_norm=1.0,
        ),
        source="gymnax-blines agents/Pendulum-v1/ppo.yaml and utils/models.py (ReLU MLPs, "
        "std = softplus(head) + 0.001) (Lange, 2022)",
    )
)


def get(name: str) -> Preset:
    """The preset called ``name``; a ValueError lists the known ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def help_text(agent: str | None = None) -> str:
    """The presets as ``--help`` lists them: name, agent and env, one per line.

    With ``agent`` the presets of that agent come first (``--preset`` refuses another agent's).
    """
    presets = sorted(PRESETS.values(), key=lambda p: (agent is not None and p.agent != agent, p.agent, p.name))
    width = max(len(p.name) for p in presets)
    lines = ["presets (--preset NAME starts from published settings; later flags override them):"]
    lines += [f"  {p.name:<{width}}  {p.agent} on {p.env}" for p in presets]
    return "\n".join(lines)


def load_file(path: str | Path) -> Preset:
    """A preset from a JSON file (as written by the sweep's best configuration)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--preset-file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"--preset-file {str(path)!r} is not valid JSON: {err}") from None
    missing = {"agent", "env", "config", "hyper"} - set(data)
    if missing:
        raise ValueError(f"--preset-file {str(path)!r} lacks the keys {sorted(missing)}")
    return Preset(
        name=data.get("name", path.stem),
        agent=data["agent"],
        env=data["env"],
        config=data["config"],
        hyper=data["hyper"],
        source=data.get("source", str(path)),
        published=data.get("published"),
        published_episodes=data.get("published_episodes", "training"),
    )


register(
    Preset(
        name="cleanrl-dqn-cartpole",
        agent="dqn",
        env="CartPole-v1",
        config=dict(
            num_envs=1,
            train_frequency=10,
            gradient_steps=1,
            total_timesteps=500_000,
            buffer_size=10_000,
            batch_size=128,
            learning_starts=10_000,
            target_update_interval=500,
            n_step=1,
            double=False,
            dueling=False,
            loss="l2",  # CleanRL: mean squared TD error (we take 0.5 td^2; Adam is scale-invariant)
            max_grad_norm=None,
            hidden_sizes=(120, 84),
            activation="relu",
            init="lecun_normal",  # flax.linen.Dense's default, as in dqn_jax.py
        ),
        hyper=dict(
            learning_rate=2.5e-4,
            gamma=0.99,
            tau=1.0,
            eps_start=1.0,
            eps_end=0.05,
            exploration_fraction=0.5,
        ),
        source="CleanRL cleanrl/dqn_jax.py defaults (Huang et al., 2022); result: docs.cleanrl.dev/rl-algorithms/dqn",
        published="498.38 ± 2.29 (3 seeds)",
    )
)

register(
    Preset(
        name="cleanrl-c51-cartpole",
        agent="dqn",
        env="CartPole-v1",
        config=dict(
            num_envs=1,
            train_frequency=10,
            gradient_steps=1,
            total_timesteps=500_000,
            buffer_size=10_000,
            batch_size=128,
            learning_starts=10_000,
            target_update_interval=500,
            n_step=1,
            double=False,
            max_grad_norm=None,
            hidden_sizes=(120, 84),
            activation="relu",
            init="lecun_normal",  # flax.linen.Dense's default, as in c51_jax.py
            distributional="c51",
            num_atoms=101,
            v_min=-100.0,
            v_max=100.0,
        ),
        hyper=dict(
            learning_rate=2.5e-4,
            gamma=0.99,
            tau=1.0,
            eps_start=1.0,
            eps_end=0.05,
            exploration_fraction=0.5,
        ),
        source="CleanRL cleanrl/c51_jax.py defaults (Huang et al., 2022), except Adam's eps: "
        "CleanRL's is 0.01 / batch_size, ours optax's 1e-8; result: docs.cleanrl.dev/rl-algorithms/c51",
        published="491.07 ± 9.70 (3 seeds)",
    )
)

register(
    Preset(
        name="purejaxql-pqn-cartpole",
        agent="pqn",
        env="CartPole-v1",
        config=dict(
            num_envs=32,
            num_steps=64,
            num_minibatches=16,
            update_epochs=4,
            total_timesteps=500_000,
            hidden_sizes=(256, 256),
            activation="relu",
            layer_norm=True,
            anneal_lr=True,
        ),
        hyper=dict(
            learning_rate=1e-4,
            gamma=0.99,
            q_lambda=0.95,
            eps_start=1.0,
            eps_end=0.2,
            exploration_fraction=0.2,
            max_grad_norm=10.0,
            reward_scale=0.1,
        ),
        source="purejaxql purejaxql/config/alg/pqn_cartpole.yaml (Gallici et al., 2024)",
        published=None,  # the paper and repository give CartPole only as curves, no figure
    )
)


# Off-policy continuous control on Pendulum-v1: rl-baselines3-zoo's tuned settings on top of
# Stable-Baselines3's defaults (net_arch, batch 256, tau 0.005, policy delay 2, target noise
# 0.2 clipped at 0.5). Their `train_freq: [1, "episode"]` with `gradient_steps: -1` is one
# gradient step per env step done once per 200-step episode: train_frequency = gradient_steps
# = 200 here. The published figures are benchmark.md's: ONE trained agent evaluated over 750
# episodes with its deterministic policy (published_episodes="eval"): the like-for-like figure
# here is the final greedy evaluation (summary.json's final_eval_return), not the training
# episodes of the last 5% of steps (exploring policy, so somewhat lower).
register(
    Preset(
        name="rlzoo-sac-pendulum",
        agent="sac",
        env="Pendulum-v1",
        config=dict(
            num_envs=1,
            total_timesteps=20_000,
            train_frequency=1,
            gradient_steps=1,
            buffer_size=1_000_000,
            batch_size=256,
            learning_starts=100,
            hidden_sizes=(256, 256),
            activation="relu",
            autotune=True,
            log_std_min=-20.0,
            log_std_max=2.0,
        ),
        hyper=dict(actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3, gamma=0.99, tau=0.005, alpha=1.0),
        source="rl-baselines3-zoo hyperparams/sac.yml Pendulum-v1 (learning_rate 1e-3, 20k steps) "
        "on Stable-Baselines3 SAC defaults (Raffin et al., 2021)",
        published="-157.0 +- 88.7 (rl-baselines3-zoo benchmark.md, sac Pendulum-v1 20k: one agent, "
        "750 deterministic evaluation episodes)",
        published_episodes="eval",
    )
)

register(
    Preset(
        name="rlzoo-td3-pendulum",
        agent="td3",
        env="Pendulum-v1",
        config=dict(
            num_envs=1,
            total_timesteps=20_000,
            train_frequency=200,
            gradient_steps=200,
            buffer_size=200_000,
            batch_size=256,
            learning_starts=10_000,
            policy_frequency=2,
            twin_critics=True,
            hidden_sizes=(400, 300),
            activation="relu",
        ),
        hyper=dict(
            actor_lr=1e-3,
            critic_lr=1e-3,
            gamma=0.98,
            tau=0.005,
            exploration_noise=0.1,
            policy_noise=0.2,
            noise_clip=0.5,
        ),
        source="rl-baselines3-zoo hyperparams/td3.yml Pendulum (gamma 0.98, 10k random steps, "
        "noise 0.1, lr 1e-3, [400, 300]) on Stable-Baselines3 TD3 defaults (Raffin et al., 2021)",
        published="-151.9 +- 90.2 (rl-baselines3-zoo benchmark.md, td3 Pendulum-v1 20k: one agent, "
        "750 deterministic evaluation episodes)",
        published_episodes="eval",
    )
)

register(
    Preset(
        name="rlzoo-ddpg-pendulum",
        agent="ddpg",
        env="Pendulum-v1",
        config=dict(
            num_envs=1,
            total_timesteps=20_000,
            train_frequency=200,
            gradient_steps=200,
            buffer_size=200_000,
            batch_size=256,
            learning_starts=10_000,
            policy_frequency=1,
            twin_critics=False,
            hidden_sizes=(400, 300),
            activation="relu",
        ),
        hyper=dict(actor_lr=1e-3, critic_lr=1e-3, gamma=0.98, tau=0.005, exploration_noise=0.1, policy_noise=0.0),
        source="rl-baselines3-zoo hyperparams/ddpg.yml Pendulum (as sb3/ddpg-Pendulum-v1 config.yml) "
        "on Stable-Baselines3 DDPG defaults (Raffin et al., 2021)",
        published="-152.1 +- 94.3 (rl-baselines3-zoo benchmark.md, ddpg Pendulum-v1 20k: one agent, "
        "750 deterministic evaluation episodes)",
        published_episodes="eval",
    )
)

register(
    Preset(
        name="rlzoo-sac-mountaincar-pink",
        agent="sac",
        env="MountainCarContinuous-v0",
        config=dict(
            num_envs=1,
            total_timesteps=50_000,
            train_frequency=32,
            gradient_steps=32,
            buffer_size=50_000,
            batch_size=512,
            learning_starts=0,
            hidden_sizes=(64, 64),
            activation="relu",
            autotune=False,
            noise_exponent=1.0,
        ),
        hyper=dict(actor_lr=3e-4, critic_lr=3e-4, gamma=0.99, tau=0.01, alpha=0.1),
        # White-noise SAC never finds the goal here (0 of 256 uniformly random episodes reach
        # it; pink-noise action sequences reach it in about 3 of 4), so the zoo's gSDE, which
        # this library does not have, is replaced by the temporally correlated pink noise of
        # Eberhard et al. (ICLR 2023), who report SAC solving MountainCarContinuous with it.
        # gamma 0.99, not the zoo's 0.9999: with 0.9999 one of 4 seeds solved the task and then
        # collapsed after 30k steps (final 63 +- 61 over seeds 0-3); with 0.99 seeds 0-7 all end
        # at 94.5 .. 95.0.
        source="rl-baselines3-zoo hyperparams/sac.yml MountainCarContinuous-v0 (fixed ent_coef 0.1, "
        "train_freq = gradient_steps = 32, batch 512, tau 0.01, [64, 64]) with pink action noise "
        "(Eberhard et al., 2023) in place of gSDE, and gamma 0.99 instead of 0.9999",
        published=None,  # the zoo's 94.7 +- 1.1 (benchmark.md) is for its gSDE setting, not this one
    )
)


# A2C: rl-baselines3-zoo's hyperparams/a2c.yml entries on Stable-Baselines3's A2C defaults (n_steps
# 5, RMSprop lr 7e-4, gamma 0.99, gae_lambda 1, vf_coef 0.5, max_grad_norm 0.5, tanh (64, 64)), which
# are agents.a2c's defaults. The published figures are benchmark.md's: ONE trained agent evaluated
# with its deterministic policy; experiments.train reports the training episodes of the last 5%.
register(
    Preset(
        name="rlzoo-a2c-cartpole",
        agent="a2c",
        env="CartPole-v1",
        config=dict(num_envs=8, num_steps=5, total_timesteps=500_000),
        hyper=dict(learning_rate=7e-4, gamma=0.99, gae_lambda=1.0, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5),
        source="rl-baselines3-zoo hyperparams/a2c.yml CartPole-v1 (n_envs 8, 5e5 steps, ent_coef 0.0) on "
        "Stable-Baselines3 A2C defaults (Raffin et al., 2021)",
        published="500.0 +- 0.0 (rl-baselines3-zoo benchmark.md, a2c CartPole-v1 500k: one agent, "
        "300 deterministic evaluation episodes)",
        published_episodes="eval",
    )
)

register(
    Preset(
        name="rlzoo-a2c-acrobot",
        agent="a2c",
        env="Acrobot-v1",
        config=dict(num_envs=16, num_steps=5, total_timesteps=500_000, normalize_obs=True),
        # The zoo's `normalize: true` is VecNormalize: observations AND rewards (rewards divided by
        # the running std of the discounted return). There is no reward normalisation here; a fixed
        # reward_scale of 0.1 stands in for it. Unscaled, 2 of seeds 0-7 stayed at -500 (the
        # value loss of returns near -100 takes the 0.5 gradient-norm budget); scaled, all 8 learn.
        hyper=dict(
            learning_rate=7e-4,
            gamma=0.99,
            gae_lambda=1.0,
            ent_coef=0.0,
            vf_coef=0.5,
            max_grad_norm=0.5,
            reward_scale=0.1,
        ),
        source="rl-baselines3-zoo hyperparams/a2c.yml Acrobot-v1 (n_envs 16, 5e5 steps, ent_coef 0.0, "
        "observation normalisation) on Stable-Baselines3 A2C defaults (Raffin et al., 2021), with a fixed "
        "reward_scale 0.1 in place of the zoo's reward normalisation",
        published="-83.4 +- 17.2 (rl-baselines3-zoo benchmark.md, a2c Acrobot-v1 500k: one agent, "
        "1778 deterministic evaluation episodes)",
        published_episodes="eval",
    )
)

# Recurrent PPO on CartPole-v1 with the cart and pole velocities hidden (envs.cartpole_no_velocity):
# a memoryless MLP policy stays near 45 there (PPO, 150k steps, 4 seeds x 2 learning rates), the GRU
# reaches 300-500 by 64k steps. Settings of this library (not a paper's), from a few trial runs.
register(
    Preset(
        name="rppo-cartpole-novelocity",
        agent="rppo",
        env="CartPole-NoVelocity-v1",
        config=dict(
            num_envs=16,
            num_steps=32,
            num_minibatches=4,
            update_epochs=4,
            total_timesteps=200_000,
            cell="gru",
            cell_size=64,
            hidden_sizes=(64,),
            head_sizes=(64,),
            anneal_lr=True,
        ),
        hyper=dict(learning_rate=2e-3, gamma=0.99, gae_lambda=0.95, clip_eps=0.2, ent_coef=0.01, vf_coef=0.5),
        source="this library's settings for recurrent PPO on CartPole-v1 without velocities",
    )
)

# RL² on two-armed Bernoulli bandits, arms (p, 1 - p) with p ~ U(0, 1) drawn every trial of 100
# pulls (gymnax's BernoulliBandit-misc under envs.DomainRandomization; Wang et al., 2016's
# dependent arms). One trial = one 100-pull episode; 64 trials run at once, one per env, and a
# rollout is one trial. Settings of this library (not a paper's): a few trial runs on training
# seeds; the held-out tasks of experiments.bandit_regret played no part in choosing them.
register(
    Preset(
        name="rl2-bandit",
        agent="rl2",
        env="BernoulliBandit-uniform-misc",
        config=dict(
            num_envs=64,
            num_steps=100,
            num_minibatches=4,
            update_epochs=4,
            total_timesteps=256_000,
            cell="gru",
            cell_size=64,
            hidden_sizes=(64,),
            head_sizes=(64,),
            episodes_per_trial=1,
            terminate_trials=True,
        ),
        hyper=dict(learning_rate=1e-3, gamma=0.99, gae_lambda=0.3, ent_coef=0.01),
        source="this library's settings for RL² (Duan et al., 2016) on two-armed dependent Bernoulli bandits",
    )
)

# RL² on MetaMaze-misc (gymnax's maze after Miconi et al.'s backpropamine maze): a goal drawn per
# episode of 200 steps, +10 on reaching it, then the agent is put back at a random cell; the
# episode is the trial. The observation holds the unnormalised step count (0..200) and the last
# reward (0 or 10): observation normalisation is on. Settings of this library from one trial run
# (seed 0: return ~8, a random policy's, rising to 60-90 in 2M steps).
register(
    Preset(
        name="rl2-metamaze",
        agent="rl2",
        env="MetaMaze-misc",
        config=dict(
            num_envs=64,
            num_steps=100,
            num_minibatches=4,
            update_epochs=4,
            total_timesteps=2_000_000,
            cell="gru",
            cell_size=128,
            hidden_sizes=(128,),
            head_sizes=(128,),
            normalize_obs=True,
            episodes_per_trial=1,
            terminate_trials=True,
        ),
        hyper=dict(learning_rate=5e-4, gamma=0.99, gae_lambda=0.95, ent_coef=0.01),
        source="this library's settings for RL² (Duan et al., 2016) on gymnax's MetaMaze-misc",
    )
)

# MAML on the 2-D navigation of Finn et al. (2017, sec. 5.3 and appendix A.2): 20 tasks per
# meta-update, 20 episodes per task and rollout, H = 100, one inner step with alpha = 0.1, a
# (100, 100) ReLU policy; the outer step is Adam (the paper used TRPO) for 100 meta-updates.
# Goals on the semicircle (envs.navigation). experiments.maml_adaptation draws the paper's figure.
register(
    Preset(
        name="finn-maml-navigation",
        agent="maml",
        env="Navigation2D-v0",
        config=dict(
            meta_batch_size=20,
            num_envs=20,
            num_steps=100,
            num_inner_steps=1,
            hidden_sizes=(100, 100),
            activation="relu",
            total_timesteps=20 * 2 * 20 * 100 * 100,
        ),
        hyper=dict(inner_lr=0.1, learning_rate=1e-2, gamma=0.99),
        source="Finn et al. (2017), MAML, 2-D navigation settings (appendix A.2); Adam instead of TRPO",
    )
)

# Meta-gradient A2C (Xu et al., 2018) on CartPole-v1: gamma and lambda meta-learned from 0.99 and
# 0.9 against the reference 0.99 and 1. Settings of this library (tests/test_metagrad.py).
register(
    Preset(
        name="metagrad-cartpole",
        agent="metagrad",
        env="CartPole-v1",
        config=dict(num_envs=16, num_steps=8, total_timesteps=100_000),
        hyper=dict(learning_rate=7e-4, meta_learning_rate=1e-3, gamma_init=0.99, lambda_init=0.9),
        source="this library's settings for meta-gradient RL (Xu et al., 2018) with an A2C learner",
    )
)


# PPO on MinAtar at gymnax-blines' settings: the four agents/<game>-MinAtar/ppo.yaml files are
# identical (64 envs x 128 steps, 8 minibatches, 4 epochs, Adam 5e-4 constant (lr_begin = lr_end,
# so its warm-up changes nothing), gamma 0.999, GAE 0.95, clip 0.2, entropy 0.01, value 0.5, grad
# norm 0.5, 1e7 steps) on separate ReLU MLPs of 2 x 256 over the flattened 10x10xC image. The
# published figures (gymnax's README, from gymnax-blines) are the mean return of 164 evaluation
# episodes with actions sampled from the policy (utils/ppo.py batch_evaluate), hence eval_mode.
MINATAR_PPO = dict(
    num_envs=64,
    num_steps=128,
    num_minibatches=8,
    update_epochs=4,
    total_timesteps=10_000_000,
    hidden_sizes=(256, 256),
    activation="relu",
    anneal_lr=False,
)
MINATAR_PPO_HYPER = dict(
    learning_rate=5e-4,
    gamma=0.999,
    gae_lambda=0.95,
    clip_eps=0.2,
    ent_coef=0.01,
    vf_coef=0.5,
    max_grad_norm=0.5,
)
for _game, _published in (("Breakout", "28.0"), ("SpaceInvaders", "131.6"), ("Asterix", "15.0"), ("Freeway", "58.8")):
    register(
        Preset(
            name=f"gymnax-blines-{_game.lower()}-minatar",
            agent="ppo",
            env=f"{_game}-MinAtar",
            config=dict(MINATAR_PPO),
            hyper=dict(MINATAR_PPO_HYPER),
            source=f"gymnax-blines agents/{_game}-MinAtar/ppo.yaml and utils/models.py (Lange, 2022)",
            published=f"{_published} (gymnax README, 1e7 steps, evaluation episodes with sampled actions)",
            published_episodes="eval",
            eval_mode="stochastic",
        )
    )

# PQN on MinAtar as purejaxql's config/alg/pqn_minatar.yaml (Gallici et al., 2024): 128 envs x 32
# steps, 32 minibatches, 2 epochs, RAdam 5e-4 decayed linearly, grad norm 10, gamma 0.99, Q(lambda)
# 0.65, epsilon 1 -> 0.05 over the first 10% of updates, on purejaxql's CNN (16 3x3 filters, then
# 128 units, layer norm after both). purejaxql also divides the 0/1 MinAtar planes by 255 before
# its conv; the layer norm right after the conv undoes most of that scale (not all: its epsilon
# then weighs more), and it is not replicated here. The paper gives MinAtar results as curves only.
register(
    Preset(
        name="purejaxql-pqn-minatar-asterix",
        agent="pqn",
        env="Asterix-MinAtar",
        config=dict(
            num_envs=128,
            num_steps=32,
            num_minibatches=32,
            update_epochs=2,
            total_timesteps=10_000_000,
            torso="cnn",
            hidden_sizes=(128,),
            activation="relu",
            layer_norm=True,
            anneal_lr=True,
        ),
        hyper=dict(
            learning_rate=5e-4,
            gamma=0.99,
            q_lambda=0.65,
            eps_start=1.0,
            eps_end=0.05,
            exploration_fraction=0.1,
            max_grad_norm=10.0,
        ),
        source="purejaxql purejaxql/config/alg/pqn_minatar.yaml and pqn_minatar.py (Gallici et al., 2024)",
        published=None,  # curves only
    )
)
