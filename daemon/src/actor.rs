//! The seam between the control loop and whatever computes actions.
//!
//! The control loop, the safety layer and the hot-swap never see tract: they drive an
//! [`Actor`], a policy that maps one observation to a greedy output, and load new
//! ones through a [`Loader`]. The tract ONNX runtime implements [`Actor`] in a few
//! lines; tests implement it with hand-written controllers.

use std::sync::Arc;

use reflex_msgs::{Action, PolicySpec};

/// Why an actor failed to load or to step: any error, kept as a boxed source so that
/// the runtime's own error type (and its chain) survives into logs.
pub type ActorError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The greedy output of one policy step, before exploration and safety.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ActorOutput<'a> {
    /// A discrete policy: the greedy index and the Q-values it was chosen from.
    Discrete {
        /// `argmax q`.
        action: u32,
        /// One Q-value per action.
        q: &'a [f32],
    },
    /// A continuous policy: the action vector (already in the spec's bounds if the
    /// policy honours the contract; the safety layer clamps it anyway).
    Continuous {
        /// One value per action dimension.
        action: &'a [f32],
    },
}

/// A loaded policy the control loop can step.
///
/// It is moved between threads (loaded and validated on the swap thread, stepped on
/// the control thread), so it must be `Send`; it is never shared.
pub trait Actor: Send {
    /// What the policy is: spaces, version, algorithm.
    fn spec(&self) -> &PolicySpec;

    /// The policy version carried in every action, transition and status
    /// (`spec().policy_version` unless overridden).
    fn version(&self) -> u64 {
        self.spec().policy_version
    }

    /// One greedy step from `obs` (of the spec's observation dimension). A recurrent
    /// policy advances its hidden state.
    fn step(&mut self, obs: &[f32]) -> Result<ActorOutput<'_>, ActorError>;

    /// Forgets the recurrent state (new episode, or a freshly swapped-in policy).
    /// A feed-forward policy does nothing.
    fn reset(&mut self);

    /// The action actually sent after this step (after exploration and safety): a
    /// recurrent policy's previous-action input for its next step. The default
    /// ignores it.
    fn observe_applied(&mut self, _action: &Action) {}

    /// The recurrent state `(h, c)` before the next step, for R2D2 stored state in
    /// transitions; `None` (the default) when the policy is feed-forward or does not
    /// expose it.
    fn recurrent_state(&self) -> Option<(&[f32], &[f32])> {
        None
    }
}

impl<A: Actor + ?Sized> Actor for Box<A> {
    fn spec(&self) -> &PolicySpec {
        (**self).spec()
    }
    fn version(&self) -> u64 {
        (**self).version()
    }
    fn step(&mut self, obs: &[f32]) -> Result<ActorOutput<'_>, ActorError> {
        (**self).step(obs)
    }
    fn reset(&mut self) {
        (**self).reset()
    }
    fn observe_applied(&mut self, action: &Action) {
        (**self).observe_applied(action)
    }
    fn recurrent_state(&self) -> Option<(&[f32], &[f32])> {
        (**self).recurrent_state()
    }
}

/// Turns policy file bytes (an ONNX model) into an [`Actor`]; runs on the swap thread,
/// never on the control thread.
pub type Loader = Arc<dyn Fn(&[u8]) -> Result<Box<dyn Actor>, ActorError> + Send + Sync>;
