use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::ops::{l2norm, xavier_linear};
use crate::Config;

/// `EncoderImage`: one linear projection of every region feature, then l2norm.
#[derive(Clone, Debug)]
pub struct ImageEncoder {
    pub(crate) fc: Linear,
    pub(crate) no_imgnorm: bool,
}

impl ImageEncoder {
    /// Loads `fc.weight [d, img_dim]` and `fc.bias [d]`.
    pub fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        Ok(Self {
            fc: xavier_linear(cfg.img_dim, cfg.embed_size, vb.pp("fc"))?,
            no_imgnorm: cfg.no_imgnorm,
        })
    }
}

impl Module for ImageEncoder {
    /// `[n_img, R, img_dim] -> [n_img, R, d]`
    fn forward(&self, regions: &Tensor) -> Result<Tensor> {
        let emb = self.fc.forward(regions)?;
        if self.no_imgnorm {
            Ok(emb)
        } else {
            l2norm(&emb, candle_core::D::Minus1)
        }
    }
}
