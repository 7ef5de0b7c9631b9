#!/usr/bin/env bash
# Policy inference latency, reflex (native evaluator and tract) beside onnxruntime on the same files.
# The files are the parity tests' exports (2x64 plain, 2x64 dueling with
# normalization, 2x64 twin dueling LayerNorm tanh, 2x256 twin; the continuous
# actors of DDPG, TD3 and NAF; a DRQN policy with an LSTM-32) and an LSTM-128
# step (ONNX LSTM operator, CartPole input plus one-hot previous action; the
# native evaluator runs it since issue 7's export, tract beside it).
#   bash scripts/bench-policy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv-onnx.sh
dir=${BENCH_POLICY_DIR:-$PWD/target/bench-policy}
rm -rf "$dir"
REFLEX_INTEROP_DIR="$dir" cargo test --quiet -p reflex-trainer --test onnx -- \
  tract_matches_candle_for_every_network_kind continuous_policies_match_their_agents \
  recurrent_policies_match_their_agents_over_rollouts > /dev/null
REFLEX_LSTM_DIR="$dir" cargo test --quiet -p reflex-trainer --test recurrent_onnx \
  write_an_lstm_128_policy > /dev/null
files=("$dir"/*.onnx)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
cargo bench --quiet -p reflex-daemon --bench policy_latency -- "${files[@]}"
"$venv/bin/python" scripts/bench_policy_ort.py "${files[@]}"
