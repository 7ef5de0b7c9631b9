//! reflex-trainer: the learner.
//!
//! This crate will own replay buffers (uniform, prioritized, n-step, sequence),
//! the value-based algorithms on candle (DQN family, DRQN, DDPG, NAF, TD3),
//! exploration schedules, evaluation, checkpoints, ONNX export and the learner
//! service that receives robots' transitions. It is empty until the trainer
//! issues land: nothing here pretends to train yet.
//!
//! It may depend on `reflex-msgs`, `reflex-sim` and the daemon's policy runtime;
//! nothing depends on it, and robots never ship it.
