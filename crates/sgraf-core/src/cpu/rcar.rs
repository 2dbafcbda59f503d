//! RCAR on the CPU engine: the forward passes of [`RcarWeights`] on plain
//! float32 slices. The text encoder is SGRAF's CPU Bi-GRU
//! ([`crate::cpu::text`]) and the attention's LeakyReLU / l2norm / softmax
//! is SGRAF's (`cpu::head::attention_rows`); what is RCAR's own is here:
//! the image encoder's MLP branch, the per-dimension attention matrix and
//! per-query smoothing of the correspondence regulators (RCR), the
//! aggregation regulators (RAR) and the two scores. The candle form
//! ([`crate::rcar`]) defines the model; the parity tests hold both to the
//! upstream fixtures.
//!
//! Each rayon work item is one image against a block of captions, scored
//! pair by pair with single-threaded GEMMs and per-worker scratch buffers
//! of `[max(L, R), max(2m, d)]` floats: memory is bounded by one pair per
//! worker whatever `n_img * n_cap` is, and one image against many captions
//! still runs on every core.

use rayon::prelude::*;

use super::global::mean_rows;
use super::head::attention_rows;
use super::kernels::{self, dot, softmax, Plain};
use super::{grow, l2_normalize, sigmoid};
use crate::engine::{check_words, rows, size_product, Captions, EngineKind, Images, ScoringEngine};
use crate::gemm::{matmul, MatMut, MatRef, Threads};
use crate::ops::NORM_EPS;
use crate::rcar::weights::{LinearWeights, RcarHeadWeights, RcarImageWeights, RcarWeights};
use crate::rcar::{AttnType, Regulator};
use crate::{Error, Result, ShardPlan};

/// One RCAR model's weights ([`RcarWeights`]) run on plain slices by the CPU.
#[derive(Debug)]
pub struct RcarCpuEngine {
    w: RcarWeights,
}

impl RcarCpuEngine {
    pub fn new(weights: RcarWeights) -> Self {
        Self { w: weights }
    }

    pub fn weights(&self) -> &RcarWeights {
        &self.w
    }

    fn d(&self) -> usize {
        self.w.head.d
    }
}

impl ScoringEngine for RcarCpuEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Cpu
    }

    fn describe(&self) -> String {
        "cpu".to_string()
    }

    fn encode_images(&self, features: &[f32]) -> Result<Vec<f32>> {
        Ok(self.w.image.forward(features))
    }

    /// RCAR reads no global vectors: zeros `[n_img, d]`, so that image
    /// sides and index rows keep one layout for every model family.
    fn image_globals(&self, regions: &[f32]) -> Result<Vec<f32>> {
        let width = size_product("region embeddings", &[self.w.n_regions, self.d()])?;
        let n = rows(regions, width, "region embeddings")?;
        Ok(vec![0.0; n * self.d()])
    }

    fn encode_captions(&self, ids: &[u32], padded: usize, lengths: &[usize]) -> Result<Vec<f32>> {
        Ok(self.w.text.forward(ids, padded, lengths))
    }

    /// Zeros `[n_cap, d]`, as [`Self::image_globals`].
    fn caption_globals(&self, words: &[f32], lengths: &[usize]) -> Result<Vec<f32>> {
        check_words(words, lengths, self.d())?;
        Ok(vec![0.0; lengths.len() * self.d()])
    }

    /// Memory is bounded by one pair per worker ([`RcarHeadWeights::score`]),
    /// so the plan's blocks are not needed.
    fn score(&self, images: &Images, captions: &Captions, _plan: &ShardPlan) -> Result<Vec<f32>> {
        let r = images.n_regions;
        let width = size_product("region embeddings", &[r, self.d()])?;
        let n_img = rows(images.regions, width, "region embeddings")?;
        self.w.head.score(images.regions, n_img, r, captions)
    }
}

/// `out [rows, out] = x [rows, in] W^T + b` on one thread.
fn linear(out: &mut Vec<f32>, x: &[f32], rows: usize, l: &LinearWeights) {
    let o = l.out();
    let k = l.wt.len() / o.max(1);
    let out = grow(out, rows * o);
    matmul(
        MatMut::new(out, rows, o),
        MatRef::new(&x[..rows * k], rows, k),
        MatRef::new(&l.wt, k, o),
        false,
        Threads::One,
    );
    for row in out.chunks_mut(o) {
        for (v, b) in row.iter_mut().zip(&l.b) {
            *v += b;
        }
    }
}

impl RcarImageWeights {
    /// Region features `[rows, img_dim]` -> embeddings `[rows, d]`:
    /// `fc(x) + layer1(relu(bn0(layer0(x))))`, l2-normalised per row.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut out = self.fc.forward(x);
        let d = self.fc.bias.len();
        let rows = out.len() / d.max(1);
        let (h, k) = (self.layer0.out(), self.fc.weight_t.len() / d.max(1));
        let mut hidden = vec![0f32; rows * h];
        matmul(
            MatMut::new(&mut hidden, rows, h),
            MatRef::new(x, rows, k),
            MatRef::new(&self.layer0.wt, k, h),
            false,
            Threads::Rayon,
        );
        hidden.par_chunks_mut(h).for_each(|row| {
            for (j, v) in row.iter_mut().enumerate() {
                *v = ((*v + self.layer0.b[j]) * self.bn0_scale[j] + self.bn0_shift[j]).max(0.0);
            }
        });
        let mut mlp = vec![0f32; rows * d];
        matmul(
            MatMut::new(&mut mlp, rows, d),
            MatRef::new(&hidden, rows, h),
            MatRef::new(&self.layer1.wt, h, d),
            false,
            Threads::Rayon,
        );
        out.par_chunks_mut(d)
            .zip(mlp.par_chunks(d))
            .for_each(|(row, mlp)| {
                for ((v, m), b) in row.iter_mut().zip(mlp).zip(&self.layer1.b) {
                    *v += *m + b;
                }
                if self.normalize {
                    l2_normalize::<Plain>(row);
                }
            });
        out
    }
}

/// Per-worker buffers, reused from pair to pair.
#[derive(Default)]
struct Scratch {
    /// `[Lq, d]`: the query times the attention matrix.
    qm: Vec<f32>,
    /// `[Lq, Ls]`
    attn: Vec<f32>,
    norms: Vec<f32>,
    /// `[Lq, d]`: the attended context.
    wctx: Vec<f32>,
    /// `[Lq, d]`: `(query - wctx)^2`.
    rep: Vec<f32>,
    /// `[Lq, m]`: the alignment vectors of the current step.
    mid: Vec<f32>,
    /// `[Lq, 2m]`: the regulators' hidden layers.
    hidden: Vec<f32>,
    /// `[Lq, d]`: the attention matrix after the first RCR.
    matrix: Vec<f32>,
    /// `[Lq]`: the smoothing after the first RCR.
    smooth: Vec<f32>,
    /// `[m]` twice: the aggregate and the RAR's query.
    hig: Vec<f32>,
    q: Vec<f32>,
    /// `[Lq]`: the RAR's weights.
    weights: Vec<f32>,
}

/// The regulators' state of one pair: the attention matrix (`ones` until
/// the first RCR) and the smoothing (the option's scalar until then).
struct State {
    regulated: bool,
    smooth: f32,
}

/// Captions per work item of [`RcarHeadWeights::score`]: one image against
/// many captions still spreads over every core.
const CAPTION_BLOCK: usize = 8;

impl RcarHeadWeights {
    /// Scores `[n_img, n_cap]` (image-major) of region embeddings
    /// `regions [n_img, R, d]` with every caption (packed words; the
    /// global vectors are not read), on the rayon thread pool: each work
    /// item is one image against a block of [`CAPTION_BLOCK`] captions, so
    /// one image against many captions runs on every core. Every pair is
    /// computed alone, whatever the item, so the scores do not depend on the
    /// split.
    pub fn score(
        &self,
        regions: &[f32],
        n_img: usize,
        r: usize,
        cap: &Captions,
    ) -> Result<Vec<f32>> {
        let (d, n_cap) = (self.d, cap.lengths.len());
        let want = size_product("region embeddings", &[n_img, r, d])?;
        if regions.len() != want {
            return Err(Error::Input(format!(
                "regions hold {} values; {n_img} images of {r} x {d} need {want}",
                regions.len()
            )));
        }
        check_words(cap.words, cap.lengths, d)?;
        let mut out = vec![0f32; size_product("the score matrix", &[n_img, n_cap])?];
        if n_img == 0 || n_cap == 0 {
            return Ok(out);
        }
        // Sums of lengths checked above: no overflow.
        let starts: Vec<usize> = cap
            .lengths
            .iter()
            .scan(0, |at, &n| {
                let s = *at;
                *at += n;
                Some(s)
            })
            .collect();
        out.par_chunks_mut(n_cap)
            .enumerate()
            .flat_map(|(i, row)| {
                row.par_chunks_mut(CAPTION_BLOCK)
                    .enumerate()
                    .map(move |(b, block)| (i, b * CAPTION_BLOCK, block))
            })
            .for_each_init(Scratch::default, |s, (i, c0, block)| {
                let img = &regions[i * r * d..(i + 1) * r * d];
                for (c, v) in (c0..).zip(block.iter_mut()) {
                    let len = cap.lengths[c];
                    let words = &cap.words[starts[c] * d..(starts[c] + len) * d];
                    *v = match self.attn_type {
                        AttnType::T2i => self.pair(words, len, img, r, s),
                        AttnType::I2t => self.pair(img, r, words, len, s),
                    };
                }
            });
        Ok(out)
    }

    /// One query `[lq, d]` against one context `[ls, d]` -> the score
    /// (`encoders.py:191-214`).
    fn pair(&self, query: &[f32], lq: usize, context: &[f32], ls: usize, s: &mut Scratch) -> f32 {
        let m = self.m;
        let mut st = State {
            regulated: false,
            smooth: self.smooth,
        };
        match self.regulator {
            Regulator::OnlyRar => {
                self.alignment(0, query, lq, context, ls, &st, s);
                mean_rows(grow(&mut s.hig, m), &s.mid[..lq * m], m);
                for rar in 0..self.rar.len() {
                    self.aggregate(rar, lq, s);
                }
                self.eval_score(&s.hig)
            }
            Regulator::OnlyRcr => {
                for step in 0..self.rcr.len() {
                    self.alignment(step, query, lq, context, ls, &st, s);
                    self.regulate(step, lq, &mut st, s);
                }
                self.cross_attention(query, lq, context, ls, &st, s);
                let d = self.d;
                let mut sum = 0f32;
                for (q, w) in query.chunks(d).zip(s.wctx.chunks(d)).take(lq) {
                    let qw = dot::<Plain>(q, w);
                    let norms = dot::<Plain>(q, q).sqrt() * dot::<Plain>(w, w).sqrt();
                    sum += qw / norms.max(NORM_EPS as f32);
                }
                sum / lq as f32
            }
            Regulator::CoopRcar => {
                for step in 0..self.rar.len() {
                    self.alignment(step, query, lq, context, ls, &st, s);
                    if step == 0 {
                        mean_rows(grow(&mut s.hig, m), &s.mid[..lq * m], m);
                    }
                    // The RCR of step k reads step k's alignment vectors and
                    // feeds the alignment of step k + 1.
                    if step < self.rcr.len() {
                        self.regulate(step, lq, &mut st, s);
                    }
                    self.aggregate(step, lq, s);
                }
                self.eval_score(&s.hig)
            }
        }
    }

    /// `cross_attention` (`encoders.py:289-318`) -> `s.wctx [lq, d]`,
    /// l2-normalised rows.
    fn cross_attention(
        &self,
        query: &[f32],
        lq: usize,
        context: &[f32],
        ls: usize,
        st: &State,
        s: &mut Scratch,
    ) {
        let d = self.d;
        let qm: &[f32] = if st.regulated {
            let qm = grow(&mut s.qm, lq * d);
            for ((o, q), w) in qm.iter_mut().zip(query).zip(&s.matrix) {
                *o = q * w;
            }
            qm
        } else {
            &query[..lq * d]
        };
        let attn = grow(&mut s.attn, lq * ls);
        matmul(
            MatMut::new(attn, lq, ls),
            MatRef::new(qm, lq, d),
            MatRef::new(&context[..ls * d], ls, d).t(),
            false,
            Threads::One,
        );
        let smooth = &s.smooth;
        if st.regulated {
            attention_rows(attn, ls, |q| smooth[q], &mut s.norms);
        } else {
            attention_rows(attn, ls, |_| st.smooth, &mut s.norms);
        }
        let wctx = grow(&mut s.wctx, lq * d);
        matmul(
            MatMut::new(wctx, lq, d),
            MatRef::new(attn, lq, ls),
            MatRef::new(&context[..ls * d], ls, d),
            false,
            Threads::One,
        );
        for row in wctx.chunks_mut(d) {
            l2_normalize::<Plain>(row);
        }
    }

    /// `Alignment_vector` `step` (`encoders.py:274-286`) -> `s.mid [lq, m]`.
    #[allow(clippy::too_many_arguments, reason = "one pair's slices and state")]
    fn alignment(
        &self,
        step: usize,
        query: &[f32],
        lq: usize,
        context: &[f32],
        ls: usize,
        st: &State,
        s: &mut Scratch,
    ) {
        let d = self.d;
        self.cross_attention(query, lq, context, ls, st, s);
        let rep = grow(&mut s.rep, lq * d);
        for ((o, q), w) in rep.iter_mut().zip(query).zip(&s.wctx) {
            let diff = q - w;
            *o = diff * diff;
        }
        linear(&mut s.mid, rep, lq, &self.alv[step]);
        for row in s.mid[..lq * self.m].chunks_mut(self.m) {
            l2_normalize::<Plain>(row);
        }
    }

    /// `Correpondence_regulator` `step` (`encoders.py:253-271`) on `s.mid`:
    /// the next attention matrix `clamp(tanh(W x) + matrix, -1, 1)` and
    /// smoothing `relu(w x + smooth)`.
    fn regulate(&self, step: usize, lq: usize, st: &mut State, s: &mut Scratch) {
        let (d, m) = (self.d, self.m);
        let rcr = &self.rcr[step];
        let mid = &s.mid[..lq * m];
        linear(&mut s.hidden, mid, lq, &rcr.matrix0);
        let two_m = rcr.matrix0.out();
        s.hidden[..lq * two_m]
            .iter_mut()
            .for_each(|v| *v = kernels::tanh(*v));
        // The product before the tanh goes through `s.rep` (free here).
        linear(&mut s.rep, &s.hidden[..lq * two_m], lq, &rcr.matrix2);
        let matrix = grow(&mut s.matrix, lq * d);
        for (o, delta) in matrix.iter_mut().zip(&s.rep[..lq * d]) {
            let prev = if st.regulated { *o } else { 1.0 };
            *o = (kernels::tanh(*delta) + prev).clamp(-1.0, 1.0);
        }
        linear(&mut s.hidden, mid, lq, &rcr.smooth0);
        let half = rcr.smooth0.out();
        let smooth = grow(&mut s.smooth, lq);
        for (q, o) in smooth.iter_mut().enumerate() {
            let hidden = &mut s.hidden[q * half..(q + 1) * half];
            hidden.iter_mut().for_each(|v| *v = kernels::tanh(*v));
            let v = dot::<Plain>(hidden, &rcr.smooth2.w) + rcr.smooth2.b;
            let prev = if st.regulated { *o } else { st.smooth };
            *o = (v + prev).max(0.0);
        }
        st.regulated = true;
    }

    /// `Aggregation_regulator` `step` (`encoders.py:224-250`): `s.hig`
    /// becomes `l2norm(sum_q softmax_q(v . (tanh(W_k mid_q) *
    /// tanh(W_q hig))) mid_q)`.
    fn aggregate(&self, step: usize, lq: usize, s: &mut Scratch) {
        let m = self.m;
        let rar = &self.rar[step];
        let mid = &s.mid[..lq * m];
        linear(&mut s.q, &s.hig[..m], 1, &rar.q);
        s.q[..m].iter_mut().for_each(|v| *v = kernels::tanh(*v));
        linear(&mut s.hidden, mid, lq, &rar.k);
        let weights = grow(&mut s.weights, lq);
        for (w, k) in weights.iter_mut().zip(s.hidden.chunks_mut(m)) {
            for (k, q) in k.iter_mut().zip(&s.q[..m]) {
                *k = kernels::tanh(*k) * q;
            }
            *w = dot::<Plain>(k, &rar.v.w) + rar.v.b;
        }
        softmax(weights);
        let hig = grow(&mut s.hig, m);
        hig.fill(0.0);
        for (row, w) in mid.chunks(m).zip(weights.iter()) {
            for (h, x) in hig.iter_mut().zip(row) {
                *h += x * w;
            }
        }
        l2_normalize::<Plain>(hig);
    }

    /// `sigmoid(sim_eval_w . hig)`.
    fn eval_score(&self, hig: &[f32]) -> f32 {
        sigmoid(dot::<Plain>(&hig[..self.m], &self.eval.w) + self.eval.b)
    }
}
