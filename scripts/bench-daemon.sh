#!/usr/bin/env bash
# reflexd's tick at 1 kHz with a 2x64 MLP policy (the parity test's plain.onnx):
# latency, jitter, overruns and peak RSS. Runs the policy on the native evaluator
# (reflexd's default for exported graphs) against a robot that blocks on the action
# channel and one that polls it, then on tract for comparison, then with a 200 µs
# spin before each deadline.
#   bash scripts/bench-daemon.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
dir=${BENCH_POLICY_DIR:-$PWD/target/bench-policy}
REFLEX_INTEROP_DIR="$dir" cargo test --quiet -p reflex-trainer --test onnx \
  tract_matches_candle_for_every_network_kind > /dev/null
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
#        spin_us robot    engine
for run in "0 blocking native" "0 polling native" "0 blocking tract" "200 blocking native"; do
  # shellcheck disable=SC2086
  cargo bench --quiet -p reflex-daemon --bench tick_latency -- "$dir/plain.onnx" "$seconds" 1000 $run
done
