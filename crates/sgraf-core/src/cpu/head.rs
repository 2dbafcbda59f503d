//! The similarity head of the CPU engine: every image against a block of
//! captions, one image group and caption pass per rayon worker, with
//! single-threaded GEMMs and scratch buffers of a few megabytes.
//!
//! Rewrites that are exact in real numbers (checked against the PyTorch
//! fixtures like the candle engine): `softmax_j(q_i . k_j)` folds the query
//! and key projections into one matrix ([`GraphStep`](crate::weights::GraphStep)), `W_g (E N) = E (N
//! W_g^T)` so both projections of a graph step are one GEMM, and the last
//! graph step computes only the global node that the score reads.
#![allow(
    unsafe_code,
    reason = "calls the SIMD kernels with a detected-feature token"
)]

use rayon::prelude::*;

use super::kernels::{combine, dot, dots, softmax, Level, Plain, Simd};
#[cfg(target_arch = "x86_64")]
use super::kernels::{Avx2Fma, Avx512};
use super::{grow, l2_normalize, sigmoid, EPS};
use crate::engine::{Captions, Images};
use crate::gemm::{matmul, MatMut, MatRef, Threads};
use crate::weights::{GraphStep, HeadWeights, Reasoner};

const SMOOTH: f32 = crate::attention::SMOOTH as f32;
const LEAKY: f32 = crate::attention::LEAKY_SLOPE as f32;

/// Per-worker buffers, reused from image to image.
#[derive(Default)]
struct Scratch {
    attn: Vec<f32>,
    norms: Vec<f32>,
    context: Vec<f32>,
    local: Vec<f32>,
    gdiff: Vec<f32>,
    global: Vec<f32>,
    nodes: Vec<f32>,
    next: Vec<f32>,
    proj: Vec<f32>,
    edges: Vec<f32>,
    rows: Vec<f32>,
    rows_out: Vec<f32>,
    lengths: Vec<usize>,
    affinity: Vec<f32>,
}

/// Words per pass through the head: the attended regions of a pass
/// (`[words, d]`) and the graph buffers stay within a core's L2 cache
/// between the stages, and the GEMMs over the shared weights still have a
/// few hundred rows.
const PASS_WORDS: usize = 384;

/// A group of images against a pass of captions: the attention runs per
/// image, every later stage as one GEMM over all their pairs. One query
/// against many images groups images; many captions cut into passes.
struct Item<'a> {
    head: &'a HeadWeights,
    img: &'a Images<'a>,
    images: std::ops::Range<usize>,
    cap: Captions<'a>,
}

/// `(c0, c1, w0, w1)`: captions `c0..c1`, words `w0..w1`, whole captions of
/// about `PASS_WORDS` words together.
fn passes(lengths: &[usize], pass_words: usize) -> Vec<(usize, usize, usize, usize)> {
    let mut out = Vec::new();
    let (mut c0, mut w0) = (0, 0);
    while c0 < lengths.len() {
        let (mut c1, mut w1) = (c0, w0);
        while c1 < lengths.len() && (c1 == c0 || w1 - w0 + lengths[c1] <= pass_words) {
            w1 += lengths[c1];
            c1 += 1;
        }
        out.push((c0, c1, w0, w1));
        (c0, w0) = (c1, w1);
    }
    out
}

/// The attention of one query sequence over one context sequence, in
/// place: `block [Lq, Ls]` holds the affinities `query . context`; each
/// becomes LeakyReLU(0.1), each context column is l2-normalised over the
/// query rows, row `q` is multiplied by `smooth(q)`, and each row becomes a
/// softmax over the context. SGRAF's text-to-visual attention (smoothing 9)
/// and RCAR's cross-attention (`crate::cpu::rcar`) both run it.
#[inline(always)]
pub(crate) fn attention_rows(
    block: &mut [f32],
    ls: usize,
    smooth: impl Fn(usize) -> f32,
    norms: &mut Vec<f32>,
) {
    let norms = grow(norms, ls);
    norms.fill(0.0);
    for row in block.chunks_mut(ls) {
        for (v, n) in row.iter_mut().zip(norms.iter_mut()) {
            *v = v.max(*v * LEAKY);
            *n += *v * *v;
        }
    }
    for n in norms.iter_mut() {
        *n = n.sqrt() + EPS;
    }
    for (q, row) in block.chunks_mut(ls).enumerate() {
        let s = smooth(q);
        for (v, n) in row.iter_mut().zip(norms.iter()) {
            *v = *v / *n * s;
        }
        softmax(row);
    }
}

impl HeadWeights {
    /// Scores `[n_img, n_cap]` (image-major) of every image with every
    /// caption, on the rayon thread pool.
    pub fn score(&self, img: &Images, cap: &Captions) -> Vec<f32> {
        self.score_in_passes(img, cap, PASS_WORDS, None)
    }

    /// [`Self::score`] with passes of `pass_words` words and, when the
    /// captions fit one pass, `group` images per item (default: as many as
    /// fill the pass). The scores do not depend on either.
    pub fn score_in_passes(
        &self,
        img: &Images,
        cap: &Captions,
        pass_words: usize,
        group: Option<usize>,
    ) -> Vec<f32> {
        let (d, r) = (self.d, img.n_regions);
        let n_img = img.global.len() / d;
        let n_cap = cap.lengths.len();
        assert_eq!(
            img.regions.len(),
            n_img * r * d,
            "regions are not [n_img, R, d]"
        );
        assert_eq!(
            cap.global.len(),
            n_cap * d,
            "caption globals are not [n_cap, d]"
        );
        assert_eq!(
            cap.words.len(),
            cap.lengths.iter().sum::<usize>() * d,
            "packed words do not match the lengths"
        );
        assert!(cap.lengths.iter().all(|&n| n > 0), "empty caption");
        let mut out = vec![0f32; n_img * n_cap];
        if n_cap == 0 || n_img == 0 {
            return out;
        }
        let passes = passes(cap.lengths, pass_words.max(1));
        // Captions that fit one pass share it with several images, leaving
        // a few items per thread for balance.
        let group = if passes.len() == 1 {
            let words = cap.lengths.iter().sum::<usize>().max(1);
            let threads = rayon::current_num_threads().max(1);
            group
                .unwrap_or((pass_words / words).clamp(1, n_img.div_ceil(4 * threads)))
                .max(1)
        } else {
            1
        };
        let items: Vec<(usize, usize)> = (0..n_img)
            .step_by(group)
            .flat_map(|i0| (0..passes.len()).map(move |p| (i0, p)))
            .collect();
        let simd = Simd::detect();
        let results: Vec<Vec<f32>> = items
            .par_iter()
            .map_init(Scratch::default, |scratch, &(i0, p)| {
                let (c0, c1, w0, w1) = passes[p];
                let item = Item {
                    head: self,
                    img,
                    images: i0..(i0 + group).min(n_img),
                    cap: Captions {
                        words: &cap.words[w0 * d..w1 * d],
                        global: &cap.global[c0 * d..c1 * d],
                        lengths: &cap.lengths[c0..c1],
                    },
                };
                let mut scores = vec![0f32; item.images.len() * (c1 - c0)];
                item.run(simd, &mut scores, scratch);
                scores
            })
            .collect();
        for (&(i0, p), scores) in items.iter().zip(&results) {
            let (c0, c1, _, _) = passes[p];
            for (k, row) in scores.chunks(c1 - c0).enumerate() {
                out[(i0 + k) * n_cap + c0..(i0 + k) * n_cap + c1].copy_from_slice(row);
            }
        }
        out
    }
}

#[cfg(target_arch = "x86_64")]
impl Item<'_> {
    /// The head compiled for AVX-512; keep these features equal to
    /// `kernels::V4_FEATURES` (a test checks they are all detected).
    ///
    /// # Safety
    /// The CPU has every feature enabled here; holding an `Avx512` proves it.
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
    unsafe fn run_v4(&self, level: Avx512, out: &mut [f32], s: &mut Scratch) {
        self.score(level, out, s)
    }

    /// The head compiled for AVX2 + FMA (`kernels::V3_FEATURES`).
    ///
    /// # Safety
    /// The CPU has every feature enabled here; holding an `Avx2Fma` proves it.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_v3(&self, level: Avx2Fma, out: &mut [f32], s: &mut Scratch) {
        self.score(level, out, s)
    }
}

impl Item<'_> {
    fn run(&self, simd: Simd, out: &mut [f32], s: &mut Scratch) {
        match simd {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: an `Avx512` is created only by `Simd::detect`, after it
            // saw every feature of `V4_FEATURES` (a superset of those
            // `run_v4` enables) on this CPU.
            Simd::V4(level) => unsafe { self.run_v4(level, out, s) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: an `Avx2Fma` is created only by `Simd::detect`, after
            // it saw every feature of `V3_FEATURES` (avx2, fma) on this CPU.
            Simd::V3(level) => unsafe { self.run_v3(level, out, s) },
            _ => self.score(Plain, out, s),
        }
    }

    /// `out[k * n_cap + c]`: the score of image `images.start + k` with caption `c`.
    #[inline(always)]
    fn score<L: Level>(&self, level: L, out: &mut [f32], s: &mut Scratch) {
        let head = self.head;
        let (d, m, r) = (head.d, head.m, self.img.n_regions);
        let cap = &self.cap;
        let (ni, nw, nc) = (self.images.len(), cap.words.len() / d, cap.lengths.len());
        let rows = ni * nw;

        // Word-region affinities of all the images at once: [nw, ni * R].
        let (i0, i1) = (self.images.start, self.images.end);
        let affinity = grow(&mut s.affinity, nw * ni * r);
        let all_regions = &self.img.regions[i0 * r * d..i1 * r * d];
        matmul(
            MatMut::new(affinity, nw, ni * r),
            MatRef::new(cap.words, nw, d),
            MatRef::new(all_regions, ni * r, d).t(),
            false,
            Threads::One,
        );
        // Per image: (l2norm(attended regions) - words)^2, [nw, d] each.
        let context = grow(&mut s.context, rows * d);
        for (k, i) in self.images.clone().enumerate() {
            let regions = &self.img.regions[i * r * d..(i + 1) * r * d];
            let attn = grow(&mut s.attn, nw * r);
            for (row, all) in attn.chunks_mut(r).zip(affinity.chunks(ni * r)) {
                row.copy_from_slice(&all[k * r..(k + 1) * r]);
            }
            // Softmax over the regions with inverse temperature 9.
            let mut start = 0;
            for &len in cap.lengths {
                let block = &mut attn[start * r..(start + len) * r];
                attention_rows(block, r, |_| SMOOTH, &mut s.norms);
                start += len;
            }
            let ctx = &mut context[k * nw * d..(k + 1) * nw * d];
            matmul(
                MatMut::new(ctx, nw, d),
                MatRef::new(attn, nw, r),
                MatRef::new(regions, r, d),
                false,
                Threads::One,
            );
            for (a, t) in ctx.chunks_mut(d).zip(cap.words.chunks(d)) {
                // One reciprocal per row: within an ulp of dividing each element.
                let inv = 1.0 / (dot::<L>(a, a).sqrt() + EPS);
                for (a, t) in a.iter_mut().zip(t) {
                    let diff = *a * inv - t;
                    *a = diff * diff;
                }
            }
        }
        // Local alignments [rows, m].
        let local = grow(&mut s.local, rows * m);
        matmul(
            MatMut::new(local, rows, m),
            MatRef::new(context, rows, d),
            MatRef::new(&head.local_wt, d, m),
            false,
            Threads::One,
        );
        for row in local.chunks_mut(m) {
            for (v, b) in row.iter_mut().zip(&head.local_b) {
                *v += b;
            }
            l2_normalize::<L>(row);
        }
        // Global alignments [ni * nc, m].
        let gdiff = grow(&mut s.gdiff, ni * nc * d);
        for (k, i) in self.images.clone().enumerate() {
            let v = &self.img.global[i * d..(i + 1) * d];
            let block = &mut gdiff[k * nc * d..(k + 1) * nc * d];
            for (o, t) in block.chunks_mut(d).zip(cap.global.chunks(d)) {
                for ((o, v), t) in o.iter_mut().zip(v).zip(t) {
                    let diff = v - t;
                    *o = diff * diff;
                }
            }
        }
        let global = grow(&mut s.global, ni * nc * m);
        matmul(
            MatMut::new(global, ni * nc, m),
            MatRef::new(gdiff, ni * nc, d),
            MatRef::new(&head.global_wt, d, m),
            false,
            Threads::One,
        );
        for row in global.chunks_mut(m) {
            for (v, b) in row.iter_mut().zip(&head.global_b) {
                *v += b;
            }
            l2_normalize::<L>(row);
        }
        // Graph nodes [global; local_1..local_n] of every pair, packed.
        let n_nodes = rows + ni * nc;
        let nodes = grow(&mut s.nodes, n_nodes * m);
        let mut lengths = std::mem::take(&mut s.lengths);
        lengths.clear();
        let mut at = 0;
        for k in 0..ni {
            let mut w0 = k * nw;
            for (c, &len) in cap.lengths.iter().enumerate() {
                let g = (k * nc + c) * m;
                nodes[at * m..(at + 1) * m].copy_from_slice(&global[g..g + m]);
                nodes[(at + 1) * m..(at + 1 + len) * m]
                    .copy_from_slice(&local[w0 * m..(w0 + len) * m]);
                at += len + 1;
                w0 += len;
                lengths.push(len);
            }
        }
        match &head.reasoner {
            Reasoner::Sgr(steps) => self.sgr(level, steps, &lengths, out, s),
            Reasoner::Saf {
                weight,
                bias,
                bn_scale,
                bn_shift,
            } => {
                let nodes = &s.nodes[..n_nodes * m];
                let gate = grow(&mut s.edges, n_nodes);
                dots(level, weight, nodes, gate);
                let pooled = grow(&mut s.rows, m);
                let zeros = grow(&mut s.rows_out, m);
                zeros.fill(0.0);
                let zeros = &*zeros;
                let mut at = 0;
                for (o, &len) in out.iter_mut().zip(&lengths) {
                    let n = len + 1;
                    let g = &mut gate[at..at + n];
                    for g in g.iter_mut() {
                        *g = sigmoid((*g + bias) * bn_scale + bn_shift);
                    }
                    let total = g.iter().map(|g| g.abs()).sum::<f32>() + EPS;
                    for g in g.iter_mut() {
                        *g /= total;
                    }
                    combine(level, g, &nodes[at * m..(at + n) * m], m, zeros, pooled);
                    l2_normalize::<L>(pooled);
                    *o = sigmoid(dot::<L>(pooled, &head.eval_w) + head.eval_b);
                    at += n;
                }
            }
        }
        s.lengths = lengths;
    }

    /// Graph reasoning over the packed nodes in `s.nodes` (pairs of
    /// `lengths[p]` words), then the scores.
    #[inline(always)]
    fn sgr<L: Level>(
        &self,
        level: L,
        steps: &[GraphStep],
        lengths: &[usize],
        out: &mut [f32],
        s: &mut Scratch,
    ) {
        let head = self.head;
        let m = head.m;
        let n_cap = lengths.len();
        let n_nodes = lengths.iter().sum::<usize>() + n_cap;
        let (last, full) = steps.split_last().expect("sgr_step >= 1 is validated");
        for step in full {
            // [P | Z] = N [M | W_g^T]: [n_nodes, 2m].
            let proj = grow(&mut s.proj, n_nodes * 2 * m);
            matmul(
                MatMut::new(proj, n_nodes, 2 * m),
                MatRef::new(&s.nodes[..n_nodes * m], n_nodes, m),
                MatRef::new(&step.fold_graph, m, 2 * m),
                false,
                Threads::One,
            );
            let next = grow(&mut s.next, n_nodes * m);
            let mut at = 0;
            for &len in lengths {
                let n = len + 1;
                let nodes = &s.nodes[at * m..(at + n) * m];
                let edges = grow(&mut s.edges, n * n);
                for i in 0..n {
                    let p = &mut proj[(at + i) * 2 * m..(at + i) * 2 * m + m];
                    for (p, c) in p.iter_mut().zip(&step.fold_bias) {
                        *p += c;
                    }
                    let row = &mut edges[i * n..(i + 1) * n];
                    dots(level, p, nodes, row);
                    softmax(row);
                }
                let z = &proj[at * 2 * m + m..];
                for i in 0..n {
                    let o = &mut next[(at + i) * m..(at + i + 1) * m];
                    combine(
                        level,
                        &edges[i * n..(i + 1) * n],
                        z,
                        2 * m,
                        &step.graph_bias,
                        o,
                    );
                    for v in o.iter_mut() {
                        *v = v.max(0.0);
                    }
                }
                at += n;
            }
            std::mem::swap(&mut s.nodes, &mut s.next);
        }
        // Last step, global node only: p_0 = n_0 M + c for every caption.
        let firsts = grow(&mut s.rows, n_cap * m);
        let mut at = 0;
        for (c, &len) in lengths.iter().enumerate() {
            firsts[c * m..(c + 1) * m].copy_from_slice(&s.nodes[at * m..(at + 1) * m]);
            at += len + 1;
        }
        let proj = grow(&mut s.proj, n_cap * m);
        // Only the M half of [M | W_g^T]: the row stride skips W_g^T.
        matmul(
            MatMut::new(proj, n_cap, m),
            MatRef::new(firsts, n_cap, m),
            MatRef::strided(&last.fold_graph, m, m, 2 * m),
            false,
            Threads::One,
        );
        // h_0 = sum_j softmax_j(p_0 . n_j) n_j, then W_g h_0 + b_g.
        let pooled = grow(&mut s.rows_out, n_cap * m);
        let zeros = vec![0f32; m];
        let mut weights = vec![0f32; 0];
        let mut at = 0;
        for (c, &len) in lengths.iter().enumerate() {
            let n = len + 1;
            let p = &mut proj[c * m..(c + 1) * m];
            for (p, b) in p.iter_mut().zip(&last.fold_bias) {
                *p += b;
            }
            let nodes = &s.nodes[at * m..(at + n) * m];
            weights.resize(n, 0.0);
            dots(level, p, nodes, &mut weights);
            softmax(&mut weights);
            combine(
                level,
                &weights,
                nodes,
                m,
                &zeros,
                &mut pooled[c * m..(c + 1) * m],
            );
            at += n;
        }
        let result = grow(&mut s.edges, n_cap * m);
        matmul(
            MatMut::new(result, n_cap, m),
            MatRef::new(pooled, n_cap, m),
            MatRef::strided(&last.fold_graph[m..], m, m, 2 * m),
            false,
            Threads::One,
        );
        for (c, row) in result.chunks_mut(m).enumerate() {
            for (v, b) in row.iter_mut().zip(&last.graph_bias) {
                *v = (*v + b).max(0.0);
            }
            out[c] = sigmoid(dot::<L>(row, &head.eval_w) + head.eval_b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rnd(n: usize, seed: &mut u64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.6
            })
            .collect()
    }

    fn head(d: usize, m: usize, sgr: bool, seed: &mut u64) -> HeadWeights {
        let mut step = || GraphStep {
            fold_graph: rnd(m * 2 * m, seed),
            fold_bias: rnd(m, seed),
            graph_bias: rnd(m, seed),
        };
        let reasoner = if sgr {
            Reasoner::Sgr(vec![step(), step(), step()])
        } else {
            Reasoner::Saf {
                weight: rnd(m, seed),
                bias: 0.1,
                bn_scale: 1.3,
                bn_shift: -0.2,
            }
        };
        HeadWeights {
            d,
            m,
            local_wt: rnd(d * m, seed),
            local_b: rnd(m, seed),
            global_wt: rnd(d * m, seed),
            global_b: rnd(m, seed),
            eval_w: rnd(m, seed),
            eval_b: 0.05,
            reasoner,
        }
    }

    /// The default plan is checked against PyTorch by the parity tests;
    /// every other way of cutting the work must give the same scores.
    #[test]
    fn passes_and_image_groups_do_not_change_scores() {
        let (d, m, r) = (24, 16, 5);
        let mut seed = 3;
        let (n_img, lengths) = (9, [1usize, 7, 3, 20, 2, 9, 4, 1, 12, 5, 6, 2, 8]);
        let regions = rnd(n_img * r * d, &mut seed);
        let global = rnd(n_img * d, &mut seed);
        let words = rnd(lengths.iter().sum::<usize>() * d, &mut seed);
        let cap_global = rnd(lengths.len() * d, &mut seed);
        let img = Images {
            regions: &regions,
            global: &global,
            n_regions: r,
        };
        for sgr in [true, false] {
            let head = head(d, m, sgr, &mut seed);
            for n_cap in [lengths.len(), 1, 3] {
                let n_words = lengths[..n_cap].iter().sum::<usize>();
                let cap = Captions {
                    words: &words[..n_words * d],
                    global: &cap_global[..n_cap * d],
                    lengths: &lengths[..n_cap],
                };
                let want = head.score(&img, &cap);
                assert_eq!(want.len(), n_img * n_cap);
                assert!(want.iter().all(|s| s.is_finite() && *s > 0.0 && *s < 1.0));
                for (pass_words, group) in [
                    (1, None),
                    (10, None),
                    (10_000, Some(1)),
                    (10_000, Some(4)),
                    (10_000, Some(9)),
                    (10_000, Some(50)),
                ] {
                    let got = head.score_in_passes(&img, &cap, pass_words, group);
                    for (g, w) in got.iter().zip(&want) {
                        assert!((g - w).abs() < 1e-6, "sgr {sgr}, {n_cap} captions, passes of {pass_words}, group {group:?}: {g} vs {w}");
                    }
                }
            }
        }
    }
}
