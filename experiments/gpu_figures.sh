#!/usr/bin/env bash
# Issue 10's GPU figures in one bounded run on a lent GPU machine (no package registry there; see
# the project's shared/gpu/README.md): the scale group (rl.train, the CLI, env only, PureJaxRL's own
# ppo.py and the replica, one process each) and the hlo group (kernels and bytes of one update, and
# which parts of the program move the bytes), at
# 1 and 2048 seeds of PPO on CartPole-v1 at the purejaxrl-cartpole preset, 5e5 env steps per seed.
#
# Prepare on this machine, from the project root:
#   ../shared/gpu/fetch-wheels.sh                                   # wheels the GPU image lacks, in .whl/
#   git clone <purejaxrl checkout or mirror> .purejaxrl             # PureJaxRL's own ppo.py (git-ignored)
# then run it there as the device tool's command, carrying [".whl", ".purejaxrl"]:
#   OUT=$OUT bash experiments/gpu_figures.sh
# Every step is bounded by `timeout` and writes under $OUT (default runs/gpu-figures); rc.txt says
# how each step ended. Try it on the CPU first at tiny sizes:
#   SEEDS=1,4 STEPS=20000 PUREJAXRL=/path/to/purejaxrl bash experiments/gpu_figures.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-figures}
SEEDS=${SEEDS:-1,2048}
STEPS=${STEPS:-500000}
PUREJAXRL=${PUREJAXRL:-.purejaxrl}
PY=${PY:-python3}
SCALE_SECONDS=${SCALE_SECONDS:-400}  # the scale group in all (each process at most a third of it)
HLO_SECONDS=${HLO_SECONDS:-150}
mkdir -p "$OUT"
: > "$OUT/rc.txt"

if compgen -G ".whl/*.whl" > /dev/null; then  # the GPU machine: install the missing wheels beside its own jax
  site=$(mktemp -d)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl \
    || { echo "wheels rc $?" >> "$OUT/rc.txt"; exit 3; }
  export PYTHONPATH=$site:$PWD
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
  "$PY" -c "import jax, sys; print('python', sys.version.split()[0], 'jax', jax.__version__, jax.devices())"
} > "$OUT/machine.txt" 2>&1
echo "machine rc $?" >> "$OUT/rc.txt"

pjx=()
if [ -e "$PUREJAXRL" ]; then pjx=(--purejaxrl "$PUREJAXRL"); fi
step() {  # step NAME SECONDS ARGS...: one bench group, bounded, its output in NAME.log and NAME/
  local name=$1 seconds=$2; shift 2
  timeout "$seconds" "$PY" -m experiments.benchmark "$@" --out "$OUT/$name" > "$OUT/$name.log" 2>&1
  echo "$name rc $?" >> "$OUT/rc.txt"
}
step scale "$SCALE_SECONDS" --only scale --seeds "$SEEDS" --total-timesteps "$STEPS" "${pjx[@]}" \
  --timeout $((SCALE_SECONDS / 3))
step hlo "$HLO_SECONDS" --only hlo --seeds "$SEEDS" --total-timesteps "$STEPS" "${pjx[@]}"
cat "$OUT/rc.txt"
