"""onnxruntime's single-observation latency on reflex policy files, measured the
way daemon/benches/policy_latency.rs measures tract: 2,000 warm-up runs, then
100,000 runs each timed on its own, one intra-op thread.

    python scripts/bench_policy_ort.py FILE.onnx [FILE.onnx ...]

Two rows per file: `session.run` as Python calls it (includes the Python
binding's per-call cost), and `run_with_ortvalues` into bound buffers
(io_binding), the leanest call the Python API offers. A recurrent policy's other
inputs (`prev_action`, `h_in`, `c_in`) are fed zero buffers of their widths and
all its outputs are fetched: one LSTM step costs the same whatever the state.
"""
import pathlib
import sys
import time

import numpy as np
import onnxruntime as ort

for path in sys.argv[1:]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    dim = session.get_inputs()[0].shape[1]
    extra = {
        i.name: np.zeros((1, i.shape[1]), dtype=np.float32)
        for i in session.get_inputs()
        if i.name != "obs"
    }
    outs = [o.name for o in session.get_outputs()]
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(-2, 2, (1, dim)).astype(np.float32) for _ in range(1024)]
    name = pathlib.Path(path).stem

    def report(label, call):
        for i in range(2000):
            call(inputs[i % 1024])
        n = 100_000
        times = np.empty(n)
        clock = time.perf_counter_ns
        for i in range(n):
            x = inputs[i % 1024]
            t0 = clock()
            call(x)
            times[i] = clock() - t0
        times /= 1000.0
        p50, p99, p999 = np.percentile(times, [50, 99, 99.9])
        print(f"| {name} | {label} | {p50:.2f} | {p99:.2f} | {p999:.2f} | {times.max():.1f} | - |")

    report("onnxruntime session.run", lambda x: session.run(outs, {"obs": x, **extra}))
    binding = session.io_binding()
    buffer = np.zeros((1, dim), dtype=np.float32)
    binding.bind_cpu_input("obs", buffer)
    for input_name, zeros in extra.items():
        binding.bind_cpu_input(input_name, zeros)
    for output_name in outs:
        binding.bind_output(output_name)

    def bound(x):
        buffer[:] = x
        session.run_with_iobinding(binding)

    report("onnxruntime io_binding", bound)
