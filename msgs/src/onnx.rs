//! Names in the ONNX policy contract (shared/DESIGN.md, "ONNX policy"): the graph's
//! input and output tensor names and the metadata key holding the JSON
//! [`PolicySpec`](crate::PolicySpec). The trainer writes them, the daemon reads them.

/// Input: observations, float32 `[batch, obs_dim]`.
pub const INPUT_OBS: &str = "obs";
/// Input of recurrent policies: the previous action, float32 `[batch, n_actions]`
/// one-hot for discrete spaces, `[batch, act_dim]` for continuous ones.
pub const INPUT_PREV_ACTION: &str = "prev_action";
/// Input of recurrent policies: LSTM hidden state, float32 `[batch, hidden]`.
pub const INPUT_H: &str = "h_in";
/// Input of recurrent policies: LSTM cell state, float32 `[batch, hidden]`.
pub const INPUT_C: &str = "c_in";
/// Output of discrete policies: action values, float32 `[batch, n_actions]`.
pub const OUTPUT_Q: &str = "q";
/// Output of continuous policies: actions already within the space's bounds, float32
/// `[batch, act_dim]`.
pub const OUTPUT_ACTION: &str = "action";
/// Output of recurrent policies: next LSTM hidden state, float32 `[batch, hidden]`.
pub const OUTPUT_H: &str = "h_out";
/// Output of recurrent policies: next LSTM cell state, float32 `[batch, hidden]`.
pub const OUTPUT_C: &str = "c_out";
/// `metadata_props` key whose value is the policy's [`PolicySpec`](crate::PolicySpec)
/// as JSON.
pub const METADATA_POLICY_SPEC: &str = "reflex.policy_spec";
