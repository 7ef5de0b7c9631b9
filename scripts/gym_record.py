#!/usr/bin/env python3
"""Record fresh Gymnasium trajectories in the reference schema that
`reflex-sim check` reads (tests/data/gymnasium/README.md), for seeds and
policies the shipped reference files do not cover.

    python scripts/gym_record.py Acrobot-v1 --seeds 100 120 --out /tmp/acrobot.jsonl
    cargo run -p reflex-sim -- check /tmp/acrobot.jsonl --tol 0

Policies: `random` (uniform; continuous actions drawn from 1.5x the bounds so
clipping is exercised) and `pump` (pushes along the velocity, so goal and
terminal states are reached). Needs gymnasium and numpy.
"""
import argparse
import json

import gymnasium as gym
import numpy as np


def state_of(env):
    return [float(v) for v in np.asarray(env.unwrapped.state, dtype=np.float64).ravel()]


def floats(values):
    return [float(v) for v in np.asarray(values).ravel()]


def pump_action(env_id, obs, space, rng):
    if env_id == "MountainCar-v0":
        return 2 if obs[1] >= 0 else 0
    if env_id == "Acrobot-v1":
        if rng.random() < 0.1:
            return int(rng.integers(3))
        return 2 if obs[5] >= 0 else 0
    if env_id == "MountainCarContinuous-v0":
        magnitude = rng.uniform(0.5, 1.5)
        return np.array([magnitude if obs[1] >= 0 else -magnitude], dtype=np.float32)
    return random_action(space, rng)


def random_action(space, rng):
    if isinstance(space, gym.spaces.Discrete):
        return int(rng.integers(space.n))
    return rng.uniform(space.low * 1.5, space.high * 1.5).astype(np.float32)


def record(env_id, seeds, policies, out):
    env = gym.make(env_id)
    out.write(json.dumps({"type": "meta", "env": env_id, "gymnasium_version": gym.__version__}) + "\n")
    for policy in policies:
        for seed in seeds:
            rng = np.random.default_rng(seed + 5000)
            obs, _ = env.reset(seed=seed)
            base = {"env": env_id, "seed": seed, "policy": policy}
            out.write(json.dumps({"type": "reset", **base, "obs": floats(obs), "state": state_of(env)}) + "\n")
            t, total = 0, 0.0
            while True:
                if policy == "pump":
                    action = pump_action(env_id, obs, env.action_space, rng)
                else:
                    action = random_action(env.action_space, rng)
                next_obs, reward, terminated, truncated, _ = env.step(action)
                recorded = int(action) if isinstance(action, int) else floats(action)
                out.write(json.dumps({
                    "type": "step", **base, "t": t, "obs": floats(obs), "action": recorded,
                    "reward": float(reward), "next_obs": floats(next_obs), "next_state": state_of(env),
                    "terminated": bool(terminated), "truncated": bool(truncated),
                }) + "\n")
                total += float(reward)
                t += 1
                obs = next_obs
                if terminated or truncated:
                    break
            out.write(json.dumps({
                "type": "end", **base, "length": t, "return": total,
                "terminated": bool(terminated), "truncated": bool(truncated),
            }) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("env_id")
    parser.add_argument("--seeds", nargs=2, type=int, default=[100, 110], metavar=("FIRST", "END"))
    parser.add_argument("--policies", nargs="+", default=["random", "pump"])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with open(args.out, "w") as out:
        record(args.env_id, range(*args.seeds), args.policies, out)


if __name__ == "__main__":
    main()
