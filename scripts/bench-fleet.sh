#!/usr/bin/env bash
# The fleet loop's benchmarks (issue 10), one after the other:
#   1. transitions/s into the learner's replay over zenoh (trainer/benches/ingest.rs);
#   2. policy-update latency, publish -> first action with it (trainer/benches/policy_update.rs);
#   3. scaling: `reflex-train fleet --robots N` for N = 1 2 4 8 (release binaries), with
#      the machine's CPU use over each run;
#   4. continuous (not in the default set): two-robot fleets with continuous actions,
#      DDPG / TD3 / NAF on Pendulum and TD3 on MountainCarContinuous, seeds 0 1 2, on
#      the fleet's defaults (the learner's preset, its noise on the robots);
#   5. recurrent (not in the default set): DRQN fleets on masked CartPole, seeds 0 1 2.
#
# Usage: bash scripts/bench-fleet.sh [ingest] [latency] [scaling] [continuous] [recurrent]
#        (default: the first three)
# Environment: FLEET_BUDGET (transitions per scaling run, default 40000), or
#              FLEET_SECONDS (budget = robots x rate x seconds instead), FLEET_RATE_HZ (per
#              robot, default 400), FLEET_TARGET (--target-return; 1e9 = never stop early:
#              steady-state throughput), FLEET_OUT (default /tmp/reflex-bench-fleet).
set -euo pipefail
cd "$(dirname "$0")/.."

parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(ingest latency scaling)
want() { [[ " ${parts[*]} " == *" $1 "* ]]; }

target="${CARGO_TARGET_DIR:-target}"
budget="${FLEET_BUDGET:-40000}"
rate="${FLEET_RATE_HZ:-400}"
out="${FLEET_OUT:-/tmp/reflex-bench-fleet}"

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)$(git diff --quiet || echo ' + uncommitted changes'), $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

if want ingest; then
  echo "## ingest"
  cargo bench -q -p reflex-trainer --bench ingest -- \
    batch=64,256,1024 publishers=1,4,8 transitions=3000000 repeats=5 stages
fi

if want latency; then
  echo "## policy-update latency"
  cargo bench -q -p reflex-trainer --bench policy_update -- updates=200 hidden=64
  cargo bench -q -p reflex-trainer --bench policy_update -- updates=100 hidden=256
fi

if want scaling; then
  if [ -n "${FLEET_SECONDS:-}" ]; then label="robots x rate x $FLEET_SECONDS s of"; else label="$budget"; fi
  echo "## scaling (budget: $label transitions, robots at $rate Hz${FLEET_TARGET:+, target return $FLEET_TARGET})"
  cargo build -q --release -p reflex-trainer -p reflex-sim -p reflex-daemon --bins
  # busy and total jiffies of the whole machine
  stat() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
  echo "| robots | ideal transitions/s (robots x rate) | transitions/s into the learner (while sending) | transitions received | learner updates/s (while training) | updates | dropped / lost / dups / decode errors | solved | time to solve s | greedy eval (policy.onnx, 20 episodes) | wall s | machine CPU busy (both cores) |"
  echo "|---:|---:|---:|---:|---:|---:|---|---|---:|---|---:|---:|"
  for n in 1 2 4 8; do
    rm -rf "$out/n$n"
    if [ -n "${FLEET_SECONDS:-}" ]; then
      budget=$(python3 -c "print(int($n * $rate * $FLEET_SECONDS))")
    fi
    extra=()
    [ -n "${FLEET_TARGET:-}" ] && extra=(--target-return "$FLEET_TARGET")
    read -r b0 t0 < <(stat)
    "$target/release/reflex-train" fleet --env cartpole --robots "$n" --rate-hz "$rate" \
      --max-transitions "$budget" --out "$out/n$n" "${extra[@]}" > "$out-n$n.json" 2> "$out-n$n.log"
    read -r b1 t1 < <(stat)
    python3 - "$out/n$n" "$out-n$n.json" "$b0" "$t0" "$b1" "$t1" "$n" "$rate" <<'EOF'
import json, sys
run, summary, b0, t0, b1, t1, n, rate = sys.argv[1:]
s = json.loads(open(summary).read().strip().splitlines()[-1])
r = json.load(open(run + "/learner.json"))
busy = (float(b1) - float(b0)) / (float(t1) - float(t0))
tts = s.get("time_to_solve_s")
print(f"| {n} | {int(n) * float(rate):.0f} | {r['receiving_transitions_per_s']:.0f} | {s['transitions_received']} "
      f"| {r['training_updates_per_s']:.0f} | {r['updates']} "
      f"| {s['transitions_dropped']} / {s['lost_in_transit']} / {s['duplicates']} / {s['decode_errors']} "
      f"| {'yes' if s['solved'] else 'no'} | {'-' if tts is None else f'{tts:.1f}'} "
      f"| {s['eval_mean_return']:.1f} ± {s['eval_std_return']:.1f} | {s['wall_s']:.1f} | {100 * busy:.0f} % |")
EOF
  done
fi

# Two-robot fleets to the env's bar (or 100000 transitions), seeds 0 1 2, on the fleet's
# defaults: learning_runs RATE_HZ ENV:ALGO…
learning_runs() {
  local rate=$1; shift
  mkdir -p "$out"
  cargo build -q --release -p reflex-trainer -p reflex-sim -p reflex-daemon --bins
  echo "| env | learner | seed | robots' exploration | solved | time to solve s | transitions received | updates | greedy eval (policy.onnx, 20 episodes) | dropped / lost / dups |"
  echo "|---|---|---:|---|---|---:|---:|---:|---|---|"
  for case in "$@"; do
    env=${case%%:*} algo=${case##*:}
    for seed in 0 1 2; do
      dir="$out/$env-$algo-$seed"
      rm -rf "$dir"
      "$target/release/reflex-train" fleet --env "$env" --algo "$algo" --robots 2 --rate-hz "$rate" \
        --seed "$seed" --out "$dir" > "$dir.json" 2> "$dir.log" || true
      python3 - "$dir.json" "$dir.log" "$env" "$algo" "$seed" <<'EOF'
import json, re, sys
summary, log, env, algo, seed = sys.argv[1:]
lines = open(summary).read().strip().splitlines()
if not lines:
    print(f"| {env} | {algo} | {seed} | - | failed: see {log} | | | | | |")
    sys.exit()
s = json.loads(lines[-1])
m = re.search(r"exploring with (.*?) \(configs", open(log).read())
tts = s.get("time_to_solve_s")
print(f"| {env} | {algo} | {seed} | {m.group(1) if m else '?'} | {'yes' if s['solved'] else 'no'} "
      f"| {'-' if tts is None else f'{tts:.1f}'} | {s['transitions_received']} | {s['updates']} "
      f"| {s['eval_mean_return']:.1f} ± {s['eval_std_return']:.1f} "
      f"| {s['transitions_dropped']} / {s['lost_in_transit']} / {s['duplicates']} |")
EOF
    done
  done
}

if want continuous; then
  echo "## continuous actions (2 robots at $rate Hz, budget 100000 transitions, stop at the env's bar)"
  learning_runs "$rate" pendulum:ddpg pendulum:td3 pendulum:naf mountaincarcontinuous:td3
fi

if want recurrent; then
  # 100 Hz per robot: the DRQN learner makes about 100 updates/s on 2 cores, the
  # preset's ratio of one update per two steps.
  echo "## recurrent (DRQN on masked CartPole, 2 robots at 100 Hz, budget 100000 transitions, stop at 475)"
  learning_runs 100 cartpole-masked:drqn
fi
