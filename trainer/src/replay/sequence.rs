//! Sequence replay for recurrent learners (DRQN; R2D2's scheme).
//!
//! Storage is one ring of *slots* in time order. An episode of `T` steps takes
//! `T + 1` consecutive slots: one per step (the observation the actor saw, the
//! previous action it fed the network, the recurrent state it had before the
//! step, the action it took and the reward), then a *final* slot with the last
//! observation and whether the episode terminated (no bootstrap) or was
//! truncated (bootstrap).
//!
//! Sampling draws a learning start `t0` (a step slot whose next observation is
//! stored; uniformly, or by priority) and returns a window of `T = B + L + n`
//! positions: the `B` burn-in steps before `t0` (they only warm up the state: no
//! loss), the `L` learning steps from `t0`, and `n` more observations for the
//! n-step bootstraps. Positions outside the window's episode — before it started,
//! after it ended, or already overwritten — are marked dead (`alive = 0`): the
//! network holds its start state through them and their losses are masked out.
//!
//! The start state of a window is the state the actor had at the first live
//! position (stored-state initialization), or zeros (zero-state
//! initialization, when the buffer stores no state). At an episode's start the
//! actor's state is zero either way.
//!
//! Prioritized sampling (optional) keeps one priority per learning start, set
//! from the window's TD errors as R2D2 does: `p = η max|δ| + (1 − η) mean|δ|`
//! (over the valid steps), then `(p + ε)^α`.

use reflex_sim::SimRng;

use super::error::ReplayError;
use super::state::{Kind, Reader, Writer};
use super::sum_tree::SumTree;
use super::transition::{check_row, check_unit, ActionRef, ActionShape};
use super::try_vec;

/// What a slot holds.
const STEP: u8 = 0;
/// An episode's last observation after termination (no bootstrap).
const TERMINATED: u8 = 1;
/// An episode's last observation after truncation (bootstrap from it).
const TRUNCATED: u8 = 2;
/// A slot never written.
const EMPTY_EPISODE: u64 = u64::MAX;

/// The window shape and return settings sampling uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowSpec {
    /// Burn-in steps B before the learning start.
    pub burn_in: usize,
    /// Learning steps L.
    pub learn: usize,
    /// n of n-step returns (≥ 1).
    pub n_step: usize,
    /// Discount γ.
    pub gamma: f32,
}

impl WindowSpec {
    /// Positions per window: B + L + n.
    pub fn positions(&self) -> usize {
        self.burn_in + self.learn + self.n_step
    }
}

/// Prioritized sequence sampling's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SequencePer {
    /// Priority exponent α.
    pub alpha: f64,
    /// Added to the mixed |TD error|.
    pub eps: f64,
    /// Weight of the max in η·max + (1 − η)·mean.
    pub eta: f64,
}

/// A batch of windows, row-major `[batch, positions, …]` (see the module docs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SequenceBatch {
    /// Windows in the batch.
    pub batch: usize,
    /// Positions per window (B + L + n).
    pub positions: usize,
    /// `[batch, positions, obs_dim]`.
    pub obs: Vec<f32>,
    /// The previous action as the network reads it (one-hot for discrete)
    /// `[batch, positions, prev_width]`; zeros at an episode's first step.
    pub prev_actions: Vec<f32>,
    /// 1 where the position holds the window's episode, else 0 `[batch, positions]`.
    pub alive: Vec<f32>,
    /// Start state `[batch, state_width]` (h then c): the stored state at the
    /// first live position, zeros without stored state.
    pub init_state: Vec<f32>,
    /// Actions taken at the learning steps `[batch, L, action_width]` (discrete:
    /// the index as a float).
    pub actions: Vec<f32>,
    /// n-step reward sums at the learning steps `[batch, L]`.
    pub returns: Vec<f32>,
    /// γ^m of each learning step's bootstrap, 0 when the episode terminated
    /// within those m steps `[batch, L]`.
    pub discounts: Vec<f32>,
    /// Position (0..positions) of each learning step's bootstrap observation
    /// `[batch, L]`.
    pub bootstrap: Vec<u32>,
    /// 1 for a learning step that exists (same episode, next observation
    /// stored), else 0 `[batch, L]`.
    pub mask: Vec<f32>,
    /// Importance weights (1 without priorities) `[batch]`.
    pub weights: Vec<f32>,
    /// The learning start slot of each window, for priority updates `[batch]`.
    pub starts: Vec<usize>,
}

/// Episodes in a ring of slots, sampled as windows.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceReplay {
    capacity: usize,
    obs_dim: usize,
    action: ActionShape,
    prev_width: usize,
    state_width: usize,
    obs: Vec<f32>,
    prev: Vec<f32>,
    actions: Vec<f32>,
    rewards: Vec<f32>,
    states: Vec<f32>,
    kind: Vec<u8>,
    episode: Vec<u64>,
    pos: Vec<u32>,
    /// Priorities of learning starts (all 1 without PER); 0 = not a start.
    tree: SumTree,
    per: Option<SequencePer>,
    len: usize,
    next: usize,
    /// The episode being written, and its next position.
    current_episode: u64,
    current_pos: u32,
}

impl SequenceReplay {
    /// An empty buffer of `capacity` slots. `prev_width` is the previous-action
    /// input's width (n for discrete actions, dim for continuous);
    /// `state_width` the stored state's (2·H for an LSTM; 0 = zero-state
    /// initialization, nothing stored).
    pub fn new(
        capacity: usize,
        obs_dim: usize,
        action: ActionShape,
        state_width: usize,
        per: Option<SequencePer>,
    ) -> Result<Self, ReplayError> {
        for (what, size) in [("capacity", capacity), ("obs_dim", obs_dim)] {
            if size == 0 {
                return Err(ReplayError::Zero { what });
            }
        }
        action.validate()?;
        if let Some(p) = per {
            check_per(p)?;
        }
        let prev_width = match action {
            ActionShape::Discrete { n } => n as usize,
            ActionShape::Continuous { dim } => dim,
        };
        Ok(Self {
            capacity,
            obs_dim,
            action,
            prev_width,
            state_width,
            obs: try_vec("observations", capacity, obs_dim, 0.0)?,
            prev: try_vec("previous actions", capacity, prev_width, 0.0)?,
            actions: try_vec("actions", capacity, action.width(), 0.0)?,
            rewards: try_vec("rewards", capacity, 1, 0.0)?,
            states: try_vec("states", capacity, state_width, 0.0)?,
            kind: try_vec("slot kinds", capacity, 1, STEP)?,
            episode: try_vec("episode ids", capacity, 1, EMPTY_EPISODE)?,
            pos: try_vec("episode positions", capacity, 1, 0)?,
            tree: SumTree::new(capacity)?,
            per,
            len: 0,
            next: 0,
            current_episode: 0,
            current_pos: 0,
        })
    }

    /// Slots written (steps plus final observations), at most the capacity.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Learning starts that can be sampled now (counts the whole tree).
    pub fn starts(&self) -> usize {
        self.tree.priorities().filter(|p| *p > 0.0).count()
    }

    /// Whether any learning start can be sampled (in constant time).
    pub fn can_sample(&self) -> bool {
        self.tree.total() > 0.0
    }

    /// The previous-action input's width.
    pub fn prev_width(&self) -> usize {
        self.prev_width
    }

    /// The stored state's width (0 = none).
    pub fn state_width(&self) -> usize {
        self.state_width
    }

    /// The largest priority stored (1 when none).
    fn max_priority(&self) -> f64 {
        let max = self.tree.max();
        if max > 0.0 {
            max
        } else {
            1.0
        }
    }

    /// Writes the next slot; the slot it replaces stops being a learning start.
    fn write_slot(&mut self, obs: &[f32], prev: &[f32], state: &[f32], kind: u8) -> usize {
        let slot = self.next;
        self.obs[slot * self.obs_dim..][..self.obs_dim].copy_from_slice(obs);
        self.prev[slot * self.prev_width..][..self.prev_width].copy_from_slice(prev);
        let sw = self.state_width;
        self.states[slot * sw..][..sw].copy_from_slice(state);
        self.kind[slot] = kind;
        self.episode[slot] = self.current_episode;
        self.pos[slot] = self.current_pos;
        // The slot is new: it becomes a start only once its successor exists.
        self.tree.update(slot, 0.0).expect("slot is in range");
        self.next = (slot + 1) % self.capacity;
        self.len = (self.len + 1).min(self.capacity);
        slot
    }

    /// The previous slot becomes a learning start when it is a step of the
    /// same episode (its next observation now exists).
    fn open_previous(&mut self, slot: usize) {
        let before = (slot + self.capacity - 1) % self.capacity;
        if self.current_pos > 0
            && self.episode[before] == self.current_episode
            && self.kind[before] == STEP
        {
            let priority = self.max_priority();
            self.tree
                .update(before, priority)
                .expect("slot is in range");
        }
    }

    fn check_common(&self, obs: &[f32], prev: &[f32], state: &[f32]) -> Result<(), ReplayError> {
        check_row("obs", obs, self.obs_dim)?;
        check_row("prev_action", prev, self.prev_width)?;
        check_row("recurrent state", state, self.state_width)
    }

    /// Stores one step of the current episode: the observation the actor saw,
    /// the previous-action input and state (h then c) it had before acting, the
    /// action it took and the reward. Refuses (and stores nothing) on wrong
    /// lengths, non-finite values or an out-of-range action.
    pub fn push_step(
        &mut self,
        obs: &[f32],
        prev_action: &[f32],
        state: &[f32],
        action: ActionRef<'_>,
        reward: f32,
    ) -> Result<usize, ReplayError> {
        self.check_common(obs, prev_action, state)?;
        self.action.check(action)?;
        if !reward.is_finite() {
            return Err(ReplayError::NonFinite { what: "reward" });
        }
        let slot = self.write_slot(obs, prev_action, state, STEP);
        let aw = self.action.width();
        let row = &mut self.actions[slot * aw..][..aw];
        match action {
            ActionRef::Discrete(index) => row[0] = index as f32,
            ActionRef::Continuous(values) => row.copy_from_slice(values),
        }
        self.rewards[slot] = reward;
        self.open_previous(slot);
        self.current_pos += 1;
        Ok(slot)
    }

    /// Ends the current episode with its last observation (and the
    /// previous-action input and state after the last step); `terminated` says
    /// whether its value is 0 (no bootstrap) or not (truncated). The next push
    /// starts a new episode.
    pub fn finish_episode(
        &mut self,
        final_obs: &[f32],
        prev_action: &[f32],
        state: &[f32],
        terminated: bool,
    ) -> Result<usize, ReplayError> {
        self.check_common(final_obs, prev_action, state)?;
        if self.current_pos == 0 {
            return Err(ReplayError::BadState("an episode ended before any step"));
        }
        let kind = if terminated { TERMINATED } else { TRUNCATED };
        let slot = self.write_slot(final_obs, prev_action, state, kind);
        self.rewards[slot] = 0.0;
        self.open_previous(slot);
        self.current_episode += 1;
        self.current_pos = 0;
        Ok(slot)
    }

    /// Drops a partial episode's remaining steps from sampling (the actor was
    /// reset mid-episode without an ending); the next push starts a new episode.
    pub fn abandon_episode(&mut self) {
        if self.current_pos > 0 {
            self.current_episode += 1;
            self.current_pos = 0;
        }
    }

    /// The slot at `offset` from `t0` if it holds `t0`'s episode at the right
    /// position.
    fn live(&self, t0: usize, offset: isize) -> Option<usize> {
        let target_pos = i64::from(self.pos[t0]) + offset as i64;
        if target_pos < 0 {
            return None;
        }
        let slot = (t0 as isize + offset).rem_euclid(self.capacity as isize) as usize;
        (self.episode[slot] == self.episode[t0] && i64::from(self.pos[slot]) == target_pos)
            .then_some(slot)
    }

    /// Samples `batch_size` windows into `out` (by priority with importance
    /// exponent `beta` when prioritized, else uniformly over learning starts).
    pub fn sample_into(
        &self,
        batch_size: usize,
        window: WindowSpec,
        beta: f64,
        rng: &mut SimRng,
        out: &mut SequenceBatch,
    ) -> Result<(), ReplayError> {
        if batch_size == 0 {
            return Err(ReplayError::Zero { what: "batch size" });
        }
        if window.learn == 0 || window.n_step == 0 {
            return Err(ReplayError::Zero {
                what: "window length",
            });
        }
        check_unit("beta", beta)?;
        check_unit("gamma", f64::from(window.gamma))?;
        let min_priority = self.tree.min_nonzero().ok_or(ReplayError::Empty)?;
        let total = self.tree.total();
        let segment = total / batch_size as f64;
        out.starts.clear();
        for k in 0..batch_size {
            let high = if k + 1 == batch_size {
                total
            } else {
                segment * (k + 1) as f64
            };
            out.starts
                .push(self.tree.find(rng.uniform(segment * k as f64, high))?);
        }
        out.weights.clear();
        for &start in &out.starts {
            out.weights.push(match self.per {
                Some(_) => {
                    let p = self.tree.get(start).unwrap_or(min_priority);
                    (min_priority / p).powf(beta) as f32
                }
                None => 1.0,
            });
        }
        self.fill(window, out);
        Ok(())
    }

    /// Gathers the windows that start learning at `out.starts`.
    fn fill(&self, window: WindowSpec, out: &mut SequenceBatch) {
        let (d, pw, sw, aw) = (
            self.obs_dim,
            self.prev_width,
            self.state_width,
            self.action.width(),
        );
        let positions = window.positions();
        let (b, l) = (out.starts.len(), window.learn);
        out.batch = b;
        out.positions = positions;
        for (v, len) in [
            (&mut out.obs, b * positions * d),
            (&mut out.prev_actions, b * positions * pw),
            (&mut out.alive, b * positions),
            (&mut out.init_state, b * sw),
            (&mut out.actions, b * l * aw),
            (&mut out.returns, b * l),
            (&mut out.discounts, b * l),
            (&mut out.mask, b * l),
        ] {
            v.clear();
            v.resize(len, 0.0);
        }
        out.bootstrap.clear();
        out.bootstrap.resize(b * l, 0);
        let burn = window.burn_in as isize;
        for (row, &t0) in out.starts.iter().enumerate() {
            let slots: Vec<Option<usize>> = (0..positions)
                .map(|k| self.live(t0, k as isize - burn))
                .collect();
            for (k, slot) in slots.iter().enumerate() {
                let Some(s) = *slot else { continue };
                let at = row * positions + k;
                out.alive[at] = 1.0;
                out.obs[at * d..][..d].copy_from_slice(&self.obs[s * d..][..d]);
                out.prev_actions[at * pw..][..pw].copy_from_slice(&self.prev[s * pw..][..pw]);
            }
            if let Some(first) = slots.iter().flatten().next() {
                out.init_state[row * sw..][..sw].copy_from_slice(&self.states[first * sw..][..sw]);
            }
            // A step has a target when it is a step slot and its next
            // observation is stored.
            let has_next = |k: usize| -> bool {
                matches!(slots[k], Some(s) if self.kind[s] == STEP)
                    && slots.get(k + 1).is_some_and(Option::is_some)
            };
            for j in 0..l {
                let k = window.burn_in + j;
                let at = row * l + j;
                if !has_next(k) {
                    continue;
                }
                let s = slots[k].expect("a step with a successor is live");
                out.actions[at * aw..][..aw].copy_from_slice(&self.actions[s * aw..][..aw]);
                // R = Σ_{i<m} γ^i r_{k+i}, stopping at the episode's end, n
                // steps, or the newest stored step.
                let (mut ret, mut scale, mut m) = (0.0f32, 1.0f32, 0);
                while m < window.n_step && has_next(k + m) {
                    let s = slots[k + m].expect("live");
                    ret += scale * self.rewards[s];
                    scale *= window.gamma;
                    m += 1;
                }
                let end = slots[k + m].expect("the bootstrap observation is live");
                out.returns[at] = ret;
                out.discounts[at] = if self.kind[end] == TERMINATED {
                    0.0
                } else {
                    scale
                };
                out.bootstrap[at] = (k + m) as u32;
                out.mask[at] = 1.0;
            }
        }
    }

    /// Sets the priorities of learning starts from their windows' TD errors
    /// `td_errors` `[batch, L]` with `mask` `[batch, L]`: `η max|δ| + (1 − η)
    /// mean|δ|` over the valid steps. A no-op without PER.
    pub fn update_priorities(
        &mut self,
        starts: &[usize],
        td_errors: &[f32],
        mask: &[f32],
    ) -> Result<(), ReplayError> {
        let Some(per) = self.per else { return Ok(()) };
        if td_errors.len() != mask.len()
            || starts.is_empty()
            || !td_errors.len().is_multiple_of(starts.len())
        {
            return Err(ReplayError::LengthMismatch {
                what: "td_errors",
                expected: mask.len(),
                got: td_errors.len(),
            });
        }
        let l = td_errors.len() / starts.len();
        let mut priorities = Vec::with_capacity(starts.len());
        for (row, &start) in starts.iter().enumerate() {
            if start >= self.capacity {
                return Err(ReplayError::IndexOutOfRange {
                    index: start,
                    len: self.capacity,
                });
            }
            let (mut max, mut sum, mut count) = (0.0f64, 0.0f64, 0.0f64);
            for j in 0..l {
                if mask[row * l + j] > 0.0 {
                    let e = f64::from(td_errors[row * l + j]);
                    if !e.is_finite() {
                        return Err(ReplayError::NonFinite { what: "TD error" });
                    }
                    max = max.max(e.abs());
                    sum += e.abs();
                    count += 1.0;
                }
            }
            let mixed = per.eta * max + (1.0 - per.eta) * sum / count.max(1.0);
            priorities.push((mixed + per.eps).powf(per.alpha));
        }
        for (&start, p) in starts.iter().zip(priorities) {
            // A start overwritten since it was sampled is no start any more.
            if self.tree.get(start).is_some_and(|old| old > 0.0) {
                self.tree.update(start, p)?;
            }
        }
        Ok(())
    }

    /// The whole state for a checkpoint (see [`REPLAY_FORMAT_VERSION`](super::REPLAY_FORMAT_VERSION), kind 2).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(Kind::Sequence, self.capacity * (self.obs_dim + 8) * 4);
        w.u64(self.capacity);
        w.u64(self.obs_dim);
        let (kind, size) = match self.action {
            ActionShape::Discrete { n } => (0, n as usize),
            ActionShape::Continuous { dim } => (1, dim),
        };
        w.u8(kind);
        w.u64(size);
        w.u64(self.state_width);
        w.u64(self.len);
        w.u64(self.next);
        w.u64(self.current_episode as usize);
        w.u64(self.current_pos as usize);
        match self.per {
            Some(p) => {
                w.u8(1);
                w.f64(p.alpha);
                w.f64(p.eps);
                w.f64(p.eta);
            }
            None => w.u8(0),
        }
        w.f32s(&self.obs);
        w.f32s(&self.prev);
        w.f32s(&self.actions);
        w.f32s(&self.rewards);
        w.f32s(&self.states);
        w.u32s(&self.kind.iter().map(|&k| u32::from(k)).collect::<Vec<_>>());
        w.f64s(self.episode.iter().map(|&e| e as f64));
        w.u32s(&self.pos);
        w.f64s(self.tree.priorities());
        w.finish()
    }

    /// A buffer restored from [`to_bytes`](Self::to_bytes), checked as a push
    /// would check it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ReplayError> {
        let bad = ReplayError::BadState;
        let mut r = Reader::new(bytes, Kind::Sequence)?;
        let capacity = r.u64()?;
        let obs_dim = r.u64()?;
        let action = match (r.u8()?, r.u64()?) {
            (0, n) => ActionShape::Discrete {
                n: u32::try_from(n).map_err(|_| bad("action count"))?,
            },
            (1, dim) => ActionShape::Continuous { dim },
            _ => return Err(bad("unknown action kind")),
        };
        let state_width = r.u64()?;
        let (len, next) = (r.u64()?, r.u64()?);
        let current_episode = r.u64()? as u64;
        let current_pos = u32::try_from(r.u64()?).map_err(|_| bad("episode position"))?;
        let per = match r.u8()? {
            0 => None,
            1 => Some(SequencePer {
                alpha: r.f64()?,
                eps: r.f64()?,
                eta: r.f64()?,
            }),
            _ => return Err(bad("unknown priority flag")),
        };
        let mut out = Self::new(capacity, obs_dim, action, state_width, per)?;
        if len > capacity || next >= capacity {
            return Err(bad("length or next slot beyond capacity"));
        }
        out.obs = r.f32s(capacity * obs_dim)?;
        out.prev = r.f32s(capacity * out.prev_width)?;
        out.actions = r.f32s(capacity * action.width())?;
        out.rewards = r.f32s(capacity)?;
        out.states = r.f32s(capacity * state_width)?;
        out.kind = r
            .u32s(capacity)?
            .into_iter()
            .map(|k| {
                u8::try_from(k)
                    .ok()
                    .filter(|k| *k <= TRUNCATED)
                    .ok_or(bad("slot kind"))
            })
            .collect::<Result<_, _>>()?;
        out.episode = r.f64s(capacity)?.into_iter().map(|e| e as u64).collect();
        out.pos = r.u32s(capacity)?;
        let priorities = r.f64s(capacity)?;
        r.finish()?;
        if [&out.obs, &out.prev, &out.actions, &out.rewards, &out.states]
            .iter()
            .any(|v| v.iter().any(|x| !x.is_finite()))
        {
            return Err(ReplayError::NonFinite {
                what: "stored value",
            });
        }
        out.tree = SumTree::from_priorities(capacity, &priorities)?;
        (out.len, out.next, out.current_episode, out.current_pos) =
            (len, next, current_episode, current_pos);
        Ok(out)
    }
}

fn check_per(p: SequencePer) -> Result<(), ReplayError> {
    if !(p.alpha.is_finite() && p.alpha >= 0.0) {
        return Err(ReplayError::OutOfRange {
            what: "alpha",
            value: p.alpha,
            range: "[0, ∞)",
        });
    }
    if !(p.eps.is_finite() && p.eps > 0.0) {
        return Err(ReplayError::OutOfRange {
            what: "epsilon",
            value: p.eps,
            range: "(0, ∞)",
        });
    }
    check_unit("eta", p.eta)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: WindowSpec = WindowSpec {
        burn_in: 2,
        learn: 3,
        n_step: 1,
        gamma: 0.5,
    };

    /// Stores an episode of `steps` steps with obs = [episode·100 + t], reward t,
    /// action t % 2, state [t, −t], terminated or truncated.
    fn episode(replay: &mut SequenceReplay, id: u32, steps: u32, terminated: bool) {
        let mut prev = [0.0, 0.0];
        for t in 0..steps {
            let obs = [(id * 100 + t) as f32];
            let state = [t as f32, -(t as f32)];
            replay
                .push_step(&obs, &prev, &state, ActionRef::Discrete(t % 2), t as f32)
                .unwrap();
            prev = [0.0, 0.0];
            prev[(t % 2) as usize] = 1.0;
        }
        let state = [steps as f32, -(steps as f32)];
        replay
            .finish_episode(&[(id * 100 + steps) as f32], &prev, &state, terminated)
            .unwrap();
    }

    fn replay(capacity: usize) -> SequenceReplay {
        SequenceReplay::new(capacity, 1, ActionShape::Discrete { n: 2 }, 2, None).unwrap()
    }

    fn sample(r: &SequenceReplay, window: WindowSpec, n: usize, seed: u64) -> SequenceBatch {
        let mut out = SequenceBatch::default();
        r.sample_into(n, window, 1.0, &mut SimRng::seed(seed), &mut out)
            .unwrap();
        out
    }

    #[test]
    fn windows_never_cross_episode_boundaries_without_masking() {
        let mut r = replay(64);
        episode(&mut r, 1, 4, true);
        episode(&mut r, 2, 7, false);
        episode(&mut r, 3, 3, true);
        // Every step is a learning start: 4 + 7 + 3.
        assert_eq!(r.starts(), 14);
        let b = sample(&r, WINDOW, 200, 1);
        let p = WINDOW.positions();
        for row in 0..b.batch {
            let obs: Vec<f32> = b.obs[row * p..][..p].to_vec();
            let alive = &b.alive[row * p..][..p];
            let ids: Vec<u32> = obs
                .iter()
                .zip(alive)
                .filter(|(_, a)| **a > 0.0)
                .map(|(o, _)| *o as u32 / 100)
                .collect();
            assert!(
                ids.windows(2).all(|w| w[0] == w[1]),
                "one episode per window: {obs:?}"
            );
            // Live positions are consecutive and dead ones hold zeros.
            for (k, (o, a)) in obs.iter().zip(alive).enumerate() {
                if *a == 0.0 {
                    assert_eq!(*o, 0.0, "row {row} position {k}");
                } else if k > 0 && alive[k - 1] > 0.0 {
                    assert_eq!(*o, obs[k - 1] + 1.0);
                }
            }
            // The learning start is live; a masked step is past the episode's end.
            assert_eq!(alive[WINDOW.burn_in], 1.0);
            assert_eq!(b.mask[row * WINDOW.learn], 1.0);
            for j in 0..WINDOW.learn {
                let k = WINDOW.burn_in + j;
                let valid = alive[k] > 0.0 && alive[k + 1] > 0.0;
                assert_eq!(
                    b.mask[row * WINDOW.learn + j] > 0.0,
                    valid,
                    "row {row} step {j}"
                );
            }
        }
    }

    #[test]
    fn returns_discounts_and_bootstraps_follow_the_episode_end() {
        let mut r = replay(64);
        episode(&mut r, 1, 5, true);
        let window = WindowSpec {
            burn_in: 1,
            learn: 5,
            n_step: 2,
            gamma: 0.5,
        };
        // Uniform over 5 starts: sample until the start at position 0 appears.
        let b = sample(&r, window, 64, 2);
        let row = (0..b.batch)
            .find(|&i| b.obs[i * b.positions + 1] == 100.0)
            .expect("the first step is sampled");
        let l = window.learn;
        // Rewards are 0, 1, 2, 3, 4; steps 0..3 get 2-step returns; step 4's
        // next observation is the terminal one.
        let ret = &b.returns[row * l..][..l];
        assert_eq!(ret, [0.5, 1.0 + 1.0, 2.0 + 1.5, 3.0 + 2.0, 4.0]);
        let disc = &b.discounts[row * l..][..l];
        assert_eq!(
            disc,
            [0.25, 0.25, 0.25, 0.0, 0.0],
            "terminated: no bootstrap"
        );
        let boot = &b.bootstrap[row * l..][..l];
        assert_eq!(boot, [3, 4, 5, 6, 6]);
        // Position 0 is before the episode: dead, and the state comes from the
        // first live position (the episode's start, state zero).
        assert_eq!(b.alive[row * b.positions], 0.0);
        assert_eq!(&b.init_state[row * 2..][..2], [0.0, 0.0]);
    }

    #[test]
    fn truncated_episodes_bootstrap_and_stored_state_is_the_actors() {
        let mut r = replay(64);
        episode(&mut r, 1, 9, false);
        let b = sample(&r, WINDOW, 64, 3);
        for row in 0..b.batch {
            let p = b.positions;
            let first = (0..p).find(|&k| b.alive[row * p + k] > 0.0).unwrap();
            let t = b.obs[row * p + first] as u32 - 100;
            // The state stored with step t is [t, −t]: what the actor had.
            assert_eq!(&b.init_state[row * 2..][..2], [t as f32, -(t as f32)]);
            // The previous-action input at a live position is the one-hot of the
            // action one step earlier (zeros at the episode's first step).
            for k in first..p {
                if b.alive[row * p + k] == 0.0 {
                    break;
                }
                let step = b.obs[row * p + k] as u32 - 100;
                let prev = &b.prev_actions[(row * p + k) * 2..][..2];
                let want = if step == 0 {
                    [0.0, 0.0]
                } else if (step - 1).is_multiple_of(2) {
                    [1.0, 0.0]
                } else {
                    [0.0, 1.0]
                };
                assert_eq!(prev, want);
            }
            for j in 0..WINDOW.learn {
                let at = row * WINDOW.learn + j;
                if b.mask[at] > 0.0 {
                    assert_eq!(b.discounts[at], 0.5, "truncation bootstraps");
                }
            }
        }
    }

    #[test]
    fn the_newest_step_is_no_start_until_its_next_observation_arrives() {
        let mut r = replay(16);
        r.push_step(
            &[1.0],
            &[0.0, 0.0],
            &[0.0, 0.0],
            ActionRef::Discrete(0),
            1.0,
        )
        .unwrap();
        assert_eq!(r.starts(), 0);
        let mut out = SequenceBatch::default();
        let err = r.sample_into(1, WINDOW, 1.0, &mut SimRng::seed(0), &mut out);
        assert!(matches!(err, Err(ReplayError::Empty)));
        r.push_step(
            &[2.0],
            &[1.0, 0.0],
            &[0.0, 0.0],
            ActionRef::Discrete(1),
            1.0,
        )
        .unwrap();
        assert_eq!(r.starts(), 1);
        // Bad input is refused and stores nothing.
        assert!(r
            .push_step(
                &[f32::NAN],
                &[0.0, 0.0],
                &[0.0, 0.0],
                ActionRef::Discrete(0),
                0.0
            )
            .is_err());
        assert!(r
            .push_step(&[1.0], &[0.0, 0.0], &[0.0], ActionRef::Discrete(0), 0.0)
            .is_err());
        assert!(r
            .push_step(
                &[1.0],
                &[0.0, 0.0],
                &[0.0, 0.0],
                ActionRef::Discrete(2),
                0.0
            )
            .is_err());
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn overwritten_slots_are_dead_and_starts_follow_the_ring() {
        let mut r = replay(10);
        episode(&mut r, 1, 6, true); // slots 0..=6
        episode(&mut r, 2, 5, true); // slots 7, 8, 9, 0, 1, 2 (wraps)
                                     // Episode 1 lost slots 0..=2 (steps 0, 1, 2): its starts are 3, 4, 5.
        assert_eq!(r.starts(), 3 + 5);
        let b = sample(&r, WINDOW, 300, 4);
        let p = b.positions;
        for row in 0..b.batch {
            let live: Vec<f32> = (0..p)
                .filter(|&k| b.alive[row * p + k] > 0.0)
                .map(|k| b.obs[row * p + k])
                .collect();
            assert!(live.iter().all(|o| *o >= 103.0), "{live:?}");
            // A window whose burn-in was overwritten starts from the stored
            // state of its first live step.
            let t = live[0] as u32 % 100;
            assert_eq!(&b.init_state[row * 2..][..2], [t as f32, -(t as f32)]);
        }
    }

    #[test]
    fn sequence_priorities_mix_max_and_mean_and_survive_a_checkpoint() {
        let per = SequencePer {
            alpha: 1.0,
            eps: 0.0 + 1e-9,
            eta: 0.9,
        };
        let mut r =
            SequenceReplay::new(32, 1, ActionShape::Discrete { n: 2 }, 2, Some(per)).unwrap();
        episode(&mut r, 1, 8, true);
        let b = sample(&r, WINDOW, 2, 5);
        let td = vec![1.0, -3.0, 2.0, 0.5, 0.5, 9.0];
        let mask = vec![1.0, 1.0, 1.0, 1.0, 1.0, 0.0];
        r.update_priorities(&b.starts, &td, &mask).unwrap();
        let want0 = 0.9 * 3.0 + 0.1 * 2.0;
        let want1 = 0.9 * 0.5 + 0.1 * 0.5;
        if b.starts[0] != b.starts[1] {
            assert!((r.tree.get(b.starts[0]).unwrap() - want0).abs() < 1e-6);
            assert!((r.tree.get(b.starts[1]).unwrap() - want1).abs() < 1e-6);
        }
        let restored = SequenceReplay::from_bytes(&r.to_bytes()).unwrap();
        assert_eq!(restored, r);
        let mut bytes = r.to_bytes();
        bytes.truncate(bytes.len() - 3);
        assert!(SequenceReplay::from_bytes(&bytes).is_err());
        // NaN TD errors are refused.
        assert!(r
            .update_priorities(&b.starts, &[f32::NAN; 6], &[1.0; 6])
            .is_err());
    }
}
