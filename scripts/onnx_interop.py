"""Interop check of reflex's exported ONNX files against the reference tooling.

    python scripts/onnx_interop.py DIR

For every DIR/NAME.onnx written by the trainer's parity tests (with DIR/NAME.json
holding its probe observations and candle's outputs: Q-values for discrete
policies, actions for continuous ones): the ONNX checker with full_check=True
(types and shapes inferred through the whole graph) must pass, the declared
opset/IR must be standard, and onnxruntime, given all probes as one batch (the
batch dimension is symbolic), must give candle's values to 1e-5 (and, for Q, the
same greedy actions). A recurrent policy's record is a rollout (obs, the
prev_action fed at each step, candle's q, h and c): onnxruntime steps through it
from the zero state with its own h_out/c_out fed back and must match at every step.
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
    if record.get("recurrent"):
        hidden, n = record["hidden"], record["n_actions"]
        prev = np.asarray(record["prev_action"], dtype=np.float32).reshape(-1, n)
        want = np.concatenate([
            np.asarray(record[k], dtype=np.float32).reshape(len(obs), -1) for k in ("q", "h", "c")
        ], axis=1)
        h = np.zeros((1, hidden), np.float32)
        c = np.zeros((1, hidden), np.float32)
        rows = []
        for t in range(len(obs)):
            q, h, c = session.run(["q", "h_out", "c_out"], {
                "obs": obs[t:t + 1], "prev_action": prev[t:t + 1], "h_in": h, "c_in": c})
            rows.append(np.concatenate([q, h, c], axis=1))
        got = np.concatenate(rows)
        wq = want[:, :n]
        gap = np.abs(wq[:, 0] - wq[:, 1]) > 1e-5
        same_greedy = np.array_equal(got[:, :n].argmax(1)[gap], wq.argmax(1)[gap])
        algo_ok = spec["algorithm"] == "drqn" and spec["recurrent_hidden_size"] == hidden
    elif "q" in record:
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
