use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};

use crate::ops::{l1norm, l2norm, xavier_linear, BatchNorm1d};

/// Similarity Attention Filtration (`AttentionFiltration`):
/// `g_p = sigmoid(BN_1(W_f N_p))`, `beta = l1norm(g)`, `l2norm(sum_p beta_p N_p)`.
#[derive(Clone, Debug)]
pub struct AttentionFiltration {
    pub(crate) attn: Linear,
    /// A single channel: one scale and shift for every node.
    pub(crate) bn: BatchNorm1d,
}

impl AttentionFiltration {
    /// Loads `attn_sim_w [1, m]` + bias and `bn` (one channel).
    pub fn load(vb: VarBuilder, m: usize) -> Result<Self> {
        Ok(Self {
            attn: xavier_linear(m, 1, vb.pp("attn_sim_w"))?,
            bn: BatchNorm1d::load(vb.pp("bn"), 1)?,
        })
    }

    /// `nodes [P, n+1, m]`, `keep [P, 1, n+1]` (u8: real nodes), with
    /// `P = n_img * n_cap` pairs image-major -> `[P, m]`.
    ///
    /// In training the published code runs this once per caption over all
    /// images, so the BatchNorm's batch statistics are per caption (over its
    /// images and real nodes) and the running statistics are updated once
    /// per caption, in caption order; this does the same for all at once.
    pub fn forward_t(
        &self,
        nodes: &Tensor,
        keep: &Tensor,
        n_img: usize,
        train: bool,
    ) -> Result<Tensor> {
        Ok(self.forward_with_weights(nodes, keep, n_img, train)?.0)
    }

    /// [`Self::forward_t`] and the filtration weights `beta` it used,
    /// `[P, 1, n+1]` (node 0 the global alignment, then the words; each
    /// pair's weights sum to 1, padded nodes get 0).
    pub fn forward_with_weights(
        &self,
        nodes: &Tensor,
        keep: &Tensor,
        n_img: usize,
        train: bool,
    ) -> Result<(Tensor, Tensor)> {
        // [P, 1, n+1]: the layout PyTorch's BatchNorm1d(1) sees.
        let logits = self.attn.forward(nodes)?.transpose(1, 2)?;
        let normed = if train {
            self.per_caption_batch_norm(&logits, keep, n_img)?
        } else {
            self.bn.forward_t(&logits, false)?
        };
        let gate = candle_nn::ops::sigmoid(&normed)?;
        let gate = gate.broadcast_mul(&keep.to_dtype(gate.dtype())?)?;
        let beta = l1norm(&gate, D::Minus1)?;
        let vec = l2norm(&beta.matmul(nodes)?.squeeze(1)?, D::Minus1)?;
        Ok((vec, beta))
    }

    fn per_caption_batch_norm(
        &self,
        logits: &Tensor,
        keep: &Tensor,
        n_img: usize,
    ) -> Result<Tensor> {
        let (p, _, len) = logits.dims3()?;
        let n_cap = p / n_img;
        // [n_img, n_cap, n+1] and the real-node mask [1, n_cap, n+1].
        let x = logits.reshape((n_img, n_cap, len))?;
        let mask = keep
            .reshape((n_img, n_cap, len))?
            .narrow(0, 0, 1)?
            .to_dtype(x.dtype())?;
        // Per caption [1, n_cap, 1]: element count, mean, biased variance.
        let count = (mask.sum_keepdim(2)? * n_img as f64)?;
        let mean = x
            .broadcast_mul(&mask)?
            .sum_keepdim(2)?
            .sum_keepdim(0)?
            .broadcast_div(&count)?;
        let var = x
            .broadcast_sub(&mean)?
            .broadcast_mul(&mask)?
            .sqr()?
            .sum_keepdim(2)?
            .sum_keepdim(0)?
            .broadcast_div(&count)?;
        let counts = count
            .flatten_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_vec1::<f64>()?;
        let (means, vars) = (mean.flatten_all()?, var.flatten_all()?);
        for (c, &n) in counts.iter().enumerate() {
            let correction = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
            self.bn.update_running(
                &means.narrow(0, c, 1)?,
                &(vars.narrow(0, c, 1)? * correction)?,
            )?;
        }
        // Every pair of caption c uses caption c's statistics: [P, 1, 1].
        let per_pair = |t: &Tensor| t.broadcast_as((n_img, n_cap, 1))?.reshape((p, 1, 1));
        self.bn
            .normalize(logits, &per_pair(&mean)?, &per_pair(&var)?)
    }
}
