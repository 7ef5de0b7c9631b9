//! A population of DRQN learners trained in lockstep: P seeds of one config
//! whose recurrent Q-networks (LSTM and head) are [stacked](crate::nn::stack),
//! so each gradient step of all P is one unroll of the stacked LSTM (one
//! batched product and one fused cell per time step for every member), one
//! backward pass and one Adam step, and each acting step one LSTM step for P
//! observations.
//!
//! Member `k` is exactly the DRQN learner its seed makes: its own env,
//! sequence replay, acting state, exploration and replay generators, its own
//! gradient-norm clip, and the same schedule. Only the arithmetic is shared.
//! On the CPU kernels a member's arithmetic is its single run's, so its run
//! is the same run; elsewhere it matches up to float rounding (the tests
//! hold both).
//!
//! What it is for: the recurrent update is a long chain of small steps (two
//! launches each way per time step on CUDA, whatever the batch), so on a GPU
//! P members cost about the launches of one; on a CPU the arithmetic is the
//! cost and a population saves little.
//!
//! Updates start once every member can sample a window (with
//! `learning_starts` past the first episode, the step each would start alone).

use candle_core::{Device, Shape, Tensor};
use reflex_msgs::Action;

use super::drqn::{drqn_loss, Drqn, DrqnConfig};
use super::population::{
    member_stats, pack_members, stack_optimizer, write_member_optimizer, Population,
};
use super::{Agent, UpdateStats};
use crate::nn::stack::Stacked;
use crate::nn::RecurrentQNetwork;
use crate::optim::Adam;
use crate::replay::{Replay, WindowSpec};
use crate::TrainError;

/// P DRQN learners with stacked networks (see the module docs).
pub struct DrqnPopulation {
    /// The members' own state: replay, acting state, generators, step count.
    /// Their networks and optimizers are stale while training runs;
    /// [`sync_members`](Self::sync_members) writes the population's into
    /// them (for evaluation, checkpoints and export).
    pub members: Vec<Drqn>,
    online: Stacked<RecurrentQNetwork>,
    target: Stacked<RecurrentQNetwork>,
    optimizer: Adam,
    config: DrqnConfig,
    device: Device,
    upload: Vec<f32>,
    /// Run updates as a captured CUDA graph (experimental, as [`Drqn`]'s;
    /// starts as `REFLEX_CUDA_GRAPH=1` says; CUDA with the fused kernels
    /// only).
    pub cuda_graph: bool,
    graph: Option<crate::gpu::graph::GraphedUpdate>,
}

impl DrqnPopulation {
    /// One member per seed, each initialized as `Drqn::new` would with that
    /// seed.
    pub fn new(
        config: DrqnConfig,
        obs_dim: usize,
        n_actions: usize,
        seeds: &[u64],
        device: &Device,
    ) -> Result<Self, TrainError> {
        if seeds.is_empty() {
            return Err(TrainError::Config(
                "a population needs at least one member".into(),
            ));
        }
        let (members, online, target, optimizer) = super::population::stack_members(
            seeds,
            |seed| Drqn::new(config.clone(), obs_dim, n_actions, seed, device),
            |m| &m.online,
            config.learning_rate,
        )?;
        Ok(Self {
            members,
            online,
            target,
            optimizer,
            config,
            device: device.clone(),
            upload: Vec::new(),
            cuda_graph: crate::gpu::graph::requested(),
            graph: None,
        })
    }

    /// Gradient updates each member has taken.
    pub fn updates(&self) -> u64 {
        self.optimizer.steps()
    }

    /// One gradient update of every member: each samples its own windows,
    /// the batches go up in one copy as `[P, batch, …]`, and one stacked
    /// unroll, one backward pass and one Adam step update all members; the
    /// stats (and PER's TD errors) come back in one copy.
    pub fn update(&mut self, beta: f64) -> Result<Vec<UpdateStats>, TrainError> {
        let mut shapes = Vec::new();
        for m in &mut self.members {
            shapes = m.sample_packed(beta)?;
        }
        let buffers: Vec<&[f32]> = self.members.iter().map(|m| m.packed()).collect();
        let shapes = pack_members(&buffers, &shapes, &mut self.upload);
        let window = self.members[0].window();
        let per = self.config.prioritized;
        if self.graphed() {
            return self.update_graphed(&shapes, window);
        }
        let all = Tensor::from_slice(&self.upload, self.upload.len(), &self.device)?;
        let (back, host_norms) = if crate::nn::fused::cpu_kernels(&self.device) {
            // On the CPU kernels the norms are host sums (f64) already.
            let parts = super::unpack(&all, &shapes)?;
            let (loss, q_mean, td_error) = drqn_loss(
                &self.online.net,
                &self.target.net,
                &self.config,
                window,
                &parts,
            )?;
            let grads = loss.sum_all()?.backward()?;
            let norms = self
                .optimizer
                .step_members(&grads, self.config.max_grad_norm)?;
            let mut pieces = vec![loss.detach(), q_mean];
            if per {
                pieces.push(td_error.flatten_all()?);
            }
            (Tensor::cat(&pieces, 0)?, Some(norms))
        } else {
            let back = device_body(
                (&self.online.net, &self.target.net),
                &self.config,
                window,
                &mut self.optimizer,
                (&all, &shapes),
                None,
            )?;
            (back, None)
        };
        self.finish(&back.to_vec1::<f32>()?, host_norms)
    }

    /// Each member's stats (and PER priorities) from an update's read-back
    /// (see [`member_stats`]).
    fn finish(
        &mut self,
        back: &[f32],
        host_norms: Option<Vec<f64>>,
    ) -> Result<Vec<UpdateStats>, TrainError> {
        let steps = self.config.batch_size * self.config.seq_len;
        let per = self.config.prioritized;
        let members = &mut self.members;
        member_stats(back, members.len(), steps, per, host_norms, |k, td| {
            members[k].set_priorities(td)
        })
    }

    /// Whether updates run as a captured CUDA graph: asked for
    /// ([`cuda_graph`](Self::cuda_graph)) on a CUDA device with the fused
    /// kernels.
    fn graphed(&self) -> bool {
        self.cuda_graph && crate::gpu::kernels::cuda_kernels(&self.device)
    }

    /// The update as a replayed CUDA graph, as [`Drqn`]'s: warm-up updates
    /// run [`device_body`] eagerly, the next captures it, the rest replay it;
    /// a failed capture turns the graph off with a warning.
    fn update_graphed(
        &mut self,
        shapes: &[Shape],
        window: WindowSpec,
    ) -> Result<Vec<UpdateStats>, TrainError> {
        let dev = self.device.clone();
        let (n, generation) = (self.upload.len(), self.optimizer.generation());
        let g = crate::gpu::graph::prepare(&mut self.graph, n, generation, &dev)?;
        let nets = (&self.online.net, &self.target.net);
        let config = &self.config;
        let optimizer = &mut self.optimizer;
        let hyper = optimizer.next_hyper();
        let ran = g.run(&dev, &self.upload, &hyper, |input, hyper| {
            let back = device_body(
                nets,
                config,
                window,
                optimizer,
                (input, shapes),
                Some(hyper),
            )
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            Ok(vec![back])
        })?;
        let back = ran.settle(&mut self.cuda_graph, || self.graph = None);
        self.finish(&back, None)
    }

    /// Whether updates now replay a captured CUDA graph.
    pub fn graph_captured(&self) -> bool {
        self.graph.as_ref().is_some_and(|g| g.captured())
    }

    /// Moves every member's target network toward its online one.
    pub fn update_target(&self) -> Result<(), TrainError> {
        if self.config.tau >= 1.0 {
            crate::nn::copy_params(&self.target.net, &self.online.net)?;
        } else {
            crate::nn::polyak(&self.target.net, &self.online.net, self.config.tau)?;
        }
        Ok(())
    }
}

/// A population update's device work on the packed batch `input` (with its
/// parts' `shapes`): every member's loss, backward, Adam with each member's
/// clip computed on the device (`hyper`: a CUDA graph's step-size buffer).
/// Returns one tensor to read back: `[loss ×P, mean Q ×P, norm ×P, TD
/// errors ×P·B·L with PER]`.
fn device_body(
    (online, target): (&RecurrentQNetwork, &RecurrentQNetwork),
    config: &DrqnConfig,
    window: WindowSpec,
    optimizer: &mut Adam,
    (input, shapes): (&Tensor, &[Shape]),
    hyper: Option<&Tensor>,
) -> Result<Tensor, TrainError> {
    let parts = super::unpack(input, shapes)?;
    let (loss, q_mean, td_error) = drqn_loss(online, target, config, window, &parts)?;
    let grads = loss.sum_all()?.backward()?;
    let norms = optimizer.step_members_on_device(&grads, config.max_grad_norm, hyper)?;
    let mut pieces = vec![loss.detach(), q_mean, norms];
    if config.prioritized {
        pieces.push(td_error.flatten_all()?);
    }
    Ok(Tensor::cat(&pieces, 0)?)
}

impl super::Scheduled for DrqnPopulation {
    type Stats = Vec<UpdateStats>;

    fn rounds(&self) -> super::Rounds {
        self.config.rounds()
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.optimizer.lr = lr;
    }

    /// Whether every member can sample a window.
    fn has_data(&self) -> bool {
        self.members
            .iter()
            .all(|m| matches!(&m.replay, Replay::Sequence(r) if r.can_sample()))
    }

    fn update_once(&mut self, beta: f64) -> Result<Vec<UpdateStats>, TrainError> {
        self.update(beta)
    }

    fn move_target(&self) -> Result<(), TrainError> {
        self.update_target()
    }
}

impl Population for DrqnPopulation {
    fn len(&self) -> usize {
        self.members.len()
    }

    fn obs_dim(&self) -> usize {
        self.online.net.obs_dim()
    }

    fn member(&mut self, k: usize) -> &mut dyn Agent {
        &mut self.members[k]
    }

    /// ε-greedy actions for every member (`obs`: P rows, member order), as
    /// each member's [`Agent::explore`] chooses them: one stacked LSTM step
    /// for all P, each member's ε draws from its own generator.
    fn explore_all(
        &mut self,
        obs: &[f32],
        step: u64,
        total: u64,
    ) -> Result<Vec<Action>, TrainError> {
        let (p, d) = (self.members.len(), self.online.net.obs_dim());
        if obs.len() != p * d {
            return Err(TrainError::Config(format!(
                "population of {p}: {} observation values, expected {p} × {d}",
                obs.len()
            )));
        }
        let width = d + self.online.net.n_actions();
        let mut x = Vec::with_capacity(p * width);
        let (mut hs, mut cs) = (Vec::with_capacity(p), Vec::with_capacity(p));
        for (k, m) in self.members.iter_mut().enumerate() {
            let (row, h, c) = m.begin_explore(&obs[k * d..(k + 1) * d])?;
            x.extend(row);
            hs.push(h);
            cs.push(c);
        }
        let x = Tensor::from_vec(x, (p, 1, width), &self.device)?;
        let (h, c) = (Tensor::stack(&hs, 0)?, Tensor::stack(&cs, 0)?);
        let (q, h, c) = self.online.net.step(&x, &h, &c)?;
        // One read for every member's Q values and new state.
        let values = super::drqn::read_step(&q, &h, &c)?;
        let (n, hd) = (self.online.net.n_actions(), self.online.net.hidden());
        let (q, state) = values.split_at(p * n);
        let (hs, cs) = state.split_at(p * hd);
        let mut actions = Vec::with_capacity(p);
        let mut host = Vec::with_capacity(2 * hd);
        for (k, m) in self.members.iter_mut().enumerate() {
            host.clear();
            host.extend_from_slice(&hs[k * hd..(k + 1) * hd]);
            host.extend_from_slice(&cs[k * hd..(k + 1) * hd]);
            let carried = (h.get(k)?, c.get(k)?, host.as_slice());
            let action = m.end_explore(&q[k * n..(k + 1) * n], carried, step, total);
            actions.push(Action::Discrete(action));
        }
        Ok(actions)
    }

    /// [`Drqn`]'s schedule after env step `step`, for all members at once.
    fn train_after(
        &mut self,
        step: u64,
        total: u64,
    ) -> Result<Option<Vec<UpdateStats>>, TrainError> {
        super::scheduled(self, step, total)
    }

    /// Writes the population's networks and optimizer state into each
    /// member's own, so a member is a complete DRQN learner again.
    fn sync_members(&mut self) -> Result<(), TrainError> {
        for (k, m) in self.members.iter_mut().enumerate() {
            self.online.write_member(k, &m.online)?;
            self.target.write_member(k, &m.target)?;
            write_member_optimizer(&self.online, &self.optimizer, k, &mut m.optimizer)?;
        }
        Ok(())
    }

    /// Rebuilds the stacked networks and optimizer from the members' own
    /// (after each loaded its checkpoint); they must agree on their step count.
    fn restack(&mut self) -> Result<(), TrainError> {
        let onlines: Vec<_> = self.members.iter().map(|m| m.online.clone()).collect();
        let targets: Vec<_> = self.members.iter().map(|m| m.target.clone()).collect();
        self.online = Stacked::new(&onlines)?;
        self.target = Stacked::new(&targets)?;
        let optimizers: Vec<&Adam> = self.members.iter().map(|m| &m.optimizer).collect();
        self.optimizer = stack_optimizer(&self.online, &optimizers, self.optimizer.lr)?;
        Ok(())
    }

    fn steps_done(&self) -> u64 {
        self.members[0].steps_done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algo::{Observer, Progress};
    use crate::nn::{NetConfig, Params};
    use crate::schedule::Schedule;
    use reflex_sim::Env;

    struct Quiet;
    impl Observer for Quiet {
        fn episode(&mut self, _: &Progress, _: f64, _: u32) {}
    }

    /// A small DRQN with every switch that changes the update on: stored
    /// state, burn-in, n-step, PER, Double, Huber, dueling, a clip that bites.
    fn config() -> DrqnConfig {
        DrqnConfig {
            batch_size: 4,
            seq_len: 6,
            burn_in: 3,
            n_step: 2,
            lstm_hidden: 16,
            prioritized: true,
            max_grad_norm: Some(0.5),
            learning_starts: u64::MAX,
            exploration: Schedule::linear(1.0, 1.0, 1.0),
            net: NetConfig {
                hidden: vec![16],
                dueling: true,
                ..NetConfig::default()
            },
            ..DrqnConfig::default()
        }
    }

    fn close(a: f64, b: f64, tol: f64, what: &str) {
        assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{what}: {a} vs {b}");
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// Each member's updates (stats, weights, Adam moments, PER priorities
    /// as the next sample sees them) are its single learner's, to `tol`.
    fn updates_match(tol: f64) {
        let seeds = [3u64, 4, 5];
        let dev = Device::Cpu;
        let mut pop = DrqnPopulation::new(config(), 2, 2, &seeds, &dev).unwrap();
        let mut singles: Vec<Drqn> = seeds
            .iter()
            .map(|&s| Drqn::new(config(), 2, 2, s, &dev).unwrap())
            .collect();
        // Replay holds the acting state, so it is filled by acting (ε = 1).
        for (k, (single, &seed)) in singles.iter_mut().zip(&seeds).enumerate() {
            for agent in [single, &mut pop.members[k]] {
                let mut env = reflex_sim::make("cartpole-masked").unwrap();
                crate::algo::train(agent, env.as_mut(), 300, seed, 0, &mut Quiet).unwrap();
            }
        }
        let mut clipped = vec![false; seeds.len()];
        for round in 0..5 {
            let stats = pop.update(0.5).unwrap();
            for (k, single) in singles.iter_mut().enumerate() {
                let alone = single.update(0.5).unwrap();
                let what = format!("round {round}, member {k}");
                close(
                    stats[k].loss.into(),
                    alone.loss.into(),
                    tol,
                    &format!("{what}: loss"),
                );
                close(
                    stats[k].q_mean.into(),
                    alone.q_mean.into(),
                    tol,
                    &format!("{what}: Q"),
                );
                close(
                    stats[k].grad_norm,
                    alone.grad_norm,
                    tol,
                    &format!("{what}: norm"),
                );
                clipped[k] |= alone.grad_norm > 0.5;
            }
            if round == 2 {
                pop.update_target().unwrap();
                for single in &singles {
                    single.update_target().unwrap();
                }
            }
        }
        assert!(clipped.iter().any(|&c| c), "the clip never bit");
        pop.sync_members().unwrap();
        for (k, single) in singles.iter_mut().enumerate() {
            let member = &mut pop.members[k];
            super::super::population::assert_learner_matches(
                k,
                (&member.online, &member.target, &member.optimizer),
                (&single.online, &single.target, &single.optimizer),
                tol,
            );
            // Same priorities and generator: the next batch is the same windows.
            member.sample_packed(0.5).unwrap();
            single.sample_packed(0.5).unwrap();
            assert_eq!(member.packed(), single.packed(), "member {k}: next batch");
        }
    }

    #[test]
    fn a_population_update_is_each_members_own_update() {
        updates_match(1e-5);
    }

    /// The same on candle's primitives (CUDA's path without our kernels:
    /// the unfused stacked cell, norms and clip on the device).
    #[test]
    fn a_population_update_on_primitives_is_each_members_own_update() {
        crate::nn::fused::portable(|| updates_match(1e-4));
    }

    /// Episode-return recorder.
    #[derive(Default)]
    struct Returns(Vec<(u64, f64)>);

    impl Observer for Returns {
        fn episode(&mut self, progress: &Progress, episode_return: f64, _length: u32) {
            self.0.push((progress.step, episode_return));
        }
    }

    /// The training loop gives each member the episodes its seed's single
    /// run has (acting through the stacked LSTM step included), and each
    /// member ends as a whole learner whose greedy policy is that run's.
    #[test]
    fn population_training_reproduces_each_seeds_run() {
        let config = DrqnConfig {
            learning_starts: 300,
            exploration: Schedule::linear(1.0, 0.05, 0.5),
            target_update_interval: 100,
            ..config()
        };
        let (steps, seeds) = (900u64, [0u64, 7]);
        let dev = Device::Cpu;
        let mut envs: Vec<Box<dyn Env>> = seeds
            .iter()
            .map(|_| reflex_sim::make("cartpole-masked").unwrap())
            .collect();
        let mut pop = DrqnPopulation::new(config.clone(), 2, 2, &seeds, &dev).unwrap();
        let mut recorded: Vec<Returns> = seeds.iter().map(|_| Returns::default()).collect();
        {
            let mut observers: Vec<&mut dyn Observer> = recorded
                .iter_mut()
                .map(|r| r as &mut dyn Observer)
                .collect();
            super::super::population::train_population(
                &mut pop,
                &mut envs,
                steps,
                &seeds,
                300,
                &mut observers,
            )
            .unwrap();
        }
        assert_eq!(pop.updates(), (steps - 300) / 4);
        for (k, &seed) in seeds.iter().enumerate() {
            let mut env = reflex_sim::make("cartpole-masked").unwrap();
            let mut single = Drqn::new(config.clone(), 2, 2, seed, &dev).unwrap();
            let mut alone = Returns::default();
            super::super::train(&mut single, env.as_mut(), steps, seed, 0, &mut alone).unwrap();
            assert!(alone.0.len() > 10, "{} episodes", alone.0.len());
            assert_eq!(recorded[k].0, alone.0, "member {k} (seed {seed}): episodes");
            let mut eval_env = reflex_sim::make("cartpole-masked").unwrap();
            let mine = super::super::evaluate(&pop.members[k], eval_env.as_mut(), 3, 99).unwrap();
            let theirs = super::super::evaluate(&single, eval_env.as_mut(), 3, 99).unwrap();
            assert_eq!(mine, theirs, "member {k}: greedy evaluation");
            // The stored acting states fed the updates: the weights are the run's.
            for (a, b) in pop.members[k]
                .online
                .vars()
                .iter()
                .zip(single.online.vars())
            {
                assert_eq!(
                    values(a.as_tensor()),
                    values(b.as_tensor()),
                    "member {k}: weights"
                );
            }
        }
        assert_ne!(recorded[0].0, recorded[1].0);
    }

    /// Members checkpointed, loaded into a fresh population and restacked
    /// continue exactly as the original population does.
    #[test]
    fn a_population_restacked_from_member_checkpoints_continues_exactly() {
        let seeds = [5u64, 6];
        let dev = Device::Cpu;
        let mut original = DrqnPopulation::new(config(), 2, 2, &seeds, &dev).unwrap();
        for (k, member) in original.members.iter_mut().enumerate() {
            let mut env = reflex_sim::make("cartpole-masked").unwrap();
            crate::algo::train(member, env.as_mut(), 200, 40 + k as u64, 0, &mut Quiet).unwrap();
        }
        for _ in 0..3 {
            original.update(0.5).unwrap();
        }
        original.sync_members().unwrap();
        let root = std::env::temp_dir().join(format!("reflex-drqn-restack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mut resumed = DrqnPopulation::new(config(), 2, 2, &seeds, &dev).unwrap();
        for k in 0..seeds.len() {
            let dir = root.join(format!("member-{k}"));
            let saved = crate::checkpoint::save(&dir, &mut original.members[k]).unwrap();
            crate::checkpoint::load(&saved, &mut resumed.members[k], &dev).unwrap();
        }
        resumed.restack().unwrap();
        assert_eq!(resumed.updates(), 3);
        assert_eq!(Population::steps_done(&resumed), 200);
        for round in 0..3 {
            let (a, b) = (original.update(0.5).unwrap(), resumed.update(0.5).unwrap());
            assert_eq!(a, b, "update {round} after the resume");
        }
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn bad_shapes_are_refused() {
        let dev = Device::Cpu;
        assert!(DrqnPopulation::new(config(), 2, 2, &[], &dev).is_err());
        let mut pop = DrqnPopulation::new(config(), 2, 2, &[1, 2], &dev).unwrap();
        let err = pop.explore_all(&[0.0; 3], 1, 10).unwrap_err().to_string();
        assert!(err.contains("expected 2 × 2"), "{err}");
    }
}
