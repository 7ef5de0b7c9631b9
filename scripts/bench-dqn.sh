#!/usr/bin/env bash
# reflex's DQN beside Stable-Baselines3's on CartPole-v1, in one run, with RL
# Zoo's hyperparameters (trainer/presets/cartpole-dqn.toml = SB3's
# hyperparams/dqn.yml), both on ONE thread, for seeds 0, 1, 2. Prints the
# machine, the versions and the markdown tables of BENCHMARKS.md.
#
#   bash scripts/bench-dqn.sh
#
# Per seed, one after the other (never two at once):
#   1. reflex, the preset as is (Double DQN + dueling head):
#        reflex-train run --env cartpole --seed S --out DIR --quiet
#   2. reflex, plain DQN (the same algorithm as SB3's DQN):
#        ... --set dqn.double=false --set dqn.net.dueling=false
#   3. SB3: scripts/bench_dqn_sb3.py --seed S (OMP_NUM_THREADS=1, torch.set_num_threads(1))
# Then, once, the acting-only baselines with gradient_steps = 0 on both sides (the
# same 50k env steps, ε-greedy acting and replay inserts, no update), which the
# updates/s estimate subtracts.
#
# Environment:
#   REFLEX_TRAIN    reflex-train binary to use (default: build target/release/reflex-train)
#   SEEDS           seeds (default "0 1 2")
#   MAX_LOAD        wait before each measurement until the 1-minute load average is
#                   below this (default 1.2; our own previous run alone leaves ~1)
#   MAX_WAIT        give up waiting after this many seconds and measure anyway,
#                   flagged in the output (default 600)
#   OUT             where runs and raw JSON go (default /tmp/bench-runs)
#   STEPS           env steps per run (default: the preset's 50,000; for a quick try)
#   REFLEX_COMMIT   commit to name in the output when REFLEX_TRAIN was built elsewhere
# Makes a Python venv at .venv-sb3 (stable-baselines3, gymnasium 1.4.0, torch) if
# missing. Takes about 6–7 minutes on a 2-core machine (after the build); keep other load off it.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${SEEDS:-0 1 2}
max_load=${MAX_LOAD:-1.2}
max_wait=${MAX_WAIT:-600}
out=${OUT:-/tmp/bench-runs}
steps=()
[[ -n "${STEPS:-}" ]] && steps=(--steps "$STEPS")
mkdir -p "$out"

source scripts/bench-common.sh

run_reflex() { # NAME SEED [--set ...]
  local name=$1 seed=$2
  shift 2
  rm -rf "$out/$name"
  wait_quiet
  echo "== $name" >&2
  RAYON_NUM_THREADS=1 python3 "$measure" "$out" "$name" -- \
    "$bin" run --env cartpole --seed "$seed" --out "$out/$name" --quiet "${steps[@]}" "$@"
}

run_sb3() { # NAME SEED [args]
  local name=$1 seed=$2
  shift 2
  wait_quiet
  echo "== $name" >&2
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python3 "$measure" "$out" "$name" -- \
    "$py" scripts/bench_dqn_sb3.py --seed "$seed" "${steps[@]}" "$@"
}

plain=(--set dqn.double=false --set dqn.net.dueling=false)
for seed in $seeds; do
  run_reflex "reflex-dd-$seed" "$seed"
  run_reflex "reflex-plain-$seed" "$seed" "${plain[@]}"
  run_sb3 "sb3-$seed" "$seed"
done
first=${seeds%% *}
run_reflex "reflex-dd-acting-$first" "$first" --set dqn.gradient_steps=0
run_reflex "reflex-plain-acting-$first" "$first" "${plain[@]}" --set dqn.gradient_steps=0
run_sb3 "sb3-acting-$first" "$first" --gradient-steps 0

cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
commit=${REFLEX_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
"$py" - "$out" "$bin" "$cpu" "$(nproc)" "$(rustc --version)" "$(date -u '+%Y-%m-%d %H:%M UTC')" "$commit" "$first" $seeds <<'EOF'
import csv, json, sys, tomllib

out, binary, cpu, cores, rustc, now, commit, first, *seeds = sys.argv[1:]

def m(name):
    return json.load(open(f"{out}/{name}.measure.json"))

def reflex(name):
    r = m(name)
    assert r["rc"] == 0, f"{name} failed: see {out}/{name}.stderr"
    r["eval"] = json.load(open(f"{out}/{name}/eval.json"))
    c = tomllib.load(open(f"{out}/{name}/config.toml", "rb"))
    d = c["dqn"]
    # Rounds happen at steps s > learning_starts with s % train_freq == 0.
    rounds = c["steps"] // d["train_freq"] - d["learning_starts"] // d["train_freq"]
    r["updates"] = rounds * d["gradient_steps"]
    r["env_steps"] = c["steps"]
    # Greedy eval steps taken beside training (CartPole pays 1 per step, so
    # steps = return): the periodic evals in metrics.csv and the final one.
    per = c["eval_interval_episodes"]
    rows = csv.DictReader(open(f"{out}/{name}/metrics.csv"))
    periodic = sum(float(x["eval_return"]) * per for x in rows if x["eval_return"])
    r["eval_steps"] = periodic + r["eval"]["mean_return"] * r["eval"]["episodes"]
    return r

def sb3(name):
    r = m(name)
    assert r["rc"] == 0, f"{name} failed: see {out}/{name}.stderr"
    r["sb3"] = json.loads(open(f"{out}/{name}.stdout").read().strip().splitlines()[-1])
    return r

rows = []
for s in seeds:
    rows.append((s, reflex(f"reflex-dd-{s}"), reflex(f"reflex-plain-{s}"), sb3(f"sb3-{s}")))
act_dd, act_plain = reflex(f"reflex-dd-acting-{first}"), reflex(f"reflex-plain-acting-{first}")
act_sb3 = sb3(f"sb3-acting-{first}")
v = rows[0][3]["sb3"]["versions"]

print(f"- command: `bash scripts/bench-dqn.sh` (reflex binary `{binary}`, commit {commit})")
print(f"- machine: {cpu}, {cores} cores")
print(f"- versions: {rustc}; Python {v['python']}, torch {v['torch']},"
      f" stable-baselines3 {v['stable_baselines3']}, gymnasium {v['gymnasium']}")
print(f"- date: {now}")
print()
print("Wall-clock seconds per 50k-step run (reflex: the whole `reflex-train run` process;"
      " SB3: model construction + learn() + evaluate_policy, after imports) and final"
      " greedy eval mean ± std over 20 episodes:")
print()
print("| seed | reflex Double+Dueling s | eval | reflex plain DQN s | eval | SB3 DQN s | eval"
      " | SB3 / reflex D+D | SB3 / reflex plain |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
ev = lambda e: f"{e['mean_return']:.1f} ± {e['std_return']:.1f}"
evs = lambda x: f"{x['eval_mean']:.1f} ± {x['eval_std']:.1f}"
for s, dd, pl, sb in rows:
    w = sb["sb3"]["wall_s"]
    print(f"| {s} | {dd['wall_s']:.1f} | {ev(dd['eval'])} | {pl['wall_s']:.1f} | {ev(pl['eval'])}"
          f" | {w:.1f} | {evs(sb['sb3'])} | {w / dd['wall_s']:.1f}× | {w / pl['wall_s']:.1f}× |")
print()

# Updates/s: update time = run time − the acting-only run's time − the greedy
# eval steps beyond the acting-only run's, at the acting-only run's cost per step.
def upd(r, act):
    per_step = act["wall_s"] / (act["env_steps"] + act["eval_steps"])
    t = r["wall_s"] - act["wall_s"] - (r["eval_steps"] - act["eval_steps"]) * per_step
    return r["updates"] / t, t

print("Throughput (env steps/s = env steps / wall seconds of the whole run;"
      f" updates/s estimated against the acting-only runs of seed {first}):")
print()
print("| seed | side | wall s | env steps | env steps/s | updates | update s (est.) | updates/s (est.) | SB3 train() s | updates/s in train() |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for s, dd, pl, sb in rows:
    for label, r, act in (("reflex D+D", dd, act_dd), ("reflex plain", pl, act_plain)):
        ups, t = upd(r, act)
        print(f"| {s} | {label} | {r['wall_s']:.1f} | {r['env_steps']:,} | {r['env_steps'] / r['wall_s']:,.0f}"
              f" | {r['updates']:,} | {t:.1f} | {ups:,.0f} | – | – |")
    x = sb["sb3"]
    t = x["learn_s"] - act_sb3["sb3"]["learn_s"]
    print(f"| {s} | SB3 | {x['wall_s']:.1f} | {x['env_steps']:,} | {x['env_steps'] / x['wall_s']:,.0f}"
          f" | {x['updates']:,} | {t:.1f} | {x['updates'] / t:,.0f} | {x['train_s']:.1f}"
          f" | {x['updates'] / x['train_s']:,.0f} |")
print()
print(f"Acting-only runs (gradient_steps = 0, seed {first}): "
      f"reflex D+D {act_dd['wall_s']:.2f} s ({act_dd['env_steps'] / act_dd['wall_s']:,.0f} env steps/s), "
      f"reflex plain {act_plain['wall_s']:.2f} s ({act_plain['env_steps'] / act_plain['wall_s']:,.0f} env steps/s), "
      f"SB3 learn() {act_sb3['sb3']['learn_s']:.2f} s "
      f"({act_sb3['sb3']['env_steps'] / act_sb3['sb3']['learn_s']:,.0f} env steps/s).")
print()
print("Quietness (1-minute load average before each run; other processes' average"
      " busy cores during it, from /proc/stat minus the run's own CPU time):")
print()
allm = [r for row in rows for r in row[1:]] + [act_dd, act_plain, act_sb3]
for r in allm:
    print(f"- {r['name']}: load {r['load_before']:.2f} before, others {r['others_busy_cores']:.2f}"
          f" cores, own CPU {r['cpu_s']:.1f} s in {r['wall_s']:.1f} s wall")
EOF
