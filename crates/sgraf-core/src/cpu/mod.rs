//! The CPU engine: a model's float32 weights prepared once (transposed,
//! folded) and run on plain slices.
//!
//! candle's CPU backend runs its elementwise operations on one core and
//! materialises every `[n_img, n_cap, L, d]` intermediate. Here each rayon
//! worker takes a piece of the work with single-threaded GEMMs and scratch
//! buffers that stay a few megabytes, so every core stays busy and memory
//! is bounded by the piece, never by `n_img * n_cap`. Captions are cut to
//! their true lengths, as the published code does, instead of being padded
//! and masked. The model itself is defined once, in candle
//! ([`crate::SgrafModel`]); this is the fast form of the same weights, and
//! the parity tests hold the two to the same PyTorch reference.

pub mod global;
pub mod head;
pub mod kernels;
pub mod text;

use rayon::prelude::*;

use crate::gemm::{matmul, MatMut, MatRef, Threads};
use crate::image_encoder::ImageEncoder;
use crate::ops::NORM_EPS;
use crate::similarity::SimilarityHead;
use crate::text_encoder::TextEncoder;
use kernels::{dot, Level};

pub use global::{SaProjections, TextSa, VisualSa};
pub use head::{CpuHead, GraphStep, Reasoner};
pub use text::CpuTextEncoder;

pub(crate) const EPS: f32 = NORM_EPS as f32;

/// One model's weights in the CPU engine's form. Slices in, slices out:
/// the caller owns the tensors (and any other engine with this interface
/// could stand in for it).
#[derive(Debug)]
pub struct CpuEngine {
    image: CpuImageEncoder,
    text: CpuTextEncoder,
    visual: VisualSa,
    textual: TextSa,
    head: CpuHead,
    n_regions: usize,
}

impl CpuEngine {
    /// Reads the parameters' current values (float32) once.
    pub fn prepare(
        image: &ImageEncoder,
        text: &TextEncoder,
        head: &SimilarityHead,
        n_regions: usize,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            image: image.cpu()?,
            text: text.cpu()?,
            visual: head.visual_self_attention().cpu()?,
            textual: head.text_self_attention().cpu()?,
            head: head.cpu()?,
            n_regions,
        })
    }

    fn d(&self) -> usize {
        self.head.d
    }

    /// Region features `[n_img, R, img_dim]` -> region embeddings `[n_img, R, d]`.
    pub fn encode_images(&self, features: &[f32]) -> Vec<f32> {
        self.image.forward(features)
    }

    /// Token ids `[n_cap, padded]` (checked against the vocabulary) with
    /// true lengths `1..=padded` -> words `[n_cap, max(lengths), d]`, zero
    /// past each caption's end.
    pub fn encode_captions(&self, ids: &[u32], padded: usize, lengths: &[usize]) -> Vec<f32> {
        self.text.forward(ids, padded, lengths)
    }

    /// Region embeddings `[n_img, R, d]` -> visual global vectors `[n_img, d]`.
    pub fn image_globals(&self, regions: &[f32]) -> Vec<f32> {
        self.visual.forward(regions, self.n_regions, self.d())
    }

    /// Words packed to true lengths `[sum(lengths), d]` -> textual global
    /// vectors `[n_cap, d]`.
    pub fn caption_globals(&self, words: &[f32], lengths: &[usize]) -> Vec<f32> {
        self.textual.forward(words, lengths, self.d())
    }

    /// Scores `[n_img, n_cap]` (image-major), captions taken `max_captions`
    /// at a time so that memory per worker is bounded by the block.
    pub fn score(&self, images: &Images, captions: &Captions, max_captions: usize) -> Vec<f32> {
        let d = self.d();
        let (n_img, n_cap) = (images.global.len() / d, captions.lengths.len());
        let mut scores = vec![0f32; n_img * n_cap];
        let step = max_captions.max(1);
        let mut w0 = 0;
        for c0 in (0..n_cap).step_by(step) {
            let c1 = (c0 + step).min(n_cap);
            let w1 = w0 + captions.lengths[c0..c1].iter().sum::<usize>();
            let block = self.head.score(
                images,
                &Captions {
                    words: &captions.words[w0 * d..w1 * d],
                    global: &captions.global[c0 * d..c1 * d],
                    lengths: &captions.lengths[c0..c1],
                },
            );
            for (i, row) in block.chunks(c1 - c0).enumerate() {
                scores[i * n_cap + c0..i * n_cap + c1].copy_from_slice(row);
            }
            w0 = w1;
        }
        scores
    }
}

/// `W^T` of a linear layer, row-major `[in, out]`.
pub(crate) fn weight_t(l: &candle_nn::Linear) -> candle_core::Result<Vec<f32>> {
    let (rows, cols) = l.weight().dims2()?;
    let w = l.weight().flatten_all()?.to_vec1::<f32>()?;
    Ok(kernels::transpose(&w, rows, cols))
}

/// The bias of a linear layer (zeros when it has none).
pub(crate) fn bias(l: &candle_nn::Linear) -> candle_core::Result<Vec<f32>> {
    match l.bias() {
        Some(b) => b.to_vec1(),
        None => Ok(vec![0.0; l.weight().dim(0)?]),
    }
}

/// The image encoder (one linear layer, then l2norm).
#[derive(Clone, Debug)]
pub struct CpuImageEncoder {
    /// `[img_dim, d]` (`W^T`) and `[d]`
    pub weight_t: Vec<f32>,
    pub bias: Vec<f32>,
    pub normalize: bool,
}

impl CpuImageEncoder {
    /// Region features `[rows, img_dim]` -> embeddings `[rows, d]`: one
    /// GEMM on every core, then bias and l2norm per row, in parallel.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let d = self.bias.len();
        let k = self.weight_t.len() / d.max(1);
        assert_eq!(x.len() % k.max(1), 0, "features are not [rows, {k}]");
        let rows = x.len() / k.max(1);
        let mut out = vec![0f32; rows * d];
        matmul(
            MatMut::new(&mut out, rows, d),
            MatRef::new(x, rows, k),
            MatRef::new(&self.weight_t, k, d),
            false,
            Threads::Rayon,
        );
        out.par_chunks_mut(d).for_each(|row| {
            for (v, b) in row.iter_mut().zip(&self.bias) {
                *v += b;
            }
            if self.normalize {
                l2_normalize::<kernels::Plain>(row);
            }
        });
        out
    }
}

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

fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

#[inline(always)]
pub(crate) fn l2_normalize<L: Level>(x: &mut [f32]) {
    let norm = dot::<L>(x, x).sqrt() + EPS;
    for v in x.iter_mut() {
        *v /= norm;
    }
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + kernels::exp(-x))
}
