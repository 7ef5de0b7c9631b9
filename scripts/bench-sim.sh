#!/usr/bin/env bash
# Env steps/s of reflex-sim beside Gymnasium 1.4.0, in the same run: CartPole-v1
# and Pendulum-v1, single env and vectorized (N = 16). Prints the machine, the
# toolchain versions and a markdown table (the one in BENCHMARKS.md).
#
#   bash scripts/bench-sim.sh
#
# Environment: REFLEX_BENCH_SECS (target seconds per timed run, default 1.5) and
# REFLEX_BENCH_REPEATS (runs per measurement, median reported, default 5) apply to
# both sides. Makes a Python venv at .venv-bench with gymnasium 1.4.0 / numpy 2.4.6
# if missing. Keep other load off the machine while it runs (about 2 minutes after
# the build): the two sides run one after the other, each on one core.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${REFLEX_BENCH_SECS:-1.5}
repeats=${REFLEX_BENCH_REPEATS:-5}
export REFLEX_BENCH_SECS=$secs REFLEX_BENCH_REPEATS=$repeats

venv=.venv-bench
if ! "$venv/bin/python" -c '
import gymnasium, numpy
assert gymnasium.__version__ == "1.4.0" and numpy.__version__ == "2.4.6"
' 2>/dev/null; then
  echo "creating $venv with gymnasium 1.4.0 / numpy 2.4.6" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check gymnasium==1.4.0 numpy==2.4.6
fi
py="$venv/bin/python"

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# Build first so that compiling never overlaps a measurement.
cargo bench -p reflex-sim --bench env_steps --no-run
echo "== reflex (cargo bench -p reflex-sim --bench env_steps)" >&2
cargo bench -p reflex-sim --bench env_steps >"$dir/reflex.out"
grep '^{' "$dir/reflex.out" | tail -n 1 >"$dir/reflex.json"
echo "== Gymnasium (scripts/bench_sim_gymnasium.py)" >&2
"$py" scripts/bench_sim_gymnasium.py --secs "$secs" --repeats "$repeats" >"$dir/gym.json"

cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
cores=$(nproc)
rustc_version=$(rustc --version)
now=$(date -u '+%Y-%m-%d %H:%M UTC')

"$py" - "$dir/reflex.json" "$dir/gym.json" "$cpu" "$cores" "$rustc_version" "$now" <<'EOF'
import json
import sys

reflex_path, gym_path, cpu, cores, rustc, now = sys.argv[1:]
reflex = json.load(open(reflex_path))
gym = json.load(open(gym_path))

print(f"- command: `bash scripts/bench-sim.sh` (median of {reflex['repeats']} runs"
      f" of ~{reflex['target_secs']:g} s per measurement)")
print(f"- machine: {cpu}, {cores} cores")
print(f"- toolchain: {rustc}; Python {gym['python']}, gymnasium {gym['gymnasium']},"
      f" numpy {gym['numpy']}")
print(f"- date: {now}")
print()
print("| env | mode | reflex steps/s | Gymnasium steps/s | ratio |")
print("|---|---|---:|---:|---:|")
key = lambda r: (r["env"], r["mode"], r["num_envs"])
theirs = {key(r): r for r in gym["results"]}
for ours in reflex["results"]:
    other = theirs[key(ours)]
    mode = "single" if ours["num_envs"] == 1 else f"vector N={ours['num_envs']}"
    ratio = ours["steps_per_s"] / other["steps_per_s"]
    print(f"| {ours['env']} | {mode} | {ours['steps_per_s']:,.0f} |"
          f" {other['steps_per_s']:,.0f} | {ratio:,.0f}× |")
print()
print("Spread of the timed runs (min–max steps/s):")
print()
for ours in reflex["results"]:
    other = theirs[key(ours)]
    mode = "single" if ours["num_envs"] == 1 else f"vector N={ours['num_envs']}"
    spread = lambda r: f"{min(r['runs_steps_per_s']):,.0f}–{max(r['runs_steps_per_s']):,.0f}"
    print(f"- {ours['env']} {mode}: reflex {spread(ours)}, Gymnasium {spread(other)}")
EOF
