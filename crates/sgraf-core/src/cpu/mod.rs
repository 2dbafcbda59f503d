//! The similarity head for inference on the CPU in float32, on plain slices.
//!
//! candle's CPU backend runs its elementwise operations on one core and
//! materialises every `[n_img, n_cap, L, d]` intermediate. Here each worker
//! takes one image against a block of captions, with single-threaded GEMMs
//! and scratch buffers that stay a few megabytes, so both cores stay busy
//! and memory is bounded by the block, never by `n_img * n_cap`. Captions
//! are cut to their true lengths, as the published code does, instead of
//! being padded and masked.
//!
//! The arithmetic is the published model's, with rewrites that are exact in
//! real numbers (checked against the PyTorch fixtures like the candle path):
//! `softmax_j(q_i . k_j)` folds the query and key projections into one
//! matrix ([`crate::sgr::GraphReasoning`]), `W_g (E N) = E (N W_g^T)` so
//! both projections of a graph step are one GEMM, and the last graph step
//! computes only the global node that the score reads.

pub mod global;
pub mod kernels;

use rayon::prelude::*;

use crate::ops::NORM_EPS;
use kernels::{combine, dot, dots, gemm, gemm_nt, softmax, Simd};
use kernels::{PLAIN, V3, V4};

pub(crate) const EPS: f32 = NORM_EPS as f32;
const SMOOTH: f32 = crate::attention::SMOOTH as f32;
const LEAKY: f32 = crate::attention::LEAKY_SLOPE as f32;

/// One graph reasoning step in inference form.
#[derive(Clone, Debug)]
pub struct GraphStep {
    /// `[m, 2m]`: `[W_q^T W_k | W_g^T]`
    pub fold_graph: Vec<f32>,
    /// `[m]`: `b_q^T W_k`
    pub fold_bias: Vec<f32>,
    /// `[m]`
    pub graph_bias: Vec<f32>,
}

#[derive(Clone, Debug)]
pub enum Reasoner {
    Sgr(Vec<GraphStep>),
    Saf {
        /// `[m]`
        weight: Vec<f32>,
        bias: f32,
        /// The BatchNorm(1) in eval mode: `x * scale + shift`.
        bn_scale: f32,
        bn_shift: f32,
    },
}

/// The weights of a [`crate::SimilarityHead`], laid out for row-major GEMMs.
#[derive(Clone, Debug)]
pub struct CpuHead {
    pub d: usize,
    pub m: usize,
    /// `[d, m]` (`W_loc^T`) and `[m]`
    pub local_wt: Vec<f32>,
    pub local_b: Vec<f32>,
    /// `[d, m]` (`W_glo^T`) and `[m]`
    pub global_wt: Vec<f32>,
    pub global_b: Vec<f32>,
    /// `[m]` and the bias of the final linear layer.
    pub eval_w: Vec<f32>,
    pub eval_b: f32,
    pub reasoner: Reasoner,
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
}

fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

#[inline(always)]
fn l2_normalize<const L: u8>(x: &mut [f32]) {
    let norm = dot::<L>(x, x).sqrt() + EPS;
    for v in x.iter_mut() {
        *v /= norm;
    }
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + kernels::exp(-x))
}

/// One image against a block of captions.
struct Task<'a> {
    head: &'a CpuHead,
    regions: &'a [f32],
    global: &'a [f32],
    n_regions: usize,
    cap: &'a Captions<'a>,
}

impl CpuHead {
    /// Scores `[n_img, n_cap]` (image-major) of every image with every caption,
    /// on the rayon thread pool, one image per task.
    pub fn score(&self, img: &Images, cap: &Captions) -> Vec<f32> {
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
        if n_cap == 0 {
            return out;
        }
        let simd = Simd::detect();
        out.par_chunks_mut(n_cap).enumerate().for_each_init(
            Scratch::default,
            |scratch, (i, row)| {
                let task = Task {
                    head: self,
                    regions: &img.regions[i * r * d..(i + 1) * r * d],
                    global: &img.global[i * d..(i + 1) * d],
                    n_regions: r,
                    cap,
                };
                task.run(simd, row, scratch);
            },
        );
        out
    }
}

#[cfg(target_arch = "x86_64")]
impl Task<'_> {
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
    unsafe fn run_v4(&self, out: &mut [f32], s: &mut Scratch) {
        self.score::<V4>(out, s)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_v3(&self, out: &mut [f32], s: &mut Scratch) {
        self.score::<V3>(out, s)
    }
}

/// Words per pass through the head: the attended regions of a pass
/// (`[words, d]`) and the graph buffers stay within a core's L2 cache
/// between the stages.
const PASS_WORDS: usize = 384;

impl Task<'_> {
    fn run(&self, simd: Simd, out: &mut [f32], s: &mut Scratch) {
        match simd {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Simd::detect` saw these features on this CPU.
            Simd::V4 => unsafe { self.run_v4(out, s) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Simd::V3 => unsafe { self.run_v3(out, s) },
            _ => self.score::<PLAIN>(out, s),
        }
    }

    /// `out[c]`: the score of this image with caption `c`.
    #[inline(always)]
    fn score<const L: u8>(&self, out: &mut [f32], s: &mut Scratch) {
        let (head, cap) = (self.head, self.cap);
        let (d, m) = (head.d, head.m);
        let n_cap = cap.lengths.len();
        // Global alignments [n_cap, m] of the whole block: one GEMM.
        let gdiff = grow(&mut s.gdiff, n_cap * d);
        for (o, t) in gdiff.chunks_mut(d).zip(cap.global.chunks(d)) {
            for ((o, v), t) in o.iter_mut().zip(self.global).zip(t) {
                let diff = v - t;
                *o = diff * diff;
            }
        }
        let mut global = std::mem::take(&mut s.global);
        let global_all = grow(&mut global, n_cap * m);
        gemm(
            n_cap,
            m,
            d,
            gdiff,
            d,
            &head.global_wt,
            m,
            global_all,
            m,
            false,
        );
        for row in global_all.chunks_mut(m) {
            for (v, b) in row.iter_mut().zip(&head.global_b) {
                *v += b;
            }
            l2_normalize::<L>(row);
        }
        // The rest in passes of about PASS_WORDS words (whole captions).
        let (mut c0, mut w0) = (0, 0);
        while c0 < n_cap {
            let (mut c1, mut w1) = (c0, w0);
            while c1 < n_cap && (c1 == c0 || w1 - w0 + cap.lengths[c1] <= PASS_WORDS) {
                w1 += cap.lengths[c1];
                c1 += 1;
            }
            let part = Captions {
                words: &cap.words[w0 * d..w1 * d],
                global: &cap.global[c0 * d..c1 * d],
                lengths: &cap.lengths[c0..c1],
            };
            Task {
                cap: &part,
                ..*self
            }
            .pass::<L>(&global_all[c0 * m..c1 * m], &mut out[c0..c1], s);
            (c0, w0) = (c1, w1);
        }
        s.global = global;
    }

    /// One pass: the captions of `self.cap`, whose global alignments are `global`.
    #[inline(always)]
    fn pass<const L: u8>(&self, global: &[f32], out: &mut [f32], s: &mut Scratch) {
        let head = self.head;
        let (d, m, r) = (head.d, head.m, self.n_regions);
        let cap = self.cap;
        let words = cap.words.len() / d;
        let n_cap = cap.lengths.len();

        // Word-region affinities [words, R].
        let attn = grow(&mut s.attn, words * r);
        gemm_nt(words, r, d, cap.words, d, self.regions, d, attn, r);
        // LeakyReLU, each region's column normalised over the caption's words,
        // then softmax over the regions with inverse temperature 9.
        let norms = grow(&mut s.norms, r);
        let mut start = 0;
        for &len in cap.lengths {
            let block = &mut attn[start * r..(start + len) * r];
            norms.fill(0.0);
            for row in block.chunks_mut(r) {
                for (v, n) in row.iter_mut().zip(norms.iter_mut()) {
                    *v = v.max(*v * LEAKY);
                    *n += *v * *v;
                }
            }
            for n in norms.iter_mut() {
                *n = n.sqrt() + EPS;
            }
            for row in block.chunks_mut(r) {
                for (v, n) in row.iter_mut().zip(norms.iter()) {
                    *v = *v / *n * SMOOTH;
                }
                softmax(row);
            }
            start += len;
        }
        // Attended regions [words, d], then (l2norm(a) - t)^2 in place.
        let context = grow(&mut s.context, words * d);
        gemm(words, d, r, attn, r, self.regions, d, context, d, false);
        for (a, t) in context.chunks_mut(d).zip(cap.words.chunks(d)) {
            // One reciprocal per row: within an ulp of dividing each element.
            let inv = 1.0 / (dot::<L>(a, a).sqrt() + EPS);
            for (a, t) in a.iter_mut().zip(t) {
                let diff = *a * inv - t;
                *a = diff * diff;
            }
        }
        // Local alignments [words, m].
        let local = grow(&mut s.local, words * m);
        gemm(words, m, d, context, d, &head.local_wt, m, local, m, false);
        for row in local.chunks_mut(m) {
            for (v, b) in row.iter_mut().zip(&head.local_b) {
                *v += b;
            }
            l2_normalize::<L>(row);
        }
        // Graph nodes [global; local_1..local_n] of every caption, packed.
        let n_nodes = words + n_cap;
        let nodes = grow(&mut s.nodes, n_nodes * m);
        let (mut at, mut w0) = (0, 0);
        for (c, &len) in cap.lengths.iter().enumerate() {
            nodes[at * m..(at + 1) * m].copy_from_slice(&global[c * m..(c + 1) * m]);
            nodes[(at + 1) * m..(at + 1 + len) * m].copy_from_slice(&local[w0 * m..(w0 + len) * m]);
            at += len + 1;
            w0 += len;
        }
        match &head.reasoner {
            Reasoner::Sgr(steps) => self.sgr::<L>(steps, out, s),
            Reasoner::Saf {
                weight,
                bias,
                bn_scale,
                bn_shift,
            } => {
                let nodes = &s.nodes[..n_nodes * m];
                let gate = grow(&mut s.edges, n_nodes);
                dots::<L>(weight, nodes, gate);
                let pooled = grow(&mut s.rows, m);
                let zeros = grow(&mut s.rows_out, m);
                zeros.fill(0.0);
                let zeros = &*zeros;
                let mut at = 0;
                for (c, &len) in cap.lengths.iter().enumerate() {
                    let n = len + 1;
                    let g = &mut gate[at..at + n];
                    for g in g.iter_mut() {
                        *g = sigmoid((*g + bias) * bn_scale + bn_shift);
                    }
                    let total = g.iter().map(|g| g.abs()).sum::<f32>() + EPS;
                    for g in g.iter_mut() {
                        *g /= total;
                    }
                    combine::<L>(g, &nodes[at * m..(at + n) * m], m, zeros, pooled);
                    l2_normalize::<L>(pooled);
                    out[c] = sigmoid(dot::<L>(pooled, &head.eval_w) + head.eval_b);
                    at += n;
                }
            }
        }
    }

    /// Graph reasoning over the packed nodes in `s.nodes`, then the scores.
    #[inline(always)]
    fn sgr<const L: u8>(&self, steps: &[GraphStep], out: &mut [f32], s: &mut Scratch) {
        let head = self.head;
        let m = head.m;
        let lengths = self.cap.lengths;
        let n_cap = lengths.len();
        let n_nodes = lengths.iter().sum::<usize>() + n_cap;
        let (last, full) = steps.split_last().expect("sgr_step >= 1 is validated");
        for step in full {
            // [P | Z] = N [M | W_g^T]: [n_nodes, 2m].
            let proj = grow(&mut s.proj, n_nodes * 2 * m);
            gemm(
                n_nodes,
                2 * m,
                m,
                &s.nodes[..n_nodes * m],
                m,
                &step.fold_graph,
                2 * m,
                proj,
                2 * m,
                false,
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
                    dots::<L>(p, nodes, row);
                    softmax(row);
                }
                let z = &proj[at * 2 * m + m..];
                for i in 0..n {
                    let o = &mut next[(at + i) * m..(at + i + 1) * m];
                    combine::<L>(&edges[i * n..(i + 1) * n], z, 2 * m, &step.graph_bias, o);
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
        gemm(
            n_cap,
            m,
            m,
            firsts,
            m,
            &last.fold_graph,
            2 * m,
            proj,
            m,
            false,
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
            dots::<L>(p, nodes, &mut weights);
            softmax(&mut weights);
            combine::<L>(&weights, nodes, m, &zeros, &mut pooled[c * m..(c + 1) * m]);
            at += n;
        }
        let result = grow(&mut s.edges, n_cap * m);
        gemm(
            n_cap,
            m,
            m,
            pooled,
            m,
            &last.fold_graph[m..],
            2 * m,
            result,
            m,
            false,
        );
        for (c, row) in result.chunks_mut(m).enumerate() {
            for (v, b) in row.iter_mut().zip(&last.graph_bias) {
                *v = (*v + b).max(0.0);
            }
            out[c] = sigmoid(dot::<L>(row, &head.eval_w) + head.eval_b);
        }
    }
}
