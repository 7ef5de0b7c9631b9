//! The safety layer: the last word on what reaches the actuators.
//!
//! It runs after the policy and exploration on every tick, in this order:
//!
//! 1. **E-stop** engaged → the safe action, until the stop is cleared.
//! 2. **Sensor watchdog** tripped (no fresh observation within the deadline) → the
//!    safe action, and the status is flagged.
//! 3. **Invalid output** → the safe action: a discrete index out of range, a
//!    continuous vector of the wrong length, or any non-finite value (counted).
//! 4. **Clamp** every continuous dimension to the policy spec's bounds (always on).
//! 5. **Rate limit** (optional): each continuous dimension moves at most
//!    `max_rate_per_s / rate_hz` from the previous tick's output. The safe action is
//!    never rate-limited: stopping must not be delayed.
//!
//! Every tick where the output differs from the proposal counts as an intervention
//! ([`SafetyCounters`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use reflex_msgs::{Action, ActionSpace};

use crate::config::SafetyConfig;

/// Why a safety configuration does not fit the policy's action space.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SafetyError {
    /// The safe action index is not below the number of actions.
    #[error("safety.safe_action_index = {index} is out of range for {n} discrete actions")]
    SafeIndexOutOfRange {
        /// Configured index.
        index: u32,
        /// Number of actions.
        n: u32,
    },
    /// The configured safe action has the wrong dimension.
    #[error("safety.safe_action has {found} values; the action space has {expected} dimensions")]
    SafeActionDim {
        /// Action dimension.
        expected: usize,
        /// Values configured.
        found: usize,
    },
    /// The configured safe action lies outside the action bounds.
    #[error("safety.safe_action[{index}] = {value} is outside the action bounds [{low}, {high}]")]
    SafeActionOutOfBounds {
        /// Dimension.
        index: usize,
        /// Configured value.
        value: f32,
        /// Lower bound.
        low: f32,
        /// Upper bound.
        high: f32,
    },
    /// The rate limit has neither one value nor one per dimension.
    #[error("safety.max_rate_per_s has {found} values; need 1 or {expected}")]
    RateLimitDim {
        /// Action dimension.
        expected: usize,
        /// Values configured.
        found: usize,
    },
    /// The action space itself is invalid.
    #[error("invalid action space: {0}")]
    Space(#[from] reflex_msgs::SpaceError),
}

/// An external emergency stop: engaged from anywhere (a button driver, an operator
/// command, a signal handler), it forces the safe action until cleared. Cloning shares
/// the same stop.
#[derive(Debug, Clone, Default)]
pub struct EStop(Arc<AtomicBool>);

impl EStop {
    /// A stop in the given state.
    pub fn new(engaged: bool) -> Self {
        Self(Arc::new(AtomicBool::new(engaged)))
    }
    /// Engages the stop: the next tick sends the safe action.
    pub fn engage(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// Clears the stop: the policy drives again from the next tick.
    pub fn clear(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
    /// Whether the stop is engaged.
    pub fn is_engaged(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What the safety layer did on one tick (several may apply).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The e-stop forced the safe action.
    pub estop: bool,
    /// The sensor watchdog forced the safe action.
    pub watchdog: bool,
    /// The proposal had a non-finite value (→ safe action).
    pub non_finite: bool,
    /// The proposal was out of range or of the wrong shape (→ safe action).
    pub invalid: bool,
    /// At least one dimension was clamped to the bounds.
    pub clamped: bool,
    /// At least one dimension was rate-limited.
    pub rate_limited: bool,
}

impl Verdict {
    /// Whether the output differs from the proposal.
    pub fn intervened(&self) -> bool {
        self.estop
            || self.watchdog
            || self.non_finite
            || self.invalid
            || self.clamped
            || self.rate_limited
    }

    /// Whether the safe action was sent.
    pub fn safe_action(&self) -> bool {
        self.estop || self.watchdog || self.non_finite || self.invalid
    }
}

/// Totals since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SafetyCounters {
    /// Ticks where the output differed from the proposal.
    pub interventions: u64,
    /// Ticks with a non-finite proposal.
    pub non_finite: u64,
    /// Ticks with an out-of-range or misshapen proposal.
    pub invalid: u64,
    /// Ticks with at least one clamped dimension.
    pub clamped: u64,
    /// Ticks with at least one rate-limited dimension.
    pub rate_limited: u64,
    /// Ticks forced to the safe action by the watchdog.
    pub watchdog: u64,
    /// Ticks forced to the safe action by the e-stop.
    pub estop: u64,
}

/// The safety layer for one action space.
#[derive(Debug, Clone)]
pub struct Safety {
    space: ActionSpace,
    safe: Action,
    /// Largest change per tick, per dimension (continuous only).
    max_step: Option<Vec<f32>>,
    /// The previous tick's output (continuous only), for the rate limit.
    last: Option<Vec<f32>>,
    counters: SafetyCounters,
}

impl Safety {
    /// Builds the layer for `space` from `config`, at `rate_hz` ticks per second
    /// (which turns the per-second rate limit into a per-tick one).
    pub fn new(
        space: &ActionSpace,
        config: &SafetyConfig,
        rate_hz: f64,
    ) -> Result<Self, SafetyError> {
        space.validate()?;
        let (safe, max_step) = match space {
            ActionSpace::Discrete { n } => {
                if config.safe_action_index >= *n {
                    return Err(SafetyError::SafeIndexOutOfRange {
                        index: config.safe_action_index,
                        n: *n,
                    });
                }
                (Action::Discrete(config.safe_action_index), None)
            }
            ActionSpace::Box(bounds) => {
                let dim = bounds.dim();
                let safe = if config.safe_action.is_empty() {
                    bounds
                        .low
                        .iter()
                        .zip(&bounds.high)
                        .map(|(&l, &h)| 0f32.clamp(l, h))
                        .collect()
                } else if config.safe_action.len() != dim {
                    return Err(SafetyError::SafeActionDim {
                        expected: dim,
                        found: config.safe_action.len(),
                    });
                } else {
                    for (index, ((&value, &low), &high)) in config
                        .safe_action
                        .iter()
                        .zip(&bounds.low)
                        .zip(&bounds.high)
                        .enumerate()
                    {
                        if !(low <= value && value <= high) {
                            return Err(SafetyError::SafeActionOutOfBounds {
                                index,
                                value,
                                low,
                                high,
                            });
                        }
                    }
                    config.safe_action.clone()
                };
                let max_step = match config.max_rate_per_s.len() {
                    0 => None,
                    1 => Some(vec![
                        (f64::from(config.max_rate_per_s[0]) / rate_hz) as f32;
                        dim
                    ]),
                    n if n == dim => Some(
                        config
                            .max_rate_per_s
                            .iter()
                            .map(|&r| (f64::from(r) / rate_hz) as f32)
                            .collect(),
                    ),
                    found => {
                        return Err(SafetyError::RateLimitDim {
                            expected: dim,
                            found,
                        })
                    }
                };
                (Action::Continuous(safe), max_step)
            }
        };
        Ok(Self {
            space: space.clone(),
            safe,
            max_step,
            last: None,
            counters: SafetyCounters::default(),
        })
    }

    /// The configured safe action.
    pub fn safe_action(&self) -> &Action {
        &self.safe
    }

    /// The action space guarded.
    pub fn space(&self) -> &ActionSpace {
        &self.space
    }

    /// Totals since start.
    pub fn counters(&self) -> SafetyCounters {
        self.counters
    }

    /// Forgets the previous output, so the next action is not rate-limited against it
    /// (e.g. the robot was reset).
    pub fn forget_last(&mut self) {
        self.last = None;
    }

    /// The action to send when the policy produced nothing (it failed, or the
    /// observation was unusable): the safe action, counted as an invalid proposal.
    pub fn fallback(&mut self, watchdog_tripped: bool, estop: bool) -> (Action, Verdict) {
        self.filter_inner(Proposal::Nothing, watchdog_tripped, estop)
    }

    /// The action to send when a discrete policy's Q-values were NaN or
    /// infinite (their argmax means nothing): the safe action, counted as a
    /// non-finite proposal.
    pub fn non_finite(&mut self, watchdog_tripped: bool, estop: bool) -> (Action, Verdict) {
        self.filter_inner(Proposal::NonFinite, watchdog_tripped, estop)
    }

    /// Filters one proposed action into the action to send.
    pub fn filter(
        &mut self,
        proposed: Action,
        watchdog_tripped: bool,
        estop: bool,
    ) -> (Action, Verdict) {
        self.filter_inner(Proposal::Action(proposed), watchdog_tripped, estop)
    }

    fn filter_inner(
        &mut self,
        proposed: Proposal,
        watchdog_tripped: bool,
        estop: bool,
    ) -> (Action, Verdict) {
        let mut verdict = Verdict {
            estop,
            watchdog: watchdog_tripped && !estop,
            ..Verdict::default()
        };
        let out = if verdict.estop || verdict.watchdog {
            self.safe.clone()
        } else {
            match (&self.space, proposed) {
                (_, Proposal::NonFinite) => {
                    verdict.non_finite = true;
                    self.safe.clone()
                }
                (ActionSpace::Discrete { n }, Proposal::Action(Action::Discrete(index)))
                    if index < *n =>
                {
                    Action::Discrete(index)
                }
                (ActionSpace::Box(bounds), Proposal::Action(Action::Continuous(mut values)))
                    if values.len() == bounds.dim() =>
                {
                    if values.iter().any(|v| !v.is_finite()) {
                        verdict.non_finite = true;
                        self.safe.clone()
                    } else {
                        for ((v, &low), &high) in
                            values.iter_mut().zip(&bounds.low).zip(&bounds.high)
                        {
                            let c = v.clamp(low, high);
                            verdict.clamped |= c != *v;
                            *v = c;
                        }
                        if let (Some(max_step), Some(last)) = (&self.max_step, &self.last) {
                            for ((v, &step), &prev) in values.iter_mut().zip(max_step).zip(last) {
                                let c = v.clamp(prev - step, prev + step);
                                verdict.rate_limited |= c != *v;
                                *v = c;
                            }
                        }
                        Action::Continuous(values)
                    }
                }
                _ => {
                    verdict.invalid = true;
                    self.safe.clone()
                }
            }
        };
        if let Action::Continuous(values) = &out {
            match &mut self.last {
                Some(last) => last.copy_from_slice(values),
                None => self.last = Some(values.clone()),
            }
        }
        let c = &mut self.counters;
        c.interventions += u64::from(verdict.intervened());
        c.non_finite += u64::from(verdict.non_finite);
        c.invalid += u64::from(verdict.invalid);
        c.clamped += u64::from(verdict.clamped);
        c.rate_limited += u64::from(verdict.rate_limited);
        c.watchdog += u64::from(verdict.watchdog);
        c.estop += u64::from(verdict.estop);
        (out, verdict)
    }
}

/// What the policy proposed, as the safety layer sees it.
enum Proposal {
    /// An action.
    Action(Action),
    /// Nothing (it failed, or the observation was unusable).
    Nothing,
    /// Values that were NaN or infinite before they became an action.
    NonFinite,
}

/// The sensor watchdog: tripped when no fresh observation arrived within a deadline.
#[derive(Debug, Clone)]
pub struct Watchdog {
    deadline: Option<std::time::Duration>,
    last_fresh: Option<std::time::Instant>,
    armed_at: std::time::Instant,
}

impl Watchdog {
    /// A watchdog with the given deadline (`None` = never trips), armed at `now`: it
    /// trips if the first observation does not come within the deadline either.
    pub fn new(deadline: Option<std::time::Duration>, now: std::time::Instant) -> Self {
        Self {
            deadline,
            last_fresh: None,
            armed_at: now,
        }
    }

    /// Records a fresh observation at `now`.
    pub fn feed(&mut self, now: std::time::Instant) {
        self.last_fresh = Some(now);
    }

    /// Whether the watchdog is tripped at `now`.
    pub fn tripped(&self, now: std::time::Instant) -> bool {
        match self.deadline {
            None => false,
            Some(deadline) => {
                now.saturating_duration_since(self.last_fresh.unwrap_or(self.armed_at)) > deadline
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use reflex_msgs::BoxSpace;

    use super::*;

    fn box_space() -> ActionSpace {
        ActionSpace::Box(BoxSpace::new(vec![-2.0, 0.0], vec![2.0, 1.0]).unwrap())
    }

    fn cont(values: &[f32]) -> Action {
        Action::Continuous(values.to_vec())
    }

    #[test]
    fn clamps_to_bounds() {
        let mut s = Safety::new(&box_space(), &SafetyConfig::default(), 100.0).unwrap();
        let (out, v) = s.filter(cont(&[3.0, -0.5]), false, false);
        assert_eq!(out, cont(&[2.0, 0.0]));
        assert!(v.clamped && v.intervened() && !v.safe_action());
        let (out, v) = s.filter(cont(&[1.0, 0.5]), false, false);
        assert_eq!(out, cont(&[1.0, 0.5]));
        assert!(!v.intervened());
        assert_eq!(s.counters().clamped, 1);
        assert_eq!(s.counters().interventions, 1);
    }

    #[test]
    fn non_finite_gives_safe_action_and_is_counted() {
        let mut s = Safety::new(&box_space(), &SafetyConfig::default(), 100.0).unwrap();
        // The default safe action is 0 clamped into the bounds.
        assert_eq!(s.safe_action(), &cont(&[0.0, 0.0]));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let (out, v) = s.filter(cont(&[0.5, bad]), false, false);
            assert_eq!(out, cont(&[0.0, 0.0]));
            assert!(v.non_finite && v.safe_action());
        }
        assert_eq!(s.counters().non_finite, 3);
        assert_eq!(s.counters().interventions, 3);
    }

    #[test]
    fn wrong_shape_or_kind_gives_safe_action() {
        let mut s = Safety::new(&box_space(), &SafetyConfig::default(), 100.0).unwrap();
        let (out, v) = s.filter(cont(&[0.5]), false, false);
        assert_eq!(out, cont(&[0.0, 0.0]));
        assert!(v.invalid);
        let (_, v) = s.filter(Action::Discrete(0), false, false);
        assert!(v.invalid);
        assert_eq!(s.counters().invalid, 2);
    }

    #[test]
    fn discrete_out_of_range_refused() {
        let config = SafetyConfig {
            safe_action_index: 1,
            ..SafetyConfig::default()
        };
        let space = ActionSpace::Discrete { n: 3 };
        let mut s = Safety::new(&space, &config, 100.0).unwrap();
        assert_eq!(
            s.filter(Action::Discrete(2), false, false).0,
            Action::Discrete(2)
        );
        let (out, v) = s.filter(Action::Discrete(3), false, false);
        assert_eq!(out, Action::Discrete(1));
        assert!(v.invalid);
        assert_eq!(s.counters().invalid, 1);
        // A safe index out of range is a configuration error.
        let bad = SafetyConfig {
            safe_action_index: 3,
            ..SafetyConfig::default()
        };
        assert_eq!(
            Safety::new(&space, &bad, 100.0).unwrap_err(),
            SafetyError::SafeIndexOutOfRange { index: 3, n: 3 }
        );
    }

    #[test]
    fn safe_action_must_fit_the_space() {
        let config = SafetyConfig {
            safe_action: vec![0.0],
            ..SafetyConfig::default()
        };
        assert!(matches!(
            Safety::new(&box_space(), &config, 100.0),
            Err(SafetyError::SafeActionDim {
                expected: 2,
                found: 1
            })
        ));
        let config = SafetyConfig {
            safe_action: vec![0.0, 1.5],
            ..SafetyConfig::default()
        };
        assert!(matches!(
            Safety::new(&box_space(), &config, 100.0),
            Err(SafetyError::SafeActionOutOfBounds { index: 1, .. })
        ));
        let config = SafetyConfig {
            max_rate_per_s: vec![1.0, 2.0, 3.0],
            ..SafetyConfig::default()
        };
        assert!(matches!(
            Safety::new(&box_space(), &config, 100.0),
            Err(SafetyError::RateLimitDim {
                expected: 2,
                found: 3
            })
        ));
    }

    #[test]
    fn rate_limit_per_dimension() {
        // 10 units/s at 10 Hz = 1 unit per tick for dim 0; 1 unit/s = 0.1 per tick for dim 1.
        let config = SafetyConfig {
            max_rate_per_s: vec![10.0, 1.0],
            ..SafetyConfig::default()
        };
        let mut s = Safety::new(&box_space(), &config, 10.0).unwrap();
        // The first output has nothing to be limited against.
        assert_eq!(
            s.filter(cont(&[-2.0, 0.0]), false, false).0,
            cont(&[-2.0, 0.0])
        );
        let (out, v) = s.filter(cont(&[2.0, 1.0]), false, false);
        assert_eq!(out, cont(&[-1.0, 0.1]));
        assert!(v.rate_limited);
        let (out, _) = s.filter(cont(&[2.0, 1.0]), false, false);
        assert_eq!(out, cont(&[0.0, 0.2]));
        // Within the limit: untouched.
        let (out, v) = s.filter(cont(&[0.5, 0.25]), false, false);
        assert_eq!(out, cont(&[0.5, 0.25]));
        assert!(!v.intervened());
        assert_eq!(s.counters().rate_limited, 2);
    }

    #[test]
    fn safe_action_is_not_rate_limited() {
        let config = SafetyConfig {
            max_rate_per_s: vec![1.0],
            safe_action: vec![0.0, 0.0],
            ..SafetyConfig::default()
        };
        let mut s = Safety::new(&box_space(), &config, 10.0).unwrap();
        s.filter(cont(&[2.0, 1.0]), false, false);
        // E-stop jumps straight to the safe action.
        assert_eq!(
            s.filter(cont(&[2.0, 1.0]), false, true).0,
            cont(&[0.0, 0.0])
        );
        // Released: the policy ramps from the safe action.
        assert_eq!(
            s.filter(cont(&[2.0, 1.0]), false, false).0,
            cont(&[0.1, 0.1])
        );
    }

    #[test]
    fn watchdog_trips_and_recovers() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(Some(Duration::from_millis(100)), t0);
        assert!(!w.tripped(t0 + Duration::from_millis(50)));
        // No first observation within the deadline.
        assert!(w.tripped(t0 + Duration::from_millis(150)));
        w.feed(t0 + Duration::from_millis(150));
        assert!(!w.tripped(t0 + Duration::from_millis(200)));
        assert!(w.tripped(t0 + Duration::from_millis(251)));
        let off = Watchdog::new(None, t0);
        assert!(!off.tripped(t0 + Duration::from_secs(3600)));

        let mut s = Safety::new(
            &ActionSpace::Discrete { n: 2 },
            &SafetyConfig::default(),
            10.0,
        )
        .unwrap();
        let (out, v) = s.filter(Action::Discrete(1), true, false);
        assert_eq!(out, Action::Discrete(0));
        assert!(v.watchdog && v.safe_action());
        assert_eq!(s.counters().watchdog, 1);
    }

    #[test]
    fn estop_forces_safe_action_until_cleared() {
        let estop = EStop::new(false);
        let mut s = Safety::new(
            &ActionSpace::Discrete { n: 2 },
            &SafetyConfig::default(),
            10.0,
        )
        .unwrap();
        assert_eq!(
            s.filter(Action::Discrete(1), false, estop.is_engaged()).0,
            Action::Discrete(1)
        );
        let remote = estop.clone();
        remote.engage();
        for _ in 0..3 {
            let (out, v) = s.filter(Action::Discrete(1), false, estop.is_engaged());
            assert_eq!(out, Action::Discrete(0));
            assert!(v.estop && !v.watchdog);
        }
        remote.clear();
        assert_eq!(
            s.filter(Action::Discrete(1), false, estop.is_engaged()).0,
            Action::Discrete(1)
        );
        assert_eq!(s.counters().estop, 3);
        assert_eq!(s.counters().interventions, 3);
    }
}
