"""Evaluate a reflex policy.onnx with Gymnasium + onnxruntime (no reflex code).

    python scripts/eval_onnx.py policy.onnx CartPole-v1 [EPISODES] [SEED]

Episode k starts from env.reset(seed=SEED+k), as `reflex-train eval` does, so the
mean return printed here equals reflex's for the same seeds.
"""
import json
import sys

import gymnasium as gym
import numpy as np
import onnxruntime as ort

path, env_id = sys.argv[1], sys.argv[2]
episodes = int(sys.argv[3]) if len(sys.argv) > 3 else 20
seed = int(sys.argv[4]) if len(sys.argv) > 4 else 1_000_000
session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
output = session.get_outputs()[0].name  # "q" (discrete) or "action" (continuous)
env = gym.make(env_id)
returns = []
for k in range(episodes):
    obs, _ = env.reset(seed=seed + k)
    total, done = 0.0, False
    while not done:
        (out,) = session.run([output], {"obs": obs[None].astype(np.float32)})
        if output == "q":
            action = int(np.argmax(out[0]))
        else:
            action = np.clip(out[0], env.action_space.low, env.action_space.high)
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        done = terminated or truncated
    returns.append(total)
print(json.dumps({"mean_return": float(np.mean(returns)), "std_return": float(np.std(returns)),
                  "episodes": episodes}))
