"""Stable-Baselines3 DDPG or TD3 on Pendulum-v1 with RL Zoo's hyperparameters,
timed: the SB3 side of scripts/bench-continuous.sh.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv-sb3/bin/python scripts/bench_continuous_sb3.py --algo td3 --seed 0

The hyperparameters are RL Zoo's for Pendulum-v1 (hyperparams/ddpg.yml and
hyperparams/td3.yml), the same ones as trainer/presets/pendulum-ddpg.toml and
pendulum-td3.toml: gamma 0.98, buffer 200k, 10k uniformly random steps before
learning, Gaussian action noise with sigma 0.1 (in SB3's [-1, 1] action scale),
learning rate 1e-3 for actor and critic, [400, 300] hidden layers, one
gradient step per env step, and SB3's defaults for the rest (batch 256,
tau 0.005; TD3: twin critics, policy_delay 2, target noise 0.2 clipped at 0.5).

Prints one JSON line: wall-clock seconds (model construction, learn(), the final
evaluation, and their total, all after the imports), the env steps and gradient
updates that learn() made, the seconds spent inside train() (the gradient
updates alone), and the greedy evaluation mean/std over 20 episodes
(`evaluate_policy(model, Monitor(env), n_eval_episodes=20, deterministic=True)`,
the eval env first reset with seed + 1_000_000).

With --gradient-steps 0 it collects the same env steps without any update (SB3
skips train() then): the acting-only baseline that the updates/s estimate
subtracts, measured the same way as reflex's.
"""

import argparse
import json
import os
import platform
import sys
import time

STEPS = 20_000
LEARNING_STARTS = 10_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", choices=("ddpg", "td3"), required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument(
        "--gradient-steps",
        type=int,
        default=1,
        help="gradient steps per env step (0: acting-only baseline, no update)",
    )
    parser.add_argument(
        "--learning-starts",
        type=int,
        default=LEARNING_STARTS,
        help="uniformly random env steps before learning (RL Zoo: 10,000; lower only for a quick try)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads(N)")
    parser.add_argument("--eval-episodes", type=int, default=20)
    return parser.parse_args()


args = parse_args()

import torch  # noqa: E402

# Before any torch work, so that every kernel runs on the requested threads.
torch.set_num_threads(args.threads)
torch.set_num_interop_threads(1)

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import stable_baselines3  # noqa: E402
from stable_baselines3 import DDPG, TD3  # noqa: E402
from stable_baselines3.common.evaluation import evaluate_policy  # noqa: E402
from stable_baselines3.common.monitor import Monitor  # noqa: E402
from stable_baselines3.common.noise import NormalActionNoise  # noqa: E402

ENV_ID = "Pendulum-v1"


def zoo_hyperparameters(act_dim: int) -> dict:
    """RL Zoo's Pendulum-v1 settings, shared by DDPG and TD3. batch_size and
    tau are left at SB3's defaults (256 and 0.005), as the zoo does; TD3's
    policy_delay, target_policy_noise and target_noise_clip too (2, 0.2, 0.5)."""
    return dict(
        gamma=0.98,
        buffer_size=200_000,
        learning_starts=args.learning_starts,
        action_noise=NormalActionNoise(
            mean=np.zeros(act_dim), sigma=0.1 * np.ones(act_dim)
        ),
        learning_rate=1e-3,
        policy_kwargs=dict(net_arch=[400, 300]),
        train_freq=1,
        gradient_steps=args.gradient_steps,
    )


def main() -> None:
    algo_class = {"ddpg": DDPG, "td3": TD3}[args.algo]

    t0 = time.perf_counter()
    env = gym.make(ENV_ID)
    act_dim = env.action_space.shape[0]
    model = algo_class(
        "MlpPolicy",
        env,
        seed=args.seed,
        device="cpu",
        verbose=0,
        **zoo_hyperparameters(act_dim),
    )

    # Time train() itself (the gradient updates of each round), to report
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

    eval_env = Monitor(gym.make(ENV_ID))
    eval_env.reset(seed=args.seed + 1_000_000)  # later resets continue this seeded stream
    mean, std = evaluate_policy(
        model, eval_env, n_eval_episodes=args.eval_episodes, deterministic=True
    )
    t3 = time.perf_counter()

    print(
        json.dumps(
            {
                "side": "sb3",
                "algo": args.algo,
                "seed": args.seed,
                "threads": args.threads,
                "gradient_steps": args.gradient_steps,
                "learning_starts": args.learning_starts,
                "batch_size": int(model.batch_size),
                "tau": float(model.tau),
                "policy_delay": int(model.policy_delay),
                "target_policy_noise": float(model.target_policy_noise),
                "target_noise_clip": float(model.target_noise_clip),
                "n_critics": int(model.critic.n_critics),
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
                    "numpy": np.__version__,
                },
            }
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
