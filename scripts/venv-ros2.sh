#!/usr/bin/env bash
# Makes the Python venv for the ROS 2 interop peer (scripts/ros2_interop.py):
# cyclonedds from PyPI at a pinned version. Its manylinux wheel ships its own
# libddsc (Cyclone DDS C library) and idlc, so no ROS 2 or system DDS is needed.
#
# The venv lives at ${REFLEX_ROS2_VENV:-.venv-ros2}, relative to the repo root
# unless absolute. Idempotent: a venv that already has the pinned version is
# left as it is. Everything goes to stderr except the last stdout line, which
# is the venv's python, so callers can do
#   py=$(bash scripts/venv-ros2.sh | tail -n 1)
set -euo pipefail
cd "$(dirname "$0")/.."

cyclonedds_version=11.0.1

venv=${REFLEX_ROS2_VENV:-.venv-ros2}
case "$venv" in
  /*) ;;
  *) venv="$PWD/$venv" ;;
esac
py="$venv/bin/python"

have_pinned() {
  "$py" - "$cyclonedds_version" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
import cyclonedds.domain  # loads the bundled libddsc: fails if the wheel is broken
sys.exit(0 if version("cyclonedds") == sys.argv[1] else 1)
EOF
}

if ! have_pinned; then
  echo "venv-ros2: installing cyclonedds==$cyclonedds_version into $venv" >&2
  python3 -m venv "$venv" >&2
  # --only-binary: never fall back to an sdist build (that needs a Cyclone DDS
  # C install, which this project does not have).
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    --only-binary=cyclonedds "cyclonedds==$cyclonedds_version" >&2
  if ! have_pinned; then
    echo "venv-ros2: cyclonedds==$cyclonedds_version did not import in $venv" >&2
    exit 1
  fi
fi

echo "$py"
