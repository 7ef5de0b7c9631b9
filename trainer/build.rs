//! With the `cuda` feature, compiles trainer/cuda/{optim,dense,lstm}.cu to PTX with nvcc (the
//! same nvcc and CUDA_COMPUTE_CAP that candle's kernels build with; see
//! scripts/build-cuda.sh). Without it, does nothing.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=cuda/optim.cu");
    println!("cargo:rerun-if-changed=cuda/dense.cu");
    println!("cargo:rerun-if-changed=cuda/lstm.cu");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=NVCC");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let cap = cap.trim().replace('.', "");
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    for name in ["optim", "dense", "lstm"] {
        let ptx = out.join(format!("{name}.ptx"));
        let source = format!("cuda/{name}.cu");
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", "-std=c++17", &format!("-arch=sm_{cap}"), "-o"])
            .arg(&ptx)
            .arg(&source)
            .status()
            .unwrap_or_else(|e| {
                panic!("running {nvcc} (the `cuda` feature needs nvcc; see scripts/build-cuda.sh): {e}")
            });
        assert!(status.success(), "{nvcc} failed on {source}");
    }
}
