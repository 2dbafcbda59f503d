//! The candle engine: the model's own layers ([`crate::image_encoder`],
//! [`crate::text_encoder`], [`crate::similarity`]) behind the
//! [`ScoringEngine`] interface, on whatever device and dtype the model's
//! tensors have. It reads the parameters at every call, so a model being
//! trained scores with its current values.

use candle_core::{DType, Device, Module, Tensor};

use crate::engine::{check_words, rows, size_product, Captions, EngineKind, Images, ScoringEngine};
use crate::image_encoder::ImageEncoder;
use crate::similarity::{CaptionSide, ImageSide, SimilarityHead};
use crate::text_encoder::TextEncoder;
use crate::{Config, Error, Result, ShardPlan};

/// Images per block of the visual self-attention: its intermediates are
/// `[block, R, d]`.
const GLOBAL_BLOCK: usize = 256;

/// The candle layers of one model (shared tensors: cloning is cheap).
#[derive(Clone, Debug)]
pub struct CandleEngine {
    img_enc: ImageEncoder,
    txt_enc: TextEncoder,
    sim_enc: SimilarityHead,
    cfg: Config,
    device: Device,
    dtype: DType,
}

/// A tensor's values as float32, row-major.
pub(crate) fn f32s(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

impl CandleEngine {
    pub fn new(
        img_enc: ImageEncoder,
        txt_enc: TextEncoder,
        sim_enc: SimilarityHead,
        cfg: Config,
        device: Device,
        dtype: DType,
    ) -> Self {
        Self {
            img_enc,
            txt_enc,
            sim_enc,
            cfg,
            device,
            dtype,
        }
    }

    /// `data` as a tensor of `shape` in the model's dtype, on its device.
    fn tensor(&self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        Ok(Tensor::from_slice(data, shape, &self.device)?.to_dtype(self.dtype)?)
    }

    /// Captions packed to their lengths `[sum(lengths), d]` -> the padded
    /// form the layers take, `[n, longest, d]` with zeros past each end.
    fn padded(&self, words: &[f32], lengths: &[usize]) -> Result<Tensor> {
        let d = self.cfg.embed_size;
        let longest = lengths.iter().copied().max().unwrap_or(0).max(1);
        let mut out = vec![0f32; lengths.len() * longest * d];
        let mut at = 0;
        for (c, &n) in lengths.iter().enumerate() {
            out[c * longest * d..(c * longest + n) * d].copy_from_slice(&words[at..at + n * d]);
            at += n * d;
        }
        self.tensor(&out, &[lengths.len(), longest, d])
    }
}

impl ScoringEngine for CandleEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Candle
    }

    fn describe(&self) -> String {
        format!("candle on {:?} ({:?})", self.device.location(), self.dtype)
    }

    fn encode_images(&self, features: &[f32]) -> Result<Vec<f32>> {
        let (r, k) = (self.cfg.num_regions, self.cfg.img_dim);
        let n = rows(
            features,
            size_product("region features", &[r, k])?,
            "region features",
        )?;
        let x = self.tensor(features, &[n, r, k])?;
        f32s(&self.img_enc.forward(&x)?)
    }

    fn image_globals(&self, regions: &[f32]) -> Result<Vec<f32>> {
        let (r, d) = (self.cfg.num_regions, self.cfg.embed_size);
        let n = rows(
            regions,
            size_product("region embeddings", &[r, d])?,
            "region embeddings",
        )?;
        let mut out = Vec::with_capacity(n * d);
        for s in (0..n).step_by(GLOBAL_BLOCK) {
            let k = GLOBAL_BLOCK.min(n - s);
            let part = self.tensor(&regions[s * r * d..(s + k) * r * d], &[k, r, d])?;
            out.extend(f32s(&self.sim_enc.image_side(&part, false)?.global)?);
        }
        Ok(out)
    }

    fn encode_captions(&self, ids: &[u32], padded: usize, lengths: &[usize]) -> Result<Vec<f32>> {
        let ids = Tensor::from_slice(ids, (lengths.len(), padded), &self.device)?;
        f32s(&self.txt_enc.forward_t(&ids, lengths, false)?)
    }

    fn caption_globals(&self, words: &[f32], lengths: &[usize]) -> Result<Vec<f32>> {
        check_words(words, lengths, self.cfg.embed_size)?;
        if lengths.is_empty() {
            return Ok(Vec::new());
        }
        let padded = self.padded(words, lengths)?;
        f32s(&self.sim_enc.caption_side(&padded, lengths, false)?.global)
    }

    /// Blocks of captions, each against blocks of images, sized by `plan`.
    fn score(&self, images: &Images, captions: &Captions, plan: &ShardPlan) -> Result<Vec<f32>> {
        let (r, d) = (self.cfg.num_regions, self.cfg.embed_size);
        let n_img = rows(images.global, d, "image global vectors")?;
        let want = size_product("region embeddings", &[n_img, r, d])?;
        if images.regions.len() != want {
            return Err(Error::Input(format!(
                "regions hold {} values; {n_img} images of {r} x {d} need {want}",
                images.regions.len(),
            )));
        }
        check_words(captions.words, captions.lengths, d)?;
        let n_cap = captions.lengths.len();
        if n_img == 0 || n_cap == 0 {
            return Ok(vec![0.0; n_img * n_cap]);
        }
        let img = ImageSide {
            regions: self.tensor(images.regions, &[n_img, r, d])?,
            global: self.tensor(images.global, &[n_img, d])?,
        };
        let longest = captions.lengths.iter().copied().max().unwrap_or(1);
        let (_, caps) = plan.block(n_img, n_cap, longest, d);
        let mut columns = Vec::with_capacity(n_cap.div_ceil(caps));
        let mut w0 = 0;
        for c0 in (0..n_cap).step_by(caps) {
            let c1 = (c0 + caps).min(n_cap);
            let lengths = &captions.lengths[c0..c1];
            let w1 = w0 + lengths.iter().sum::<usize>();
            let words = self.padded(&captions.words[w0 * d..w1 * d], lengths)?;
            let len = words.dim(1)?;
            let cap = CaptionSide {
                keep: crate::ops::length_mask(lengths, len, &self.device)?,
                words,
                global: self.tensor(&captions.global[c0 * d..c1 * d], &[c1 - c0, d])?,
            };
            let (imgs, _) = plan.block(n_img, c1 - c0, len, d);
            let rows = (0..n_img)
                .step_by(imgs)
                .map(|i0| {
                    let img_block = img.narrow(i0, imgs.min(n_img - i0))?;
                    Ok(self.sim_enc.score_block(&img_block, &cap, false)?)
                })
                .collect::<Result<Vec<_>>>()?;
            columns.push(Tensor::cat(&rows, 0)?);
            w0 = w1;
        }
        f32s(&Tensor::cat(&columns, 1)?)
    }
}
