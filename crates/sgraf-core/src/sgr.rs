use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::ops::{masked_softmax_last_dim, xavier_linear};

/// One step of Similarity Graph Reasoning (`GraphReasoning`):
/// `E = softmax_rows(W_q N (W_k N)^T)`, `N' = ReLU(W_r (E N))`.
#[derive(Clone, Debug)]
pub struct GraphReasoning {
    pub(crate) query: Linear,
    pub(crate) key: Linear,
    pub(crate) graph: Linear,
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

    /// The new value of the first `q` nodes: `nodes [P, n+1, m]`,
    /// `keep [P, 1, n+1]` (u8: real nodes) -> `[P, q, m]`. Every node is
    /// updated (`q = n+1`) except at the last step, whose global node
    /// (`q = 1`) is all the score reads. Padded nodes receive no attention;
    /// their own rows stay finite.
    pub fn forward_t(
        &self,
        nodes: &Tensor,
        q: usize,
        keep: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let query = self.query.forward(&nodes.narrow(1, 0, q)?)?;
        let key = self.key.forward(nodes)?;
        let edges = masked_softmax_last_dim(&query.matmul(&key.transpose(1, 2)?)?, keep, train)?;
        self.graph.forward(&edges.matmul(nodes)?)?.relu()
    }
}
