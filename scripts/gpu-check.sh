#!/usr/bin/env bash
# The GPU machine's check (issue 12): run there, from the repository root, with
# the CUDA build of reflex-train carried along in .gpu/. Prepare here:
#
#   bash scripts/build-cuda.sh && mkdir -p .gpu && cp target/cuda/reflex-train.gz .gpu/
#
# then, through the device tool (carry [".gpu"], timeout ~560 s):
#
#   bash scripts/gpu-check.sh        # results under $OUT (default runs/gpu-check)
#
# Steps, each under its own time limit, each continuing past the others' failures:
#   1. parity: `reflex-train gpu parity --device cuda`: forward passes, gradients and
#      Adam steps of every network kind, CPU vs CUDA on the same weights (1e-4),
#      every learner's first update (loss, mean Q, gradient norm), and DQN, TD3 and DRQN
#      populations on CUDA against their members as single learners on the CPU;
#   2. bench: `reflex-train gpu bench --device cuda` and scripts/bench_gpu_torch.py
#      (PyTorch eager and CUDA-graphed) on the same shapes, merged by
#      scripts/gpu_report.py into table.md;
#   3. cartpole: `reflex-train run --env cartpole --device cuda` (the preset, 50k
#      steps); passes when the final greedy evaluation's mean is >= 475.
#   4. population (not in the default STEPS; a second call, STEPS=population):
#      `reflex-train run --population 8 --device cuda` on the same preset (seeds
#      0-7); passes when it completes with its best member's final greedy mean
#      >= 475 (on the CPU 4 of these 8 seeds end at 500; DQN's final policy varies
#      by seed), and reports how many members did and the wall time for all 8.
#   5. population-td3 (not in the default STEPS either): `reflex-train run --env
#      pendulum --algo td3 --population 4 --device cuda` (the Pendulum TD3 preset,
#      20k steps, seeds 0-3); passes when its best member's final greedy mean is
#      >= -200 (on the CPU all four end between -156 and -122), and reports each
#      member's and the wall time (402.9 s for all four on one CPU core).
# summary.md says PASS/FAIL per step; the script exits non-zero if any failed.
#
# Environment: OUT, BENCH_SECONDS (per case, default 4), STEPS (what to run,
# default "parity bench cartpole"), BUDGET (seconds for the whole script,
# default 540: the device tool's calls stop at 600; each step's own limit is cut
# to what is left, and a step with under 20 s left is skipped, so what ran
# still comes back); for a smoke run of this script on a CPU: DEVICE=cpu,
# REFLEX_TRAIN=target/release/reflex-train, BENCH_FLAGS=--small.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/gpu-check}
seconds=${BENCH_SECONDS:-4}
steps=${STEPS:-parity bench cartpole}
budget=${BUDGET:-540}
# The limit for a step that wants $1 seconds: what is left of the budget.
limit() {
  local left=$(( budget - SECONDS - 5 ))
  (( left < $1 )) && echo "$left" || echo "$1"
}
mkdir -p "$out"
device=${DEVICE:-cuda}
flags=${BENCH_FLAGS:-}
bin=${REFLEX_TRAIN:-.gpu/reflex-train}
if [ ! -x "$bin" ]; then
  [ -f .gpu/reflex-train.gz ] || { echo "gpu-check: no .gpu/reflex-train(.gz): build it with scripts/build-cuda.sh" >&2; exit 2; }
  gunzip -c .gpu/reflex-train.gz > "$bin" && chmod +x "$bin"
fi
# The CUDA libraries reflex-train loads (cuBLAS, cuRAND, NVRTC, the runtime): PyTorch's.
libs=$(ls -d /opt/torch/.venv/lib/python3.*/site-packages/nvidia/*/lib 2>/dev/null | paste -sd:)
export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
py=python3
[ -x /opt/torch/.venv/bin/python3 ] && py=/opt/torch/.venv/bin/python3

{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  lscpu | grep -E "Model name|^CPU\(s\)" 2>&1
  "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" 2>&1
  "$bin" --version
} > "$out/machine.txt"
cat "$out/machine.txt"

summary="$out/summary.md"
echo "# gpu-check $(date -u +%FT%TZ)" > "$summary"
failed=0
result() { # NAME STATUS DETAIL
  echo "- $1: $2 $3" | tee -a "$summary"
  [ "$2" = PASS ] || failed=1
}

for step in $steps; do
  if (( budget - SECONDS < 20 )); then
    result "$step" FAIL "(skipped: the $budget s budget is spent)"
    continue
  fi
  case $step in
  parity)
    start=$SECONDS
    timeout "$(limit 150)" "$bin" gpu parity --device "$device" --out "$out/parity" > "$out/parity.log" 2>&1
    rc=$?
    tail -n 40 "$out/parity.log"
    [ $rc = 0 ] && result parity PASS "($((SECONDS - start)) s; $out/parity/parity.md)" \
                || result parity FAIL "(rc $rc; $out/parity.log)"
    ;;
  bench)
    start=$SECONDS
    timeout "$(limit 200)" "$bin" gpu bench --device "$device" --seconds "$seconds" $flags --out "$out/bench" > "$out/bench.log" 2>&1
    rc=$?
    tail -n 12 "$out/bench.log"
    # What the fused optimizer kernels and the event-tracking switch buy: the
    # small-network cases again with each turned back to candle's default.
    # And the experimental CUDA-graph updates (REFLEX_CUDA_GRAPH=1: DQN, TD3
    # and DRQN, single and populations; the LSTM cases only there, as their
    # replay is filled by acting, which takes a while).
    for variant in "REFLEX_CUDA_FUSED=0 unfused" "REFLEX_CUDA_EVENTS=1 events" \
                   "REFLEX_CUDA_GRAPH=1 graph --case lstm512-b64-t80-burn40 --case lstm512-b64-t80-burn40-pop16"; do
      set -- $variant
      (( budget - SECONDS < 60 )) && { echo "== with $1: skipped (budget)"; continue; }
      env "$1" timeout "$(limit 120)" "$bin" gpu bench --device "$device" --seconds 2 $flags \
        --case dqn-256x256-b256 --case dqn-256x256-b256-pop16 --case td3-400x300-b256 --case td3-400x300-b256-pop16 \
        --case dqn-256x256-b4096 "${@:3}" \
        --case e2e-cartpole-64envs --out "$out/bench-$2" > "$out/bench-$2.log" 2>&1 \
        && { echo "== with $1"; sed -n 3,12p "$out/bench-$2/bench.md"; } \
        || { echo "== with $1: failed"; tail -n 5 "$out/bench-$2.log"; }
    done
    timeout "$(limit 200)" "$py" scripts/bench_gpu_torch.py --device "$device" --seconds "$seconds" $flags --out "$out/torch.jsonl" > "$out/torch.log" 2>&1
    trc=$?
    tail -n 20 "$out/torch.log" | cut -c1-220
    if [ $rc = 0 ] && [ -f "$out/torch.jsonl" ]; then
      "$py" scripts/gpu_report.py "$out/bench/bench.json" "$out/torch.jsonl" > "$out/table.md" 2>&1
      cat "$out/table.md"
    fi
    [ $rc = 0 ] && [ $trc = 0 ] && result bench PASS "($((SECONDS - start)) s; $out/table.md)" \
                               || result bench FAIL "(reflex rc $rc, torch rc $trc; $out/bench.log, $out/torch.log)"
    ;;
  cartpole)
    start=$SECONDS
    rm -rf "$out/cartpole"
    timeout "$(limit 300)" "$bin" run --env cartpole --device "$device" --seed 0 --out "$out/cartpole" --quiet > "$out/cartpole.log" 2>&1
    rc=$?
    tail -n 5 "$out/cartpole.log"
    mean=$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['mean_return'])" "$out/cartpole/eval.json" 2>/dev/null || echo none)
    if [ $rc = 0 ] && "$py" -c "import sys; sys.exit(0 if float(sys.argv[1]) >= 475 else 1)" "$mean" 2>/dev/null; then
      result cartpole PASS "(final greedy mean $mean over the preset's 50k steps, $((SECONDS - start)) s)"
    else
      result cartpole FAIL "(rc $rc, final greedy mean $mean; $out/cartpole.log)"
    fi
    ;;
  population)
    start=$SECONDS
    timeout "$(limit 450)" "$bin" run --env cartpole --device "$device" --seed 0 --population 8 \
      --out "$out/population" --quiet > "$out/population.log" 2>&1
    rc=$?
    tail -n 3 "$out/population.log"
    finals=$("$py" -c "import json,sys; m=[x['final_mean_return'] for x in json.load(open(sys.argv[1]))['members']]; print(max(m), sum(r >= 475 for r in m), ' '.join(f'{r:g}' for r in m))" \
      "$out/population/population.json" 2>/dev/null || echo none)
    best=${finals%% *}
    if [ $rc = 0 ] && "$py" -c "import sys; sys.exit(0 if float(sys.argv[1]) >= 475 else 1)" "$best" 2>/dev/null; then
      result population PASS "(8 seeds; best, members >= 475, each: $finals; $((SECONDS - start)) s for all 8)"
    else
      result population FAIL "(rc $rc; best, members >= 475, each: $finals; $out/population.log)"
    fi
    ;;
  population-td3)
    start=$SECONDS
    timeout "$(limit 400)" "$bin" run --env pendulum --algo td3 --device "$device" --seed 0 --population 4 \
      --out "$out/population-td3" --quiet > "$out/population-td3.log" 2>&1
    rc=$?
    tail -n 3 "$out/population-td3.log"
    finals=$("$py" -c "import json,sys; m=[x['final_mean_return'] for x in json.load(open(sys.argv[1]))['members']]; print(max(m), ' '.join(f'{r:.1f}' for r in m))" \
      "$out/population-td3/population.json" 2>/dev/null || echo none)
    best=${finals%% *}
    if [ $rc = 0 ] && "$py" -c "import sys; sys.exit(0 if float(sys.argv[1]) >= -200 else 1)" "$best" 2>/dev/null; then
      result population-td3 PASS "(4 seeds; best, each: $finals; $((SECONDS - start)) s for all 4)"
    else
      result population-td3 FAIL "(rc $rc; best, each: $finals; $out/population-td3.log)"
    fi
    ;;
  *) echo "gpu-check: unknown step $step" >&2; failed=1 ;;
  esac
done
cat "$summary"
exit $failed
