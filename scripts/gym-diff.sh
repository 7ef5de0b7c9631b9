#!/usr/bin/env bash
# Differential check against live Gymnasium: records fresh trajectories for every
# classic-control task (seeds and policies beyond the shipped reference files)
# and requires reflex-sim to reproduce them exactly (--tol 0, flags identical).
#
#   bash scripts/gym-diff.sh [FIRST_SEED END_SEED]     (default 1000 1010)
#
# Makes a Python venv at .venv-gym with gymnasium 1.4.0 / numpy 2.4.6 if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
first=${1:-1000}
end=${2:-1010}
venv=.venv-gym
if ! "$venv/bin/python" -c "import gymnasium" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check gymnasium==1.4.0 numpy==2.4.6
fi
cargo build --quiet -p reflex-sim --bin reflex-sim
sim=${CARGO_TARGET_DIR:-target}/debug/reflex-sim
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
status=0
for env in CartPole-v1 Acrobot-v1 MountainCar-v0 Pendulum-v1 MountainCarContinuous-v0; do
  "$venv/bin/python" scripts/gym_record.py "$env" --seeds "$first" "$end" --out "$dir/$env.jsonl"
  "$sim" check "$dir/$env.jsonl" --tol 0 || status=1
done
exit $status
