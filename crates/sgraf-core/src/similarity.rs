//! `EncoderSimilarity`: the score of every image with every caption.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};

use crate::attention::{attend, attention_weights};
use crate::ops::{l2norm, xavier_linear};
use crate::saf::AttentionFiltration;
use crate::self_attention::{TextSelfAttention, VisualSelfAttention};
use crate::sgr::GraphReasoning;
use crate::{Config, Module as Reasoning};

/// What turns a pair's similarity graph into one vector.
#[derive(Clone, Debug)]
pub(crate) enum Head {
    Sgr(Vec<GraphReasoning>),
    Saf(AttentionFiltration),
}

/// Images prepared for scoring: their regions and visual global vectors.
#[derive(Clone, Debug)]
pub struct ImageSide {
    /// `[n_img, R, d]`
    pub regions: Tensor,
    /// `[n_img, d]`
    pub global: Tensor,
}

/// Captions prepared for scoring: padded words, their mask and global vectors.
#[derive(Clone, Debug)]
pub struct CaptionSide {
    /// `[n_cap, L, d]`, zero past each caption's end.
    pub words: Tensor,
    /// `[n_cap, L]` u8, 1 on real words.
    pub keep: Tensor,
    /// `[n_cap, d]`
    pub global: Tensor,
}

impl ImageSide {
    pub fn len(&self) -> usize {
        self.regions.dims()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Images `start..start+len`.
    pub fn narrow(&self, start: usize, len: usize) -> Result<Self> {
        Ok(Self {
            regions: self.regions.narrow(0, start, len)?,
            global: self.global.narrow(0, start, len)?,
        })
    }
}

impl CaptionSide {
    pub fn len(&self) -> usize {
        self.words.dims()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Padded length `L`.
    pub fn max_len(&self) -> usize {
        self.words.dims()[1]
    }

    /// Captions `start..start+len`, cut to their own longest caption.
    pub fn narrow(&self, start: usize, len: usize) -> Result<Self> {
        let keep = self.keep.narrow(0, start, len)?;
        let longest = keep
            .to_dtype(DType::U32)?
            .sum(1)?
            .max(0)?
            .to_scalar::<u32>()? as usize;
        Ok(Self {
            words: self
                .words
                .narrow(0, start, len)?
                .narrow(1, 0, longest.max(1))?,
            keep: keep.narrow(1, 0, longest.max(1))?,
            global: self.global.narrow(0, start, len)?,
        })
    }
}

/// What [`SimilarityHead::forward_block`] computes for a block of pairs.
#[derive(Clone, Debug)]
pub struct BlockOutput {
    /// `[n_img, n_cap]`
    pub scores: Tensor,
    /// Text-to-visual attention `[n_img, n_cap, L, R]`: each word's weights
    /// over the regions (rows of padded words are meaningless).
    pub attention: Tensor,
    /// SAF only: the filtration weights `[n_img, n_cap, L+1]` of the global
    /// alignment (index 0) and each word's local alignment.
    pub saf_weights: Option<Tensor>,
}

/// The similarity encoder of one SGR or SAF model.
#[derive(Clone, Debug)]
pub struct SimilarityHead {
    v_global: VisualSelfAttention,
    t_global: TextSelfAttention,
    pub(crate) local_proj: Linear,
    pub(crate) global_proj: Linear,
    pub(crate) eval: Linear,
    pub(crate) head: Head,
}

impl SimilarityHead {
    /// Loads the official `EncoderSimilarity` names under `vb`.
    pub fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let (d, m) = (cfg.embed_size, cfg.sim_dim);
        let head = match cfg.module {
            Reasoning::Sgr => Head::Sgr(
                (0..cfg.sgr_step)
                    .map(|i| GraphReasoning::load(vb.pp(format!("SGR_module.{i}")), m))
                    .collect::<Result<_>>()?,
            ),
            Reasoning::Saf => Head::Saf(AttentionFiltration::load(vb.pp("SAF_module"), m)?),
        };
        Ok(Self {
            v_global: VisualSelfAttention::load(vb.pp("v_global_w"), d, cfg.num_regions)?,
            t_global: TextSelfAttention::load(vb.pp("t_global_w"), d)?,
            local_proj: xavier_linear(d, m, vb.pp("sim_tranloc_w"))?,
            global_proj: xavier_linear(d, m, vb.pp("sim_tranglo_w"))?,
            eval: xavier_linear(m, 1, vb.pp("sim_eval_w"))?,
            head,
        })
    }

    pub fn visual_self_attention(&self) -> &VisualSelfAttention {
        &self.v_global
    }

    pub fn text_self_attention(&self) -> &TextSelfAttention {
        &self.t_global
    }

    /// Dropout probability of the self-attention blocks in training mode.
    pub fn set_dropout(&mut self, p: f32) {
        self.v_global.set_dropout(p);
        self.t_global.set_dropout(p);
    }

    /// Region embeddings `[n_img, R, d]` -> [`ImageSide`].
    pub fn image_side(&self, regions: &Tensor, train: bool) -> Result<ImageSide> {
        Ok(ImageSide {
            regions: regions.clone(),
            global: self.v_global.forward_t(regions, train)?,
        })
    }

    /// Word embeddings `[n_cap, L, d]` and true lengths -> [`CaptionSide`].
    pub fn caption_side(
        &self,
        words: &Tensor,
        lengths: &[usize],
        train: bool,
    ) -> Result<CaptionSide> {
        let keep = crate::ops::length_mask(lengths, words.dim(1)?, words.device())?;
        let words = words.broadcast_mul(&keep.to_dtype(words.dtype())?.unsqueeze(2)?)?;
        let global = self.t_global.forward_t(&words, &keep, train)?;
        Ok(CaptionSide {
            words,
            keep,
            global,
        })
    }

    /// Scores of every image with every caption of one block: `[n_img, n_cap]`.
    /// Memory grows as `n_img * n_cap * L * d`: callers shard (see
    /// [`crate::ShardPlan`]).
    pub fn score_block(&self, img: &ImageSide, cap: &CaptionSide, train: bool) -> Result<Tensor> {
        Ok(self.forward_block(img, cap, train)?.scores)
    }

    /// [`Self::score_block`] with the intermediates an explanation reads:
    /// the text-to-visual attention and SAF's filtration weights.
    pub fn forward_block(
        &self,
        img: &ImageSide,
        cap: &CaptionSide,
        train: bool,
    ) -> Result<BlockOutput> {
        let (n_img, n_cap, len) = (img.len(), cap.len(), cap.max_len());
        // Local alignments: [n_img, n_cap, L, m].
        let attention = attention_weights(&img.regions, &cap.words, train)?;
        let raw = attend(&attention, &img.regions)?;
        let diff = crate::ops::normalized_sq_diff(&raw, &cap.words)?;
        let local = l2norm(&self.local_proj.forward(&diff)?, D::Minus1)?;
        // Global alignment: [n_img, n_cap, m].
        let gdiff = img
            .global
            .unsqueeze(1)?
            .broadcast_sub(&cap.global.unsqueeze(0)?)?
            .sqr()?;
        let global = l2norm(&self.global_proj.forward(&gdiff)?, D::Minus1)?;
        // Graph nodes [global; local_1..local_n]: [n_img*n_cap, L+1, m].
        let m = global.dim(D::Minus1)?;
        let nodes = Tensor::cat(&[&global.unsqueeze(2)?, &local], 2)?.reshape((
            n_img * n_cap,
            len + 1,
            m,
        ))?;
        let ones = Tensor::ones((n_cap, 1), DType::U8, cap.keep.device())?;
        let keep = Tensor::cat(&[&ones, &cap.keep], 1)?
            .unsqueeze(0)?
            .broadcast_as((n_img, n_cap, len + 1))?
            .reshape((n_img * n_cap, 1, len + 1))?;
        let mut saf_weights = None;
        let vec = match &self.head {
            Head::Sgr(steps) => {
                let (last, rest) = steps.split_last().expect("sgr_step >= 1 is validated");
                let mut nodes = nodes;
                for step in rest {
                    nodes = step.forward_t(&nodes, len + 1, &keep, train)?;
                }
                // Only the global node of the last step is read.
                last.forward_t(&nodes, 1, &keep, train)?.squeeze(1)?
            }
            Head::Saf(saf) => {
                let (vec, beta) = saf.forward_with_weights(&nodes, &keep, n_img, train)?;
                saf_weights = Some(beta.reshape((n_img, n_cap, len + 1))?);
                vec
            }
        };
        let scores = candle_nn::ops::sigmoid(&self.eval.forward(&vec)?)?.reshape((n_img, n_cap))?;
        Ok(BlockOutput {
            scores,
            attention,
            saf_weights,
        })
    }
}
