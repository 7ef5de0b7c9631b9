//! The n-step accumulator: sits in front of any replay buffer (anything that is a
//! [`TransitionSink`]) and turns each actor stream's one-step experience into
//! n-step transitions.
//!
//! For the step taken from `s_t`, it emits `(s_t, a_t, R, s_{t+m}, discount)` with
//! `R = Σ_{k<m} γ^k r_{t+k}` and `m ≤ n`:
//!
//! - mid-episode, once `n` steps are pending, the oldest leaves with `m = n` and
//!   `discount = γ^n`, bootstrapping from the newest `next_obs`;
//! - when the episode **terminates**, every pending step leaves with its
//!   truncated window (`m` = steps to the end) and `discount = 0`: nothing is
//!   bootstrapped from a terminal state;
//! - when the episode is **truncated** (time limit), every pending step leaves
//!   with the same partial return but `discount = γ^m`, bootstrapping from the
//!   final `next_obs`: truncation is not termination. A step both terminated and
//!   truncated counts as terminated.
//!
//! With `n = 1` each step leaves at once as the plain transition, discount `γ`
//! (0 when terminated). Returns are summed in `f64` and stored as `f32`.
//!
//! Each stream (one per vectorized env or robot) has its own window, so
//! interleaved streams never mix. Steps of one stream must arrive in order; a
//! gap (dropped transitions) should be closed with [`NStepAccumulator::flush`]
//! or [`NStepAccumulator::discard`] before the stream resumes.

use super::error::ReplayError;
use super::transition::{check_unit, ActionColumn, ActionShape, EnvStep, Transition};
use super::{try_vec, TransitionSink};

/// Per-stream windows of the last `n` steps, emitting n-step transitions.
#[derive(Debug, Clone)]
pub struct NStepAccumulator {
    n: usize,
    gamma: f32,
    obs_dim: usize,
    action: ActionShape,
    streams: Vec<Window>,
}

/// One stream's pending steps: a ring of at most `n` (obs, action, reward)
/// rows, oldest at `head`, and the newest step's `next_obs` (the only one any
/// pending step bootstraps from).
#[derive(Debug, Clone)]
struct Window {
    obs: Vec<f32>,
    actions: ActionColumn,
    rewards: Vec<f32>,
    next_obs: Vec<f32>,
    head: usize,
    count: usize,
}

impl NStepAccumulator {
    /// An accumulator of `n`-step returns with discount `gamma` in `[0, 1]`, for
    /// `streams` independent streams numbered `0..streams`.
    pub fn new(
        n: usize,
        gamma: f32,
        obs_dim: usize,
        action: ActionShape,
        streams: usize,
    ) -> Result<Self, ReplayError> {
        if n == 0 {
            return Err(ReplayError::Zero { what: "n-step n" });
        }
        if obs_dim == 0 {
            return Err(ReplayError::Zero { what: "obs_dim" });
        }
        if streams == 0 {
            return Err(ReplayError::Zero {
                what: "number of streams",
            });
        }
        check_unit("gamma", f64::from(gamma))?;
        action.validate()?;
        let mut windows = Vec::new();
        windows
            .try_reserve_exact(streams)
            .map_err(|_| ReplayError::TooLarge {
                what: "n-step streams",
                rows: streams,
                width: 1,
            })?;
        for _ in 0..streams {
            windows.push(Window::new(n, obs_dim, action)?);
        }
        Ok(Self {
            n,
            gamma,
            obs_dim,
            action,
            streams: windows,
        })
    }

    /// Steps per return, at most.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The discount factor γ.
    pub fn gamma(&self) -> f32 {
        self.gamma
    }

    /// Number of streams.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Steps of `stream` waiting for their window to fill or their episode to end.
    pub fn pending(&self, stream: usize) -> Result<usize, ReplayError> {
        Ok(self.window(stream)?.count)
    }

    /// Adds one step of `stream` and stores into `sink` every transition it
    /// completes (none, one, or all pending ones at an episode's end); returns
    /// how many. A refused step (unknown stream, wrong length, non-finite value,
    /// bad action) changes nothing. If the sink refuses a transition its error is
    /// returned and the window moves on as if it had been stored.
    pub fn push<S: TransitionSink + ?Sized>(
        &mut self,
        stream: usize,
        step: &EnvStep<'_>,
        sink: &mut S,
    ) -> Result<usize, ReplayError> {
        self.window(stream)?;
        step.check(self.obs_dim, self.action)?;
        let (n, gamma, d) = (self.n, self.gamma, self.obs_dim);
        let window = &mut self.streams[stream];
        let slot = (window.head + window.count) % n;
        window.obs[slot * d..(slot + 1) * d].copy_from_slice(step.obs);
        window.actions.set(slot, step.action);
        window.rewards[slot] = step.reward;
        window.next_obs.copy_from_slice(step.next_obs);
        window.count += 1;
        if step.terminated || step.truncated {
            window.drain(d, gamma, step.terminated, sink)
        } else if window.count == n {
            let result = window.emit(0, n, d, gamma, false, sink);
            window.head = (window.head + 1) % n;
            window.count -= 1;
            result.map(|()| 1)
        } else {
            Ok(0)
        }
    }

    /// Emits every pending step of `stream` as if its episode were truncated now
    /// (partial returns, discount `γ^m`, bootstrapping from the last `next_obs`);
    /// returns how many. For a stream whose data stops (a robot disconnects).
    pub fn flush<S: TransitionSink + ?Sized>(
        &mut self,
        stream: usize,
        sink: &mut S,
    ) -> Result<usize, ReplayError> {
        self.window(stream)?;
        let (gamma, d) = (self.gamma, self.obs_dim);
        self.streams[stream].drain(d, gamma, false, sink)
    }

    /// Drops every pending step of `stream` without emitting it.
    pub fn discard(&mut self, stream: usize) -> Result<(), ReplayError> {
        self.window(stream)?;
        let window = &mut self.streams[stream];
        window.head = 0;
        window.count = 0;
        Ok(())
    }

    fn window(&self, stream: usize) -> Result<&Window, ReplayError> {
        self.streams.get(stream).ok_or(ReplayError::UnknownStream {
            stream,
            streams: self.streams.len(),
        })
    }
}

impl Window {
    /// An empty window of `n` rows.
    fn new(n: usize, obs_dim: usize, action: ActionShape) -> Result<Self, ReplayError> {
        Ok(Self {
            obs: try_vec("n-step observations", n, obs_dim, 0.0)?,
            actions: ActionColumn::zeros(action, n)?,
            rewards: try_vec("n-step rewards", n, 1, 0.0)?,
            next_obs: try_vec("n-step next observation", 1, obs_dim, 0.0)?,
            head: 0,
            count: 0,
        })
    }

    /// Emits pending step `offset` (from the oldest) with an `m`-step return.
    fn emit<S: TransitionSink + ?Sized>(
        &self,
        offset: usize,
        m: usize,
        d: usize,
        gamma: f32,
        terminated: bool,
        sink: &mut S,
    ) -> Result<(), ReplayError> {
        let n = self.rewards.len();
        let gamma = f64::from(gamma);
        let mut ret = 0.0f64;
        let mut weight = 1.0f64;
        for k in 0..m {
            ret += weight * f64::from(self.rewards[(self.head + offset + k) % n]);
            weight *= gamma;
        }
        let slot = (self.head + offset) % n;
        sink.store(&Transition {
            obs: &self.obs[slot * d..(slot + 1) * d],
            action: self.actions.get(slot),
            reward: ret as f32,
            next_obs: &self.next_obs,
            // `weight` is γ^m here.
            discount: if terminated { 0.0 } else { weight as f32 },
        })
    }

    /// Emits every pending step (the episode ended) and empties the window;
    /// returns how many, or the first sink error.
    fn drain<S: TransitionSink + ?Sized>(
        &mut self,
        d: usize,
        gamma: f32,
        terminated: bool,
        sink: &mut S,
    ) -> Result<usize, ReplayError> {
        let count = self.count;
        let mut first_error = None;
        for offset in 0..count {
            if let Err(error) = self.emit(offset, count - offset, d, gamma, terminated, sink) {
                first_error.get_or_insert(error);
            }
        }
        self.head = 0;
        self.count = 0;
        first_error.map_or(Ok(count), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::{ActionRef, ReplayBuffer};

    /// A sink that keeps copies of what it is given.
    #[derive(Default)]
    struct Collected(Vec<Owned>);

    #[derive(Debug, Clone, PartialEq)]
    struct Owned {
        obs: Vec<f32>,
        action: u32,
        reward: f32,
        next_obs: Vec<f32>,
        discount: f32,
    }

    impl TransitionSink for Collected {
        fn store(&mut self, t: &Transition<'_>) -> Result<(), ReplayError> {
            let ActionRef::Discrete(action) = t.action else {
                return Err(ReplayError::ActionKind {
                    expected: "discrete",
                    got: "continuous",
                });
            };
            self.0.push(Owned {
                obs: t.obs.to_vec(),
                action,
                reward: t.reward,
                next_obs: t.next_obs.to_vec(),
                discount: t.discount,
            });
            Ok(())
        }
    }

    const SHAPE: ActionShape = ActionShape::Discrete { n: 4 };

    fn accumulator(n: usize, gamma: f32, streams: usize) -> NStepAccumulator {
        NStepAccumulator::new(n, gamma, 1, SHAPE, streams).unwrap()
    }

    /// One env step, owned.
    #[derive(Debug, Clone, Copy)]
    struct Input {
        obs: [f32; 1],
        action: u32,
        reward: f32,
        next_obs: [f32; 1],
        terminated: bool,
        truncated: bool,
    }

    impl Input {
        fn terminated(self) -> Self {
            Self {
                terminated: true,
                ..self
            }
        }

        fn truncated(self) -> Self {
            Self {
                truncated: true,
                ..self
            }
        }

        fn env_step(&self) -> EnvStep<'_> {
            EnvStep {
                obs: &self.obs,
                action: ActionRef::Discrete(self.action),
                reward: self.reward,
                next_obs: &self.next_obs,
                terminated: self.terminated,
                truncated: self.truncated,
            }
        }
    }

    /// Step `t` of an episode whose first obs is `base`: obs `[base + t]`,
    /// next_obs `[base + t + 1]`, action `t % 4`, neither flag set.
    fn step(base: f32, t: usize, reward: f32) -> Input {
        let x = base + t as f32;
        Input {
            obs: [x],
            action: t as u32 % 4,
            reward,
            next_obs: [x + 1.0],
            terminated: false,
            truncated: false,
        }
    }

    fn push(acc: &mut NStepAccumulator, stream: usize, input: Input, out: &mut Collected) -> usize {
        acc.push(stream, &input.env_step(), out).unwrap()
    }

    fn expected(obs: f32, action: u32, reward: f32, next_obs: f32, discount: f32) -> Owned {
        Owned {
            obs: vec![obs],
            action,
            reward,
            next_obs: vec![next_obs],
            discount,
        }
    }

    fn assert_close(got: &[Owned], want: &[Owned]) {
        assert_eq!(got.len(), want.len(), "{got:#?}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(
                (&g.obs, g.action, &g.next_obs),
                (&w.obs, w.action, &w.next_obs)
            );
            assert!((g.reward - w.reward).abs() < 1e-5, "{g:?} vs {w:?}");
            assert!((g.discount - w.discount).abs() < 1e-6, "{g:?} vs {w:?}");
        }
    }

    #[test]
    fn three_step_returns_across_a_terminal_end() {
        // γ = 0.9, n = 3, rewards 1, 2, 3, 4; s_4 is terminal.
        let mut acc = accumulator(3, 0.9, 1);
        let mut out = Collected::default();
        let emitted: Vec<usize> = [1.0, 2.0, 3.0, 4.0]
            .into_iter()
            .enumerate()
            .map(|(t, r)| {
                let input = step(0.0, t, r);
                let input = if t == 3 { input.terminated() } else { input };
                push(&mut acc, 0, input, &mut out)
            })
            .collect();
        assert_eq!(emitted, [0, 0, 1, 3]);
        assert_close(
            &out.0,
            &[
                // 1 + 0.9·2 + 0.81·3 = 5.23, bootstrap γ³ = 0.729 from s_3.
                expected(0.0, 0, 5.23, 3.0, 0.729),
                // 2 + 0.9·3 + 0.81·4 = 7.94; the window holds the terminal step.
                expected(1.0, 1, 7.94, 4.0, 0.0),
                // 3 + 0.9·4 = 6.6 (two steps left).
                expected(2.0, 2, 6.6, 4.0, 0.0),
                // 4 (one step left).
                expected(3.0, 3, 4.0, 4.0, 0.0),
            ],
        );
        assert_eq!(acc.pending(0), Ok(0));
    }

    #[test]
    fn three_step_returns_across_a_truncated_end() {
        // The same episode cut by a time limit at s_4: same returns, but the
        // final windows bootstrap from s_4 with γ^m.
        let mut acc = accumulator(3, 0.9, 1);
        let mut out = Collected::default();
        for (t, r) in [1.0, 2.0, 3.0, 4.0].into_iter().enumerate() {
            let input = step(0.0, t, r);
            let input = if t == 3 { input.truncated() } else { input };
            push(&mut acc, 0, input, &mut out);
        }
        assert_close(
            &out.0,
            &[
                expected(0.0, 0, 5.23, 3.0, 0.729),
                expected(1.0, 1, 7.94, 4.0, 0.729),
                expected(2.0, 2, 6.6, 4.0, 0.81),
                expected(3.0, 3, 4.0, 4.0, 0.9),
            ],
        );
    }

    #[test]
    fn an_episode_shorter_than_n_and_the_next_one_stay_apart() {
        let mut acc = accumulator(3, 0.9, 1);
        let mut out = Collected::default();
        // Episode A, two steps, terminated: 1 + 0.9·2 = 2.8, then 2.
        push(&mut acc, 0, step(0.0, 0, 1.0), &mut out);
        push(&mut acc, 0, step(0.0, 1, 2.0).terminated(), &mut out);
        // Episode B, starting at obs 10, two steps, truncated: 5 + 0.9·6 = 10.4
        // with γ² = 0.81, then 6 with γ = 0.9. Nothing of episode A leaks in.
        push(&mut acc, 0, step(10.0, 0, 5.0), &mut out);
        push(&mut acc, 0, step(10.0, 1, 6.0).truncated(), &mut out);
        // Both flags: terminated wins.
        push(
            &mut acc,
            0,
            step(20.0, 0, 7.0).terminated().truncated(),
            &mut out,
        );
        assert_close(
            &out.0,
            &[
                expected(0.0, 0, 2.8, 2.0, 0.0),
                expected(1.0, 1, 2.0, 2.0, 0.0),
                expected(10.0, 0, 10.4, 12.0, 0.81),
                expected(11.0, 1, 6.0, 12.0, 0.9),
                expected(20.0, 0, 7.0, 21.0, 0.0),
            ],
        );
    }

    #[test]
    fn n_one_is_the_plain_transition() {
        let mut acc = accumulator(1, 0.99, 1);
        let mut out = Collected::default();
        let steps = [
            step(0.0, 0, 1.5),
            step(0.0, 1, -2.0).truncated(),
            step(5.0, 0, 0.25),
            step(5.0, 1, 3.0).terminated(),
        ];
        for input in steps {
            assert_eq!(push(&mut acc, 0, input, &mut out), 1);
        }
        let mut want = Collected::default();
        for input in &steps {
            want.store(&input.env_step().one_step(0.99)).unwrap();
        }
        // Exactly equal, not just close: the reward and γ pass through unchanged.
        assert_eq!(out.0, want.0);
        assert_eq!(
            out.0.iter().map(|t| t.discount).collect::<Vec<_>>(),
            [0.99, 0.99, 0.99, 0.0]
        );
    }

    #[test]
    fn interleaved_streams_do_not_mix() {
        let mut acc = accumulator(2, 0.5, 2);
        let mut out = Collected::default();
        // Stream 0 gets rewards 1, 1, 1 from obs 0; stream 1 rewards 8, 8 from
        // obs 100, terminating; pushed alternately.
        push(&mut acc, 0, step(0.0, 0, 1.0), &mut out);
        push(&mut acc, 1, step(100.0, 0, 8.0), &mut out);
        push(&mut acc, 0, step(0.0, 1, 1.0), &mut out);
        push(&mut acc, 1, step(100.0, 1, 8.0).terminated(), &mut out);
        push(&mut acc, 0, step(0.0, 2, 1.0), &mut out);
        assert_close(
            &out.0,
            &[
                expected(0.0, 0, 1.5, 2.0, 0.25),
                expected(100.0, 0, 12.0, 102.0, 0.0),
                expected(101.0, 1, 8.0, 102.0, 0.0),
                expected(1.0, 1, 1.5, 3.0, 0.25),
            ],
        );
        assert_eq!(acc.pending(0), Ok(1));
        assert_eq!(acc.pending(1), Ok(0));
    }

    #[test]
    fn flush_bootstraps_and_discard_drops() {
        let mut acc = accumulator(3, 0.9, 2);
        let mut out = Collected::default();
        push(&mut acc, 0, step(0.0, 0, 1.0), &mut out);
        push(&mut acc, 0, step(0.0, 1, 2.0), &mut out);
        push(&mut acc, 1, step(50.0, 0, 9.0), &mut out);
        assert_eq!(acc.flush(0, &mut out), Ok(2));
        assert_eq!(acc.discard(1), Ok(()));
        assert_eq!(acc.flush(1, &mut out), Ok(0));
        assert_close(
            &out.0,
            &[
                expected(0.0, 0, 2.8, 2.0, 0.81),
                expected(1.0, 1, 2.0, 2.0, 0.9),
            ],
        );
    }

    #[test]
    fn bad_arguments_are_refused_and_change_nothing() {
        assert!(NStepAccumulator::new(0, 0.9, 1, SHAPE, 1).is_err());
        assert!(NStepAccumulator::new(3, 1.1, 1, SHAPE, 1).is_err());
        assert!(NStepAccumulator::new(3, f32::NAN, 1, SHAPE, 1).is_err());
        assert!(NStepAccumulator::new(3, 0.9, 0, SHAPE, 1).is_err());
        assert!(NStepAccumulator::new(3, 0.9, 1, SHAPE, 0).is_err());
        let mut acc = accumulator(2, 0.9, 1);
        let mut out = Collected::default();
        push(&mut acc, 0, step(0.0, 0, 1.0), &mut out);
        let good = EnvStep {
            obs: &[1.0],
            action: ActionRef::Discrete(1),
            reward: 1.0,
            next_obs: &[2.0],
            terminated: false,
            truncated: false,
        };
        assert_eq!(
            acc.push(1, &good, &mut out),
            Err(ReplayError::UnknownStream {
                stream: 1,
                streams: 1
            })
        );
        for bad in [
            EnvStep {
                obs: &[1.0, 2.0],
                ..good
            },
            EnvStep {
                reward: f32::NAN,
                ..good
            },
            EnvStep {
                next_obs: &[f32::NEG_INFINITY],
                ..good
            },
            EnvStep {
                action: ActionRef::Discrete(4),
                ..good
            },
        ] {
            assert!(acc.push(0, &bad, &mut out).is_err(), "{bad:?}");
        }
        assert_eq!(acc.pending(0), Ok(1));
        assert!(out.0.is_empty());
        assert_eq!(acc.push(0, &good, &mut out), Ok(1));
        assert_close(&out.0, &[expected(0.0, 0, 1.9, 2.0, 0.81)]);
    }

    #[test]
    fn feeds_a_replay_buffer() {
        let mut acc = accumulator(2, 0.5, 1);
        let mut buffer = ReplayBuffer::new(8, 1, SHAPE).unwrap();
        let mut collected = Collected::default();
        for (t, r) in [2.0, 4.0, 8.0].into_iter().enumerate() {
            let input = step(0.0, t, r);
            let input = if t == 2 { input.terminated() } else { input };
            acc.push(0, &input.env_step(), &mut buffer).unwrap();
        }
        assert_eq!(buffer.len(), 3);
        for slot in 0..3 {
            collected.store(&buffer.get(slot).unwrap()).unwrap();
        }
        assert_close(
            &collected.0,
            &[
                expected(0.0, 0, 4.0, 2.0, 0.25),
                expected(1.0, 1, 8.0, 3.0, 0.0),
                expected(2.0, 2, 8.0, 3.0, 0.0),
            ],
        );
    }
}
