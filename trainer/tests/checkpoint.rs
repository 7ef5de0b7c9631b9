//! A checkpoint restores the learner exactly, a torn one is never picked, and a
//! run stopped at a checkpoint resumes to its full length.

use candle_core::{Device, Tensor};
use reflex_sim::make;
use reflex_trainer::algo::dqn::{Dqn, DqnConfig};
use reflex_trainer::algo::{build, train, Agent, Observer, Progress};
use reflex_trainer::checkpoint;
use reflex_trainer::replay::Replay;
use reflex_trainer::run::RunConfig;
use reflex_trainer::TrainError;

/// Saves a checkpoint at every periodic call and stops the run at `stop_at`,
/// like a `kill -9` right after the checkpoint.
struct SaveAndStop {
    dir: std::path::PathBuf,
    stop_at: u64,
}

impl Observer for SaveAndStop {
    fn episode(&mut self, _: &Progress, _: f64, _: u32) {}

    fn periodic(&mut self, progress: &Progress, agent: &mut dyn Agent) -> Result<(), TrainError> {
        checkpoint::save(&self.dir, agent)?;
        if progress.step >= self.stop_at {
            return Err(TrainError::Config("simulated kill".into()));
        }
        Ok(())
    }
}

fn small_config(prioritized: bool) -> DqnConfig {
    let mut config = DqnConfig {
        prioritized,
        learning_starts: 200,
        train_freq: 64,
        gradient_steps: 8,
        ..DqnConfig::default()
    };
    config.net.hidden = vec![32, 32];
    config
}

/// The run configurations under test: DQN with uniform and prioritized replay
/// on CartPole; DRQN with prioritized sequence replay, 3-step returns and
/// stored state on masked CartPole; TD3 with observation normalization and 3-step returns, and NAF
/// with prioritized replay, on Pendulum; all with small networks.
fn cases() -> Vec<(&'static str, RunConfig)> {
    let dqn = RunConfig {
        dqn: small_config(false),
        ..RunConfig::default()
    };
    let dqn_per = RunConfig {
        dqn: small_config(true),
        ..RunConfig::default()
    };
    let mut td3 = RunConfig {
        env: "pendulum".into(),
        algo: "td3".into(),
        ..RunConfig::default()
    };
    td3.td3.learning_starts = 200;
    td3.td3.obs_norm = true;
    td3.td3.n_step = 3;
    td3.td3.batch_size = 32;
    td3.td3.actor.hidden = vec![32];
    td3.td3.critic.hidden = vec![32];
    let mut naf = RunConfig {
        env: "pendulum".into(),
        algo: "naf".into(),
        ..RunConfig::default()
    };
    naf.naf.learning_starts = 200;
    naf.naf.prioritized = true;
    naf.naf.batch_size = 32;
    naf.naf.net.hidden = vec![32];
    let mut drqn = RunConfig {
        env: "cartpole-masked".into(),
        algo: "drqn".into(),
        ..RunConfig::default()
    };
    drqn.drqn.learning_starts = 200;
    drqn.drqn.prioritized = true;
    drqn.drqn.n_step = 3;
    drqn.drqn.batch_size = 8;
    drqn.drqn.seq_len = 8;
    drqn.drqn.burn_in = 4;
    drqn.drqn.lstm_hidden = 16;
    drqn.drqn.net.hidden = vec![16];
    // Recurrent TD3: sequence PER with continuous actions, stored actor state,
    // normalized observations.
    let mut rtd3 = RunConfig {
        env: "pendulum-masked".into(),
        algo: "td3".into(),
        recurrent: true,
        ..RunConfig::default()
    };
    rtd3.td3.learning_starts = 200;
    rtd3.td3.prioritized = true;
    rtd3.td3.obs_norm = true;
    rtd3.td3.n_step = 2;
    rtd3.td3.batch_size = 8;
    rtd3.td3.actor.hidden = vec![16];
    rtd3.td3.critic.hidden = vec![16];
    rtd3.lstm.hidden = 8;
    rtd3.lstm.seq_len = 6;
    rtd3.lstm.burn_in = 3;
    let mut rnaf = RunConfig {
        env: "pendulum-masked".into(),
        algo: "naf".into(),
        recurrent: true,
        ..RunConfig::default()
    };
    rnaf.naf.learning_starts = 200;
    rnaf.naf.batch_size = 8;
    rnaf.naf.net.hidden = vec![16];
    rnaf.lstm.hidden = 8;
    rnaf.lstm.seq_len = 6;
    rnaf.lstm.burn_in = 0;
    rnaf.lstm.stored_state = false;
    vec![
        ("dqn", dqn),
        ("dqn-per", dqn_per),
        ("drqn-seq-per", drqn),
        ("recurrent-td3-seq-per", rtd3),
        ("recurrent-naf-seq-zero-state", rnaf),
        ("td3", td3),
        ("naf-per", naf),
    ]
}

fn weights(agent: &dyn Agent) -> Vec<Vec<f32>> {
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    agent
        .networks()
        .iter()
        .flat_map(|(_, net)| net.vars())
        .map(|v| flat(v.as_tensor()))
        .collect()
}

#[test]
fn checkpoint_restores_the_learner_and_the_run_resumes() {
    reflex_trainer::set_compute_threads(1);
    for (name, config) in cases() {
        let dir = std::env::temp_dir().join(format!("reflex-ckpt-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let device = Device::Cpu;
        let mut env = make(&config.env).unwrap();
        let mut agent = build(&config, env.as_ref(), &device).unwrap();
        let mut stopper = SaveAndStop {
            dir: dir.clone(),
            stop_at: 1_500,
        };
        let err = train(agent.as_mut(), env.as_mut(), 3_000, 7, 500, &mut stopper).unwrap_err();
        assert!(err.to_string().contains("simulated kill"));
        assert_eq!(agent.steps_done(), 1_500);

        // Three checkpoints were written (500, 1000, 1500); two are kept.
        let kept = checkpoint::list(&dir).unwrap();
        assert_eq!(kept.len(), checkpoint::KEEP);
        let latest = checkpoint::latest(&dir).unwrap().unwrap();
        assert!(latest.ends_with("step-0000001500"));
        // A torn checkpoint (as left by a kill during writing) is never picked.
        std::fs::create_dir_all(dir.join("checkpoints/step-0000009999.partial")).unwrap();
        assert_eq!(checkpoint::latest(&dir).unwrap().unwrap(), latest);

        let other_seed = RunConfig {
            seed: 99,
            ..config.clone()
        };
        let mut restored = build(&other_seed, env.as_ref(), &device).unwrap();
        assert_ne!(
            weights(restored.as_ref()),
            weights(agent.as_ref()),
            "{name}"
        );
        checkpoint::load(&latest, restored.as_mut(), &device).unwrap();
        assert_eq!(
            weights(restored.as_ref()),
            weights(agent.as_ref()),
            "{name}"
        );
        assert_eq!(restored.steps_done(), agent.steps_done());
        assert_eq!(restored.updates(), agent.updates());
        assert!(restored.updates() > 0, "{name}");
        assert_eq!(restored.replay().len(), agent.replay().len());
        assert_eq!(
            matches!(restored.replay(), Replay::Prioritized(_)),
            name.ends_with("per") && !name.contains("seq"),
            "the replay kind survives"
        );
        assert_eq!(
            matches!(restored.replay(), Replay::Sequence(_)),
            name.contains("seq"),
            "the replay kind survives"
        );
        assert_eq!(
            restored.obs_norm().cloned(),
            agent.obs_norm().cloned(),
            "{name}: observation statistics"
        );
        if let Some(norm) = agent.obs_norm() {
            assert_eq!(
                norm.count, 1_500,
                "{name}: every step updates the statistics"
            );
        }
        // The next round of updates is the same on both: same samples, same Adam
        // state, same smoothing noise.
        let a = agent.train_after(1_536, 3_000).unwrap();
        let b = restored.train_after(1_536, 3_000).unwrap();
        assert!(a.is_some(), "{name}: updates were due");
        assert_eq!(a, b, "{name}");
        assert_eq!(
            weights(restored.as_ref()),
            weights(agent.as_ref()),
            "{name}"
        );
        assert_eq!(agent.rngs().0.next_u64(), restored.rngs().0.next_u64());

        // The restored learner trains on to the full length.
        struct Quiet;
        impl Observer for Quiet {
            fn episode(&mut self, _: &Progress, _: f64, _: u32) {}
        }
        train(restored.as_mut(), env.as_mut(), 3_000, 7, 0, &mut Quiet).unwrap();
        assert_eq!(restored.steps_done(), 3_000);
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn damaged_checkpoints_are_refused_with_the_file_named() {
    reflex_trainer::set_compute_threads(1);
    let dir = std::env::temp_dir().join(format!("reflex-ckpt-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let device = Device::Cpu;
    let mut dqn = Dqn::new(small_config(false), 4, 2, 1, &device).unwrap();
    let saved = checkpoint::save(&dir, &mut dqn).unwrap();

    // A network of another shape does not load.
    let mut config = small_config(false);
    config.net.hidden = vec![16];
    let mut other = Dqn::new(config, 4, 2, 1, &device).unwrap();
    let err = checkpoint::load(&saved, &mut other, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("weights.safetensors"), "{err}");

    // Truncated replay and corrupt state are named.
    let mut same = Dqn::new(small_config(false), 4, 2, 1, &device).unwrap();
    let replay = saved.join("replay.bin");
    let bytes = std::fs::read(&replay).unwrap();
    std::fs::write(&replay, &bytes[..bytes.len() / 2]).unwrap();
    let err = checkpoint::load(&saved, &mut same, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("replay.bin"), "{err}");
    std::fs::write(saved.join("state.json"), "{\"format\": 1}").unwrap();
    let err = checkpoint::load(&saved, &mut same, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("state.json"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// NaN weights are never written: a checkpoint of them (which a resume would
/// pick up and fail on again) is refused, naming the tensor, and nothing is left
/// in the checkpoints folder.
#[test]
fn nan_weights_are_not_checkpointed() {
    reflex_trainer::set_compute_threads(1);
    let dir = std::env::temp_dir().join(format!("reflex-ckpt-nan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let device = Device::Cpu;
    let mut dqn = Dqn::new(small_config(false), 4, 2, 1, &device).unwrap();
    let (prefix, net) = dqn.networks()[0];
    let (name, var) = net.named_vars().pop().unwrap();
    let mut values = var
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    values[0] = f32::NAN;
    var.set(&Tensor::from_vec(values, var.as_tensor().shape(), &device).unwrap())
        .unwrap();
    let err = checkpoint::save(&dir, &mut dqn).unwrap_err().to_string();
    assert!(err.contains(&format!("{prefix}.{name}")), "{err}");
    assert!(err.contains("NaN"), "{err}");
    let left = std::fs::read_dir(dir.join("checkpoints")).map_or(0, |d| d.count());
    assert_eq!(left, 0, "no checkpoint directory written");

    // One with NaN weights from elsewhere (an older build) is refused on load,
    // with what to do about it.
    let mut good = Dqn::new(small_config(false), 4, 2, 1, &device).unwrap();
    let saved = checkpoint::save(&dir, &mut good).unwrap();
    let path = saved.join("weights.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &device).unwrap();
    let key = format!("{prefix}.{name}");
    let t = &tensors[&key];
    let nan = Tensor::full(f32::NAN, t.shape(), &device).unwrap();
    tensors.insert(key.clone(), nan);
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let mut fresh = Dqn::new(small_config(false), 4, 2, 1, &device).unwrap();
    let err = checkpoint::load(&saved, &mut fresh, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&key) && err.contains("move it aside"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
