//! The one interface every engine implements ([`ScoringEngine`]), on plain
//! slices: per image (encode region features, visual global vectors), per
//! caption (encode token ids, textual global vectors) and per pair (the
//! similarity head's scores).
//!
//! Engines, each built from the model ([`crate::weights::Weights`] or the
//! candle layers) and chosen per model by [`crate::SgrafModel::place`]:
//! - [`crate::candle_engine::CandleEngine`]: candle's operations on the
//!   model's own tensors (any dtype, any candle device; training);
//! - [`crate::cpu::CpuEngine`]: float32 on the CPU, from the weights;
//! - `gpu::GpuEngine` (feature `gpu`): the pairs on our GPU kernels, from
//!   the weights.
//!
//! A second model family plugs in by implementing this trait on its own
//! weights: RCAR does (the same Bi-GRU text encoder, an image encoder with
//! an extra MLP branch, another per-pair head): [`crate::cpu::rcar`] and
//! [`crate::rcar::engine`]. The interface names what is computed per image,
//! per caption and per pair, not how; a family without global vectors
//! (RCAR) returns zeros of the `[n, d]` layout, which its head never reads.

use crate::{Result, ShardPlan};

/// Images prepared for scoring, as plain slices.
pub struct Images<'a> {
    /// `[n_img, R, d]`
    pub regions: &'a [f32],
    /// `[n_img, d]`
    pub global: &'a [f32],
    pub n_regions: usize,
}

/// Captions prepared for scoring: their words packed to true lengths.
pub struct Captions<'a> {
    /// `[sum(lengths), d]`: the words of caption 0, then of caption 1, ...
    pub words: &'a [f32],
    /// `[n_cap, d]`
    pub global: &'a [f32],
    pub lengths: &'a [usize],
}

/// Which engine implements a [`ScoringEngine`] (for logs and tests; the
/// model never branches on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    Candle,
    Cpu,
    Gpu,
}

/// How one model computes its forward pass. Inputs are checked by the
/// caller ([`crate::SgrafModel`]): shapes consistent with the model's
/// config, token ids inside the vocabulary, lengths in `1..=padded`.
///
/// A trait, not an enum: every call covers a batch of images, captions or
/// image x caption pairs (thousands of multiply-adds at the least), so the
/// one indirect call per batch is not measurable, and an engine (another
/// device, another model family) is added without editing the others.
pub trait ScoringEngine: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> EngineKind;

    /// E.g. `cpu`, `wgpu on NVIDIA H100`, `candle on cuda:0`.
    fn describe(&self) -> String;

    /// Region features `[n_img, R, img_dim]` -> region embeddings `[n_img, R, d]`.
    fn encode_images(&self, features: &[f32]) -> Result<Vec<f32>>;

    /// Region embeddings `[n_img, R, d]` -> visual global vectors `[n_img, d]`.
    fn image_globals(&self, regions: &[f32]) -> Result<Vec<f32>>;

    /// Token ids `[n_cap, padded]` with true lengths `1..=padded` -> words
    /// `[n_cap, max(lengths), d]`, zero past each caption's end.
    fn encode_captions(&self, ids: &[u32], padded: usize, lengths: &[usize]) -> Result<Vec<f32>>;

    /// Words packed to true lengths `[sum(lengths), d]` -> textual global
    /// vectors `[n_cap, d]`.
    fn caption_globals(&self, words: &[f32], lengths: &[usize]) -> Result<Vec<f32>>;

    /// Scores `[n_img, n_cap]` (image-major) of every image with every
    /// caption, in blocks bounded by `plan` whatever `n_img * n_cap` is.
    fn score(&self, images: &Images, captions: &Captions, plan: &ShardPlan) -> Result<Vec<f32>>;
}
