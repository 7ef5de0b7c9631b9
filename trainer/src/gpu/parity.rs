//! CPU-vs-device parity: every network kind, the optimizer and every learner's
//! first update, computed on CPU (with this crate's CPU kernels) and on the
//! device under test from the same weights and inputs, compared value by value.
//!
//! The device under test may be CPU itself: the subject side then runs inside
//! [`portable`], which turns this crate's CPU kernels off, so it takes the
//! path of candle primitives (what CUDA runs with `REFLEX_CUDA_FUSED=0`, and
//! any device without kernels of ours). That is how CI, which has no GPU,
//! checks that path and the learners' device code; `reflex-train gpu parity
//! --device cuda` checks the GPU and the CUDA kernels (and the CUDA-graph
//! update) against the CPU.
//!
//! Error measure: for each compared tensor, max |subject − reference| over
//! max |reference| (the absolute difference when the reference is all zeros).
//! A check passes at ≤ [`TOLERANCE`].

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};
use reflex_sim::SimRng;
use serde::Serialize;

use crate::algo::population::Population;
use crate::algo::{self, Agent};
use crate::nn::{
    portable, Activation, Actor, Critic, NafNetwork, NetConfig, Params, QNetwork, Recurrent,
    RecurrentQNetwork,
};
use crate::optim::Adam;
use crate::replay::EnvStep;
use crate::TrainError;

/// The largest error a check may have (the 1e-4).
pub const TOLERANCE: f64 = 1e-4;

/// One compared quantity.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was compared: `<case> <quantity>`, e.g. `q-mlp grad trunk.0.weight`.
    pub name: String,
    /// Values compared.
    pub values: usize,
    /// max |subject − reference|.
    pub max_abs: f64,
    /// max |reference|.
    pub scale: f64,
    /// `max_abs / scale` (or `max_abs` when the scale is 0).
    pub error: f64,
}

impl Check {
    /// Whether the error is within [`TOLERANCE`].
    pub fn passed(&self) -> bool {
        self.error <= TOLERANCE
    }
}

/// All checks of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The device under test, as candle names it.
    pub device: String,
    /// Whether the subject side ran with this crate's CPU kernels off (the
    /// device under test was the CPU).
    pub portable_cpu: bool,
    /// [`TOLERANCE`].
    pub tolerance: f64,
    /// Every compared quantity.
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(Check::passed)
    }

    /// The checks that failed.
    pub fn failures(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.passed()).collect()
    }

    /// A markdown table: one row per case (its worst check), then every failure.
    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "Parity on {}{}: {} checks, {} failed (tolerance {:e}, error = max|Δ| / max|ref|)\n\n\
             | case | checks | worst error | worst quantity |\n|---|---:|---:|---|\n",
            self.device,
            if self.portable_cpu {
                " (candle primitives, CPU kernels off)"
            } else {
                ""
            },
            self.checks.len(),
            self.failures().len(),
            TOLERANCE
        );
        let mut cases: Vec<&str> = Vec::new();
        for c in &self.checks {
            let case = c.name.split(' ').next().unwrap_or("");
            if !cases.contains(&case) {
                cases.push(case);
            }
        }
        for case in cases {
            let of_case: Vec<&Check> = self
                .checks
                .iter()
                .filter(|c| c.name.split(' ').next() == Some(case))
                .collect();
            let worst = of_case
                .iter()
                .max_by(|a, b| a.error.total_cmp(&b.error))
                .expect("a case has checks");
            out.push_str(&format!(
                "| {case} | {} | {:.2e} | {} |\n",
                of_case.len(),
                worst.error,
                worst.name
            ));
        }
        for f in self.failures() {
            out.push_str(&format!(
                "\nFAILED {}: error {:.3e} (max|Δ| {:.3e}, max|ref| {:.3e}, {} values)",
                f.name, f.error, f.max_abs, f.scale, f.values
            ));
        }
        out.push('\n');
        out
    }
}

fn host(t: &Tensor) -> Result<Vec<f32>, TrainError> {
    Ok(t.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?)
}

/// Compares `subject` against `reference` (any devices, same shape).
fn compare(name: String, subject: &Tensor, reference: &Tensor) -> Result<Check, TrainError> {
    if subject.dims() != reference.dims() {
        return Err(TrainError::Config(format!(
            "parity {name}: shape {:?} against {:?}",
            subject.dims(),
            reference.dims()
        )));
    }
    let (s, r) = (host(subject)?, host(reference)?);
    let mut max_abs = 0f64;
    let mut scale = 0f64;
    for (a, b) in s.iter().zip(&r) {
        let d = (f64::from(*a) - f64::from(*b)).abs();
        // A NaN on either side is a failure, not a skipped value.
        max_abs = if d.is_nan() {
            f64::INFINITY
        } else {
            max_abs.max(d)
        };
        scale = scale.max(f64::from(*b).abs());
    }
    Ok(Check {
        name,
        values: r.len(),
        max_abs,
        scale,
        error: if scale > 0.0 {
            max_abs / scale
        } else {
            max_abs
        },
    })
}

fn scalar_check(name: String, subject: f64, reference: f64) -> Check {
    let max_abs = if (subject - reference).is_nan() {
        f64::INFINITY
    } else {
        (subject - reference).abs()
    };
    let scale = reference.abs();
    Check {
        name,
        values: 1,
        max_abs,
        scale,
        error: if scale > 0.0 {
            max_abs / scale
        } else {
            max_abs
        },
    }
}

/// Loss, mean Q and gradient norm of one update against the reference's.
fn stats_checks(what: &str, s: &algo::UpdateStats, r: &algo::UpdateStats) -> [Check; 3] {
    [
        scalar_check(format!("{what} loss"), f64::from(s.loss), f64::from(r.loss)),
        scalar_check(
            format!("{what} q-mean"),
            f64::from(s.q_mean),
            f64::from(r.q_mean),
        ),
        scalar_check(format!("{what} grad-norm"), s.grad_norm, r.grad_norm),
    ]
}

/// Host data drawn from a seeded generator, uniform in [lo, hi).
fn uniform(rng: &mut SimRng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n)
        .map(|_| lo + (hi - lo) * rng.next_f64() as f32)
        .collect()
}

/// A forward pass from inputs to the outputs that are compared.
type Forward = Box<dyn Fn(&[Tensor]) -> candle_core::Result<Vec<Tensor>>>;

/// A network under test: its parameters and a forward pass from inputs to the
/// outputs that are compared (and that the loss weighs).
struct Model {
    params: Box<dyn Params>,
    forward: Forward,
}

impl Model {
    /// `net` with `forward` as its forward pass.
    fn of<N: Params + Clone + 'static>(
        net: N,
        forward: impl Fn(&N, &[Tensor]) -> candle_core::Result<Vec<Tensor>> + 'static,
    ) -> candle_core::Result<Self> {
        let n = net.clone();
        Ok(Self {
            params: Box::new(net),
            forward: Box::new(move |x| forward(&n, x)),
        })
    }
}

/// A network kind: its name, the input shapes, and how to build it on a device.
struct Kind {
    name: &'static str,
    inputs: Vec<Vec<usize>>,
    build: fn(&Device, &mut SimRng) -> candle_core::Result<Model>,
}

fn mlp(hidden: &[usize]) -> NetConfig {
    NetConfig {
        hidden: hidden.to_vec(),
        // Full-size final layers, so the outputs and their gradients are not
        // dominated by the tiny final initialization.
        final_init_scale: 1.0,
        ..NetConfig::default()
    }
}

/// `[batch, T, inputs]` windows, `[batch, H]` start states and an `[batch, T]`
/// alive mask whose first steps are 0 for half the rows (left padding).
fn window_inputs(batch: usize, steps: usize, inputs: usize, hidden: usize) -> Vec<Vec<usize>> {
    vec![
        vec![batch, steps, inputs],
        vec![batch, hidden],
        vec![batch, hidden],
        vec![batch, steps],
    ]
}

const BURN_IN: usize = 4;

fn kinds() -> Vec<Kind> {
    vec![
        Kind {
            name: "q-mlp-4-256-256-2",
            inputs: vec![vec![64, 4]],
            build: |dev, rng| {
                let net = QNetwork::new(&mlp(&[256, 256]), 4, 2, 1, rng, dev)?;
                Model::of(net, |n, x| n.forward_heads(&x[0]))
            },
        },
        Kind {
            name: "q-twin-dueling-layernorm-tanh-6-64-64-3",
            inputs: vec![vec![32, 6]],
            build: |dev, rng| {
                let config = NetConfig {
                    activation: Activation::Tanh,
                    layer_norm: true,
                    dueling: true,
                    ..mlp(&[64, 64])
                };
                let net = QNetwork::new(&config, 6, 3, 2, rng, dev)?;
                Model::of(net, |n, x| n.forward_heads(&x[0]))
            },
        },
        Kind {
            name: "actor-3-400-300-1",
            inputs: vec![vec![64, 3]],
            build: |dev, rng| {
                let net = Actor::new(&mlp(&[400, 300]), 3, 1, rng, dev)?;
                Model::of(net, |n, x| Ok(vec![n.forward(&x[0])?]))
            },
        },
        Kind {
            name: "critic-3+1-400-300-1",
            inputs: vec![vec![64, 3], vec![64, 1]],
            build: |dev, rng| {
                let net = Critic::new(&mlp(&[400, 300]), 3, 1, rng, dev)?;
                Model::of(net, |n, x| Ok(vec![n.forward(&x[0], &x[1])?]))
            },
        },
        Kind {
            name: "naf-5-64-64-3",
            inputs: vec![vec![32, 5], vec![32, 3]],
            build: |dev, rng| {
                let net = NafNetwork::new(&mlp(&[64, 64]), 5, 3, rng, dev)?;
                Model::of(net, |n, x| {
                    let out = n.forward(&x[0])?;
                    let q = n.q(&out, &x[1])?;
                    Ok(vec![out.value, out.mu, out.l, q])
                })
            },
        },
        Kind {
            name: "drqn-lstm32-dueling",
            inputs: window_inputs(8, 12, 2 + 2, 32),
            build: |dev, rng| {
                let config = NetConfig {
                    dueling: true,
                    ..mlp(&[32])
                };
                let net = RecurrentQNetwork::new(&config, 2, 2, 32, rng, dev)?;
                Model::of(net, |n, x| {
                    let q = n.unroll(&x[0], &x[1], &x[2], Some(&x[3]), BURN_IN)?;
                    let (_, h, c) = n.step(&x[0].narrow(1, 0, 1)?.squeeze(1)?, &x[1], &x[2])?;
                    Ok(vec![q, h, c])
                })
            },
        },
        Kind {
            name: "recurrent-actor-lstm32",
            inputs: window_inputs(8, 12, 3 + 1, 32),
            build: |dev, rng| {
                let net = Recurrent::<Actor>::new(&mlp(&[32]), 3, 1, 32, rng, dev)?;
                Model::of(net, |n, x| {
                    let h = n.states(&x[0], &x[1], &x[2], Some(&x[3]), BURN_IN)?;
                    Ok(vec![n.head.forward(&h)?])
                })
            },
        },
        Kind {
            name: "recurrent-critic-lstm32",
            inputs: {
                let mut v = window_inputs(8, 12, 3 + 1, 32);
                v.push(vec![8 * (12 - BURN_IN), 1]);
                v
            },
            build: |dev, rng| {
                let net = Recurrent::<Critic>::new(&mlp(&[32]), 3, 1, 32, rng, dev)?;
                Model::of(net, |n, x| {
                    let h = n.states(&x[0], &x[1], &x[2], Some(&x[3]), BURN_IN)?;
                    Ok(vec![n.head.forward(&h, &x[4])?])
                })
            },
        },
        Kind {
            name: "recurrent-naf-lstm32",
            inputs: window_inputs(8, 12, 3 + 2, 32),
            build: |dev, rng| {
                let net = Recurrent::<NafNetwork>::new(&mlp(&[32]), 3, 2, 32, rng, dev)?;
                Model::of(net, |n, x| {
                    let h = n.states(&x[0], &x[1], &x[2], Some(&x[3]), BURN_IN)?;
                    let out = n.head.forward(&h)?;
                    Ok(vec![out.value, out.mu, out.l])
                })
            },
        },
    ]
}

/// The inputs of a kind as host data: uniform in [−2, 2), except alive masks
/// (the 4th input of window kinds), which are 0 for the first 3 steps of every
/// other row and 1 elsewhere.
fn input_data(kind: &Kind, rng: &mut SimRng) -> Vec<(Vec<f32>, Vec<usize>)> {
    kind.inputs
        .iter()
        .enumerate()
        .map(|(i, shape)| {
            let n: usize = shape.iter().product();
            let data = if i == 3 && shape.len() == 2 && kind.inputs.len() >= 4 {
                let (rows, steps) = (shape[0], shape[1]);
                (0..rows * steps)
                    .map(|k| {
                        if (k / steps) % 2 == 1 && k % steps < 3 {
                            0.0
                        } else {
                            1.0
                        }
                    })
                    .collect()
            } else {
                uniform(rng, n, -2.0, 2.0)
            };
            (data, shape.clone())
        })
        .collect()
}

/// What one side computed: outputs, the loss's gradient per parameter, and
/// the parameters after one clipped Adam step on the reference's gradients.
struct Side {
    outputs: Vec<Tensor>,
    grads: Vec<(String, Tensor)>,
    stepped: Vec<(String, Tensor)>,
    grad_norm: f64,
}

fn run_side(
    model: &Model,
    inputs: &[Tensor],
    weights_seed: u64,
    step_grads: Option<&[(String, Tensor)]>,
) -> Result<Side, TrainError> {
    let outputs = (model.forward)(inputs)?;
    // loss = Σ_k Σ out_k ⊙ C_k with fixed random C_k: every output element
    // gets its own gradient weight.
    let mut rng = SimRng::seed(weights_seed);
    let device = inputs[0].device();
    let mut loss = Tensor::zeros((), candle_core::DType::F32, device)?;
    for out in &outputs {
        let c = Tensor::from_vec(
            uniform(&mut rng, out.elem_count(), -1.0, 1.0),
            out.shape(),
            device,
        )?;
        loss = (loss + (out * c)?.sum_all()?)?;
    }
    let store = loss.backward()?;
    let named = model.params.named_vars();
    let mut grads = Vec::new();
    for (name, var) in &named {
        let g = store
            .get(var.as_tensor())
            .ok_or_else(|| TrainError::Config(format!("parity: no gradient reached `{name}`")))?;
        grads.push((name.clone(), g.clone()));
    }
    // One Adam step with clipping on the given gradients (the reference's,
    // uploaded): Adam's first step is lr·g/(|g| + ε), about lr·sign(g), so
    // stepping each side on its own gradients would turn float noise in
    // near-zero gradients into full-size differences.
    let given = step_grads.unwrap_or(&grads);
    let mut store = GradStore::default();
    for ((_, var), (_, g)) in named.iter().zip(given) {
        store.insert(var.as_tensor(), g.to_device(device)?);
    }
    let mut adam = Adam::new(model.params.vars(), 1e-3)?;
    let full = adam.step(&store, None)?;
    // A second step clipped to half the norm exercises the clipping path.
    let grad_norm = adam.step(&store, Some(full / 2.0))?;
    let stepped = named
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    Ok(Side {
        outputs,
        grads,
        stepped,
        grad_norm,
    })
}

/// Runs `f` for the subject side: inside [`portable`] when the device under
/// test is the CPU.
fn subject<R>(device: &Device, f: impl FnOnce() -> R) -> R {
    if device.is_cpu() {
        portable(f)
    } else {
        f()
    }
}

fn check_kind(kind: &Kind, device: &Device, checks: &mut Vec<Check>) -> Result<(), TrainError> {
    let seed = 17;
    let reference = (kind.build)(&Device::Cpu, &mut SimRng::seed(seed))?;
    let tested = (kind.build)(device, &mut SimRng::seed(seed))?;
    // Same weights on both sides, whatever the device's construction did.
    for (mine, theirs) in tested.params.vars().iter().zip(reference.params.vars()) {
        mine.set(&theirs.as_tensor().to_device(device)?)?;
    }
    let data = input_data(kind, &mut SimRng::seed(seed + 1));
    let upload = |dev: &Device| -> candle_core::Result<Vec<Tensor>> {
        data.iter()
            .map(|(v, shape)| Tensor::from_slice(v, shape.as_slice(), dev))
            .collect()
    };
    let r = run_side(&reference, &upload(&Device::Cpu)?, seed + 2, None)?;
    let s = subject(device, || {
        run_side(&tested, &upload(device)?, seed + 2, Some(&r.grads))
    })?;
    for (k, (a, b)) in s.outputs.iter().zip(&r.outputs).enumerate() {
        checks.push(compare(format!("{} output{k}", kind.name), a, b)?);
    }
    for ((name, a), (_, b)) in s.grads.iter().zip(&r.grads) {
        checks.push(compare(format!("{} grad {name}", kind.name), a, b)?);
    }
    checks.push(scalar_check(
        format!("{} grad-norm", kind.name),
        s.grad_norm,
        r.grad_norm,
    ));
    for ((name, a), (_, b)) in s.stepped.iter().zip(&r.stepped) {
        checks.push(compare(format!("{} adam2 {name}", kind.name), a, b)?);
    }
    Ok(())
}

/// The learners whose first update is compared: `(case, env, algo, --set …)`.
/// Each updates once per env step from the first step after a 600-step fill.
const LEARNERS: &[(&str, &str, &str, &[&str])] = &[
    (
        "dqn-double-dueling",
        "cartpole",
        "dqn",
        &[
            "dqn.learning_starts=600",
            "dqn.train_freq=1",
            "dqn.gradient_steps=1",
        ],
    ),
    (
        "dqn-per-3step-twin",
        "cartpole",
        "dqn",
        &[
            "dqn.learning_starts=600",
            "dqn.train_freq=1",
            "dqn.gradient_steps=1",
            "dqn.prioritized=true",
            "dqn.n_step=3",
            "dqn.twin=true",
        ],
    ),
    (
        "td3",
        "pendulum",
        "td3",
        &[
            "td3.learning_starts=600",
            "td3.train_freq=1",
            "td3.gradient_steps=1",
        ],
    ),
    (
        "ddpg",
        "pendulum",
        "ddpg",
        &[
            "ddpg.learning_starts=600",
            "ddpg.train_freq=1",
            "ddpg.gradient_steps=1",
        ],
    ),
    (
        "naf",
        "pendulum",
        "naf",
        &[
            "naf.learning_starts=600",
            "naf.train_freq=1",
            "naf.gradient_steps=1",
        ],
    ),
    (
        "drqn",
        "cartpole-masked",
        "drqn",
        &[
            "drqn.learning_starts=600",
            "drqn.train_freq=1",
            "drqn.gradient_steps=1",
            "drqn.batch_size=16",
        ],
    ),
    (
        "recurrent-td3",
        "pendulum-masked",
        "td3",
        &[
            "td3.learning_starts=600",
            "td3.train_freq=1",
            "td3.gradient_steps=1",
            "td3.batch_size=16",
        ],
    ),
];

/// Fills both learners with the same 600 random transitions, then compares
/// what their first update reports (loss, mean Q, gradient norm: these
/// depend only on the shared initial weights and the sampled batch), and
/// smoke-runs a few more updates on the device.
fn check_learner(
    (case, env_name, algo_name, sets): (&str, &str, &str, &[&str]),
    device: &Device,
    checks: &mut Vec<Check>,
) -> Result<(), TrainError> {
    let mut explicit = toml::Table::new();
    explicit.insert("env".into(), env_name.into());
    explicit.insert("algo".into(), algo_name.into());
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let config = crate::run::resolve(None, &sets, &explicit)?;
    let mut env = reflex_sim::make(&config.env)?;
    let mut reference = algo::build(&config, env.as_ref(), &Device::Cpu)?;
    let mut tested = algo::build(&config, env.as_ref(), device)?;
    // Same weights (construction draws them on the host, but make sure).
    for ((_, mine), (_, theirs)) in tested.networks().iter().zip(reference.networks()) {
        for (m, t) in mine.vars().iter().zip(theirs.vars()) {
            m.set(&t.as_tensor().to_device(device)?)?;
        }
    }
    let fill = 600u64;
    let total = 10_000u64;
    let mut rng = SimRng::seed(5);
    let mut obs = env.reset(Some(3)).to_vec();
    for agent in [&mut reference, &mut tested] {
        agent.episode_start();
    }
    let space = env.action_space().clone();
    for step in 1..=fill {
        let action = reflex_sim::random_action(&space, &mut rng);
        // Both learners act (recurrent ones carry their state through it),
        // then both store the same random action's step.
        for agent in [&mut reference, &mut tested] {
            agent.set_steps_done(step);
            let _ = subject(device, || agent.explore(&obs, step, total))?;
        }
        let result = env.step(&action)?;
        let next = env.obs().to_vec();
        let transition = EnvStep::new(&obs, &action, &result, &next);
        reference.observe(&transition)?;
        tested.observe(&transition)?;
        if result.done() {
            obs = env.reset(None).to_vec();
            reference.episode_start();
            tested.episode_start();
        } else {
            obs = next;
        }
    }
    let first = |agent: &mut Box<dyn Agent>| -> Result<algo::UpdateStats, TrainError> {
        agent.set_steps_done(fill + 1);
        agent.train_after(fill + 1, total)?.ok_or_else(|| {
            TrainError::Config(format!("parity {case}: no update at step {}", fill + 1))
        })
    };
    let r = first(&mut reference)?;
    let s = subject(device, || first(&mut tested))?;
    checks.extend(stats_checks(case, &s, &r));
    // Ten more updates on the device: they must run and stay finite.
    let mut finite = true;
    for k in 2..=11 {
        let step = fill + k;
        let stats = subject(device, || {
            tested.set_steps_done(step);
            tested.train_after(step, total)
        })?;
        if let Some(stats) = stats {
            finite &= stats.loss.is_finite() && stats.grad_norm.is_finite();
        }
    }
    checks.push(flag_check(
        &format!("{case} finite-after-10-updates"),
        finite,
    ));
    Ok(())
}

/// The DQN config of the graph checks: the preset's networks, PER on (so
/// the TD errors come back through the graph too), updates from the start.
fn graph_config() -> crate::algo::dqn::DqnConfig {
    crate::algo::dqn::DqnConfig {
        learning_starts: 0,
        prioritized: true,
        ..Default::default()
    }
}

/// On CUDA: DQN updates replayed from a captured CUDA graph against the same
/// updates run op by op, from the same weights and batches. The first replays
/// (after the eager warm-up) must report the same loss and mean Q.
fn check_graph(device: &Device, checks: &mut Vec<Check>) -> Result<(), TrainError> {
    use crate::algo::dqn::Dqn;
    let config = graph_config();
    let mut eager = Dqn::new(config.clone(), 4, 2, 0, device)?;
    let mut graphed = Dqn::new(config, 4, 2, 0, device)?;
    eager.cuda_graph = false;
    graphed.cuda_graph = true;
    super::bench::fill_random("cartpole", 2_000, 11, |step| {
        eager.observe(step)?;
        graphed.observe(step)
    })?;
    replay_checks(
        "dqn-cuda-graph",
        || Ok(vec![eager.update(0.4)?]),
        || Ok(vec![graphed.update(0.4)?]),
        checks,
    )?;
    // The replays really were replays (a failed capture falls back to eager
    // updates with a warning, which the comparisons above would not notice).
    checks.push(flag_check(
        "dqn-cuda-graph captured",
        graphed.graph_captured(),
    ));
    // And what the replays wrote: parameters and Adam moments.
    weight_checks(
        "dqn-cuda-graph",
        (&graphed.online, &graphed.optimizer),
        (&eager.online, &eager.optimizer),
        checks,
    )
}

/// `rounds` updates of a population on the device (`population`) against
/// each member's single learner on the CPU (`single` on `singles[k]`):
/// stats checks named `{what} member{k} update{round}`.
fn member_update_checks<S>(
    what: &str,
    rounds: usize,
    mut population: impl FnMut() -> Result<Vec<algo::UpdateStats>, TrainError>,
    singles: &mut [S],
    mut single: impl FnMut(&mut S) -> Result<algo::UpdateStats, TrainError>,
    checks: &mut Vec<Check>,
) -> Result<(), TrainError> {
    for round in 1..=rounds {
        let stats = population()?;
        for (k, s) in singles.iter_mut().enumerate() {
            let reference = single(s)?;
            checks.extend(stats_checks(
                &format!("{what} member{k} update{round}"),
                &stats[k],
                &reference,
            ));
        }
    }
    Ok(())
}

/// Six updates eager and graphed (a learner's stats as one member, or a
/// population's): the stats of the three after the warm-up (the capture and
/// the first replays) checked, named `{what} replayN` (`{what} memberK
/// replayN` for several members).
fn replay_checks(
    what: &str,
    mut eager: impl FnMut() -> Result<Vec<algo::UpdateStats>, TrainError>,
    mut graphed: impl FnMut() -> Result<Vec<algo::UpdateStats>, TrainError>,
    checks: &mut Vec<Check>,
) -> Result<(), TrainError> {
    for k in 1..=6 {
        let (eager_stats, graphed_stats) = (eager()?, graphed()?);
        if k > crate::gpu::graph::GraphedUpdate::WARMUP {
            let replay = k - crate::gpu::graph::GraphedUpdate::WARMUP;
            let several = eager_stats.len() > 1;
            for (member, (g, e)) in graphed_stats.iter().zip(&eager_stats).enumerate() {
                let name = if several {
                    format!("{what} member{member} replay{replay}")
                } else {
                    format!("{what} replay{replay}")
                };
                checks.extend(stats_checks(&name, g, e));
            }
        }
    }
    Ok(())
}

/// A check that passes when `ok`.
fn flag_check(name: &str, ok: bool) -> Check {
    let error = if ok { 0.0 } else { f64::INFINITY };
    Check {
        name: name.into(),
        values: 1,
        max_abs: error,
        scale: 0.0,
        error,
    }
}

/// A network's parameters and its Adam moments against the reference's.
fn weight_checks(
    what: &str,
    (net, adam): (&dyn Params, &crate::optim::Adam),
    (reference, reference_adam): (&dyn Params, &crate::optim::Adam),
    checks: &mut Vec<Check>,
) -> Result<(), TrainError> {
    for ((name, m), (_, r)) in net.named_vars().iter().zip(reference.named_vars()) {
        checks.push(compare(
            format!("{what} param {name}"),
            m.as_tensor(),
            r.as_tensor(),
        )?);
    }
    let names = reference.names();
    for ((name, m), (_, r)) in adam.state(&names).iter().zip(reference_adam.state(&names)) {
        checks.push(compare(format!("{what} {name}"), m, &r)?);
    }
    Ok(())
}

/// A population of three DQN learners (twin, dueling, PER, a clip that
/// bites) on stacked networks on `device`, against the three single
/// learners on the CPU kernels: each member's update stats over three
/// updates, then its weights and Adam moments.
fn check_population(device: &Device, checks: &mut Vec<Check>) -> Result<(), TrainError> {
    use crate::algo::dqn::{Dqn, DqnConfig};
    use crate::algo::population::DqnPopulation;
    let config = DqnConfig {
        learning_starts: 0,
        prioritized: true,
        twin: true,
        max_grad_norm: Some(0.5),
        ..DqnConfig::default()
    };
    let seeds = [0u64, 1, 2];
    let mut population = subject(device, || {
        DqnPopulation::new(config.clone(), 4, 2, &seeds, device)
    })?;
    let mut singles = seeds
        .iter()
        .map(|&s| Dqn::new(config.clone(), 4, 2, s, &Device::Cpu))
        .collect::<Result<Vec<_>, _>>()?;
    for (k, single) in singles.iter_mut().enumerate() {
        let member = &mut population.members[k];
        super::bench::fill_random("cartpole", 1_000, 11 + k as u64, |step| {
            single.observe(step)?;
            member.observe(step)
        })?;
    }
    member_update_checks(
        "dqn-population",
        3,
        || subject(device, || population.update(0.4)),
        &mut singles,
        |single| single.update(0.4),
        checks,
    )?;
    population.sync_members()?;
    for (k, (member, single)) in population.members.iter().zip(&singles).enumerate() {
        weight_checks(
            &format!("dqn-population member{k}"),
            (&member.online, &member.optimizer),
            (&single.online, &single.optimizer),
            checks,
        )?;
    }
    Ok(())
}

/// A population of three TD3 learners (PER, 2-step returns, a clip that
/// bites, target smoothing) on stacked actors and critics on `device`,
/// against the three single learners on the CPU kernels: each member's
/// update stats over four updates (two of them actor updates), then its
/// actor, critics, their targets and both Adams' moments.
fn check_td3_population(device: &Device, checks: &mut Vec<Check>) -> Result<(), TrainError> {
    use crate::algo::ddpg::Ddpg;
    use crate::algo::population_ac::DdpgPopulation;
    let (config, bounds) = td3_population_config();
    let seeds = [0u64, 1, 2];
    let mut population = subject(device, || {
        DdpgPopulation::new(config.clone(), true, 3, &bounds, &seeds, device)
    })?;
    let mut singles = seeds
        .iter()
        .map(|&s| Ddpg::new(config.clone(), true, 3, &bounds, s, &Device::Cpu))
        .collect::<Result<Vec<_>, _>>()?;
    for (k, single) in singles.iter_mut().enumerate() {
        let member = &mut population.members[k];
        super::bench::fill_random("pendulum", 1_000, 11 + k as u64, |step| {
            single.observe(step)?;
            member.observe(step)
        })?;
    }
    member_update_checks(
        "td3-population",
        4,
        || subject(device, || population.update(0.4)),
        &mut singles,
        |single| single.update(0.4),
        checks,
    )?;
    population.sync_members()?;
    for (k, single) in singles.iter().enumerate() {
        let member = &population.members[k];
        let what = format!("td3-population member{k}");
        weight_checks(
            &format!("{what} actor"),
            (&member.actor, &member.actor_optimizer),
            (&single.actor, &single.actor_optimizer),
            checks,
        )?;
        weight_checks(
            &format!("{what} critics"),
            (&member.critics, &member.critic_optimizer),
            (&single.critics, &single.critic_optimizer),
            checks,
        )?;
        let targets: [(&str, &dyn Params, &dyn Params); 2] = [
            ("actor target", &member.actor_target, &single.actor_target),
            (
                "critic targets",
                &member.critic_targets,
                &single.critic_targets,
            ),
        ];
        for (which, m, r) in targets {
            for ((name, a), (_, b)) in m.named_vars().iter().zip(r.named_vars()) {
                checks.push(compare(
                    format!("{what} {which} {name}"),
                    a.as_tensor(),
                    b.as_tensor(),
                )?);
            }
        }
    }
    Ok(())
}

/// A population of three DRQN learners (stacked LSTMs: stored state,
/// burn-in, 2-step returns, PER, dueling, a clip that bites) on `device`,
/// against the three single learners on the CPU kernels: each member's
/// update stats over three updates, then its LSTM and head weights and Adam
/// moments. On CUDA this runs the fused LSTM cell over members × batch rows.
fn check_drqn_population(device: &Device, checks: &mut Vec<Check>) -> Result<(), TrainError> {
    use crate::algo::drqn::Drqn;
    use crate::algo::population_drqn::DrqnPopulation;
    let config = drqn_parity_config();
    let seeds = [0u64, 1, 2];
    let mut population = subject(device, || {
        DrqnPopulation::new(config.clone(), 2, 2, &seeds, device)
    })?;
    let mut singles = seeds
        .iter()
        .map(|&s| Drqn::new(config.clone(), 2, 2, s, &Device::Cpu))
        .collect::<Result<Vec<_>, _>>()?;
    for (k, single) in singles.iter_mut().enumerate() {
        let seed = 11 + k as u64;
        let mut env = reflex_sim::make("cartpole-masked")?;
        algo::train(single, env.as_mut(), 400, seed, 0, &mut Silent)?;
        let member = &mut population.members[k];
        subject(device, || {
            algo::train(member, env.as_mut(), 400, seed, 0, &mut Silent)
        })?;
    }
    member_update_checks(
        "drqn-population",
        3,
        || subject(device, || population.update(0.4)),
        &mut singles,
        |single| single.update(0.4),
        checks,
    )?;
    population.sync_members()?;
    for (k, (member, single)) in population.members.iter().zip(&singles).enumerate() {
        weight_checks(
            &format!("drqn-population member{k}"),
            (&member.online, &member.optimizer),
            (&single.online, &single.optimizer),
            checks,
        )?;
    }
    Ok(())
}

/// The DRQN parity checks' settings: LSTM 32 and a dueling head, stored
/// state, burn-in, 2-step returns, PER, a clip that bites; filled by acting
/// at ε = 1 (replay stores the acting state).
fn drqn_parity_config() -> crate::algo::drqn::DrqnConfig {
    use crate::algo::drqn::DrqnConfig;
    DrqnConfig {
        batch_size: 8,
        seq_len: 8,
        burn_in: 4,
        n_step: 2,
        lstm_hidden: 32,
        prioritized: true,
        max_grad_norm: Some(0.5),
        // Filled by acting at ε = 1 (replay stores the acting state).
        learning_starts: u64::MAX,
        exploration: crate::schedule::Schedule::linear(1.0, 1.0, 1.0),
        net: crate::nn::NetConfig {
            hidden: vec![32],
            dueling: true,
            ..crate::nn::NetConfig::default()
        },
        ..DrqnConfig::default()
    }
}

/// On CUDA: a DRQN learner's updates replayed from a captured CUDA graph
/// (the whole unroll, backward and Adam as one launch) against the same
/// learner updating op by op: stats from the first replays on, the captured
/// flag, and the weights and moments the replays wrote.
fn check_drqn_graph(device: &Device, checks: &mut Vec<Check>) -> Result<(), TrainError> {
    use crate::algo::drqn::Drqn;
    let config = drqn_parity_config();
    let mut eager = Drqn::new(config.clone(), 2, 2, 0, device)?;
    let mut graphed = Drqn::new(config, 2, 2, 0, device)?;
    eager.cuda_graph = false;
    graphed.cuda_graph = true;
    for agent in [&mut eager, &mut graphed] {
        let mut env = reflex_sim::make("cartpole-masked")?;
        algo::train(agent, env.as_mut(), 400, 11, 0, &mut Silent)?;
    }
    replay_checks(
        "drqn-cuda-graph",
        || Ok(vec![eager.update(0.4)?]),
        || Ok(vec![graphed.update(0.4)?]),
        checks,
    )?;
    checks.push(flag_check(
        "drqn-cuda-graph captured",
        graphed.graph_captured(),
    ));
    weight_checks(
        "drqn-cuda-graph",
        (&graphed.online, &graphed.optimizer),
        (&eager.online, &eager.optimizer),
        checks,
    )
}

/// On CUDA: the same for a DRQN population of three (stacked LSTMs).
fn check_drqn_population_graph(device: &Device, checks: &mut Vec<Check>) -> Result<(), TrainError> {
    use crate::algo::population_drqn::DrqnPopulation;
    let config = drqn_parity_config();
    let seeds = [0u64, 1, 2];
    let mut eager = DrqnPopulation::new(config.clone(), 2, 2, &seeds, device)?;
    let mut graphed = DrqnPopulation::new(config, 2, 2, &seeds, device)?;
    eager.cuda_graph = false;
    graphed.cuda_graph = true;
    for population in [&mut eager, &mut graphed] {
        for (k, member) in population.members.iter_mut().enumerate() {
            let mut env = reflex_sim::make("cartpole-masked")?;
            algo::train(member, env.as_mut(), 400, 11 + k as u64, 0, &mut Silent)?;
        }
    }
    replay_checks(
        "drqn-population-graph",
        || eager.update(0.4),
        || graphed.update(0.4),
        checks,
    )?;
    checks.push(flag_check(
        "drqn-population-graph captured",
        graphed.graph_captured(),
    ));
    eager.sync_members()?;
    graphed.sync_members()?;
    for (k, (g, e)) in graphed.members.iter().zip(&eager.members).enumerate() {
        weight_checks(
            &format!("drqn-population-graph member{k}"),
            (&g.online, &g.optimizer),
            (&e.online, &e.optimizer),
            checks,
        )?;
    }
    Ok(())
}

/// An observer that records nothing.
struct Silent;
impl algo::Observer for Silent {
    fn episode(&mut self, _: &algo::Progress, _: f64, _: u32) {}
}

/// The TD3 population parity's settings (64-wide networks, PER, 2-step
/// returns, a clip) and Pendulum's action bounds.
fn td3_population_config() -> (crate::algo::ddpg::DdpgConfig, reflex_msgs::BoxSpace) {
    let net = crate::nn::NetConfig {
        hidden: vec![64, 64],
        final_init_scale: 1.0,
        ..crate::nn::NetConfig::default()
    };
    let config = crate::algo::ddpg::DdpgConfig {
        batch_size: 64,
        learning_starts: 0,
        prioritized: true,
        n_step: 2,
        max_grad_norm: Some(5.0),
        actor: net.clone(),
        critic: net,
        ..crate::algo::ddpg::DdpgConfig::td3()
    };
    let bounds = reflex_msgs::BoxSpace {
        low: vec![-2.0],
        high: vec![2.0],
    };
    (config, bounds)
}

/// A TD3 learner's updates as replayed CUDA graphs (one for critic-only
/// updates, one with the actor) against the same learner updating eagerly:
/// stats from the first replays on, the captured flag, and the actor,
/// critics, their targets and both Adams' moments the replays wrote.
fn check_td3_graph(device: &Device, checks: &mut Vec<Check>) -> Result<(), TrainError> {
    use crate::algo::ddpg::Ddpg;
    let (config, bounds) = td3_population_config();
    let mut eager = Ddpg::new(config.clone(), true, 3, &bounds, 5, device)?;
    let mut graphed = Ddpg::new(config, true, 3, &bounds, 5, device)?;
    eager.cuda_graph = false;
    graphed.cuda_graph = true;
    super::bench::fill_random("pendulum", 1_000, 11, |step| {
        eager.observe(step)?;
        graphed.observe(step)
    })?;
    // Each graph warms up three times and captures on its fourth update:
    // updates 7 (critic only) and 8 (with the actor) are the first replays.
    for k in 1..=12 {
        let (e, g) = (eager.update(0.4)?, graphed.update(0.4)?);
        if k >= 7 {
            checks.extend(stats_checks(&format!("td3-graph update{k}"), &g, &e));
        }
    }
    checks.push(flag_check("td3-graph captured", graphed.graph_captured()));
    weight_checks(
        "td3-graph actor",
        (&graphed.actor, &graphed.actor_optimizer),
        (&eager.actor, &eager.actor_optimizer),
        checks,
    )?;
    weight_checks(
        "td3-graph critics",
        (&graphed.critics, &graphed.critic_optimizer),
        (&eager.critics, &eager.critic_optimizer),
        checks,
    )?;
    let targets: [(&str, &dyn Params, &dyn Params); 2] = [
        ("actor target", &graphed.actor_target, &eager.actor_target),
        (
            "critic targets",
            &graphed.critic_targets,
            &eager.critic_targets,
        ),
    ];
    for (which, g, e) in targets {
        for ((name, a), (_, b)) in g.named_vars().iter().zip(e.named_vars()) {
            checks.push(compare(
                format!("td3-graph {which} {name}"),
                a.as_tensor(),
                b.as_tensor(),
            )?);
        }
    }
    Ok(())
}

/// The TD3 population's updates as replayed CUDA graphs (one for
/// critic-only updates, one with the actor) against the same population
/// updating eagerly: every member's stats from the first replays on, the
/// captured flag, and the actor and critics the replays wrote.
fn check_td3_population_graph(device: &Device, checks: &mut Vec<Check>) -> Result<(), TrainError> {
    use crate::algo::population_ac::DdpgPopulation;
    let (config, bounds) = td3_population_config();
    let seeds = [0u64, 1, 2, 3];
    let mut eager = DdpgPopulation::new(config.clone(), true, 3, &bounds, &seeds, device)?;
    let mut graphed = DdpgPopulation::new(config, true, 3, &bounds, &seeds, device)?;
    eager.cuda_graph = false;
    graphed.cuda_graph = true;
    for k in 0..seeds.len() {
        let (e, g) = (&mut eager.members[k], &mut graphed.members[k]);
        super::bench::fill_random("pendulum", 1_000, 11 + k as u64, |step| {
            e.observe(step)?;
            g.observe(step)
        })?;
    }
    // Each graph warms up three times and captures on its fourth update:
    // updates 7 (critic only) and 8 (with the actor) are the first replays.
    for k in 1..=12 {
        let (e, g) = (eager.update(0.4)?, graphed.update(0.4)?);
        if k >= 7 {
            for (member, (g, e)) in g.iter().zip(&e).enumerate() {
                checks.extend(stats_checks(
                    &format!("td3-population-graph member{member} update{k}"),
                    g,
                    e,
                ));
            }
        }
    }
    checks.push(flag_check(
        "td3-population-graph captured",
        graphed.graph_captured(),
    ));
    for population in [&mut eager, &mut graphed] {
        crate::algo::population::Population::sync_members(population)?;
    }
    for (k, (g, e)) in graphed.members.iter().zip(&eager.members).enumerate() {
        weight_checks(
            &format!("td3-population-graph member{k} actor"),
            (&g.actor, &g.actor_optimizer),
            (&e.actor, &e.actor_optimizer),
            checks,
        )?;
        weight_checks(
            &format!("td3-population-graph member{k} critics"),
            (&g.critics, &g.critic_optimizer),
            (&e.critics, &e.critic_optimizer),
            checks,
        )?;
    }
    Ok(())
}

/// The population's update as a replayed CUDA graph against the same
/// population updating eagerly: every member's stats over three replays
/// (after the warm-up), the captured flag, and the parameters the replays
/// wrote.
fn check_population_graph(device: &Device, checks: &mut Vec<Check>) -> Result<(), TrainError> {
    use crate::algo::population::DqnPopulation;
    let config = graph_config();
    let seeds = [0u64, 1, 2, 3];
    let mut eager = DqnPopulation::new(config.clone(), 4, 2, &seeds, device)?;
    let mut graphed = DqnPopulation::new(config, 4, 2, &seeds, device)?;
    eager.cuda_graph = false;
    graphed.cuda_graph = true;
    for k in 0..seeds.len() {
        let (e, g) = (&mut eager.members[k], &mut graphed.members[k]);
        super::bench::fill_random("cartpole", 1_000, 11 + k as u64, |step| {
            e.observe(step)?;
            g.observe(step)
        })?;
    }
    replay_checks(
        "dqn-population-graph",
        || eager.update(0.4),
        || graphed.update(0.4),
        checks,
    )?;
    checks.push(flag_check(
        "dqn-population-graph captured",
        graphed.graph_captured(),
    ));
    weight_checks(
        "dqn-population-graph",
        (&graphed.online().net, graphed.optimizer()),
        (&eager.online().net, eager.optimizer()),
        checks,
    )?;
    Ok(())
}

/// Every check against `device`; `progress` is told each case's name as it starts.
pub fn run(device: &Device, mut progress: impl FnMut(&str)) -> Result<Report, TrainError> {
    let mut checks = Vec::new();
    for kind in kinds() {
        progress(kind.name);
        check_kind(&kind, device, &mut checks)?;
    }
    for learner in LEARNERS {
        progress(learner.0);
        check_learner(*learner, device, &mut checks)?;
    }
    progress("dqn-population");
    check_population(device, &mut checks)?;
    progress("td3-population");
    check_td3_population(device, &mut checks)?;
    progress("drqn-population");
    check_drqn_population(device, &mut checks)?;
    if crate::gpu::kernels::cuda_kernels(device) {
        progress("dqn-cuda-graph");
        check_graph(device, &mut checks)?;
        progress("dqn-population-graph");
        check_population_graph(device, &mut checks)?;
        progress("td3-cuda-graph");
        check_td3_graph(device, &mut checks)?;
        progress("td3-population-graph");
        check_td3_population_graph(device, &mut checks)?;
        progress("drqn-cuda-graph");
        check_drqn_graph(device, &mut checks)?;
        progress("drqn-population-graph");
        check_drqn_population_graph(device, &mut checks)?;
    }
    Ok(Report {
        device: format!("{device:?}"),
        portable_cpu: device.is_cpu(),
        tolerance: TOLERANCE,
        checks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// candle's primitives (the path of devices without this crate's kernels,
    /// and of CUDA with `REFLEX_CUDA_FUSED=0`) agree with this crate's CPU
    /// kernels for every network kind, the optimizer and every learner. (The
    /// CUDA kernels themselves are checked by `gpu parity --device cuda`.)
    #[test]
    fn candle_primitives_match_the_cpu_kernels_everywhere() {
        let report = run(&Device::Cpu, |_| {}).unwrap();
        assert!(report.checks.len() > 100, "{} checks", report.checks.len());
        assert!(report.passed(), "{}", report.to_markdown());
        let population = report
            .checks
            .iter()
            .filter(|c| c.name.starts_with("dqn-population"))
            .count();
        assert!(population > 3 * 9, "{population} population checks");
        let td3 = report
            .checks
            .iter()
            .filter(|c| c.name.starts_with("td3-population"))
            .count();
        // 4 updates × 3 members × 3 stats, then per member the actor's 6
        // parameters and 12 moments, the critics' 12 and 24, the targets' 18.
        assert_eq!(
            td3,
            3 * (4 * 3 + 6 + 12 + 12 + 24 + 18),
            "{td3} TD3 population checks"
        );
        let drqn = report
            .checks
            .iter()
            .filter(|c| c.name.starts_with("drqn-population"))
            .count();
        // 3 updates × 3 members × 3 stats, then per member the LSTM's 3
        // parameters and the dueling head's 6, and their 18 moments.
        assert_eq!(drqn, 3 * (3 * 3 + 9 + 18), "{drqn} DRQN population checks");
        // Each kind compared its gradients (not only outputs).
        for kind in kinds() {
            assert!(
                report
                    .checks
                    .iter()
                    .any(|c| c.name.starts_with(&format!("{} grad ", kind.name))),
                "{}",
                kind.name
            );
        }
    }

    #[test]
    fn a_real_difference_fails_the_check() {
        let a = Tensor::new(&[1.0f32, 2.0, 4.0], &Device::Cpu).unwrap();
        let b = Tensor::new(&[1.0f32, 2.0, 4.001], &Device::Cpu).unwrap();
        let c = compare("x".into(), &b, &a).unwrap();
        assert!((c.error - 0.001 / 4.0).abs() < 1e-6, "{c:?}");
        assert!(!c.passed());
        let nan = Tensor::new(&[1.0f32, f32::NAN, 4.0], &Device::Cpu).unwrap();
        assert!(!compare("n".into(), &nan, &a).unwrap().passed());
        assert!(compare("same".into(), &a, &a).unwrap().passed());
    }
}
