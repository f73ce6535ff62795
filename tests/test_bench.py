"""The benchmark script's own logic (its figures come from ``make bench``, not from tests)."""

import jax.numpy as jnp
import pytest

from experiments import benchmark
from experiments.baselines import purejaxrl_checkout as checkout


def test_time_compiled_returns_median_of_repeats():
    ticks = iter(
        [
            0.0,
            1.0,  # compile: 1 s
            10.0,
            13.0,  # run 1: 3 s
            20.0,
            21.0,  # run 2: 1 s
            30.0,
            32.0,
        ]
    )  # run 3: 2 s
    compile_s, run_s = benchmark._time_compiled(lambda x: x + 1, jnp.zeros(3), repeats=3, clock=lambda: next(ticks))
    assert (compile_s, run_s) == (1.0, 2.0)


def test_markdown_table_names_the_machine():
    rows = [benchmark.Row("ppo (this library)", 16, 8.04, 235117.2, "1.02x baseline")]
    md = benchmark.to_markdown(rows, {"cpu": "X", "cores": "2", "devices": "cpu x1", "jax": "0.10.2"})
    assert md.startswith("Machine: X, 2 cores, cpu x1, jax 0.10.2")
    assert "| ppo (this library) | 16 | 8.0 | 235,117 | 1.02x baseline |" in md


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--only", "nope"], "unknown benchmark group(s) ['nope']"),
        (["--repeats", "0"], "--repeats=0 is invalid"),
        (["--seeds", "0"], "--seeds=[0] is invalid"),
    ],
)
def test_bad_arguments_fail_before_anything_runs(argv, message, capsys, tmp_path):
    assert benchmark.main([*argv, "--out", str(tmp_path / "b")]) == 2
    assert message in capsys.readouterr().out
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--purejaxrl", "/nonexistent/purejaxrl"], "--purejaxrl '/nonexistent/purejaxrl': no ppo.py there"),
        (["--only", "scale", "--total-timesteps", "100"], "one update takes num_envs x num_steps = 512 env steps"),
        (["--only", "scale", "--small-ppo", "--total-timesteps", "8"], "num_envs x num_steps = 16 env steps"),
        (["--num-chunks", "0"], "--num-chunks=0 is invalid"),
        (["--timeout", "0"], "--timeout=0.0 is invalid"),
        (["--seeds", "1,0"], "--seeds=[1, 0] is invalid"),
    ],
)
def test_bad_arguments_of_the_new_groups_fail_before_anything_runs(argv, message, capsys, tmp_path):
    assert benchmark.main([*argv, "--out", str(tmp_path / "b")]) == 2
    assert message in capsys.readouterr().out
    assert not (tmp_path / "b").exists()


def test_purejaxrl_path_needs_ppo_and_its_wrappers(tmp_path):
    (tmp_path / "purejaxrl").mkdir()
    (tmp_path / "purejaxrl" / "ppo.py").write_text("")
    with pytest.raises(ValueError, match="wrappers.py is missing"):
        checkout.purejaxrl_ppo_file(str(tmp_path))
    (tmp_path / "purejaxrl" / "wrappers.py").write_text("")
    # a checkout, its purejaxrl/ folder and the file itself all name the same ppo.py
    expected = tmp_path / "purejaxrl" / "ppo.py"
    for given in (tmp_path, tmp_path / "purejaxrl", expected):
        assert checkout.purejaxrl_ppo_file(str(given)) == expected


def test_seeds_take_commas_and_bool_flags_need_no_value():
    argv = ["--only", "scale", "--seeds", "1,64,2048", "--small-ppo", "--purejaxrl", "p", "--keep-runs"]
    assert benchmark.normalise_argv(argv) == [
        "--only",
        "scale",
        "--seeds",
        "1",
        "64",
        "2048",
        "--small-ppo",
        "True",
        "--purejaxrl",
        "p",
        "--keep-runs",
        "True",
    ]
    assert benchmark.normalise_argv(["--seeds=1,16", "--small-ppo", "False", "--only", "scale,hlo"]) == [
        "--seeds",
        "1",
        "16",
        "--small-ppo",
        "False",
        "--only",
        "scale",
        "hlo",
    ]


def test_small_ppo_is_the_ci_case():
    config, _ = benchmark.scale_settings(benchmark.BenchArgs(small_ppo=True))
    assert (config.num_envs, config.num_steps, config.update_epochs, config.num_minibatches) == (1, 16, 1, 1)
    assert config.num_updates == 400
    # the CLI is given the same settings: the preset plus what differs from it
    cmd = benchmark.cli_command(config, 2048, 20, benchmark.Path("out"))
    flags = dict(zip(cmd[6::2], cmd[7::2]))
    assert flags == {
        "--num-seeds": "2048",
        "--num-chunks": "20",
        "--out": "out",
        "--num-envs": "1",
        "--num-steps": "16",
        "--num-minibatches": "1",
        "--update-epochs": "1",
        "--total-timesteps": "6400",
    }
    assert cmd[2:6] == ["experiments.train", "ppo", "--preset", "purejaxrl-cartpole"]


def _scale_rows():
    rows = [
        benchmark.ScaleRow("rl.train", 64, 5.04, 20.0, 30.0, 104857.6, **benchmark.return_stats([100.0, 140.0])),
        benchmark.ScaleRow(
            "CLI (python -m experiments.train)",
            64,
            5.0,
            21.0,
            36.0,
            99864.4,
            **benchmark.return_stats([100.0, 140.0]),
            peak_rss_mb=1234.4,
            folder_mb=12.34,
        ),
        benchmark.ScaleRow("env only (random actions, same envs)", 64, 1.0, 1.0, 8.0, 2e6),
        benchmark.ScaleRow("PureJaxRL ppo.py", 64, 6.0, 30.0, 40.0, 69905.1, **benchmark.return_stats([130.0, None])),
        benchmark.ScaleRow("replica (experiments/baselines)", 64, note="failed (exit 1); see logs/replica-64.log"),
    ]
    benchmark.compare_rows(rows)
    return rows


def test_scale_rows_compare_with_purejaxrl_and_the_cli_with_rl_train():
    train, cli, env, pjr, replica = _scale_rows()
    assert train.wall_vs_purejaxrl == pytest.approx(40 / 30) and train.steps_vs_purejaxrl == pytest.approx(1.5, 1e-4)
    assert pjr.wall_vs_purejaxrl == 1.0
    assert replica.wall_vs_purejaxrl is None and replica.steps_vs_purejaxrl is None  # it failed: no figures
    assert cli.note == "1.20x rl.train's wall"  # 36 s / 30 s
    # a seed without an episode in the final window is left out of the statistics
    assert (pjr.return_mean, pjr.return_sd, pjr.return_min, pjr.return_max) == (130.0, 0.0, 130.0, 130.0)


def test_median_round_picks_the_middle_run_and_names_every_round():
    rounds = [
        benchmark.ScaleRow("rl.train", 16, 5.0, run, 10.0 + run, 1e6 / run, note="rl.train call 1 s")
        for run in (40.0, 30.0, 50.0)
    ]
    row = benchmark.median_round(rounds)
    assert row.run_seconds == 40.0 and row.steps_per_second == pytest.approx(1e6 / 40.0)
    assert row.note == "median of 3 rounds (run s: 40.0, 30.0, 50.0); rl.train call 1 s"
    assert rounds[0].note == "rl.train call 1 s"  # the measured rows are left as they were
    # an even count takes the lower middle; a failed round counts only when every round failed
    failed = benchmark.ScaleRow("rl.train", 16, note="failed (exit 1)")
    assert benchmark.median_round([rounds[2], failed, rounds[1]]).run_seconds == 30.0
    assert benchmark.median_round([failed, failed]) is failed
    assert benchmark.median_round([rounds[0]]) is rounds[0]


def test_scale_table_rows():
    md = benchmark.to_markdown(_scale_rows(), {"cpu": "X", "cores": "2", "devices": "cpu x1", "jax": "0.10.2"})
    lines = md.splitlines()
    assert lines[0] == "Machine: X, 2 cores, cpu x1, jax 0.10.2"
    assert lines[2].startswith("| what | seeds | compile (s) | run (s) | wall (s) | env steps/s | final return |")
    assert "| rl.train | 64 | 5.0 | 20.0 | 30.0 | 104,858 | 120.0 ± 20.0 [100.0, 140.0] | - | - | 1.33x | 1.50x |" in md
    assert "| 1,234 | 12.3 | 1.11x | 1.43x | 1.20x rl.train's wall |" in md
    assert "| PureJaxRL ppo.py | 64 | 6.0 | 30.0 | 40.0 | 69,905 | 130.0 | - | - | 1.00x | 1.00x |  |" in md
    assert (
        "| replica (experiments/baselines) | 64 | - | - | - | - | - | - | - | - | - | "
        "failed (exit 1); see logs/replica-64.log |"
    ) in md


# A compiled module as XLA's CPU backend prints it (trimmed): the entry runs a loop of 3 trips
# whose body holds a fusion writing one row of a [3,4] buffer in place, a copy, and a small
# loop compiled into one kernel (a call); the condition holds one compare.
HLO = """HloModule jit_f, entry_computation_layout={(f32[4]{0})->f32[3,4]{1,0}}

%fused_update (param_0: f32[3,4], param_1: f32[4], param_2: s32[]) -> f32[3,4] {
  %param_0 = f32[3,4]{1,0} parameter(0)
  %param_1 = f32[4]{0} parameter(1)
  %bitcast.1 = f32[1,4]{1,0} bitcast(%param_1)
  %param_2 = s32[] parameter(2)
  %constant.0 = s32[] constant(0)
  ROOT %dynamic-update-slice.1 = f32[3,4]{1,0} dynamic-update-slice(%param_0, %bitcast.1, %param_2, %constant.0)
}

%small (arg: (s32[], f32[4])) -> (s32[], f32[4]) {
  %arg = (s32[], f32[4]{0}) parameter(0)
  ROOT %tuple.9 = (s32[], f32[4]{0}) tuple(%arg)
}

%body (arg_tuple: (s32[], f32[4], f32[3,4])) -> (s32[], f32[4], f32[3,4]) {
  %arg_tuple = (s32[], f32[4]{0}, /*index=2*/f32[3,4]{1,0}) parameter(0)
  %get-tuple-element.1 = s32[] get-tuple-element(%arg_tuple), index=0
  %get-tuple-element.2 = f32[4]{0} get-tuple-element(%arg_tuple), index=1
  %get-tuple-element.3 = f32[3,4]{1,0} get-tuple-element(%arg_tuple), index=2
  %fusion.1 = f32[3,4]{1,0} fusion(%get-tuple-element.3, %get-tuple-element.2, %get-tuple-element.1), kind=kLoop, calls=%fused_update
  %copy.1 = f32[4]{0} copy(%get-tuple-element.2)
  %call.1 = (s32[], f32[4]{0}) call(%get-tuple-element.1, %copy.1), to_apply=%small, frontend_attributes={xla_cpu_small_call="true"}
  ROOT %tuple.1 = (s32[], f32[4]{0}, f32[3,4]{1,0}) tuple(%get-tuple-element.1, %copy.1, %fusion.1)
}

%cond (arg_tuple.1: (s32[], f32[4], f32[3,4])) -> pred[] {
  %arg_tuple.1 = (s32[], f32[4]{0}, /*index=2*/f32[3,4]{1,0}) parameter(0)
  %get-tuple-element.4 = s32[] get-tuple-element(%arg_tuple.1), index=0
  %constant.3 = s32[] constant(3)
  ROOT %compare.1 = pred[] compare(%get-tuple-element.4, %constant.3), direction=LT
}

ENTRY %main (x: f32[4]) -> f32[3,4] {
  %x = f32[4]{0} parameter(0)
  %constant.1 = s32[] constant(0)
  %constant.2 = f32[] constant(0)
  %broadcast.1 = f32[3,4]{1,0} broadcast(%constant.2), dimensions={}
  %tuple.2 = (s32[], f32[4]{0}, f32[3,4]{1,0}) tuple(%constant.1, %x, %broadcast.1)
  %while.1 = (s32[], f32[4]{0}, f32[3,4]{1,0}) while(%tuple.2), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"3"}}
  ROOT %get-tuple-element.5 = f32[3,4]{1,0} get-tuple-element(%while.1), index=2
}
"""


def test_count_hlo_applies_trip_counts_and_in_place_updates():
    count = benchmark.count_hlo(HLO)
    # entry: broadcast (1); body x3: fusion, copy, small loop (3 each); condition x4: compare
    assert dict(count.ops) == {"broadcast": 1, "fusion": 3, "copy": 3, "loop in one kernel": 3, "compare": 4}
    assert count.kernels == 14 and count.static_kernels == 5
    assert count.loops == 2 and count.unknown_trip_counts == 0  # the while and the small loop
    # bytes: broadcast writes 48 (+ reads its 4-byte scalar); the fusion reads the 16-byte row and the
    # 4-byte index and writes the 16-byte row, not the 48-byte buffer; copy 16 + 16; the small loop
    # reads 4 + 16 and writes 4 + 16; compare reads 4 + 4 and writes a 1-byte pred
    assert count.bytes == (48 + 4) + 3 * ((16 + 4 + 16) + 32 + 40) + 4 * 9
    # no op_name metadata in this text: every kernel is in the unnamed region of its op
    assert sum(count.region_bytes.values()) == count.bytes
    assert count.region_kernels["(unnamed fusion)"] == 3 and count.region_kernels["(unnamed compare)"] == 4


def test_region_drops_the_tracing_wrappers_of_an_op_name():
    name = "jit(chunk)/vmap()/while/body/closed_call/while/body/closed_call/transpose(jvp(critic))/linear_1/dot_general"
    assert benchmark.region(name) == "transpose(jvp(critic))/linear_1"
    assert benchmark.region(name, depth=1) == "transpose(jvp(critic))"
    assert benchmark.region("jit(train)/vmap()/cond/branch_1_fun/add") == "add"
    assert benchmark.region("jit(f)/vmap()") == "(unnamed)"


def test_count_hlo_says_which_region_moves_the_bytes():
    import jax

    def program(x, y, v):
        with jax.named_scope("big"):
            z = x @ y  # reads 2 x 256 KB, writes 256 KB
        with jax.named_scope("small"):
            w = v * 2.0 + 1.0  # 64 bytes in, 64 out
        return z, w

    square = jnp.ones((256, 256))
    text = jax.jit(program).lower(square, square, jnp.ones((16,))).compile().as_text()
    count = benchmark.count_hlo(text)
    assert sum(count.region_bytes.values()) == count.bytes
    assert sum(count.region_kernels.values()) == count.kernels
    big = sum(moved for name, moved in count.region_bytes.items() if name.startswith("big"))
    small = sum(moved for name, moved in count.region_bytes.items() if name.startswith("small"))
    assert big >= 3 * 256 * 256 * 4 and 0 < small < 1024, dict(count.region_bytes)
    rows = benchmark.top_regions(count, shown=1)
    assert rows[0][0].startswith("big") and rows[0][1] == big / 2**20
    assert rows[-1][0] == f"{len(count.region_bytes) - 1} other regions"
    assert sum(r[1] for r in rows) == count.bytes / 2**20


def test_shape_bytes():
    assert benchmark.shape_bytes("f32[4,64]{1,0}") == 1024
    assert benchmark.shape_bytes("(s32[], pred[3], /*index=2*/bf16[2,2]{1,0})") == 4 + 3 + 8


def test_purejaxrl_episodes_reduce_each_update():
    # [N=1, U=2, T=2, E=2]: update 0 ends episodes of return 10 and 20, update 1 none
    ended = jnp.array([[[[True, False], [False, True]], [[False, False], [False, False]]]])
    returns = jnp.array([[[[10.0, 5.0], [7.0, 20.0]], [[1.0, 2.0], [3.0, 4.0]]]])
    mean, count = checkout.purejaxrl_episodes({"returned_episode": ended, "returned_episode_returns": returns})
    assert count.tolist() == [[2, 0]]
    assert mean.tolist() == [[15.0, 0.0]]  # 0 where none ended: final_return ignores it (count 0)


def test_done_step_gives_purejaxrl_the_gymnax_0_step():
    import gymnax
    import jax

    env, params = gymnax.make("CartPole-v1")
    wrapped = checkout._DoneStep(env)
    key = jax.random.PRNGKey(0)
    obs, state = wrapped.reset(key, params)  # everything but step passes through
    state = state.replace(time=params.max_steps_in_episode - 1)  # the next step hits the time limit
    out = wrapped.step(key, state, 0, params)
    assert len(out) == 5
    assert bool(out[3])  # done: truncated counts
    assert set(out[4]) == {"discount"}  # what gymnax 0.0.x put in info


@pytest.fixture
def fake_purejaxrl(tmp_path, monkeypatch):
    """A checkout whose wrappers.py imports brax and navix (not installed) and whose ppo.py uses gymnax 0.0.x's step."""
    import sys

    folder = tmp_path / "purejaxrl"
    folder.mkdir()
    (folder / "wrappers.py").write_text(
        "from brax import envs\n"
        "from brax.envs.wrappers.training import EpisodeWrapper, AutoResetWrapper\n"
        "import navix as nx\n"
    )
    (folder / "ppo.py").write_text(
        "import gymnax\n"
        "from flax.linen.initializers import orthogonal\n"
        "from wrappers import EpisodeWrapper\n\n"
        "def make_train(config):\n"
        "    env, params = gymnax.make(config['ENV_NAME'])\n\n"
        "    def train(rng):\n"
        "        obs, state = env.reset(rng, params)\n"
        "        obs, state, reward, done, info = env.step(rng, state, 0, params)\n"
        "        return orthogonal(1.0)(rng, (3, 3)), done\n\n"
        "    return train\n"
    )
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def test_purejaxrl_loads_with_stubs_and_shims(fake_purejaxrl):
    import jax
    from flax.linen.initializers import orthogonal

    module = checkout.load_purejaxrl(str(fake_purejaxrl))
    train = module.make_train({"ENV_NAME": "CartPole-v1"})
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    weights, done = jax.jit(jax.vmap(train))(keys)  # seeds vmapped, as PureJaxRL runs it
    assert done.shape == (3,)
    # the initialiser mapped seed by seed gives each seed what it gives that seed alone
    for key, w in zip(keys, weights):
        assert (w == orthogonal(1.0)(key, (3, 3))).all()


def test_hlo_target_is_checked_before_anything_compiles(monkeypatch):
    unknown = benchmark.check_args(benchmark.BenchArgs(only=("hlo",), hlo_target="a100"))
    assert unknown.startswith("error: --hlo-target 'a100'") and "'host'" in unknown and "'h200'" in unknown
    elsewhere = benchmark.check_args(benchmark.BenchArgs(only=("scale",), hlo_target="h200"))
    assert "applies to the hlo group only" in elsewhere
    from experiments import gpu_target

    monkeypatch.setattr(gpu_target, "plugin_available", lambda: False)
    missing = benchmark.check_args(benchmark.BenchArgs(only=("hlo",), hlo_target="h200"))
    assert "needs jax's CUDA plugin" in missing and "jax-cuda13-plugin==" in missing
    assert benchmark.check_args(benchmark.BenchArgs(only=("hlo",))) is None  # the host needs nothing


def test_one_update_compiled_for_an_h200_runs_fewer_kernels_than_purejaxrls(tmp_path, monkeypatch):
    """Where jax's CUDA plugin is installed (experiments/gpu_target.py), the GPU compiler's own
    program of one update at the preset's sizes: fewer kernels than PureJaxRL's (the replica,
    whose GPU program counted the same as ppo.py's: 5,045 kernels). Before the rollout summed its
    episode statistics per env and the reverse sums were unrolled, the library's ran 6,340."""
    import json
    import subprocess
    import sys

    from experiments import gpu_target

    monkeypatch.setattr(sys, "path", list(sys.path))  # this process keeps its path: only the bench's uses the plugin
    if not gpu_target.plugin_available():
        pytest.skip("jax's CUDA plugin is not installed (`make gpu-compiler`)")
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "experiments.benchmark", "--only", "hlo", "--hlo-target", "h200", "--seeds", "1"]
    done = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = {r["name"].split(" (")[0]: r for r in json.loads((out / "bench.json").read_text())["rows"]}
    assert {r["target"] for r in rows.values()} == {"h200"}
    assert "One update compiled for NVIDIA H200" in (out / "bench.md").read_text()
    assert rows["this library"]["kernels"] < rows["replica"]["kernels"]
