//! Recurrent networks: an [`Lstm`] cell written in candle primitives (so
//! gradients flow through time by ordinary backprop), the recurrent
//! Q-network of DRQN, [`RecurrentQNetwork`]: h_t = LSTM(h_{t−1}, [o_t, a_{t−1}]),
//! then a (dueling) Q head on h_t, and [`Recurrent`]: the same encoder in front
//! of an actor, a critic or a NAF network (recurrent DDPG, TD3 and NAF).
//!
//! Gates are stored in ONNX's order — input, output, forget, cell (i, o, f, c) —
//! so the exported `LSTM` node takes the weights as they are:
//!
//! ```text
//!   g      = x W_ihᵀ + h W_hhᵀ + b          (4H wide: i | o | f | c)
//!   c'     = σ(g_f) ⊙ c + σ(g_i) ⊙ tanh(g_c)
//!   h'     = σ(g_o) ⊙ tanh(c')
//! ```
//!
//! Over a window the state is one packed `[batch, 2H]` tensor ([h | c]); on
//! the CPU and on CUDA a fused op computes the cell and its gradient.

use candle_core::{DType, Device, Result, Tensor, Var, D};
use reflex_sim::SimRng;

use super::{fresh, Actor, Critic, NafNetwork, NetConfig, Params, QNetwork, VarMap};
use crate::export::{Attr, OnnxGraph};
use reflex_daemon::native::tanh;

/// One LSTM layer.
#[derive(Debug, Clone)]
pub struct Lstm {
    /// `[4H, inputs]`, gates i, o, f, c.
    w_ih: Var,
    /// `[4H, H]`.
    w_hh: Var,
    /// `[4H]` (ONNX's recurrent bias is exported as zeros).
    bias: Var,
    inputs: usize,
    hidden: usize,
}

/// σ(x) = ½ tanh(x/2) + ½: three differentiable primitives (candle-core has no
/// sigmoid with a backward pass).
fn sigmoid(x: &Tensor) -> Result<Tensor> {
    x.affine(0.5, 0.0)?.tanh()?.affine(0.5, 0.5)
}

/// The LSTM cell as one CPU op on the packed state s = [h | c] `[batch, 2H]`:
/// (gates `[batch, 4H]` = x W_ihᵀ + h W_hhᵀ + b, s) → s'. Its backward is one
/// op too. Per step this replaces a dozen small candle ops (and their
/// backward nodes) with two, which is most of a sequence update's overhead at
/// robot-sized batches. On CUDA the same op runs as trainer/cuda/lstm.cu's
/// kernels; without them the same math runs in candle primitives
/// ([`Lstm::cell`]); a unit test and the device parity check hold them to each
/// other.
struct FusedCell {
    hidden: usize,
}

fn f32_slice<'a>(
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
) -> Result<&'a [f32]> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("fused LSTM cell: non-contiguous input".into()))?;
    Ok(&storage.as_slice::<f32>()?[start..end])
}

/// The fused cell's output shape: the state's leading dims (`[batch]`, or
/// `[P, batch]` for a population; the kernels run over their product as
/// rows) and a last dim `width`.
fn cell_shape(state: &candle_core::Layout, width: usize) -> Result<candle_core::Shape> {
    let mut dims = state.dims().to_vec();
    match dims.last_mut() {
        Some(last) => *last = width,
        None => candle_core::bail!("fused LSTM cell: a scalar state"),
    }
    Ok(dims.into())
}

/// σ(x) = ½ tanh(x/2) + ½ with the rational tanh the daemon's evaluator uses
/// (within a few float ulps of libm, and it vectorizes: libm's `tanhf`/`expf`
/// were most of a sequence update's time).
#[inline(always)]
fn sig(x: f32) -> f32 {
    0.5 * tanh(0.5 * x) + 0.5
}

/// The gate activations of one row: σ on i, o, f, tanh on the candidate.
#[inline(always)]
fn activate(gates: &[f32], act: &mut [f32], hd: usize) {
    for (a, &g) in act[..3 * hd].iter_mut().zip(&gates[..3 * hd]) {
        *a = sig(g);
    }
    for (a, &g) in act[3 * hd..].iter_mut().zip(&gates[3 * hd..]) {
        *a = tanh(g);
    }
}

impl candle_core::CustomOp2 for FusedCell {
    fn name(&self) -> &'static str {
        "lstm-cell"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let hd = self.hidden;
        let (gates, state) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let batch = state.len() / (2 * hd);
        let mut out = vec![0f32; batch * 2 * hd];
        let mut act = vec![0f32; 4 * hd];
        for r in 0..batch {
            activate(&gates[r * 4 * hd..][..4 * hd], &mut act, hd);
            let c = &state[r * 2 * hd + hd..][..hd];
            let (h_out, c_out) = out[r * 2 * hd..][..2 * hd].split_at_mut(hd);
            let (i, rest) = act.split_at(hd);
            let (o, rest) = rest.split_at(hd);
            let (f, cand) = rest.split_at(hd);
            for j in 0..hd {
                c_out[j] = f[j] * c[j] + i[j] * cand[j];
            }
            for j in 0..hd {
                h_out[j] = o[j] * tanh(c_out[j]);
            }
        }
        Ok((candle_core::CpuStorage::F32(out), cell_shape(l2, 2 * hd)?))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CudaStorage,
        l2: &candle_core::Layout,
    ) -> Result<(candle_core::CudaStorage, candle_core::Shape)> {
        crate::gpu::kernels::lstm_cell_cuda(s1, l1, s2, l2, self.hidden)
    }

    fn bwd(
        &self,
        gates: &Tensor,
        state: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let hd = self.hidden;
        let both = gates.apply_op3_no_bwd(
            state,
            &grad.contiguous()?,
            &FusedCellBackward { hidden: hd },
        )?;
        Ok((
            Some(both.narrow(D::Minus1, 0, 4 * hd)?),
            Some(both.narrow(D::Minus1, 4 * hd, 2 * hd)?),
        ))
    }
}

/// (gates, s, ds') → [d gates | d s] `[batch, 6H]`; d h of s is zero here (h
/// reaches the cell through the gates' matmul, whose backward candle does).
struct FusedCellBackward {
    hidden: usize,
}

impl candle_core::CustomOp3 for FusedCellBackward {
    fn name(&self) -> &'static str {
        "lstm-cell-backward"
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CudaStorage,
        l2: &candle_core::Layout,
        s3: &candle_core::CudaStorage,
        l3: &candle_core::Layout,
    ) -> Result<(candle_core::CudaStorage, candle_core::Shape)> {
        crate::gpu::kernels::lstm_cell_backward_cuda(s1, l1, s2, l2, s3, l3, self.hidden)
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
        s3: &candle_core::CpuStorage,
        l3: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let hd = self.hidden;
        let (gates, state, grad) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?, f32_slice(s3, l3)?);
        let batch = state.len() / (2 * hd);
        let mut out = vec![0f32; batch * 6 * hd];
        let mut act = vec![0f32; 4 * hd];
        let mut tc = vec![0f32; hd];
        for r in 0..batch {
            activate(&gates[r * 4 * hd..][..4 * hd], &mut act, hd);
            let c = &state[r * 2 * hd + hd..][..hd];
            let (dh, dc_next) = grad[r * 2 * hd..][..2 * hd].split_at(hd);
            let (d_gates, d_state) = out[r * 6 * hd..][..6 * hd].split_at_mut(4 * hd);
            let (i, rest) = act.split_at(hd);
            let (o, rest) = rest.split_at(hd);
            let (f, cand) = rest.split_at(hd);
            for j in 0..hd {
                tc[j] = tanh(f[j] * c[j] + i[j] * cand[j]);
            }
            for j in 0..hd {
                let dc = dc_next[j] + dh[j] * o[j] * (1.0 - tc[j] * tc[j]);
                d_gates[j] = dc * cand[j] * i[j] * (1.0 - i[j]);
                d_gates[hd + j] = dh[j] * tc[j] * o[j] * (1.0 - o[j]);
                d_gates[2 * hd + j] = dc * c[j] * f[j] * (1.0 - f[j]);
                d_gates[3 * hd + j] = dc * i[j] * (1.0 - cand[j] * cand[j]);
                d_state[hd + j] = dc * f[j];
            }
        }
        Ok((candle_core::CpuStorage::F32(out), cell_shape(l2, 6 * hd)?))
    }
}

impl Lstm {
    /// PyTorch's initialization: every weight and bias U(±1/√H).
    pub fn new(inputs: usize, hidden: usize, rng: &mut SimRng, device: &Device) -> Result<Self> {
        let bound = 1.0 / (hidden as f64).sqrt();
        let mut draw = |n: usize, shape: &[usize]| -> Result<Var> {
            let values: Vec<f32> = (0..n).map(|_| rng.uniform(-bound, bound) as f32).collect();
            Var::from_tensor(&Tensor::from_vec(values, shape, device)?)
        };
        Ok(Self {
            w_ih: draw(4 * hidden * inputs, &[4 * hidden, inputs])?,
            w_hh: draw(4 * hidden * hidden, &[4 * hidden, hidden])?,
            bias: draw(4 * hidden, &[4 * hidden])?,
            inputs,
            hidden,
        })
    }

    /// Input features per step.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Hidden (and cell) state width H.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// The cell on precomputed input gates `gx = x W_ihᵀ + b` `[batch, 4H]`.
    fn cell(&self, gx: &Tensor, h: &Tensor, c: &Tensor) -> Result<(Tensor, Tensor)> {
        let hd = self.hidden;
        let gates = (gx + h.matmul(&self.w_hh.as_tensor().t()?)?)?;
        let sig = sigmoid(&gates.narrow(D::Minus1, 0, 3 * hd)?)?;
        let (i, o, f) = (
            sig.narrow(D::Minus1, 0, hd)?,
            sig.narrow(D::Minus1, hd, hd)?,
            sig.narrow(D::Minus1, 2 * hd, hd)?,
        );
        let candidate = gates.narrow(D::Minus1, 3 * hd, hd)?.tanh()?;
        let c_next = ((f * c)? + (i * candidate)?)?;
        let h_next = (o * c_next.tanh()?)?;
        Ok((h_next, c_next))
    }

    /// One step: `x` `[batch, inputs]`, state `[batch, H]` each → (h', c').
    pub fn step(&self, x: &Tensor, h: &Tensor, c: &Tensor) -> Result<(Tensor, Tensor)> {
        let gx = x
            .matmul(&self.w_ih.as_tensor().t()?)?
            .broadcast_add(self.bias.as_tensor())?;
        self.cell(&gx, h, c)
    }

    /// The primitive cell on precomputed input gates with the packed state
    /// s = [h | c] `[batch, 2H]`.
    fn cell_packed(&self, gx: &Tensor, state: &Tensor) -> Result<Tensor> {
        let hd = self.hidden;
        let h = state.narrow(D::Minus1, 0, hd)?;
        let (h, c) = self.cell(gx, &h, &state.narrow(D::Minus1, hd, hd)?)?;
        Tensor::cat(&[&h, &c], D::Minus1)
    }

    /// Runs over a window `xs` `[batch, T, inputs]` from (h0, c0) `[batch, H]`.
    ///
    /// `alive` `[batch, T]` (1 or 0) marks the steps that belong to the window's
    /// episode: at a 0 the state is held at (h0, c0) instead of advancing, so a
    /// window that starts before its episode does (left padding) begins the
    /// episode from (h0, c0). The state is detached after the first `no_grad`
    /// steps (R2D2's burn-in: it warms the state, no gradient flows into it).
    ///
    /// Returns the outputs h_t of steps `no_grad..T` as `[batch, T − no_grad, H]`.
    pub fn unroll(
        &self,
        xs: &Tensor,
        h0: &Tensor,
        c0: &Tensor,
        alive: Option<&Tensor>,
        no_grad: usize,
    ) -> Result<Tensor> {
        let fused = super::fused::cpu_kernels(xs.device())
            || crate::gpu::kernels::cuda_kernels(xs.device()) && xs.dtype() == DType::F32;
        self.unroll_with(xs, h0, c0, alive, no_grad, fused)
    }

    /// [`unroll`](Self::unroll) with the outputs as rows `[batch · (T −
    /// no_grad), H]`, batch-major, for a head to read.
    pub fn unroll_rows(
        &self,
        xs: &Tensor,
        h0: &Tensor,
        c0: &Tensor,
        alive: Option<&Tensor>,
        no_grad: usize,
    ) -> Result<Tensor> {
        let hs = self.unroll(xs, h0, c0, alive, no_grad)?;
        // Stacked: [P, batch · (T − no_grad), H], each member's rows together.
        let (dims, hidden) = hs.dims().split_at(hs.rank() - 2);
        let mut rows = dims.to_vec();
        *rows.last_mut().expect("rank ≥ 3") *= hidden[0];
        rows.push(hidden[1]);
        hs.reshape(rows)
    }

    /// [`unroll`](Self::unroll) with the fused cell (CPU or CUDA kernels) on or off.
    ///
    /// A stacked LSTM (a population's, see [`crate::nn::stack`]) takes `xs`
    /// `[P, batch, T, inputs]`, states `[P, batch, H]` and `alive` `[P,
    /// batch, T]`, and returns `[P, batch, T − no_grad, H]`: every product is
    /// one batched product over the members, every cell one op over all rows.
    fn unroll_with(
        &self,
        xs: &Tensor,
        h0: &Tensor,
        c0: &Tensor,
        alive: Option<&Tensor>,
        no_grad: usize,
        fused: bool,
    ) -> Result<Tensor> {
        let rank = xs.rank();
        if !(rank == 3 || rank == 4) {
            candle_core::bail!("LSTM unroll: inputs of rank {rank}, expected 3 (or 4 stacked)");
        }
        let (steps, hd) = (xs.dim(rank - 2)?, self.hidden);
        // The inputs time-major ([T, batch, in], or [T, P, batch, in]), so
        // each step's slice is contiguous. The input projection runs per step:
        // one big product sliced per step would cost a full-size zero-padded
        // gradient per slice in the backward pass (O(T²)).
        let time_first = |t: &Tensor| -> Result<Tensor> {
            match t.rank() {
                3 => t.transpose(0, 1),
                _ => t.permute((2, 0, 1, 3)),
            }
        };
        let xs = time_first(xs)?.contiguous()?.detach();
        // Fused: each step is one product [x_t, 1, h] · [W_ih, b, W_hh]ᵀ and the
        // fused cell; the inputs carry a column of ones for the bias.
        let (xs, w_all) = if fused {
            let mut ones = xs.dims().to_vec();
            *ones.last_mut().expect("rank 3 or 4") = 1;
            let ones = Tensor::ones(ones, xs.dtype(), xs.device())?;
            // A bias [4H] is the column [4H, 1]; stacked, [P, 1, 4H] is [P, 4H, 1].
            let bias = self.bias.as_tensor();
            let bias = match bias.rank() {
                1 => bias.unsqueeze(1)?,
                _ => bias.transpose(1, 2)?,
            };
            let w = Tensor::cat(
                &[self.w_ih.as_tensor(), &bias, self.w_hh.as_tensor()],
                D::Minus1,
            )?;
            (Tensor::cat(&[&xs, &ones], D::Minus1)?, Some(w.t()?))
        } else {
            (xs, None)
        };
        let w_ih = self.w_ih.as_tensor().t()?;
        // alive [batch, T] → [T, batch, 1] (stacked [P, batch, T] → [T, P, batch, 1]).
        let alive = match alive {
            Some(a) => Some(match a.rank() {
                2 => a.t()?.contiguous()?.unsqueeze(2)?,
                _ => a.permute((2, 0, 1))?.contiguous()?.unsqueeze(3)?,
            }),
            None => None,
        };
        let start = Tensor::cat(&[h0, c0], D::Minus1)?;
        let mut state = start.clone();
        let mut outputs = Vec::with_capacity(steps.saturating_sub(no_grad));
        for t in 0..steps {
            if t == no_grad && t > 0 {
                state = state.detach();
            }
            let next = match &w_all {
                Some(w_all) => {
                    let z =
                        Tensor::cat(&[&xs.get(t)?, &state.narrow(D::Minus1, 0, hd)?], D::Minus1)?;
                    z.matmul(w_all)?
                        .apply_op2(&state.contiguous()?, FusedCell { hidden: hd })?
                }
                None => {
                    let gx = xs
                        .get(t)?
                        .matmul(&w_ih)?
                        .broadcast_add(self.bias.as_tensor())?;
                    self.cell_packed(&gx, &state)?
                }
            };
            state = match &alive {
                // Where dead, keep the start state: s = s0 + m (s' − s0).
                Some(alive) => (&start + (next - &start)?.broadcast_mul(&alive.get(t)?)?)?,
                None => next,
            };
            if t >= no_grad {
                outputs.push(state.narrow(D::Minus1, 0, hd)?);
            }
        }
        // [batch, T', H] (stacked [P, batch, T', H]).
        Tensor::stack(&outputs, rank - 2)
    }

    /// Appends an ONNX `LSTM` node on `x` `[batch, inputs]` with state `h_in`,
    /// `c_in` `[batch, H]` (one step: sequence length 1) and names the new state
    /// `h_out`, `c_out`. The weights go in under `name.w`, `name.r`, `name.b`.
    pub fn to_onnx(
        &self,
        g: &mut OnnxGraph,
        name: &str,
        x: &str,
        (h_in, c_in): (&str, &str),
        (h_out, c_out): (&str, &str),
    ) -> Result<()> {
        let hd = self.hidden;
        let flat = |v: &Var| -> Result<Vec<f32>> { v.as_tensor().flatten_all()?.to_vec1::<f32>() };
        let w = g.constant(
            &format!("{name}.w"),
            &[1, 4 * hd, self.inputs],
            flat(&self.w_ih)?,
        );
        let r = g.constant(&format!("{name}.r"), &[1, 4 * hd, hd], flat(&self.w_hh)?);
        let mut b = flat(&self.bias)?;
        b.resize(8 * hd, 0.0);
        let b = g.constant(&format!("{name}.b"), &[1, 8 * hd], b);
        let axes = g.constant_i64(&format!("{name}.axes"), &[0]);
        let x = g.op("Unsqueeze", &[x, &axes], &[], None);
        let h0 = g.op("Unsqueeze", &[h_in, &axes], &[], None);
        let c0 = g.op("Unsqueeze", &[c_in, &axes], &[], None);
        let (y, y_h, y_c) = (
            format!("{name}.y"),
            format!("{name}.y_h"),
            format!("{name}.y_c"),
        );
        g.op_outputs(
            "LSTM",
            &[&x, &w, &r, &b, "", &h0, &c0],
            &[Attr::Int("hidden_size", hd as i64)],
            &[&y, &y_h, &y_c],
        );
        g.op("Squeeze", &[&y_h, &axes], &[], Some(h_out));
        g.op("Squeeze", &[&y_c, &axes], &[], Some(c_out));
        Ok(())
    }

    fn push_vars(&self, name: &str, out: &mut Vec<(String, Var)>) {
        out.push((format!("{name}.w_ih"), self.w_ih.clone()));
        out.push((format!("{name}.w_hh"), self.w_hh.clone()));
        out.push((format!("{name}.bias"), self.bias.clone()));
    }

    /// A copy with its own parameters.
    pub fn duplicate(&self) -> Result<Self> {
        self.map_vars(&mut fresh)
    }

    /// The same layer on the parameters `f` makes from these, in
    /// [`Params::named_vars`] order (w_ih, w_hh, bias).
    pub fn map_vars(&self, f: &mut VarMap<'_>) -> Result<Self> {
        Ok(Self {
            w_ih: f(&self.w_ih)?,
            w_hh: f(&self.w_hh)?,
            bias: f(&self.bias)?,
            ..*self
        })
    }
}

impl Params for Lstm {
    fn named_vars(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        self.push_vars("lstm", &mut out);
        out
    }
}

/// DRQN's network: an LSTM over [observation, previous action one-hot], then a
/// Q-network (hidden layers per `NetConfig`, plain or dueling head) on h_t.
#[derive(Debug, Clone)]
pub struct RecurrentQNetwork {
    lstm: Lstm,
    head: QNetwork,
    obs_dim: usize,
    n_actions: usize,
}

impl RecurrentQNetwork {
    /// A freshly initialized network.
    pub fn new(
        config: &NetConfig,
        obs_dim: usize,
        n_actions: usize,
        hidden: usize,
        rng: &mut SimRng,
        device: &Device,
    ) -> Result<Self> {
        let lstm = Lstm::new(obs_dim + n_actions, hidden, rng, device)?;
        let head = QNetwork::new(config, hidden, n_actions, 1, rng, device)?;
        Ok(Self {
            lstm,
            head,
            obs_dim,
            n_actions,
        })
    }

    /// Observation length.
    pub fn obs_dim(&self) -> usize {
        self.obs_dim
    }

    /// Number of discrete actions.
    pub fn n_actions(&self) -> usize {
        self.n_actions
    }

    /// LSTM hidden size.
    pub fn hidden(&self) -> usize {
        self.lstm.hidden()
    }

    /// One acting step: `x` = [obs, prev action one-hot] `[batch, obs + n]`,
    /// state `[batch, H]` → (Q `[batch, n]`, h', c').
    pub fn step(&self, x: &Tensor, h: &Tensor, c: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (h, c) = self.lstm.step(x, h, c)?;
        Ok((self.head.q_values(&h)?, h, c))
    }

    /// Q over a window (see [`Lstm::unroll`]): `[batch, T − no_grad, n]` for the
    /// steps after the burn-in.
    pub fn unroll(
        &self,
        xs: &Tensor,
        h0: &Tensor,
        c0: &Tensor,
        alive: Option<&Tensor>,
        no_grad: usize,
    ) -> Result<Tensor> {
        // [batch, T − no_grad, n] (stacked: [P, batch, T − no_grad, n]).
        let mut dims = xs.dims().to_vec();
        let rank = dims.len();
        dims[rank - 2] -= no_grad;
        dims[rank - 1] = self.n_actions;
        self.head
            .q_values(&self.lstm.unroll_rows(xs, h0, c0, alive, no_grad)?)?
            .reshape(dims)
    }

    /// The one-step policy graph: `x` (normalized obs and `prev_action`
    /// concatenated) with `h_in`/`c_in` → `q_out`, `h_out`, `c_out`.
    pub fn to_onnx(
        &self,
        g: &mut OnnxGraph,
        x: &str,
        state_in: (&str, &str),
        (q_out, h_out, c_out): (&str, &str, &str),
    ) -> Result<()> {
        self.lstm.to_onnx(g, "lstm", x, state_in, (h_out, c_out))?;
        // The head reads the new hidden state.
        self.head.to_onnx(g, h_out, q_out)
    }

    /// A detached copy with its own parameters (a target network).
    pub fn duplicate(&self) -> Result<Self> {
        self.map_vars(&mut fresh)
    }

    /// The same network on the parameters `f` makes from these, in
    /// [`Params::named_vars`] order (the LSTM's, then the head's).
    pub fn map_vars(&self, f: &mut VarMap<'_>) -> Result<Self> {
        Ok(Self {
            lstm: self.lstm.map_vars(f)?,
            head: self.head.map_vars(f)?,
            ..*self
        })
    }
}

impl super::stack::Stackable for RecurrentQNetwork {
    fn map_vars(&self, f: &mut VarMap<'_>) -> Result<Self> {
        RecurrentQNetwork::map_vars(self, f)
    }
}

impl Params for RecurrentQNetwork {
    fn named_vars(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        self.lstm.push_vars("lstm", &mut out);
        for (name, var) in self.head.named_vars() {
            out.push((format!("head.{name}"), var));
        }
        out
    }
}

/// A feed-forward head (an [`Actor`] or a [`Critic`]) reading the state of an
/// LSTM over [observation, previous action]: the recurrent networks of DDPG
/// and TD3, h_t = LSTM(h_{t−1}, [o_t, a_{t−1}]) then μ(h_t) or Q(h_t, a_t).
/// Previous actions are in normalized units (see
/// [`crate::algo::continuous::ActionScaling`]).
#[derive(Debug, Clone)]
pub struct Recurrent<H> {
    /// The encoder; its input is `[obs, prev action]`.
    pub lstm: Lstm,
    /// The head on h_t.
    pub head: H,
}

impl<H> Recurrent<H> {
    /// LSTM hidden size.
    pub fn hidden(&self) -> usize {
        self.lstm.hidden()
    }

    /// The hidden states h_t over a window (see [`Lstm::unroll`]) as
    /// `[batch · (T − no_grad), H]`, batch-major.
    pub fn states(
        &self,
        xs: &Tensor,
        h0: &Tensor,
        c0: &Tensor,
        alive: Option<&Tensor>,
        no_grad: usize,
    ) -> Result<Tensor> {
        self.lstm.unroll_rows(xs, h0, c0, alive, no_grad)
    }
}

/// A head a [`Recurrent`] network puts on h_t: an actor, a critic or NAF's
/// network, each reading the LSTM's H features.
pub trait RecurrentHead: Params + Sized {
    /// A freshly initialized head on `inputs` features for `act_dim` action
    /// dimensions.
    fn fresh(
        config: &NetConfig,
        inputs: usize,
        act_dim: usize,
        rng: &mut SimRng,
        device: &Device,
    ) -> Result<Self>;

    /// A copy with its own parameters.
    fn copy(&self) -> Result<Self>;
}

/// A head that acts: the normalized action μ `[batch, m]` in [−1, 1] on h_t.
pub trait ActingHead: RecurrentHead {
    /// μ on h `[batch, H]`.
    fn act(&self, h: &Tensor) -> Result<Tensor>;

    /// Appends μ on `input` to an ONNX graph; returns its name.
    fn act_onnx(&self, g: &mut OnnxGraph, input: &str) -> Result<String>;
}

/// Every head builds with its own `new(config, inputs, act_dim, rng, device)`
/// and copies with its `duplicate`.
macro_rules! recurrent_head {
    ($($head:ty),*) => {$(
        impl RecurrentHead for $head {
            fn fresh(
                config: &NetConfig,
                inputs: usize,
                act_dim: usize,
                rng: &mut SimRng,
                device: &Device,
            ) -> Result<Self> {
                <$head>::new(config, inputs, act_dim, rng, device)
            }

            fn copy(&self) -> Result<Self> {
                self.duplicate()
            }
        }
    )*};
}
recurrent_head!(Actor, Critic, NafNetwork);

impl ActingHead for Actor {
    fn act(&self, h: &Tensor) -> Result<Tensor> {
        self.forward(h)
    }

    fn act_onnx(&self, g: &mut OnnxGraph, input: &str) -> Result<String> {
        self.to_onnx(g, input)
    }
}

impl ActingHead for NafNetwork {
    fn act(&self, h: &Tensor) -> Result<Tensor> {
        Ok(self.forward(h)?.mu)
    }

    /// Only μ is exported: V and L are not needed to act.
    fn act_onnx(&self, g: &mut OnnxGraph, input: &str) -> Result<String> {
        self.to_onnx(g, input)
    }
}

impl<H: RecurrentHead> Recurrent<H> {
    /// A freshly initialized network: the LSTM reads [obs, prev action]
    /// (`obs_dim + act_dim` wide), the head its `hidden` features.
    pub fn new(
        config: &NetConfig,
        obs_dim: usize,
        act_dim: usize,
        hidden: usize,
        rng: &mut SimRng,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            lstm: Lstm::new(obs_dim + act_dim, hidden, rng, device)?,
            head: H::fresh(config, hidden, act_dim, rng, device)?,
        })
    }

    /// A copy with its own parameters (a target network).
    pub fn duplicate(&self) -> Result<Self> {
        Ok(Self {
            lstm: self.lstm.duplicate()?,
            head: self.head.copy()?,
        })
    }
}

impl<H: ActingHead> Recurrent<H> {
    /// One acting step: `x` = [obs, prev action] `[batch, obs + m]`, state
    /// `[batch, H]` → (μ `[batch, m]` in [−1, 1], h', c').
    pub fn step(&self, x: &Tensor, h: &Tensor, c: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (h, c) = self.lstm.step(x, h, c)?;
        Ok((self.head.act(&h)?, h, c))
    }

    /// The one-step policy graph: `x` (normalized obs and previous action
    /// concatenated) with `h_in`/`c_in` → h_out, c_out; returns the name of the
    /// normalized action μ.
    pub fn to_onnx(
        &self,
        g: &mut OnnxGraph,
        x: &str,
        state_in: (&str, &str),
        state_out: (&str, &str),
    ) -> Result<String> {
        self.lstm.to_onnx(g, "lstm", x, state_in, state_out)?;
        self.head.act_onnx(g, state_out.0)
    }
}

impl<H: Params> Params for Recurrent<H> {
    fn named_vars(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        self.lstm.push_vars("lstm", &mut out);
        for (name, var) in self.head.named_vars() {
            out.push((format!("head.{name}"), var));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    /// A reference LSTM step in plain f64 on the same weights.
    fn reference_step(lstm: &Lstm, x: &[f32], h: &[f64], c: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let hd = lstm.hidden;
        let w = lstm.w_ih.as_tensor().to_vec2::<f32>().unwrap();
        let r = lstm.w_hh.as_tensor().to_vec2::<f32>().unwrap();
        let b = lstm.bias.as_tensor().to_vec1::<f32>().unwrap();
        let gate = |row: usize| -> f64 {
            let mut g = f64::from(b[row]);
            g += x
                .iter()
                .zip(&w[row])
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum::<f64>();
            g += h
                .iter()
                .zip(&r[row])
                .map(|(a, b)| a * f64::from(*b))
                .sum::<f64>();
            g
        };
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let (mut h2, mut c2) = (vec![0.0; hd], vec![0.0; hd]);
        for j in 0..hd {
            let (i, o, f, cc) = (
                sig(gate(j)),
                sig(gate(hd + j)),
                sig(gate(2 * hd + j)),
                gate(3 * hd + j).tanh(),
            );
            c2[j] = f * c[j] + i * cc;
            h2[j] = o * c2[j].tanh();
        }
        (h2, c2)
    }

    #[test]
    fn unroll_matches_a_reference_lstm_with_gates_in_onnx_order() {
        let dev = Device::Cpu;
        let lstm = Lstm::new(3, 5, &mut SimRng::seed(3), &dev).unwrap();
        let mut rng = SimRng::seed(4);
        let xs: Vec<f32> = (0..2 * 6 * 3).map(|_| rng.normal() as f32).collect();
        let x = Tensor::from_vec(xs.clone(), (2, 6, 3), &dev).unwrap();
        let zeros = Tensor::zeros((2, 5), DType::F32, &dev).unwrap();
        let out = lstm.unroll(&x, &zeros, &zeros, None, 2).unwrap();
        assert_eq!(out.dims(), &[2, 4, 5], "outputs after the burn-in only");
        let out = out.to_vec3::<f32>().unwrap();
        for row in 0..2 {
            let (mut h, mut c) = (vec![0.0; 5], vec![0.0; 5]);
            for t in 0..6 {
                let x = &xs[(row * 6 + t) * 3..(row * 6 + t + 1) * 3];
                (h, c) = reference_step(&lstm, x, &h, &c);
                if t >= 2 {
                    for j in 0..5 {
                        assert!((f64::from(out[row][t - 2][j]) - h[j]).abs() < 1e-5);
                    }
                }
            }
        }
    }

    /// The fused CPU cell and the primitive cell agree in values and in every
    /// parameter's gradient, through burn-in and dead steps.
    #[test]
    fn the_fused_cell_matches_the_primitive_cell_with_gradients() {
        let dev = Device::Cpu;
        let lstm = Lstm::new(3, 6, &mut SimRng::seed(11), &dev).unwrap();
        let mut rng = SimRng::seed(12);
        let mut draw = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.normal() as f32).collect() };
        let x = Tensor::from_vec(draw(4 * 7 * 3), (4, 7, 3), &dev).unwrap();
        let h0 = Tensor::from_vec(draw(4 * 6), (4, 6), &dev).unwrap();
        let c0 = Tensor::from_vec(draw(4 * 6), (4, 6), &dev).unwrap();
        let alive: Vec<f32> = (0..28)
            .map(|k| if k % 7 < 2 && k < 14 { 0.0 } else { 1.0 })
            .collect();
        let alive = Tensor::from_vec(alive, (4, 7), &dev).unwrap();
        let weights = Tensor::from_vec(draw(4 * 5 * 6), (4, 5, 6), &dev).unwrap();
        let run = |fused: bool| {
            let out = lstm
                .unroll_with(&x, &h0, &c0, Some(&alive), 2, fused)
                .unwrap();
            let loss = (out.clone() * &weights).unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            let g: Vec<Vec<f32>> = lstm
                .vars()
                .iter()
                .map(|v| {
                    grads
                        .get(v)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1()
                        .unwrap()
                })
                .collect();
            (out.flatten_all().unwrap().to_vec1::<f32>().unwrap(), g)
        };
        let (out_a, grads_a) = run(true);
        let (out_b, grads_b) = run(false);
        let gap = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max)
        };
        assert!(gap(&out_a, &out_b) < 1e-5);
        for (a, b) in grads_a.iter().zip(&grads_b) {
            assert!(gap(a, b) < 1e-4, "gradient gap {}", gap(a, b));
            assert!(a.iter().any(|v| *v != 0.0));
        }
    }

    #[test]
    fn dead_steps_hold_the_start_state() {
        let dev = Device::Cpu;
        let lstm = Lstm::new(2, 4, &mut SimRng::seed(5), &dev).unwrap();
        let mut rng = SimRng::seed(6);
        let xs: Vec<f32> = (0..5 * 2).map(|_| rng.normal() as f32).collect();
        let h0 = Tensor::from_vec(vec![0.3f32, -0.2, 0.1, 0.5], (1, 4), &dev).unwrap();
        let c0 = Tensor::from_vec(vec![-0.4f32, 0.2, 0.0, 0.9], (1, 4), &dev).unwrap();
        // Two padded steps, then the episode's three: the same as running the
        // three alone from (h0, c0).
        let padded = Tensor::from_vec(xs.clone(), (1, 5, 2), &dev).unwrap();
        let alive = Tensor::new(&[[0f32, 0.0, 1.0, 1.0, 1.0]], &dev).unwrap();
        let a = lstm.unroll(&padded, &h0, &c0, Some(&alive), 2).unwrap();
        let alone = Tensor::from_vec(xs[4..].to_vec(), (1, 3, 2), &dev).unwrap();
        let b = lstm.unroll(&alone, &h0, &c0, None, 0).unwrap();
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-6);
    }

    /// d loss / d W_hh[0, 0] by autograd against a central finite difference,
    /// through 6 steps: gradients flow through time; and the burn-in steps
    /// contribute none.
    #[test]
    fn gradients_flow_through_time_and_not_into_the_burn_in() {
        let dev = Device::Cpu;
        let lstm = Lstm::new(2, 3, &mut SimRng::seed(7), &dev).unwrap();
        let mut rng = SimRng::seed(8);
        let xs: Vec<f32> = (0..6 * 2).map(|_| rng.normal() as f32).collect();
        let x = Tensor::from_vec(xs, (1, 6, 2), &dev).unwrap();
        let zeros = Tensor::zeros((1, 3), DType::F32, &dev).unwrap();
        // Only the last output is in the loss, so W_hh's gradient must come
        // through the recurrence.
        let loss = |l: &Lstm, no_grad: usize| -> Tensor {
            l.unroll(&x, &zeros, &zeros, None, no_grad)
                .unwrap()
                .narrow(1, 6 - no_grad - 1, 1)
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let grads = loss(&lstm, 0).backward().unwrap();
        let auto = grads.get(&lstm.w_hh).unwrap().to_vec2::<f32>().unwrap()[0][0];
        assert!(auto.abs() > 1e-4, "W_hh gets a gradient: {auto}");
        let eps = 1e-2f32;
        let shifted = |delta: f32| -> f32 {
            let l = lstm.duplicate().unwrap();
            let mut w = l.w_hh.as_tensor().to_vec2::<f32>().unwrap();
            w[0][0] += delta;
            l.w_hh.set(&Tensor::new(w, &dev).unwrap()).unwrap();
            loss(&l, 0).to_scalar::<f32>().unwrap()
        };
        let numeric = (shifted(eps) - shifted(-eps)) / (2.0 * eps);
        assert!(
            (auto - numeric).abs() < 1e-3 * (1.0 + numeric.abs()),
            "{auto} vs {numeric}"
        );

        // With 5 burn-in steps the gradient is exactly that of one step from
        // the (constant) state the burn-in reached, and differs from the
        // gradient through all six steps.
        let burned = loss(&lstm, 5).backward().unwrap();
        let (mut h, mut c) = (zeros.clone(), zeros.clone());
        for t in 0..5 {
            (h, c) = lstm
                .step(&x.get(0).unwrap().narrow(0, t, 1).unwrap(), &h, &c)
                .unwrap();
        }
        let last = x.get(0).unwrap().narrow(0, 5, 1).unwrap();
        let (h6, _) = lstm.step(&last, &h.detach(), &c.detach()).unwrap();
        let one_step = h6.sum_all().unwrap().backward().unwrap();
        let full = loss(&lstm, 0).backward().unwrap();
        let grad_of = |grads: &candle_core::backprop::GradStore, var: &Var| -> Vec<f32> {
            grads
                .get(var)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        for var in [&lstm.w_ih, &lstm.w_hh, &lstm.bias] {
            let (a, b, f) = (
                grad_of(&burned, var),
                grad_of(&one_step, var),
                grad_of(&full, var),
            );
            let gap = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(gap < 1e-6, "burn-in leaked gradient: {gap}");
            assert!(a.iter().zip(&f).any(|(x, y)| (x - y).abs() > 1e-5));
        }
    }
}
