use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::ops::{masked_softmax_last_dim, xavier_linear};

/// One step of Similarity Graph Reasoning (`GraphReasoning`):
/// `E = softmax_rows(W_q N (W_k N)^T)`, `N' = ReLU(W_r (E N))`.
#[derive(Clone, Debug)]
pub struct GraphReasoning {
    query: Linear,
    key: Linear,
    graph: Linear,
}

impl GraphReasoning {
    /// Loads `graph_query_w`, `graph_key_w`, `sim_graph_w`, each `[m, m]` + bias.
    pub fn load(vb: VarBuilder, m: usize) -> Result<Self> {
        Ok(Self {
            query: xavier_linear(m, m, vb.pp("graph_query_w"))?,
            key: xavier_linear(m, m, vb.pp("graph_key_w"))?,
            graph: xavier_linear(m, m, vb.pp("sim_graph_w"))?,
        })
    }

    /// `nodes [P, n+1, m]`, `keep [P, 1, n+1]` (u8: real nodes) -> `[P, n+1, m]`.
    /// Padded nodes receive no attention; their own rows stay finite.
    pub fn forward_t(&self, nodes: &Tensor, keep: &Tensor, train: bool) -> Result<Tensor> {
        let q = self.query.forward(nodes)?;
        let k = self.key.forward(nodes)?;
        let edges = masked_softmax_last_dim(&q.matmul(&k.transpose(1, 2)?)?, keep, train)?;
        self.graph.forward(&edges.matmul(nodes)?)?.relu()
    }
}
