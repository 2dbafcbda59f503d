//! Adam exactly as `torch.optim.Adam` (betas 0.9/0.999, eps 1e-8, no weight
//! decay), with its state saved for resuming; with a weight decay, exactly
//! `torch.optim.AdamW` (decoupled: the parameter shrinks by `lr * decay`
//! before the Adam update), which RCAR trains with.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::Result;

pub const BETA1: f64 = 0.9;
pub const BETA2: f64 = 0.999;
pub const EPS: f64 = 1e-8;

pub struct Adam {
    params: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: u64,
    pub lr: f64,
    /// AdamW's decoupled weight decay; 0 is Adam.
    pub weight_decay: f64,
}

impl Adam {
    pub fn new(params: Vec<(String, Var)>, lr: f64) -> Result<Self> {
        let zeros = |p: &Var| p.as_tensor().zeros_like();
        Ok(Self {
            m: params
                .iter()
                .map(|(_, p)| zeros(p))
                .collect::<candle_core::Result<_>>()?,
            v: params
                .iter()
                .map(|(_, p)| zeros(p))
                .collect::<candle_core::Result<_>>()?,
            params,
            step: 0,
            lr,
            weight_decay: 0.0,
        })
    }

    /// `torch.optim.AdamW(params, lr, weight_decay=weight_decay)` (PyTorch's
    /// default decay is 0.01). Every parameter given is decayed, so leave out
    /// those PyTorch would skip for having no gradient.
    pub fn adamw(params: Vec<(String, Var)>, lr: f64, weight_decay: f64) -> Result<Self> {
        Ok(Self {
            weight_decay,
            ..Self::new(params, lr)?
        })
    }

    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The gradient of every parameter (zeros where the loss does not reach it).
    pub fn grads(&self, store: &GradStore) -> Result<Vec<Tensor>> {
        Ok(self
            .params
            .iter()
            .map(|(_, p)| match store.get(p.as_tensor()) {
                Some(g) => Ok(g.clone()),
                None => p.as_tensor().zeros_like(),
            })
            .collect::<candle_core::Result<_>>()?)
    }

    /// One update with the given gradients.
    pub fn step(&mut self, grads: &[Tensor]) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - BETA1.powi(t);
        let bc2_sqrt = (1.0 - BETA2.powi(t)).sqrt();
        let step_size = self.lr / bc1;
        for (i, ((_, p), g)) in self.params.iter().zip(grads).enumerate() {
            let m = ((&self.m[i] * BETA1)? + (g * (1.0 - BETA1))?)?;
            let v = ((&self.v[i] * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?;
            let denom = ((v.sqrt()? / bc2_sqrt)? + EPS)?;
            let update = ((&m / denom)? * step_size)?;
            let old = if self.weight_decay == 0.0 {
                p.as_tensor().detach()
            } else {
                (p.as_tensor().detach() * (1.0 - self.lr * self.weight_decay))?
            };
            p.set(&(old - update)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// Writes the moments (`m.NAME`, `v.NAME`) to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut map = HashMap::new();
        for (i, (name, _)) in self.params.iter().enumerate() {
            map.insert(format!("m.{name}"), self.m[i].clone());
            map.insert(format!("v.{name}"), self.v[i].clone());
        }
        candle_core::safetensors::save(&map, path)?;
        Ok(())
    }

    /// Restores moments written by [`Adam::save`] after `steps` updates.
    pub fn load(&mut self, path: &Path, steps: u64) -> Result<()> {
        let map = candle_core::safetensors::load(path, &candle_core::Device::Cpu)?;
        for (i, (name, p)) in self.params.iter().enumerate() {
            for (slot, key) in [
                (&mut self.m[i], format!("m.{name}")),
                (&mut self.v[i], format!("v.{name}")),
            ] {
                let t = map.get(&key).ok_or_else(|| {
                    crate::TrainError::Invalid(format!(
                        "{} has no optimizer state {key}",
                        path.display()
                    ))
                })?;
                if t.dims() != p.dims() {
                    return Err(crate::TrainError::Invalid(format!(
                        "{}: {key} has shape {:?}, the parameter {:?}",
                        path.display(),
                        t.dims(),
                        p.dims()
                    )));
                }
                *slot = t.clone();
            }
        }
        self.step = steps;
        Ok(())
    }
}

/// Global L2 norm of the gradients, and the gradients scaled so that the
/// norm is at most `max_norm` (`torch.nn.utils.clip_grad_norm_`).
pub fn clip_grad_norm(grads: &[Tensor], max_norm: f64) -> Result<(f64, Vec<Tensor>)> {
    let mut total = 0f64;
    for g in grads {
        total += g
            .sqr()?
            .sum_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
    }
    let norm = total.sqrt();
    let coef = max_norm / (norm + 1e-6);
    if max_norm > 0.0 && coef < 1.0 {
        let clipped = grads
            .iter()
            .map(|g| g * coef)
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok((norm, clipped))
    } else {
        Ok((norm, grads.to_vec()))
    }
}
