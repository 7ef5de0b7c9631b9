#!/usr/bin/env bash
# reflexd's zenoh and ROS 2 transports side by side (same payloads, same run):
# transitions/s into a learner-side subscriber and observation->action round trips.
# DDS discovers by multicast, so the run happens inside a private network namespace
# (loopback only; needs root or unprivileged user namespaces).
#   bash scripts/bench-transport.sh [SECONDS] [BATCH] [PACE_BATCHES_PER_S]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
batch=${2:-64}
pace=${3:-1000}
cargo bench --no-run --quiet -p reflex-daemon --bench transport
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
flag=-n
[ "$(id -u)" = 0 ] || flag=-rn
unshare $flag sh -c 'ip link set lo up && ip link set lo multicast on &&
  ip route add 224.0.0.0/4 dev lo &&
  exec cargo bench --quiet -p reflex-daemon --bench transport -- "$0" "$1" "$2"' "$seconds" "$batch" "$pace"
