//! Exploration on the actor: ε-greedy for discrete policies, Gaussian or
//! Ornstein–Uhlenbeck action noise for continuous ones, from a seeded generator.
//!
//! Exploration runs before the safety layer, so noisy actions are still clamped and
//! rate-limited; the transition records the action actually sent.

use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rand_pcg::Pcg64Mcg;
use reflex_msgs::{Action, ActionSpace};

use crate::actor::ActorOutput;
use crate::config::{Mode, ModeConfig, Noise};

/// Turns a greedy [`ActorOutput`] into the proposed [`Action`].
#[derive(Debug, Clone)]
pub struct Explorer {
    mode: Mode,
    noise: Noise,
    epsilon: f64,
    sigma: f64,
    ou_theta: f64,
    /// Per-dimension noise scale (sigma × half range, or sigma where unbounded).
    scale: Vec<f32>,
    ou: Vec<f32>,
    rng: Pcg64Mcg,
}

impl Explorer {
    /// An explorer for `space` with the configured mode and per-actor parameters.
    pub fn new(config: &ModeConfig, space: &ActionSpace) -> Self {
        let mut explorer = Self {
            mode: config.kind,
            noise: config.noise,
            epsilon: config.actor_epsilon(),
            sigma: config.sigma,
            ou_theta: config.ou_theta,
            scale: Vec::new(),
            ou: Vec::new(),
            rng: Pcg64Mcg::seed_from_u64(config.seed),
        };
        explorer.set_space(space);
        explorer
    }

    /// Adapts the noise scale to a (new policy's) action space.
    pub fn set_space(&mut self, space: &ActionSpace) {
        if let ActionSpace::Box(bounds) = space {
            self.scale = bounds
                .low
                .iter()
                .zip(&bounds.high)
                .map(|(&l, &h)| {
                    let half = (f64::from(h) - f64::from(l)) / 2.0;
                    let half = if half.is_finite() { half } else { 1.0 };
                    (self.sigma * half) as f32
                })
                .collect();
            self.ou = vec![0.0; bounds.dim()];
        } else {
            self.scale.clear();
            self.ou.clear();
        }
    }

    /// The ε this actor uses.
    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }

    /// Starts a new episode (resets the OU process).
    pub fn reset(&mut self) {
        self.ou.iter_mut().for_each(|x| *x = 0.0);
    }

    /// The action to propose for the greedy `output` (over `n` actions when discrete).
    pub fn propose(&mut self, output: ActorOutput<'_>, space: &ActionSpace) -> Action {
        match (output, self.mode) {
            (ActorOutput::Discrete { action, .. }, Mode::Deploy) => Action::Discrete(action),
            (ActorOutput::Continuous { action }, Mode::Deploy) => {
                Action::Continuous(action.to_vec())
            }
            (ActorOutput::Discrete { action, q }, Mode::Explore) => {
                let n = match space {
                    ActionSpace::Discrete { n } => *n,
                    ActionSpace::Box(_) => q.len() as u32,
                };
                if n > 0 && self.rng.random::<f64>() < self.epsilon {
                    Action::Discrete(self.rng.random_range(0..n))
                } else {
                    Action::Discrete(action)
                }
            }
            (ActorOutput::Continuous { action }, Mode::Explore) => {
                let mut out = action.to_vec();
                for (i, v) in out.iter_mut().enumerate() {
                    let scale = self.scale.get(i).copied().unwrap_or(self.sigma as f32);
                    let z: f32 = self.rng.sample(StandardNormal);
                    let noise = match self.noise {
                        Noise::Gaussian => scale * z,
                        Noise::Ou => {
                            if let Some(x) = self.ou.get_mut(i) {
                                *x += -(self.ou_theta as f32) * *x + scale * z;
                                *x
                            } else {
                                scale * z
                            }
                        }
                    };
                    *v += noise;
                }
                Action::Continuous(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use reflex_msgs::BoxSpace;

    use super::*;

    fn explore(epsilon: f64, seed: u64) -> ModeConfig {
        ModeConfig {
            kind: Mode::Explore,
            epsilon,
            seed,
            ..ModeConfig::default()
        }
    }

    #[test]
    fn deploy_is_greedy() {
        let space = ActionSpace::Discrete { n: 4 };
        let mut e = Explorer::new(&ModeConfig::default(), &space);
        for _ in 0..100 {
            let a = e.propose(
                ActorOutput::Discrete {
                    action: 2,
                    q: &[0.0; 4],
                },
                &space,
            );
            assert_eq!(a, Action::Discrete(2));
        }
    }

    #[test]
    fn epsilon_greedy_rate_and_seed() {
        let space = ActionSpace::Discrete { n: 4 };
        let run = |seed| {
            let mut e = Explorer::new(&explore(0.2, seed), &space);
            (0..10_000)
                .map(|_| {
                    e.propose(
                        ActorOutput::Discrete {
                            action: 0,
                            q: &[0.0; 4],
                        },
                        &space,
                    )
                })
                .collect::<Vec<_>>()
        };
        let a = run(1);
        assert_eq!(a, run(1), "same seed, same actions");
        assert_ne!(a, run(2));
        // Non-greedy picks: ε · 3/4 = 15% expected.
        let off = a.iter().filter(|x| **x != Action::Discrete(0)).count();
        assert!((1200..1800).contains(&off), "{off}");
        assert!(a.iter().all(|x| x.as_discrete().unwrap() < 4));
    }

    #[test]
    fn gaussian_and_ou_noise_scale_with_bounds() {
        let space = ActionSpace::Box(BoxSpace::new(vec![-2.0], vec![2.0]).unwrap());
        for noise in [Noise::Gaussian, Noise::Ou] {
            let config = ModeConfig {
                noise,
                sigma: 0.1,
                ..explore(0.0, 3)
            };
            let mut e = Explorer::new(&config, &space);
            let xs: Vec<f32> = (0..5000)
                .map(|_| {
                    e.propose(ActorOutput::Continuous { action: &[0.5] }, &space)
                        .as_continuous()
                        .unwrap()[0]
                        - 0.5
                })
                .collect();
            let mean = xs.iter().sum::<f32>() / xs.len() as f32;
            let std =
                (xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / xs.len() as f32).sqrt();
            assert!(mean.abs() < 0.1, "{noise:?} mean {mean}");
            // Gaussian: sigma · half range = 0.2; OU's stationary std is larger.
            let expect = if noise == Noise::Gaussian {
                0.2
            } else {
                0.2 / (1.0f32 - 0.85 * 0.85).sqrt()
            };
            assert!(
                (std - expect).abs() < 0.25 * expect,
                "{noise:?} std {std} vs {expect}"
            );
        }
    }
}
