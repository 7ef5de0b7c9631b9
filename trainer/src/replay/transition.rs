//! What goes into replay: the action layout a buffer is built for, one env step
//! as an actor saw it ([`EnvStep`]), and the transition a buffer stores
//! ([`Transition`]), plus the action column both the buffer and the n-step
//! window store actions in.

use super::batch::BatchActions;
use super::error::ReplayError;
use super::try_vec;

/// How actions are stored: a discrete index, or a float vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionShape {
    /// Indices `0..n`, stored as one `u32` per transition.
    Discrete {
        /// Number of actions.
        n: u32,
    },
    /// Float vectors of `dim` entries, stored as `dim` `f32`s per transition.
    Continuous {
        /// Entries per action.
        dim: usize,
    },
}

impl ActionShape {
    /// Values stored per transition: 1 for discrete, `dim` for continuous.
    pub fn width(&self) -> usize {
        match *self {
            Self::Discrete { .. } => 1,
            Self::Continuous { dim } => dim,
        }
    }

    /// Refuses a shape with no actions (`n == 0`) or no entries (`dim == 0`).
    pub(super) fn validate(&self) -> Result<(), ReplayError> {
        match *self {
            Self::Discrete { n: 0 } => Err(ReplayError::Zero {
                what: "number of discrete actions",
            }),
            Self::Continuous { dim: 0 } => Err(ReplayError::Zero {
                what: "action dimension",
            }),
            _ => Ok(()),
        }
    }

    /// Refuses an action of the wrong kind, out of range, of the wrong length or
    /// not finite.
    pub(super) fn check(&self, action: ActionRef<'_>) -> Result<(), ReplayError> {
        match (*self, action) {
            (Self::Discrete { n }, ActionRef::Discrete(index)) if index >= n => {
                Err(ReplayError::ActionOutOfRange { index, n })
            }
            (Self::Discrete { .. }, ActionRef::Discrete(_)) => Ok(()),
            (Self::Continuous { dim }, ActionRef::Continuous(values)) => {
                check_row("action", values, dim)
            }
            (Self::Discrete { .. }, ActionRef::Continuous(_)) => Err(ReplayError::ActionKind {
                expected: "discrete",
                got: "continuous",
            }),
            (Self::Continuous { .. }, ActionRef::Discrete(_)) => Err(ReplayError::ActionKind {
                expected: "continuous",
                got: "discrete",
            }),
        }
    }
}

impl From<&reflex_msgs::ActionSpace> for ActionShape {
    /// `Discrete { n }` for a discrete space, `Continuous { dim }` with the box's
    /// dimension otherwise.
    fn from(space: &reflex_msgs::ActionSpace) -> Self {
        match space {
            reflex_msgs::ActionSpace::Discrete { n } => Self::Discrete { n: *n },
            reflex_msgs::ActionSpace::Box(space) => Self::Continuous {
                dim: space.low.len(),
            },
        }
    }
}

/// A borrowed action: a discrete index or a float vector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ActionRef<'a> {
    /// Index of the chosen action.
    Discrete(u32),
    /// The action vector.
    Continuous(&'a [f32]),
}

impl<'a> From<&'a reflex_msgs::Action> for ActionRef<'a> {
    fn from(action: &'a reflex_msgs::Action) -> Self {
        match action {
            reflex_msgs::Action::Discrete(index) => Self::Discrete(*index),
            reflex_msgs::Action::Continuous(values) => Self::Continuous(values),
        }
    }
}

/// One environment step as the actor saw it: what the n-step accumulator takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnvStep<'a> {
    /// Observation the action was chosen from, `obs_dim` entries.
    pub obs: &'a [f32],
    /// Action taken.
    pub action: ActionRef<'a>,
    /// Reward received for the step.
    pub reward: f32,
    /// Observation after the step, `obs_dim` entries.
    pub next_obs: &'a [f32],
    /// `next_obs` is terminal: nothing is bootstrapped from it.
    pub terminated: bool,
    /// The episode was cut off at `next_obs` (time limit): bootstrap from it.
    pub truncated: bool,
}

impl<'a> EnvStep<'a> {
    /// The step that took `action` in `obs`, as the env reported it in
    /// `result`, ending in `next_obs`.
    pub fn new(
        obs: &'a [f32],
        action: &'a reflex_msgs::Action,
        result: &reflex_sim::Step,
        next_obs: &'a [f32],
    ) -> Self {
        Self {
            obs,
            action: ActionRef::from(action),
            reward: result.reward as f32,
            next_obs,
            terminated: result.terminated,
            truncated: result.truncated,
        }
    }

    /// The one-step transition: discount `gamma`, or 0 when terminated.
    /// Truncation does not change it (a time limit is not a terminal state).
    pub fn one_step(&self, gamma: f32) -> Transition<'a> {
        Transition {
            obs: self.obs,
            action: self.action,
            reward: self.reward,
            next_obs: self.next_obs,
            discount: if self.terminated { 0.0 } else { gamma },
        }
    }

    /// Refuses rows of the wrong length and non-finite values.
    pub(super) fn check(&self, obs_dim: usize, action: ActionShape) -> Result<(), ReplayError> {
        check_row("obs", self.obs, obs_dim)?;
        check_row("next_obs", self.next_obs, obs_dim)?;
        action.check(self.action)?;
        if !self.reward.is_finite() {
            return Err(ReplayError::NonFinite { what: "reward" });
        }
        Ok(())
    }
}

/// A transition as a replay buffer stores it. The learner's target is
/// `reward + discount · V(next_obs)`: `reward` is the (possibly n-step) return
/// and `discount` is `γ^m` for an `m`-step return, 0 when the episode terminated
/// within those steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition<'a> {
    /// Observation the action was chosen from, `obs_dim` entries.
    pub obs: &'a [f32],
    /// Action taken.
    pub action: ActionRef<'a>,
    /// Return over the transition's steps: `Σ_{k<m} γ^k r_{t+k}`.
    pub reward: f32,
    /// Observation to bootstrap from, `m` steps after `obs`.
    pub next_obs: &'a [f32],
    /// Factor on the bootstrapped value: `γ^m`, or 0 when terminated. In `[0, 1]`.
    pub discount: f32,
}

impl Transition<'_> {
    /// Refuses rows of the wrong length, non-finite values and a discount
    /// outside `[0, 1]`.
    pub(super) fn check(&self, obs_dim: usize, action: ActionShape) -> Result<(), ReplayError> {
        check_row("obs", self.obs, obs_dim)?;
        check_row("next_obs", self.next_obs, obs_dim)?;
        action.check(self.action)?;
        if !self.reward.is_finite() {
            return Err(ReplayError::NonFinite { what: "reward" });
        }
        check_unit("discount", f64::from(self.discount))
    }
}

/// Refuses a row of the wrong length or with a non-finite entry.
pub(super) fn check_row(what: &'static str, row: &[f32], width: usize) -> Result<(), ReplayError> {
    if row.len() != width {
        return Err(ReplayError::LengthMismatch {
            what,
            expected: width,
            got: row.len(),
        });
    }
    if row.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(ReplayError::NonFinite { what })
    }
}

/// Refuses a value outside `[0, 1]` (NaN included).
pub(super) fn check_unit(what: &'static str, value: f64) -> Result<(), ReplayError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(ReplayError::OutOfRange {
            what,
            value,
            range: "[0, 1]",
        })
    }
}

/// Actions stored row by row: one `u32` per row, or `dim` `f32`s per row.
/// Callers check actions with [`ActionShape::check`] before storing them.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum ActionColumn {
    /// Discrete indices.
    Discrete(Vec<u32>),
    /// Continuous vectors, row-major.
    Continuous {
        /// Entries per row.
        dim: usize,
        /// `rows × dim` values.
        data: Vec<f32>,
    },
}

impl ActionColumn {
    /// A zero-filled column of `rows` rows.
    pub(super) fn zeros(shape: ActionShape, rows: usize) -> Result<Self, ReplayError> {
        Ok(match shape {
            ActionShape::Discrete { .. } => Self::Discrete(try_vec("actions", rows, 1, 0)?),
            ActionShape::Continuous { dim } => Self::Continuous {
                dim,
                data: try_vec("actions", rows, dim, 0.0)?,
            },
        })
    }

    /// Stores `action` at `row`. An action of the other kind is ignored: callers
    /// check actions against the shape first.
    pub(super) fn set(&mut self, row: usize, action: ActionRef<'_>) {
        match (self, action) {
            (Self::Discrete(data), ActionRef::Discrete(index)) => data[row] = index,
            (Self::Continuous { dim, data }, ActionRef::Continuous(values)) => {
                data[row * *dim..(row + 1) * *dim].copy_from_slice(values);
            }
            _ => {}
        }
    }

    /// The action at `row`.
    pub(super) fn get(&self, row: usize) -> ActionRef<'_> {
        match self {
            Self::Discrete(data) => ActionRef::Discrete(data[row]),
            Self::Continuous { dim, data } => {
                ActionRef::Continuous(&data[row * *dim..(row + 1) * *dim])
            }
        }
    }

    /// Appends the actions at `rows` to `out` (cleared first, and switched to
    /// this column's kind when it is the other one).
    pub(super) fn gather_into(&self, rows: &[usize], out: &mut BatchActions) {
        match self {
            Self::Discrete(data) => {
                if !matches!(out, BatchActions::Discrete(_)) {
                    *out = BatchActions::Discrete(Vec::with_capacity(rows.len()));
                }
                if let BatchActions::Discrete(dst) = out {
                    dst.clear();
                    dst.extend(rows.iter().map(|&row| data[row]));
                }
            }
            Self::Continuous { dim, data } => {
                if !matches!(out, BatchActions::Continuous(_)) {
                    *out = BatchActions::Continuous(Vec::with_capacity(rows.len() * dim));
                }
                if let BatchActions::Continuous(dst) = out {
                    dst.clear();
                    for &row in rows {
                        dst.extend_from_slice(&data[row * dim..(row + 1) * dim]);
                    }
                }
            }
        }
    }
}
