# Two commands set everything up on a machine with python3 and make:
#   make run   -> creates .venv, installs, trains PPO on CartPole-v1 with 8 seeds
#   make test  -> the test suite (same venv)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Exact versions of every dependency, tested together (one universal lock: Python 3.11 and
# 3.12+, Linux/macOS). pyproject.toml keeps compatible ranges for installs into your own env.
LOCK := requirements.lock
UV_VERSION := 0.13.9

.PHONY: run test lint format bench validate install lock clean gpu-compiler

$(STAMP): pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "error: Python 3.11 or newer is needed; this is " + sys.version.split()[0] + " (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m experiments.train ppo --env CartPole-v1 --num-seeds 8 --preset purejaxrl-cartpole

test: lint
	$(PY) -m pytest -n 2 --dist loadgroup -q tests

# ruff's linter and formatter, configured in pyproject.toml; `make format` applies both
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# PUREJAXRL=path/to/purejaxrl-checkout adds PureJaxRL's own ppo.py to the scale group
bench: $(STAMP)
	$(PY) -m experiments.benchmark $(if $(PUREJAXRL),--purejaxrl $(PUREJAXRL)) $(BENCH_ARGS)

# jax's CUDA compiler plugin at the venv's jax version, without CUDA's libraries (no GPU needed),
# in a folder of its own that only `--hlo-target` puts on the path (in the venv, every jax process
# would try to start a GPU and print why it could not): then `make bench BENCH_ARGS="--only hlo
# --hlo-target h200"` counts an H200's kernels here
gpu-compiler: $(STAMP)
	v=$$($(PY) -c 'import jax; print(jax.__version__)') && \
		$(PY) -m pip install --quiet --no-deps --upgrade --target .gpu-compiler "jax-cuda13-plugin==$$v" "jax-cuda13-pjrt==$$v"

validate: $(STAMP)
	$(PY) -m experiments.validate

# Re-resolve the newest versions pyproject.toml allows and pin them; then `make test`.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv==$(UV_VERSION)
	$(VENV)/bin/uv pip compile pyproject.toml --extra test --universal --python-version 3.11 \
		--upgrade --quiet -o $(LOCK)

clean:
	rm -rf $(VENV) runs .gpu-compiler
