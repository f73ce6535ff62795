"""PureJaxRL's own ``ppo.py``, imported from a checkout at run time (never copied here).

    module = load_purejaxrl("~/purejaxrl")            # a git clone of luchris429/purejaxrl
    train = jax.jit(jax.vmap(module.make_train(purejaxrl_config(config, hyper))))
    out = train(jax.random.split(jax.random.PRNGKey(0), 16))
    episode_return, episodes = purejaxrl_episodes(out["metrics"])   # [16, num_updates]

``experiments.benchmark`` (``--purejaxrl PATH``) runs it this way, as PureJaxRL's README
does, next to the library at the same settings. Three shims make it run here, each
explained where it is defined: brax and navix stubbed when missing, gymnax 1.0's step
turned into 0.0.x's, and the orthogonal initialiser mapped over seeds (a batched QR
hangs jaxlib's CPU backend on 2 cores). Nothing else of its code is changed.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp


def purejaxrl_ppo_file(path: str) -> Path:
    """PureJaxRL's ``ppo.py`` from a checkout, its ``purejaxrl/`` folder or the file itself.

    Raises ValueError, naming what is missing, when there is no ``ppo.py`` with a
    ``wrappers.py`` next to it (ppo.py imports its wrappers from there).
    """
    given = Path(path).expanduser()
    candidates = [given] if given.is_file() else [given / "ppo.py", given / "purejaxrl" / "ppo.py"]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise ValueError(
            f"--purejaxrl {path!r}: no ppo.py there; give a PureJaxRL checkout "
            "(git clone https://github.com/luchris429/purejaxrl), its purejaxrl/ folder or its ppo.py"
        )
    if not (found.parent / "wrappers.py").is_file():
        raise ValueError(
            f"--purejaxrl {path!r}: {found.parent / 'wrappers.py'} is missing; ppo.py imports "
            "LogWrapper and FlattenObservationWrapper from it (give the whole checkout)"
        )
    return found


class _NotInstalled:
    """Stands in for a class of a package that is not installed; fails only if it is used."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise ImportError(
            "stubbed by experiments.benchmark: the package is not installed, and PureJaxRL's "
            "ppo.py does not use this class"
        )


def _stub_missing_imports() -> None:
    """Empty modules for brax and navix, which PureJaxRL's wrappers.py imports at its top.

    wrappers.py does ``from brax import envs``, ``from brax.envs.wrappers.training import
    EpisodeWrapper, AutoResetWrapper`` and ``import navix as nx`` for its Brax and Navix
    wrappers. ppo.py uses only LogWrapper and FlattenObservationWrapper, which need neither,
    and neither is a dependency of this project (brax brings mujoco and more), so a missing
    one is replaced in ``sys.modules`` by a module holding just those names, as classes that
    fail if anything ever instantiates them. An installed brax or navix is used as it is.
    """
    if importlib.util.find_spec("brax") is None:
        names = ["brax", "brax.envs", "brax.envs.wrappers", "brax.envs.wrappers.training"]
        modules = {name: sys.modules.setdefault(name, types.ModuleType(name)) for name in names}
        for parent, child in zip(names, names[1:]):
            setattr(modules[parent], child.rsplit(".", 1)[1], modules[child])
        modules["brax.envs.wrappers.training"].EpisodeWrapper = _NotInstalled
        modules["brax.envs.wrappers.training"].AutoResetWrapper = _NotInstalled
    if importlib.util.find_spec("navix") is None:
        sys.modules.setdefault("navix", types.ModuleType("navix"))


class _DoneStep:
    """A gymnax 1.0 env with the gymnax 0.0.x ``step`` that PureJaxRL's wrappers unpack.

    gymnax 1.0 (this project pins 1.0.1) returns ``obs, state, reward, terminated,
    truncated, info`` and adds terminated, truncated and final_observation to ``info``;
    PureJaxRL's LogWrapper unpacks ``obs, state, reward, done, info``. ``done`` is
    terminated or truncated, which is what 0.0.x's ``done`` was (it included the time
    limit), and ``info`` keeps only what 0.0.x put there, so the arrays PureJaxRL carries
    and returns (its metrics are ``info`` at every step) are the ones it was written for.
    """

    def __init__(self, env: Any) -> None:
        self._env = env

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)

    def step(self, key, state, action, params=None):
        obs, state, reward, terminated, truncated, info = self._env.step(key, state, action, params)
        info = {k: v for k, v in info.items() if k not in ("terminated", "truncated", "final_observation")}
        return obs, state, reward, jnp.logical_or(terminated, truncated), info


def _gymnax_for_purejaxrl() -> types.SimpleNamespace:
    """``gymnax`` as ppo.py sees it: ``make`` wraps a 6-tuple env in :class:`_DoneStep`."""
    import gymnax

    def make(*args: Any, **kwargs: Any):
        env, params = gymnax.make(*args, **kwargs)
        key = jax.random.PRNGKey(0)
        out = jax.eval_shape(
            lambda k: env.step(k, env.reset(k, params)[1], env.action_space(params).sample(k), params), key
        )
        return (_DoneStep(env) if len(out) == 6 else env), params

    return types.SimpleNamespace(make=make)


def _seed_by_seed(initializer: Callable) -> Callable:
    """``initializer`` (a flax initialiser) whose vmap over seeds runs them one by one (``lax.map``).

    ``jax.vmap(make_train(config))`` batches PureJaxRL's orthogonal initialisers into batched
    LAPACK QR calls. jaxlib's CPU backend runs each on the thread pool XLA itself runs on, and
    on a 2-core CPU two of them, started together, each wait for pool threads the other holds:
    ppo.py with 16 seeds hangs before its first update (jax 0.10.2; gdb shows both
    ``tf_XLAEigen`` threads in ``jax::ParallelBatchMap`` of sgeqrf and sorgqr). The library
    initialises seed by seed for the same reason (rl/engine/runner.py ``_sharded``). Mapping gives
    the same numbers as one seed at a time and changes only initialisation, which runs once:
    the training loop compiled and timed is PureJaxRL's own.
    """

    def init(key, shape, dtype=jnp.float32):
        @jax.custom_batching.custom_vmap
        def one(k):
            return initializer(k, shape, dtype)

        @one.def_vmap
        def mapped(axis_size, in_batched, k):
            return (jax.lax.map(one, k), True) if in_batched[0] else (one(k), False)

        return one(key)

    return init


def load_purejaxrl(path: str) -> types.ModuleType:
    """PureJaxRL's ppo.py as a module, with the three shims this environment needs.

    Imported from ``path`` (see :func:`purejaxrl_ppo_file`) as it is, then: brax and navix
    stubbed if missing (:func:`_stub_missing_imports`), ``gymnax.make`` giving 0.0.x's step
    signature (:class:`_DoneStep`), and the orthogonal initialiser mapped over seeds rather
    than batched (:func:`_seed_by_seed`). Nothing else of its code is changed.
    """
    ppo_file = purejaxrl_ppo_file(path)
    _stub_missing_imports()
    folder = str(ppo_file.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # ppo.py does `from wrappers import LogWrapper, ...`
    spec = importlib.util.spec_from_file_location("purejaxrl_ppo_under_test", ppo_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "make_train", None)):
        raise ValueError(f"--purejaxrl {path!r}: {ppo_file} has no make_train(config)")
    module.gymnax = _gymnax_for_purejaxrl()
    if hasattr(module, "orthogonal"):  # looked up by name when ActorCritic is called
        flax_orthogonal = module.orthogonal
        module.orthogonal = lambda *a, **k: _seed_by_seed(flax_orthogonal(*a, **k))
    return module


def purejaxrl_config(config: Any, hyper: Any, env_id: str = "CartPole-v1") -> dict[str, Any]:
    """PureJaxRL's config dict for the library's ``ppo.Config`` and ``ppo.Hyper`` (its 64x64 MLP)."""
    if tuple(config.hidden_sizes) != (64, 64):
        raise ValueError(f"PureJaxRL's ActorCritic is 64x64; hidden_sizes={config.hidden_sizes} has no match")
    return {
        "LR": float(hyper.learning_rate),
        "NUM_ENVS": config.num_envs,
        "NUM_STEPS": config.num_steps,
        "TOTAL_TIMESTEPS": config.total_timesteps,
        "UPDATE_EPOCHS": config.update_epochs,
        "NUM_MINIBATCHES": config.num_minibatches,
        "GAMMA": float(hyper.gamma),
        "GAE_LAMBDA": float(hyper.gae_lambda),
        "CLIP_EPS": float(hyper.clip_eps),
        "ENT_COEF": float(hyper.ent_coef),
        "VF_COEF": float(hyper.vf_coef),
        "MAX_GRAD_NORM": float(hyper.max_grad_norm),
        "ACTIVATION": config.activation,
        "ENV_NAME": env_id,
        "ANNEAL_LR": bool(config.anneal_lr),
        "DEBUG": False,
    }


@jax.jit
def purejaxrl_episodes(info: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """``[N, U]`` mean return and count of the episodes that ended in each update, from PureJaxRL's metrics.

    Its metrics are LogWrapper's ``info`` at every step, ``[N, U, T, E]``: ``returned_episode``
    marks a step where an episode ended and ``returned_episode_returns`` then holds its return.
    Reduced on the device, since the per-step arrays are large at many seeds.
    """
    ended = info["returned_episode"]
    count = ended.sum(axis=(2, 3))
    total = jnp.where(ended, info["returned_episode_returns"], 0.0).sum(axis=(2, 3))
    return total / jnp.maximum(count, 1), count
