//! Small numerical building blocks shared by the encoders and the head.
//!
//! The epsilons follow the published code exactly: they are added to the
//! norm, never used as a clamp, and both choices change the last digits.

use candle_core::{Result, Tensor, Var};
use candle_nn::{Linear, VarBuilder};

/// Added to every L1/L2 norm before dividing.
pub const NORM_EPS: f64 = 1e-8;

/// `x / (sqrt(sum(x^2, dim)) + 1e-8)`.
pub fn l2norm<Dim: candle_core::shape::Dim + Copy>(x: &Tensor, dim: Dim) -> Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(dim)?.sqrt()? + NORM_EPS)?;
    x.broadcast_div(&norm)
}

/// `x / (sum(|x|, dim) + 1e-8)`.
pub fn l1norm<Dim: candle_core::shape::Dim + Copy>(x: &Tensor, dim: Dim) -> Result<Tensor> {
    let norm = (x.abs()?.sum_keepdim(dim)? + NORM_EPS)?;
    x.broadcast_div(&norm)
}

/// Softmax over the last axis. Inference uses candle's fused kernel, which
/// has no backward pass; training composes differentiable ops.
pub fn softmax_last(x: &Tensor, train: bool) -> Result<Tensor> {
    if train {
        candle_nn::ops::softmax(x, candle_core::D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

/// Softmax over the last axis where `keep` (same shape, or broadcastable to
/// it, u8) is non-zero; masked entries get exactly zero weight.
pub fn masked_softmax_last_dim(x: &Tensor, keep: &Tensor, train: bool) -> Result<Tensor> {
    let keep = keep.broadcast_as(x.shape())?;
    let neg_inf = Tensor::new(f32::NEG_INFINITY, x.device())?
        .to_dtype(x.dtype())?
        .broadcast_as(x.shape())?;
    softmax_last(&keep.where_cond(x, &neg_inf)?, train)
}

/// Applies dropout in training mode only, with masks from the seeded
/// generator of [`crate::rng`].
pub fn dropout_t(x: &Tensor, p: f32, train: bool) -> Result<Tensor> {
    if !(train && p > 0.0) {
        return Ok(x.clone());
    }
    if !(0.0..1.0).contains(&p) {
        candle_core::bail!("dropout probability must be in [0, 1), found {p}");
    }
    let mask = crate::rng::dropout_mask(x.elem_count(), p);
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x * mask
}

/// PyTorch's `BatchNorm1d`: the channel is axis 1 of a `[B, C]` or `[B, C, L]` input.
///
/// The running statistics are [`Var`]s so that training mode can update them
/// in place (momentum 0.1, unbiased running variance, as PyTorch does).
#[derive(Clone, Debug)]
pub struct BatchNorm1d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    num_features: usize,
}

impl BatchNorm1d {
    pub const EPS: f64 = 1e-5;
    pub const MOMENTUM: f64 = 0.1;

    /// Loads `weight`, `bias`, `running_mean` and `running_var`, each `[num_features]`.
    /// `num_batches_tracked` is not needed and may be absent.
    pub fn load(vb: VarBuilder, num_features: usize) -> Result<Self> {
        let weight = vb.get_with_hints(num_features, "weight", candle_nn::Init::Const(1.0))?;
        let bias = vb.get_with_hints(num_features, "bias", candle_nn::Init::Const(0.0))?;
        let running_mean =
            vb.get_with_hints(num_features, "running_mean", candle_nn::Init::Const(0.0))?;
        let running_var =
            vb.get_with_hints(num_features, "running_var", candle_nn::Init::Const(1.0))?;
        Ok(Self {
            weight,
            bias,
            running_mean: Var::from_tensor(&running_mean)?,
            running_var: Var::from_tensor(&running_var)?,
            num_features,
        })
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    pub fn running_mean(&self) -> &Tensor {
        self.running_mean.as_tensor()
    }

    pub fn running_var(&self) -> &Tensor {
        self.running_var.as_tensor()
    }

    /// Shape that broadcasts a `[C]` vector along axis 1 of `x`.
    fn channel_shape(&self, x: &Tensor) -> Result<Vec<usize>> {
        let dims = x.dims();
        if dims.len() < 2 || dims.len() > 3 || dims[1] != self.num_features {
            candle_core::bail!(
                "BatchNorm1d({}) expects [B, {0}] or [B, {0}, L], found {:?}",
                self.num_features,
                dims
            );
        }
        let mut shape = vec![1; dims.len()];
        shape[1] = self.num_features;
        Ok(shape)
    }

    /// Folds one batch's statistics into the running ones, as PyTorch does:
    /// `running = (1 - 0.1) running + 0.1 batch`, the variance unbiased.
    /// `mean` and `var_unbiased` are `[C]`.
    pub fn update_running(&self, mean: &Tensor, var_unbiased: &Tensor) -> Result<()> {
        let m = Self::MOMENTUM;
        self.running_mean
            .set(&((self.running_mean.as_tensor() * (1.0 - m))? + (mean.detach() * m)?)?)?;
        self.running_var
            .set(&((self.running_var.as_tensor() * (1.0 - m))? + (var_unbiased.detach() * m)?)?)
    }

    /// Normalises with the given statistics (broadcastable to `x`), then
    /// applies the affine weights along axis 1.
    pub fn normalize(&self, x: &Tensor, mean: &Tensor, var: &Tensor) -> Result<Tensor> {
        let shape = self.channel_shape(x)?;
        let w = self.weight.reshape(shape.as_slice())?;
        let b = self.bias.reshape(shape.as_slice())?;
        x.broadcast_sub(mean)?
            .broadcast_div(&(var + Self::EPS)?.sqrt()?)?
            .broadcast_mul(&w)?
            .broadcast_add(&b)
    }

    /// Eval mode as `x * scale + shift` per channel: `([C], [C])`.
    pub fn eval_affine(&self) -> Result<(Tensor, Tensor)> {
        let scale = (&self.weight / (self.running_var.as_tensor() + Self::EPS)?.sqrt()?)?;
        let shift = (&self.bias - (self.running_mean.as_tensor() * &scale)?)?;
        Ok((scale, shift))
    }

    /// Eval: running statistics. Train: batch statistics over every axis but
    /// the channel, and the running statistics are updated.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let shape = self.channel_shape(x)?;
        let (mean, var) = if train {
            // [C, N] with N = every element of a channel.
            let flat = x.transpose(0, 1)?.flatten_from(1)?;
            let n = flat.dim(1)?;
            let mean = flat.mean_keepdim(1)?;
            let var = flat.broadcast_sub(&mean)?.sqr()?.mean_keepdim(1)?;
            let (mean, var) = (mean.flatten_all()?, var.flatten_all()?);
            let unbiased = if n > 1 {
                (var.detach() * (n as f64 / (n as f64 - 1.0)))?
            } else {
                var.detach()
            };
            self.update_running(&mean, &unbiased)?;
            let shape = self.channel_shape(x)?;
            return self.normalize(
                x,
                &mean.reshape(shape.as_slice())?,
                &var.reshape(shape.as_slice())?,
            );
        } else {
            (
                self.running_mean.as_tensor().clone(),
                self.running_var.as_tensor().clone(),
            )
        };
        let scale = (&self.weight / (var + Self::EPS)?.sqrt()?)?;
        let shift = (&self.bias - (&mean * &scale)?)?;
        x.broadcast_mul(&scale.reshape(shape.as_slice())?)?
            .broadcast_add(&shift.reshape(shape.as_slice())?)
    }
}

/// `[B, L]` u8 mask with ones on the first `lengths[b]` positions of each row.
pub fn length_mask(
    lengths: &[usize],
    max_len: usize,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let mut data = vec![0u8; lengths.len() * max_len];
    for (b, &n) in lengths.iter().enumerate() {
        data[b * max_len..b * max_len + n.min(max_len)].fill(1);
    }
    Tensor::from_vec(data, (lengths.len(), max_len), device)
}

/// Xavier-uniform weights and zero biases, the published init for training
/// from scratch. Loading a trained model ignores the hints.
pub fn xavier_linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let r = (6.0 / (in_dim + out_dim) as f64).sqrt();
    let weight = vb.get_with_hints(
        (out_dim, in_dim),
        "weight",
        candle_nn::Init::Uniform { lo: -r, up: r },
    )?;
    let bias = vb.get_with_hints(out_dim, "bias", candle_nn::Init::Const(0.0))?;
    Ok(Linear::new(weight, Some(bias)))
}

/// `(l2norm(a) - t)^2` for every image: `a [I, C, L, d]` (attended regions,
/// not yet normalised), `t [C, L, d]` (the words) -> `[I, C, L, d]`.
pub fn normalized_sq_diff(a: &Tensor, t: &Tensor) -> Result<Tensor> {
    l2norm(a, candle_core::D::Minus1)?
        .broadcast_sub(&t.unsqueeze(0)?)?
        .sqr()
}
