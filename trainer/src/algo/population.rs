//! A population of DQN learners trained in lockstep: P seeds (or P copies of
//! one config) whose networks are [stacked](crate::nn::stack) into one, so
//! each gradient step of all P is one forward pass, one backward pass and one
//! Adam step over stacked parameters, and each acting step one forward pass
//! for P observations.
//!
//! Member `k` is exactly the DQN learner its seed makes: its own env,
//! replay, n-step accumulator, exploration and replay generators, its own
//! gradient-norm clip, and the same schedule of updates and target copies.
//! Only the arithmetic is shared, in batched form. On the CPU kernels a
//! member's arithmetic is its single run's (one gemm per member inside the
//! batched layer, its own norm), so its run is the same run; elsewhere it
//! matches up to float rounding (the tests hold both).
//!
//! What it buys: on a GPU a small network's update costs its kernel
//! launches, whatever the batch, so P members cost about what one does
//! (that is the lever the GPU benchmark measures); on a CPU the arithmetic
//! is the cost, and the population saves only the per-op overhead.

use std::collections::HashMap;

use candle_core::{Device, Shape, Tensor, D};
use reflex_msgs::{Action, ActionSpace};
use reflex_sim::Env;

use super::dqn::{td_loss, Dqn, DqnConfig};
use super::{scheduled, Rounds, Scheduled};
use super::{Agent, Observer, Progress, UpdateStats};
use crate::nn::stack::{Stackable, Stacked};
use crate::optim::Adam;
use crate::replay::EnvStep;
use crate::run::RunConfig;
use crate::TrainError;

/// P DQN learners with stacked networks (see the module docs).
pub struct DqnPopulation {
    /// The members' own state: replay, n-step accumulator, generators, step
    /// count. Their networks and optimizers are stale while training runs;
    /// [`sync_members`](Self::sync_members) writes the population's into
    /// them (for evaluation, checkpoints and export).
    pub members: Vec<Dqn>,
    online: Stacked,
    target: Stacked,
    optimizer: Adam,
    config: DqnConfig,
    device: Device,
    upload: Vec<f32>,
    /// Run updates as a captured CUDA graph (experimental, as [`Dqn`]'s;
    /// starts as `REFLEX_CUDA_GRAPH=1` says; CUDA with the fused kernels
    /// only).
    pub cuda_graph: bool,
    graph: Option<crate::gpu::graph::GraphedUpdate>,
}

impl DqnPopulation {
    /// One member per seed, each initialized as `Dqn::new` would with that
    /// seed.
    pub fn new(
        config: DqnConfig,
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
        let (members, online, target, optimizer) = stack_members(
            seeds,
            |seed| Dqn::new(config.clone(), obs_dim, n_actions, seed, device),
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

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no members (never: `new` refuses that).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The stacked online network.
    pub fn online(&self) -> &Stacked {
        &self.online
    }

    /// The stacked optimizer.
    pub fn optimizer(&self) -> &Adam {
        &self.optimizer
    }

    /// Env steps each member has taken.
    pub fn steps_done(&self) -> u64 {
        self.members[0].steps_done
    }

    /// Gradient updates each member has taken.
    pub fn updates(&self) -> u64 {
        self.optimizer.steps()
    }

    /// Every member's greedy action for its observation (`obs`: P rows of
    /// `obs_dim`, member order): one forward pass.
    pub fn greedy_all(&self, obs: &[f32]) -> Result<Vec<u32>, TrainError> {
        let (p, d) = (self.len(), self.online.net.obs_dim());
        if obs.len() != p * d {
            return Err(TrainError::Config(format!(
                "population of {p}: {} observation values, expected {p} × {d}",
                obs.len()
            )));
        }
        let x = Tensor::from_slice(obs, (p, 1, d), &self.device)?;
        let best = self.online.net.q_values_frozen(&x)?.argmax(D::Minus1)?;
        Ok(best.flatten_all()?.to_vec1::<u32>()?)
    }

    /// ε-greedy actions for every member at env step `step` of `total`: each
    /// member draws from its own generator exactly as [`Dqn`] does, and the
    /// greedy ones share one forward pass.
    pub fn explore_all(
        &mut self,
        obs: &[f32],
        step: u64,
        total: u64,
    ) -> Result<Vec<Action>, TrainError> {
        let epsilon = self.config.exploration.value(step - 1, total);
        let n_actions = self.online.net.n_actions() as u64;
        let random: Vec<Option<u32>> = self
            .members
            .iter_mut()
            .map(|m| (m.act_rng.next_f64() < epsilon).then(|| m.act_rng.below(n_actions) as u32))
            .collect();
        let greedy = if random.iter().any(Option::is_none) {
            self.greedy_all(obs)?
        } else {
            Vec::new()
        };
        Ok(random
            .iter()
            .enumerate()
            .map(|(k, r)| Action::Discrete(r.unwrap_or_else(|| greedy[k])))
            .collect())
    }

    /// One gradient update of every member: each samples its own batch, the
    /// batches go up in one copy as `[P, batch, …]`, and one backward pass
    /// and one Adam step update all members; the stats (and PER's TD errors)
    /// come back in one copy. Returns each member's stats.
    pub fn update(&mut self, beta: f64) -> Result<Vec<UpdateStats>, TrainError> {
        let shapes = self.sample_all(beta)?;
        if self.graphed() {
            return self.update_graphed(&shapes);
        }
        let all = Tensor::from_slice(&self.upload, self.upload.len(), &self.device)?;
        let per = self.config.prioritized;
        if !crate::nn::fused::cpu_kernels(&self.device) {
            let back = device_body(
                &self.online,
                &self.target,
                &self.config,
                &mut self.optimizer,
                &all,
                &shapes,
                None,
            )?;
            return self.finish(&back.to_vec1::<f32>()?, None);
        }
        // On the CPU kernels the norms are host sums (f64) already.
        let parts = super::unpack(&all, &shapes)?;
        let (loss, q_taken, td_error) =
            td_loss(&self.online.net, &self.target.net, &self.config, &parts)?;
        let grads = loss.sum_all()?.backward()?;
        let norms = self
            .optimizer
            .step_members(&grads, self.config.max_grad_norm)?;
        let mut pieces = vec![loss.detach(), q_taken.mean(D::Minus1)?];
        if per {
            pieces.push(td_error.flatten_all()?);
        }
        let back = Tensor::cat(&pieces, 0)?.to_vec1::<f32>()?;
        self.finish(&back, Some(norms))
    }

    /// Every member samples its batch; the batches are packed part-major
    /// into `upload` (every member's observations, then every member's next
    /// observations, and so on, so each part is one `[P, …]` view). Returns
    /// the parts' shapes.
    fn sample_all(&mut self, beta: f64) -> Result<Vec<Shape>, TrainError> {
        let mut member_shapes = Vec::new();
        for m in &mut self.members {
            member_shapes = m.sample_packed(beta)?.0;
        }
        let buffers: Vec<&[f32]> = self.members.iter().map(|m| m.packed()).collect();
        Ok(pack_members(&buffers, &member_shapes, &mut self.upload))
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
            members[k].set_priorities(td)
        })
    }

    /// Whether updates run as a captured CUDA graph: asked for
    /// ([`cuda_graph`](Self::cuda_graph)) on a CUDA device with the fused
    /// kernels.
    fn graphed(&self) -> bool {
        self.cuda_graph && crate::gpu::kernels::cuda_kernels(&self.device)
    }

    /// The update as a replayed CUDA graph, as [`Dqn`]'s (see
    /// [`crate::gpu::graph::GraphedUpdate`]): warm-up updates run the body
    /// eagerly, the next captures it, the rest replay it; a failed capture
    /// turns the graph off with a warning.
    fn update_graphed(&mut self, shapes: &[Shape]) -> Result<Vec<UpdateStats>, TrainError> {
        let dev = self.device.clone();
        let (n, generation) = (self.upload.len(), self.optimizer.generation());
        let g = crate::gpu::graph::prepare(&mut self.graph, n, generation, &dev)?;
        let (online, target, config) = (&self.online, &self.target, &self.config);
        let optimizer = &mut self.optimizer;
        let hyper = optimizer.next_hyper();
        let ran = g.run(&dev, &self.upload, &hyper, |input, hyper| {
            Ok(vec![device_body(
                online,
                target,
                config,
                optimizer,
                input,
                shapes,
                Some(hyper),
            )
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?])
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
            self.target.net.copy_from(&self.online.net)?;
        } else {
            self.target
                .net
                .polyak_from(&self.online.net, self.config.tau)?;
        }
        Ok(())
    }

    /// [`Dqn`]'s schedule after env step `step`, for all members at once: a
    /// round of updates every `train_freq` steps past `learning_starts`, the
    /// target every `target_update_interval` steps. Returns the round's last
    /// stats per member.
    pub fn train_after(
        &mut self,
        step: u64,
        total: u64,
    ) -> Result<Option<Vec<UpdateStats>>, TrainError> {
        scheduled(self, step, total)
    }

    /// Writes the population's networks and optimizer state into each
    /// member's own, so a member is a complete DQN learner again: it can be
    /// evaluated, checkpointed (and resumed alone), and exported.
    pub fn sync_members(&mut self) -> Result<(), TrainError> {
        for (k, m) in self.members.iter_mut().enumerate() {
            self.online.write_member(k, &m.online)?;
            self.target.write_member(k, &m.target)?;
            write_member_optimizer(&self.online, &self.optimizer, k, &mut m.optimizer)?;
        }
        Ok(())
    }
}

impl DqnPopulation {
    /// Rebuilds the stacked networks and optimizer from the members' own
    /// (the inverse of [`sync_members`](Self::sync_members)): for a
    /// population resumed from its members' checkpoints, each loaded into
    /// its member with `checkpoint::load`. The members must agree on their
    /// optimizer's step count.
    pub fn restack(&mut self) -> Result<(), TrainError> {
        let onlines: Vec<_> = self.members.iter().map(|m| m.online.clone()).collect();
        let targets: Vec<_> = self.members.iter().map(|m| m.target.clone()).collect();
        self.online = Stacked::new(&onlines)?;
        self.target = Stacked::new(&targets)?;
        let optimizers: Vec<&Adam> = self.members.iter().map(|m| &m.optimizer).collect();
        self.optimizer = stack_optimizer(&self.online, &optimizers, self.optimizer.lr)?;
        self.graph = None;
        Ok(())
    }
}

/// A population's members, one made by `make` per seed, with their online
/// networks (`online`) stacked, a copy of that as the target, and a
/// population Adam at learning rate `lr` over it.
#[allow(clippy::type_complexity)]
pub(crate) fn stack_members<M, N: Stackable>(
    seeds: &[u64],
    make: impl Fn(u64) -> Result<M, TrainError>,
    online: impl Fn(&M) -> &N,
    lr: f64,
) -> Result<(Vec<M>, Stacked<N>, Stacked<N>, Adam), TrainError> {
    let members = seeds
        .iter()
        .map(|&seed| make(seed))
        .collect::<Result<Vec<_>, _>>()?;
    let nets: Vec<N> = members.iter().map(|m| online(m).clone()).collect();
    let stacked = Stacked::new(&nets)?;
    let target = stacked.duplicate()?;
    let optimizer = Adam::population(stacked.net.vars(), lr, seeds.len())?;
    Ok((members, stacked, target, optimizer))
}

/// Packs the members' sampled batches (`buffers`, each parts of `shapes`
/// back to back) part-major into `upload`: every member's first part, then
/// every member's second, and so on, so that each part is one `[P, …]` view
/// of the upload. Returns the stacked parts' shapes.
pub(crate) fn pack_members(
    buffers: &[&[f32]],
    shapes: &[Shape],
    upload: &mut Vec<f32>,
) -> Vec<Shape> {
    upload.clear();
    let mut stacked = Vec::with_capacity(shapes.len());
    let mut offset = 0;
    for shape in shapes {
        let n = shape.elem_count();
        for buffer in buffers {
            upload.extend_from_slice(&buffer[offset..offset + n]);
        }
        offset += n;
        let mut dims = vec![buffers.len()];
        dims.extend_from_slice(shape.dims());
        stacked.push(Shape::from(dims));
    }
    stacked
}

/// Each member's stats from a population update's read-back `back`:
/// `[loss ×P, mean Q ×P, norm ×P (unless `host_norms` has them), TD errors
/// ×P·batch (with PER)]`; with PER, member `k`'s TD errors go to
/// `priorities(k, errors)`.
pub(crate) fn member_stats(
    back: &[f32],
    p: usize,
    batch: usize,
    per: bool,
    host_norms: Option<Vec<f64>>,
    mut priorities: impl FnMut(usize, &[f32]) -> Result<(), TrainError>,
) -> Result<Vec<UpdateStats>, TrainError> {
    let td_start = if host_norms.is_some() { 2 * p } else { 3 * p };
    let mut stats = Vec::with_capacity(p);
    for k in 0..p {
        if per {
            let start = td_start + k * batch;
            priorities(k, &back[start..start + batch])?;
        }
        stats.push(UpdateStats {
            loss: back[k],
            q_mean: back[p + k],
            grad_norm: host_norms
                .as_ref()
                .map_or_else(|| f64::from(back[2 * p + k]), |n| n[k]),
        });
    }
    Ok(stats)
}

/// Loads member `k`'s part of the population optimizer `optimizer` (over
/// `stacked`'s parameters) into `into`, the member's own optimizer over its
/// own network: moments, step count and learning rate.
pub(crate) fn write_member_optimizer<N: Stackable>(
    stacked: &Stacked<N>,
    optimizer: &Adam,
    k: usize,
    into: &mut Adam,
) -> Result<(), TrainError> {
    let names = stacked.net.names();
    let mut mine = HashMap::new();
    // state() lists each parameter's two moments ("adam.m.<name>",
    // "adam.v.<name>") in parameter order.
    for (j, (key, t)) in optimizer.state(&names).into_iter().enumerate() {
        mine.insert(key, stacked.member_slice(&t, j / 2, k)?);
    }
    into.load_state(&names, &mine, optimizer.steps())?;
    into.lr = optimizer.lr;
    Ok(())
}

/// A population optimizer over `stacked`'s parameters from its members' own
/// optimizers (the inverse of [`write_member_optimizer`]), with learning
/// rate `lr`. The members must agree on their step count.
pub(crate) fn stack_optimizer<N: Stackable>(
    stacked: &Stacked<N>,
    members: &[&Adam],
    lr: f64,
) -> Result<Adam, TrainError> {
    let steps = members[0].steps();
    if let Some(k) = members.iter().position(|m| m.steps() != steps) {
        return Err(TrainError::Config(format!(
            "population members disagree: member 0 has taken {steps} updates, member {k} {}",
            members[k].steps()
        )));
    }
    let names = stacked.net.names();
    let each: Vec<Vec<(String, Tensor)>> = members.iter().map(|m| m.state(&names)).collect();
    let mut moments = HashMap::new();
    for (j, (key, _)) in each[0].iter().enumerate() {
        let parts: Vec<Tensor> = each.iter().map(|state| state[j].1.clone()).collect();
        moments.insert(key.clone(), stacked.stack_parts(j / 2, &parts)?);
    }
    let mut optimizer = Adam::population(stacked.net.vars(), lr, members.len())?;
    optimizer.load_state(&names, &moments, steps)?;
    Ok(optimizer)
}

/// A population update's device work on the packed batch `input`: the
/// loss of every member, backward, Adam with each member's clip computed on
/// the device (`hyper`: a CUDA graph's step-size buffer). Returns one
/// tensor to read back: `[loss ×P, mean Q ×P, norm ×P, TD errors ×P·B with
/// PER]`.
fn device_body(
    online: &Stacked,
    target: &Stacked,
    config: &DqnConfig,
    optimizer: &mut Adam,
    input: &Tensor,
    shapes: &[Shape],
    hyper: Option<&Tensor>,
) -> Result<Tensor, TrainError> {
    let parts = super::unpack(input, shapes)?;
    let (loss, q_taken, td_error) = td_loss(&online.net, &target.net, config, &parts)?;
    let grads = loss.sum_all()?.backward()?;
    let norms = optimizer.step_members_on_device(&grads, config.max_grad_norm, hyper)?;
    let mut pieces = vec![loss.detach(), q_taken.mean(D::Minus1)?, norms];
    if config.prioritized {
        pieces.push(td_error.flatten_all()?);
    }
    Ok(Tensor::cat(&pieces, 0)?)
}

impl Scheduled for DqnPopulation {
    type Stats = Vec<UpdateStats>;

    fn rounds(&self) -> Rounds {
        self.config.rounds()
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.optimizer.lr = lr;
    }

    fn has_data(&self) -> bool {
        !self.members[0].replay.is_empty()
    }

    fn update_once(&mut self, beta: f64) -> Result<Vec<UpdateStats>, TrainError> {
        self.update(beta)
    }

    fn move_target(&self) -> Result<(), TrainError> {
        self.update_target()
    }
}

/// What [`train_population`] drives: P learners whose members are complete
/// [`Agent`]s of their own (replay, generators, step count), acting and
/// learning together.
pub trait Population {
    /// Number of members P.
    fn len(&self) -> usize;
    /// Whether there are no members (never for a built population).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Observation length.
    fn obs_dim(&self) -> usize;
    /// Member `k`'s own state: replay, step count, exploration, episodes.
    fn member(&mut self, k: usize) -> &mut dyn Agent;
    /// Every member's training action at env step `step` of `total`
    /// (`obs`: P rows of `obs_dim`, member order), as each member's
    /// [`Agent::explore`] would choose it, greedy parts in one pass.
    fn explore_all(
        &mut self,
        obs: &[f32],
        step: u64,
        total: u64,
    ) -> Result<Vec<Action>, TrainError>;
    /// The members' training schedule after env step `step`, all at once;
    /// the round's last stats per member.
    fn train_after(
        &mut self,
        step: u64,
        total: u64,
    ) -> Result<Option<Vec<UpdateStats>>, TrainError>;
    /// Writes the population's networks and optimizer state into each
    /// member's own, so a member can be evaluated, checkpointed and exported.
    fn sync_members(&mut self) -> Result<(), TrainError>;
    /// Rebuilds the population's networks and optimizers from the members'
    /// own (the inverse of [`sync_members`](Self::sync_members)), after
    /// each member loaded its checkpoint.
    fn restack(&mut self) -> Result<(), TrainError>;
    /// Env steps each member has taken.
    fn steps_done(&self) -> u64;
}

/// The algorithms with a population form.
pub const ALGOS: &[&str] = &["dqn", "drqn", "ddpg", "td3"];

/// Whether `config`'s algorithm has a population form (a clear error if not).
pub fn check_population(config: &RunConfig) -> Result<(), TrainError> {
    if ALGOS.contains(&config.algo.as_str()) && !config.recurrent {
        return Ok(());
    }
    Err(TrainError::Config(format!(
        "{}{} has no population form yet; --population trains {} (ddpg and td3 without --recurrent)",
        if config.recurrent { "recurrent " } else { "" },
        config.algo,
        ALGOS.join(", ")
    )))
}

/// A population for `config`'s algorithm (one of [`ALGOS`], feed-forward)
/// and `env`'s spaces, member `k` seeded with `seeds[k]`: what
/// [`super::build`] makes for one seed, P times, stacked.
pub fn build_population(
    config: &RunConfig,
    env: &dyn Env,
    seeds: &[u64],
    device: &Device,
) -> Result<Box<dyn Population>, TrainError> {
    check_population(config)?;
    let algo = config.algo.as_str();
    let obs_dim = env.observation_space().dim();
    Ok(match (algo, env.action_space()) {
        ("dqn", ActionSpace::Discrete { n }) => Box::new(DqnPopulation::new(
            config.dqn.clone(),
            obs_dim,
            *n as usize,
            seeds,
            device,
        )?),
        ("drqn", ActionSpace::Discrete { n }) => {
            Box::new(super::population_drqn::DrqnPopulation::new(
                config.drqn.clone(),
                obs_dim,
                *n as usize,
                seeds,
                device,
            )?)
        }
        ("ddpg" | "td3", ActionSpace::Box(bounds)) => {
            let td3 = algo == "td3";
            let c = if td3 { &config.td3 } else { &config.ddpg };
            Box::new(super::population_ac::DdpgPopulation::new(
                c.clone(),
                td3,
                obs_dim,
                bounds,
                seeds,
                device,
            )?)
        }
        (_, ActionSpace::Discrete { .. }) => {
            return Err(TrainError::Config(format!(
                "{algo} needs continuous actions; {} has discrete ones",
                config.env
            )))
        }
        (_, ActionSpace::Box(_)) => {
            return Err(TrainError::Config(format!(
                "{algo} needs discrete actions; {} has continuous ones",
                config.env
            )))
        }
    })
}

impl Population for DqnPopulation {
    fn len(&self) -> usize {
        self.members.len()
    }

    fn obs_dim(&self) -> usize {
        self.online.net.obs_dim()
    }

    fn member(&mut self, k: usize) -> &mut dyn Agent {
        &mut self.members[k]
    }

    fn explore_all(
        &mut self,
        obs: &[f32],
        step: u64,
        total: u64,
    ) -> Result<Vec<Action>, TrainError> {
        DqnPopulation::explore_all(self, obs, step, total)
    }

    fn train_after(
        &mut self,
        step: u64,
        total: u64,
    ) -> Result<Option<Vec<UpdateStats>>, TrainError> {
        DqnPopulation::train_after(self, step, total)
    }

    fn sync_members(&mut self) -> Result<(), TrainError> {
        DqnPopulation::sync_members(self)
    }

    fn restack(&mut self) -> Result<(), TrainError> {
        DqnPopulation::restack(self)
    }

    fn steps_done(&self) -> u64 {
        DqnPopulation::steps_done(self)
    }
}

/// [`super::train`] for a population: member `k` acts in `envs[k]`, its
/// first episode seeded with `seeds[k]`, and reports to `observers[k]`,
/// whose `periodic` gets the member (synced first, see
/// [`Population::sync_members`]) every `periodic_every` steps. Trains
/// until every member has taken `total_steps` env steps; a member's run is
/// the one `train` gives its seed (exactly on the CPU kernels; up to float
/// rounding elsewhere).
pub fn train_population(
    population: &mut dyn Population,
    envs: &mut [Box<dyn Env>],
    total_steps: u64,
    seeds: &[u64],
    periodic_every: u64,
    observers: &mut [&mut dyn Observer],
) -> Result<(), TrainError> {
    let p = population.len();
    if envs.len() != p || seeds.len() != p || observers.len() != p {
        return Err(TrainError::Config(format!(
            "population of {p}: {} envs, {} seeds and {} observers",
            envs.len(),
            seeds.len(),
            observers.len()
        )));
    }
    let done = population.member(0).steps_done();
    let d = population.obs_dim();
    let mut obs = Vec::with_capacity(p * d);
    for (k, (env, seed)) in envs.iter_mut().zip(seeds).enumerate() {
        obs.extend_from_slice(env.reset(Some(seed.wrapping_add(done))));
        population.member(k).episode_start();
    }
    let mut next_obs = vec![0.0; d];
    let mut returns = vec![(0.0f64, 0u32); p];
    let mut last_update: Vec<Option<UpdateStats>> = vec![None; p];
    while population.member(0).steps_done() < total_steps {
        let step = population.member(0).steps_done() + 1;
        for k in 0..p {
            population.member(k).set_steps_done(step);
        }
        let exploration = population.member(0).exploration(step - 1, total_steps);
        let actions = population.explore_all(&obs, step, total_steps)?;
        for (k, env) in envs.iter_mut().enumerate() {
            let result = env.step(&actions[k])?;
            next_obs.copy_from_slice(env.obs());
            let row = &mut obs[k * d..(k + 1) * d];
            let member = population.member(k);
            member.observe(&EnvStep::new(row, &actions[k], &result, &next_obs))?;
            let (episode_return, length) = &mut returns[k];
            *episode_return += result.reward;
            *length += 1;
            if result.done() {
                let progress = Progress {
                    step,
                    exploration,
                    last_update: last_update[k],
                };
                observers[k].episode(&progress, *episode_return, *length);
                (*episode_return, *length) = (0.0, 0);
                row.copy_from_slice(env.reset(None));
                member.episode_start();
            } else {
                row.copy_from_slice(&next_obs);
            }
        }
        if let Some(stats) = population.train_after(step, total_steps)? {
            for (k, s) in stats.into_iter().enumerate() {
                last_update[k] = Some(s);
                observers[k].trained(&Progress {
                    step,
                    exploration,
                    last_update: last_update[k],
                });
            }
        }
        if periodic_every > 0 && step.is_multiple_of(periodic_every) {
            population.sync_members()?;
            for (k, observer) in observers.iter_mut().enumerate() {
                let progress = Progress {
                    step,
                    exploration,
                    last_update: last_update[k],
                };
                observer.periodic(&progress, population.member(k))?;
            }
        }
        if observers.iter().any(|o| o.interrupted()) {
            break;
        }
    }
    population.sync_members()
}

/// Test support: member `k`'s online and target networks and optimizer
/// state (moments, step count) equal its single learner's, each value
/// within `tol` × (1 + the tensor's largest magnitude).
#[cfg(test)]
pub(crate) fn assert_learner_matches<N: crate::nn::Params>(
    k: usize,
    (online, target, optimizer): (&N, &N, &Adam),
    (s_online, s_target, s_optimizer): (&N, &N, &Adam),
    tol: f64,
) {
    let names = s_online.names();
    let mut pairs: Vec<(Tensor, Tensor)> = optimizer
        .state(&names)
        .into_iter()
        .zip(s_optimizer.state(&names))
        .map(|((_, a), (_, b))| (a, b))
        .collect();
    for (mine, theirs) in [(online, s_online), (target, s_target)] {
        for (a, b) in mine.vars().iter().zip(theirs.vars()) {
            pairs.push((a.as_tensor().clone(), b.as_tensor().clone()));
        }
    }
    for (a, b) in &pairs {
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = f64::from(b.iter().fold(0f32, |m, x| m.max(x.abs())));
        for (x, y) in a.iter().zip(&b) {
            assert!(
                f64::from((x - y).abs()) <= tol * (1.0 + scale),
                "member {k}: {x} vs {y}"
            );
        }
    }
    assert_eq!(optimizer.steps(), s_optimizer.steps(), "member {k}: steps");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::NetConfig;
    use crate::replay::ActionRef;
    use reflex_sim::SimRng;

    fn config() -> DqnConfig {
        DqnConfig {
            batch_size: 16,
            buffer_size: 1_000,
            learning_starts: 300,
            train_freq: 4,
            gradient_steps: 1,
            target_update_interval: 50,
            twin: true,
            prioritized: true,
            n_step: 2,
            // Small, so that the clip bites, on some members more than others.
            max_grad_norm: Some(0.05),
            net: NetConfig {
                hidden: vec![32, 32],
                dueling: true,
                ..NetConfig::default()
            },
            ..DqnConfig::default()
        }
    }

    fn close(a: f64, b: f64, what: &str) {
        assert!(
            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
            "{what}: {a} vs {b}"
        );
    }

    /// Each member's updates (stats, weights, Adam moments, PER priorities as
    /// the next sample sees them) are its single learner's.
    #[test]
    fn a_population_update_is_each_members_own_update() {
        let seeds = [3u64, 4, 5];
        let (obs_dim, n_actions) = (4, 3);
        let dev = Device::Cpu;
        let mut pop = DqnPopulation::new(config(), obs_dim, n_actions, &seeds, &dev).unwrap();
        let mut singles: Vec<Dqn> = seeds
            .iter()
            .map(|&s| Dqn::new(config(), obs_dim, n_actions, s, &dev).unwrap())
            .collect();
        for (k, single) in singles.iter_mut().enumerate() {
            let mut rng = SimRng::seed(100 + k as u64);
            for i in 0..200 {
                let obs: Vec<f32> = (0..obs_dim)
                    .map(|_| rng.uniform(-1.0, 1.0) as f32)
                    .collect();
                let next: Vec<f32> = (0..obs_dim)
                    .map(|_| rng.uniform(-1.0, 1.0) as f32)
                    .collect();
                let step = EnvStep {
                    obs: &obs,
                    action: ActionRef::Discrete(rng.below(n_actions as u64) as u32),
                    // Member k's rewards are 3^k times larger: its gradients
                    // and so its clipping differ from the others'.
                    reward: (rng.uniform(-1.0, 1.0) * 3f64.powi(k as i32)) as f32,
                    next_obs: &next,
                    terminated: i % 37 == 36,
                    truncated: false,
                };
                single.observe(&step).unwrap();
                pop.members[k].observe(&step).unwrap();
            }
        }
        let mut clipped = vec![false; seeds.len()];
        for round in 0..6 {
            let stats = pop.update(0.5).unwrap();
            for (k, single) in singles.iter_mut().enumerate() {
                let alone = single.update(0.5).unwrap();
                let what = format!("round {round}, member {k}");
                close(
                    stats[k].loss.into(),
                    alone.loss.into(),
                    &format!("{what}: loss"),
                );
                close(
                    stats[k].q_mean.into(),
                    alone.q_mean.into(),
                    &format!("{what}: Q"),
                );
                close(
                    stats[k].grad_norm,
                    alone.grad_norm,
                    &format!("{what}: norm"),
                );
                clipped[k] |= alone.grad_norm > 0.05;
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
            assert_learner_matches(
                k,
                (&member.online, &member.target, &member.optimizer),
                (&single.online, &single.target, &single.optimizer),
                1e-5,
            );
            // Same priorities and generator: the next batch is the same rows.
            let (_, a) = member.sample_packed(0.5).unwrap();
            let a = a.to_vec();
            let (_, b) = single.sample_packed(0.5).unwrap();
            assert_eq!(a, b, "member {k}: next sampled batch");
        }
    }

    /// Episode-return recorder.
    #[derive(Default)]
    struct Returns(Vec<(u64, f64)>);

    impl Observer for Returns {
        fn episode(&mut self, progress: &Progress, episode_return: f64, _length: u32) {
            self.0.push((progress.step, episode_return));
        }
    }

    /// The population's training loop gives each member the episodes its
    /// seed's single run has, and each member ends as a whole learner whose
    /// greedy policy is that run's.
    #[test]
    fn population_training_reproduces_each_seeds_run() {
        let config = DqnConfig {
            twin: false,
            prioritized: false,
            n_step: 1,
            max_grad_norm: Some(10.0),
            learning_rate: 1e-3,
            ..config()
        };
        let (steps, seeds) = (1_500u64, [0u64, 7]);
        let dev = Device::Cpu;
        let mut envs: Vec<Box<dyn Env>> = seeds
            .iter()
            .map(|_| reflex_sim::make("cartpole").unwrap())
            .collect();
        let mut pop = DqnPopulation::new(config.clone(), 4, 2, &seeds, &dev).unwrap();
        let mut recorded: Vec<Returns> = seeds.iter().map(|_| Returns::default()).collect();
        {
            let mut observers: Vec<&mut dyn Observer> = recorded
                .iter_mut()
                .map(|r| r as &mut dyn Observer)
                .collect();
            train_population(&mut pop, &mut envs, steps, &seeds, 500, &mut observers).unwrap();
        }
        assert_eq!(pop.updates(), (steps - 300) / 4);
        for (k, &seed) in seeds.iter().enumerate() {
            let mut env = reflex_sim::make("cartpole").unwrap();
            let mut single = Dqn::new(config.clone(), 4, 2, seed, &dev).unwrap();
            let mut alone = Returns::default();
            super::super::train(&mut single, env.as_mut(), steps, seed, 0, &mut alone).unwrap();
            assert!(alone.0.len() > 20, "{} episodes", alone.0.len());
            assert_eq!(recorded[k].0, alone.0, "member {k} (seed {seed}): episodes");
            let mut eval_env = reflex_sim::make("cartpole").unwrap();
            let mine = super::super::evaluate(&pop.members[k], eval_env.as_mut(), 3, 99).unwrap();
            let theirs = super::super::evaluate(&single, eval_env.as_mut(), 3, 99).unwrap();
            assert_eq!(mine, theirs, "member {k}: greedy evaluation");
        }
        // The members differ from each other (their seeds do).
        assert_ne!(recorded[0].0, recorded[1].0);
    }

    /// Members checkpointed, loaded into a fresh population and restacked
    /// continue exactly as the original population does.
    #[test]
    fn a_population_restacked_from_member_checkpoints_continues_exactly() {
        let config = DqnConfig {
            learning_starts: 0,
            ..config()
        };
        let seeds = [5u64, 6];
        let dev = Device::Cpu;
        let mut original = DqnPopulation::new(config.clone(), 4, 2, &seeds, &dev).unwrap();
        for (k, member) in original.members.iter_mut().enumerate() {
            crate::gpu::bench::fill_random("cartpole", 300, 40 + k as u64, |s| member.observe(s))
                .unwrap();
            member.steps_done = 300;
        }
        for _ in 0..4 {
            original.update(0.5).unwrap();
        }
        original.sync_members().unwrap();
        let root = std::env::temp_dir().join(format!("reflex-restack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mut resumed = DqnPopulation::new(config, 4, 2, &seeds, &dev).unwrap();
        for k in 0..seeds.len() {
            let dir = root.join(format!("member-{k}"));
            let saved = crate::checkpoint::save(&dir, &mut original.members[k]).unwrap();
            crate::checkpoint::load(&saved, &mut resumed.members[k], &dev).unwrap();
        }
        resumed.restack().unwrap();
        assert_eq!(resumed.updates(), 4);
        assert_eq!(resumed.steps_done(), 300);
        for round in 0..3 {
            let (a, b) = (original.update(0.5).unwrap(), resumed.update(0.5).unwrap());
            assert_eq!(a, b, "update {round} after the resume");
        }
        std::fs::remove_dir_all(&root).ok();
        // Members that disagree are refused.
        resumed.members[1].optimizer =
            crate::optim::Adam::new(resumed.members[1].online.vars(), 1e-3).unwrap();
        let err = resumed.restack().unwrap_err().to_string();
        assert!(err.contains("disagree"), "{err}");
    }

    #[test]
    fn mismatched_envs_or_seeds_are_refused() {
        let dev = Device::Cpu;
        let mut pop = DqnPopulation::new(config(), 4, 2, &[1, 2], &dev).unwrap();
        let mut envs: Vec<Box<dyn Env>> = vec![reflex_sim::make("cartpole").unwrap()];
        let mut r = Returns::default();
        let mut observers: Vec<&mut dyn Observer> = vec![&mut r];
        let err = train_population(&mut pop, &mut envs, 10, &[1, 2], 0, &mut observers)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("1 envs"), "{err}");
        assert!(DqnPopulation::new(config(), 4, 2, &[], &dev).is_err());
        assert!(pop.greedy_all(&[0.0; 3]).is_err());
    }
}
