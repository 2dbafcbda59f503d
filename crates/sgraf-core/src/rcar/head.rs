//! RCAR's similarity encoder (`EncoderSimilarity`, `lib/encoders.py:139-221`):
//! alignment vectors, the regulators in the configured setting, the score.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::ops::xavier_linear;
use crate::rcar::regulators::{
    attention_weights, cosine_sim, cross_attention, AggregationRegulator, AlignmentVector,
    CorrespondenceRegulator, Matrix, Smooth,
};
use crate::rcar::{AttnType, RcarConfig, Regulator};

/// `sim_eval_w [1, m]`, `alv_modules.*`, `rcr_modules.*`, `rar_modules.*`
/// in the counts of [`RcarConfig::steps`].
#[derive(Clone, Debug)]
pub struct RcarHead {
    pub(crate) sim_eval_w: Linear,
    pub(crate) alv: Vec<AlignmentVector>,
    pub(crate) rcr: Vec<CorrespondenceRegulator>,
    pub(crate) rar: Vec<AggregationRegulator>,
    pub(crate) attn_type: AttnType,
    pub(crate) regulator: Regulator,
    pub(crate) smooth: f64,
}

impl RcarHead {
    pub fn load(vb: VarBuilder, cfg: &RcarConfig) -> Result<Self> {
        let (d, m) = (cfg.embed_size, cfg.sim_dim);
        let steps = cfg.steps();
        let alv = (0..steps.alv)
            .map(|i| AlignmentVector::load(vb.pp("alv_modules").pp(i), d, m))
            .collect::<Result<_>>()?;
        let rcr = (0..steps.rcr)
            .map(|i| CorrespondenceRegulator::load(vb.pp("rcr_modules").pp(i), d, m))
            .collect::<Result<_>>()?;
        let rar = (0..steps.rar)
            .map(|i| AggregationRegulator::load(vb.pp("rar_modules").pp(i), m))
            .collect::<Result<_>>()?;
        Ok(Self {
            sim_eval_w: xavier_linear(m, 1, vb.pp("sim_eval_w"))?,
            alv,
            rcr,
            rar,
            attn_type: cfg.attn_type,
            regulator: cfg.self_regulator,
            smooth: cfg.smooth(),
        })
    }

    /// Dropout of the aggregation regulators in training mode.
    pub fn set_dropout(&mut self, p: f32) {
        self.rar.iter_mut().for_each(|r| r.set_dropout(p));
    }

    /// Region embeddings `[n_img, R, d]` x caption embeddings `[n_cap, L, d]`
    /// of the given true lengths -> scores `[n_img, n_cap]`. One caption at a
    /// time against every image, on its true length only (as upstream,
    /// `encoders.py:177-181`): nothing is masked.
    pub fn forward_t(
        &self,
        img: &Tensor,
        cap: &Tensor,
        lengths: &[usize],
        train: bool,
    ) -> Result<Tensor> {
        let columns = lengths
            .iter()
            .enumerate()
            .map(|(c, &len)| {
                let words = cap.narrow(0, c, 1)?.narrow(1, 0, len)?;
                self.score_caption(img, &words, train)
            })
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&columns, 1)
    }

    /// The query and context of one caption `[1, len, d]` against images
    /// `[n_img, R, d]` (`encoders.py:183-184`).
    pub fn query_context(&self, img: &Tensor, words: &Tensor) -> Result<(Tensor, Tensor)> {
        let (n_img, _, _) = img.dims3()?;
        let (_, len, d) = words.dims3()?;
        let words = words.broadcast_as((n_img, len, d))?.contiguous()?;
        Ok(match self.attn_type {
            AttnType::T2i => (words, img.clone()),
            AttnType::I2t => (img.clone(), words),
        })
    }

    /// One caption `[1, len, d]` against images `[n_img, R, d]` -> `[n_img, 1]`
    /// (`encoders.py:191-214`).
    pub fn score_caption(&self, img: &Tensor, words: &Tensor, train: bool) -> Result<Tensor> {
        let (query, context) = self.query_context(img, words)?;
        let mut matrix = Matrix::Ones;
        let mut smooth = Smooth::Scalar(self.smooth);
        match self.regulator {
            Regulator::OnlyRar => {
                let mid = self.alv[0].forward_t(&query, &context, &matrix, &smooth, train)?;
                let mut hig = mid.mean(1)?;
                for rar in &self.rar {
                    hig = rar.forward_t(&mid, &hig, train)?;
                }
                self.eval_score(&hig)
            }
            Regulator::OnlyRcr => {
                for (alv, rcr) in self.alv.iter().zip(&self.rcr) {
                    let mid = alv.forward_t(&query, &context, &matrix, &smooth, train)?;
                    (matrix, smooth) = rcr.forward(&mid, &matrix, &smooth)?;
                }
                let wcontext = cross_attention(&query, &context, &matrix, &smooth, train)?;
                cosine_sim(&query, &wcontext)?.mean_keepdim(1)
            }
            Regulator::CoopRcar => {
                let mut hig: Option<Tensor> = None;
                for (step, (alv, rar)) in self.alv.iter().zip(&self.rar).enumerate() {
                    let mid = alv.forward_t(&query, &context, &matrix, &smooth, train)?;
                    let start = match hig.take() {
                        Some(h) => h,
                        None => mid.mean(1)?,
                    };
                    // The RCR of step m reads step m's alignment vectors and
                    // feeds the alignment of step m + 1 (there is none after
                    // the last step).
                    if let Some(rcr) = self.rcr.get(step) {
                        (matrix, smooth) = rcr.forward(&mid, &matrix, &smooth)?;
                    }
                    hig = Some(rar.forward_t(&mid, &start, train)?);
                }
                self.eval_score(&hig.expect("coop_rcar has rcar_step >= 1 (validated)"))
            }
        }
    }

    /// The attention weights `[n_img, Lq, Ls]` of the last cross-attention
    /// that one caption `[1, len, d]` against images `[n_img, R, d]` runs:
    /// with the attention matrix and smoothing of every RCR (coop_rcar's
    /// last alignment, only_rcr's final attention; only_rar has no RCR).
    pub fn attention(&self, img: &Tensor, words: &Tensor) -> Result<Tensor> {
        let (query, context) = self.query_context(img, words)?;
        let mut matrix = Matrix::Ones;
        let mut smooth = Smooth::Scalar(self.smooth);
        for (alv, rcr) in self.alv.iter().zip(&self.rcr) {
            let mid = alv.forward_t(&query, &context, &matrix, &smooth, false)?;
            (matrix, smooth) = rcr.forward(&mid, &matrix, &smooth)?;
        }
        attention_weights(&query, &context, &matrix, &smooth, false)
    }

    /// `sigmoid(sim_eval_w(hig))`: `[n, m] -> [n, 1]`.
    fn eval_score(&self, hig: &Tensor) -> Result<Tensor> {
        candle_nn::ops::sigmoid(&self.sim_eval_w.forward(hig)?)
    }
}
