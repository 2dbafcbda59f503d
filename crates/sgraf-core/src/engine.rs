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

use crate::{Error, Result, ShardPlan};

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

/// The product of sizes that come from a file or a caller (`what` names
/// it): an overflow is [`Error::SizeOverflow`], never a wrap or a panic.
/// Every engine computes its buffer sizes here.
pub fn size_product(what: &str, factors: &[usize]) -> Result<usize> {
    factors.iter().try_fold(1usize, |acc, &f| {
        acc.checked_mul(f).ok_or_else(|| Error::SizeOverflow {
            what: what.to_string(),
        })
    })
}

/// The sum of sizes that come from a file or a caller, as [`size_product`].
pub fn size_sum(what: &str, terms: &[usize]) -> Result<usize> {
    terms.iter().try_fold(0usize, |acc, &t| {
        acc.checked_add(t).ok_or_else(|| Error::SizeOverflow {
            what: what.to_string(),
        })
    })
}

/// How many rows of `width` values `data` holds, or an input error.
pub fn rows(data: &[f32], width: usize, what: &str) -> Result<usize> {
    if width == 0 || !data.len().is_multiple_of(width) {
        return Err(Error::Input(format!(
            "{what}: {} values are not rows of {width}",
            data.len()
        )));
    }
    Ok(data.len() / width)
}

/// Checks words packed to their captions' lengths, `[sum(lengths), d]`:
/// every caption has at least one word and the values fill exactly
/// `sum(lengths)` rows of `d`. Returns `sum(lengths)`. The one check of
/// every engine that takes packed words.
pub fn check_words(words: &[f32], lengths: &[usize], d: usize) -> Result<usize> {
    let n_words = size_sum("the captions' lengths", lengths)?;
    let total = size_product("the packed words", &[n_words, d])?;
    if let Some(c) = lengths.iter().position(|&n| n == 0) {
        return Err(Error::Input(format!(
            "caption {c} has no words: every caption needs at least one"
        )));
    }
    if words.len() != total {
        return Err(Error::Input(format!(
            "packed words hold {} values; {} captions of lengths summing to {n_words} need {total}",
            words.len(),
            lengths.len(),
        )));
    }
    Ok(n_words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_overflow_into_an_error() {
        assert_eq!(size_product("x", &[3, 4, 5]).unwrap(), 60);
        assert_eq!(size_sum("x", &[3, 4, 5]).unwrap(), 12);
        assert!(matches!(
            size_product("x", &[usize::MAX, 2]),
            Err(Error::SizeOverflow { .. })
        ));
        assert!(matches!(
            size_sum("x", &[usize::MAX, 1]),
            Err(Error::SizeOverflow { .. })
        ));
    }

    #[test]
    fn packed_words_are_checked_once() {
        assert_eq!(check_words(&[0.0; 6], &[1, 2], 2).unwrap(), 3);
        // A zero-length caption, a wrong count, an overflowing sum.
        assert!(matches!(
            check_words(&[0.0; 4], &[2, 0], 2),
            Err(Error::Input(_))
        ));
        assert!(matches!(
            check_words(&[0.0; 5], &[1, 2], 2),
            Err(Error::Input(_))
        ));
        assert!(matches!(
            check_words(&[], &[usize::MAX, 1], 1),
            Err(Error::SizeOverflow { .. })
        ));
        assert!(matches!(
            check_words(&[], &[usize::MAX / 2 + 1], 2),
            Err(Error::SizeOverflow { .. })
        ));
        assert!(matches!(rows(&[0.0; 5], 2, "x"), Err(Error::Input(_))));
        assert!(matches!(rows(&[0.0; 4], 0, "x"), Err(Error::Input(_))));
        assert_eq!(rows(&[0.0; 4], 2, "x").unwrap(), 2);
    }
}
