#!/usr/bin/env bash
# Masked Pendulum (cos θ, sin θ; no angular velocity) at issue 7's budget of
# 60,000 env steps, seeds 0, 1, 2: recurrent TD3 (the shipped preset
# pendulum-masked-td3.toml) beside two feed-forward TD3 baselines on the same
# env and budget:
#   ff-preset: the same preset with the LSTM off (`--set recurrent=false`);
#   ff-zoo:    RL Zoo's tuned Pendulum TD3 (trainer/presets/pendulum-td3.toml:
#              [400, 300], batch 256, 10k random steps).
# Prints a markdown table of the final greedy evaluations (20 episodes,
# eval.json) and of the `best/` policies. Runs JOBS at a time (default 2).
#
#   bash scripts/bench-pendulum-masked.sh            # all three kinds, ~50 min on 2 cores
#   KINDS="recurrent" SEEDS="0" bash scripts/bench-pendulum-masked.sh
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${SEEDS:-0 1 2}
kinds=${KINDS:-recurrent ff-preset ff-zoo}
jobs=${JOBS:-2}
out=${OUT:-/tmp/bench-pendulum-masked}
bin=${REFLEX_TRAIN:-}
if [[ -z "$bin" ]]; then
  cargo build --release -p reflex-trainer --bin reflex-train
  bin=target/release/reflex-train
fi
mkdir -p "$out"

args_for() {
  case "$1" in
    recurrent) echo "" ;;
    ff-preset) echo "--set recurrent=false" ;;
    ff-zoo) echo "--config trainer/presets/pendulum-td3.toml --steps 60000 --set recurrent=false" ;;
    *) echo "unknown kind $1" >&2; exit 2 ;;
  esac
}

for kind in $kinds; do
  for seed in $seeds; do
    dir="$out/$kind-$seed"
    [[ -f "$dir/eval.json" ]] && continue
    while (( $(jobs -r | wc -l) >= jobs )); do sleep 5; done
    # shellcheck disable=SC2046
    "$bin" run --env pendulum-masked --algo td3 --seed "$seed" $(args_for "$kind") \
      --out "$dir" --quiet >"$dir.log" 2>&1 &
  done
done
wait

echo "| run | seed 0 | seed 1 | seed 2 | best/ seed 0 | best/ seed 1 | best/ seed 2 | wall per run |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for kind in $kinds; do
  python3 - "$out" "$kind" "$seeds" <<'PY'
import json, re, sys
out, kind, seeds = sys.argv[1], sys.argv[2], sys.argv[3].split()
final, best, walls = [], [], []
for s in seeds:
    d = f"{out}/{kind}-{s}"
    final.append(f"{json.load(open(f'{d}/eval.json'))['mean_return']:.1f}")
    try:
        best.append(f"{json.load(open(f'{d}/best/eval.json'))['mean_return']:.1f}")
    except FileNotFoundError:
        best.append("–")
    m = re.search(r"steps in ([0-9.]+)s", open(f"{d}.log").read())
    walls.append(float(m.group(1)) if m else float("nan"))
print(f"| {kind} | " + " | ".join(final) + " | " + " | ".join(best)
      + f" | {min(walls):.0f}–{max(walls):.0f} s |")
PY
done
