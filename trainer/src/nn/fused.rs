//! A dense layer `y = act(x Wᵀ + b)` as one candle op on CPU.
//!
//! Built from primitives, one layer is four graph nodes (a transpose, the
//! matmul, a broadcast bias add, the activation) and its backward pass a dozen
//! more: the activation's mask (`ge`, `to_dtype`, `mul`), a zeroed gradient
//! slot and an add per node, and the bias gradient as a strided sum over the
//! batch, which candle computes one column at a time. A profile of a DDPG
//! update with [400, 300] networks at batch 256 put 14% of its time in that
//! sum alone, and another 15–20% in the other elementwise nodes.
//!
//! Here the forward pass is one gemm call (bias preloaded into the output, so
//! gemm adds the product onto it) and one activation pass; the backward pass
//! is one fused pass for `g ⊙ act'(y)` and the bias sum, then the two
//! products `dW = gᵀx` and `dx = g W`; each of `dx`, `dW`, `db` is skipped when
//! its operand carries no gradient (a network's input; a frozen critic's
//! weights in an actor's loss). Other devices use the primitive form, which a
//! unit test holds this one to.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use reflex_daemon::native::tanh;

/// The nonlinearity applied after the affine map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Act {
    Identity,
    Relu,
    Tanh,
}

impl Act {
    /// The nonlinearity as a candle primitive (any device; differentiable).
    pub(crate) fn apply(self, y: Tensor) -> Result<Tensor> {
        match self {
            Act::Identity => Ok(y),
            Act::Relu => y.relu(),
            Act::Tanh => y.tanh(),
        }
    }
}

fn slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("fused dense: non-contiguous input".into()))?;
    Ok(&storage.as_slice::<f32>()?[start..end])
}

fn parallelism() -> gemm::Parallelism {
    match candle_core::utils::get_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// `act(x Wᵀ + b)` for `x` `[batch, in]`, `W` `[out, in]`, `b` `[out]` (f32).
pub(crate) fn dense(x: &Tensor, w: &Tensor, b: &Tensor, act: Act) -> Result<Tensor> {
    x.apply_op3(w, b, DenseAct(act))
}

struct DenseAct(Act);

impl CustomOp3 for DenseAct {
    fn name(&self) -> &'static str {
        "dense-act"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        // One layer `[rows, in]`, or a population's stacked layers (see
        // crate::nn::stack): x `[P, rows, in]`, W `[P, out, in]`, b `[P, 1, out]`.
        let (members, rows, inputs, x_member) = match *xl.dims() {
            [r, i] => (1, r, i, 0),
            [p, r, i] => (p, r, i, xl.stride()[0]),
            _ => candle_core::bail!(
                "fused dense: x {:?} is not [rows, in] or [P, rows, in]",
                xl.dims()
            ),
        };
        let (w_members, outputs, w_inputs, w_member) = match *wl.dims() {
            [o, i] => (1, o, i, 0),
            [p, o, i] => (p, o, i, wl.stride()[0]),
            _ => candle_core::bail!(
                "fused dense: W {:?} is not [out, in] or [P, out, in]",
                wl.dims()
            ),
        };
        let bias_fits = match *bl.dims() {
            [o] => members == 1 && o == outputs,
            [p, 1, o] => p == members && o == outputs && xl.dims().len() == 3,
            _ => false,
        };
        if w_inputs != inputs || w_members != members || !bias_fits {
            candle_core::bail!(
                "fused dense: x {:?}, W {:?}, b {:?} do not fit",
                xl.dims(),
                wl.dims(),
                bl.dims()
            );
        }
        let bias = slice(bs, bl)?;
        let mut out = Vec::with_capacity(members * rows * outputs);
        for member_bias in bias.chunks_exact(outputs.max(1)).take(members) {
            for _ in 0..rows {
                out.extend_from_slice(member_bias);
            }
        }
        if rows > 0 && inputs > 0 && outputs > 0 {
            let (x, w) = (xs.as_slice::<f32>()?, ws.as_slice::<f32>()?);
            let rank = xl.dims().len();
            let (xst, wst) = (
                &xl.stride()[rank - 2..],
                &wl.stride()[wl.dims().len() - 2..],
            );
            // Bounds of the strided reads, so the unsafe calls below stay inside.
            let last = |start: usize, member: usize, st: &[usize], d0: usize, d1: usize| {
                start + (members - 1) * member + (d0 - 1) * st[0] + (d1 - 1) * st[1]
            };
            if last(xl.start_offset(), x_member, xst, rows, inputs) >= x.len()
                || last(wl.start_offset(), w_member, wst, outputs, inputs) >= w.len()
            {
                candle_core::bail!("fused dense: layout outside its storage");
            }
            for k in 0..members {
                // SAFETY: dst is member k's rows × outputs block of `out`,
                // row-major; lhs x is rows × inputs and rhs Wᵀ is inputs ×
                // outputs, member k's, read through their strides inside the
                // bounds just checked.
                unsafe {
                    gemm::gemm(
                        rows,
                        outputs,
                        inputs,
                        out.as_mut_ptr().add(k * rows * outputs),
                        1,
                        outputs as isize,
                        true,
                        x.as_ptr().add(xl.start_offset() + k * x_member),
                        xst[1] as isize,
                        xst[0] as isize,
                        w.as_ptr().add(wl.start_offset() + k * w_member),
                        wst[0] as isize,
                        wst[1] as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        parallelism(),
                    );
                }
            }
        }
        match self.0 {
            Act::Identity => {}
            Act::Relu => out.iter_mut().for_each(|v| *v = v.max(0.0)),
            Act::Tanh => out.iter_mut().for_each(|v| *v = tanh(*v)),
        }
        let shape = if xl.dims().len() == 3 {
            Shape::from((members, rows, outputs))
        } else {
            Shape::from((rows, outputs))
        };
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        // [g ⊙ act'(y) | Σ_rows of it] in one pass (per member when stacked).
        let both = grad.apply_op2_no_bwd(y, &PreactGrad(self.0))?;
        if grad.rank() == 3 {
            let rows = grad.dim(1)?;
            let g = both.narrow(1, 0, rows)?;
            let db = b.track_op().then(|| both.narrow(1, rows, 1)).transpose()?;
            let dw = w
                .track_op()
                .then(|| g.transpose(1, 2)?.matmul(x))
                .transpose()?;
            let dx = x.track_op().then(|| g.matmul(w)).transpose()?;
            return Ok((dx, dw, db));
        }
        let rows = grad.dim(0)?;
        let g = both.narrow(0, 0, rows)?;
        let db = b.track_op().then(|| both.get(rows)).transpose()?;
        let dw = w.track_op().then(|| g.t()?.matmul(x)).transpose()?;
        let dx = x.track_op().then(|| g.matmul(w)).transpose()?;
        Ok((dx, dw, db))
    }
}

/// `act(y + b)` for `y` `[batch, out]` (the product x Wᵀ, computed as a candle
/// matmul) and `b` `[out]`: a dense layer's epilogue as one op, where the
/// product cannot be fused with it (CUDA: cuBLAS computes it). Its backward
/// pass is [`PreactGrad`], one op for `g ⊙ act'(out)` and the bias gradient,
/// instead of the activation's mask ops and the broadcast add's reduction.
/// The CPU form exists to test the op; CPU layers use [`dense`].
pub(crate) fn bias_act(y: &Tensor, b: &Tensor, act: Act) -> Result<Tensor> {
    y.apply_op2(b, BiasAct(act))
}

struct BiasAct(Act);

impl Act {
    /// The code trainer/cuda/dense.cu uses.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    fn code(self) -> i32 {
        match self {
            Act::Identity => 0,
            Act::Relu => 1,
            Act::Tanh => 2,
        }
    }
}

impl CustomOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "bias-act"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, cols) = yl.shape().dims2()?;
        let (y, b) = (slice(ys, yl)?, slice(bs, bl)?);
        if b.len() != cols {
            candle_core::bail!("bias-act: bias {:?} for output {:?}", bl.dims(), yl.dims());
        }
        let mut out = Vec::with_capacity(rows * cols);
        for row in y.chunks_exact(cols.max(1)).take(rows) {
            out.extend(row.iter().zip(b).map(|(&v, &bias)| {
                let v = v + bias;
                match self.0 {
                    Act::Identity => v,
                    Act::Relu => v.max(0.0),
                    Act::Tanh => tanh(v),
                }
            }));
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, cols))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        ys: &candle_core::CudaStorage,
        yl: &Layout,
        bs: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::gpu::kernels::bias_act_cuda(ys, yl, bs, bl, self.0.code())
    }

    fn bwd(
        &self,
        y: &Tensor,
        b: &Tensor,
        out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let both = grad.apply_op2_no_bwd(out, &PreactGrad(self.0))?;
        let rows = grad.dim(0)?;
        let dy = y.track_op().then(|| both.narrow(0, 0, rows)).transpose()?;
        let db = b.track_op().then(|| both.get(rows)).transpose()?;
        Ok((dy, db))
    }
}

/// (g, y) → rows of `g ⊙ act'(y)` `[batch, out]` with their column sum as one
/// more row `[batch + 1, out]`.
struct PreactGrad(Act);

impl CustomOp2 for PreactGrad {
    fn name(&self) -> &'static str {
        "dense-act-grad"
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
        ys: &candle_core::CudaStorage,
        yl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::gpu::kernels::preact_grad_cuda(gs, gl, ys, yl, self.0.code())
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        // `[rows, cols]`, or a population's `[P, rows, cols]`: each member
        // gets its own sum row.
        let (members, rows, cols) = match *gl.dims() {
            [r, c] => (1, r, c),
            [p, r, c] => (p, r, c),
            _ => candle_core::bail!(
                "fused dense: gradient {:?} of rank {}",
                gl.dims(),
                gl.dims().len()
            ),
        };
        let (g, y) = (slice(gs, gl)?, slice(ys, yl)?);
        if y.len() != g.len() {
            candle_core::bail!("fused dense: gradient and output differ in size");
        }
        let mut out = vec![0f32; members * (rows + 1) * cols];
        for ((g, y), out) in g
            .chunks_exact((rows * cols).max(1))
            .zip(y.chunks_exact((rows * cols).max(1)))
            .zip(out.chunks_exact_mut(((rows + 1) * cols).max(1)))
        {
            preact_rows(self.0, g, y, out, rows, cols);
        }
        let shape = if members > 1 || gl.dims().len() == 3 {
            Shape::from((members, rows + 1, cols))
        } else {
            Shape::from((rows + 1, cols))
        };
        Ok((CpuStorage::F32(out), shape))
    }
}

/// One block of [`PreactGrad`]: rows of `g ⊙ act'(y)`, then their sum.
fn preact_rows(act: Act, g: &[f32], y: &[f32], out: &mut [f32], rows: usize, cols: usize) {
    let (body, sum) = out.split_at_mut(rows * cols);
    {
        for r in 0..rows {
            let (gr, yr) = (&g[r * cols..][..cols], &y[r * cols..][..cols]);
            let dst = &mut body[r * cols..][..cols];
            match act {
                Act::Identity => dst.copy_from_slice(gr),
                Act::Relu => {
                    for ((d, &gv), &yv) in dst.iter_mut().zip(gr).zip(yr) {
                        *d = if yv > 0.0 { gv } else { 0.0 };
                    }
                }
                Act::Tanh => {
                    for ((d, &gv), &yv) in dst.iter_mut().zip(gr).zip(yr) {
                        *d = gv * (1.0 - yv * yv);
                    }
                }
            }
            for (s, &d) in sum.iter_mut().zip(dst.iter()) {
                *s += d;
            }
        }
    }
}

/// Whether [`dense`] can run on `x`'s device and dtype.
pub(crate) fn available(x: &Tensor) -> bool {
    cpu_kernels(x.device()) && x.dtype() == candle_core::DType::F32
}

thread_local! {
    static PORTABLE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this crate's CPU kernels (the fused dense layer, the fused LSTM
/// cell, the in-place optimizer passes) run on `device`: on CPU, unless the
/// calling thread is inside [`portable`].
pub fn cpu_kernels(device: &candle_core::Device) -> bool {
    device.is_cpu() && !PORTABLE.get()
}

/// Runs `f` with this crate's CPU kernels off on the calling thread, so every
/// forward pass, backward pass and optimizer step takes the path of candle
/// primitives (that of devices without kernels of ours, and of CUDA with
/// `REFLEX_CUDA_FUSED=0`). The device parity check uses it to test that path
/// without a GPU.
pub fn portable<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            PORTABLE.set(self.0);
        }
    }
    let _restore = Restore(PORTABLE.replace(true));
    f()
}

/// `device.with_context(f)` (on CPU: `f` inside candle's thread pool, whose
/// workers stay awake between the many short parallel sections of an
/// update), carrying [`portable`] into the pool's thread: the switch is per
/// thread, and the pool runs `f` on one of its own.
pub fn with_context<R: Send>(device: &candle_core::Device, f: impl FnOnce() -> R + Send) -> R {
    let off = PORTABLE.get();
    device.with_context(move || if off { portable(f) } else { f() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use reflex_sim::SimRng;

    fn random(shape: (usize, usize), rng: &mut SimRng) -> Tensor {
        let data: Vec<f32> = (0..shape.0 * shape.1)
            .map(|_| rng.uniform(-1.5, 1.5) as f32)
            .collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    fn primitive(x: &Tensor, w: &Tensor, b: &Tensor, act: Act) -> Tensor {
        let y = x.matmul(&w.t().unwrap()).unwrap().broadcast_add(b).unwrap();
        act.apply(y).unwrap()
    }

    fn close(a: &Tensor, b: &Tensor, tol: f32, what: &str) {
        let (a, b) = (
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert_eq!(a.len(), b.len(), "{what}");
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "{what}[{i}]: {x} vs {y}"
            );
        }
    }

    /// Values and every gradient match the primitive layer, for each
    /// activation, with a strided (transposed) input and a strided weight,
    /// and a loss that weights outputs unevenly.
    #[test]
    fn fused_dense_matches_primitives() {
        let mut rng = SimRng::seed(7);
        for act in [Act::Identity, Act::Relu, Act::Tanh] {
            // x is the transpose of a [5, 9] tensor: [9, 5] with strides (1, 9).
            let x = Var::from_tensor(&random((5, 9), &mut rng).t().unwrap()).unwrap();
            let w = Var::from_tensor(&random((7, 5), &mut rng)).unwrap();
            let b = Var::from_tensor(&random((1, 7), &mut rng).squeeze(0).unwrap()).unwrap();
            let weights = random((9, 7), &mut rng);
            let loss = |y: &Tensor| (y * &weights).unwrap().sum_all().unwrap();
            let fused = dense(x.as_tensor(), w.as_tensor(), b.as_tensor(), act).unwrap();
            let plain = primitive(x.as_tensor(), w.as_tensor(), b.as_tensor(), act);
            close(&fused, &plain, 1e-5, "y");
            let (gf, gp) = (
                loss(&fused).backward().unwrap(),
                loss(&plain).backward().unwrap(),
            );
            for (name, var) in [("dx", &x), ("dW", &w), ("db", &b)] {
                let (f, p) = (gf.get(var).unwrap(), gp.get(var).unwrap());
                close(f, p, 1e-4, &format!("{act:?} {name}"));
            }
        }
    }

    /// The CUDA layers' epilogue op (checked here through its CPU form: the
    /// op's backward wiring and the gradient pass are the same on both).
    #[test]
    fn the_bias_activation_op_matches_primitives() {
        let mut rng = SimRng::seed(9);
        for act in [Act::Identity, Act::Relu, Act::Tanh] {
            let x = Var::from_tensor(&random((9, 5), &mut rng)).unwrap();
            let w = Var::from_tensor(&random((7, 5), &mut rng)).unwrap();
            let b = Var::from_tensor(&random((1, 7), &mut rng).squeeze(0).unwrap()).unwrap();
            let weights = random((9, 7), &mut rng);
            let loss = |y: &Tensor| (y * &weights).unwrap().sum_all().unwrap();
            let product = x.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap();
            let epilogue = bias_act(&product, b.as_tensor(), act).unwrap();
            let plain = primitive(x.as_tensor(), w.as_tensor(), b.as_tensor(), act);
            close(&epilogue, &plain, 1e-5, "y");
            let (ge, gp) = (
                loss(&epilogue).backward().unwrap(),
                loss(&plain).backward().unwrap(),
            );
            for (name, var) in [("dx", &x), ("dW", &w), ("db", &b)] {
                let (e, p) = (ge.get(var).unwrap(), gp.get(var).unwrap());
                close(e, p, 1e-4, &format!("{act:?} {name}"));
            }
        }
        // A detached bias gets no gradient; the product's still flows.
        let x = Var::from_tensor(&random((3, 2), &mut rng)).unwrap();
        let b = random((1, 2), &mut rng).squeeze(0).unwrap();
        let y = bias_act(&x.as_tensor().affine(2.0, 0.0).unwrap(), &b, Act::Relu).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&b).is_none());
        assert!(grads.get(x.as_tensor()).is_some());
    }

    /// Detached weights get no gradient, and the input's still flows.
    #[test]
    fn frozen_parameters_pass_gradients_to_the_input_only() {
        let mut rng = SimRng::seed(8);
        let x = Var::from_tensor(&random((4, 3), &mut rng)).unwrap();
        let w = Var::from_tensor(&random((2, 3), &mut rng)).unwrap();
        let b = Var::from_tensor(&random((1, 2), &mut rng).squeeze(0).unwrap()).unwrap();
        let y = dense(
            x.as_tensor(),
            &w.as_tensor().detach(),
            &b.as_tensor().detach(),
            Act::Relu,
        )
        .unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&w).is_none() && grads.get(&b).is_none());
        let plain = primitive(
            x.as_tensor(),
            &w.as_tensor().detach(),
            &b.as_tensor().detach(),
            Act::Relu,
        );
        let expected = plain.sum_all().unwrap().backward().unwrap();
        close(
            grads.get(&x).unwrap(),
            expected.get(&x).unwrap(),
            1e-5,
            "dx",
        );
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let mut rng = SimRng::seed(9);
        let x = random((4, 3), &mut rng);
        let w = random((2, 5), &mut rng);
        let b = random((1, 2), &mut rng).squeeze(0).unwrap();
        assert!(dense(&x, &w, &b, Act::Relu).is_err());
        let w = random((2, 3), &mut rng);
        let b = random((1, 4), &mut rng).squeeze(0).unwrap();
        assert!(dense(&x, &w, &b, Act::Relu).is_err());
    }
}
