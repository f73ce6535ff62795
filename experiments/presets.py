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
