"""The GPU benchmark's shapes in PyTorch, for the side-by-side with
`reflex-train gpu bench` (trainer/src/gpu/bench.rs) in BENCHMARKS.md.

    python3 scripts/bench_gpu_torch.py [--device cuda] [--seconds 4] [--out FILE.jsonl]
        [--case NAME ...]

Each case runs in up to three forms:
  eager-host:   eager PyTorch; the replay lives in host memory (numpy) and each
                update uploads the sampled batch, as Stable-Baselines3 does;
  eager-device: eager PyTorch; the replay lives on the GPU and indices are drawn
                there (no host work per update beyond launching kernels);
  graph:        the eager-device update captured once into a CUDA graph
                (torch.cuda.graph, Adam(capturable=True)) and replayed: PyTorch's
                fastest form for small networks, where launch overhead dominates.
The `graph` form needs CUDA; on a CPU only the eager forms run (to test the
script). The updates are those of reflex's cases: Huber loss, gradient norm
clipped at 10, Adam; DQN plain (no Double, no dueling) with a hard target copy
every 100 updates; TD3 with target smoothing, clipped double Q, policy delay 2
and Polyak targets; DRQN with a cuDNN nn.LSTM, burn-in without gradient, Double
DQN targets and a dueling head.

Prints one JSON line per (case, form) and writes them to --out.
"""
import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CASES = ["matmul-4096", "dqn-256x256-b256", "dqn-256x256-b4096", "dqn-256x256-b256-pop16",
         "td3-400x300-b256", "td3-400x300-b256-pop16",
         "lstm512-b64-t80-burn40", "e2e-cartpole-64envs"]

parser = argparse.ArgumentParser()
parser.add_argument("--device", default="cuda")
parser.add_argument("--seconds", type=float, default=4.0)
parser.add_argument("--out", default=None)
parser.add_argument("--case", action="append", default=None)
parser.add_argument("--small", action="store_true", help="shapes / 8, for a CPU smoke run")
parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
args = parser.parse_args()
if args.threads:
    torch.set_num_threads(args.threads)
dev = torch.device(args.device)
cuda = dev.type == "cuda"
torch.manual_seed(0)
rng = np.random.default_rng(0)
results = []


def sync():
    if cuda:
        torch.cuda.synchronize()


def clocked(step, warmup, chunk, seconds):
    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    n = 0
    while n == 0 or time.perf_counter() - start < seconds:
        for _ in range(chunk):
            step()
        sync()
        n += chunk
    return n, time.perf_counter() - start


def report(case, form, n_secs, unit="updates/s", extra=None):
    n, secs = n_secs
    r = {"impl": "pytorch", "case": case, "form": form, "iterations": n,
         "seconds": round(secs, 4), "rate": n / secs, "unit": unit,
         "torch": torch.__version__, "device": torch.cuda.get_device_name() if cuda else "cpu"}
    if extra:
        r.update(extra)
    results.append(r)
    print(json.dumps(r), flush=True)


def graphed(step_fn):
    """Captures step_fn (which must only touch static tensors) into a CUDA graph
    after warm-up on a side stream; returns a replay function."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            step_fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        step_fn()
    return g.replay


def mlp(widths):
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def random_cartpole(n):
    obs = rng.uniform(-0.2, 0.2, (n, 4)).astype(np.float32)
    nxt = (obs + rng.normal(0, 0.02, (n, 4))).astype(np.float32)
    act = rng.integers(0, 2, n).astype(np.int64)
    rew = np.ones(n, np.float32)
    disc = np.where(rng.random(n) < 0.05, 0.0, 0.99).astype(np.float32)
    return obs, act, rew, nxt, disc


# ---------------------------------------------------------------- matmul
def bench_matmul():
    n = 512 if args.small else 4096
    a = torch.rand(n, n, device=dev) - 0.5
    b = torch.rand(n, n, device=dev) - 0.5
    flop = 2 * n ** 3
    for tf32 in ([False, True] if cuda else [False]):
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = tf32
        r = clocked(lambda: a @ b, 3, 10, min(args.seconds, 3.0))
        report("matmul-4096", "tf32" if tf32 else "fp32", r, "matmuls/s",
               {"tflops": r[0] / r[1] * flop / 1e12})
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False


# ---------------------------------------------------------------- DQN
class DqnBench:
    def __init__(self, hidden, batch, capacity=20_000):
        self.online = mlp([4, hidden, hidden, 2]).to(dev)
        self.target = mlp([4, hidden, hidden, 2]).to(dev)
        self.target.load_state_dict(self.online.state_dict())
        self.opt = torch.optim.Adam(self.online.parameters(), lr=1e-4, capturable=cuda)
        self.batch = batch
        self.host = random_cartpole(capacity)
        self.dev_replay = [torch.from_numpy(x).to(dev) for x in self.host]
        self.capacity = capacity
        self.updates = 0

    def loss(self, obs, act, rew, nxt, disc):
        with torch.no_grad():
            y = rew + disc * self.target(nxt).max(1).values
        q = self.online(obs).gather(1, act.unsqueeze(1)).squeeze(1)
        return F.smooth_l1_loss(q, y)

    def learn(self, *batch):
        loss = self.loss(*batch)
        self.opt.zero_grad(set_to_none=False)
        loss.backward()
        nn.utils.clip_grad_norm_(self.online.parameters(), 10.0, foreach=True)
        self.opt.step()

    def step_host(self):
        idx = rng.integers(0, self.capacity, self.batch)
        self.learn(*[torch.from_numpy(x[idx]).to(dev, non_blocking=True) for x in self.host])
        self.after()

    def step_device_inner(self):
        idx = torch.randint(0, self.capacity, (self.batch,), device=dev)
        self.learn(*[x[idx] for x in self.dev_replay])

    def step_device(self):
        self.step_device_inner()
        self.after()

    def after(self):
        self.updates += 1
        if self.updates % 100 == 0:
            self.target.load_state_dict(self.online.state_dict())


def bench_dqn(case, batch):
    hidden = 32 if args.small else 256
    batch = batch // 8 if args.small else batch
    b = DqnBench(hidden, batch)
    report(case, "eager-host", clocked(b.step_host, 20, 20, args.seconds))
    report(case, "eager-device", clocked(b.step_device, 20, 20, args.seconds))
    if cuda:
        replay = graphed(b.step_device_inner)

        def step():
            replay()
            b.after()
        report(case, "graph", clocked(step, 20, 20, args.seconds))


# ---------------------------------------------------------------- DQN population
class PopDqnBench:
    """P DQN learners with stacked parameters ([P, in, out] weights, batched
    matmuls), each with its own replay rows, its own gradient-norm clip, and
    one Adam over the stacked tensors: reflex's `dqn-256x256-b256-pop16`."""

    def __init__(self, members, hidden, batch, capacity=20_000):
        widths = [4, hidden, hidden, 2]
        self.params = []
        for a, b in zip(widths[:-1], widths[1:]):
            bound = 1 / math.sqrt(a)
            w = torch.empty(members, a, b, device=dev).uniform_(-bound, bound)
            bias = torch.empty(members, 1, b, device=dev).uniform_(-bound, bound)
            self.params += [w.requires_grad_(), bias.requires_grad_()]
        self.target = [p.detach().clone() for p in self.params]
        self.opt = torch.optim.Adam(self.params, lr=1e-4, capturable=cuda)
        self.members, self.batch, self.capacity = members, batch, capacity
        self.replay = [torch.from_numpy(np.stack(x)).to(dev)
                       for x in zip(*[random_cartpole(capacity) for _ in range(members)])]
        self.rows = torch.arange(members, device=dev).unsqueeze(1)
        self.updates = 0

    @staticmethod
    def forward(params, x):
        for i in range(0, len(params), 2):
            x = torch.baddbmm(params[i + 1], x, params[i])
            if i + 2 < len(params):
                x = x.relu()
        return x

    def step_inner(self):
        idx = torch.randint(0, self.capacity, (self.members, self.batch), device=dev)
        obs, act, rew, nxt, disc = [x[self.rows, idx] for x in self.replay]
        with torch.no_grad():
            y = rew + disc * self.forward(self.target, nxt).max(2).values
        q = self.forward(self.params, obs).gather(2, act.unsqueeze(2)).squeeze(2)
        loss = F.smooth_l1_loss(q, y, reduction="none").mean(1).sum()
        self.opt.zero_grad(set_to_none=False)
        loss.backward()
        grads = [p.grad for p in self.params]
        norms = torch.stack([g.pow(2).sum((1, 2)) for g in grads]).sum(0).sqrt()
        scale = (10.0 / (norms + 1e-6)).clamp(max=1.0).view(-1, 1, 1)
        torch._foreach_mul_(grads, [scale] * len(grads))
        self.opt.step()

    def step(self):
        self.step_inner()
        self.after()

    def after(self):
        self.updates += 1
        if self.updates % 100 == 0:
            with torch.no_grad():
                torch._foreach_copy_(self.target, self.params)


def bench_population(case):
    members, hidden, batch = (4, 32, 32) if args.small else (16, 256, 256)
    b = PopDqnBench(members, hidden, batch)
    unit = "member updates/s"
    n, secs = clocked(b.step, 10, 10, args.seconds)
    report(case, "eager-device", (n * members, secs), unit)
    if cuda:
        replay = graphed(b.step_inner)

        def step():
            replay()
            b.after()
        n, secs = clocked(step, 10, 10, args.seconds)
        report(case, "graph", (n * members, secs), unit)


# ---------------------------------------------------------------- TD3
class Td3Bench:
    def __init__(self, h1, h2, batch, capacity=20_000):
        self.actor = nn.Sequential(mlp([3, h1, h2, 1]), nn.Tanh()).to(dev)
        self.critics = nn.ModuleList([mlp([4, h1, h2, 1]) for _ in range(2)]).to(dev)
        self.actor_t = nn.Sequential(mlp([3, h1, h2, 1]), nn.Tanh()).to(dev)
        self.critics_t = nn.ModuleList([mlp([4, h1, h2, 1]) for _ in range(2)]).to(dev)
        self.actor_t.load_state_dict(self.actor.state_dict())
        self.critics_t.load_state_dict(self.critics.state_dict())
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=1e-3, capturable=cuda)
        self.critic_opt = torch.optim.Adam(self.critics.parameters(), lr=1e-3, capturable=cuda)
        self.batch = batch
        obs = rng.uniform(-1, 1, (capacity, 3)).astype(np.float32)
        self.host = (obs, rng.uniform(-1, 1, (capacity, 1)).astype(np.float32),
                     rng.uniform(-16, 0, capacity).astype(np.float32),
                     (obs + rng.normal(0, 0.05, (capacity, 3))).astype(np.float32),
                     np.full(capacity, 0.98, np.float32))
        self.dev_replay = [torch.from_numpy(x).to(dev) for x in self.host]
        self.capacity = capacity
        self.updates = 0
        self.params = list(self.actor.parameters()) + list(self.critics.parameters())
        self.targets = list(self.actor_t.parameters()) + list(self.critics_t.parameters())

    def critic_step(self, obs, act, rew, nxt, disc):
        with torch.no_grad():
            noise = (torch.randn_like(act) * 0.2).clamp(-0.5, 0.5)
            a2 = (self.actor_t(nxt) + noise).clamp(-1, 1)
            x2 = torch.cat([nxt, a2], 1)
            q2 = torch.min(self.critics_t[0](x2), self.critics_t[1](x2)).squeeze(1)
            y = rew + disc * q2
        x = torch.cat([obs, act], 1)
        loss = sum(F.mse_loss(c(x).squeeze(1), y) for c in self.critics)
        self.critic_opt.zero_grad(set_to_none=False)
        loss.backward()
        self.critic_opt.step()

    def actor_step(self, obs):
        q = self.critics[0](torch.cat([obs, self.actor(obs)], 1))
        loss = -q.mean()
        self.actor_opt.zero_grad(set_to_none=False)
        loss.backward()
        self.actor_opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(self.targets, self.params, 0.005)

    def sample_host(self):
        idx = rng.integers(0, self.capacity, self.batch)
        return [torch.from_numpy(x[idx]).to(dev, non_blocking=True) for x in self.host]

    def sample_device(self):
        idx = torch.randint(0, self.capacity, (self.batch,), device=dev)
        return [x[idx] for x in self.dev_replay]

    def step(self, sample):
        batch = sample()
        self.critic_step(*batch)
        self.updates += 1
        if self.updates % 2 == 0:
            self.actor_step(batch[0])


def td3_graphs(b, sample):
    """A TD3 update step as two CUDA graphs, alternated (the policy delay): a
    critic-only update, and a critic + actor + targets one; `b` has
    critic_step and actor_step, `sample` draws a batch on the device."""
    def critic_only():
        b.critic_step(*sample())

    def both():
        batch = sample()
        b.critic_step(*batch)
        b.actor_step(batch[0])
    g1, g2 = graphed(critic_only), graphed(both)
    flip = [0]

    def step():
        flip[0] ^= 1
        (g1 if flip[0] else g2)()
    return step


def bench_td3():
    h1, h2, batch = (50, 38, 32) if args.small else (400, 300, 256)
    case = "td3-400x300-b256"
    b = Td3Bench(h1, h2, batch)
    report(case, "eager-host", clocked(lambda: b.step(b.sample_host), 20, 20, args.seconds))
    report(case, "eager-device", clocked(lambda: b.step(b.sample_device), 20, 20, args.seconds))
    if cuda:
        report(case, "graph", clocked(td3_graphs(b, b.sample_device), 20, 20, args.seconds))


# ---------------------------------------------------------------- TD3 population
class PopTd3Bench:
    """P TD3 learners with stacked parameters (an actor and two critics, each
    [P, in, out] weights and batched matmuls, plus targets), each member on
    its own replay rows with its own smoothing noise, one Adam per network
    kind over the stacked tensors: reflex's `td3-400x300-b256-pop16`."""

    def __init__(self, members, h1, h2, batch, capacity=20_000):
        def stacked(widths):
            params = []
            for a, b in zip(widths[:-1], widths[1:]):
                bound = 1 / math.sqrt(a)
                w = torch.empty(members, a, b, device=dev).uniform_(-bound, bound)
                bias = torch.empty(members, 1, b, device=dev).uniform_(-bound, bound)
                params += [w.requires_grad_(), bias.requires_grad_()]
            return params
        self.actor = stacked([3, h1, h2, 1])
        self.critics = [stacked([4, h1, h2, 1]) for _ in range(2)]
        self.actor_t = [p.detach().clone() for p in self.actor]
        self.critics_t = [[p.detach().clone() for p in c] for c in self.critics]
        self.critic_params = self.critics[0] + self.critics[1]
        self.params = self.actor + self.critic_params
        self.targets = self.actor_t + self.critics_t[0] + self.critics_t[1]
        self.actor_opt = torch.optim.Adam(self.actor, lr=1e-3, capturable=cuda)
        self.critic_opt = torch.optim.Adam(self.critic_params, lr=1e-3, capturable=cuda)
        self.members, self.batch, self.capacity = members, batch, capacity
        obs = rng.uniform(-1, 1, (members, capacity, 3)).astype(np.float32)
        host = (obs, rng.uniform(-1, 1, (members, capacity, 1)).astype(np.float32),
                rng.uniform(-16, 0, (members, capacity)).astype(np.float32),
                (obs + rng.normal(0, 0.05, (members, capacity, 3))).astype(np.float32),
                np.full((members, capacity), 0.98, np.float32))
        self.replay = [torch.from_numpy(x).to(dev) for x in host]
        self.rows = torch.arange(members, device=dev).unsqueeze(1)
        self.updates = 0

    @staticmethod
    def forward(params, x):
        for i in range(0, len(params), 2):
            x = torch.baddbmm(params[i + 1], x, params[i])
            if i + 2 < len(params):
                x = x.relu()
        return x

    def sample(self):
        idx = torch.randint(0, self.capacity, (self.members, self.batch), device=dev)
        return [x[self.rows, idx] for x in self.replay]

    def critic_step(self, obs, act, rew, nxt, disc):
        with torch.no_grad():
            noise = (torch.randn_like(act) * 0.2).clamp(-0.5, 0.5)
            a2 = (self.forward(self.actor_t, nxt).tanh() + noise).clamp(-1, 1)
            x2 = torch.cat([nxt, a2], 2)
            q2 = torch.min(self.forward(self.critics_t[0], x2),
                           self.forward(self.critics_t[1], x2)).squeeze(2)
            y = rew + disc * q2
        x = torch.cat([obs, act], 2)
        loss = sum((self.forward(c, x).squeeze(2) - y).pow(2).mean(1).sum() for c in self.critics)
        self.critic_opt.zero_grad(set_to_none=False)
        loss.backward()
        self.critic_opt.step()

    def actor_step(self, obs):
        mu = self.forward(self.actor, obs).tanh()
        loss = -self.forward(self.critics[0], torch.cat([obs, mu], 2)).mean(1).sum()
        self.actor_opt.zero_grad(set_to_none=False)
        loss.backward()
        self.actor_opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(self.targets, self.params, 0.005)

    def step(self):
        batch = self.sample()
        self.critic_step(*batch)
        self.updates += 1
        if self.updates % 2 == 0:
            self.actor_step(batch[0])


def bench_td3_population():
    members, h1, h2, batch = (4, 50, 38, 32) if args.small else (16, 400, 300, 256)
    case = "td3-400x300-b256-pop16"
    b = PopTd3Bench(members, h1, h2, batch)
    unit = "member updates/s"
    n, secs = clocked(b.step, 10, 10, args.seconds)
    report(case, "eager-device", (n * members, secs), unit)
    if cuda:
        n, secs = clocked(td3_graphs(b, b.sample), 10, 10, args.seconds)
        report(case, "graph", (n * members, secs), unit)


# ---------------------------------------------------------------- DRQN (LSTM)
class Drqn(nn.Module):
    def __init__(self, inputs, n_actions, hidden):
        super().__init__()
        self.lstm = nn.LSTM(inputs, hidden, batch_first=True)
        self.trunk = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, 1)
        self.advantage = nn.Linear(hidden, n_actions)

    def head(self, out):
        z = F.relu(self.trunk(out))
        a = self.advantage(z)
        return self.value(z) + a - a.mean(-1, keepdim=True)


class DrqnBench:
    def __init__(self, hidden, batch, length, burn_in, pool=2048):
        self.online = Drqn(4, 2, hidden).to(dev)
        self.target = Drqn(4, 2, hidden).to(dev)
        self.target.load_state_dict(self.online.state_dict())
        self.opt = torch.optim.Adam(self.online.parameters(), lr=1e-4, capturable=cuda)
        self.batch, self.length, self.burn_in, self.hidden = batch, length, burn_in, hidden
        pos = burn_in + length + 1
        self.host = (rng.standard_normal((pool, pos, 4)).astype(np.float32),
                     (0.1 * rng.standard_normal((pool, 2, hidden))).astype(np.float32),
                     rng.integers(0, 2, (pool, length)).astype(np.int64),
                     np.ones((pool, length), np.float32),
                     np.full((pool, length), 0.99, np.float32),
                     (rng.random((pool, length)) > 0.05).astype(np.float32))
        self.dev_replay = [torch.from_numpy(x).to(dev) for x in self.host]
        self.pool = pool

    def learn(self, x, state, actions, rewards, discounts, mask):
        h0 = state[:, 0].unsqueeze(0).contiguous()
        c0 = state[:, 1].unsqueeze(0).contiguous()
        bi = self.burn_in
        with torch.no_grad():
            _, (hb, cb) = self.online.lstm(x[:, :bi], (h0, c0))
            out_t, _ = self.target.lstm(x, (h0, c0))
            q_next_target = self.target.head(out_t[:, bi + 1:])
        out, _ = self.online.lstm(x[:, bi:], (hb, cb))
        q = self.online.head(out)
        with torch.no_grad():
            best = q[:, 1:].argmax(-1, keepdim=True)
            y = rewards + discounts * q_next_target.gather(-1, best).squeeze(-1)
        q_taken = q[:, :self.length].gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        per_step = F.smooth_l1_loss(q_taken, y, reduction="none")
        loss = (per_step * mask).sum() / mask.sum().clamp(min=1.0)
        self.opt.zero_grad(set_to_none=False)
        loss.backward()
        nn.utils.clip_grad_norm_(self.online.parameters(), 10.0, foreach=True)
        self.opt.step()

    def step_host(self):
        idx = rng.integers(0, self.pool, self.batch)
        self.learn(*[torch.from_numpy(x[idx]).to(dev, non_blocking=True) for x in self.host])

    def step_device(self):
        idx = torch.randint(0, self.pool, (self.batch,), device=dev)
        self.learn(*[x[idx] for x in self.dev_replay])


def bench_lstm():
    hidden, batch, length, burn_in = (64, 8, 10, 5) if args.small else (512, 64, 40, 40)
    case = "lstm512-b64-t80-burn40"
    b = DrqnBench(hidden, batch, length, burn_in)
    report(case, "eager-host", clocked(b.step_host, 5, 5, args.seconds))
    report(case, "eager-device", clocked(b.step_device, 5, 5, args.seconds))
    if cuda:
        try:
            report(case, "graph", clocked(graphed(b.step_device), 5, 5, args.seconds))
        except Exception as e:  # cuDNN RNNs may refuse capture on some versions
            print(json.dumps({"case": case, "form": "graph", "error": str(e)[:300]}))


# ---------------------------------------------------------------- end to end
class CartPoles:
    """Gymnasium's CartPole-v1 dynamics, vectorized in numpy, auto-reset,
    500-step limit."""

    def __init__(self, n):
        self.n = n
        self.state = rng.uniform(-0.05, 0.05, (n, 4))
        self.t = np.zeros(n, np.int64)

    def step(self, action):
        x, x_dot, th, th_dot = self.state.T
        force = np.where(action == 1, 10.0, -10.0)
        cos, sin = np.cos(th), np.sin(th)
        temp = (force + 0.05 * th_dot ** 2 * sin) / 1.1
        th_acc = (9.8 * sin - cos * temp) / (0.5 * (4.0 / 3.0 - 0.1 * cos ** 2 / 1.1))
        x_acc = temp - 0.05 * th_acc * cos / 1.1
        x, x_dot = x + 0.02 * x_dot, x_dot + 0.02 * x_acc
        th, th_dot = th + 0.02 * th_dot, th_dot + 0.02 * th_acc
        self.state = np.stack([x, x_dot, th, th_dot], 1)
        self.t += 1
        terminated = (np.abs(x) > 2.4) | (np.abs(th) > 12 * 2 * math.pi / 360)
        truncated = (self.t >= 500) & ~terminated
        next_obs = self.state.astype(np.float32)
        done = terminated | truncated
        if done.any():
            k = int(done.sum())
            self.state[done] = rng.uniform(-0.05, 0.05, (k, 4))
            self.t[done] = 0
        return next_obs, terminated, done


def bench_e2e():
    hidden, envs, batch = (32, 8, 32) if args.small else (256, 64, 256)
    case = "e2e-cartpole-64envs"
    for form in (["eager-device", "graph"] if cuda else ["eager-device"]):
        b = DqnBench(hidden, batch, capacity=100_000)
        size = [0]
        pos = [0]
        b.dev_replay = [torch.zeros((100_000, 4), device=dev),
                        torch.zeros(100_000, dtype=torch.int64, device=dev),
                        torch.zeros(100_000, device=dev),
                        torch.zeros((100_000, 4), device=dev),
                        torch.zeros(100_000, device=dev)]
        count = torch.ones((), dtype=torch.int64, device=dev)
        cp = CartPoles(envs)
        obs = cp.state.astype(np.float32)
        steps = [0]

        def update_inner():
            idx = (torch.rand(b.batch, device=dev) * count).long()
            b.learn(*[x[idx] for x in b.dev_replay])
        replay_fn = [update_inner]

        def vector_step():
            nonlocal obs
            eps = max(0.05, 1.0 - steps[0] / 100_000)
            with torch.no_grad():
                greedy = b.online(torch.from_numpy(obs).to(dev)).argmax(1).cpu().numpy()
            act = np.where(rng.random(envs) < eps, rng.integers(0, 2, envs), greedy)
            nxt, term, done = cp.step(act)
            rows = np.concatenate([obs, act[:, None], np.ones((envs, 1)), nxt,
                                   np.where(term, 0.0, 0.99)[:, None]], 1).astype(np.float32)
            up = torch.from_numpy(rows).to(dev)
            i = np.arange(pos[0], pos[0] + envs) % 100_000
            ii = torch.from_numpy(i).to(dev)
            b.dev_replay[0][ii] = up[:, 0:4]
            b.dev_replay[1][ii] = up[:, 4].long()
            b.dev_replay[2][ii] = up[:, 5]
            b.dev_replay[3][ii] = up[:, 6:10]
            b.dev_replay[4][ii] = up[:, 10]
            pos[0] = (pos[0] + envs) % 100_000
            size[0] = min(size[0] + envs, 100_000)
            count.fill_(size[0])
            obs = np.where(done[:, None], cp.state.astype(np.float32), nxt)
            steps[0] += envs
            if steps[0] >= 1000:
                replay_fn[0]()
                b.after()

        for _ in range(1000 // envs + 20):
            vector_step()
        if form == "graph":
            replay_fn[0] = graphed(update_inner)
        n, secs = clocked(vector_step, 5, 10, args.seconds)
        report(case, form, (n * envs, secs), "env steps/s", {"updates_per_s": n / secs})


table = {"matmul-4096": bench_matmul,
         "dqn-256x256-b256": lambda: bench_dqn("dqn-256x256-b256", 256),
         "dqn-256x256-b4096": lambda: bench_dqn("dqn-256x256-b4096", 4096),
         "dqn-256x256-b256-pop16": lambda: bench_population("dqn-256x256-b256-pop16"),
         "td3-400x300-b256": bench_td3,
         "td3-400x300-b256-pop16": bench_td3_population,
         "lstm512-b64-t80-burn40": bench_lstm,
         "e2e-cartpole-64envs": bench_e2e}
for name in args.case or CASES:
    try:
        table[name]()
    except Exception as e:
        r = {"impl": "pytorch", "case": name, "error": f"{type(e).__name__}: {e}"[:500]}
        results.append(r)
        print(json.dumps(r), flush=True)
if args.out:
    with open(args.out, "w") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")
