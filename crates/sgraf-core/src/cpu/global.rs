//! The global vectors (`VisualSA`, `TextSA` in eval mode) on plain slices:
//! the published code recomputes them for every block it scores, so they
//! are part of what scoring costs.

use rayon::prelude::*;

use super::kernels::{softmax, tanh, Plain};
use super::l2_normalize;
use crate::gemm::{matmul, MatMut, MatRef, Threads};
use crate::weights::{SaProjections, TextSaWeights, VisualSaWeights};

impl SaProjections {
    /// The attention score of each row of `local` (`[n, d]`) against `g`:
    /// `sum_k l_k g_k w_k + b`.
    fn scores(&self, local: &[f32], g: &[f32], d: usize) -> Vec<f32> {
        local
            .chunks(d)
            .map(|row| common(row, g, &self.common_w) + self.common_b)
            .collect()
    }
}

/// `w = softmax(scores)`, `out = l2norm(sum_j w_j rows_j)`.
fn pool(scores: &mut [f32], rows: &[f32], d: usize, out: &mut [f32]) {
    softmax(scores);
    out.fill(0.0);
    for (w, row) in scores.iter().zip(rows.chunks(d)) {
        for (o, v) in out.iter_mut().zip(row) {
            *o += w * v;
        }
    }
    l2_normalize::<Plain>(out);
}

impl VisualSaWeights {
    /// Regions `[n_img, R, d]` -> global vectors `[n_img, d]`.
    pub fn forward(&self, regions: &[f32], n_regions: usize, d: usize) -> Vec<f32> {
        let r = n_regions;
        let n_img = regions.len() / (r * d).max(1);
        let mut out = vec![0f32; n_img * d];
        // Blocks of images: each projection is one GEMM over the block (the
        // weights are packed once per block, not once per image).
        const BLOCK: usize = 128;
        let (mut local, mut mean, mut glob) = (Vec::new(), Vec::new(), Vec::new());
        let p = &self.proj;
        for (out, v) in out.chunks_mut(BLOCK * d).zip(regions.chunks(BLOCK * r * d)) {
            let n = out.len() / d;
            local.resize(n * r * d, 0.0);
            mean.resize(n * d, 0.0);
            glob.resize(n * d, 0.0);
            // l = tanh(BN_R(W_l v + b_l)): [n, R, d]
            project(&mut local, v, n * r, &p.local_wt, d);
            local.par_chunks_mut(d).enumerate().for_each(|(row, x)| {
                let (sc, sh) = (self.local_scale[row % r], self.local_shift[row % r]);
                for (x, b) in x.iter_mut().zip(&p.local_b) {
                    *x = tanh((*x + b) * sc + sh);
                }
            });
            // g = tanh(BN_d(W_g mean_r v + b_g)): [n, d]
            mean.par_chunks_mut(d)
                .zip(v.par_chunks(r * d))
                .for_each(|(m, v)| mean_rows(m, v, d));
            project(&mut glob, &mean, n, &p.global_wt, d);
            // w = softmax_r(W_c (l * g) + b_c), pooled and normalised.
            out.par_chunks_mut(d)
                .zip(glob.par_chunks_mut(d))
                .zip(local.par_chunks(r * d).zip(v.par_chunks(r * d)))
                .for_each(|((out, g), (l, v))| {
                    for (j, g) in g.iter_mut().enumerate() {
                        *g = tanh(
                            (*g + p.global_b[j]) * self.global_scale[j] + self.global_shift[j],
                        );
                    }
                    let mut scores = p.scores(l, g, d);
                    pool(&mut scores, v, d, out);
                });
        }
        out
    }
}

/// `out [n, d] = x [n, d] wt` (`wt` `[d, d]`, a layer's `W^T`), one GEMM.
fn project(out: &mut [f32], x: &[f32], n: usize, wt: &[f32], d: usize) {
    matmul(
        MatMut::new(out, n, d),
        MatRef::new(x, n, d),
        MatRef::new(wt, d, d),
        false,
        Threads::Rayon,
    );
}

/// `m [d]` = the mean of the rows (of `d`) of `rows`.
pub(super) fn mean_rows(m: &mut [f32], rows: &[f32], d: usize) {
    m.fill(0.0);
    for row in rows.chunks(d) {
        for (m, x) in m.iter_mut().zip(row) {
            *m += x;
        }
    }
    let count = (rows.len() / d) as f32;
    for m in m.iter_mut() {
        *m /= count;
    }
}

/// `sum_k l_k g_k w_k`
fn common(l: &[f32], g: &[f32], w: &[f32]) -> f32 {
    l.iter().zip(g).zip(w).map(|((l, g), w)| l * g * w).sum()
}

impl TextSaWeights {
    /// Words packed to true lengths `[sum(lengths), d]` -> global vectors `[n_cap, d]`.
    pub fn forward(&self, words: &[f32], lengths: &[usize], d: usize) -> Vec<f32> {
        let n_cap = lengths.len();
        let mut starts = Vec::with_capacity(n_cap + 1);
        starts.push(0);
        for &n in lengths {
            starts.push(starts.last().unwrap() + n);
        }
        let mut out = vec![0f32; n_cap * d];
        const BLOCK: usize = 256;
        let p = &self.proj;
        let (mut local, mut mean, mut glob) = (Vec::new(), Vec::new(), Vec::new());
        for c0 in (0..n_cap).step_by(BLOCK) {
            let c1 = (c0 + BLOCK).min(n_cap);
            let (w0, w1) = (starts[c0], starts[c1]);
            let rows = &words[w0 * d..w1 * d];
            let (n_words, n) = (w1 - w0, c1 - c0);
            local.resize(n_words * d, 0.0);
            mean.resize(n * d, 0.0);
            glob.resize(n * d, 0.0);
            project(&mut local, rows, n_words, &p.local_wt, d);
            local.par_chunks_mut(d).for_each(|x| {
                for (x, b) in x.iter_mut().zip(&p.local_b) {
                    *x = tanh(*x + b);
                }
            });
            mean.par_chunks_mut(d).enumerate().for_each(|(c, m)| {
                let (s, e) = (starts[c0 + c] - w0, starts[c0 + c + 1] - w0);
                mean_rows(m, &rows[s * d..e * d], d);
            });
            project(&mut glob, &mean, n, &p.global_wt, d);
            out[c0 * d..c1 * d]
                .par_chunks_mut(d)
                .zip(glob.par_chunks_mut(d))
                .enumerate()
                .for_each(|(c, (out, g))| {
                    for (x, b) in g.iter_mut().zip(&p.global_b) {
                        *x = tanh(*x + b);
                    }
                    let (s, e) = (starts[c0 + c] - w0, starts[c0 + c + 1] - w0);
                    let mut scores = p.scores(&local[s * d..e * d], g, d);
                    pool(&mut scores, &rows[s * d..e * d], d, out);
                });
        }
        out
    }
}
