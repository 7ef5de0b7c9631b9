"""Stable-Baselines3 DQN on CartPole-v1 with RL Zoo's tuned hyperparameters, on
one thread, timed: the SB3 side of scripts/bench-dqn.sh.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv-sb3/bin/python scripts/bench_dqn_sb3.py --seed 0

Prints one JSON object: wall-clock seconds (model construction, learn(), the
final evaluation, and their total), the env steps and gradient updates that
learn() made, the seconds spent inside DQN.train() (the gradient updates alone),
and the greedy evaluation mean/std over 20 episodes
(`evaluate_policy(model, env, n_eval_episodes=20, deterministic=True)`).

With --gradient-steps 0 it collects the same 50k steps without any update
(SB3 skips train() then): the acting-only baseline that the updates/s estimate
subtracts, measured the same way as reflex's.
"""

import argparse
import json
import os
import platform
import sys
import time

import torch

torch.set_num_threads(1)
torch.set_num_interop_threads(1)

import gymnasium as gym  # noqa: E402
import stable_baselines3  # noqa: E402
from stable_baselines3 import DQN  # noqa: E402
from stable_baselines3.common.evaluation import evaluate_policy  # noqa: E402
from stable_baselines3.common.monitor import Monitor  # noqa: E402

# RL Zoo's hyperparameters for CartPole-v1 DQN (hyperparams/dqn.yml), the same
# ones as trainer/presets/cartpole-dqn.toml.
ZOO = dict(
    learning_rate=2.3e-3,
    batch_size=64,
    buffer_size=100_000,
    learning_starts=1_000,
    gamma=0.99,
    target_update_interval=10,
    train_freq=256,
    gradient_steps=128,
    exploration_fraction=0.16,
    exploration_final_eps=0.04,
    policy_kwargs=dict(net_arch=[256, 256]),
)
STEPS = 50_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--gradient-steps", type=int, default=ZOO["gradient_steps"])
    parser.add_argument("--eval-episodes", type=int, default=20)
    args = parser.parse_args()

    hyper = dict(ZOO, gradient_steps=args.gradient_steps)
    t0 = time.perf_counter()
    env = gym.make("CartPole-v1")
    model = DQN("MlpPolicy", env, seed=args.seed, device="cpu", verbose=0, **hyper)

    # Time DQN.train() itself (all gradient updates of a round), to report
    # updates/s without the env stepping and acting around them.
    train_seconds = 0.0
    inner_train = model.train

    def timed_train(*a, **kw):
        nonlocal train_seconds
        start = time.perf_counter()
        try:
            return inner_train(*a, **kw)
        finally:
            train_seconds += time.perf_counter() - start

    model.train = timed_train

    t1 = time.perf_counter()
    model.learn(total_timesteps=args.steps)
    t2 = time.perf_counter()

    eval_env = Monitor(gym.make("CartPole-v1"))
    eval_env.reset(seed=args.seed + 1_000_000)  # later resets continue this seeded stream
    mean, std = evaluate_policy(
        model, eval_env, n_eval_episodes=args.eval_episodes, deterministic=True
    )
    t3 = time.perf_counter()

    print(
        json.dumps(
            {
                "side": "sb3",
                "seed": args.seed,
                "gradient_steps": args.gradient_steps,
                "env_steps": int(model.num_timesteps),
                "updates": int(model._n_updates),
                "setup_s": t1 - t0,
                "learn_s": t2 - t1,
                "train_s": train_seconds,
                "eval_s": t3 - t2,
                "wall_s": t3 - t0,
                "eval_mean": float(mean),
                "eval_std": float(std),
                "eval_episodes": args.eval_episodes,
                "torch_threads": torch.get_num_threads(),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                "versions": {
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                    "stable_baselines3": stable_baselines3.__version__,
                    "gymnasium": gym.__version__,
                },
            }
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
