//! RCAR's candle layers behind the [`ScoringEngine`] interface, on whatever
//! device and dtype the model's tensors have (training's validation, CUDA
//! or Metal through candle). Like SGRAF's candle engine it reads the
//! parameters at every call.

use candle_core::Tensor;

use crate::candle_engine::f32s;
use crate::engine::{check_words, rows, size_product, Captions, EngineKind, Images, ScoringEngine};
use crate::rcar::RcarModel;
use crate::{Result, ShardPlan};

/// One RCAR model's candle layers (shared tensors: cloning is cheap).
#[derive(Clone, Debug)]
pub struct RcarCandleEngine {
    model: RcarModel,
}

impl RcarCandleEngine {
    pub fn new(model: RcarModel) -> Self {
        Self { model }
    }

    fn d(&self) -> usize {
        self.model.config().embed_size
    }

    /// `data` as a tensor of `shape` in the model's dtype, on its device.
    fn tensor(&self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        Ok(Tensor::from_slice(data, shape, self.model.device())?.to_dtype(self.model.dtype())?)
    }
}

impl ScoringEngine for RcarCandleEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Candle
    }

    fn describe(&self) -> String {
        format!(
            "candle on {:?} ({:?})",
            self.model.device().location(),
            self.model.dtype()
        )
    }

    fn encode_images(&self, features: &[f32]) -> Result<Vec<f32>> {
        let cfg = self.model.config();
        let (r, k) = (cfg.num_regions, cfg.img_dim);
        let n = rows(
            features,
            size_product("region features", &[r, k])?,
            "region features",
        )?;
        f32s(
            &self
                .model
                .encode_images(&self.tensor(features, &[n, r, k])?)?,
        )
    }

    /// RCAR reads no global vectors: zeros `[n_img, d]`, as the CPU engine's.
    fn image_globals(&self, regions: &[f32]) -> Result<Vec<f32>> {
        let n = rows(
            regions,
            size_product(
                "region embeddings",
                &[self.model.config().num_regions, self.d()],
            )?,
            "region embeddings",
        )?;
        Ok(vec![0.0; n * self.d()])
    }

    fn encode_captions(&self, ids: &[u32], padded: usize, lengths: &[usize]) -> Result<Vec<f32>> {
        let ids = Tensor::from_slice(ids, (lengths.len(), padded), self.model.device())?;
        f32s(&self.model.encode_captions(&ids, lengths)?)
    }

    fn caption_globals(&self, words: &[f32], lengths: &[usize]) -> Result<Vec<f32>> {
        check_words(words, lengths, self.d())?;
        Ok(vec![0.0; lengths.len() * self.d()])
    }

    /// One caption at a time against every image (as upstream): the
    /// largest intermediate is `[n_img, max(L, R), d]`.
    fn score(&self, images: &Images, captions: &Captions, _plan: &ShardPlan) -> Result<Vec<f32>> {
        let (r, d) = (images.n_regions, self.d());
        let n_img = rows(
            images.regions,
            size_product("region embeddings", &[r, d])?,
            "region embeddings",
        )?;
        check_words(captions.words, captions.lengths, d)?;
        let n_cap = captions.lengths.len();
        if n_img == 0 || n_cap == 0 {
            return Ok(vec![0.0; n_img * n_cap]);
        }
        let img = self.tensor(images.regions, &[n_img, r, d])?;
        let head = self.model.similarity_head();
        let mut columns = Vec::with_capacity(n_cap);
        let mut at = 0;
        for &len in captions.lengths {
            let words = self.tensor(&captions.words[at * d..(at + len) * d], &[1, len, d])?;
            columns.push(head.score_caption(&img, &words, false)?);
            at += len;
        }
        f32s(&Tensor::cat(&columns, 1)?)
    }
}
