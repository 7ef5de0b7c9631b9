"""DRQN sequence-batch updates per second in PyTorch (CPU, one thread): the model
and update of trainer/benches/drqn_update.rs, for the side-by-side in
BENCHMARKS.md.

    python scripts/bench_drqn_torch.py [--updates 200] [--repeats 3] [--hidden 128]
        [--batch 32] [--len 40]

Model: nn.LSTM over [obs (2), prev action one-hot (2)], then a dueling head with
one hidden layer (ReLU) of `hidden` units; an online and a target copy. One
update: 32 windows of len + 1 positions drawn from a pool of stored windows
(start state, inputs, actions, rewards, discounts, masks), both networks
unrolled from the stored state (the target without gradients), Double-DQN
targets, masked Huber loss normalized by valid steps, backward, gradient norm
clipped at 10, Adam (lr 1e-3). Prints one JSON line per repeat, then the median.
"""
import argparse
import json
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

parser = argparse.ArgumentParser()
parser.add_argument("--updates", type=int, default=200)
parser.add_argument("--repeats", type=int, default=3)
parser.add_argument("--hidden", type=int, default=128)
parser.add_argument("--batch", type=int, default=32)
parser.add_argument("--len", type=int, default=40)
args = parser.parse_args()
torch.set_num_threads(1)
torch.manual_seed(0)


class Drqn(nn.Module):
    def __init__(self, inputs, n_actions, hidden):
        super().__init__()
        self.lstm = nn.LSTM(inputs, hidden, batch_first=True)
        self.trunk = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, 1)
        self.advantage = nn.Linear(hidden, n_actions)

    def forward(self, x, h0, c0):
        out, _ = self.lstm(x, (h0, c0))
        z = F.relu(self.trunk(out))
        a = self.advantage(z)
        return self.value(z) + a - a.mean(-1, keepdim=True)


obs_dim, n, hidden, b, length = 2, 2, args.hidden, args.batch, args.len
positions = length + 1
online = Drqn(obs_dim + n, n, hidden)
target = Drqn(obs_dim + n, n, hidden)
target.load_state_dict(online.state_dict())
opt = torch.optim.Adam(online.parameters(), lr=1e-3)

# A pool of stored windows, as a replay would hold them.
pool = 4096
rng = np.random.default_rng(0)
xs_pool = rng.standard_normal((pool, positions, obs_dim + n)).astype(np.float32)
state_pool = (0.1 * rng.standard_normal((pool, 2, hidden))).astype(np.float32)
act_pool = rng.integers(0, n, (pool, length)).astype(np.int64)
rew_pool = np.ones((pool, length), np.float32)
disc_pool = np.full((pool, length), 0.99, np.float32)
mask_pool = (rng.random((pool, length)) > 0.05).astype(np.float32)


def update():
    idx = rng.integers(0, pool, b)
    x = torch.from_numpy(xs_pool[idx])
    state = torch.from_numpy(state_pool[idx])
    h0 = state[:, 0].unsqueeze(0).contiguous()
    c0 = state[:, 1].unsqueeze(0).contiguous()
    actions = torch.from_numpy(act_pool[idx])
    rewards = torch.from_numpy(rew_pool[idx])
    discounts = torch.from_numpy(disc_pool[idx])
    mask = torch.from_numpy(mask_pool[idx])
    q = online(x, h0, c0)
    with torch.no_grad():
        q_next_target = target(x, h0, c0)[:, 1:]
        best = q[:, 1:].argmax(-1, keepdim=True)
        next_value = q_next_target.gather(-1, best).squeeze(-1)
        y = rewards + discounts * next_value
    q_taken = q[:, :length].gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    per_step = F.smooth_l1_loss(q_taken, y, reduction="none")
    loss = (per_step * mask).sum() / mask.sum().clamp(min=1.0)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(online.parameters(), 10.0)
    opt.step()
    return loss


for _ in range(10):
    update()
rates = []
for repeat in range(args.repeats):
    start = time.perf_counter()
    for _ in range(args.updates):
        update()
    secs = time.perf_counter() - start
    rates.append(args.updates / secs)
    print(json.dumps({"impl": "pytorch", "repeat": repeat, "updates": args.updates,
                      "seconds": round(secs, 3), "updates_per_s": round(rates[-1], 2),
                      "batch": b, "len": length, "hidden": hidden,
                      "torch": torch.__version__}))
print(f"pytorch median updates/s: {sorted(rates)[len(rates) // 2]:.2f}")
