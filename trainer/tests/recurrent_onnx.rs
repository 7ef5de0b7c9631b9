//! Recurrent ONNX policies in the daemon's runtime: an LSTM step graph with the
//! contract's tensors (`obs`, `prev_action`, `h_in`, `c_in` → `q`, `h_out`, `c_out`),
//! built with ONNX's own `LSTM` operator, must match a plain reference LSTM (ONNX gate
//! order i, o, f, c) over a 100-step rollout with the state and the applied action
//! fed back, and must reset to the zero state.
//!
//! With `REFLEX_LSTM_DIR` set, one test also writes an LSTM-128 policy there for the
//! latency benchmark (`scripts/bench-policy.sh`).

mod common;

use common::cartpole_spec;
use reflex_daemon::{Policy, PolicyLoadError, PolicyOutput};
use reflex_msgs::onnx::{
    INPUT_C, INPUT_H, INPUT_OBS, INPUT_PREV_ACTION, OUTPUT_C, OUTPUT_H, OUTPUT_Q,
};
use reflex_msgs::Action;
use reflex_sim::SimRng;
use reflex_trainer::export::{Attr, OnnxGraph};

const OBS: usize = 4;
const ACTIONS: usize = 2;

/// The weights of a one-layer LSTM with a linear Q head, in ONNX's layouts.
struct Lstm {
    hidden: usize,
    /// `[4H, I]`, gates i, o, f, c.
    w: Vec<f32>,
    /// `[4H, H]`.
    r: Vec<f32>,
    /// `[8H]`: input biases then recurrent biases.
    b: Vec<f32>,
    /// `[ACTIONS, H]`.
    wq: Vec<f32>,
    bq: Vec<f32>,
}

impl Lstm {
    fn random(hidden: usize, seed: u64) -> Lstm {
        let mut rng = SimRng::seed(seed);
        let input = OBS + ACTIONS;
        let mut v = |n: usize, scale: f64| -> Vec<f32> {
            (0..n).map(|_| (rng.normal() * scale) as f32).collect()
        };
        Lstm {
            hidden,
            w: v(4 * hidden * input, 0.5),
            r: v(4 * hidden * hidden, 0.3),
            b: v(8 * hidden, 0.2),
            wq: v(ACTIONS * hidden, 0.5),
            bq: v(ACTIONS, 0.1),
        }
    }

    /// The ONNX policy file.
    fn onnx(&self) -> Vec<u8> {
        let h = self.hidden;
        let input = OBS + ACTIONS;
        let mut g = OnnxGraph::new();
        let w = g.constant("lstm.w", &[1, 4 * h, input], self.w.clone());
        let r = g.constant("lstm.r", &[1, 4 * h, h], self.r.clone());
        let b = g.constant("lstm.b", &[1, 8 * h], self.b.clone());
        let wq = g.constant("q.weight", &[ACTIONS, h], self.wq.clone());
        let bq = g.constant("q.bias", &[ACTIONS], self.bq.clone());
        let axes = g.constant_i64("axes0", &[0]);
        let x = g.op(
            "Concat",
            &[INPUT_OBS, INPUT_PREV_ACTION],
            &[Attr::Int("axis", 1)],
            None,
        );
        let x = g.op("Unsqueeze", &[&x, &axes], &[], None);
        let h0 = g.op("Unsqueeze", &[INPUT_H, &axes], &[], None);
        let c0 = g.op("Unsqueeze", &[INPUT_C, &axes], &[], None);
        g.op_outputs(
            "LSTM",
            &[&x, &w, &r, &b, "", &h0, &c0],
            &[Attr::Int("hidden_size", h as i64)],
            &["lstm.y", "lstm.y_h", "lstm.y_c"],
        );
        g.op("Squeeze", &["lstm.y_h", &axes], &[], Some(OUTPUT_H));
        g.op("Squeeze", &["lstm.y_c", &axes], &[], Some(OUTPUT_C));
        g.op(
            "Gemm",
            &[OUTPUT_H, &wq, &bq],
            &[Attr::Int("transB", 1)],
            Some(OUTPUT_Q),
        );
        let mut spec = cartpole_spec();
        spec.algorithm = "drqn".into();
        spec.recurrent_hidden_size = h as u32;
        g.finish(
            &[
                (INPUT_OBS, OBS),
                (INPUT_PREV_ACTION, ACTIONS),
                (INPUT_H, h),
                (INPUT_C, h),
            ],
            &[(OUTPUT_Q, ACTIONS), (OUTPUT_H, h), (OUTPUT_C, h)],
            &spec,
        )
        .unwrap()
    }

    /// One reference step: (q, h', c') from the ONNX LSTM equations.
    fn step(
        &self,
        obs: &[f32],
        prev: &[f32],
        h: &[f32],
        c: &[f32],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let n = self.hidden;
        let x: Vec<f32> = obs.iter().chain(prev).copied().collect();
        let sigmoid = |v: f32| 1.0 / (1.0 + (-v).exp());
        let gate = |g: usize, j: usize| -> f32 {
            let row = g * n + j;
            let wx: f32 = (0..x.len()).map(|k| self.w[row * x.len() + k] * x[k]).sum();
            let rh: f32 = (0..n).map(|k| self.r[row * n + k] * h[k]).sum();
            wx + rh + self.b[row] + self.b[4 * n + row]
        };
        let mut h2 = vec![0.0; n];
        let mut c2 = vec![0.0; n];
        for j in 0..n {
            let (i, o, f, cand) = (
                sigmoid(gate(0, j)),
                sigmoid(gate(1, j)),
                sigmoid(gate(2, j)),
                gate(3, j).tanh(),
            );
            c2[j] = f * c[j] + i * cand;
            h2[j] = o * c2[j].tanh();
        }
        let q = (0..ACTIONS)
            .map(|a| self.bq[a] + (0..n).map(|k| self.wq[a * n + k] * h2[k]).sum::<f32>())
            .collect();
        (q, h2, c2)
    }
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + x.abs().max(y.abs())))
}

#[test]
fn an_lstm_policy_matches_the_reference_over_a_rollout_with_state_fed_back() {
    let lstm = Lstm::random(16, 11);
    let mut policy = Policy::from_bytes(&lstm.onnx()).unwrap();
    assert!(policy.is_recurrent());
    let mut rng = SimRng::seed(12);
    let (mut h, mut c) = (vec![0.0; 16], vec![0.0; 16]);
    let mut prev = vec![0.0; ACTIONS];
    for t in 0..100 {
        let obs: Vec<f32> = (0..OBS).map(|_| rng.normal() as f32).collect();
        let (state_h, state_c) = policy.recurrent_state();
        assert!(
            close(state_h, &h) && close(state_c, &c),
            "state before step {t}"
        );
        let (q_ref, h2, c2) = lstm.step(&obs, &prev, &h, &c);
        let PolicyOutput::Discrete { action, q } = policy.step(&obs).unwrap() else {
            panic!("a Q-network gives a discrete output");
        };
        assert!(close(q, &q_ref), "step {t}: {q:?} vs reference {q_ref:?}");
        // Apply an action that is not always the greedy one (as exploration does):
        // the policy must take the applied one as its next prev_action.
        let applied = if t % 3 == 0 { 1 - action } else { action };
        policy.observe_applied(&Action::Discrete(applied));
        prev = vec![0.0; ACTIONS];
        prev[applied as usize] = 1.0;
        (h, c) = (h2, c2);
    }
    // Reset: zero state, zero previous action; the first step matches a fresh policy's.
    policy.reset();
    let (state_h, state_c) = policy.recurrent_state();
    assert!(state_h.iter().chain(state_c).all(|v| *v == 0.0));
    let obs = [0.1, -0.2, 0.03, 0.4];
    let first = match policy.step(&obs).unwrap() {
        PolicyOutput::Discrete { q, .. } => q.to_vec(),
        _ => unreachable!(),
    };
    let (q_ref, _, _) = lstm.step(&obs, &[0.0; ACTIONS], &[0.0; 16], &[0.0; 16]);
    assert!(close(&first, &q_ref));
}

#[test]
fn a_recurrent_policy_without_its_state_inputs_is_refused() {
    // A feed-forward graph under a recurrent spec: the contract's four inputs are
    // missing, and the error names them.
    let mut g = OnnxGraph::new();
    let w = g.constant("w", &[ACTIONS, OBS], vec![0.5; ACTIONS * OBS]);
    g.op(
        "Gemm",
        &[INPUT_OBS, &w],
        &[Attr::Int("transB", 1)],
        Some(OUTPUT_Q),
    );
    let mut spec = cartpole_spec();
    spec.recurrent_hidden_size = 8;
    let bytes = g
        .finish(&[(INPUT_OBS, OBS)], &[(OUTPUT_Q, ACTIONS)], &spec)
        .unwrap();
    let err = Policy::from_bytes(&bytes).unwrap_err();
    assert!(matches!(err, PolicyLoadError::WrongInputs { .. }), "{err}");
    let text = err.to_string();
    for name in [INPUT_PREV_ACTION, INPUT_H, INPUT_C] {
        assert!(text.contains(name), "{text}");
    }
}

#[test]
fn write_an_lstm_128_policy_for_the_benchmark() {
    let lstm = Lstm::random(128, 13);
    let bytes = lstm.onnx();
    // It loads (this is also the check that a 128-wide LSTM passes validation).
    Policy::from_bytes(&bytes).unwrap();
    if let Some(dir) = std::env::var_os("REFLEX_LSTM_DIR") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("lstm-128.onnx"), bytes).unwrap();
    }
}
