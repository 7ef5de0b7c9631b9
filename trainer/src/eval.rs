//! Greedy evaluation of an exported policy through the daemon's runtime
//! ([`reflex_daemon::Policy`], tract), so `reflex-train eval --policy` measures
//! exactly what a robot would run.

use reflex_daemon::{Policy, PolicyOutput};
use reflex_msgs::{Action, ActionSpace};
use reflex_sim::Env;

use crate::TrainError;

/// The first evaluation seed of a run seeded `seed`, far from the training
/// episodes' seeds. The local loop's and the learner's periodic evaluations and
/// the fleet's final one all start here, so "solved" means the same episodes.
pub fn eval_seed(seed: u64) -> u64 {
    seed.wrapping_mul(1_000).wrapping_add(1_000_000)
}

/// Mean and population standard deviation of the returns of `episodes` greedy
/// episodes; episode k starts from `env.reset(seed + k)`. Continuous actions are
/// clipped to the env's bounds (a no-op for a policy that keeps its contract).
pub fn evaluate_policy(
    policy: &mut Policy,
    env: &mut dyn Env,
    episodes: u32,
    seed: u64,
) -> Result<(f64, f64), TrainError> {
    let bounds = match env.action_space() {
        ActionSpace::Box(space) => Some(space.clone()),
        ActionSpace::Discrete { .. } => None,
    };
    let mut returns = Vec::with_capacity(episodes as usize);
    let mut obs = Vec::new();
    for k in 0..episodes {
        policy.reset();
        obs.clear();
        obs.extend_from_slice(env.reset(Some(seed + u64::from(k))));
        let mut total = 0.0;
        loop {
            let out = policy
                .step(&obs)
                .map_err(|e| TrainError::Export(format!("policy: {e}")))?;
            let action = match (out, &bounds) {
                (PolicyOutput::Discrete { action, .. }, _) => Action::Discrete(action),
                (PolicyOutput::Continuous { action }, Some(space)) => Action::Continuous(
                    action
                        .iter()
                        .zip(space.low.iter().zip(&space.high))
                        .map(|(&a, (&lo, &hi))| a.clamp(lo, hi))
                        .collect(),
                ),
                (PolicyOutput::Continuous { action }, None) => Action::Continuous(action.to_vec()),
            };
            // A recurrent policy reads the applied action as its next `prev_action`.
            policy.observe_applied(&action);
            let step = env.step(&action)?;
            total += step.reward;
            if step.done() {
                break;
            }
            obs.copy_from_slice(env.obs());
        }
        returns.push(total);
    }
    Ok(mean_std(&returns))
}

/// Mean and population standard deviation (NumPy's `np.std`) of episode returns;
/// (0, 0) for none.
pub fn mean_std(returns: &[f64]) -> (f64, f64) {
    let n = returns.len().max(1) as f64;
    let mean = returns.iter().sum::<f64>() / n;
    let std = (returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n).sqrt();
    (mean, std)
}
