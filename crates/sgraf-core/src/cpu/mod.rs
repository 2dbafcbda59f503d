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
//!
//! The engine runs on [`crate::weights`] as they are: those structs are laid
//! out for this engine's row-major GEMMs, and the functions here are their
//! forward passes.

pub mod global;
pub mod head;
pub mod kernels;
pub mod rcar;
pub mod text;

use rayon::prelude::*;

use crate::engine::{Captions, EngineKind, Images, ScoringEngine};
use crate::gemm::{matmul, MatMut, MatRef, Threads};
use crate::ops::NORM_EPS;
use crate::weights::{ImageEncoderWeights, Weights};
use crate::{Result, ShardPlan};
use kernels::{dot, Level};

pub(crate) const EPS: f32 = NORM_EPS as f32;

/// One model's weights ([`Weights`]) run on plain slices by the CPU.
#[derive(Debug)]
pub struct CpuEngine {
    w: Weights,
}

impl CpuEngine {
    /// The engine over weights read once ([`Weights::from_model`]).
    pub fn new(weights: Weights) -> Self {
        Self { w: weights }
    }

    pub fn weights(&self) -> &Weights {
        &self.w
    }

    fn d(&self) -> usize {
        self.w.embed_size()
    }
}

impl ScoringEngine for CpuEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Cpu
    }

    fn describe(&self) -> String {
        "cpu".to_string()
    }

    fn encode_images(&self, features: &[f32]) -> Result<Vec<f32>> {
        Ok(self.w.image.forward(features))
    }

    fn encode_captions(&self, ids: &[u32], padded: usize, lengths: &[usize]) -> Result<Vec<f32>> {
        Ok(self.w.text.forward(ids, padded, lengths))
    }

    fn image_globals(&self, regions: &[f32]) -> Result<Vec<f32>> {
        Ok(self.w.visual.forward(regions, self.w.n_regions, self.d()))
    }

    fn caption_globals(&self, words: &[f32], lengths: &[usize]) -> Result<Vec<f32>> {
        Ok(self.w.textual.forward(words, lengths, self.d()))
    }

    /// Captions taken `plan.max_captions` at a time so that memory per
    /// worker is bounded by the block.
    fn score(&self, images: &Images, captions: &Captions, plan: &ShardPlan) -> Result<Vec<f32>> {
        let d = self.d();
        let (n_img, n_cap) = (images.global.len() / d, captions.lengths.len());
        let mut scores = vec![0f32; n_img * n_cap];
        let step = plan.max_captions.max(1);
        let mut w0 = 0;
        for c0 in (0..n_cap).step_by(step) {
            let c1 = (c0 + step).min(n_cap);
            let w1 = w0 + captions.lengths[c0..c1].iter().sum::<usize>();
            let block = self.w.head.score(
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
        Ok(scores)
    }
}

impl ImageEncoderWeights {
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
