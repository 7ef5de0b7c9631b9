//! Single-observation inference latency of ONNX policies through the daemon's
//! runtime (`Policy::step`), on each engine: the native evaluator (the default for
//! the graphs reflex exports) and tract; and heap allocations per step.
//!
//!     cargo bench -p reflex-daemon --bench policy_latency -- FILE.onnx [FILE.onnx …]
//!
//! For each file and engine: 2,000 warm-up steps, then 100,000 timed steps, each timed on
//! its own with `Instant`; prints p50 / p99 / p99.9 / max in µs and the mean
//! number of allocations per step (a counting global allocator). Observations
//! cycle through 1,024 random vectors so branch predictors see varied input.
//! `scripts/bench-policy.sh` runs this beside onnxruntime on the same files.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use reflex_daemon::{Engine, LoadOptions, Policy};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let files: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if files.is_empty() {
        eprintln!("usage: policy_latency FILE.onnx [FILE.onnx …]");
        std::process::exit(2);
    }
    println!("| policy | runtime | p50 µs | p99 µs | p99.9 µs | max µs | allocs/step |");
    println!("|---|---|---|---|---|---|---|");
    for file in files {
        let bytes = std::fs::read(&file).unwrap_or_else(|e| {
            eprintln!("{file}: {e}");
            std::process::exit(1);
        });
        for native in [true, false] {
            let policy = match Policy::from_bytes_with(&bytes, LoadOptions { native }) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("{file}: {e}");
                    std::process::exit(1);
                }
            };
            if native && policy.engine() != Engine::Native {
                eprintln!("{file}: outside the native evaluator; tract only");
                continue;
            }
            bench(&file, policy);
        }
    }
}

fn bench(file: &str, mut policy: Policy) {
    {
        let dim = policy.obs_dim();
        // A small xorshift: the bench needs varied inputs, not a seeded stream.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let inputs: Vec<Vec<f32>> = (0..1024)
            .map(|_| {
                (0..dim)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        (state >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
                    })
                    .collect()
            })
            .collect();
        for i in 0..2_000 {
            policy.step(&inputs[i % 1024]).unwrap();
        }
        let n = 100_000;
        let mut times = Vec::with_capacity(n);
        let before = ALLOCS.load(Ordering::Relaxed);
        for i in 0..n {
            let start = Instant::now();
            let out = policy.step(&inputs[i % 1024]).unwrap();
            std::hint::black_box(out);
            times.push(start.elapsed().as_secs_f64() * 1e6);
        }
        let allocs = (ALLOCS.load(Ordering::Relaxed) - before) as f64 / n as f64;
        times.sort_by(f64::total_cmp);
        let name = std::path::Path::new(&file)
            .file_stem()
            .map_or(file.to_string(), |s| s.to_string_lossy().into_owned());
        let engine = match policy.engine() {
            Engine::Native => "reflex (native)",
            Engine::Tract => "reflex (tract)",
        };
        println!(
            "| {name} | {engine} | {:.2} | {:.2} | {:.2} | {:.1} | {allocs:.1} |",
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            percentile(&times, 0.999),
            times[n - 1],
        );
    }
}
