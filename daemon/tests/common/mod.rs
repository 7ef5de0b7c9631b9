//! Test policies for the daemon's integration tests: small hand-written controllers
//! behind the [`Actor`] trait, and a loader that reads them from JSON "policy files".
#![allow(dead_code)]

use std::sync::Arc;

use reflex_daemon::{Actor, ActorError, ActorOutput, Loader};
use reflex_msgs::{Action, ActionSpace, BoxSpace, PolicySpec};
use serde::{Deserialize, Serialize};

/// A linear policy `y = W · obs + b`: Q-values (argmax = action) for a discrete spec,
/// the action itself for a continuous one. `nan` makes every output NaN (a broken
/// policy); `fail_load` makes the loader refuse it; `panic` makes every step panic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Linear {
    pub spec: PolicySpec,
    pub w: Vec<Vec<f32>>,
    pub b: Vec<f32>,
    #[serde(default)]
    pub nan: bool,
    #[serde(default)]
    pub fail_load: bool,
    /// Panic in every step (a runtime fault inside a policy).
    #[serde(default)]
    pub panic: bool,
    #[serde(skip)]
    out: Vec<f32>,
    /// Episode-local step counter, standing in for recurrent state (reset() zeroes it).
    #[serde(skip)]
    pub steps_since_reset: u64,
    /// A stand-in recurrent state, so loop tests can check what the control loop
    /// feeds back and records: `h` = the last action `observe_applied` reported
    /// (`[-1]` after a reset), `c` = `[steps_since_reset]`.
    #[serde(skip, default = "no_action")]
    state_h: Vec<f32>,
    #[serde(skip, default = "zero_steps")]
    state_c: Vec<f32>,
}

fn no_action() -> Vec<f32> {
    vec![-1.0]
}

fn zero_steps() -> Vec<f32> {
    vec![0.0]
}

impl Linear {
    pub fn new(spec: PolicySpec, w: Vec<Vec<f32>>, b: Vec<f32>) -> Self {
        Self {
            spec,
            w,
            b,
            nan: false,
            fail_load: false,
            panic: false,
            out: Vec::new(),
            steps_since_reset: 0,
            state_h: no_action(),
            state_c: zero_steps(),
        }
    }

    /// The policy as "file bytes" for [`loader`].
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap()
    }
}

impl Actor for Linear {
    fn spec(&self) -> &PolicySpec {
        &self.spec
    }

    fn step(&mut self, obs: &[f32]) -> Result<ActorOutput<'_>, ActorError> {
        if obs.len() != self.spec.observation_space.dim() {
            return Err(format!("obs has {} values", obs.len()).into());
        }
        assert!(!self.panic, "this policy panics in every step");
        self.steps_since_reset += 1;
        // A broken policy's state goes NaN with its outputs.
        let c = if self.nan {
            f32::NAN
        } else {
            self.steps_since_reset as f32
        };
        self.state_c = vec![c];
        self.out.clear();
        for (row, b) in self.w.iter().zip(&self.b) {
            let y: f32 = row.iter().zip(obs).map(|(w, x)| w * x).sum::<f32>() + b;
            self.out.push(if self.nan { f32::NAN } else { y });
        }
        Ok(match self.spec.action_space {
            ActionSpace::Discrete { .. } => {
                let mut best = 0;
                for (i, q) in self.out.iter().enumerate() {
                    if *q > self.out[best] {
                        best = i;
                    }
                }
                ActorOutput::Discrete {
                    action: best as u32,
                    q: &self.out,
                }
            }
            ActionSpace::Box(_) => ActorOutput::Continuous { action: &self.out },
        })
    }

    fn reset(&mut self) {
        self.steps_since_reset = 0;
        self.state_h = no_action();
        self.state_c = zero_steps();
    }

    fn observe_applied(&mut self, action: &Action) {
        self.state_h = match action {
            Action::Discrete(i) => vec![*i as f32],
            Action::Continuous(v) => v.clone(),
        };
    }

    fn recurrent_state(&self) -> Option<(&[f32], &[f32])> {
        Some((&self.state_h, &self.state_c))
    }
}

/// Loads a [`Linear`] from its JSON bytes.
pub fn loader() -> Loader {
    Arc::new(|bytes: &[u8]| {
        let policy: Linear = serde_json::from_slice(bytes)?;
        if policy.fail_load {
            return Err("this policy refuses to load".into());
        }
        Ok(Box::new(policy) as Box<dyn Actor>)
    })
}

/// CartPole's spec.
pub fn cartpole_spec(version: u64) -> PolicySpec {
    PolicySpec {
        algorithm: "dqn".into(),
        env_id: "cartpole".into(),
        observation_space: BoxSpace::new(
            vec![-4.8, f32::MIN, -0.418_879, f32::MIN],
            vec![4.8, f32::MAX, 0.418_879, f32::MAX],
        )
        .unwrap(),
        action_space: ActionSpace::Discrete { n: 2 },
        policy_version: version,
        reflex_version: "0.1.0".into(),
        ..PolicySpec::default()
    }
}

/// "Push toward where the pole falls": Q(right) − Q(left) = θ + 0.5 θ̇ (+ a little
/// cart feedback). Balances CartPole for a good while.
pub fn cartpole_controller(version: u64) -> Linear {
    let score = [0.05f32, 0.1, 1.0, 0.5];
    Linear::new(
        cartpole_spec(version),
        vec![score.iter().map(|s| -s).collect(), score.to_vec()],
        vec![0.0, 0.0],
    )
}

/// Pendulum's spec (obs cos θ, sin θ, θ̇; torque in [-2, 2]).
pub fn pendulum_spec(version: u64) -> PolicySpec {
    PolicySpec {
        algorithm: "ddpg".into(),
        env_id: "pendulum".into(),
        observation_space: BoxSpace::new(vec![-1.0, -1.0, -8.0], vec![1.0, 1.0, 8.0]).unwrap(),
        action_space: ActionSpace::Box(BoxSpace::new(vec![-2.0], vec![2.0]).unwrap()),
        policy_version: version,
        reflex_version: "0.1.0".into(),
        ..PolicySpec::default()
    }
}

/// A deliberately over-eager pendulum controller (its output often leaves the bounds,
/// so the safety layer clamps).
pub fn pendulum_controller(version: u64) -> Linear {
    Linear::new(
        pendulum_spec(version),
        vec![vec![0.0, -6.0, -2.0]],
        vec![0.0],
    )
}
