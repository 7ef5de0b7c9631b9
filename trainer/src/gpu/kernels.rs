//! The optimizer's fused CUDA kernels (trainer/cuda/optim.cu): the global
//! gradient norm, a whole Adam step and Polyak averaging, each one launch per
//! parameter tensor, in place, with no value read back to the host.
//!
//! Built from candle primitives, one Adam step is about fifteen launches per
//! parameter (scale, two moments, bias corrections, square root, division,
//! subtraction, copy) and the norm a blocking read per parameter; on a GPU
//! where each launch costs microseconds of host time and the arithmetic is
//! tiny, that was the larger part of a small network's update.
//!
//! Without the `cuda` feature every function here reports "not available" and
//! the callers take the primitive path. `REFLEX_CUDA_FUSED=0` turns the
//! kernels off at run time (to compare, or to rule them out).

use candle_core::{Result, Tensor};

/// Whether the fused kernels apply to `t`: a contiguous f32 tensor on a CUDA
/// device, in a build with the `cuda` feature, unless `REFLEX_CUDA_FUSED=0`.
pub(crate) fn available(t: &Tensor) -> bool {
    t.device().is_cuda()
        && cfg!(feature = "cuda")
        && t.dtype() == candle_core::DType::F32
        && t.is_contiguous()
        && enabled()
}

fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("REFLEX_CUDA_FUSED").map_or(true, |v| v != "0"))
}

/// What one Adam step needs besides the tensors.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) struct AdamStep {
    pub beta1: f32,
    pub beta2: f32,
    pub step_size: f32,
    pub correction2: f32,
    pub eps: f32,
    /// Clip the gradient to this global norm (negative: no clipping).
    pub max_norm: f64,
}

#[cfg(feature = "cuda")]
mod imp {
    use super::AdamStep;
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaDevice, CudaStorage};
    use candle_core::{bail, DType, Device, Layout, Result, Storage, Tensor};

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/optim.ptx"));
    const MODULE: &str = "reflex_optim";

    fn config(n: usize) -> LaunchConfig {
        let blocks = n.div_ceil(256).clamp(1, 1024) as u32;
        LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    fn cuda_device(t: &Tensor) -> Result<CudaDevice> {
        match t.device() {
            Device::Cuda(d) => Ok(d.clone()),
            _ => bail!("fused optimizer kernel: tensor not on a CUDA device"),
        }
    }

    fn cuda(storage: &Storage) -> Result<&CudaStorage> {
        match storage {
            Storage::Cuda(s) => Ok(s),
            _ => bail!("fused optimizer kernel: storage not on a CUDA device"),
        }
    }

    fn range(layout: &Layout, n: usize) -> Result<std::ops::Range<usize>> {
        match layout.contiguous_offsets() {
            Some((start, end)) if end - start == n => Ok(start..end),
            _ => bail!("fused optimizer kernel: non-contiguous tensor or size mismatch"),
        }
    }

    fn launch_error(e: impl std::fmt::Display) -> candle_core::Error {
        candle_core::Error::Msg(format!("fused optimizer kernel launch: {e}"))
    }

    pub(super) fn sum_squares(grads: &[&Tensor]) -> Result<Tensor> {
        let first = grads
            .first()
            .ok_or_else(|| candle_core::Error::Msg("sum_squares: no tensors".into()))?;
        let dev = cuda_device(first)?;
        let acc = Tensor::zeros((), DType::F64, first.device())?;
        let func = dev.get_or_load_custom_func("reflex_sumsq", MODULE, PTX)?;
        {
            let (acc_storage, acc_layout) = acc.storage_and_layout();
            let acc_slice = cuda(&acc_storage)?.as_cuda_slice::<f64>()?;
            let acc_view = acc_slice.slice(range(acc_layout, 1)?);
            for g in grads {
                let n = g.elem_count();
                let (storage, layout) = g.storage_and_layout();
                let slice = cuda(&storage)?.as_cuda_slice::<f32>()?;
                let view = slice.slice(range(layout, n)?);
                let n64 = n as u64;
                let mut b = func.builder();
                b.arg(&view).arg(&n64).arg(&acc_view);
                // SAFETY: the kernel reads n floats of `view` and adds into the
                // one double of `acc_view`, both live for the launch.
                unsafe { b.launch(config(n)) }.map_err(launch_error)?;
            }
        }
        Ok(acc)
    }

    pub(super) fn adam(
        p: &Tensor,
        m: &Tensor,
        v: &Tensor,
        g: &Tensor,
        normsq: Option<&Tensor>,
        hyper: Option<&Tensor>,
        s: AdamStep,
    ) -> Result<()> {
        let n = p.elem_count();
        for t in [m, v, g] {
            if t.elem_count() != n {
                bail!("adam: parameter, moments and gradient differ in size");
            }
        }
        let dev = cuda_device(p)?;
        let kernel = if hyper.is_some() {
            "reflex_adam_graph"
        } else {
            "reflex_adam"
        };
        let func = dev.get_or_load_custom_func(kernel, MODULE, PTX)?;
        let (ps, pl) = p.storage_and_layout();
        let (ms, ml) = m.storage_and_layout();
        let (vs, vl) = v.storage_and_layout();
        let (gs, gl) = g.storage_and_layout();
        let pv = cuda(&ps)?.as_cuda_slice::<f32>()?.slice(range(pl, n)?);
        let mv = cuda(&ms)?.as_cuda_slice::<f32>()?.slice(range(ml, n)?);
        let vv = cuda(&vs)?.as_cuda_slice::<f32>()?.slice(range(vl, n)?);
        let gv = cuda(&gs)?.as_cuda_slice::<f32>()?.slice(range(gl, n)?);
        let norm_guard = normsq.map(|t| t.storage_and_layout());
        let norm_view = match &norm_guard {
            Some((storage, layout)) => Some(
                cuda(storage)?
                    .as_cuda_slice::<f64>()?
                    .slice(range(layout, 1)?),
            ),
            None => None,
        };
        let hyper_guard = hyper.map(|t| t.storage_and_layout());
        let hyper_view = match &hyper_guard {
            Some((storage, layout)) => Some(
                cuda(storage)?
                    .as_cuda_slice::<f32>()?
                    .slice(range(layout, 2)?),
            ),
            None => None,
        };
        let (n64, null) = (n as u64, 0u64);
        let mut b = func.builder();
        b.arg(&pv).arg(&mv).arg(&vv).arg(&gv).arg(&n64);
        match &norm_view {
            Some(view) => b.arg(view),
            None => b.arg(&null),
        };
        b.arg(&s.max_norm).arg(&s.beta1).arg(&s.beta2);
        match &hyper_view {
            Some(view) => b.arg(view),
            None => b.arg(&s.step_size).arg(&s.correction2),
        };
        b.arg(&s.eps);
        // SAFETY: p, m and v are n floats written in place, g n floats read,
        // the norm one double read; all distinct tensors alive for the launch
        // on their device's one stream.
        unsafe { b.launch(config(n)) }.map_err(launch_error)?;
        Ok(())
    }

    const DENSE_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/dense.ptx"));
    const DENSE: &str = "reflex_dense";

    fn storage_view<'a>(
        s: &'a CudaStorage,
        l: &Layout,
        n: usize,
    ) -> Result<candle_core::cuda_backend::cudarc::driver::CudaView<'a, f32>> {
        Ok(s.as_cuda_slice::<f32>()?.slice(range(l, n)?))
    }

    pub(crate) fn bias_act(
        ys: &CudaStorage,
        yl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
        act: i32,
    ) -> Result<(CudaStorage, candle_core::Shape)> {
        let (rows, cols) = yl.shape().dims2()?;
        if bl.shape().dims1()? != cols {
            bail!("bias-act: bias {:?} for output {:?}", bl.dims(), yl.dims());
        }
        let dev = ys.device.clone();
        let (y, b) = (
            storage_view(ys, yl, rows * cols)?,
            storage_view(bs, bl, cols)?,
        );
        // SAFETY: every element is written by the kernel below before use.
        let out = unsafe { dev.alloc::<f32>(rows * cols)? };
        let func = dev.get_or_load_custom_func("reflex_bias_act", DENSE, DENSE_PTX)?;
        let (r64, c64) = (rows as u64, cols as u64);
        let mut builder = func.builder();
        builder
            .arg(&y)
            .arg(&b)
            .arg(&out)
            .arg(&r64)
            .arg(&c64)
            .arg(&act);
        // SAFETY: y is rows × cols floats, b cols floats, out rows × cols floats.
        unsafe { builder.launch(config(rows * cols)) }.map_err(launch_error)?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev),
            candle_core::Shape::from((rows, cols)),
        ))
    }

    pub(crate) fn preact_grad(
        gs: &CudaStorage,
        gl: &Layout,
        rs: &CudaStorage,
        rl: &Layout,
        act: i32,
    ) -> Result<(CudaStorage, candle_core::Shape)> {
        let (rows, cols) = gl.shape().dims2()?;
        if rl.dims() != gl.dims() {
            bail!(
                "dense-act-grad: gradient {:?} for output {:?}",
                gl.dims(),
                rl.dims()
            );
        }
        let dev = gs.device.clone();
        // The sum row must start at zero (tiles add into it).
        let out = dev.alloc_zeros::<f32>((rows + 1) * cols)?;
        if cols == 0 {
            // Nothing to launch (a zero-width grid would be a launch error).
            return Ok((
                CudaStorage::wrap_cuda_slice(out, dev),
                candle_core::Shape::from((rows + 1, cols)),
            ));
        }
        let (g, res) = (
            storage_view(gs, gl, rows * cols)?,
            storage_view(rs, rl, rows * cols)?,
        );
        let func = dev.get_or_load_custom_func("reflex_preact_grad", DENSE, DENSE_PTX)?;
        let (r64, c64) = (rows as u64, cols as u64);
        let mut builder = func.builder();
        builder
            .arg(&g)
            .arg(&res)
            .arg(&out)
            .arg(&r64)
            .arg(&c64)
            .arg(&act);
        let cfg = LaunchConfig {
            grid_dim: (
                cols.div_ceil(32) as u32,
                rows.div_ceil(256).max(1) as u32,
                1,
            ),
            block_dim: (32, 8, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: g and res are rows × cols floats, out (rows + 1) × cols.
        unsafe { builder.launch(cfg) }.map_err(launch_error)?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev),
            candle_core::Shape::from((rows + 1, cols)),
        ))
    }

    const LSTM_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/lstm.ptx"));
    const LSTM: &str = "reflex_lstm";

    /// Launches `kernel` over batch × H threads with the given inputs (each
    /// `[batch, k·H]`, contiguous) and a fresh `[batch, out_width·H]` output.
    fn lstm_launch(
        kernel: &str,
        inputs: &[(&CudaStorage, &Layout, usize)],
        batch: usize,
        hd: usize,
        out_width: usize,
    ) -> Result<(CudaStorage, candle_core::Shape)> {
        let dev = inputs[0].0.device.clone();
        let views = inputs
            .iter()
            .map(|(s, l, width)| storage_view(s, l, batch * width * hd))
            .collect::<Result<Vec<_>>>()?;
        // SAFETY: every element is written by the kernel below.
        let out = unsafe { dev.alloc::<f32>(batch * out_width * hd)? };
        let func = dev.get_or_load_custom_func(kernel, LSTM, LSTM_PTX)?;
        let (b64, h64) = (batch as u64, hd as u64);
        let mut builder = func.builder();
        for view in &views {
            builder.arg(view);
        }
        builder.arg(&out).arg(&b64).arg(&h64);
        // SAFETY: the inputs hold batch × width × H floats each, out
        // batch × out_width × H; the kernel indexes within those.
        unsafe { builder.launch(config(batch * hd)) }.map_err(launch_error)?;
        // The state's leading dims (`[batch]`, or `[P, batch]` for a
        // population), the last one out_width·H wide.
        let mut dims = inputs[inputs.len() - 1].1.dims().to_vec();
        *dims.last_mut().expect("checked rank ≥ 1") = out_width * hd;
        Ok((CudaStorage::wrap_cuda_slice(out, dev), dims.into()))
    }

    /// The rows of a cell's gates `[…, 4H]` and state `[…, 2H]` when their
    /// leading dims agree (a batch, or members × batch), else `None`.
    fn cell_rows(gl: &Layout, sl: &Layout, hd: usize) -> Option<usize> {
        let (g, s) = (gl.dims().split_last()?, sl.dims().split_last()?);
        (*g.0 == 4 * hd && *s.0 == 2 * hd && g.1 == s.1).then(|| s.1.iter().product())
    }

    pub(crate) fn lstm_cell(
        gs: &CudaStorage,
        gl: &Layout,
        ss: &CudaStorage,
        sl: &Layout,
        hd: usize,
    ) -> Result<(CudaStorage, candle_core::Shape)> {
        let Some(batch) = cell_rows(gl, sl, hd) else {
            bail!(
                "lstm cell: gates {:?} and state {:?} for H = {hd}",
                gl.dims(),
                sl.dims()
            );
        };
        lstm_launch(
            "reflex_lstm_cell",
            &[(gs, gl, 4), (ss, sl, 2)],
            batch,
            hd,
            2,
        )
    }

    pub(crate) fn lstm_cell_backward(
        gs: &CudaStorage,
        gl: &Layout,
        ss: &CudaStorage,
        sl: &Layout,
        ds: &CudaStorage,
        dl: &Layout,
        hd: usize,
    ) -> Result<(CudaStorage, candle_core::Shape)> {
        let batch = cell_rows(gl, sl, hd).filter(|_| dl.dims() == sl.dims());
        let Some(batch) = batch else {
            bail!(
                "lstm cell backward: gates {:?}, state {:?}, gradient {:?} for H = {hd}",
                gl.dims(),
                sl.dims(),
                dl.dims()
            );
        };
        lstm_launch(
            "reflex_lstm_cell_backward",
            &[(gs, gl, 4), (ss, sl, 2), (ds, dl, 2)],
            batch,
            hd,
            6,
        )
    }

    pub(super) fn lerp(dst: &Tensor, src: &Tensor, tau: f32) -> Result<()> {
        let n = dst.elem_count();
        if src.elem_count() != n {
            bail!("polyak: parameters differ in size");
        }
        let dev = cuda_device(dst)?;
        let func = dev.get_or_load_custom_func("reflex_lerp", MODULE, PTX)?;
        let (ds, dl) = dst.storage_and_layout();
        let (ss, sl) = src.storage_and_layout();
        let dv = cuda(&ds)?.as_cuda_slice::<f32>()?.slice(range(dl, n)?);
        let sv = cuda(&ss)?.as_cuda_slice::<f32>()?.slice(range(sl, n)?);
        let n64 = n as u64;
        let mut b = func.builder();
        b.arg(&dv).arg(&sv).arg(&n64).arg(&tau);
        // SAFETY: dst is n floats written in place, src n floats read.
        unsafe { b.launch(config(n)) }.map_err(launch_error)?;
        Ok(())
    }
}

#[cfg(not(feature = "cuda"))]
const NOT_BUILT: &str = "fused CUDA kernels: built without the `cuda` feature";

/// Σ g² over every tensor of `grads`, as an f64 scalar on their device.
pub(crate) fn sum_squares(grads: &[&Tensor]) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    return imp::sum_squares(grads);
    #[cfg(not(feature = "cuda"))]
    {
        let _ = grads;
        candle_core::bail!("{NOT_BUILT}")
    }
}

/// One Adam step on `p` with moments `m`, `v` and gradient `g`, all updated
/// in place; the gradient is first scaled to the global norm `√normsq` clipped
/// at `step.max_norm` when `normsq` is given. With `hyper` (an f32 `[2]` on the
/// device) the step size and second bias correction are read from it instead
/// of `step` (for a CUDA graph, which replays arguments as captured).
pub(crate) fn adam(
    p: &Tensor,
    m: &Tensor,
    v: &Tensor,
    g: &Tensor,
    normsq: Option<&Tensor>,
    hyper: Option<&Tensor>,
    step: AdamStep,
) -> Result<()> {
    #[cfg(feature = "cuda")]
    return imp::adam(p, m, v, g, normsq, hyper, step);
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (p, m, v, g, normsq, hyper, step);
        candle_core::bail!("{NOT_BUILT}")
    }
}

/// Whether the layers' fused CUDA kernels (trainer/cuda/dense.cu, lstm.cu)
/// run on `device`: CUDA, a `cuda` build, not turned off.
pub(crate) fn cuda_kernels(device: &candle_core::Device) -> bool {
    device.is_cuda() && cfg!(feature = "cuda") && enabled()
}

#[cfg(feature = "cuda")]
pub(crate) use imp::{
    bias_act as bias_act_cuda, lstm_cell as lstm_cell_cuda,
    lstm_cell_backward as lstm_cell_backward_cuda, preact_grad as preact_grad_cuda,
};

/// `dst ← (1 − τ) dst + τ src`, in place.
pub(crate) fn lerp(dst: &Tensor, src: &Tensor, tau: f32) -> Result<()> {
    #[cfg(feature = "cuda")]
    return imp::lerp(dst, src, tau);
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (dst, src, tau);
        candle_core::bail!("{NOT_BUILT}")
    }
}
