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

    /// `W_q^T W_k` `[m, m]` and `b_q^T W_k` `[1, m]`. In `softmax_j(q_i . k_j)`
    /// every term constant along `j` cancels, leaving
    /// `softmax_j((n_i M + c) . n_j)`: one projection instead of two.
    fn folded(&self) -> Result<(Tensor, Tensor)> {
        let wk = self.key.weight();
        let m = self.query.weight().t()?.matmul(wk)?;
        let c = match self.query.bias() {
            Some(bq) => bq.unsqueeze(0)?.matmul(wk)?,
            None => Tensor::zeros((1, wk.dim(1)?), wk.dtype(), wk.device())?,
        };
        Ok((m, c))
    }

    /// The step in the form of [`crate::cpu::GraphStep`].
    pub(crate) fn cpu_step(&self) -> Result<crate::cpu::GraphStep> {
        let (fold, c) = self.folded()?;
        let graph_t = self.graph.weight().t()?;
        let fold_graph = Tensor::cat(&[&fold, &graph_t], 1)?;
        Ok(crate::cpu::GraphStep {
            fold_graph: fold_graph.flatten_all()?.to_vec1::<f32>()?,
            fold_bias: c.flatten_all()?.to_vec1::<f32>()?,
            graph_bias: crate::cpu::bias(&self.graph)?,
        })
    }

    /// Inference form of [`Self::forward_t`], same result up to rounding.
    pub fn forward_folded(&self, nodes: &Tensor, keep: &Tensor) -> Result<Tensor> {
        let (p, n, m) = nodes.dims3()?;
        let (fold, c) = self.folded()?;
        let proj = nodes
            .reshape((p * n, m))?
            .matmul(&fold)?
            .broadcast_add(&c)?
            .reshape((p, n, m))?;
        let edges = masked_softmax_last_dim(&proj.matmul(&nodes.transpose(1, 2)?)?, keep, false)?;
        self.graph.forward(&edges.matmul(nodes)?)?.relu()
    }

    /// The last step when only the global node (row 0) is read: `[P, m]`.
    pub fn forward_global_row(&self, nodes: &Tensor, keep: &Tensor) -> Result<Tensor> {
        let (fold, c) = self.folded()?;
        let first = nodes.narrow(1, 0, 1)?.squeeze(1)?; // [P, m]
        let proj = first.matmul(&fold)?.broadcast_add(&c)?.unsqueeze(1)?; // [P, 1, m]
        let edges = masked_softmax_last_dim(&proj.matmul(&nodes.transpose(1, 2)?)?, keep, false)?;
        self.graph
            .forward(&edges.matmul(nodes)?.squeeze(1)?)?
            .relu()
    }
}
