//! A checkpoint restores the learner exactly, a torn one is never picked, and a
//! run stopped at a checkpoint resumes to its full length.

use candle_core::{Device, Tensor};
use reflex_sim::make;
use reflex_trainer::algo::dqn::{train, Dqn, DqnConfig, Observer, Progress, Replay};
use reflex_trainer::checkpoint;
use reflex_trainer::TrainError;

/// Saves a checkpoint at every periodic call and stops the run at `stop_at`,
/// like a `kill -9` right after the checkpoint.
struct SaveAndStop {
    dir: std::path::PathBuf,
    stop_at: u64,
}

impl Observer for SaveAndStop {
    fn episode(&mut self, _: &Progress, _: f64, _: u32) {}

    fn periodic(&mut self, progress: &Progress, dqn: &Dqn) -> Result<(), TrainError> {
        checkpoint::save(&self.dir, dqn)?;
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

fn weights(dqn: &Dqn) -> Vec<Vec<f32>> {
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut out: Vec<Vec<f32>> = dqn
        .online
        .vars()
        .iter()
        .map(|v| flat(v.as_tensor()))
        .collect();
    out.extend(dqn.target.vars().iter().map(|v| flat(v.as_tensor())));
    out
}

#[test]
fn checkpoint_restores_the_learner_and_the_run_resumes() {
    reflex_trainer::set_compute_threads(1);
    for prioritized in [false, true] {
        let dir =
            std::env::temp_dir().join(format!("reflex-ckpt-{}-{prioritized}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let device = Device::Cpu;
        let mut dqn = Dqn::new(small_config(prioritized), 4, 2, 7, &device).unwrap();
        let mut env = make("cartpole").unwrap();
        let mut stopper = SaveAndStop {
            dir: dir.clone(),
            stop_at: 1_500,
        };
        let err = train(&mut dqn, env.as_mut(), 3_000, 7, 500, &mut stopper).unwrap_err();
        assert!(err.to_string().contains("simulated kill"));
        assert_eq!(dqn.steps_done, 1_500);

        // Three checkpoints were written (500, 1000, 1500); two are kept.
        let kept = checkpoint::list(&dir).unwrap();
        assert_eq!(kept.len(), checkpoint::KEEP);
        let latest = checkpoint::latest(&dir).unwrap().unwrap();
        assert!(latest.ends_with("step-0000001500"));
        // A torn checkpoint (as left by a kill during writing) is never picked.
        std::fs::create_dir_all(dir.join("checkpoints/step-0000009999.partial")).unwrap();
        assert_eq!(checkpoint::latest(&dir).unwrap().unwrap(), latest);

        let mut restored = Dqn::new(small_config(prioritized), 4, 2, 99, &device).unwrap();
        assert_ne!(weights(&restored), weights(&dqn));
        checkpoint::load(&latest, &mut restored, &device).unwrap();
        assert_eq!(weights(&restored), weights(&dqn));
        assert_eq!(restored.steps_done, dqn.steps_done);
        assert_eq!(restored.optimizer.steps(), dqn.optimizer.steps());
        assert!(restored.optimizer.steps() > 0);
        assert_eq!(restored.replay.len(), dqn.replay.len());
        assert_eq!(
            matches!(restored.replay, Replay::Prioritized(_)),
            prioritized,
            "the replay kind survives"
        );
        // The next update is the same on both: same sample, same Adam state.
        let a = dqn.update(0.5).unwrap();
        let b = restored.update(0.5).unwrap();
        assert_eq!(a, b);
        assert_eq!(weights(&restored), weights(&dqn));
        assert_eq!(dqn.act_rng.next_u64(), restored.act_rng.next_u64());

        // The restored learner trains on to the full length.
        struct Quiet;
        impl Observer for Quiet {
            fn episode(&mut self, _: &Progress, _: f64, _: u32) {}
        }
        train(&mut restored, env.as_mut(), 3_000, 7, 0, &mut Quiet).unwrap();
        assert_eq!(restored.steps_done, 3_000);
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn damaged_checkpoints_are_refused_with_the_file_named() {
    reflex_trainer::set_compute_threads(1);
    let dir = std::env::temp_dir().join(format!("reflex-ckpt-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let device = Device::Cpu;
    let dqn = Dqn::new(small_config(false), 4, 2, 1, &device).unwrap();
    let saved = checkpoint::save(&dir, &dqn).unwrap();

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
