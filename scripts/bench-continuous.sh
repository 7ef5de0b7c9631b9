#!/usr/bin/env bash
# reflex's DDPG and TD3 beside Stable-Baselines3's on Pendulum-v1, in one run,
# with RL Zoo's hyperparameters (trainer/presets/pendulum-ddpg.toml and
# pendulum-td3.toml = SB3's hyperparams/ddpg.yml and td3.yml), on one thread
# and on two. Prints the machine, the versions and the markdown tables of
# BENCHMARKS.md.
#
#   bash scripts/bench-continuous.sh
#
# Per algo (ddpg, td3), per seed, per thread count T in 1 2, one run after the
# other (never two at once):
#   1. reflex: RAYON_NUM_THREADS=T reflex-train run --env pendulum --algo ALGO
#                --seed S --out DIR --quiet --threads T
#   2. SB3:    OMP_NUM_THREADS=T ... scripts/bench_continuous_sb3.py --algo ALGO
#                --seed S --threads T          (torch.set_num_threads(T))
# Then, once per algo (first seed, one thread), the acting-only baselines with
# gradient_steps = 0 on both sides: the same env steps, noisy acting and replay
# inserts, the same evaluations, no update. The updates/s estimate subtracts them.
#
# Updates/s, the method: update seconds = a run's wall seconds − the acting-only
# run's wall seconds (same algo and side; one-thread baseline unless ACTING_THREADS
# adds others). Updates = env steps − learning_starts (train_freq 1, gradient_steps 1:
# one update after each env step past learning_starts). SB3's own time inside
# train() is printed beside it as a check.
#
# FLOPs of one update (batch B = 256; 2·m·k·n per matmul forward, twice that for
# the backward pass, dX and dW; biases, activations, the loss and Adam not counted):
#   actor  3→400→300→1:        A = 2·B·(3·400 + 400·300 + 300·1)     = 62.208 MFLOP forward
#   critic (3+1)→400→300→1:    C = 2·B·(4·400 + 400·300 + 300·1)     = 62.4128 MFLOP forward
#   DDPG, every update:  target actor fwd A + target critic fwd C + critic fwd+bwd 3C
#                        + actor fwd+bwd 3A + critic fwd+bwd in the actor loss 3C
#                        = 4A + 7C = 685.72 MFLOP
#   TD3, every update:   target actor fwd A + 2 target critics fwd 2C + 2 critics fwd+bwd 6C
#        every 2nd:      actor fwd+bwd 3A + critic Q1 fwd+bwd in the actor loss 3C
#                        = A + 8C + (3A + 3C)/2 = 2.5A + 9.5C = 748.44 MFLOP on average
# (The backward of a first layer that needs no dX is counted anyway: a slight
# overcount, the same on both sides.) Achieved GFLOP/s = FLOPs per update × updates/s.
#
# Environment:
#   REFLEX_TRAIN    reflex-train binary to use (default: build target/release/reflex-train)
#   SEEDS           seeds (default "0")
#   ALGOS           algorithms (default "ddpg td3")
#   THREADS         thread counts (default "1 2")
#   ACTING_THREADS  thread counts of the acting-only baselines (default "1"; a run
#                   at T threads subtracts the baseline at T if there is one, else at 1)
#   MAX_LOAD        wait before each measurement until the 1-minute load average is
#                   below this (default 1.2; our own previous run alone leaves ~1)
#   MAX_WAIT        give up waiting after this many seconds and measure anyway,
#                   flagged in the output (default 600)
#   OUT             where runs and raw JSON go (default /tmp/bench-continuous)
#   STEPS           env steps per run (default: the presets' 20,000; for a quick try)
#   LEARNING_STARTS random steps before learning on both sides (default: the
#                   presets' 10,000; for a quick try with a small STEPS)
#   EXTRA_SET       more reflex overrides, "KEY=VALUE ...", "{algo}" replaced by the
#                   algo, e.g. EXTRA_SET="{algo}.batch_size=128" (default none)
#   SB3_EXTRA       more arguments to scripts/bench_continuous_sb3.py (default none)
#   REFLEX_COMMIT   commit to name in the output when REFLEX_TRAIN was built elsewhere
# Makes a Python venv at .venv-sb3 (stable-baselines3, gymnasium 1.4.0, torch) if
# missing. Keep other load off the machine while it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${SEEDS:-0}
algos=${ALGOS:-ddpg td3}
threads_list=${THREADS:-1 2}
acting_threads=${ACTING_THREADS:-1}
max_load=${MAX_LOAD:-1.2}
max_wait=${MAX_WAIT:-600}
out=${OUT:-/tmp/bench-continuous}
steps=()
[[ -n "${STEPS:-}" ]] && steps=(--steps "$STEPS")
mkdir -p "$out"

# The command as run, with the knobs that were set.
cmdline="bash scripts/bench-continuous.sh"
for knob in ACTING_THREADS THREADS ALGOS SB3_EXTRA EXTRA_SET LEARNING_STARTS STEPS OUT MAX_WAIT MAX_LOAD SEEDS REFLEX_TRAIN; do
  [[ -n "${!knob:-}" ]] && cmdline="$knob=\"${!knob}\" $cmdline"
done

source scripts/bench-common.sh

run_reflex() { # NAME ALGO SEED THREADS [--set ...]
  local name=$1 algo=$2 seed=$3 threads=$4
  shift 4
  local extra=() kv
  [[ -n "${LEARNING_STARTS:-}" ]] && extra+=(--set "$algo.learning_starts=$LEARNING_STARTS")
  for kv in ${EXTRA_SET:-}; do
    extra+=(--set "${kv//\{algo\}/$algo}")
  done
  rm -rf "${out:?}/$name"
  wait_quiet
  echo "== $name" >&2
  RAYON_NUM_THREADS=$threads python3 "$measure" "$out" "$name" -- \
    "$bin" run --env pendulum --algo "$algo" --seed "$seed" --out "$out/$name" --quiet \
    --threads "$threads" "${steps[@]}" "${extra[@]}" "$@"
}

run_sb3() { # NAME ALGO SEED THREADS [args]
  local name=$1 algo=$2 seed=$3 threads=$4
  shift 4
  local extra=()
  [[ -n "${LEARNING_STARTS:-}" ]] && extra+=(--learning-starts "$LEARNING_STARTS")
  # shellcheck disable=SC2206 # word splitting of SB3_EXTRA is wanted
  extra+=(${SB3_EXTRA:-})
  wait_quiet
  echo "== $name" >&2
  OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads \
    python3 "$measure" "$out" "$name" -- \
    "$py" scripts/bench_continuous_sb3.py --algo "$algo" --seed "$seed" --threads "$threads" \
    "${steps[@]}" "${extra[@]}" "$@"
}

first=${seeds%% *}
for algo in $algos; do
  for seed in $seeds; do
    for t in $threads_list; do
      run_reflex "reflex-$algo-s$seed-t$t" "$algo" "$seed" "$t"
      run_sb3 "sb3-$algo-s$seed-t$t" "$algo" "$seed" "$t"
    done
  done
  for t in $acting_threads; do
    run_reflex "reflex-$algo-acting-s$first-t$t" "$algo" "$first" "$t" --set "$algo.gradient_steps=0"
    run_sb3 "sb3-$algo-acting-s$first-t$t" "$algo" "$first" "$t" --gradient-steps 0
  done
done

cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
commit=${REFLEX_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
dirty=$(git status --porcelain --untracked-files=no 2>/dev/null | head -c 1)
[[ -n "$dirty" && -z "${REFLEX_COMMIT:-}" ]] && commit="$commit (with uncommitted changes)"
rustc_v=$(rustc --version 2>/dev/null || echo "rustc unknown")
"$py" - "$out" "$bin" "$cpu" "$(nproc)" "$rustc_v" "$(date -u '+%Y-%m-%d %H:%M UTC')" \
  "$commit" "$cmdline" "$first" "$algos" "$threads_list" "$acting_threads" $seeds <<'EOF'
import csv, json, sys, tomllib

(out, binary, cpu, cores, rustc, now, commit, cmdline, first, algos, threads_list,
 acting_threads, *seeds) = sys.argv[1:]
algos, threads_list, acting_threads = algos.split(), threads_list.split(), acting_threads.split()

# FLOPs of one update, batch B: 2·m·k·n per matmul forward, 2× that backward (dX, dW).
B = 256
ACTOR = [3, 400, 300, 1]          # Pendulum obs 3 → action 1
CRITIC = [3 + 1, 400, 300, 1]     # obs + action → Q
def fwd(sizes):
    return sum(2 * B * m * n for m, n in zip(sizes, sizes[1:]))
A, C = fwd(ACTOR), fwd(CRITIC)
def update_flops(critics, policy_delay):
    """Average FLOPs of one update: every update the target actor forward, the
    target critic forwards and each critic's forward+backward; every
    policy_delay-th update the actor's forward+backward and Q1's
    forward+backward inside the actor loss."""
    every = A + critics * C + critics * 3 * C
    actor = 3 * A + 3 * C
    return every + actor / policy_delay
SHAPE = {"ddpg": (1, 1), "td3": (2, 2)}   # (critics, policy_delay)

def m(name):
    return json.load(open(f"{out}/{name}.measure.json"))

def reflex(name, algo):
    r = m(name)
    assert r["rc"] == 0, f"{name} failed: see {out}/{name}.stderr"
    r["eval"] = json.load(open(f"{out}/{name}/eval.json"))
    c = tomllib.load(open(f"{out}/{name}/config.toml", "rb"))
    d = c[algo]
    r["cfg"] = d
    # Rounds happen at steps s > learning_starts with s % train_freq == 0.
    rounds = c["steps"] // d["train_freq"] - d["learning_starts"] // d["train_freq"]
    r["updates"] = max(rounds, 0) * d["gradient_steps"]
    r["env_steps"] = c["steps"]
    rows = list(csv.DictReader(open(f"{out}/{name}/metrics.csv")))
    r["periodic_evals"] = sum(1 for x in rows if x.get("eval_return"))
    r["periodic_eval_episodes"] = r["periodic_evals"] * c.get("eval_interval_episodes", 0)
    return r

def sb3(name):
    r = m(name)
    assert r["rc"] == 0, f"{name} failed: see {out}/{name}.stderr"
    r["sb3"] = json.loads(open(f"{out}/{name}.stdout").read().strip().splitlines()[-1])
    return r

runs = {}   # (algo, seed, threads) -> (reflex, sb3)
acting = {}  # (algo, threads) -> (reflex, sb3)
for algo in algos:
    for s in seeds:
        for t in threads_list:
            runs[algo, s, t] = (reflex(f"reflex-{algo}-s{s}-t{t}", algo), sb3(f"sb3-{algo}-s{s}-t{t}"))
    for t in acting_threads:
        acting[algo, t] = (reflex(f"reflex-{algo}-acting-s{first}-t{t}", algo),
                           sb3(f"sb3-{algo}-acting-s{first}-t{t}"))
v = next(iter(runs.values()))[1]["sb3"]["versions"]

print(f"- command: `{cmdline}` (reflex binary `{binary}`, commit {commit})")
print(f"- machine: {cpu}, {cores} cores")
print(f"- versions: {rustc}; Python {v['python']}, torch {v['torch']},"
      f" stable-baselines3 {v['stable_baselines3']}, gymnasium {v['gymnasium']}, numpy {v['numpy']}")
print(f"- date: {now}")
print()
print("Settings as the runs saw them (reflex: config.toml; SB3: the model's attributes):")
print()
for algo in algos:
    rf, sb = runs[algo, seeds[0], threads_list[0]]
    d, x = rf["cfg"], sb["sb3"]
    print(f"- {algo}: reflex batch {d['batch_size']}, tau {d['tau']}, learning_starts {d['learning_starts']},"
          f" policy_delay {d.get('policy_delay', '–')}, twin_critics {d.get('twin_critics', '–')},"
          f" target_noise {d.get('target_noise', '–')} clip {d.get('target_noise_clip', '–')};"
          f" SB3 batch {x['batch_size']}, tau {x['tau']}, learning_starts {x['learning_starts']},"
          f" policy_delay {x['policy_delay']}, critics {x['n_critics']},"
          f" target_policy_noise {x['target_policy_noise']} clip {x['target_noise_clip']}")
print()

print("Wall-clock seconds per run (reflex: the whole `reflex-train run` process,"
      " periodic evaluations and checkpoints included; SB3: model construction + learn()"
      " + evaluate_policy, after imports), env steps/s = env steps / wall seconds, and the"
      " final greedy eval mean ± std over 20 episodes:")
print()
print("| algo | seed | threads | reflex s | reflex env steps/s | reflex eval | SB3 s | SB3 env steps/s | SB3 eval | SB3 / reflex |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
ev = lambda e: f"{e['mean_return']:.1f} ± {e['std_return']:.1f}"
evs = lambda x: f"{x['eval_mean']:.1f} ± {x['eval_std']:.1f}"
for (algo, s, t), (rf, sb) in runs.items():
    x = sb["sb3"]
    w = x["wall_s"]
    print(f"| {algo} | {s} | {t} | {rf['wall_s']:.1f} | {rf['env_steps'] / rf['wall_s']:,.0f} | {ev(rf['eval'])}"
          f" | {w:.1f} | {x['env_steps'] / w:,.0f} | {evs(x)} | {w / rf['wall_s']:.2f}× |")
print()

print("FLOPs of one update (batch 256; 2·m·k·n per matmul forward, 2× that backward for dX and dW;"
      " actor 3→400→300→1, critic (3+1)→400→300→1):")
print()
print(f"- A = actor forward = 2·256·(3·400 + 400·300 + 300·1) = {A / 1e6:.3f} MFLOP;"
      f" C = critic forward = 2·256·(4·400 + 400·300 + 300·1) = {C / 1e6:.4f} MFLOP")
print(f"- DDPG: target actor fwd + target critic fwd + critic fwd+bwd + actor fwd+bwd"
      f" + critic fwd+bwd in the actor loss = 4A + 7C = {update_flops(1, 1) / 1e6:.2f} MFLOP per update")
print(f"- TD3: target actor fwd + 2 target critics fwd + 2 critics fwd+bwd, and every 2nd update"
      f" actor fwd+bwd + Q1 fwd+bwd = A + 8C + (3A + 3C)/2 = {update_flops(2, 2) / 1e6:.2f} MFLOP per update on average")
print()

def baseline(algo, t):
    return acting.get((algo, t)) or acting[algo, acting_threads[0]], (t if (algo, t) in acting else acting_threads[0])

print("Update rate. Method: update seconds = the run's wall seconds − the acting-only run's"
      " wall seconds (gradient_steps = 0: same env steps, acting, replay inserts and"
      f" evaluations, no update; seed {first}, at the thread count in the 'acting' column);"
      " updates = env steps − learning_starts (train_freq 1, gradient_steps 1);"
      " GFLOP/s = FLOPs per update × updates/s. SB3's seconds inside train() are given as a check.")
print()
print("| algo | seed | threads | side | wall s | acting-only s (threads) | updates | update s (est.) | updates/s (est.) | GFLOP/s (est.) | SB3 train() s | updates/s in train() | GFLOP/s in train() |")
print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for (algo, s, t), (rf, sb) in runs.items():
    (act_rf, act_sb), at = baseline(algo, t)
    fl = update_flops(*SHAPE[algo])
    def row(side, wall, act_wall, updates, train=None):
        u = wall - act_wall
        ups = updates / u if u > 0 and updates else float("nan")
        tail = "– | – | –"
        if train is not None:
            tups = updates / train if train > 0 else float("nan")
            tail = f"{train:.1f} | {tups:,.0f} | {fl * tups / 1e9:.2f}"
        print(f"| {algo} | {s} | {t} | {side} | {wall:.1f} | {act_wall:.1f} ({at}) | {updates:,}"
              f" | {u:.1f} | {ups:,.0f} | {fl * ups / 1e9:.2f} | {tail} |")
    row("reflex", rf["wall_s"], act_rf["wall_s"], rf["updates"])
    x = sb["sb3"]
    row("SB3", x["wall_s"], act_sb["sb3"]["wall_s"], x["updates"], x["train_s"])
print()
print("Acting-only runs (gradient_steps = 0):")
print()
for (algo, t), (rf, sb) in acting.items():
    x = sb["sb3"]
    print(f"- {algo}, {t} thread(s): reflex {rf['wall_s']:.2f} s ({rf['env_steps'] / rf['wall_s']:,.0f} env steps/s),"
          f" SB3 {x['wall_s']:.2f} s ({x['env_steps'] / x['wall_s']:,.0f} env steps/s; learn() {x['learn_s']:.2f} s)")
rf0 = next(iter(runs.values()))[0]
print()
print(f"reflex's runs also make {rf0['periodic_evals']} periodic greedy evaluations"
      f" ({rf0['periodic_eval_episodes']} episodes of 200 steps) and checkpoints that SB3's do not;"
      " the acting-only runs make the same, so the update estimate cancels them, but the wall"
      " seconds above include them.")
print()
print("Quietness (1-minute load average before each run; other processes' average"
      " busy cores during it, from /proc/stat minus the run's own CPU time):")
print()
allm = [r for pair in runs.values() for r in pair] + [r for pair in acting.values() for r in pair]
for r in allm:
    print(f"- {r['name']}: load {r['load_before']:.2f} before, others {r['others_busy_cores']:.2f}"
          f" cores, own CPU {r['cpu_s']:.1f} s in {r['wall_s']:.1f} s wall")
EOF
