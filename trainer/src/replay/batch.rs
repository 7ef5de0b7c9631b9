//! A sampled minibatch: contiguous row-major arrays, ready to be uploaded to a
//! device in one copy each.

/// The actions of a batch: `[batch]` indices or `[batch, act_dim]` vectors.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchActions {
    /// Discrete action indices, one per row.
    Discrete(Vec<u32>),
    /// Continuous actions, row-major `[batch, act_dim]`.
    Continuous(Vec<f32>),
}

impl Default for BatchActions {
    fn default() -> Self {
        Self::Discrete(Vec::new())
    }
}

/// A minibatch of transitions, structure-of-arrays. Row `k` of every field is
/// the same transition. Reuse one `Batch` across `sample_into` calls to avoid
/// allocating per update.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Observations, row-major `[batch, obs_dim]`.
    pub obs: Vec<f32>,
    /// Actions taken.
    pub actions: BatchActions,
    /// (n-step) returns, `[batch]`.
    pub rewards: Vec<f32>,
    /// Observations to bootstrap from, row-major `[batch, obs_dim]`.
    pub next_obs: Vec<f32>,
    /// Factors on the bootstrapped value, `[batch]`: `γ^m`, 0 when terminated.
    pub discounts: Vec<f32>,
    /// Buffer slots the rows came from, `[batch]`: what
    /// [`PrioritizedReplay::update_priorities`](super::PrioritizedReplay::update_priorities)
    /// takes back.
    pub indices: Vec<usize>,
    /// Importance-sampling weights, `[batch]`: all 1 for uniform sampling,
    /// normalized so the largest possible weight is 1 for prioritized sampling.
    pub weights: Vec<f32>,
}

impl Batch {
    /// Number of transitions in the batch.
    pub fn len(&self) -> usize {
        self.rewards.len()
    }

    /// Whether the batch holds no transitions.
    pub fn is_empty(&self) -> bool {
        self.rewards.is_empty()
    }

    /// Entries per observation row (0 for an empty batch).
    pub fn obs_dim(&self) -> usize {
        self.obs.len().checked_div(self.len()).unwrap_or(0)
    }
}
