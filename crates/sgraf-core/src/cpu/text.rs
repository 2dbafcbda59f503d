//! The text encoder (word embedding, Bi-GRU over each caption's true
//! length, mean of the directions, l2norm) for float32 inference on the CPU.
//!
//! candle's GRU runs a dozen small operations per time step on one core.
//! Here captions are sorted by length and cut into chunks of similar
//! lengths; each rayon worker takes a chunk and runs its layers with
//! single-threaded GEMMs: the input projections of every word of the chunk
//! in one GEMM, then per step one `[active, h] x [h, 3h]` GEMM over the
//! captions still running and the gates in one pass. Words are packed time
//! major, so the captions still running at step `t` are a prefix of the
//! chunk and their rows are contiguous: this is a packed sequence, and the
//! backward direction starts at each caption's last word as PyTorch's
//! `pack_padded_sequence` makes it.

use rayon::prelude::*;

use super::kernels;
use super::{l2_normalize, sigmoid};
use crate::gemm::{matmul, MatMut, MatRef, Threads};
use crate::weights::{GruWeights, TextEncoderWeights};

/// Captions per worker item: the per-step GEMMs keep a few hundred rows
/// against the `[h, 3h]` recurrent weights that every step streams.
const CHUNK: usize = 256;

impl GruWeights {
    fn hidden(&self) -> usize {
        self.b_hn.len()
    }

    fn input(&self) -> usize {
        self.w_ih_t.len() / (3 * self.hidden())
    }

    /// Runs over a time-major packed chunk: `x [rows, in]` where step `t`
    /// holds rows `offsets[t]..offsets[t] + active[t]`; writes `out [rows, h]`.
    fn run(&self, x: &[f32], active: &[usize], offsets: &[usize], reverse: bool, s: &mut Dir) {
        let (h, input) = (self.hidden(), self.input());
        let h3 = 3 * h;
        let rows = x.len() / input;
        let gi = super::grow(&mut s.gi, rows * h3);
        matmul(
            MatMut::new(gi, rows, h3),
            MatRef::new(x, rows, input),
            MatRef::new(&self.w_ih_t, input, h3),
            false,
            Threads::One,
        );
        for row in gi.chunks_exact_mut(h3) {
            for (g, b) in row.iter_mut().zip(&self.b_i) {
                *g += b;
            }
        }
        let state = super::grow(&mut s.state, active.first().copied().unwrap_or(0) * h);
        state.fill(0.0);
        let out = super::grow(&mut s.out, rows * h);
        let steps: Box<dyn Iterator<Item = usize>> = if reverse {
            Box::new((0..active.len()).rev())
        } else {
            Box::new(0..active.len())
        };
        for t in steps {
            let a = active[t];
            let gh = super::grow(&mut s.gh, a * h3);
            matmul(
                MatMut::new(gh, a, h3),
                MatRef::new(&state[..a * h], a, h),
                MatRef::new(&self.w_hh_t, h, h3),
                false,
                Threads::One,
            );
            let gi_t = &gi[offsets[t] * h3..(offsets[t] + a) * h3];
            let out_t = &mut out[offsets[t] * h..(offsets[t] + a) * h];
            for j in 0..a {
                let (gi_j, gh_j) = (&gi_t[j * h3..(j + 1) * h3], &gh[j * h3..(j + 1) * h3]);
                let st = &mut state[j * h..(j + 1) * h];
                for u in 0..h {
                    let r = sigmoid(gi_j[u] + gh_j[u]);
                    let z = sigmoid(gi_j[h + u] + gh_j[h + u]);
                    let n = kernels::tanh(gi_j[2 * h + u] + r * (gh_j[2 * h + u] + self.b_hn[u]));
                    // PyTorch's (1 - z) * n + z * h.
                    st[u] = (st[u] - n) * z + n;
                }
                out_t[j * h..(j + 1) * h].copy_from_slice(st);
            }
        }
    }
}

/// Buffers of one direction, reused from chunk to chunk.
#[derive(Default)]
struct Dir {
    gi: Vec<f32>,
    gh: Vec<f32>,
    state: Vec<f32>,
    out: Vec<f32>,
}

impl TextEncoderWeights {
    /// Word embeddings `[n_cap, max(lengths), h]` (zero past each caption's
    /// end) of token ids `[n_cap, padded]` (row-major, already checked
    /// against the vocabulary) with true lengths `1..=padded`.
    pub fn forward(&self, ids: &[u32], padded: usize, lengths: &[usize]) -> Vec<f32> {
        let n = lengths.len();
        assert_eq!(ids.len(), n * padded, "ids are not [n_cap, padded]");
        assert!(lengths.iter().all(|&l| l <= padded), "length past padding");
        let h = self.hidden;
        let max_len = lengths.iter().copied().max().unwrap_or(0);
        // Longest first, stable: chunks of similar lengths.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&c| std::cmp::Reverse(lengths[c]));
        let chunks: Vec<&[usize]> = order.chunks(CHUNK).collect();
        let done: Vec<Vec<f32>> = chunks
            .par_iter()
            .map_init(Scratch::default, |s, chunk| {
                self.chunk(ids, padded, lengths, chunk, s)
            })
            .collect();
        let mut out = vec![0f32; n * max_len * h];
        for (chunk, packed) in chunks.iter().zip(&done) {
            // Unpack time-major rows back to [caption, t, h].
            let mut row = 0;
            for t in 0..max_len {
                for &c in chunk.iter().take_while(|&&c| lengths[c] > t) {
                    let dst = (c * max_len + t) * h;
                    out[dst..dst + h].copy_from_slice(&packed[row * h..(row + 1) * h]);
                    row += 1;
                }
            }
        }
        out
    }

    /// One chunk (captions sorted longest first) -> time-major rows `[words, h]`.
    fn chunk(
        &self,
        ids: &[u32],
        padded: usize,
        lengths: &[usize],
        chunk: &[usize],
        s: &mut Scratch,
    ) -> Vec<f32> {
        let h = self.hidden;
        let steps = chunk.first().map_or(0, |&c| lengths[c]);
        let active: Vec<usize> = (0..steps)
            .map(|t| chunk.iter().take_while(|&&c| lengths[c] > t).count())
            .collect();
        let mut offsets = Vec::with_capacity(steps);
        let mut rows = 0;
        for &a in &active {
            offsets.push(rows);
            rows += a;
        }
        let wd = self.word_dim;
        s.x.clear();
        s.x.reserve(rows * wd);
        for (t, &a) in active.iter().enumerate() {
            for &c in &chunk[..a] {
                let id = ids[c * padded + t] as usize;
                s.x.extend_from_slice(&self.embed[id * wd..(id + 1) * wd]);
            }
        }
        let mut out = vec![0f32; rows * h];
        for (i, (fwd, bwd)) in self.layers.iter().enumerate() {
            let last = i + 1 == self.layers.len();
            fwd.run(&s.x, &active, &offsets, false, &mut s.fwd);
            match bwd {
                Some(bwd) => {
                    bwd.run(&s.x, &active, &offsets, true, &mut s.bwd);
                    let (f, b) = (&s.fwd.out[..rows * h], &s.bwd.out[..rows * h]);
                    if last {
                        for ((o, f), b) in out.iter_mut().zip(f).zip(b) {
                            *o = (f + b) / 2.0;
                        }
                    } else {
                        s.x.clear();
                        for (f, b) in f.chunks_exact(h).zip(b.chunks_exact(h)) {
                            s.x.extend_from_slice(f);
                            s.x.extend_from_slice(b);
                        }
                    }
                }
                None if last => out.copy_from_slice(&s.fwd.out[..rows * h]),
                None => {
                    s.x.clear();
                    s.x.extend_from_slice(&s.fwd.out[..rows * h]);
                }
            }
        }
        if self.normalize {
            for row in out.chunks_exact_mut(h) {
                l2_normalize::<kernels::Plain>(row);
            }
        }
        out
    }
}

#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    fwd: Dir,
    bwd: Dir,
}
