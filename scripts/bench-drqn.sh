#!/usr/bin/env bash
# DRQN sequence-batch updates/s beside the same model and update in PyTorch on
# the CPU, one thread each, in one run (issue 7's benchmark): batch 32 windows ×
# 40 learning steps, LSTM hidden 128, dueling head with one 128-unit layer.
#
#   bash scripts/bench-drqn.sh
#
#   1. cargo bench -p reflex-trainer --bench drqn_update (RAYON_NUM_THREADS=1)
#   2. scripts/bench_drqn_torch.py (torch.set_num_threads(1), OMP_NUM_THREADS=1)
# Each: 3 repeats of 200 updates after warm-up; prints JSON lines and the medians.
# Environment: UPDATES, REPEATS, HIDDEN, BATCH, LEN, BURN_IN (reflex only; PyTorch
# has no burn-in here, so keep 0 for the side-by-side), MAX_LOAD, MAX_WAIT.
# Makes the .venv-sb3 venv (torch) if missing; about 3 minutes after the build.
set -euo pipefail
cd "$(dirname "$0")/.."
max_load=${MAX_LOAD:-1.2}
max_wait=${MAX_WAIT:-600}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
updates=${UPDATES:-200} repeats=${REPEATS:-3} hidden=${HIDDEN:-128}
batch=${BATCH:-32} len=${LEN:-40} burn_in=${BURN_IN:-0}
REFLEX_TRAIN=unused source scripts/bench-common.sh
cargo bench --no-run -p reflex-trainer --bench drqn_update 2>/dev/null
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; commit $(git rev-parse --short HEAD)"
wait_quiet
RAYON_NUM_THREADS=1 cargo bench -q -p reflex-trainer --bench drqn_update -- \
  updates="$updates" repeats="$repeats" hidden="$hidden" batch="$batch" len="$len" burn_in="$burn_in" \
  | tee "$out/reflex.txt"
wait_quiet
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$py" scripts/bench_drqn_torch.py --updates "$updates" \
  --repeats "$repeats" --hidden "$hidden" --batch "$batch" --len "$len" | tee "$out/torch.txt"
ours=$(sed -n 's/^reflex median updates\/s: //p' "$out/reflex.txt")
theirs=$(sed -n 's/^pytorch median updates\/s: //p' "$out/torch.txt")
python3 -c "print(f'ratio reflex/pytorch: {float($ours) / float($theirs):.2f}x ($ours vs $theirs updates/s)')"
