//! A model's weights in plain form, taken from the candle model in one
//! place ([`Weights::from_model`]): every linear layer as `W^T` (row-major
//! `[in, out]`, ready for row-major GEMMs), every BatchNorm folded to `x *
//! scale + shift` (eval mode), SGR's query and key projections folded into
//! one matrix. The engines are built from these and from nothing else: the
//! CPU engine ([`crate::cpu`]) runs on them as they are, the GPU engine
//! ([`crate::gpu`]) uploads them; the candle layers know no engine.
//!
//! Each struct says its shapes; `d` is the embedding size, `m` the
//! similarity size, `R` the regions per image, `h` the GRU's hidden size.

use candle_core::{Result, Tensor};
use candle_nn::Linear;

use crate::cpu::kernels::transpose;
use crate::image_encoder::ImageEncoder;
use crate::saf::AttentionFiltration;
use crate::self_attention::{TextSelfAttention, VisualSelfAttention};
use crate::sgr::GraphReasoning;
use crate::similarity::{Head, SimilarityHead};
use crate::text_encoder::{GruDirection, TextEncoder};
use crate::SgrafModel;

/// Every weight of one SGR or SAF model, float32, read once.
#[derive(Clone, Debug)]
pub struct Weights {
    pub image: ImageEncoderWeights,
    pub text: TextEncoderWeights,
    /// `VisualSA`: the visual global vectors.
    pub visual: VisualSaWeights,
    /// `TextSA`: the textual global vectors.
    pub textual: TextSaWeights,
    pub head: HeadWeights,
    /// `R`: regions per image.
    pub n_regions: usize,
}

impl Weights {
    /// The parameters' current values (converted to float32); a model whose
    /// parameters change afterwards (training) must be read again. An RCAR
    /// model is [`crate::Error::WrongArchitecture`] (its weights are
    /// [`crate::rcar::weights::RcarWeights`]).
    pub fn from_model(model: &SgrafModel) -> crate::Result<Self> {
        let head = model.similarity_head()?;
        Ok(Self {
            image: image_encoder(model.image_encoder()?)?,
            text: text_encoder(model.text_encoder())?,
            visual: visual_sa(head.visual_self_attention())?,
            textual: TextSaWeights {
                proj: sa_projections(head.text_self_attention())?,
            },
            head: similarity_head(head)?,
            n_regions: model.config().num_regions(),
        })
    }

    /// `d`: the embedding size.
    pub fn embed_size(&self) -> usize {
        self.head.d
    }
}

/// The image encoder: one linear layer, then l2norm.
#[derive(Clone, Debug)]
pub struct ImageEncoderWeights {
    /// `[img_dim, d]` (`W^T`) and `[d]`
    pub weight_t: Vec<f32>,
    pub bias: Vec<f32>,
    pub normalize: bool,
}

/// One direction of one GRU layer, laid out for row-major GEMMs.
#[derive(Clone, Debug)]
pub struct GruWeights {
    /// `W_ih^T` `[in, 3h]`, gate columns `[r | z | n]`.
    pub w_ih_t: Vec<f32>,
    /// `W_hh^T` `[h, 3h]`.
    pub w_hh_t: Vec<f32>,
    /// `b_ih` with `b_hh`'s r and z parts added (they only ever appear
    /// summed), `[3h]`.
    pub b_i: Vec<f32>,
    /// `b_hn` `[h]`: inside the reset gate's product, not foldable.
    pub b_hn: Vec<f32>,
}

impl GruWeights {
    /// From PyTorch's `weight_ih [3h, in]`, `weight_hh [3h, h]`, `bias_ih`,
    /// `bias_hh` (`[3h]` each), row-major.
    pub fn new(w_ih: &[f32], w_hh: &[f32], b_ih: &[f32], b_hh: &[f32], hidden: usize) -> Self {
        let h3 = 3 * hidden;
        assert!(
            b_ih.len() == h3 && b_hh.len() == h3 && w_hh.len() == h3 * hidden,
            "GRU weights of the wrong size for hidden size {hidden}"
        );
        assert_eq!(w_ih.len() % h3, 0, "weight_ih is not [3h, in]");
        let input = w_ih.len() / h3;
        let mut b_i = b_ih.to_vec();
        for (b, hb) in b_i[..2 * hidden].iter_mut().zip(b_hh) {
            *b += hb;
        }
        Self {
            w_ih_t: transpose(w_ih, h3, input),
            w_hh_t: transpose(w_hh, h3, hidden),
            b_i,
            b_hn: b_hh[2 * hidden..].to_vec(),
        }
    }
}

/// The text encoder: word embedding, (bi)GRU layers, mean of the
/// directions, l2norm.
#[derive(Clone, Debug)]
pub struct TextEncoderWeights {
    /// `[vocab, word_dim]`
    pub embed: Vec<f32>,
    pub word_dim: usize,
    /// Per layer: forward and, for a bi-GRU, backward direction.
    pub layers: Vec<(GruWeights, Option<GruWeights>)>,
    pub hidden: usize,
    pub normalize: bool,
}

/// The projections `VisualSA` and `TextSA` share: local and global `[d, d]`
/// (`W^T`) with their `[d]` biases, and the common projection `[d]` to one
/// score per row.
#[derive(Clone, Debug)]
pub struct SaProjections {
    pub local_wt: Vec<f32>,
    pub local_b: Vec<f32>,
    pub global_wt: Vec<f32>,
    pub global_b: Vec<f32>,
    /// `[d]` and the bias of the common projection.
    pub common_w: Vec<f32>,
    pub common_b: f32,
}

/// `VisualSA` in eval mode; BatchNorms folded to `x * scale + shift`.
#[derive(Clone, Debug)]
pub struct VisualSaWeights {
    pub proj: SaProjections,
    /// Per region `[R]`.
    pub local_scale: Vec<f32>,
    pub local_shift: Vec<f32>,
    /// Per channel `[d]`.
    pub global_scale: Vec<f32>,
    pub global_shift: Vec<f32>,
}

/// `TextSA` in eval mode.
#[derive(Clone, Debug)]
pub struct TextSaWeights {
    pub proj: SaProjections,
}

/// One graph reasoning step in inference form. In `softmax_j(q_i . k_j)`
/// every term constant along `j` cancels, leaving `softmax_j((n_i M + c) .
/// n_j)` with `M = W_q^T W_k` and `c = b_q^T W_k`: one projection instead of
/// two, stored beside `W_g^T` so that one GEMM makes both.
#[derive(Clone, Debug)]
pub struct GraphStep {
    /// `[m, 2m]`: `[W_q^T W_k | W_g^T]`
    pub fold_graph: Vec<f32>,
    /// `[m]`: `b_q^T W_k`
    pub fold_bias: Vec<f32>,
    /// `[m]`
    pub graph_bias: Vec<f32>,
}

/// What turns a pair's similarity graph into one vector.
#[derive(Clone, Debug)]
pub enum Reasoner {
    Sgr(Vec<GraphStep>),
    Saf {
        /// `[m]`
        weight: Vec<f32>,
        bias: f32,
        /// The BatchNorm(1) in eval mode: `x * scale + shift`.
        bn_scale: f32,
        bn_shift: f32,
    },
}

/// The weights of a [`crate::SimilarityHead`] past its global vectors,
/// laid out for row-major GEMMs.
#[derive(Clone, Debug)]
pub struct HeadWeights {
    pub d: usize,
    pub m: usize,
    /// `[d, m]` (`W_loc^T`) and `[m]`
    pub local_wt: Vec<f32>,
    pub local_b: Vec<f32>,
    /// `[d, m]` (`W_glo^T`) and `[m]`
    pub global_wt: Vec<f32>,
    pub global_b: Vec<f32>,
    /// `[m]` and the bias of the final linear layer.
    pub eval_w: Vec<f32>,
    pub eval_b: f32,
    pub reasoner: Reasoner,
}

/// A tensor's values as float32, flattened.
pub(crate) fn flat(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()
}

/// `W^T` of a linear layer, row-major `[in, out]`.
pub(crate) fn weight_t(l: &Linear) -> Result<Vec<f32>> {
    let (rows, cols) = l.weight().dims2()?;
    Ok(transpose(&flat(l.weight())?, rows, cols))
}

/// The bias of a linear layer (zeros when it has none).
pub(crate) fn bias(l: &Linear) -> Result<Vec<f32>> {
    match l.bias() {
        Some(b) => flat(b),
        None => Ok(vec![0.0; l.weight().dim(0)?]),
    }
}

fn image_encoder(enc: &ImageEncoder) -> Result<ImageEncoderWeights> {
    Ok(ImageEncoderWeights {
        weight_t: weight_t(&enc.fc)?,
        bias: bias(&enc.fc)?,
        normalize: !enc.no_imgnorm,
    })
}

fn gru(dir: &GruDirection) -> Result<GruWeights> {
    Ok(GruWeights::new(
        &flat(&dir.w_ih)?,
        &flat(&dir.w_hh)?,
        &flat(&dir.b_ih)?,
        &flat(&dir.b_hh)?,
        dir.hidden,
    ))
}

pub(crate) fn text_encoder(enc: &TextEncoder) -> Result<TextEncoderWeights> {
    let table = enc.embed.embeddings();
    let (_, word_dim) = table.dims2()?;
    let layers = enc
        .layers
        .iter()
        .map(|(f, b)| Ok((gru(f)?, b.as_ref().map(gru).transpose()?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(TextEncoderWeights {
        embed: flat(table)?,
        word_dim,
        hidden: enc.layers[0].0.hidden,
        layers,
        normalize: !enc.no_txtnorm,
    })
}

/// The local, global and common projections of either self-attention block.
fn projections(local: &Linear, global: &Linear, common: &Linear) -> Result<SaProjections> {
    Ok(SaProjections {
        local_wt: weight_t(local)?,
        local_b: bias(local)?,
        global_wt: weight_t(global)?,
        global_b: bias(global)?,
        common_w: flat(common.weight())?,
        common_b: bias(common)?[0],
    })
}

fn visual_sa(sa: &VisualSelfAttention) -> Result<VisualSaWeights> {
    let (local_scale, local_shift) = sa.local_bn.eval_affine()?;
    let (global_scale, global_shift) = sa.global_bn.eval_affine()?;
    Ok(VisualSaWeights {
        proj: projections(&sa.local, &sa.global, &sa.common)?,
        local_scale: flat(&local_scale)?,
        local_shift: flat(&local_shift)?,
        global_scale: flat(&global_scale)?,
        global_shift: flat(&global_shift)?,
    })
}

fn sa_projections(sa: &TextSelfAttention) -> Result<SaProjections> {
    projections(&sa.local, &sa.global, &sa.common)
}

/// See [`GraphStep`] for the fold.
fn graph_step(step: &GraphReasoning) -> Result<GraphStep> {
    let wk = step.key.weight();
    let fold = step.query.weight().t()?.matmul(wk)?;
    let fold_bias = match step.query.bias() {
        Some(bq) => flat(&bq.unsqueeze(0)?.matmul(wk)?)?,
        None => vec![0.0; wk.dim(1)?],
    };
    let fold_graph = Tensor::cat(&[&fold, &step.graph.weight().t()?], 1)?;
    Ok(GraphStep {
        fold_graph: flat(&fold_graph)?,
        fold_bias,
        graph_bias: bias(&step.graph)?,
    })
}

fn filtration(saf: &AttentionFiltration) -> Result<Reasoner> {
    // One channel: the folded BatchNorm is one scale and one shift.
    let (scale, shift) = saf.bn.eval_affine()?;
    Ok(Reasoner::Saf {
        weight: flat(saf.attn.weight())?,
        bias: bias(&saf.attn)?[0],
        bn_scale: flat(&scale)?[0],
        bn_shift: flat(&shift)?[0],
    })
}

fn similarity_head(head: &SimilarityHead) -> Result<HeadWeights> {
    let (m, d) = head.local_proj.weight().dims2()?;
    let reasoner = match &head.head {
        Head::Sgr(steps) => Reasoner::Sgr(steps.iter().map(graph_step).collect::<Result<_>>()?),
        Head::Saf(saf) => filtration(saf)?,
    };
    Ok(HeadWeights {
        d,
        m,
        local_wt: weight_t(&head.local_proj)?,
        local_b: bias(&head.local_proj)?,
        global_wt: weight_t(&head.global_proj)?,
        global_b: bias(&head.global_proj)?,
        eval_w: flat(head.eval.weight())?,
        eval_b: bias(&head.eval)?[0],
        reasoner,
    })
}
