//! Schedules for exploration (ε) and prioritized replay's β.

use serde::{Deserialize, Serialize};

/// A value that moves from `start` to `end` over the first `fraction` of a run
/// and then stays at `end`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Value at step 0.
    pub start: f64,
    /// Value from the end of the schedule on.
    pub end: f64,
    /// Fraction of the run's total steps over which the value moves.
    pub fraction: f64,
    /// How it moves.
    pub shape: Shape,
}

/// How a [`Schedule`] moves between its ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// Straight line.
    Linear,
    /// Geometric decay: the gap to `end` shrinks by the same factor each step,
    /// reaching 1% of its start at the schedule's end.
    Exponential,
}

impl Schedule {
    /// Linear from `start` to `end` over `fraction` of the run.
    pub fn linear(start: f64, end: f64, fraction: f64) -> Self {
        Self {
            start,
            end,
            fraction,
            shape: Shape::Linear,
        }
    }

    /// The value at `step` of a run of `total_steps`.
    pub fn value(&self, step: u64, total_steps: u64) -> f64 {
        let span = self.fraction * total_steps as f64;
        if span <= 0.0 {
            return self.end;
        }
        let progress = step as f64 / span;
        if progress >= 1.0 {
            return self.end;
        }
        match self.shape {
            Shape::Linear => self.start + (self.end - self.start) * progress,
            Shape::Exponential => self.end + (self.start - self.end) * 0.01f64.powf(progress),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_hits_its_ends_and_midpoint() {
        let s = Schedule::linear(1.0, 0.04, 0.16);
        assert_eq!(s.value(0, 50_000), 1.0);
        assert!((s.value(4_000, 50_000) - 0.52).abs() < 1e-12);
        assert_eq!(s.value(8_000, 50_000), 0.04);
        assert_eq!(s.value(49_999, 50_000), 0.04);
    }

    #[test]
    fn exponential_decays_geometrically_to_its_end() {
        let s = Schedule {
            shape: Shape::Exponential,
            ..Schedule::linear(1.0, 0.0, 0.5)
        };
        assert_eq!(s.value(0, 100), 1.0);
        assert!(
            (s.value(25, 100) - 0.1).abs() < 1e-12,
            "halfway: 1% ^ 0.5 = 0.1"
        );
        assert_eq!(s.value(50, 100), 0.0);
    }
}
