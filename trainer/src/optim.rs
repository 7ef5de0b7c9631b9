//! Adam with its state in the open: moments and step count are ours, so a
//! checkpoint restores the optimizer exactly (candle's `VarMap` saves weights only).
//! Also global gradient-norm clipping.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

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
        })
    }

    /// Updates taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// One update from `grads`, first scaled so their global L2 norm is at most
    /// `max_grad_norm` (if given). Returns the norm before clipping.
    pub fn step(&mut self, grads: &GradStore, max_grad_norm: Option<f64>) -> Result<f64> {
        let grads: Vec<Option<&Tensor>> = self.vars.iter().map(|v| grads.get(v)).collect();
        let mut norm_sq = 0.0f64;
        for g in grads.iter().flatten() {
            norm_sq += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
        }
        let norm = norm_sq.sqrt();
        let scale = match max_grad_norm {
            Some(max) if norm > max => max / (norm + 1e-6),
            _ => 1.0,
        };
        self.steps += 1;
        let t = self.steps as i32;
        let correction1 = 1.0 - self.beta1.powi(t);
        let correction2 = 1.0 - self.beta2.powi(t);
        let step_size = self.lr / correction1;
        for (i, grad) in grads.iter().enumerate() {
            let Some(grad) = grad else { continue };
            let grad = if scale == 1.0 {
                (*grad).clone()
            } else {
                (*grad * scale)?
            };
            let m = ((&self.first_moment[i] * self.beta1)? + (&grad * (1.0 - self.beta1))?)?;
            let v = ((&self.second_moment[i] * self.beta2)? + (grad.sqr()? * (1.0 - self.beta2))?)?;
            // θ ← θ − lr/(1−β1ᵗ) · m / (√(v/(1−β2ᵗ)) + ε)
            let denom = ((&v / correction2)?.sqrt()? + self.eps)?;
            let update = ((&m / &denom)? * step_size)?;
            let var = &self.vars[i];
            var.set(&(var.as_tensor() - update)?.detach())?;
            self.first_moment[i] = m.detach();
            self.second_moment[i] = v.detach();
        }
        Ok(norm)
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
        Ok(())
    }
}
