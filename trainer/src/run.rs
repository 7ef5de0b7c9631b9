//! A training run's configuration: presets, config files and `--set`
//! overrides resolved into one [`RunConfig`], and the run folder it writes.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::algo::ddpg::DdpgConfig;
use crate::algo::dqn::DqnConfig;
use crate::algo::drqn::DrqnConfig;
use crate::algo::naf::NafConfig;
use crate::algo::recurrent::LstmConfig;
use crate::TrainError;

/// The algorithms `algo` may name.
pub const ALGOS: &[&str] = &["dqn", "drqn", "ddpg", "td3", "naf"];

/// Everything that defines a run. Stored fully resolved as `config.toml` in the
/// run folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Env name (see `reflex-sim`): `cartpole`, `acrobot`, …
    pub env: String,
    /// Algorithm: `dqn` or `drqn` (recurrent DQN) for discrete actions, `ddpg`,
    /// `td3` or `naf` for continuous ones.
    pub algo: String,
    /// An LSTM over the history in front of every network (`ddpg`, `td3`,
    /// `naf`; the `[lstm]` table sets it up). `drqn` is DQN's recurrent variant.
    pub recurrent: bool,
    /// Seed of everything random in the run.
    pub seed: u64,
    /// Env steps to train for.
    pub steps: u64,
    /// Greedy episodes of the final evaluation (`eval.json`).
    pub eval_episodes: u32,
    /// Env steps between periodic evaluations written to `metrics.csv` (0 = none).
    pub eval_interval: u64,
    /// Greedy episodes of each periodic evaluation.
    pub eval_interval_episodes: u32,
    /// Env steps between checkpoints (0 = only at the end).
    pub checkpoint_interval: u64,
    /// DQN hyperparameters (used when `algo = "dqn"`).
    pub dqn: DqnConfig,
    /// DRQN hyperparameters (used when `algo = "drqn"`).
    pub drqn: DrqnConfig,
    /// DDPG hyperparameters (used when `algo = "ddpg"`).
    pub ddpg: DdpgConfig,
    /// TD3 hyperparameters (used when `algo = "td3"`): DDPG's fields with TD3's
    /// defaults (twin critics, policy delay 2, target smoothing).
    pub td3: DdpgConfig,
    /// NAF hyperparameters (used when `algo = "naf"`).
    pub naf: NafConfig,
    /// Window and LSTM settings of a recurrent `ddpg`/`td3`/`naf` run.
    pub lstm: LstmConfig,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            env: "cartpole".into(),
            algo: "dqn".into(),
            seed: 0,
            steps: 50_000,
            eval_episodes: 20,
            eval_interval: 5_000,
            eval_interval_episodes: 5,
            checkpoint_interval: 10_000,
            dqn: DqnConfig::default(),
            drqn: DrqnConfig::default(),
            ddpg: DdpgConfig::default(),
            td3: DdpgConfig::td3(),
            naf: NafConfig::default(),
            recurrent: false,
            lstm: LstmConfig::default(),
        }
    }
}

impl RunConfig {
    /// Env steps before the first update, for the algorithm the run uses.
    pub fn learning_starts(&self) -> u64 {
        match self.algo.as_str() {
            "drqn" => self.drqn.learning_starts,
            "ddpg" => self.ddpg.learning_starts,
            "td3" => self.td3.learning_starts,
            "naf" => self.naf.learning_starts,
            _ => self.dqn.learning_starts,
        }
    }
}

/// The presets shipped in `trainer/presets/`, by `<env>-<algo>`.
const PRESETS: &[(&str, &str)] = &[
    ("cartpole-dqn", include_str!("../presets/cartpole-dqn.toml")),
    ("acrobot-dqn", include_str!("../presets/acrobot-dqn.toml")),
    (
        "mountaincar-dqn",
        include_str!("../presets/mountaincar-dqn.toml"),
    ),
    (
        "pendulum-ddpg",
        include_str!("../presets/pendulum-ddpg.toml"),
    ),
    ("pendulum-td3", include_str!("../presets/pendulum-td3.toml")),
    ("pendulum-naf", include_str!("../presets/pendulum-naf.toml")),
    (
        "pendulum-masked-td3",
        include_str!("../presets/pendulum-masked-td3.toml"),
    ),
    (
        "pendulum-masked-naf",
        include_str!("../presets/pendulum-masked-naf.toml"),
    ),
    (
        "cartpole-masked-drqn",
        include_str!("../presets/cartpole-masked-drqn.toml"),
    ),
    (
        "mountaincarcontinuous-td3",
        include_str!("../presets/mountaincarcontinuous-td3.toml"),
    ),
];

/// The preset for an env and algorithm, if one ships: the env's own
/// (`cartpole-masked-drqn`), else its base env's (`cartpole-dqn` for
/// `cartpole-masked` with DQN: the same preset with and without the mask).
pub fn preset(env: &str, algo: &str) -> Option<&'static str> {
    let short = |name: &str| {
        reflex_sim::registry::lookup(name)
            .map_or(name.to_ascii_lowercase(), |e| e.short.to_string())
    };
    let mut keys = vec![format!("{}-{algo}", short(env))];
    if let Some((base, variant)) = env.rsplit_once('-') {
        if let Some(entry) = reflex_sim::registry::lookup(base) {
            keys.insert(
                0,
                format!("{}-{}-{algo}", entry.short, variant.to_ascii_lowercase()),
            );
            keys.push(format!("{}-{algo}", entry.short));
        }
    }
    keys.iter().find_map(|key| {
        PRESETS
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, text)| *text)
    })
}

/// Merges `overlay` into `base`, table by table (overlay wins).
fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(over)) => merge(inner, over),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Parses `a.b.c=value` (value in TOML syntax; bare words are strings) into a table.
fn parse_set(assignment: &str) -> Result<toml::Table, TrainError> {
    let (path, raw) = assignment
        .split_once('=')
        .ok_or_else(|| TrainError::Config(format!("--set `{assignment}`: expected KEY=VALUE")))?;
    let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .map(|mut t| {
            t.remove("v")
                .unwrap_or(toml::Value::String(raw.to_string()))
        })
        .unwrap_or_else(|_| toml::Value::String(raw.trim().to_string()));
    let mut table = toml::Table::new();
    let keys: Vec<&str> = path.trim().split('.').collect();
    let (last, parents) = keys.split_last().expect("split yields at least one item");
    let mut leaf = toml::Table::new();
    leaf.insert((*last).to_string(), value);
    let mut node = leaf;
    for parent in parents.iter().rev() {
        let mut outer = toml::Table::new();
        outer.insert((*parent).to_string(), toml::Value::Table(node));
        node = outer;
    }
    merge(&mut table, node);
    Ok(table)
}

/// Resolves a run's configuration. Layers, later ones winning: the preset for
/// the run's env and algorithm (if one ships), `config_file`, the `--set`
/// assignments, then the explicit CLI values. The env and algorithm that pick
/// the preset are themselves taken from the later layers (default `cartpole` and
/// `dqn`). Unknown keys anywhere are errors that name the key.
pub fn resolve(
    config_file: Option<&Path>,
    sets: &[String],
    explicit: &toml::Table,
) -> Result<RunConfig, TrainError> {
    let mut overlay = toml::Table::new();
    if let Some(path) = config_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TrainError::Config(format!("cannot read {}: {e}", path.display())))?;
        let file: toml::Table = toml::from_str(&text)
            .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
        merge(&mut overlay, file);
    }
    for assignment in sets {
        merge(&mut overlay, parse_set(assignment)?);
    }
    merge(&mut overlay, explicit.clone());
    let defaults = RunConfig::default();
    let pick = |key: &str, default: &str| {
        overlay
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or(default)
            .to_string()
    };
    let (env, algo) = (pick("env", &defaults.env), pick("algo", &defaults.algo));
    for section in unused_sections(&overlay, &algo) {
        tracing::warn!("[{section}] settings are not used by a {algo} run; ignored");
    }

    // Every field starts at its default (so a partial `[td3]` table keeps TD3's
    // defaults for what it leaves out), then the preset and the overlay.
    let mut table = toml::Table::try_from(RunConfig::default())
        .map_err(|e| TrainError::Config(format!("defaults: {e}")))?;
    if let Some(text) = preset(&env, &algo) {
        merge(
            &mut table,
            toml::from_str(text).map_err(|e| TrainError::Config(format!("preset: {e}")))?,
        );
    }
    merge(&mut table, overlay);
    let config: RunConfig = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| TrainError::Config(e.to_string()))?;
    check(&config)?;
    Ok(config)
}

/// The algorithm sections `overlay` (a config file and `--set`s) sets that
/// an `algo` run does not read.
fn unused_sections(overlay: &toml::Table, algo: &str) -> Vec<&'static str> {
    ["dqn", "drqn", "ddpg", "td3", "naf"]
        .into_iter()
        .filter(|section| *section != algo && overlay.contains_key(*section))
        .collect()
}

/// Every check a resolved configuration must pass: the env exists, the
/// algorithm fits its actions, every value is in range (each problem named by
/// key). `resolve` runs it, and so must whatever reads a run's `config.toml`
/// back (a resume), since people edit that file.
pub fn check(config: &RunConfig) -> Result<(), TrainError> {
    let env = reflex_sim::make(&config.env)?;
    let discrete = matches!(
        env.action_space(),
        reflex_msgs::ActionSpace::Discrete { .. }
    );
    if config.recurrent {
        match config.algo.as_str() {
            "ddpg" | "td3" | "naf" | "drqn" => {}
            "dqn" => {
                return Err(TrainError::Config(
                    "recurrent DQN is its own algorithm: use `--algo drqn`".into(),
                ))
            }
            other => {
                return Err(TrainError::Config(format!(
                    "`recurrent = true` is built for ddpg, td3 and naf (and drqn), not {other}"
                )))
            }
        }
    }
    validate(config)?;
    match (config.algo.as_str(), discrete) {
        ("dqn" | "drqn", true) | ("ddpg" | "td3" | "naf", false) => Ok(()),
        ("dqn" | "drqn", false) => Err(TrainError::Config(format!(
            "{} has continuous actions; {} needs discrete ones (try ddpg, td3 or naf)",
            config.env, config.algo
        ))),
        ("ddpg" | "td3" | "naf", true) => Err(TrainError::Config(format!(
            "{} has discrete actions; {} needs continuous ones (try dqn or drqn)",
            config.env, config.algo
        ))),
        (other, _) => Err(TrainError::Config(format!(
            "unknown algo `{other}` (known: {})",
            ALGOS.join(", ")
        ))),
    }
}

/// Collects what is wrong with a configuration, by key.
struct Checks(Vec<String>);

impl Checks {
    fn fail(&mut self, key: &str, value: impl std::fmt::Display, need: &str) {
        self.0.push(format!("{key} = {value}: {need}"));
    }

    /// Finite and above 0.
    fn positive(&mut self, key: &str, v: f64) {
        if !(v.is_finite() && v > 0.0) {
            self.fail(key, v, "must be a finite number above 0");
        }
    }

    /// Finite and at least 0.
    fn non_negative(&mut self, key: &str, v: f64) {
        if !(v.is_finite() && v >= 0.0) {
            self.fail(key, v, "must be a finite number, 0 or more");
        }
    }

    /// In [lo, hi].
    fn within(&mut self, key: &str, v: f64, lo: f64, hi: f64) {
        if !(lo..=hi).contains(&v) {
            self.fail(key, v, &format!("must be in [{lo}, {hi}]"));
        }
    }

    fn at_least_one(&mut self, key: &str, v: u64) {
        if v == 0 {
            self.fail(key, v, "must be at least 1");
        }
    }

    /// A Polyak rate: in (0, 1].
    fn tau(&mut self, key: &str, v: f64) {
        if !(v > 0.0 && v <= 1.0) {
            self.fail(key, v, "must be in (0, 1]");
        }
    }

    fn grad_norm(&mut self, key: &str, v: Option<f64>) {
        if let Some(v) = v {
            self.positive(key, v);
        }
    }

    fn net(&mut self, key: &str, net: &crate::nn::NetConfig) {
        if net.hidden.contains(&0) {
            self.fail(
                &format!("{key}.hidden"),
                format!("{:?}", net.hidden),
                "a layer must have at least 1 unit",
            );
        }
        if !net.final_init_scale.is_finite() {
            self.fail(
                &format!("{key}.final_init_scale"),
                net.final_init_scale,
                "must be finite",
            );
        }
    }

    /// A schedule of values in [lo, hi].
    fn schedule(&mut self, key: &str, s: &crate::schedule::Schedule, lo: f64, hi: f64) {
        self.within(&format!("{key}.start"), s.start, lo, hi);
        self.within(&format!("{key}.end"), s.end, lo, hi);
        self.non_negative(&format!("{key}.fraction"), s.fraction);
    }

    fn noise(&mut self, key: &str, n: &crate::algo::continuous::NoiseConfig) {
        self.schedule(&format!("{key}.sigma"), &n.sigma, 0.0, f64::MAX);
        self.non_negative(&format!("{key}.ou_theta"), n.ou_theta);
        self.positive(&format!("{key}.ou_dt"), n.ou_dt);
    }

    /// A sequence replay of `buffer_size` steps holds one window: `burn_in +
    /// seq_len + n_step` (the first two under `prefix`).
    fn window(
        &mut self,
        algo: &str,
        buffer_size: usize,
        (burn_in, seq_len, n_step): (usize, usize, usize),
        prefix: &str,
    ) {
        let need = burn_in + seq_len + n_step;
        if buffer_size < need {
            self.fail(
                &format!("{algo}.buffer_size"),
                buffer_size,
                &format!(
                    "must hold one window, {prefix}burn_in + {prefix}seq_len + n_step = {need} steps"
                ),
            );
        }
    }

    /// Replay and returns: γ in [0, 1], n ≥ 1, a buffer of at least one step
    /// that holds a whole batch (unless batches are of windows, checked by
    /// [`Self::window`]).
    fn replay(
        &mut self,
        algo: &str,
        gamma: f64,
        n_step: usize,
        (batch_size, buffer_size): (usize, usize),
        windows: bool,
    ) {
        self.within(&format!("{algo}.gamma"), gamma, 0.0, 1.0);
        self.at_least_one(&format!("{algo}.n_step"), n_step as u64);
        self.at_least_one(&format!("{algo}.buffer_size"), buffer_size as u64);
        if !windows && batch_size > buffer_size {
            self.fail(
                &format!("{algo}.batch_size"),
                batch_size,
                &format!("must not exceed {algo}.buffer_size = {buffer_size}"),
            );
        }
    }

    /// The settings every off-policy learner shares.
    #[allow(clippy::too_many_arguments)]
    fn rounds(
        &mut self,
        algo: &str,
        batch_size: usize,
        train_freq: u64,
        tau: f64,
        per_beta0: f64,
        max_grad_norm: Option<f64>,
    ) {
        self.at_least_one(&format!("{algo}.batch_size"), batch_size as u64);
        self.at_least_one(&format!("{algo}.train_freq"), train_freq);
        // gradient_steps = 0 is allowed: an acting-only run (scripts/bench-dqn.sh
        // measures the loop without updates so).
        self.tau(&format!("{algo}.tau"), tau);
        self.within(&format!("{algo}.per_beta0"), per_beta0, 0.0, 1.0);
        self.grad_norm(&format!("{algo}.max_grad_norm"), max_grad_norm);
    }
}

/// The checks `serde` cannot make: values in range, sizes of at least 1, for
/// the sections `config.algo` uses. Every problem is reported, by key.
fn validate(config: &RunConfig) -> Result<(), TrainError> {
    let mut c = Checks(Vec::new());
    c.at_least_one("steps", config.steps);
    c.at_least_one("eval_episodes", u64::from(config.eval_episodes));
    if config.eval_interval > 0 {
        c.at_least_one(
            "eval_interval_episodes",
            u64::from(config.eval_interval_episodes),
        );
    }
    // DqnConfig and DrqnConfig name these fields alike.
    macro_rules! dqn_family {
        ($name:literal, $d:expr) => {{
            let d = $d;
            c.positive(concat!($name, ".learning_rate"), d.learning_rate);
            c.rounds(
                $name,
                d.batch_size,
                d.train_freq,
                d.tau,
                d.per_beta0,
                d.max_grad_norm,
            );
            c.at_least_one(
                concat!($name, ".target_update_interval"),
                d.target_update_interval,
            );
            c.schedule(concat!($name, ".exploration"), &d.exploration, 0.0, 1.0);
            c.net(concat!($name, ".net"), &d.net);
        }};
    }
    let lstm = &config.lstm;
    match config.algo.as_str() {
        "dqn" => {
            let d = &config.dqn;
            dqn_family!("dqn", d);
            c.replay(
                "dqn",
                d.gamma,
                d.n_step,
                (d.batch_size, d.buffer_size),
                false,
            );
        }
        "drqn" => {
            let d = &config.drqn;
            dqn_family!("drqn", d);
            c.replay(
                "drqn",
                d.gamma,
                d.n_step,
                (d.batch_size, d.buffer_size),
                true,
            );
            c.at_least_one("drqn.seq_len", d.seq_len as u64);
            c.window("drqn", d.buffer_size, (d.burn_in, d.seq_len, d.n_step), "");
        }
        algo @ ("ddpg" | "td3") => {
            let d = if algo == "ddpg" {
                &config.ddpg
            } else {
                &config.td3
            };
            c.positive(
                &format!("{algo}.actor_learning_rate"),
                d.actor_learning_rate,
            );
            c.positive(
                &format!("{algo}.critic_learning_rate"),
                d.critic_learning_rate,
            );
            c.rounds(
                algo,
                d.batch_size,
                d.train_freq,
                d.tau,
                d.per_beta0,
                d.max_grad_norm,
            );
            c.replay(
                algo,
                d.gamma,
                d.n_step,
                (d.batch_size, d.buffer_size),
                config.recurrent,
            );
            c.non_negative(&format!("{algo}.target_noise"), d.target_noise);
            c.non_negative(&format!("{algo}.target_noise_clip"), d.target_noise_clip);
            c.noise(&format!("{algo}.noise"), &d.noise);
            c.net(&format!("{algo}.actor"), &d.actor);
            c.net(&format!("{algo}.critic"), &d.critic);
            if config.recurrent {
                let shape = (lstm.burn_in, lstm.seq_len, d.n_step);
                c.window(algo, d.buffer_size, shape, "lstm.");
            }
        }
        "naf" => {
            let d = &config.naf;
            c.positive("naf.learning_rate", d.learning_rate);
            c.rounds(
                "naf",
                d.batch_size,
                d.train_freq,
                d.tau,
                d.per_beta0,
                d.max_grad_norm,
            );
            c.replay(
                "naf",
                d.gamma,
                d.n_step,
                (d.batch_size, d.buffer_size),
                config.recurrent,
            );
            c.non_negative("naf.mu_penalty", d.mu_penalty);
            c.noise("naf.noise", &d.noise);
            c.net("naf.net", &d.net);
            if config.recurrent {
                let shape = (lstm.burn_in, lstm.seq_len, d.n_step);
                c.window("naf", d.buffer_size, shape, "lstm.");
            }
        }
        _ => {}
    }
    if config.recurrent {
        c.at_least_one("lstm.seq_len", config.lstm.seq_len as u64);
    }
    if c.0.is_empty() {
        Ok(())
    } else {
        Err(TrainError::Config(c.0.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explicit(pairs: &[(&str, toml::Value)]) -> toml::Table {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn named(env: &str, algo: &str) -> toml::Table {
        explicit(&[("env", env.into()), ("algo", algo.into())])
    }

    #[test]
    fn settings_for_another_algorithm_are_named() {
        let overlay: toml::Table =
            toml::from_str("[dqn]\ngamma = 0.9\n[td3]\ntau = 0.01\n[lstm]\nseq_len = 8\n").unwrap();
        assert_eq!(unused_sections(&overlay, "td3"), ["dqn"]);
        assert_eq!(unused_sections(&overlay, "dqn"), ["td3"]);
        assert_eq!(unused_sections(&overlay, "naf"), ["dqn", "td3"]);
        assert!(unused_sections(&toml::Table::new(), "naf").is_empty());
    }

    #[test]
    fn preset_then_file_then_sets_then_flags() {
        let dir = std::env::temp_dir().join(format!("reflex-run-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("run.toml");
        std::fs::write(
            &file,
            "steps = 7000\n[dqn]\ngamma = 0.95\nbatch_size = 32\n",
        )
        .unwrap();
        let sets = vec![
            "dqn.gamma=0.9".to_string(),
            "dqn.net.hidden=[64, 64]".to_string(),
        ];
        let mut flags = named("CartPole-v1", "dqn");
        flags.insert("seed".into(), toml::Value::Integer(3));
        let c = resolve(Some(&file), &sets, &flags).unwrap();
        assert_eq!(c.steps, 7000, "file over preset");
        assert_eq!(c.dqn.batch_size, 32, "file over preset");
        assert_eq!(c.dqn.gamma, 0.9, "--set over file");
        assert_eq!(c.dqn.net.hidden, vec![64, 64]);
        assert!(c.dqn.net.dueling, "untouched preset value");
        assert_eq!(c.dqn.learning_rate, 2.3e-3, "preset value");
        assert_eq!(c.seed, 3);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn unknown_keys_and_names_are_refused() {
        let none = toml::Table::new();
        let err = resolve(None, &["dqn.gama=0.9".into()], &none).unwrap_err();
        assert!(err.to_string().contains("gama"), "{err}");
        let err = resolve(None, &[], &named("cartpole", "ppo")).unwrap_err();
        assert!(err.to_string().contains("unknown algo `ppo`"), "{err}");
        let err = resolve(None, &[], &named("cartpoel", "dqn")).unwrap_err();
        assert!(err.to_string().contains("unknown env"), "{err}");
        assert!(resolve(None, &["nonsense".into()], &none).is_err());
        let err = resolve(Some(Path::new("/nonexistent.toml")), &[], &none).unwrap_err();
        assert!(
            err.to_string().contains("cannot read /nonexistent.toml"),
            "{err}"
        );
    }

    /// Values that used to panic at the first update, train on nothing or
    /// write NaN are refused up front, each by its key, all at once.
    #[test]
    fn out_of_range_values_are_refused_by_key() {
        let refused = |env: &str, algo: &str, sets: &[&str]| -> String {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            resolve(None, &sets, &named(env, algo))
                .unwrap_err()
                .to_string()
        };
        let err = refused(
            "cartpole",
            "dqn",
            &[
                "dqn.net.hidden=[64,0]",
                "dqn.train_freq=0",
                "dqn.learning_rate=nan",
                "dqn.tau=0",
                "dqn.per_beta0=-5",
                "dqn.batch_size=0",
                "dqn.target_update_interval=0",
            ],
        );
        for key in [
            "dqn.net.hidden = [64, 0]",
            "dqn.train_freq = 0",
            "dqn.learning_rate = NaN",
            "dqn.tau = 0",
            "dqn.per_beta0 = -5",
            "dqn.batch_size = 0",
            "dqn.target_update_interval = 0",
        ] {
            assert!(err.contains(key), "{key} missing from: {err}");
        }
        let err = refused(
            "pendulum",
            "td3",
            &[
                "td3.target_noise_clip=-0.5",
                "td3.noise.ou_dt=-0.01",
                "td3.actor_learning_rate=-1",
                "td3.max_grad_norm=0",
            ],
        );
        for key in [
            "td3.target_noise_clip",
            "td3.noise.ou_dt",
            "td3.actor_learning_rate",
            "td3.max_grad_norm",
        ] {
            assert!(err.contains(key), "{key} missing from: {err}");
        }
        assert!(refused("cartpole-masked", "drqn", &["drqn.buffer_size=1"])
            .contains("must hold one window"));
        assert!(refused("pendulum-masked", "td3", &["td3.buffer_size=3"])
            .contains("must hold one window"));
        assert!(refused("cartpole", "dqn", &["eval_episodes=0"]).contains("eval_episodes"));
        // A section the algorithm does not use is not judged.
        resolve(None, &["td3.tau=5".into()], &named("cartpole", "dqn")).unwrap();
    }

    #[test]
    fn every_shipped_preset_resolves() {
        for (name, _) in PRESETS {
            let (env, algo) = name.rsplit_once('-').unwrap();
            let c = resolve(None, &[], &named(env, algo)).unwrap();
            assert_eq!(c.env, env, "{name}");
        }
        let acrobot = resolve(None, &[], &named("Acrobot-v1", "dqn")).unwrap();
        assert_eq!((acrobot.steps, acrobot.dqn.batch_size), (100_000, 128));
        // A POMDP variant without its own preset takes its base env's.
        let masked = resolve(None, &[], &named("cartpole-masked", "dqn")).unwrap();
        let plain = resolve(None, &[], &named("cartpole", "dqn")).unwrap();
        assert_eq!((masked.steps, &masked.dqn), (plain.steps, &plain.dqn));
        assert_ne!(preset("cartpole-masked", "drqn"), None);
        assert_eq!(preset("cartpole", "drqn"), None);
        // The masked Pendulum presets turn the LSTM on; the unmasked ones do not.
        for algo in ["td3", "naf"] {
            assert!(
                resolve(None, &[], &named("pendulum-masked", algo))
                    .unwrap()
                    .recurrent
            );
            assert!(
                !resolve(None, &[], &named("pendulum", algo))
                    .unwrap()
                    .recurrent
            );
        }
    }

    #[test]
    fn recurrent_is_refused_where_it_is_not_built() {
        let mut flags = named("cartpole", "dqn");
        flags.insert("recurrent".into(), true.into());
        let err = resolve(None, &[], &flags).unwrap_err().to_string();
        assert!(err.contains("--algo drqn"), "{err}");
        let err = resolve(
            None,
            &["lstm.hiden=8".into()],
            &named("pendulum-masked", "td3"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("hiden") && err.contains("lstm"), "{err}");
    }

    #[test]
    fn resolved_config_round_trips_through_toml() {
        let c = resolve(None, &[], &toml::Table::new()).unwrap();
        let text = toml::to_string(&c).unwrap();
        let back: RunConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
    }
}
