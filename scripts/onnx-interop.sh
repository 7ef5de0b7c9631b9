#!/usr/bin/env bash
# ONNX interop: reflex's exported policies against the reference tooling.
#   1. every network kind the trainer exports passes onnx.checker (full_check)
#      and onnxruntime reproduces candle's Q-values (scripts/onnx_interop.py);
#      (and every continuous policy kind its action: DDPG, TD3, NAF; and a DRQN
#      policy its Q-values and state over a 100-step rollout, state fed back);
#   2. a trained CartPole policy and a trained Pendulum policy (TD3, continuous
#      actions) evaluated in Python (Gymnasium + onnxruntime, scripts/eval_onnx.py,
#      the README's snippet) get the return that `reflex-train eval --policy`
#      reports (CartPole exactly; Pendulum to 1e-4 relative, since float32
#      actions from two runtimes may differ in the last bit).
# Makes a Python venv at .venv-onnx (onnx, onnxruntime, gymnasium) if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv-onnx.sh
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

REFLEX_INTEROP_DIR="$dir/kinds" cargo test --quiet -p reflex-trainer --test onnx \
  -- tract_matches_candle_for_every_network_kind continuous_policies_match_their_agents \
  recurrent_policies_match_their_agents_over_rollouts
"$venv/bin/python" scripts/onnx_interop.py "$dir/kinds"

cargo build --quiet -p reflex-trainer --bin reflex-train
train=${CARGO_TARGET_DIR:-target}/debug/reflex-train
compare() { # RUN GYM_ID TOLERANCE
  local ours theirs
  ours=$("$train" eval --policy "$dir/$1/policy.onnx" --episodes 10 | tail -n 1)
  theirs=$("$venv/bin/python" scripts/eval_onnx.py "$dir/$1/policy.onnx" "$2" 10 | tail -n 1)
  echo "$2 reflex-train eval --policy: $ours"
  echo "$2 gymnasium + onnxruntime:    $theirs"
  "$venv/bin/python" - "$ours" "$theirs" "$3" <<'PY'
import json, sys
ours, theirs = (json.loads(a) for a in sys.argv[1:3])
tolerance = float(sys.argv[3])
gap = abs(ours["mean_return"] - theirs["mean_return"])
if gap > tolerance * max(1.0, abs(ours["mean_return"])):
    sys.exit(f"the returns differ by {gap}")
print("same mean return")
PY
}
"$train" run --env cartpole --steps 4000 --out "$dir/cartpole" --quiet > /dev/null
compare cartpole CartPole-v1 1e-12
"$train" run --env pendulum --algo td3 --steps 3000 --out "$dir/pendulum" --quiet \
  --set td3.learning_starts=1000 --set 'td3.actor.hidden=[64, 64]' \
  --set 'td3.critic.hidden=[64, 64]' > /dev/null
compare pendulum Pendulum-v1 1e-4
