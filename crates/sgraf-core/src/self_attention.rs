//! The global vectors: self-attention pooling of regions (`VisualSA`) and of
//! words (`TextSA`).

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};

use crate::ops::{dropout_t, l2norm, masked_softmax_last_dim, xavier_linear, BatchNorm1d};

/// Dropout after each tanh in the published self-attention blocks.
pub const SA_DROPOUT: f32 = 0.4;

/// `VisualSA`: `l = tanh(BN_R(W_l v))`, `g = tanh(BN_d(W_g mean_r v))`,
/// `w = softmax_r(W_c (l * g))`, `v_glo = l2norm(sum_r w_r v_r)`.
#[derive(Clone, Debug)]
pub struct VisualSelfAttention {
    pub(crate) local: Linear,
    /// Channels are the regions: the region count is part of the weights.
    pub(crate) local_bn: BatchNorm1d,
    pub(crate) global: Linear,
    pub(crate) global_bn: BatchNorm1d,
    pub(crate) common: Linear,
    dropout: f32,
}

impl VisualSelfAttention {
    /// Loads `embedding_local.{0,1}`, `embedding_global.{0,1}`, `embedding_common.0`.
    pub fn load(vb: VarBuilder, d: usize, regions: usize) -> Result<Self> {
        Ok(Self {
            local: xavier_linear(d, d, vb.pp("embedding_local.0"))?,
            local_bn: BatchNorm1d::load(vb.pp("embedding_local.1"), regions)?,
            global: xavier_linear(d, d, vb.pp("embedding_global.0"))?,
            global_bn: BatchNorm1d::load(vb.pp("embedding_global.1"), d)?,
            common: xavier_linear(d, 1, vb.pp("embedding_common.0"))?,
            dropout: SA_DROPOUT,
        })
    }

    pub fn set_dropout(&mut self, p: f32) {
        self.dropout = p;
    }

    /// `[n_img, R, d] -> [n_img, d]`
    pub fn forward_t(&self, v: &Tensor, train: bool) -> Result<Tensor> {
        let l = self
            .local_bn
            .forward_t(&self.local.forward(v)?, train)?
            .tanh()?;
        let l = dropout_t(&l, self.dropout, train)?;
        let g = self.global.forward(&v.mean(1)?)?;
        let g = self.global_bn.forward_t(&g, train)?.tanh()?;
        let g = dropout_t(&g, self.dropout, train)?;
        // [n_img, R]
        let w = self
            .common
            .forward(&l.broadcast_mul(&g.unsqueeze(1)?)?)?
            .squeeze(2)?;
        let w = crate::ops::softmax_last(&w, train)?;
        let pooled = w.unsqueeze(2)?.broadcast_mul(v)?.sum(1)?;
        l2norm(&pooled, D::Minus1)
    }
}

/// `TextSA`: as [`VisualSelfAttention`] without BatchNorm, over each
/// caption's real words only.
#[derive(Clone, Debug)]
pub struct TextSelfAttention {
    pub(crate) local: Linear,
    pub(crate) global: Linear,
    pub(crate) common: Linear,
    dropout: f32,
}

impl TextSelfAttention {
    /// Loads `embedding_local.0`, `embedding_global.0`, `embedding_common.0`.
    pub fn load(vb: VarBuilder, d: usize) -> Result<Self> {
        Ok(Self {
            local: xavier_linear(d, d, vb.pp("embedding_local.0"))?,
            global: xavier_linear(d, d, vb.pp("embedding_global.0"))?,
            common: xavier_linear(d, 1, vb.pp("embedding_common.0"))?,
            dropout: SA_DROPOUT,
        })
    }

    pub fn set_dropout(&mut self, p: f32) {
        self.dropout = p;
    }

    /// `t [n_cap, L, d]`, `keep [n_cap, L]` (u8, 1 on real words) -> `[n_cap, d]`
    pub fn forward_t(&self, t: &Tensor, keep: &Tensor, train: bool) -> Result<Tensor> {
        let keep_f = keep.to_dtype(t.dtype())?;
        let t = t.broadcast_mul(&keep_f.unsqueeze(2)?)?;
        // Mean over the true length: [n_cap, d].
        let mean = t.sum(1)?.broadcast_div(&keep_f.sum_keepdim(1)?)?;
        let l = dropout_t(&self.local.forward(&t)?.tanh()?, self.dropout, train)?;
        let g = dropout_t(&self.global.forward(&mean)?.tanh()?, self.dropout, train)?;
        let w = self
            .common
            .forward(&l.broadcast_mul(&g.unsqueeze(1)?)?)?
            .squeeze(2)?;
        let w = masked_softmax_last_dim(&w, keep, train)?;
        let pooled = w.unsqueeze(2)?.broadcast_mul(&t)?.sum(1)?;
        l2norm(&pooled, D::Minus1)
    }
}
