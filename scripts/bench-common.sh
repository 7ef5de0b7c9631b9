# Shared by scripts/bench-dqn.sh and scripts/bench-continuous.sh (sourced, from
# the repository root, after they set $out, $max_load and $max_wait):
#   - $py: the Python of a venv at .venv-sb3 (stable-baselines3, gymnasium 1.4.0,
#     torch), made if missing;
#   - $bin: the reflex-train binary ($REFLEX_TRAIN, or a fresh release build);
#   - $measure: a helper that times one command (see below);
#   - wait_quiet: waits until the 1-minute load average is below $max_load.
venv=.venv-sb3
if ! "$venv/bin/python" -c 'import stable_baselines3, torch, gymnasium; assert gymnasium.__version__ == "1.4.0"' 2>/dev/null; then
  echo "creating $venv with stable-baselines3, gymnasium 1.4.0, torch" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check stable-baselines3 gymnasium==1.4.0 torch
fi
py="$venv/bin/python"

if [[ -n "${REFLEX_TRAIN:-}" ]]; then
  bin=$REFLEX_TRAIN
else
  # Build first so that compiling never overlaps a measurement.
  cargo build --release -p reflex-trainer
  bin=target/release/reflex-train
fi

# measure.py NAME -- CMD...: runs CMD, saves its stdout/stderr, and writes
# $out/NAME.measure.json with wall seconds, the child's CPU seconds, the load
# average before, and how busy the whole machine was meanwhile (from /proc/stat),
# so that other processes' CPU use during the run is known.
measure="$out/measure.py"
cat >"$measure" <<'EOF'
import json, os, resource, subprocess, sys, time
out, name, cmd = sys.argv[1], sys.argv[2], sys.argv[4:]
def stat():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = f[3] + f[4]
    return sum(f[:8]) - idle, idle
load_before = os.getloadavg()[0]
b0, i0 = stat()
r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
t0 = time.perf_counter()
with open(f"{out}/{name}.stdout", "w") as so, open(f"{out}/{name}.stderr", "w") as se:
    rc = subprocess.call(cmd, stdout=so, stderr=se)
wall = time.perf_counter() - t0
r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
b1, i1 = stat()
hz = os.sysconf("SC_CLK_TCK")
cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
busy = (b1 - b0) / hz
json.dump({"name": name, "rc": rc, "wall_s": wall, "cpu_s": cpu,
           "machine_busy_cores": busy / wall, "others_busy_cores": max(busy - cpu, 0.0) / wall,
           "load_before": load_before, "cmd": cmd}, open(f"{out}/{name}.measure.json", "w"))
sys.exit(rc)
EOF

wait_quiet() {
  local waited=0 load
  while :; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    if awk -v l="$load" -v m="$max_load" 'BEGIN { exit !(l < m) }'; then
      break
    fi
    if (( waited >= max_wait )); then
      echo "   load $load still above $max_load after ${waited}s: measuring anyway" >&2
      break
    fi
    echo "   load $load above $max_load: waiting" >&2
    sleep 15
    waited=$((waited + 15))
  done
  echo "   load before: $(uptime)" >&2
}
