#!/usr/bin/env bash
# Builds reflex-train with candle's CUDA backend (`--features cuda`) on a machine
# WITHOUT a GPU, for a GPU machine with an NVIDIA driver for CUDA 13.0 (the lent
# H100's: driver 580). The binary lands in target/cuda/release/reflex-train.
#
#   bash scripts/build-cuda.sh [PREFIX]           # PREFIX: where the toolkit goes (default .cuda-build)
#   bash scripts/build-cuda.sh --check [PREFIX]   # CI's form: lint the feature, no binary (minutes)
#
# --check runs clippy (-D warnings) over the trainer with `--features cuda`, all targets,
# in its own target dir (${CARGO_TARGET_DIR:-target}/cuda-check, so its empty kernels
# can never reach a real build). Our own kernels (trainer/cuda/*.cu) go through the real
# nvcc, so a broken kernel fails it; candle's kernels (the 20 minutes) are not compiled:
# a shim nvcc gives them empty PTX and objects, which a check never links or loads.
# It proves the feature's Rust and our CUDA C compile, not that anything runs.
#
# What it needs and where it comes from:
#   - nvcc and the CUDA headers: NVIDIA's wheels on PyPI (nvidia-cuda-nvcc & co.),
#     pinned to 13.0 because a newer nvcc writes PTX a CUDA 13.0 driver refuses;
#   - link-time libcuda/libcublas/libcublasLt/libcurand/libnvrtc: generated stub
#     libraries with the real sonames, one empty function per symbol cudarc declares
#     (cudarc links them dynamically; on the GPU machine the real ones load);
#   - CUDA_COMPUTE_CAP (default 90 = H100/H200; set it for other GPUs).
# A cold build takes about 20 minutes on 2 cores (nvcc on candle's kernels); it uses
# its own target dir because its RUSTFLAGS differ from the CPU build's.
#
# On the GPU machine, point the loader at the CUDA libraries there, e.g. PyTorch's:
#   export LD_LIBRARY_PATH=$(ls -d /opt/torch/.venv/lib/python3.*/site-packages/nvidia/*/lib | paste -sd:)
set -euo pipefail
cd "$(dirname "$0")/.."
check=0
if [ "${1:-}" = "--check" ]; then check=1; shift; fi
prefix=$(realpath -m "${1:-.cuda-build}")
cap=${CUDA_COMPUTE_CAP:-90}

if [ ! -x "$prefix/venv/bin/nvcc-ok" ]; then
  echo "build-cuda: installing nvcc 13.0 into $prefix/venv" >&2
  python3 -m venv "$prefix/venv"
  "$prefix/venv/bin/pip" install --quiet --disable-pip-version-check \
    "nvidia-cuda-nvcc==13.0.88" "nvidia-nvvm==13.0.88" "nvidia-cuda-runtime==13.0.96" \
    "nvidia-cuda-cccl==13.0.85" "nvidia-cuda-crt==13.0.88"
  touch "$prefix/venv/bin/nvcc-ok" && chmod +x "$prefix/venv/bin/nvcc-ok"
fi
cuda=$(echo "$prefix"/venv/lib/python3*/site-packages/nvidia/cu13)
[ -x "$cuda/bin/nvcc" ] || { echo "build-cuda: no nvcc in $cuda" >&2; exit 1; }

if [ "$check" = 1 ]; then
  shim="$prefix/check-bin"
  mkdir -p "$shim"
  cat > "$shim/nvcc" <<SHIM
#!/usr/bin/env bash
# Written by scripts/build-cuda.sh --check. Calls for candle-kernels' build (its
# OUT_DIR is in every one) get empty outputs; every other call is the real nvcc.
case " \$* " in
  *candle-kernels*) ;;
  *) exec "$cuda/bin/nvcc" "\$@" ;;
esac
out= dir= ptx=0 src=
while [ \$# -gt 0 ]; do
  case "\$1" in
    -o) out=\$2; shift ;;
    --output-directory) dir=\$2; shift ;;
    --ptx) ptx=1 ;;
    *.cu) src=\$1 ;;
  esac
  shift
done
if [ -n "\$out" ]; then : > "\$out"
elif [ "\$ptx" = 1 ] && [ -n "\$dir" ] && [ -n "\$src" ]; then : > "\$dir/\$(basename "\$src" .cu).ptx"
else echo "nvcc shim: a call it does not know: \$*" >&2; exit 1
fi
SHIM
  chmod +x "$shim/nvcc"
  PATH="$shim:$PATH" NVCC="$shim/nvcc" CUDA_COMPUTE_CAP="$cap" \
    CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/cuda-check" cargo clippy -p reflex-trainer --features cuda --all-targets -- -D warnings
  echo "build-cuda --check: the cuda feature lints clean; trainer/cuda/*.cu compiled with $("$cuda/bin/nvcc" --version | grep -o 'release [0-9.]*')"
  exit 0
fi

# cudarc's sources say which symbols each library must have.
cargo fetch --quiet
cudarc=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* | sort -V | tail -n 1)
stubs="$prefix/stubs"
if [ ! -f "$stubs/done" ]; then
  mkdir -p "$stubs"
  # name soname cudarc-module
  while read -r name soname module; do
    grep -ohE '^pub unsafe fn [A-Za-z0-9_]+' "$cudarc/src/$module/sys/mod.rs" |
      awk '{ print "void " $4 "(void) {}" }' | sort -u > "$stubs/$name.c"
    gcc -shared -fPIC -Wl,-soname,"$soname" -o "$stubs/lib$name.so" "$stubs/$name.c"
  done <<'LIBS'
cuda libcuda.so.1 driver
cublas libcublas.so.13 cublas
cublasLt libcublasLt.so.13 cublaslt
curand libcurand.so.10 curand
nvrtc libnvrtc.so.13 nvrtc
LIBS
  # candle-kernels links the runtime by its unversioned name; the wheel ships only
  # the versioned one.
  ln -sf "$cuda/lib/libcudart.so.13" "$stubs/libcudart.so"
  touch "$stubs/done"
fi

export PATH="$cuda/bin:$PATH" CUDA_ROOT="$cuda" CUDA_PATH="$cuda" CUDA_HOME="$cuda"
export CUDA_COMPUTE_CAP="$cap"
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$stubs"
export LIBRARY_PATH="$stubs:$cuda/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
CARGO_TARGET_DIR=target/cuda cargo build --release -p reflex-trainer --features cuda --bin reflex-train
# Stripped (the debug line tables triple the size) and gzipped to carry to a GPU
# machine: 90 MB stripped is over the device tool's 64 MiB carry limit, 26 MB gzipped
# is not (gunzip it there).
strip -o target/cuda/reflex-train target/cuda/release/reflex-train
gzip -9 -c target/cuda/reflex-train > target/cuda/reflex-train.gz
echo "build-cuda: target/cuda/reflex-train, $(du -h target/cuda/reflex-train | cut -f1); gzipped $(du -h target/cuda/reflex-train.gz | cut -f1) (compute capability $cap)"
echo "build-cuda: it starts only where libcuda.so.1 and the CUDA 13 libraries load (see LD_LIBRARY_PATH above)"
