"""Shared test fixtures: the seed shift of the probe and learning tests, haiku's rank promotion, and
the compile setting of the suite.

Seed shift: ``pytest --seed-shift N`` (or ``RL_TEST_SEED_SHIFT=N pytest``) adds N to every seed
that a probe or learning test passes to ``rl.train``; the tests take their seeds from the
``seeds`` fixture (``seeds(0, 1) -> [N, N + 1]``). CI runs N = 0; a test whose thresholds only
hold for seeds 0, 1, ... is tuned to its seeds, so each must also pass at N = 1000 and 2000.

Compile setting: most tests run programs of a few hundred updates, where XLA's compile time is
most of the test. They run with ``jax_disable_most_optimizations`` (XLA's backend at -O0; the
HLO-level passes, fusion included, still run), exported as ``JAX_DISABLE_MOST_OPTIMIZATIONS=1`` so
that the CLI processes a test starts compile the same way. Learning tests (``@pytest.mark.slow``)
run long programs and compile fully optimised, as a user's run does. Setting the variable to 0
before pytest optimises every test.

Compiled programs are shared: the session keeps one persistent XLA compilation cache (a temporary
folder, removed at the end; ``$JAX_COMPILATION_CACHE_DIR`` names one to keep instead), so a program
that several tests, workers or CLI processes compile is compiled once.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

SEED_SHIFT_ENV = "RL_TEST_SEED_SHIFT"
FAST_COMPILE_ENV = "JAX_DISABLE_MOST_OPTIMIZATIONS"
_SHIFT_KEY = pytest.StashKey[int]()
_CACHE_KEY = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--seed-shift",
        type=int,
        default=None,
        metavar="N",
        help=f"add N to every seed of the probe and learning tests (default: ${SEED_SHIFT_ENV} or 0)",
    )


def _shift_from_env() -> int | None:
    raw = os.environ.get(SEED_SHIFT_ENV, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise pytest.UsageError(f"{SEED_SHIFT_ENV}={raw!r} is not an integer; set it to e.g. 1000") from None


def _seed_shift(config: pytest.Config) -> int:
    """The option if given, else the environment variable, else 0; the two must agree when both are set."""
    option, env = config.getoption("--seed-shift"), _shift_from_env()
    if option is not None and env is not None and option != env:
        raise pytest.UsageError(f"--seed-shift {option} and {SEED_SHIFT_ENV}={env} disagree; give one of them")
    shift = option if option is not None else (env or 0)
    if shift < 0:
        raise pytest.UsageError(f"the seed shift must be >= 0 (got {shift}): seeds are non-negative integers")
    return shift


def pytest_configure(config: pytest.Config) -> None:
    shift = _seed_shift(config)
    # xdist workers inherit the controller's environment: export the shift so that every worker
    # (and any subprocess a test starts) sees the same one, however the option reached us.
    os.environ[SEED_SHIFT_ENV] = str(shift)
    config.stash[_SHIFT_KEY] = shift
    os.environ.setdefault(FAST_COMPILE_ENV, "1")
    jax.config.update("jax_disable_most_optimizations", _fast_compile())
    _share_compiled_programs(config)


def _share_compiled_programs(config: pytest.Config) -> None:
    """One persistent compilation cache for this session: the workers and the CLI processes the
    tests start reuse each other's compiled programs (many tests compile the same tiny run). The
    folder is new per session unless ``$JAX_COMPILATION_CACHE_DIR`` is already set."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        import tempfile

        os.environ["JAX_COMPILATION_CACHE_DIR"] = folder = tempfile.mkdtemp(prefix="rl-test-xla-cache-")
        config.stash[_CACHE_KEY] = folder
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = config.stash.get(_CACHE_KEY, None)
    if folder is not None:  # the session's own cache folder (made above), not one the user named
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Learning tests first (stable otherwise): the two workers then start the longest tests
    early and fill the end with short ones, instead of one finishing a learning test alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def _fast_compile() -> bool:
    return os.environ[FAST_COMPILE_ENV].strip().lower() in ("1", "true", "yes", "on")


@pytest.fixture(autouse=True)
def _learning_tests_compile_optimised(request: pytest.FixtureRequest):
    """A ``slow`` (learning) test compiles with XLA's full optimisation, in this process and in the
    processes it starts; every other test keeps the suite's setting (see the module docstring)."""
    if request.node.get_closest_marker("slow") is None or not _fast_compile():
        yield
        return
    os.environ[FAST_COMPILE_ENV] = "0"
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        os.environ[FAST_COMPILE_ENV] = "1"
        jax.config.update("jax_disable_most_optimizations", True)


def pytest_report_header(config: pytest.Config) -> str:
    compile_ = "learning tests optimised, the rest at XLA -O0" if _fast_compile() else "all optimised"
    return f"seed shift: {config.stash[_SHIFT_KEY]} (--seed-shift / ${SEED_SHIFT_ENV}); compile: {compile_} (${FAST_COMPILE_ENV})"


class Seeds:
    """``seeds(0, 1) -> [shift, shift + 1]``: the seeds a test passes to ``rl.train`` and its keys.

    ``seeds.range(4)`` is ``seeds(0, 1, 2, 3)``; ``seeds.shift`` is the shift itself.
    """

    def __init__(self, shift: int):
        self.shift = shift

    def __call__(self, *seeds: int) -> list[int]:
        return [self.shift + int(s) for s in seeds]

    def range(self, n: int) -> list[int]:
        return self(*range(n))


@pytest.fixture
def seeds(request: pytest.FixtureRequest) -> Seeds:
    """The shifted seeds of this session (see the module docstring)."""
    return Seeds(request.config.stash[_SHIFT_KEY])


@pytest.fixture
def haiku_init_allows_rank_promotion():
    """Run the test with ``jax_numpy_rank_promotion='allow'``.

    haiku's Orthogonal initializer multiplies (n, m) by (m,), which strict rank promotion rejects,
    so agent runs allow it; modules that check leaf functions under "raise" enter it inside the test
    (``jax.numpy_rank_promotion("raise")``), which takes precedence over this fixture. A module
    opts in with ``pytestmark = pytest.mark.usefixtures("haiku_init_allows_rank_promotion")``.
    """
    with jax.numpy_rank_promotion("allow"):
        yield


# Probe-ContinuousAction-v0: r = -(a - s)^2, one step, terminated, so Q(s, a) = -(a - s)^2 and the
# best action is the observation s. The probe observations lie 0.5 apart: the wrong answer for
# the action at s is the right one for a neighbouring observation, 0.5 away (an actor or critic
# that ignores s, mirrors it or halves it also misses by 0.375 or more at s = +-0.75).
PROBE_OBS = np.array([-0.75, -0.25, 0.25, 0.75], np.float32)
PROBE_ACTIONS = np.linspace(-1.0, 1.0, 201, dtype=np.float32)  # the Box [-1, 1], 0.01 apart


def _assert_tracks_the_observation(critic, policy):
    """Check a trained continuous-action probe run: ``critic(obs [N, 1], action [N, 1]) -> [C, N]``
    (one row per critic), ``policy(obs [B, 1]) -> action [B, 1]`` (deterministic).

    * The best action on a grid of Q(s, .) and the policy's action lie within 0.25 of s: half the
      gap of 0.5 to the neighbouring observation's action.
    * Q is within 0.125 of -(a - s)^2 for |a - s| <= 0.5: half the gap of 0.25 between the value
      of the right action (0) and of the neighbour's (-0.25), so the critic ranks the two right.

    Returns the largest action error and Q error, for a caller that wants to print the margins.
    """
    obs, action = np.meshgrid(PROBE_OBS, PROBE_ACTIONS, indexing="ij")  # [B, A]
    q = np.asarray(critic(obs.reshape(-1, 1), action.reshape(-1, 1)))
    q = q.reshape(q.shape[0], *obs.shape)  # [C, B, A]
    best = PROBE_ACTIONS[np.argmax(q, axis=-1)]  # [C, B]
    np.testing.assert_allclose(best, np.broadcast_to(PROBE_OBS, best.shape), atol=0.25)
    chosen = np.asarray(policy(PROBE_OBS[:, None]))
    np.testing.assert_allclose(chosen, PROBE_OBS[:, None], atol=0.25)
    near = np.abs(action - obs) <= 0.5
    q_error = np.abs(q - -np.square(action - obs))[:, near]
    assert q_error.max() < 0.125, f"max |Q - (-(a - s)^2)| = {q_error.max():.3f} for |a - s| <= 0.5"
    return max(np.abs(best - PROBE_OBS).max(), np.abs(chosen[:, 0] - PROBE_OBS).max()), q_error.max()


@pytest.fixture
def assert_tracks_the_observation():
    """The checks of a continuous-action probe run (``_assert_tracks_the_observation``)."""
    return _assert_tracks_the_observation
