#!/usr/bin/env bash
# reflexd's tick at 1 kHz with a 2x64 MLP policy (the parity test's plain.onnx):
# latency, jitter, overruns and peak RSS, without and with a 200 µs spin before
# each deadline.
#   bash scripts/bench-daemon.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
dir=target/bench-policy
REFLEX_INTEROP_DIR="$dir" cargo test --quiet -p reflex-trainer --test onnx \
  tract_matches_candle_for_every_network_kind > /dev/null
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for spin in 0 200; do
  cargo bench --quiet -p reflex-daemon --bench tick_latency -- "$dir/plain.onnx" "$seconds" 1000 "$spin"
done
