#!/usr/bin/env python3
"""Env steps per second of Gymnasium, single env and vectorized (N = 16), for
CartPole-v1 and Pendulum-v1: the Python half of the comparison that
`scripts/bench-sim.sh` runs beside `cargo bench -p reflex-sim --bench env_steps`.

    python scripts/bench_sim_gymnasium.py [--secs 1.5] [--repeats 5]

Measured exactly as the Rust bench measures reflex-sim:
- random actions are drawn before timing (uniform over the action space) and
  stored as a list, so the timed loop only iterates over it;
- single env: `gymnasium.make(id)` with its default wrappers (as users get it),
  `env.step(a)`, and `env.reset()` when terminated or truncated;
- vector: `gymnasium.make_vec(id, num_envs=16, vectorization_mode="sync")` with
  `autoreset_mode=SAME_STEP`, the semantics of reflex's `VecEnv` (reset in the
  step that ends the episode, so every counted env step is a physics step);
- env steps are counted (vector: calls x N); the step count of a measurement is
  calibrated to last about `--secs` seconds; each measurement is repeated
  `--repeats` times and the median is reported.

With `--extra`, also measures two Gymnasium variants that reflex has no
counterpart for (modes `vector-next-step`: `make_vec(..., "sync")` with its
default NEXT_STEP autoreset, where the step after an episode's end only resets;
`vector-entry-point`: the NumPy-vectorized `CartPoleVectorEnv`, which only
CartPole has).

Progress goes to stderr; stdout is one line of JSON with the Rust bench's keys.
"""
import argparse
import json
import statistics
import sys
import time

import gymnasium as gym
import numpy as np

NUM_ENVS = 16
SEED = 0


def draw_actions(space, count, rng):
    """`count` random actions for `space` (a single or a batched space), in the
    form users pass them: Python ints for a single Discrete space, NumPy arrays
    (int64 / float32, the space's shape) otherwise."""
    if isinstance(space, gym.spaces.Discrete):
        return rng.integers(space.start, space.start + space.n, size=count).tolist()
    if isinstance(space, gym.spaces.MultiDiscrete):
        return list(rng.integers(0, space.nvec, size=(count, *space.shape)))
    if isinstance(space, gym.spaces.Box):
        values = rng.uniform(space.low, space.high, size=(count, *space.shape))
        return list(values.astype(space.dtype))
    raise TypeError(f"unsupported action space {space}")


def run_single(env, actions):
    step, reset = env.step, env.reset
    start = time.perf_counter()
    for a in actions:
        _obs, _reward, terminated, truncated, _info = step(a)
        if terminated or truncated:
            reset()
    return time.perf_counter() - start


def run_vector(envs, actions):
    step = envs.step
    start = time.perf_counter()
    for a in actions:
        step(a)
    return time.perf_counter() - start


def measure(space, run, secs, repeats, rng):
    """Calibrates the number of steps (or vector calls) so that one run lasts
    about `secs`, then times `repeats` runs over one pre-drawn action list.
    Returns (units per run, seconds per run)."""
    # Warm up and estimate the rate: double the count until a run lasts 0.25 s,
    # keeping the best rate of the runs long enough to time (a transient load
    # during calibration would otherwise shorten every timed run).
    units, rate = 100, 0.0
    while True:
        elapsed = run(draw_actions(space, units, rng))
        if elapsed >= 0.05:
            rate = max(rate, units / elapsed)
        if elapsed >= 0.25:
            break
        units *= 2
    units = max(1, int(rate * secs))
    actions = draw_actions(space, units, rng)
    return units, [run(actions) for _ in range(repeats)]


def result(env_id, num_envs, env_steps, secs, mode=None):
    rates = [env_steps / s for s in secs]
    median = statistics.median(rates)
    mode = mode or ("single" if num_envs == 1 else "vector")
    label = mode if num_envs == 1 else f"{mode} N={num_envs}"
    print(
        f"{env_id:<12} {label:<22} {median:>14.0f} env steps/s"
        f"  (median of {len(rates)}, {env_steps} env steps each)",
        file=sys.stderr,
    )
    return {
        "env": env_id,
        "mode": mode,
        "num_envs": num_envs,
        "env_steps": env_steps,
        "steps_per_s": round(median, 1),
        "runs_steps_per_s": [round(r, 1) for r in rates],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--secs", type=float, default=1.5, help="target seconds per run")
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement")
    parser.add_argument(
        "--extra", action="store_true", help="also measure Gymnasium-only vector variants"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    results = []
    for env_id in ["CartPole-v1", "Pendulum-v1"]:
        env = gym.make(env_id)
        env.reset(seed=SEED)
        steps, secs = measure(
            env.action_space, lambda a: run_single(env, a), args.secs, args.repeats, rng
        )
        results.append(result(env_id, 1, steps, secs))
        env.close()

        envs = gym.make_vec(
            env_id,
            num_envs=NUM_ENVS,
            vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
        )
        envs.reset(seed=SEED)
        calls, secs = measure(
            envs.action_space, lambda a: run_vector(envs, a), args.secs, args.repeats, rng
        )
        results.append(result(env_id, NUM_ENVS, calls * NUM_ENVS, secs))
        envs.close()

        if not args.extra:
            continue
        variants = [("vector-next-step", {"vectorization_mode": "sync"})]
        if gym.spec(env_id).vector_entry_point is not None:
            variants.append(
                ("vector-entry-point", {"vectorization_mode": "vector_entry_point"})
            )
        for mode, kwargs in variants:
            envs = gym.make_vec(env_id, num_envs=NUM_ENVS, **kwargs)
            envs.reset(seed=SEED)
            calls, secs = measure(
                envs.action_space, lambda a: run_vector(envs, a), args.secs, args.repeats, rng
            )
            results.append(result(env_id, NUM_ENVS, calls * NUM_ENVS, secs, mode))
            envs.close()
    print(
        json.dumps(
            {
                "impl": "gymnasium",
                "gymnasium": gym.__version__,
                "numpy": np.__version__,
                "python": sys.version.split()[0],
                "repeats": args.repeats,
                "target_secs": args.secs,
                "results": results,
            },
            separators=(",", ":"),
        )
    )


if __name__ == "__main__":
    main()
