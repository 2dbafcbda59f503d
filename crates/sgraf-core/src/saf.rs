use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};

use crate::ops::{l1norm, l2norm, xavier_linear, BatchNorm1d};

/// Similarity Attention Filtration (`AttentionFiltration`):
/// `g_p = sigmoid(BN_1(W_f N_p))`, `beta = l1norm(g)`, `l2norm(sum_p beta_p N_p)`.
#[derive(Clone, Debug)]
pub struct AttentionFiltration {
    attn: Linear,
    /// A single channel: one scale and shift for every node.
    bn: BatchNorm1d,
}

impl AttentionFiltration {
    /// Loads `attn_sim_w [1, m]` + bias and `bn` (one channel).
    pub fn load(vb: VarBuilder, m: usize) -> Result<Self> {
        Ok(Self {
            attn: xavier_linear(m, 1, vb.pp("attn_sim_w"))?,
            bn: BatchNorm1d::load(vb.pp("bn"), 1)?,
        })
    }

    /// `nodes [P, n+1, m]`, `keep [P, 1, n+1]` (u8: real nodes) -> `[P, m]`.
    pub fn forward_t(&self, nodes: &Tensor, keep: &Tensor, train: bool) -> Result<Tensor> {
        // [P, 1, n+1]: the layout PyTorch's BatchNorm1d(1) sees.
        let logits = self.attn.forward(nodes)?.transpose(1, 2)?;
        let gate = candle_nn::ops::sigmoid(&self.bn.forward_t(&logits, train)?)?;
        let gate = gate.broadcast_mul(&keep.to_dtype(gate.dtype())?)?;
        let beta = l1norm(&gate, D::Minus1)?;
        l2norm(&beta.matmul(nodes)?.squeeze(1)?, D::Minus1)
    }
}
