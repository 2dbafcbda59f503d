//! One model of either family (SGR / SAF, or RCAR), and the ensemble that
//! averages several.
#![allow(
    unsafe_code,
    reason = "memory-maps the read-only weights file (safetensors), in the one folder loader"
)]

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use crate::candle_engine::{f32s, CandleEngine};
use crate::cpu::rcar::RcarCpuEngine;
use crate::cpu::CpuEngine;
use crate::engine::{Captions, Images, ScoringEngine};
use crate::image_encoder::ImageEncoder;
use crate::rcar::engine::RcarCandleEngine;
use crate::rcar::weights::RcarWeights;
use crate::rcar::{AttnType, RcarModel};
use crate::similarity::{CaptionSide, ImageSide, SimilarityHead};
use crate::text_encoder::TextEncoder;
use crate::weights::Weights;
use crate::{Architecture, Config, Device, Error, ModelConfig, Result};

/// File names inside a model folder.
pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// How the image x caption score matrix is cut into blocks. The largest
/// intermediate of a block holds `images * captions * words * d` floats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardPlan {
    /// Upper bound on `images * captions * words * d` per block.
    pub max_block_elems: usize,
    /// Captions per block, at most.
    pub max_captions: usize,
}

impl Default for ShardPlan {
    fn default() -> Self {
        // 64M floats: 256 MiB per block-sized tensor, a few of them alive at once.
        Self {
            max_block_elems: 1 << 26,
            max_captions: 128,
        }
    }
}

impl ShardPlan {
    /// `(images, captions)` per block for captions padded to `len` words of size `d`.
    pub fn block(&self, n_img: usize, n_cap: usize, len: usize, d: usize) -> (usize, usize) {
        let per_pair = (len * d).max(1);
        let pairs = (self.max_block_elems / per_pair).max(1);
        let caps = n_cap.min(self.max_captions).min(pairs).max(1);
        let imgs = (pairs / caps).clamp(1, n_img.max(1));
        (imgs, caps)
    }
}

/// The candle layers of one model, by family.
#[derive(Clone, Debug)]
pub enum Layers {
    /// SGR or SAF; their config is the model's ([`SgrafModel::config`]).
    Sgraf {
        img_enc: ImageEncoder,
        txt_enc: TextEncoder,
        sim_enc: SimilarityHead,
    },
    /// RCAR ([`crate::rcar`]).
    Rcar(RcarModel),
}

/// One model of either family (SGR, SAF or RCAR, [`Layers`]): its candle
/// layers, and the engine that runs them ([`ScoringEngine`]), chosen per
/// model. Every caller (the ensemble, the retrieval index, the facade)
/// holds models of both families alike: what differs is behind the engine.
#[derive(Clone, Debug)]
pub struct SgrafModel {
    cfg: ModelConfig,
    layers: Layers,
    device: candle_core::Device,
    dtype: DType,
    plan: ShardPlan,
    engine: Arc<dyn ScoringEngine>,
}

/// Reads a model folder's config with `read`, maps its `model.safetensors`
/// (float32 on `device`) and builds the model with `build`: the one folder
/// loader of every family. Weights that do not fit the config are one
/// [`Error::Config`] naming both files.
pub(crate) fn open_folder<C, T>(
    dir: &Path,
    device: &candle_core::Device,
    read: impl FnOnce(&Path) -> Result<C>,
    build: impl FnOnce(VarBuilder, &C) -> Result<T>,
) -> Result<T> {
    let cfg = read(&dir.join(CONFIG_FILE))?;
    let weights = dir.join(WEIGHTS_FILE);
    if !weights.is_file() {
        return Err(Error::Io {
            path: weights,
            err: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    // SAFETY: the file is mapped read-only; like every safetensors
    // loader we rely on it not being truncated while the model lives.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, device)? };
    build(vb, &cfg).map_err(|e| match e {
        Error::Candle(err) => Error::Config(format!(
            "{} does not match {}: {err}",
            weights.display(),
            dir.join(CONFIG_FILE).display()
        )),
        other => other,
    })
}

impl SgrafModel {
    /// Loads an SGR or SAF model from a `VarBuilder` over the model
    /// folder's tensors: `img_enc.*`, `txt_enc.*` and `sim_enc.*` + the
    /// official names. The model runs on candle (as training needs: its
    /// parameters may change); [`Self::freeze`] or [`Self::place`] make it
    /// ready for fast inference.
    pub fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        cfg.validate()?;
        let layers = Layers::Sgraf {
            img_enc: ImageEncoder::load(vb.pp("img_enc"), cfg)?,
            txt_enc: TextEncoder::load(vb.pp("txt_enc"), cfg)?,
            sim_enc: SimilarityHead::load(vb.pp("sim_enc"), cfg)?,
        };
        Ok(Self::on_candle(
            cfg.clone().into(),
            layers,
            vb.device().clone(),
            vb.dtype(),
        ))
    }

    /// An RCAR model, on candle like [`Self::load`]'s.
    pub fn from_rcar(model: RcarModel) -> Self {
        let (device, dtype) = (model.device().clone(), model.dtype());
        Self::on_candle(
            model.config().clone().into(),
            Layers::Rcar(model),
            device,
            dtype,
        )
    }

    /// A model of the family `cfg` names, from a `VarBuilder` over its tensors.
    pub fn load_config(vb: VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        match cfg {
            ModelConfig::Sgraf(c) => Self::load(vb, c),
            ModelConfig::Rcar(c) => Ok(Self::from_rcar(RcarModel::load(vb, c)?)),
        }
    }

    fn on_candle(
        cfg: ModelConfig,
        layers: Layers,
        device: candle_core::Device,
        dtype: DType,
    ) -> Self {
        let engine = Self::candle_engine_of(&cfg, &layers, &device, dtype);
        Self {
            cfg,
            layers,
            device,
            dtype,
            plan: ShardPlan::default(),
            engine,
        }
    }

    /// The model's own layers as an engine: they read the parameters at
    /// every call.
    fn candle_engine_of(
        cfg: &ModelConfig,
        layers: &Layers,
        device: &candle_core::Device,
        dtype: DType,
    ) -> Arc<dyn ScoringEngine> {
        match (layers, cfg) {
            (
                Layers::Sgraf {
                    img_enc,
                    txt_enc,
                    sim_enc,
                },
                ModelConfig::Sgraf(cfg),
            ) => Arc::new(CandleEngine::new(
                img_enc.clone(),
                txt_enc.clone(),
                sim_enc.clone(),
                cfg.clone(),
                device.clone(),
                dtype,
            )),
            (Layers::Rcar(m), _) => Arc::new(RcarCandleEngine::new(m.clone())),
            // `load` and `from_rcar`, the only constructors, build the
            // layers and the config of one family together.
            (Layers::Sgraf { .. }, ModelConfig::Rcar(_)) => {
                unreachable!("SGR / SAF layers are built with their own config")
            }
        }
    }

    fn candle_engine(&self) -> Arc<dyn ScoringEngine> {
        Self::candle_engine_of(&self.cfg, &self.layers, &self.device, self.dtype)
    }

    fn with_engine(self, engine: Arc<dyn ScoringEngine>) -> Self {
        Self { engine, ..self }
    }

    /// Makes the model ready for inference with the parameters' current
    /// values (training's validation): on the CPU in float32 the CPU
    /// engine, its weights read here, once; elsewhere candle. A model whose
    /// parameters change afterwards must be frozen again to score with them.
    pub fn freeze(self) -> Result<Self> {
        if self.device.is_cpu() && self.dtype == DType::F32 {
            self.place(&Device::Cpu)
        } else {
            let engine = self.candle_engine();
            Ok(self.with_engine(engine))
        }
    }

    /// Runs the model on `device`, with the parameters' current values:
    /// [`Device::Cpu`] the CPU engine (float32 tensors on the CPU),
    /// [`Device::Candle`] candle's operations (the tensors on that device),
    /// `Device::Gpu` our GPU kernels (float32 tensors on the CPU; SGR and
    /// SAF only).
    pub fn place(self, device: &Device) -> Result<Self> {
        let wrong = |reason: String| Error::Placement {
            device: device.describe(),
            reason,
        };
        let want = device.tensors();
        if !self.device.same_device(&want) {
            return Err(wrong(format!(
                "its tensors are on {:?}, not on {:?}",
                self.device.location(),
                want.location()
            )));
        }
        let engine: Arc<dyn ScoringEngine> = match device {
            Device::Candle(_) => self.candle_engine(),
            _ if self.dtype != DType::F32 => {
                return Err(wrong(format!(
                    "its weights are {:?}; this engine runs float32",
                    self.dtype
                )))
            }
            Device::Cpu => match &self.layers {
                Layers::Sgraf { .. } => Arc::new(CpuEngine::new(Weights::from_model(&self)?)),
                Layers::Rcar(m) => Arc::new(RcarCpuEngine::new(RcarWeights::from_model(m)?)),
            },
            #[cfg(feature = "gpu")]
            Device::Gpu(gpu) => match &self.layers {
                Layers::Sgraf { .. } => Arc::new(crate::gpu::GpuEngine::new(
                    gpu.clone(),
                    Weights::from_model(&self)?,
                )?),
                Layers::Rcar(_) => {
                    return Err(wrong(
                        "the GPU engine runs SGR and SAF models; an RCAR model runs on the CPU engine or on candle".into(),
                    ))
                }
            },
        };
        Ok(self.with_engine(engine))
    }

    /// Loads `config.json` and `model.safetensors` (memory-mapped) from a
    /// model folder of either family (the config's `"model"`) onto
    /// `device` ([`Self::place`]).
    pub fn from_folder(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        open_folder(
            dir.as_ref(),
            &device.tensors(),
            |p| ModelConfig::from_file(p),
            |vb, cfg| Self::load_config(vb, cfg),
        )?
        .place(device)
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The candle layers, by family.
    pub fn layers(&self) -> &Layers {
        &self.layers
    }

    /// The RCAR model, when this is one.
    pub fn rcar(&self) -> Option<&RcarModel> {
        match &self.layers {
            Layers::Rcar(m) => Some(m),
            Layers::Sgraf { .. } => None,
        }
    }

    /// The candle device of the model's tensors.
    pub fn device(&self) -> &candle_core::Device {
        &self.device
    }

    /// The engine that runs the model.
    pub fn engine(&self) -> &dyn ScoringEngine {
        self.engine.as_ref()
    }

    /// Changes how the score matrix is sharded (results are unchanged).
    pub fn with_shard_plan(mut self, plan: ShardPlan) -> Self {
        self.plan = plan;
        self
    }

    /// `true`: [`Self::freeze`] (the CPU engine where it can run); `false`:
    /// candle's operations even there. Both compute the published model;
    /// the switch exists to compare them.
    pub fn with_cpu_kernels(self, on: bool) -> Result<Self> {
        if on {
            self.freeze()
        } else {
            let engine = self.candle_engine();
            Ok(self.with_engine(engine))
        }
    }

    fn wrong_family(&self) -> Error {
        Error::WrongArchitecture {
            expected: Architecture::Sgraf,
            found: self.cfg.architecture(),
        }
    }

    /// The SGR / SAF image encoder ([`Error::WrongArchitecture`] for RCAR).
    pub fn image_encoder(&self) -> Result<&ImageEncoder> {
        match &self.layers {
            Layers::Sgraf { img_enc, .. } => Ok(img_enc),
            Layers::Rcar(_) => Err(self.wrong_family()),
        }
    }

    /// The Bi-GRU text encoder (both families have it).
    pub fn text_encoder(&self) -> &TextEncoder {
        match &self.layers {
            Layers::Sgraf { txt_enc, .. } => txt_enc,
            Layers::Rcar(m) => m.text_encoder(),
        }
    }

    /// The SGR / SAF similarity head ([`Error::WrongArchitecture`] for RCAR).
    pub fn similarity_head(&self) -> Result<&SimilarityHead> {
        match &self.layers {
            Layers::Sgraf { sim_enc, .. } => Ok(sim_enc),
            Layers::Rcar(_) => Err(self.wrong_family()),
        }
    }

    /// Sets the dropout probability used in training mode everywhere
    /// (the published models use 0.4).
    pub fn set_dropout(&mut self, p: f32) {
        match &mut self.layers {
            Layers::Sgraf {
                txt_enc, sim_enc, ..
            } => {
                txt_enc.set_dropout(p);
                sim_enc.set_dropout(p);
            }
            Layers::Rcar(m) => m.set_dropout(p),
        }
    }

    fn check_images(&self, images: &Tensor, width: usize, what: &str) -> Result<()> {
        let expected = [self.cfg.num_regions(), width];
        match images.dims() {
            [_, r, w] if [*r, *w] == expected => Ok(()),
            dims => Err(Error::Input(format!(
                "{what} must be [n_images, {}, {}], found {dims:?}",
                expected[0], expected[1]
            ))),
        }
    }

    /// `values` as a tensor of `shape` in the model's dtype, on its device.
    fn tensor(&self, values: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        Ok(Tensor::from_vec(values, shape, &self.device)?.to_dtype(self.dtype)?)
    }

    /// Region features `[n_img, R, img_dim]` -> region embeddings `[n_img, R, d]`.
    pub fn encode_images(&self, images: &Tensor) -> Result<Tensor> {
        self.check_images(images, self.cfg.img_dim(), "region features")?;
        let (n, r, _) = images.dims3()?;
        let emb = self.engine.encode_images(&f32s(images)?)?;
        self.tensor(emb, &[n, r, self.cfg.embed_size()])
    }

    /// Token ids `[n_cap, L]` and true lengths -> word embeddings
    /// `[n_cap, max(lengths), d]`, zero past each caption's end.
    pub fn encode_captions(&self, ids: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let ids = self.text_encoder().check_ids(ids, lengths)?;
        let padded = ids.dim(1)?;
        let ids = ids.flatten_all()?.to_vec1::<u32>()?;
        let words = self.engine.encode_captions(&ids, padded, lengths)?;
        let max_len = lengths.iter().copied().max().unwrap_or(0);
        self.tensor(words, &[lengths.len(), max_len, self.cfg.embed_size()])
    }

    /// Images ready for scoring against any captions.
    pub fn image_side(&self, img_emb: &Tensor) -> Result<ImageSide> {
        self.check_images(img_emb, self.cfg.embed_size(), "image embeddings")?;
        let n = img_emb.dim(0)?;
        let global = self.engine.image_globals(&f32s(img_emb)?)?;
        Ok(ImageSide {
            regions: img_emb.clone(),
            global: self.tensor(global, &[n, self.cfg.embed_size()])?,
        })
    }

    /// Captions ready for scoring against any images.
    pub fn caption_side(&self, cap_emb: &Tensor, lengths: &[usize]) -> Result<CaptionSide> {
        let d = self.cfg.embed_size();
        match cap_emb.dims() {
            [c, l, w] if *w == d && *c == lengths.len() => {
                if let Some(&n) = lengths.iter().find(|&&n| n == 0 || n > *l) {
                    return Err(Error::Input(format!(
                        "caption length {n} is outside 1..={l} (the padded length)"
                    )));
                }
            }
            dims => {
                return Err(Error::Input(format!(
                    "caption embeddings must be [{}, L, {d}] for {} lengths, found {dims:?}",
                    lengths.len(),
                    lengths.len()
                )))
            }
        }
        let keep = crate::ops::length_mask(lengths, cap_emb.dim(1)?, &self.device)?;
        let words = cap_emb.broadcast_mul(&keep.to_dtype(cap_emb.dtype())?.unsqueeze(2)?)?;
        let global = self
            .engine
            .caption_globals(&pack_words(&words, lengths)?, lengths)?;
        Ok(CaptionSide {
            words,
            keep,
            global: self.tensor(global, &[lengths.len(), d])?,
        })
    }

    /// Scores `[n_img, n_cap]` of prepared images and captions, in blocks
    /// bounded by the shard plan whatever `n_img * n_cap` is.
    pub fn score_sides(&self, img: &ImageSide, cap: &CaptionSide) -> Result<Tensor> {
        self.score_image_rows(&f32s(&img.regions)?, &f32s(&img.global)?, cap)
    }

    /// Scores `[n_img, n_cap]` of prepared images given as plain rows:
    /// region embeddings `[n_img, R, d]` and visual global vectors
    /// `[n_img, d]`, row-major (e.g. straight from a memory-mapped index).
    /// The same computation as [`Self::score_sides`], without building tensors
    /// on the CPU.
    pub fn score_image_rows(
        &self,
        regions: &[f32],
        global: &[f32],
        cap: &CaptionSide,
    ) -> Result<Tensor> {
        let (r, d) = (self.cfg.num_regions(), self.cfg.embed_size());
        let n_img = global.len() / d.max(1);
        if global.len() != n_img * d || regions.len() != n_img * r * d {
            return Err(Error::Input(format!(
                "image rows must be [n, {r}, {d}] and [n, {d}], found {} and {} values",
                regions.len(),
                global.len()
            )));
        }
        let lengths: Vec<usize> = cap
            .keep
            .to_dtype(DType::U32)?
            .sum(1)?
            .to_vec1::<u32>()?
            .into_iter()
            .map(|n| n as usize)
            .collect();
        let images = Images {
            regions,
            global,
            n_regions: r,
        };
        let captions = Captions {
            words: &pack_words(&cap.words, &lengths)?,
            global: &f32s(&cap.global)?,
            lengths: &lengths,
        };
        let scores = self.engine.score(&images, &captions, &self.plan)?;
        self.tensor(scores, &[n_img, cap.len()])
    }

    /// Scores `[n_img, n_cap]` of image embeddings `[n_img, R, d]` with
    /// caption embeddings `[n_cap, L, d]` of the given true lengths.
    pub fn similarity(
        &self,
        img_emb: &Tensor,
        cap_emb: &Tensor,
        lengths: &[usize],
    ) -> Result<Tensor> {
        let img = self.image_side(img_emb)?;
        let cap = self.caption_side(cap_emb, lengths)?;
        self.score_sides(&img, &cap)
    }

    /// Region features `[n_img, R, img_dim]` x token ids `[n_cap, L]` -> scores `[n_img, n_cap]`.
    pub fn score(&self, images: &Tensor, ids: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let img = self.encode_images(images)?;
        let cap = self.encode_captions(ids, lengths)?;
        self.similarity(&img, &cap, lengths)
    }

    /// Why one image matches one caption: the score and the intermediates
    /// of the computation that produced it: the candle definition of the
    /// head ([`SimilarityHead::forward_block`]), whatever the engine, whose
    /// scores equal [`Self::score`]'s up to rounding.
    ///
    /// `image`: region features `[1, R, img_dim]` (or `[R, img_dim]`);
    /// `ids`: one caption's token ids (`<start>` and `<end>` included).
    pub fn explain(&self, image: &Tensor, ids: &[u32]) -> Result<Explanation> {
        if ids.is_empty() {
            return Err(Error::Input(
                "an explanation needs at least one token".into(),
            ));
        }
        let image = if image.rank() == 2 {
            image.unsqueeze(0)?
        } else {
            image.clone()
        };
        if image.dim(0)? != 1 {
            return Err(Error::Input(format!(
                "explain takes one image, found {:?}",
                image.dims()
            )));
        }
        let emb = self.encode_images(&image)?;
        let len = ids.len();
        let ids = Tensor::from_vec(ids.to_vec(), (1, len), &self.device)?;
        let words = self.text_encoder().forward_t(&ids, &[len], false)?;
        let sim_enc = match &self.layers {
            Layers::Sgraf { sim_enc, .. } => sim_enc,
            Layers::Rcar(m) => return Self::explain_rcar(m, &emb, &words),
        };
        let img = sim_enc.image_side(&emb, false)?;
        let cap = sim_enc.caption_side(&words, &[len], false)?;
        let out = sim_enc.forward_block(&img, &cap, false)?;
        let score = f32s(&out.scores)?[0];
        let regions = self.cfg.num_regions();
        let attention = f32s(&out.attention)?
            .chunks(regions)
            .map(<[f32]>::to_vec)
            .collect();
        let (saf_global_weight, saf_weights) = match &out.saf_weights {
            Some(w) => {
                let w = f32s(w)?;
                (Some(w[0]), Some(w[1..].to_vec()))
            }
            None => (None, None),
        };
        Ok(Explanation {
            score,
            attention,
            direction: AttentionDirection::WordsOverRegions,
            saf_weights,
            saf_global_weight,
        })
    }

    /// RCAR's explanation: its score, and the cross-attention of its last
    /// alignment step ([`crate::rcar::RcarHead::attention`]), as `[L][R]`.
    fn explain_rcar(m: &RcarModel, emb: &Tensor, words: &Tensor) -> Result<Explanation> {
        let head = m.similarity_head();
        let score = f32s(&head.score_caption(emb, words, false)?)?[0];
        // [1, Lq, Ls]
        let attn = head.attention(emb, words)?.squeeze(0)?;
        let (attn, direction) = match m.config().attn_type {
            AttnType::T2i => (attn, AttentionDirection::WordsOverRegions),
            AttnType::I2t => (attn.t()?, AttentionDirection::RegionsOverWords),
        };
        let regions = attn.dim(1)?;
        let attention = f32s(&attn)?.chunks(regions).map(<[f32]>::to_vec).collect();
        Ok(Explanation {
            score,
            attention,
            direction,
            saf_weights: None,
            saf_global_weight: None,
        })
    }
}

/// Which tokens attend over which in an [`Explanation`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionDirection {
    /// Each word's softmax over the regions.
    WordsOverRegions,
    /// Each region's softmax over the words.
    RegionsOverWords,
}

/// One image and one caption through one model: see [`SgrafModel::explain`].
#[derive(Clone, Debug, PartialEq)]
pub struct Explanation {
    /// The model's score of the pair.
    pub score: f32,
    /// `[L][R]`: the attention between the words and the regions, in the
    /// model's direction ([`Self::direction`]).
    pub attention: Vec<Vec<f32>>,
    /// SGR, SAF and RCAR t2i: each word attends over the regions (each row
    /// of [`Self::attention`] sums to 1); RCAR i2t: each region attends
    /// over the words (each column sums to 1).
    pub direction: AttentionDirection,
    /// SAF models: each word's filtration weight (`[L]`; with
    /// [`Self::saf_global_weight`] they sum to 1).
    pub saf_weights: Option<Vec<f32>>,
    /// SAF models: the filtration weight of the global alignment node.
    pub saf_global_weight: Option<f32>,
}

/// Words `[n_cap, L, d]` -> `[sum(lengths), d]`, each caption cut to its length.
fn pack_words(words: &Tensor, lengths: &[usize]) -> Result<Vec<f32>> {
    let (_, padded, d) = words.dims3()?;
    let all = f32s(words)?;
    let mut packed = Vec::with_capacity(lengths.iter().sum::<usize>() * d);
    for (c, &len) in lengths.iter().enumerate() {
        packed.extend_from_slice(&all[c * padded * d..(c * padded + len) * d]);
    }
    Ok(packed)
}

/// Several models whose scores are averaged: SGRAF is one SGR model and one
/// SAF model, trained independently.
#[derive(Clone, Debug)]
pub struct Ensemble {
    models: Vec<SgrafModel>,
}

impl Ensemble {
    /// Checks that the models read the same inputs: the same region count
    /// and feature size, and the same base vocabulary
    /// ([`ModelConfig::base_vocab_size`]: RCAR's appended `<mask>` aside,
    /// SGR, SAF and RCAR models of one dataset read one vocabulary file).
    /// Token ids below [`Self::shared_vocab_size`] mean the same word to
    /// every model; that the words themselves agree is the tokenizers' to
    /// check (the retrieval `Scorer` compares them).
    pub fn new(models: Vec<SgrafModel>) -> Result<Self> {
        let Some(first) = models.first() else {
            return Err(Error::Ensemble("no models given".into()));
        };
        let features = |m: &SgrafModel| (m.config().num_regions(), m.config().img_dim());
        for (i, m) in models.iter().enumerate().skip(1) {
            if features(m) != features(first) {
                let (a, b) = (features(first), features(m));
                return Err(Error::Ensemble(format!(
                    "model 0 reads {} regions of {} features but model {i} reads {} regions of {} features",
                    a.0, a.1, b.0, b.1
                )));
            }
            let (a, b) = (
                first.config().base_vocab_size(),
                m.config().base_vocab_size(),
            );
            if a != b {
                return Err(Error::VocabularyMismatch {
                    model: i,
                    expected: a,
                    found: b,
                });
            }
        }
        Ok(Self { models })
    }

    /// The token ids every model reads: below the smallest vocab_size.
    pub fn shared_vocab_size(&self) -> usize {
        self.models
            .iter()
            .map(|m| m.config().vocab_size())
            .min()
            .unwrap_or(0)
    }

    pub fn models(&self) -> &[SgrafModel] {
        &self.models
    }

    /// Mean of the models' `[n_img, n_cap]` scores.
    pub fn score(&self, images: &Tensor, ids: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let mut img = Vec::with_capacity(self.models.len());
        let mut cap = Vec::with_capacity(self.models.len());
        for m in &self.models {
            img.push(m.image_side(&m.encode_images(images)?)?);
            cap.push(m.caption_side(&m.encode_captions(ids, lengths)?, lengths)?);
        }
        self.score_sides(&img, &cap)
    }

    /// Mean of the models' scores of prepared images and captions (one
    /// side per model, in the models' order): `[n_img, n_cap]`.
    pub fn score_sides(&self, images: &[ImageSide], captions: &[CaptionSide]) -> Result<Tensor> {
        self.check_sides(images.len(), captions.len())?;
        self.mean(|i, m| m.score_sides(&images[i], &captions[i]))
    }

    /// [`Self::score_sides`] with the images as plain rows, one
    /// `(regions [n, R, d], global [n, d])` pair per model.
    pub fn score_image_rows(
        &self,
        images: &[(&[f32], &[f32])],
        captions: &[CaptionSide],
    ) -> Result<Tensor> {
        self.check_sides(images.len(), captions.len())?;
        self.mean(|i, m| m.score_image_rows(images[i].0, images[i].1, &captions[i]))
    }

    fn check_sides(&self, images: usize, captions: usize) -> Result<()> {
        let n = self.models.len();
        if images != n || captions != n {
            return Err(Error::Ensemble(format!(
                "{n} models need {n} image and caption sides, found {images} and {captions}"
            )));
        }
        Ok(())
    }

    /// The mean over the models of `score(i, model_i)`.
    fn mean(&self, score: impl Fn(usize, &SgrafModel) -> Result<Tensor>) -> Result<Tensor> {
        let mut sum: Option<Tensor> = None;
        for (i, m) in self.models.iter().enumerate() {
            let s = score(i, m)?;
            sum = Some(match sum {
                None => s,
                Some(acc) => (acc + s)?,
            });
        }
        let sum = sum.expect("an ensemble has at least one model");
        Ok((sum / self.models.len() as f64)?)
    }
}

/// Every tensor a model folder's `model.safetensors` holds for `cfg`, with
/// its shape, in the official order (`num_batches_tracked` excluded).
pub fn parameter_shapes(cfg: &Config) -> Vec<(String, Vec<usize>)> {
    let (d, m, r) = (cfg.embed_size, cfg.sim_dim, cfg.num_regions);
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    let mut push = |name: String, shape: &[usize]| out.push((name, shape.to_vec()));
    let linear = |push: &mut dyn FnMut(String, &[usize]), name: &str, i: usize, o: usize| {
        push(format!("{name}.weight"), &[o, i]);
        push(format!("{name}.bias"), &[o]);
    };
    let bn = |push: &mut dyn FnMut(String, &[usize]), name: &str, c: usize| {
        for p in ["weight", "bias", "running_mean", "running_var"] {
            push(format!("{name}.{p}"), &[c]);
        }
    };
    linear(&mut push, "img_enc.fc", cfg.img_dim, d);
    push(
        "txt_enc.embed.weight".into(),
        &[cfg.vocab_size, cfg.word_dim],
    );
    let dirs: &[&str] = if cfg.bi_gru { &["", "_reverse"] } else { &[""] };
    for layer in 0..cfg.num_layers {
        let input = match layer {
            0 => cfg.word_dim,
            _ => d * dirs.len(),
        };
        for sfx in dirs {
            let p = |k: &str| format!("txt_enc.cap_rnn.{k}_l{layer}{sfx}");
            push(p("weight_ih"), &[3 * d, input]);
            push(p("weight_hh"), &[3 * d, d]);
            push(p("bias_ih"), &[3 * d]);
            push(p("bias_hh"), &[3 * d]);
        }
    }
    let s = "sim_enc";
    linear(
        &mut push,
        &format!("{s}.v_global_w.embedding_local.0"),
        d,
        d,
    );
    bn(&mut push, &format!("{s}.v_global_w.embedding_local.1"), r);
    linear(
        &mut push,
        &format!("{s}.v_global_w.embedding_global.0"),
        d,
        d,
    );
    bn(&mut push, &format!("{s}.v_global_w.embedding_global.1"), d);
    linear(
        &mut push,
        &format!("{s}.v_global_w.embedding_common.0"),
        d,
        1,
    );
    linear(
        &mut push,
        &format!("{s}.t_global_w.embedding_local.0"),
        d,
        d,
    );
    linear(
        &mut push,
        &format!("{s}.t_global_w.embedding_global.0"),
        d,
        d,
    );
    linear(
        &mut push,
        &format!("{s}.t_global_w.embedding_common.0"),
        d,
        1,
    );
    linear(&mut push, &format!("{s}.sim_tranloc_w"), d, m);
    linear(&mut push, &format!("{s}.sim_tranglo_w"), d, m);
    linear(&mut push, &format!("{s}.sim_eval_w"), m, 1);
    match cfg.module {
        crate::Module::Sgr => {
            for i in 0..cfg.sgr_step {
                for w in ["graph_query_w", "graph_key_w", "sim_graph_w"] {
                    linear(&mut push, &format!("{s}.SGR_module.{i}.{w}"), m, m);
                }
            }
        }
        crate::Module::Saf => {
            linear(&mut push, &format!("{s}.SAF_module.attn_sim_w"), m, 1);
            bn(&mut push, &format!("{s}.SAF_module.bn"), 1);
        }
    }
    out
}
