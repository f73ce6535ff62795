# Two commands set everything up on a machine with python3 and make:
#   make run   -> creates .venv, installs, trains PPO on CartPole-v1 with 8 seeds
#   make test  -> the test suite (same venv)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench validate install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m experiments.train ppo --env CartPole-v1 --num-seeds 8 --preset purejaxrl-cartpole

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup -q tests

bench: $(STAMP)
	$(PY) -m experiments.benchmark

validate: $(STAMP)
	$(PY) -m experiments.validate

clean:
	rm -rf $(VENV) runs
