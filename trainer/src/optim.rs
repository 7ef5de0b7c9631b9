//! Adam with its state in the open: moments and step count are ours, so a
//! checkpoint restores the optimizer exactly (candle's `VarMap` saves weights only).
//! Also global gradient-norm clipping.
//!
//! On CPU the update runs in place: three tight passes per parameter (first
//! moment, second moment, parameter) over the tensors' own storage, instead of
//! a dozen candle ops that each allocate a tensor the parameter's size.
//! Elsewhere it is the same arithmetic in candle ops; a unit test holds the
//! two to each other.

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Result, Storage, Tensor, Var};

fn cpu_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("in-place update: non-contiguous tensor".into()))?;
    Ok(&storage.as_slice::<f32>()?[start..end])
}

fn cpu_slice_mut<'a>(storage: &'a mut CpuStorage, layout: &Layout) -> Result<&'a mut [f32]> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("in-place update: non-contiguous tensor".into()))?;
    match storage {
        CpuStorage::F32(data) => Ok(&mut data[start..end]),
        _ => candle_core::bail!("in-place update: not f32"),
    }
}

/// The destination and source of an in-place op over two same-sized tensors.
fn dst_src<'a, 'b>(
    dst: &'a mut CpuStorage,
    dst_l: &Layout,
    src: &'b CpuStorage,
    src_l: &Layout,
    what: &str,
) -> Result<(&'a mut [f32], &'b [f32])> {
    let (d, s) = (cpu_slice_mut(dst, dst_l)?, cpu_slice(src, src_l)?);
    if d.len() != s.len() {
        candle_core::bail!("{what}: {} values against {}", d.len(), s.len());
    }
    Ok((d, s))
}

/// Whether the in-place CPU passes apply to `t`.
pub(crate) fn in_place(t: &Tensor) -> bool {
    crate::nn::fused::cpu_kernels(t.device())
        && t.dtype() == candle_core::DType::F32
        && t.is_contiguous()
}

/// Σ t² (f64 accumulation on CPU).
fn sum_sq(t: &Tensor) -> Result<f64> {
    if in_place(t) {
        let (storage, layout) = t.storage_and_layout();
        if let Storage::Cpu(cpu) = &*storage {
            let x = cpu_slice(cpu, layout)?;
            return Ok(wide(
                #[inline(always)]
                || sum_sq_slice(x),
            ));
        }
    }
    Ok(f64::from(t.sqr()?.sum_all()?.to_scalar::<f32>()?))
}

/// Σ t² of each of `members` equal slices along the first dimension.
fn sum_sq_members(t: &Tensor, members: usize) -> Result<Vec<f64>> {
    if in_place(t) {
        let (storage, layout) = t.storage_and_layout();
        if let Storage::Cpu(cpu) = &*storage {
            let x = cpu_slice(cpu, layout)?;
            let chunk = x.len() / members;
            return Ok(x
                .chunks(chunk)
                .map(|c| {
                    wide(
                        #[inline(always)]
                        || sum_sq_slice(c),
                    )
                })
                .collect());
        }
    }
    let sums = t.sqr()?.reshape((members, ()))?.sum(1)?.to_vec1::<f32>()?;
    Ok(sums.into_iter().map(f64::from).collect())
}

/// Σ x² in f64 over four interleaved partial sums: one running sum is a chain
/// of dependent adds that no vector unit can shorten; four independent ones
/// vectorize. (The order differs from a single running sum only in the last
/// bits of an f64, far below the f32 clip scale computed from it.)
#[inline(always)]
fn sum_sq_slice(x: &[f32]) -> f64 {
    let mut acc = [0.0f64; 4];
    let chunks = x.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f64::from(v) * f64::from(v);
        }
    }
    let tail: f64 = tail.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Runs `f` compiled for AVX2 when the CPU has it, so the optimizer's loops
/// work on 8 floats at a time instead of SSE2's 4. The results are the same
/// bit for bit: `+`, `*`, `/` and `sqrt` are exactly rounded either way, and
/// Rust never fuses a multiply and an add unless asked to.
#[inline(always)]
fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above), the only
            // requirement of a `target_feature` function.
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// m ← β m + (1 − β) s g  (or with (s g)² for the second moment), with the
/// clip scale s of each member's equal slice of the tensor (one slice for a
/// single learner).
struct Moment {
    beta: f32,
    scales: Vec<f32>,
    squared: bool,
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "adam-moment"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let (m, g) = dst_src(s1, l1, s2, l2, "adam: moment and gradient")?;
        let (b, rest) = (self.beta, 1.0 - self.beta);
        let squared = self.squared;
        let chunk = m.len() / self.scales.len().max(1);
        if chunk * self.scales.len() != m.len() {
            candle_core::bail!("adam: {} values in {} members", m.len(), self.scales.len());
        }
        for ((m, g), &s) in m.chunks_mut(chunk).zip(g.chunks(chunk)).zip(&self.scales) {
            wide(
                #[inline(always)]
                || {
                    if squared {
                        for (m, &g) in m.iter_mut().zip(g) {
                            let g = s * g;
                            *m = b * *m + rest * (g * g);
                        }
                    } else {
                        for (m, &g) in m.iter_mut().zip(g) {
                            *m = b * *m + rest * (s * g);
                        }
                    }
                },
            );
        }
        Ok(())
    }
}

/// θ ← θ − step · m / (√(v / c₂) + ε).
struct AdamParam {
    step_size: f32,
    correction2: f32,
    eps: f32,
}

impl InplaceOp3 for AdamParam {
    fn name(&self) -> &'static str {
        "adam-param"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let theta = cpu_slice_mut(s1, l1)?;
        let (m, v) = (cpu_slice(s2, l2)?, cpu_slice(s3, l3)?);
        if theta.len() != m.len() || theta.len() != v.len() {
            candle_core::bail!("adam: parameter and moments differ in size");
        }
        let inv_c2 = 1.0 / self.correction2;
        let (step_size, eps) = (self.step_size, self.eps);
        wide(
            #[inline(always)]
            || {
                for ((t, &m), &v) in theta.iter_mut().zip(m).zip(v) {
                    *t -= step_size * m / ((v * inv_c2).sqrt() + eps);
                }
            },
        );
        Ok(())
    }
}

/// θ ← (1 − τ) θ + τ θ_src.
struct Lerp {
    tau: f32,
}

impl InplaceOp2 for Lerp {
    fn name(&self) -> &'static str {
        "polyak"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let (dst, src) = dst_src(s1, l1, s2, l2, "polyak: parameters")?;
        let (keep, tau) = (1.0 - self.tau, self.tau);
        wide(
            #[inline(always)]
            || {
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d = keep * *d + tau * s;
                }
            },
        );
        Ok(())
    }
}

/// Polyak averaging of one parameter, θ_dst ← (1 − τ) θ_dst + τ θ_src: in
/// place on CPU.
pub(crate) fn polyak_var(dst: &Var, src: &Var, tau: f64) -> Result<()> {
    let (d, s) = (dst.as_tensor(), src.as_tensor());
    if in_place(d) && in_place(s) && d.dims() == s.dims() {
        return d.inplace_op2(s, &Lerp { tau: tau as f32 });
    }
    use crate::gpu::kernels;
    if kernels::available(d) && kernels::available(s) && d.dims() == s.dims() {
        return kernels::lerp(d, s, tau as f32);
    }
    let mixed = ((d * (1.0 - tau))? + (s * tau)?)?;
    dst.set(&mixed.detach())
}

/// Adam (Kingma & Ba 2015) without weight decay.
#[derive(Debug)]
pub struct Adam {
    vars: Vec<Var>,
    first_moment: Vec<Tensor>,
    second_moment: Vec<Tensor>,
    steps: u64,
    /// Learning rate.
    pub lr: f64,
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to √v̂ for stability.
    pub eps: f64,
    /// Use the in-place CPU passes where they apply (off only to test them
    /// against the tensor form).
    in_place: bool,
    /// Bumped whenever the moments are replaced (a checkpoint load), so that
    /// a captured CUDA graph, which writes them by address, is made anew.
    generation: u64,
    /// Learners whose parameters are stacked along each parameter's first
    /// dimension (see [`crate::nn::stack`]); each gets its own clip.
    members: usize,
}

impl Adam {
    /// Adam over `vars` with the usual β = (0.9, 0.999) and ε = 1e-8 (PyTorch's).
    pub fn new(vars: Vec<Var>, lr: f64) -> Result<Self> {
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        Ok(Self {
            first_moment: vars.iter().map(zeros).collect::<Result<_>>()?,
            second_moment: vars.iter().map(zeros).collect::<Result<_>>()?,
            vars,
            steps: 0,
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            in_place: true,
            generation: Self::new_generation(),
            members: 1,
        })
    }

    /// Adam for a population of `members` learners stacked along the first
    /// dimension of every parameter ([`crate::nn::stack`]): the same update
    /// as `members` separate optimizers, clipping included: each member's
    /// gradient norm is its own.
    pub fn population(vars: Vec<Var>, lr: f64, members: usize) -> Result<Self> {
        for v in &vars {
            if members == 0 || v.dims().first() != Some(&members) {
                candle_core::bail!(
                    "a population of {members}: parameter of shape {:?} is not stacked",
                    v.dims()
                );
            }
        }
        let mut adam = Self::new(vars, lr)?;
        adam.members = members;
        Ok(adam)
    }

    /// Number of stacked learners (1 for a single one).
    pub fn members(&self) -> usize {
        self.members
    }

    /// Updates taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// One update from `grads`, first scaled so their global L2 norm is at most
    /// `max_grad_norm` (if given). Returns the norm before clipping (member
    /// 0's in a population; [`step_members`](Self::step_members) gives all).
    pub fn step(&mut self, grads: &GradStore, max_grad_norm: Option<f64>) -> Result<f64> {
        Ok(self.step_members(grads, max_grad_norm)?[0])
    }

    /// [`step`](Self::step) for every member of a population: each member's
    /// gradients are clipped by their own global norm. Returns the norms
    /// before clipping, one per member.
    pub fn step_members(
        &mut self,
        grads: &GradStore,
        max_grad_norm: Option<f64>,
    ) -> Result<Vec<f64>> {
        if self.members > 1 && !self.population_in_place() {
            let norms = self.step_members_on_device(grads, max_grad_norm, None)?;
            return Ok(norms.to_vec1::<f32>()?.into_iter().map(f64::from).collect());
        }
        let grads: Vec<Option<&Tensor>> = self.vars.iter().map(|v| grads.get(v)).collect();
        if self.in_place && self.fused_cuda(&grads) {
            return Ok(vec![self.step_fused_cuda(&grads, max_grad_norm)?]);
        }
        let (norms, scales) = self.member_norms(&grads, max_grad_norm)?;
        self.apply(&grads, &scales)?;
        Ok(norms)
    }

    /// Whether a population's step takes the in-place CPU passes (else
    /// [`step_members_on_device`](Self::step_members_on_device)).
    fn population_in_place(&self) -> bool {
        self.in_place
            && self
                .vars
                .first()
                .is_some_and(|v| crate::nn::fused::cpu_kernels(v.device()))
    }

    /// A population's step with each member's norm and clip computed on the
    /// device, nothing read back: the norms come back as an f32 device
    /// tensor `[P]` for the caller to read with its other results. On CUDA
    /// the step itself is the fused kernels', unclipped, on the clipped
    /// gradients. With `hyper` (a CUDA graph's step size and bias
    /// correction buffer, see [`step_in_graph`](Self::step_in_graph)) the
    /// fused kernels read them from there and the step count is left to the
    /// caller's [`next_hyper`](Self::next_hyper).
    pub(crate) fn step_members_on_device(
        &mut self,
        grads: &GradStore,
        max_grad_norm: Option<f64>,
        hyper: Option<&Tensor>,
    ) -> Result<Tensor> {
        let grads: Vec<Option<&Tensor>> = self.vars.iter().map(|v| grads.get(v)).collect();
        let p = self.members;
        let mut normsq: Option<Tensor> = None;
        for g in grads.iter().flatten() {
            let part = g.sqr()?.reshape((p, ()))?.sum(1)?;
            normsq = Some(match normsq {
                None => part,
                Some(total) => (total + part)?,
            });
        }
        let Some(normsq) = normsq else {
            candle_core::bail!("adam: no parameter has a gradient");
        };
        let norms = normsq.sqrt()?;
        let scaled: Vec<Option<Tensor>> = match max_grad_norm {
            None => grads.iter().map(|g| g.cloned()).collect(),
            Some(max) => {
                // max / (norm + 1e-6) where the norm exceeds max, else 1.
                let clipped = ((&norms + 1e-6)?.recip()? * max)?;
                let scale = norms.gt(max)?.where_cond(&clipped, &clipped.ones_like()?)?;
                grads
                    .iter()
                    .map(|g| {
                        g.map(|g| {
                            let mut dims = vec![1; g.rank()];
                            dims[0] = p;
                            g.broadcast_mul(&scale.reshape(dims)?)
                        })
                        .transpose()
                    })
                    .collect::<Result<_>>()?
            }
        };
        let refs: Vec<Option<&Tensor>> = scaled.iter().map(Option::as_ref).collect();
        let fused = self.in_place && self.fused_cuda(&refs);
        if let Some(hyper) = hyper {
            if !fused {
                candle_core::bail!("a CUDA graph step needs the fused CUDA optimizer kernels");
            }
            self.fused_cuda_pass(&refs, None, [0.0, 1.0], Some(hyper))?;
        } else if fused {
            let hyper = self.next_hyper();
            self.fused_cuda_pass(&refs, None, hyper, None)?;
        } else {
            self.apply(&refs, &[1.0])?;
        }
        Ok(norms)
    }

    /// Adam's update from `grads`, member k's slice scaled by `scales[k]`
    /// (one scale for a single learner).
    fn apply(&mut self, grads: &[Option<&Tensor>], scales: &[f64]) -> Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        let correction1 = 1.0 - self.beta1.powi(t);
        let correction2 = 1.0 - self.beta2.powi(t);
        let step_size = self.lr / correction1;
        for (i, grad) in grads.iter().enumerate() {
            let Some(grad) = grad else { continue };
            let var = &self.vars[i];
            let (m, v) = (&self.first_moment[i], &self.second_moment[i]);
            let fast = self.in_place && crate::nn::fused::cpu_kernels(grad.device());
            if fast && in_place(var.as_tensor()) && in_place(m) && in_place(v) {
                let grad = grad.contiguous()?;
                for (moment, beta, squared) in [(m, self.beta1, false), (v, self.beta2, true)] {
                    let op = Moment {
                        beta: beta as f32,
                        scales: scales.iter().map(|&s| s as f32).collect(),
                        squared,
                    };
                    moment.inplace_op2(&grad, &op)?;
                }
                let op = AdamParam {
                    step_size: step_size as f32,
                    correction2: correction2 as f32,
                    eps: self.eps as f32,
                };
                var.as_tensor().inplace_op3(m, v, &op)?;
                continue;
            }
            let grad = self.scale_members(grad, scales)?;
            let m = ((&self.first_moment[i] * self.beta1)? + (&grad * (1.0 - self.beta1))?)?;
            let v = ((&self.second_moment[i] * self.beta2)? + (grad.sqr()? * (1.0 - self.beta2))?)?;
            // θ ← θ − lr/(1−β1ᵗ) · m / (√(v/(1−β2ᵗ)) + ε)
            let denom = ((&v / correction2)?.sqrt()? + self.eps)?;
            let update = ((&m / &denom)? * step_size)?;
            var.set(&(var.as_tensor() - update)?.detach())?;
            self.first_moment[i] = m.detach();
            self.second_moment[i] = v.detach();
            self.generation = Self::new_generation();
        }
        Ok(())
    }

    /// Each member's global gradient norm, and the factor that clips it to
    /// `max_grad_norm` (1 when within it).
    fn member_norms(
        &self,
        grads: &[Option<&Tensor>],
        max_grad_norm: Option<f64>,
    ) -> Result<(Vec<f64>, Vec<f64>)> {
        let mut norm_sq = vec![0.0f64; self.members];
        for g in grads.iter().flatten() {
            if self.members == 1 {
                norm_sq[0] += sum_sq(g)?;
            } else {
                for (total, part) in norm_sq.iter_mut().zip(sum_sq_members(g, self.members)?) {
                    *total += part;
                }
            }
        }
        let norms: Vec<f64> = norm_sq.iter().map(|n| n.sqrt()).collect();
        let scales = norms
            .iter()
            .map(|&norm| match max_grad_norm {
                Some(max) if norm > max => max / (norm + 1e-6),
                _ => 1.0,
            })
            .collect();
        Ok((norms, scales))
    }

    /// `grad` with member k's slice times `scales[k]`.
    fn scale_members(&self, grad: &Tensor, scales: &[f64]) -> Result<Tensor> {
        if scales.iter().all(|&s| s == 1.0) {
            return Ok(grad.clone());
        }
        if let [scale] = scales {
            return grad * *scale;
        }
        let mut dims = vec![1; grad.rank()];
        dims[0] = scales.len();
        let column: Vec<f32> = scales.iter().map(|&s| s as f32).collect();
        grad.broadcast_mul(&Tensor::from_vec(column, dims, grad.device())?)
    }

    /// Whether every parameter with a gradient, its moments and the gradient
    /// can take the fused CUDA kernels.
    fn fused_cuda(&self, grads: &[Option<&Tensor>]) -> bool {
        use crate::gpu::kernels::available;
        let mut any = false;
        for (i, g) in grads.iter().enumerate() {
            let Some(g) = g else { continue };
            any = true;
            let on_gpu = g.device().is_cuda() && g.dtype() == candle_core::DType::F32;
            if !(on_gpu
                && available(self.vars[i].as_tensor())
                && available(&self.first_moment[i])
                && available(&self.second_moment[i]))
            {
                return false;
            }
        }
        any
    }

    /// [`step`](Self::step) on CUDA: the global norm summed on the device, then
    /// one fused kernel per parameter that clips, updates both moments and the
    /// parameter in place. One value comes back to the host: the norm.
    fn step_fused_cuda(
        &mut self,
        grads: &[Option<&Tensor>],
        max_grad_norm: Option<f64>,
    ) -> Result<f64> {
        let hyper = self.next_hyper();
        let normsq = self.fused_cuda_pass(grads, max_grad_norm, hyper, None)?;
        Ok(normsq.to_scalar::<f64>()?.sqrt())
    }

    /// Changes whenever the moment tensors are replaced; unique across
    /// optimizers.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// A generation no optimizer has had.
    fn new_generation() -> u64 {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Advances the step count and returns this step's (step size, second
    /// bias correction).
    pub(crate) fn next_hyper(&mut self) -> [f32; 2] {
        self.steps += 1;
        let t = self.steps as i32;
        [
            (self.lr / (1.0 - self.beta1.powi(t))) as f32,
            (1.0 - self.beta2.powi(t)) as f32,
        ]
    }

    /// The fused step for a CUDA graph: the step size and bias correction come
    /// from `hyper` (f32 `[2]` on the device, refreshed before each replay by
    /// the caller with [`next_hyper`](Self::next_hyper)); nothing is read back.
    /// Returns the squared norm as an f64 device scalar. The step count is
    /// not advanced here. Fails unless every tensor takes the fused kernels.
    pub(crate) fn step_in_graph(
        &mut self,
        grads: &GradStore,
        max_grad_norm: Option<f64>,
        hyper: &Tensor,
    ) -> Result<Tensor> {
        let grads: Vec<Option<&Tensor>> = self.vars.iter().map(|v| grads.get(v)).collect();
        if self.members != 1 {
            candle_core::bail!("a CUDA graph step clips one learner, not a population");
        }
        if !self.fused_cuda(&grads) {
            candle_core::bail!("a CUDA graph step needs the fused CUDA optimizer kernels");
        }
        self.fused_cuda_pass(&grads, max_grad_norm, [0.0, 1.0], Some(hyper))
    }

    /// Norm and per-parameter fused Adam launches.
    fn fused_cuda_pass(
        &mut self,
        grads: &[Option<&Tensor>],
        max_grad_norm: Option<f64>,
        [step_size, correction2]: [f32; 2],
        hyper: Option<&Tensor>,
    ) -> Result<Tensor> {
        use crate::gpu::kernels;
        // Gradients are contiguous in practice (candle accumulates each one
        // with an add); a strided one is copied once here.
        let grads: Vec<Option<Tensor>> = grads
            .iter()
            .map(|g| g.map(Tensor::contiguous).transpose())
            .collect::<Result<_>>()?;
        let present: Vec<&Tensor> = grads.iter().flatten().collect();
        let normsq = kernels::sum_squares(&present)?;
        let step = kernels::AdamStep {
            beta1: self.beta1 as f32,
            beta2: self.beta2 as f32,
            step_size,
            correction2,
            eps: self.eps as f32,
            max_norm: max_grad_norm.unwrap_or(-1.0),
        };
        for (i, grad) in grads.iter().enumerate() {
            let Some(grad) = grad else { continue };
            kernels::adam(
                self.vars[i].as_tensor(),
                &self.first_moment[i],
                &self.second_moment[i],
                grad,
                max_grad_norm.map(|_| &normsq),
                hyper,
                step,
            )?;
        }
        Ok(normsq)
    }

    /// The moments, named after their parameters' `names` (same order as the
    /// vars), for a checkpoint.
    pub fn state(&self, names: &[String]) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, name) in names.iter().enumerate() {
            out.push((format!("adam.m.{name}"), self.first_moment[i].clone()));
            out.push((format!("adam.v.{name}"), self.second_moment[i].clone()));
        }
        out
    }

    /// Restores moments (by the names [`state`](Self::state) wrote) and the step count.
    pub fn load_state(
        &mut self,
        names: &[String],
        tensors: &std::collections::HashMap<String, Tensor>,
        steps: u64,
    ) -> Result<()> {
        for (i, name) in names.iter().enumerate() {
            for (prefix, slot) in [
                ("adam.m", &mut self.first_moment[i]),
                ("adam.v", &mut self.second_moment[i]),
            ] {
                let key = format!("{prefix}.{name}");
                let t = tensors
                    .get(&key)
                    .ok_or_else(|| candle_core::Error::Msg(format!("checkpoint lacks `{key}`")))?;
                if t.dims() != slot.dims() {
                    candle_core::bail!(
                        "`{key}` has shape {:?}, expected {:?}",
                        t.dims(),
                        slot.dims()
                    );
                }
                *slot = t.clone();
            }
        }
        self.steps = steps;
        self.generation = Self::new_generation();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn params(seed: f32) -> Vec<Var> {
        let a: Vec<f32> = (0..12).map(|i| (i as f32 * 0.37 + seed).sin()).collect();
        let b: Vec<f32> = (0..5).map(|i| (i as f32 * 1.3 - seed).cos()).collect();
        vec![
            Var::from_tensor(&Tensor::from_vec(a, (3, 4), &Device::Cpu).unwrap()).unwrap(),
            Var::from_tensor(&Tensor::from_vec(b, 5, &Device::Cpu).unwrap()).unwrap(),
        ]
    }

    fn loss(vars: &[Var], step: usize) -> Tensor {
        loss_on(vars[0].as_tensor(), vars[1].as_tensor(), step)
    }

    fn loss_on(a: &Tensor, b: &Tensor, step: usize) -> Tensor {
        // A loss whose gradients change sign and size from step to step.
        let k = step as f64 * 0.7;
        let a = (a.sqr().unwrap() * (1.0 + k.sin())).unwrap();
        let b = (b * (3.0 * k.cos())).unwrap();
        (a.sum_all().unwrap() + b.sum_all().unwrap()).unwrap()
    }

    /// The in-place CPU passes give the tensor form's parameters and moments,
    /// with and without clipping (the norm is large, so clipping bites).
    #[test]
    fn in_place_adam_matches_the_tensor_form() {
        for clip in [None, Some(0.5)] {
            let (fast_vars, slow_vars) = (params(0.3), params(0.3));
            let mut fast = Adam::new(fast_vars.clone(), 1e-2).unwrap();
            let mut slow = Adam::new(slow_vars.clone(), 1e-2).unwrap();
            slow.in_place = false;
            for step in 0..25 {
                let nf = fast
                    .step(&loss(&fast_vars, step).backward().unwrap(), clip)
                    .unwrap();
                let ns = slow
                    .step(&loss(&slow_vars, step).backward().unwrap(), clip)
                    .unwrap();
                assert!((nf - ns).abs() < 1e-5 * (1.0 + ns), "norm {nf} vs {ns}");
            }
            let names = ["a".to_string(), "b".to_string()];
            let mut fast_tensors: Vec<Tensor> =
                fast_vars.iter().map(|v| v.as_tensor().clone()).collect();
            let mut slow_tensors: Vec<Tensor> =
                slow_vars.iter().map(|v| v.as_tensor().clone()).collect();
            fast_tensors.extend(fast.state(&names).into_iter().map(|(_, t)| t));
            slow_tensors.extend(slow.state(&names).into_iter().map(|(_, t)| t));
            let mut checked = 0;
            for (f, s) in fast_tensors.iter().zip(&slow_tensors) {
                let f = f.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let s = s.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                for (x, y) in f.iter().zip(&s) {
                    assert!(
                        (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                        "{clip:?}: {x} vs {y}"
                    );
                }
                checked += 1;
            }
            assert_eq!(checked, 6, "two parameters and their four moments");
            // And it moved something.
            assert_ne!(
                fast_vars[0].as_tensor().to_vec2::<f32>().unwrap(),
                params(0.3)[0].as_tensor().to_vec2::<f32>().unwrap()
            );
        }
    }

    /// A population's optimizer gives each member what its own optimizer
    /// gives it, with clipping that bites on one member and not another, in
    /// both the in-place and the tensor form.
    #[test]
    fn population_adam_matches_separate_optimizers() {
        // Member k's loss is scaled by 10^k, so only the larger ones clip.
        let member_loss = |vars: &[Var], step: usize, k: usize| {
            (loss(vars, step) * 10f64.powi(k as i32)).unwrap()
        };
        for in_place in [true, false] {
            let singles: Vec<Vec<Var>> = (0..3).map(|k| params(0.3 + k as f32)).collect();
            let stacked: Vec<Var> = (0..2)
                .map(|i| {
                    let parts: Vec<Tensor> = singles
                        .iter()
                        .map(|vars| vars[i].as_tensor().detach().copy().unwrap())
                        .collect();
                    Var::from_tensor(&Tensor::stack(&parts, 0).unwrap()).unwrap()
                })
                .collect();
            let mut each: Vec<Adam> = singles
                .iter()
                .map(|vars| Adam::new(vars.clone(), 1e-2).unwrap())
                .collect();
            let mut all = Adam::population(stacked.clone(), 1e-2, 3).unwrap();
            all.in_place = in_place;
            for step in 0..10 {
                let mut total = Tensor::zeros((), candle_core::DType::F32, &Device::Cpu).unwrap();
                let mut expected = Vec::new();
                for (k, (vars, adam)) in singles.iter().zip(&mut each).enumerate() {
                    let lk = (loss_on(
                        &stacked[0].as_tensor().get(k).unwrap(),
                        &stacked[1].as_tensor().get(k).unwrap(),
                        step,
                    ) * 10f64.powi(k as i32))
                    .unwrap();
                    total = (total + lk).unwrap();
                    expected.push(
                        adam.step(&member_loss(vars, step, k).backward().unwrap(), Some(50.0))
                            .unwrap(),
                    );
                }
                let norms = all
                    .step_members(&total.backward().unwrap(), Some(50.0))
                    .unwrap();
                for (n, e) in norms.iter().zip(&expected) {
                    assert!((n - e).abs() <= 1e-5 * (1.0 + e), "norm {n} vs {e}");
                }
                if step == 0 {
                    assert!(expected[0] < 50.0 && expected[2] > 50.0, "{expected:?}");
                }
            }
            for (k, vars) in singles.iter().enumerate() {
                for (i, v) in vars.iter().enumerate() {
                    let mine = stacked[i]
                        .as_tensor()
                        .get(k)
                        .unwrap()
                        .flatten_all()
                        .unwrap();
                    let theirs = v.as_tensor().flatten_all().unwrap();
                    for (x, y) in mine
                        .to_vec1::<f32>()
                        .unwrap()
                        .iter()
                        .zip(theirs.to_vec1::<f32>().unwrap())
                    {
                        assert!(
                            (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                            "member {k}: {x} vs {y}"
                        );
                    }
                }
            }
        }
        assert!(
            Adam::population(params(0.0), 1e-2, 3).is_err(),
            "unstacked shapes"
        );
    }

    #[test]
    fn polyak_in_place_mixes() {
        let (dst, src) = (params(0.1), params(0.9));
        let before = dst[1].as_tensor().to_vec1::<f32>().unwrap();
        polyak_var(&dst[1], &src[1], 0.25).unwrap();
        let after = dst[1].as_tensor().to_vec1::<f32>().unwrap();
        let theirs = src[1].as_tensor().to_vec1::<f32>().unwrap();
        for ((a, b), t) in after.iter().zip(&before).zip(&theirs) {
            assert!((a - (0.75 * b + 0.25 * t)).abs() < 1e-6);
        }
    }
}
