//! An RCAR model's weights in plain form, taken from the candle model in one
//! place ([`RcarWeights::from_model`]), laid out like SGRAF's
//! ([`crate::weights`]): every linear layer as `W^T` (row-major `[in, out]`),
//! the image encoder's BatchNorm as `x * scale + shift` (eval mode). The CPU
//! engine ([`crate::cpu::rcar`]) runs on these and on nothing else.
//!
//! `d` is the embedding size, `m` the alignment vector size.

use candle_core::Result;
use candle_nn::Linear;

use crate::rcar::head::RcarHead;
use crate::rcar::image_encoder::RcarImageEncoder;
use crate::rcar::regulators::TanhMlp;
use crate::rcar::{AttnType, RcarConfig, RcarModel, Regulator};
use crate::weights::{bias, flat, text_encoder, weight_t, ImageEncoderWeights, TextEncoderWeights};

/// Every weight of one RCAR model, float32, read once.
#[derive(Clone, Debug)]
pub struct RcarWeights {
    pub image: RcarImageWeights,
    /// SGRAF's Bi-GRU text encoder, the same weights' layout.
    pub text: TextEncoderWeights,
    pub head: RcarHeadWeights,
    /// `R`: regions per image.
    pub n_regions: usize,
}

impl RcarWeights {
    /// The parameters' current values (converted to float32).
    pub fn from_model(model: &RcarModel) -> Result<Self> {
        Ok(Self {
            image: image_encoder(model.image_encoder())?,
            text: text_encoder(model.text_encoder())?,
            head: RcarHeadWeights::from_head(model.similarity_head(), model.config())?,
            n_regions: model.config().num_regions,
        })
    }
}

/// One linear layer: `W^T [in, out]` and its bias `[out]`.
#[derive(Clone, Debug)]
pub struct LinearWeights {
    pub wt: Vec<f32>,
    pub b: Vec<f32>,
}

impl LinearWeights {
    fn new(l: &Linear) -> Result<Self> {
        Ok(Self {
            wt: weight_t(l)?,
            b: bias(l)?,
        })
    }

    /// `out`: the layer's output size.
    pub fn out(&self) -> usize {
        self.b.len()
    }
}

/// A linear layer with one output: its weight row `[in]` and bias.
#[derive(Clone, Debug)]
pub struct DotWeights {
    pub w: Vec<f32>,
    pub b: f32,
}

impl DotWeights {
    fn new(l: &Linear) -> Result<Self> {
        Ok(Self {
            w: flat(l.weight())?,
            b: bias(l)?[0],
        })
    }
}

/// `fc` (the SGRAF image encoder's layer, run without its l2norm) plus the
/// MLP branch `layer1(relu(bn0(layer0(x))))`, then l2norm.
#[derive(Clone, Debug)]
pub struct RcarImageWeights {
    /// `fc`: `[img_dim, d]`, `normalize` false (the sum is normalised).
    pub fc: ImageEncoderWeights,
    /// `[img_dim, d/2]`
    pub layer0: LinearWeights,
    /// `bns.0` in eval mode, `[d/2]` each.
    pub bn0_scale: Vec<f32>,
    pub bn0_shift: Vec<f32>,
    /// `[d/2, d]`
    pub layer1: LinearWeights,
    pub normalize: bool,
}

fn image_encoder(enc: &RcarImageEncoder) -> Result<RcarImageWeights> {
    let (scale, shift) = enc.bn0.eval_affine()?;
    Ok(RcarImageWeights {
        fc: ImageEncoderWeights {
            weight_t: weight_t(&enc.fc)?,
            bias: bias(&enc.fc)?,
            normalize: false,
        },
        layer0: LinearWeights::new(&enc.layer0)?,
        bn0_scale: flat(&scale)?,
        bn0_shift: flat(&shift)?,
        layer1: LinearWeights::new(&enc.layer1)?,
        normalize: !enc.no_imgnorm,
    })
}

/// `Correpondence_regulator`: `rcr_smooth_w [m -> m/2 -> 1]`,
/// `rcr_matrix_w [m -> 2m -> d]`, each `Linear, Tanh, Linear`.
#[derive(Clone, Debug)]
pub struct RcrWeights {
    pub smooth0: LinearWeights,
    pub smooth2: DotWeights,
    pub matrix0: LinearWeights,
    pub matrix2: LinearWeights,
}

/// `Aggregation_regulator`: `rar_q_w`, `rar_k_w` `[m, m]`, `rar_v_w [1, m]`.
#[derive(Clone, Debug)]
pub struct RarWeights {
    pub q: LinearWeights,
    pub k: LinearWeights,
    pub v: DotWeights,
}

/// The similarity encoder of one RCAR model in eval mode.
#[derive(Clone, Debug)]
pub struct RcarHeadWeights {
    pub d: usize,
    pub m: usize,
    /// `sim_eval_w`: `[m] -> 1`.
    pub eval: DotWeights,
    /// `alv_modules.*.sim_transform_w`: `[d, m]` each.
    pub alv: Vec<LinearWeights>,
    pub rcr: Vec<RcrWeights>,
    pub rar: Vec<RarWeights>,
    pub attn_type: AttnType,
    pub regulator: Regulator,
    /// The smoothing of `attn_type` before the first RCR.
    pub smooth: f32,
}

fn tanh_mlp(mlp: &TanhMlp) -> Result<(LinearWeights, LinearWeights)> {
    Ok((LinearWeights::new(&mlp.l0)?, LinearWeights::new(&mlp.l2)?))
}

impl RcarHeadWeights {
    /// The head's parameters alone, of the shape `cfg` says (the
    /// released-size fixtures hold only the head).
    pub fn from_head(head: &RcarHead, cfg: &RcarConfig) -> Result<Self> {
        let (d, m) = (cfg.embed_size, cfg.sim_dim);
        let alv = head
            .alv
            .iter()
            .map(|a| LinearWeights::new(&a.sim_transform_w))
            .collect::<Result<_>>()?;
        let rcr = head
            .rcr
            .iter()
            .map(|r| {
                let (smooth0, smooth2) = (
                    LinearWeights::new(&r.smooth_w.l0)?,
                    DotWeights::new(&r.smooth_w.l2)?,
                );
                let (matrix0, matrix2) = tanh_mlp(&r.matrix_w)?;
                Ok(RcrWeights {
                    smooth0,
                    smooth2,
                    matrix0,
                    matrix2,
                })
            })
            .collect::<Result<_>>()?;
        let rar = head
            .rar
            .iter()
            .map(|r| {
                Ok(RarWeights {
                    q: LinearWeights::new(&r.q_w)?,
                    k: LinearWeights::new(&r.k_w)?,
                    v: DotWeights::new(&r.v_w)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            d,
            m,
            eval: DotWeights::new(&head.sim_eval_w)?,
            alv,
            rcr,
            rar,
            attn_type: head.attn_type,
            regulator: head.regulator,
            smooth: head.smooth as f32,
        })
    }
}
