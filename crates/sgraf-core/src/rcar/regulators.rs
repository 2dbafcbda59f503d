//! RCAR's cross-attention, alignment vectors and the two regulators
//! (`lib/encoders.py:224-318` upstream; see docs/rcar.md).
//!
//! Shapes: `n` image-caption pairs (one caption against `n` images), `Lq`
//! query tokens, `Ls` context tokens, `d` the joint embedding, `m` the
//! alignment vector size.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};

// The LeakyReLU on the query-context affinities (`encoders.py:300`) is
// SCAN's, as SGRAF's: one slope for both families (the CPU engine's
// `attention_rows` applies it to both).
use crate::attention::LEAKY_SLOPE;
use crate::ops::{dropout_t, l2norm, softmax_last, xavier_linear, NORM_EPS};

/// Dropout inside each aggregation regulator (`encoders.py:230`).
pub const RAR_DROPOUT: f32 = 0.4;

/// The per-dimension attention matrix, `ones(d)` until the first RCR
/// (`encoders.py:187`), then `[n, Lq, d]`.
#[derive(Clone, Debug)]
pub enum Matrix {
    Ones,
    PerQuery(Tensor),
}

/// The softmax smoothing: the option's value until the first RCR, then
/// `[n, Lq, 1]`.
#[derive(Clone, Debug)]
pub enum Smooth {
    Scalar(f64),
    PerQuery(Tensor),
}

/// The attention weights of [`cross_attention`]: `[n, Lq, Ls]`, each query
/// token's row a softmax over the context tokens.
pub fn attention_weights(
    query: &Tensor,
    context: &Tensor,
    matrix: &Matrix,
    smooth: &Smooth,
    train: bool,
) -> Result<Tensor> {
    let query = match matrix {
        Matrix::Ones => query.clone(),
        Matrix::PerQuery(m) => query.broadcast_mul(m)?,
    };
    // [n, Ls, d] x [n, d, Lq] -> [n, Ls, Lq]
    let attn = context.matmul(&query.transpose(1, 2)?.contiguous()?)?;
    // LeakyReLU with a slope below 1 is max(x, slope x).
    let attn = attn.maximum(&(&attn * LEAKY_SLOPE)?)?;
    // Normalised over the query tokens (the last axis), then the softmax
    // runs over the context tokens.
    let attn = l2norm(&attn, D::Minus1)?.transpose(1, 2)?.contiguous()?;
    let attn = match smooth {
        Smooth::Scalar(s) => (attn * *s)?,
        Smooth::PerQuery(s) => attn.broadcast_mul(s)?,
    };
    softmax_last(&attn, train)
}

/// `cross_attention` (`encoders.py:289-318`): query `[n, Lq, d]`, context
/// `[n, Ls, d]` -> the attended context of every query token, l2-normalised,
/// `[n, Lq, d]`.
pub fn cross_attention(
    query: &Tensor,
    context: &Tensor,
    matrix: &Matrix,
    smooth: &Smooth,
    train: bool,
) -> Result<Tensor> {
    let attn = attention_weights(query, context, matrix, smooth, train)?;
    l2norm(&attn.matmul(context)?, D::Minus1)
}

/// `cosine_sim` (`encoders.py:32-37`) over the last axis: the product of the
/// norms is clamped at 1e-8 (not added to, unlike l2norm). `[n, L, d]` -> `[n, L]`.
pub fn cosine_sim(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let dot = (a * b)?.sum(D::Minus1)?;
    let na = a.sqr()?.sum(D::Minus1)?.sqrt()?;
    let nb = b.sqr()?.sum(D::Minus1)?.sqrt()?;
    dot / (na * nb)?.maximum(NORM_EPS)?
}

/// `Alignment_vector` (`encoders.py:274-286`): `sim_transform_w [m, d]`.
#[derive(Clone, Debug)]
pub struct AlignmentVector {
    pub(crate) sim_transform_w: Linear,
}

impl AlignmentVector {
    pub fn load(vb: VarBuilder, d: usize, m: usize) -> Result<Self> {
        Ok(Self {
            sim_transform_w: xavier_linear(d, m, vb.pp("sim_transform_w"))?,
        })
    }

    /// `l2norm(W (query - cross_attention(query, context))^2)`: `[n, Lq, m]`.
    pub fn forward_t(
        &self,
        query: &Tensor,
        context: &Tensor,
        matrix: &Matrix,
        smooth: &Smooth,
        train: bool,
    ) -> Result<Tensor> {
        let wcontext = cross_attention(query, context, matrix, smooth, train)?;
        let rep = (query - wcontext)?.sqr()?;
        l2norm(&self.sim_transform_w.forward(&rep)?, D::Minus1)
    }
}

/// Two linear layers with a tanh between them (`nn.Sequential(Linear, Tanh,
/// Linear)`: parameter names `0.*` and `2.*`).
#[derive(Clone, Debug)]
pub(crate) struct TanhMlp {
    pub(crate) l0: Linear,
    pub(crate) l2: Linear,
}

impl TanhMlp {
    fn load(vb: VarBuilder, i: usize, h: usize, o: usize) -> Result<Self> {
        Ok(Self {
            l0: xavier_linear(i, h, vb.pp("0"))?,
            l2: xavier_linear(h, o, vb.pp("2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.l2.forward(&self.l0.forward(x)?.tanh()?)
    }
}

/// `Correpondence_regulator` (RCR, `encoders.py:253-271`):
/// `rcr_smooth_w = [m -> m/2 -> 1]`, `rcr_matrix_w = [m -> 2m -> d]`.
#[derive(Clone, Debug)]
pub struct CorrespondenceRegulator {
    pub(crate) smooth_w: TanhMlp,
    pub(crate) matrix_w: TanhMlp,
}

impl CorrespondenceRegulator {
    pub fn load(vb: VarBuilder, d: usize, m: usize) -> Result<Self> {
        Ok(Self {
            smooth_w: TanhMlp::load(vb.pp("rcr_smooth_w"), m, m / 2, 1)?,
            matrix_w: TanhMlp::load(vb.pp("rcr_matrix_w"), m, 2 * m, d)?,
        })
    }

    /// Alignment vectors `[n, Lq, m]` -> the next matrix
    /// `clamp(tanh(W x) + matrix, -1, 1)` `[n, Lq, d]` and smoothing
    /// `relu(w x + smooth)` `[n, Lq, 1]` (`encoders.py:268-269`).
    pub fn forward(
        &self,
        x: &Tensor,
        matrix: &Matrix,
        smooth: &Smooth,
    ) -> Result<(Matrix, Smooth)> {
        let delta = self.matrix_w.forward(x)?.tanh()?;
        let matrix = match matrix {
            Matrix::Ones => (delta + 1.0)?,
            Matrix::PerQuery(m) => (delta + m)?,
        }
        .clamp(-1f64, 1f64)?;
        let s = self.smooth_w.forward(x)?;
        let smooth = match smooth {
            Smooth::Scalar(v) => (s + *v)?,
            Smooth::PerQuery(v) => (s + v)?,
        }
        .relu()?;
        Ok((Matrix::PerQuery(matrix), Smooth::PerQuery(smooth)))
    }
}

/// `Aggregation_regulator` (RAR, `encoders.py:224-250`): `rar_q_w.0`,
/// `rar_k_w.0` `[m, m]` (each followed by tanh and dropout 0.4), `rar_v_w.0`
/// `[1, m]`.
#[derive(Clone, Debug)]
pub struct AggregationRegulator {
    pub(crate) q_w: Linear,
    pub(crate) k_w: Linear,
    pub(crate) v_w: Linear,
    dropout: f32,
}

impl AggregationRegulator {
    pub fn load(vb: VarBuilder, m: usize) -> Result<Self> {
        Ok(Self {
            q_w: xavier_linear(m, m, vb.pp("rar_q_w").pp("0"))?,
            k_w: xavier_linear(m, m, vb.pp("rar_k_w").pp("0"))?,
            v_w: xavier_linear(m, 1, vb.pp("rar_v_w").pp("0"))?,
            dropout: RAR_DROPOUT,
        })
    }

    pub fn set_dropout(&mut self, p: f32) {
        self.dropout = p;
    }

    /// The weights over the query tokens: `[n, Lq]`, each row summing to 1.
    pub fn weights(&self, mid: &Tensor, hig: &Tensor, train: bool) -> Result<Tensor> {
        let k = dropout_t(&self.k_w.forward(mid)?.tanh()?, self.dropout, train)?;
        let q = dropout_t(&self.q_w.forward(hig)?.tanh()?, self.dropout, train)?;
        let w = self
            .v_w
            .forward(&k.broadcast_mul(&q.unsqueeze(1)?)?)?
            .squeeze(2)?;
        softmax_last(&w, train)
    }

    /// Alignment vectors `mid [n, Lq, m]` and the current aggregate
    /// `hig [n, m]` -> `l2norm(sum_Lq(weights * mid))` `[n, m]`.
    pub fn forward_t(&self, mid: &Tensor, hig: &Tensor, train: bool) -> Result<Tensor> {
        let w = self.weights(mid, hig, train)?;
        let agg = mid.broadcast_mul(&w.unsqueeze(2)?)?.sum(1)?;
        l2norm(&agg, D::Minus1)
    }
}
