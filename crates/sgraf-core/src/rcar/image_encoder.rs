//! RCAR's `EncoderImage` (`lib/encoders.py:52-78`, `lib/modules/mlp.py:29-46`):
//! the region features through `fc`, plus a two-layer MLP branch, l2norm.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};

use crate::ops::{l2norm, xavier_linear, BatchNorm1d};
use crate::rcar::RcarConfig;

/// `fc [d, img_dim]` and `mlp`: `layers.0 [d/2, img_dim]`, `bns.0 (d/2)`,
/// `layers.1 [d, d/2]`, `bns.1 (d)`. Upstream's MLP applies a BatchNorm only
/// after the layers before the last (`mlp.py:44`): `bns.1` is stored in every
/// checkpoint but never used, so it is loaded (the folder must be complete)
/// and left out of every computation.
#[derive(Clone, Debug)]
pub struct RcarImageEncoder {
    pub(crate) fc: Linear,
    pub(crate) layer0: Linear,
    pub(crate) bn0: BatchNorm1d,
    pub(crate) layer1: Linear,
    bn1: BatchNorm1d,
    embed_size: usize,
    pub(crate) no_imgnorm: bool,
}

impl RcarImageEncoder {
    pub fn load(vb: VarBuilder, cfg: &RcarConfig) -> Result<Self> {
        let (d, h) = (cfg.embed_size, cfg.embed_size / 2);
        let mlp = vb.pp("mlp");
        Ok(Self {
            fc: xavier_linear(cfg.img_dim, d, vb.pp("fc"))?,
            layer0: xavier_linear(cfg.img_dim, h, mlp.pp("layers").pp("0"))?,
            bn0: BatchNorm1d::load(mlp.pp("bns").pp("0"), h)?,
            layer1: xavier_linear(h, d, mlp.pp("layers").pp("1"))?,
            bn1: BatchNorm1d::load(mlp.pp("bns").pp("1"), d)?,
            embed_size: d,
            no_imgnorm: cfg.no_imgnorm,
        })
    }

    /// The stored, unused `bns.1` (kept so that a saved model is complete).
    pub fn unused_batch_norm(&self) -> &BatchNorm1d {
        &self.bn1
    }

    /// `[n_img, R, img_dim] -> [n_img, R, d]`. In training mode the MLP's
    /// BatchNorm uses the statistics of all `n_img * R` regions and updates
    /// its running ones.
    pub fn forward_t(&self, regions: &Tensor, train: bool) -> Result<Tensor> {
        let (n, r, img_dim) = regions.dims3()?;
        let flat = regions.reshape((n * r, img_dim))?;
        let hidden = self
            .bn0
            .forward_t(&self.layer0.forward(&flat)?, train)?
            .relu()?;
        let mlp = self.layer1.forward(&hidden)?;
        let emb = (self.fc.forward(&flat)? + mlp)?.reshape((n, r, self.embed_size))?;
        if self.no_imgnorm {
            Ok(emb)
        } else {
            l2norm(&emb, D::Minus1)
        }
    }
}
