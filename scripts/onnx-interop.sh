#!/usr/bin/env bash
# ONNX interop: reflex's exported policies against the reference tooling.
#   1. every network kind the trainer exports passes onnx.checker (full_check)
#      and onnxruntime reproduces candle's Q-values (scripts/onnx_interop.py);
#   2. a trained CartPole policy evaluated in Python (Gymnasium + onnxruntime,
#      scripts/eval_onnx.py, the README's snippet) gets the return that
#      `reflex-train eval --policy` reports.
# Makes a Python venv at .venv-onnx (onnx, onnxruntime, gymnasium) if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv-onnx.sh
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

REFLEX_INTEROP_DIR="$dir/kinds" cargo test --quiet -p reflex-trainer --test onnx \
  tract_matches_candle_for_every_network_kind
"$venv/bin/python" scripts/onnx_interop.py "$dir/kinds"

cargo build --quiet -p reflex-trainer --bin reflex-train
train=${CARGO_TARGET_DIR:-target}/debug/reflex-train
"$train" run --env cartpole --steps 4000 --out "$dir/run" --quiet > /dev/null
ours=$("$train" eval --policy "$dir/run/policy.onnx" --episodes 10 | tail -n 1)
theirs=$("$venv/bin/python" scripts/eval_onnx.py "$dir/run/policy.onnx" CartPole-v1 10 | tail -n 1)
echo "reflex-train eval --policy: $ours"
echo "gymnasium + onnxruntime:    $theirs"
"$venv/bin/python" - "$ours" "$theirs" <<'PY'
import json, sys
ours, theirs = (json.loads(a) for a in sys.argv[1:3])
if abs(ours["mean_return"] - theirs["mean_return"]) > 1e-9:
    sys.exit("the returns differ")
print("same mean return")
PY
