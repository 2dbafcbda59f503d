//! Text-to-visual attention (SCAN, smooth lambda = 9) for many image-caption
//! pairs at once.

use candle_core::{Result, Tensor, D};

use crate::ops::l2norm;

/// Inverse temperature of the attention softmax over regions.
pub const SMOOTH: f64 = 9.0;
/// Negative slope of the LeakyReLU on the raw region-word affinities.
pub const LEAKY_SLOPE: f64 = 0.1;

/// For every image `i` and caption `c`, each word attends over the regions:
/// `A = LeakyReLU(v t^T)`, each region's row normalised across the words,
/// `alpha = softmax_r(9 A)`, `a_j = l2norm(sum_r alpha_jr v_r)`.
///
/// `v`: `[n_img, R, d]` regions; `t`: `[n_cap, L, d]` words with padded
/// words already zeroed (a zero word adds nothing to a region's row norm).
/// Returns `[n_img, n_cap, L, d]`; rows of padded words are finite but
/// meaningless and must be masked by the caller.
pub fn text_to_visual(v: &Tensor, t: &Tensor, train: bool) -> Result<Tensor> {
    l2norm(&attend_unnormalized(v, t, train)?, D::Minus1)
}

/// [`text_to_visual`] before its final l2norm.
pub fn attend_unnormalized(v: &Tensor, t: &Tensor, train: bool) -> Result<Tensor> {
    attend(&attention_weights(v, t, train)?, v)
}

/// `sum_r alpha_jr v_r` for weights `alpha [n_img, n_cap, L, R]` of
/// [`attention_weights`] and regions `v [n_img, R, d]`: `[n_img, n_cap, L, d]`.
pub fn attend(alpha: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (n_img, regions, d) = v.dims3()?;
    let (_, n_cap, len, _) = alpha.dims4()?;
    // [n_img, n_cap*L, R] x [n_img, R, d]
    alpha
        .reshape((n_img, n_cap * len, regions))?
        .matmul(v)?
        .reshape((n_img, n_cap, len, d))
}

/// The attention weights of every word over the regions,
/// `alpha = softmax_r(9 l2norm_L(LeakyReLU(v t^T)))`: `[n_img, n_cap, L, R]`,
/// each word's row summing to 1 over the regions. This is the computation
/// [`attend_unnormalized`] (and so scoring) uses; explanations read it from
/// there.
pub fn attention_weights(v: &Tensor, t: &Tensor, train: bool) -> Result<Tensor> {
    let (n_img, regions, d) = v.dims3()?;
    let (n_cap, len, _) = t.dims3()?;
    // One GEMM for all pairs: [n_cap*L, n_img*R] -> [n_img, n_cap, L, R].
    let affinity = t
        .reshape((n_cap * len, d))?
        .matmul(&v.reshape((n_img * regions, d))?.t()?)?
        .reshape((n_cap, len, n_img, regions))?
        .permute((2, 0, 1, 3))?
        .contiguous()?;
    // LeakyReLU with a slope below 1 is max(x, slope x): two ops, not three.
    let affinity = affinity.maximum(&(&affinity * LEAKY_SLOPE)?)?;
    // Normalise each region's affinities across the words (axis L).
    let affinity = l2norm(&affinity, 2)?;
    crate::ops::softmax_last(&(affinity * SMOOTH)?, train)
}
