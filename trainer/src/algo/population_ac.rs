//! A population of DDPG or TD3 learners trained in lockstep, as
//! [`super::population`] does for DQN: P seeds whose actors, critics and
//! their targets are [stacked](crate::nn::stack), so each update of all P
//! is one critic pass (forward, backward, Adam) and, every `policy_delay`
//! updates, one actor pass and one Polyak step, and each acting step one
//! actor forward pass for P observations.
//!
//! Member `k` is exactly the learner [`Ddpg::new`] makes from its seed: its
//! own env, replay, n-step accumulator, exploration noise, observation
//! statistics, generators (TD3's target smoothing noise is drawn from its
//! replay generator, as a single learner draws it) and gradient-norm clips.
//! On the CPU kernels its run is its single run, bit for bit; elsewhere
//! they agree up to float rounding (the tests hold both).

use candle_core::{Device, Shape, Tensor, D};
use reflex_msgs::{Action, BoxSpace};

use super::continuous::ContinuousBatch;
use super::ddpg::{actor_loss, critic_loss, Critics, Ddpg, DdpgConfig};
use super::population::{
    member_stats, pack_members, stack_optimizer, write_member_optimizer, Population,
};
use super::{Agent, UpdateStats};
use crate::nn::stack::Stacked;
use crate::nn::{polyak, Actor, Params};
use crate::optim::Adam;
use crate::TrainError;

/// P DDPG or TD3 learners with stacked networks (see the module docs).
pub struct DdpgPopulation {
    /// The members' own state: replay, noise, generators, normalization,
    /// step count. Their networks and optimizers are stale while training
    /// runs; [`sync_members`](Population::sync_members) writes the
    /// population's into them.
    pub members: Vec<Ddpg>,
    nets: Nets,
    actor_optimizer: Adam,
    critic_optimizer: Adam,
    config: DdpgConfig,
    device: Device,
    upload: Vec<f32>,
    /// Run updates as captured CUDA graphs (experimental, as the DQN
    /// population's; starts as `REFLEX_CUDA_GRAPH=1` says; CUDA with the
    /// fused kernels only): one graph for critic-only updates, one for
    /// updates that also move the actor and the targets.
    pub cuda_graph: bool,
    graphs: crate::gpu::graph::ActorCriticGraphs,
}

/// The population's stacked networks.
struct Nets {
    actor: Stacked<Actor>,
    actor_target: Stacked<Actor>,
    critics: Stacked<Critics>,
    critic_targets: Stacked<Critics>,
}

impl Nets {
    /// The members' networks, stacked.
    fn of(members: &[Ddpg]) -> Result<Self, TrainError> {
        Ok(Self {
            actor: stack(members, |m| &m.actor)?,
            actor_target: stack(members, |m| &m.actor_target)?,
            critics: stack(members, |m| &m.critics)?,
            critic_targets: stack(members, |m| &m.critic_targets)?,
        })
    }
}

impl DdpgPopulation {
    /// One member per seed, each initialized as `Ddpg::new` would with that
    /// seed (`td3` names the algorithm; the config decides it).
    pub fn new(
        config: DdpgConfig,
        td3: bool,
        obs_dim: usize,
        bounds: &BoxSpace,
        seeds: &[u64],
        device: &Device,
    ) -> Result<Self, TrainError> {
        if seeds.is_empty() {
            return Err(TrainError::Config(
                "a population needs at least one member".into(),
            ));
        }
        let members = seeds
            .iter()
            .map(|&seed| Ddpg::new(config.clone(), td3, obs_dim, bounds, seed, device))
            .collect::<Result<Vec<_>, _>>()?;
        let nets = Nets::of(&members)?;
        let p = members.len();
        Ok(Self {
            actor_optimizer: Adam::population(
                nets.actor.net.vars(),
                config.actor_learning_rate,
                p,
            )?,
            critic_optimizer: Adam::population(
                nets.critics.net.vars(),
                config.critic_learning_rate,
                p,
            )?,
            nets,
            members,
            config,
            device: device.clone(),
            upload: Vec::new(),
            cuda_graph: crate::gpu::graph::requested(),
            graphs: Default::default(),
        })
    }

    /// Env steps each member has taken.
    pub fn steps_done(&self) -> u64 {
        self.members[0].core.steps_done
    }

    /// Critic updates each member has taken.
    pub fn updates(&self) -> u64 {
        self.critic_optimizer.steps()
    }

    /// The stacked actor.
    pub fn actor(&self) -> &Stacked<Actor> {
        &self.nets.actor
    }

    /// Rebuilds the stacked networks and optimizers from the members' own:
    /// for a population resumed from its members' checkpoints (each loaded
    /// into its member with `checkpoint::load`). The members must agree on
    /// their optimizers' step counts.
    pub fn restack(&mut self) -> Result<(), TrainError> {
        let members = &self.members;
        self.nets = Nets::of(members)?;
        let actors: Vec<&Adam> = members.iter().map(|m| &m.actor_optimizer).collect();
        let critics: Vec<&Adam> = members.iter().map(|m| &m.critic_optimizer).collect();
        let (actor_lr, critic_lr) = (
            members[0].actor_optimizer.lr,
            members[0].critic_optimizer.lr,
        );
        self.actor_optimizer = stack_optimizer(&self.nets.actor, &actors, actor_lr)?;
        self.critic_optimizer = stack_optimizer(&self.nets.critics, &critics, critic_lr)?;
        self.graphs.clear();
        Ok(())
    }

    /// Every member's greedy μ(s) in normalized units for its observation
    /// (`obs`: P rows of `obs_dim`, member order; each normalized with its
    /// member's statistics): one forward pass. Returns P rows of the action
    /// dimension.
    pub fn mu_all(&self, obs: &[f32]) -> Result<Vec<f32>, TrainError> {
        let (p, d) = (self.members.len(), self.nets.actor.net.obs_dim());
        if obs.len() != p * d {
            return Err(TrainError::Config(format!(
                "population of {p}: {} observation values, expected {p} × {d}",
                obs.len()
            )));
        }
        let mut x = obs.to_vec();
        for (m, row) in self.members.iter().zip(x.chunks_mut(d)) {
            if let Some(norm) = &m.core.norm {
                norm.apply(row);
            }
        }
        let x = Tensor::from_vec(x, (p, 1, d), &self.device)?;
        Ok(self
            .nets
            .actor
            .net
            .forward(&x)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }

    /// One update of every member (see [`Ddpg::update`]): each samples its
    /// own batch (and TD3's smoothing noise), the batches go up in one copy
    /// as `[P, batch, …]`, one critic pass updates all members, and every
    /// `policy_delay`-th update one actor pass and one Polyak step; the
    /// stats (and PER's TD errors) come back in one copy.
    pub fn update(&mut self, beta: f64) -> Result<Vec<UpdateStats>, TrainError> {
        let shapes = self.sample_all(beta)?;
        // The critic's step count after this update decides the actor's.
        let with_actor =
            (self.critic_optimizer.steps() + 1).is_multiple_of(self.config.policy_delay);
        if self.graphed() {
            return self.update_graphed(&shapes, with_actor);
        }
        // On CPU inside candle's thread pool, as a single learner's update
        // runs (a multi-threaded matmul splits its work by the pool it runs
        // in, so this keeps a member's arithmetic its single run's). The
        // closure borrows fields, not `self`: the CUDA graphs are not `Send`.
        let device = self.device.clone();
        let (back, host_norms) = crate::nn::fused::with_context(&device, || {
            let all = Tensor::from_slice(&self.upload, self.upload.len(), &self.device)?;
            let (back, host_norms) = update_body(
                &self.nets,
                (&mut self.critic_optimizer, &mut self.actor_optimizer),
                &self.config,
                &all,
                &shapes,
                None,
                with_actor,
            )?;
            Ok::<_, TrainError>((back.to_vec1::<f32>()?, host_norms))
        })?;
        self.finish(&back, host_norms)
    }

    /// Whether updates run as captured CUDA graphs: asked for
    /// ([`cuda_graph`](Self::cuda_graph)) on a CUDA device with the fused
    /// kernels.
    fn graphed(&self) -> bool {
        self.cuda_graph && crate::gpu::kernels::cuda_kernels(&self.device)
    }

    /// The update as a replayed CUDA graph (see
    /// [`crate::gpu::graph::GraphedUpdate`]): critic-only updates and
    /// updates that move the actor too each have their own graph, which
    /// warms up eagerly, captures, then replays; Adam's step sizes for both
    /// optimizers go in through the graph's buffer. A failed capture turns
    /// the graphs off with a warning.
    fn update_graphed(
        &mut self,
        shapes: &[Shape],
        with_actor: bool,
    ) -> Result<Vec<UpdateStats>, TrainError> {
        let dev = self.device.clone();
        let (critic_optimizer, actor_optimizer) =
            (&mut self.critic_optimizer, &mut self.actor_optimizer);
        let (g, hyper) = self.graphs.prepare(
            self.upload.len(),
            (&mut *critic_optimizer, &mut *actor_optimizer),
            with_actor,
            &dev,
        )?;
        let (nets, config) = (&self.nets, &self.config);
        let ran = g.run(&dev, &self.upload, &hyper, |input, hyper| {
            let (back, _) = update_body(
                nets,
                (&mut *critic_optimizer, &mut *actor_optimizer),
                config,
                input,
                shapes,
                Some(hyper),
                with_actor,
            )
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            Ok(vec![back])
        })?;
        let back = ran.settle(&mut self.cuda_graph, || self.graphs.clear());
        self.finish(&back, None)
    }

    /// Whether both updates (critic-only, and with the actor) now replay
    /// captured CUDA graphs.
    pub fn graph_captured(&self) -> bool {
        self.graphs.captured()
    }

    /// Every member samples its batch, with TD3's smoothing noise drawn
    /// after it from the member's replay generator as a seventh part; the
    /// batches are packed part-major into `upload`. Returns the stacked
    /// parts' shapes.
    fn sample_all(&mut self, beta: f64) -> Result<Vec<Shape>, TrainError> {
        let c = &self.config;
        let smoothing = (c.target_noise > 0.0).then_some((c.target_noise, c.target_noise_clip));
        let mut shapes = Vec::new();
        for m in &mut self.members {
            shapes = m.core.sample_packed(beta, smoothing)?;
        }
        let buffers: Vec<&[f32]> = self.members.iter().map(|m| m.core.packed()).collect();
        Ok(pack_members(&buffers, &shapes, &mut self.upload))
    }

    /// Each member's stats (and PER priorities) from an update's read-back
    /// (see [`member_stats`]).
    fn finish(
        &mut self,
        back: &[f32],
        host_norms: Option<Vec<f64>>,
    ) -> Result<Vec<UpdateStats>, TrainError> {
        let (batch, per) = (self.config.batch_size, self.config.prioritized);
        let members = &mut self.members;
        member_stats(back, members.len(), batch, per, host_norms, |k, td| {
            members[k].core.set_priorities(td)
        })
    }
}

/// A population update's work on the packed batch `input` (parts of
/// `shapes`, TD3's smoothing noise as a seventh): the critics' loss,
/// backward and Adam step, then with `with_actor` the actor's and the
/// targets' Polyak step. On the CPU kernels the members' clip norms are host
/// sums, returned beside the read-back tensor; elsewhere they are computed on
/// the device, nothing read back, and `hyper` (a CUDA graph's buffer: the
/// critic's step size and correction, then the actor's) feeds the fused Adam
/// steps. The tensor to read back is `[loss ×P, mean Q ×P, norm ×P (device
/// norms only), TD errors ×P·B (with PER)]`.
fn update_body(
    nets: &Nets,
    (critic_optimizer, actor_optimizer): (&mut Adam, &mut Adam),
    config: &DdpgConfig,
    input: &Tensor,
    shapes: &[Shape],
    hyper: Option<&Tensor>,
    with_actor: bool,
) -> Result<(Tensor, Option<Vec<f64>>), TrainError> {
    let mut parts = super::unpack(input, shapes)?;
    let smoothing = (parts.len() == 7).then(|| parts.pop()).flatten();
    let batch = ContinuousBatch::from_parts(parts)?;
    let (loss, q, td_error) = critic_loss(
        &nets.critics.net,
        &nets.critic_targets.net,
        &nets.actor_target.net,
        &batch,
        smoothing.as_ref(),
    )?;
    let grads = loss.sum_all()?.backward()?;
    let max = config.max_grad_norm;
    let host = hyper.is_none() && crate::nn::fused::cpu_kernels(input.device());
    let pair = |k: usize| hyper.map(|h| h.narrow(0, 2 * k, 2)).transpose();
    let (critic_hyper, actor_hyper) = (pair(0)?, pair(1)?);
    let (host_norms, device_norms) = if host {
        (Some(critic_optimizer.step_members(&grads, max)?), None)
    } else {
        let norms = critic_optimizer.step_members_on_device(&grads, max, critic_hyper.as_ref())?;
        (None, Some(norms))
    };
    if with_actor {
        let grads = actor_loss(&nets.actor.net, &nets.critics.net, &batch.obs)?
            .sum_all()?
            .backward()?;
        if host {
            actor_optimizer.step_members(&grads, max)?;
        } else {
            actor_optimizer.step_members_on_device(&grads, max, actor_hyper.as_ref())?;
        }
        polyak(&nets.actor_target.net, &nets.actor.net, config.tau)?;
        polyak(&nets.critic_targets.net, &nets.critics.net, config.tau)?;
    }
    let mut pieces = vec![loss.detach(), q.mean(D::Minus1)?];
    pieces.extend(device_norms);
    if config.prioritized {
        pieces.push(td_error.flatten_all()?);
    }
    Ok((Tensor::cat(&pieces, 0)?, host_norms))
}

/// The members' networks that `which` picks, stacked.
fn stack<N: crate::nn::stack::Stackable>(
    members: &[Ddpg],
    which: impl Fn(&Ddpg) -> &N,
) -> Result<Stacked<N>, TrainError> {
    let nets: Vec<N> = members.iter().map(|m| which(m).clone()).collect();
    Ok(Stacked::new(&nets)?)
}

impl Population for DdpgPopulation {
    fn len(&self) -> usize {
        self.members.len()
    }

    fn obs_dim(&self) -> usize {
        self.nets.actor.net.obs_dim()
    }

    fn member(&mut self, k: usize) -> &mut dyn Agent {
        &mut self.members[k]
    }

    /// Each member's [`Core::explore`](super::continuous::Core::explore):
    /// uniform before `learning_starts`, then its μ(s) (one forward pass for
    /// all) plus its own noise.
    fn explore_all(
        &mut self,
        obs: &[f32],
        step: u64,
        total: u64,
    ) -> Result<Vec<Action>, TrainError> {
        let greedy = if step > self.config.learning_starts {
            self.mu_all(obs)?
        } else {
            Vec::new()
        };
        let act_dim = self.nets.actor.net.act_dim();
        self.members
            .iter_mut()
            .enumerate()
            .map(|(k, m)| {
                m.core.explore(step, total, |_| {
                    let row = &greedy[k * act_dim..(k + 1) * act_dim];
                    Ok(Tensor::from_slice(row, (1, act_dim), &Device::Cpu)?)
                })
            })
            .collect()
    }

    /// [`Ddpg`]'s schedule (`gradient_steps` updates every `train_freq` steps
    /// past `learning_starts`) for all members at once.
    fn train_after(
        &mut self,
        step: u64,
        total: u64,
    ) -> Result<Option<Vec<UpdateStats>>, TrainError> {
        let core = &self.members[0].core;
        let due = core.updates_due(step);
        if due == 0 {
            return Ok(None);
        }
        let beta = core.beta(step, total);
        let mut last = None;
        for _ in 0..due {
            last = Some(super::Checked::checked(self.update(beta)?, step)?);
        }
        Ok(last)
    }

    fn restack(&mut self) -> Result<(), TrainError> {
        DdpgPopulation::restack(self)
    }

    fn steps_done(&self) -> u64 {
        DdpgPopulation::steps_done(self)
    }

    fn sync_members(&mut self) -> Result<(), TrainError> {
        let nets = &self.nets;
        for (k, m) in self.members.iter_mut().enumerate() {
            nets.actor.write_member(k, &m.actor)?;
            nets.actor_target.write_member(k, &m.actor_target)?;
            nets.critics.write_member(k, &m.critics)?;
            nets.critic_targets.write_member(k, &m.critic_targets)?;
            write_member_optimizer(
                &nets.actor,
                &self.actor_optimizer,
                k,
                &mut m.actor_optimizer,
            )?;
            write_member_optimizer(
                &nets.critics,
                &self.critic_optimizer,
                k,
                &mut m.critic_optimizer,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algo::{Observer, Progress};
    use crate::nn::NetConfig;
    use crate::replay::EnvStep;
    use reflex_sim::Env;

    fn net() -> NetConfig {
        NetConfig {
            hidden: vec![32, 32],
            final_init_scale: 1.0,
            ..NetConfig::default()
        }
    }

    /// TD3 with every switch that touches the update: PER, n-step, clipping
    /// tight enough to bite, target smoothing, observation normalization.
    fn config() -> DdpgConfig {
        DdpgConfig {
            batch_size: 16,
            buffer_size: 2_000,
            learning_starts: 300,
            prioritized: true,
            n_step: 2,
            obs_norm: true,
            max_grad_norm: Some(2.0),
            actor: net(),
            critic: net(),
            ..DdpgConfig::td3()
        }
    }

    fn bounds() -> BoxSpace {
        BoxSpace {
            low: vec![-2.0],
            high: vec![2.0],
        }
    }

    /// `a` and `b` agree to `tol` relative to `b`'s largest entry (0: exactly).
    fn same(a: &Tensor, b: &Tensor, tol: f32, what: &str) {
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a.len(), b.len(), "{what}: sizes");
        let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= tol * (1.0 + scale), "{what}: {x} vs {y}");
        }
    }

    /// Every parameter and Adam moment of two learners, pairwise.
    fn learner_tensors(a: &Ddpg, b: &Ddpg) -> Vec<(String, Tensor, Tensor)> {
        let mut out = Vec::new();
        let nets: [(&str, &dyn Params, &dyn Params); 4] = [
            ("actor", &a.actor, &b.actor),
            ("actor target", &a.actor_target, &b.actor_target),
            ("critics", &a.critics, &b.critics),
            ("critic targets", &a.critic_targets, &b.critic_targets),
        ];
        for (what, x, y) in nets {
            for ((name, v), w) in x.named_vars().into_iter().zip(y.vars()) {
                out.push((
                    format!("{what} {name}"),
                    v.as_tensor().clone(),
                    w.as_tensor().clone(),
                ));
            }
        }
        let optimizers = [
            (
                "actor adam",
                &a.actor_optimizer,
                &b.actor_optimizer,
                a.actor.names(),
            ),
            (
                "critic adam",
                &a.critic_optimizer,
                &b.critic_optimizer,
                a.critics.names(),
            ),
        ];
        for (what, x, y, names) in optimizers {
            for ((name, s), (_, t)) in x.state(&names).into_iter().zip(y.state(&names)) {
                out.push((format!("{what} {name}"), s, t));
            }
        }
        out
    }

    /// DDPG's switches on [`config`]'s settings: one critic, no delay, no
    /// smoothing.
    fn ddpg_config() -> DdpgConfig {
        DdpgConfig {
            twin_critics: false,
            policy_delay: 1,
            target_noise: 0.0,
            ..config()
        }
    }

    /// Each member's updates (stats, networks, targets, both Adams, PER
    /// priorities and generators as the next sample sees them) are its
    /// single learner's, for TD3 and DDPG: on the CPU kernels, and on
    /// candle's primitives with the norms on the device (what CUDA runs).
    #[test]
    fn a_population_update_is_each_members_own_update() {
        for (td3, config) in [(true, config()), (false, ddpg_config())] {
            update_matches_members(td3, &config, 1e-5);
            crate::nn::portable(|| update_matches_members(td3, &config, 1e-4));
        }
    }

    fn update_matches_members(td3: bool, config: &DdpgConfig, tol: f32) {
        let seeds = [3u64, 4, 5];
        let dev = Device::Cpu;
        let mut pop = DdpgPopulation::new(config.clone(), td3, 3, &bounds(), &seeds, &dev).unwrap();
        let mut singles: Vec<Ddpg> = seeds
            .iter()
            .map(|&s| Ddpg::new(config.clone(), td3, 3, &bounds(), s, &dev).unwrap())
            .collect();
        for (k, single) in singles.iter_mut().enumerate() {
            let member = &mut pop.members[k];
            // Member k's rewards are 10^-k times the env's: its gradients,
            // and so its clipping, differ from the others'.
            let scale = 10f32.powi(-(k as i32));
            crate::gpu::bench::fill_random("pendulum", 400, 40 + k as u64, |s| {
                let s = EnvStep {
                    reward: s.reward * scale,
                    ..*s
                };
                single.observe(&s)?;
                member.observe(&s)
            })
            .unwrap();
        }
        let mut clipped = vec![false; seeds.len()];
        let mut norms = Vec::new();
        // Five updates: TD3's actor and targets move on the even ones.
        for round in 0..5 {
            let stats = pop.update(0.5).unwrap();
            for (k, single) in singles.iter_mut().enumerate() {
                let alone = single.update(0.5).unwrap();
                let what = format!("td3 {td3}, update {round}, member {k}");
                let rel = |a: f64, b: f64| (a - b).abs() <= f64::from(tol) * (1.0 + b.abs());
                assert!(rel(stats[k].loss.into(), alone.loss.into()), "{what}: loss");
                assert!(
                    rel(stats[k].q_mean.into(), alone.q_mean.into()),
                    "{what}: Q"
                );
                assert!(rel(stats[k].grad_norm, alone.grad_norm), "{what}: norm");
                clipped[k] |= alone.grad_norm > 2.0;
                norms.push(alone.grad_norm);
            }
        }
        assert!(clipped.iter().any(|&c| c), "the clip never bit");
        assert!(
            !clipped.iter().all(|&c| c),
            "the clip bit every member: {norms:?}"
        );
        pop.sync_members().unwrap();
        for (k, single) in singles.iter_mut().enumerate() {
            let member = &mut pop.members[k];
            for (what, a, b) in learner_tensors(member, single) {
                same(&a, &b, tol, &format!("td3 {td3}, member {k}: {what}"));
            }
            assert_eq!(member.critic_optimizer.steps(), 5);
            let actor_updates = if td3 { 2 } else { 5 };
            assert_eq!(member.actor_optimizer.steps(), actor_updates);
            let a = member.core.sample_packed(0.5, Some((0.2, 0.5))).unwrap();
            let a = (a, member.core.packed().to_vec());
            let b = single.core.sample_packed(0.5, Some((0.2, 0.5))).unwrap();
            let b = (b, single.core.packed().to_vec());
            assert_eq!(
                a, b,
                "td3 {td3}, member {k}: next sample and smoothing noise"
            );
        }
    }

    /// Episode-return and update recorder.
    #[derive(Default)]
    struct Record(Vec<(u64, f64)>, Vec<UpdateStats>);

    impl Observer for Record {
        fn episode(&mut self, progress: &Progress, episode_return: f64, _length: u32) {
            self.0.push((progress.step, episode_return));
        }

        fn trained(&mut self, progress: &Progress) {
            self.1.extend(progress.last_update);
        }
    }

    /// The population's training loop gives each member its seed's single
    /// run, bit for bit on the CPU kernels: every episode, every update's
    /// stats and the greedy policy at the end.
    #[test]
    fn population_training_reproduces_each_seeds_run() {
        let config = DdpgConfig {
            prioritized: false,
            n_step: 1,
            max_grad_norm: None,
            ..config()
        };
        let (steps, seeds) = (1_000u64, [0u64, 7]);
        let dev = Device::Cpu;
        let mut envs: Vec<Box<dyn Env>> = seeds
            .iter()
            .map(|_| reflex_sim::make("pendulum").unwrap())
            .collect();
        let mut pop =
            DdpgPopulation::new(config.clone(), true, 3, &bounds(), &seeds, &dev).unwrap();
        let mut recorded: Vec<Record> = seeds.iter().map(|_| Record::default()).collect();
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
                500,
                &mut observers,
            )
            .unwrap();
        }
        assert_eq!(pop.updates(), steps - 300);
        for (k, &seed) in seeds.iter().enumerate() {
            let mut env = reflex_sim::make("pendulum").unwrap();
            let mut single = Ddpg::new(config.clone(), true, 3, &bounds(), seed, &dev).unwrap();
            let mut alone = Record::default();
            super::super::train(&mut single, env.as_mut(), steps, seed, 0, &mut alone).unwrap();
            assert_eq!(alone.0.len(), 5, "Pendulum's episodes are 200 steps");
            assert_eq!(recorded[k].0, alone.0, "member {k} (seed {seed}): episodes");
            assert_eq!(recorded[k].1, alone.1, "member {k} (seed {seed}): updates");
            let mut eval_env = reflex_sim::make("pendulum").unwrap();
            let mine = super::super::evaluate(&pop.members[k], eval_env.as_mut(), 2, 99).unwrap();
            let theirs = super::super::evaluate(&single, eval_env.as_mut(), 2, 99).unwrap();
            assert_eq!(mine, theirs, "member {k}: greedy evaluation");
        }
        assert_ne!(recorded[0].0, recorded[1].0, "the seeds differ");
    }

    /// Members checkpointed, loaded into a fresh population and restacked
    /// continue exactly as the original population does.
    #[test]
    fn a_population_restacked_from_member_checkpoints_continues_exactly() {
        let seeds = [5u64, 6];
        let dev = Device::Cpu;
        let mut original = DdpgPopulation::new(config(), true, 3, &bounds(), &seeds, &dev).unwrap();
        for (k, member) in original.members.iter_mut().enumerate() {
            crate::gpu::bench::fill_random("pendulum", 400, 40 + k as u64, |s| member.observe(s))
                .unwrap();
            member.core.steps_done = 400;
        }
        for _ in 0..3 {
            original.update(0.5).unwrap();
        }
        original.sync_members().unwrap();
        let root = std::env::temp_dir().join(format!("reflex-restack-ac-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mut resumed = DdpgPopulation::new(config(), true, 3, &bounds(), &seeds, &dev).unwrap();
        for k in 0..seeds.len() {
            let dir = root.join(format!("member-{k}"));
            let saved = crate::checkpoint::save(&dir, &mut original.members[k]).unwrap();
            crate::checkpoint::load(&saved, &mut resumed.members[k], &dev).unwrap();
        }
        resumed.restack().unwrap();
        assert_eq!(resumed.updates(), 3);
        assert_eq!(resumed.steps_done(), 400);
        for round in 0..3 {
            let (a, b) = (original.update(0.5).unwrap(), resumed.update(0.5).unwrap());
            assert_eq!(a, b, "update {round} after the resume");
        }
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn bad_populations_are_refused() {
        let dev = Device::Cpu;
        assert!(DdpgPopulation::new(config(), true, 3, &bounds(), &[], &dev).is_err());
        let pop = DdpgPopulation::new(config(), true, 3, &bounds(), &[1, 2], &dev).unwrap();
        let err = pop.mu_all(&[0.0; 5]).unwrap_err().to_string();
        assert!(err.contains("expected 2 × 3"), "{err}");
    }
}
