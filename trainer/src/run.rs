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
    match (config.algo.as_str(), discrete) {
        ("dqn" | "drqn", true) | ("ddpg" | "td3" | "naf", false) => Ok(config),
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
