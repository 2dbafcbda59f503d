//! The similarity head on the device: its weights uploaded once
//! ([`GpuHead::upload`]) and every image x caption pair scored in blocks.

use super::launch::Strides;
use super::meta::{BlockMeta, GraphMeta};
use super::{Buf, Gpu, GpuError, GpuResult, PendingRead};
use crate::engine::{Captions, Images};
use crate::weights::{GraphStep, HeadWeights, Reasoner};

/// One SGR step's weights on the device (the CPU engine's folded form).
#[derive(Debug)]
pub struct GpuStep {
    /// `[m, 2m]`: `[W_q^T W_k | W_g^T]`
    pub fold_graph: Buf,
    pub fold_bias: Buf,
    pub graph_bias: Buf,
}

/// SAF's weights on the device.
#[derive(Debug)]
pub struct GpuSaf {
    pub weight: Buf,
    pub bias: f32,
    pub scale: f32,
    pub shift: f32,
}

#[derive(Debug)]
pub enum GpuReasoner {
    Sgr(Vec<GpuStep>),
    Saf(GpuSaf),
}

/// A [`HeadWeights`]'s weights uploaded once.
#[derive(Debug)]
pub struct GpuHead {
    pub d: usize,
    pub m: usize,
    pub(super) local_wt: Buf,
    pub(super) local_b: Buf,
    pub(super) global_wt: Buf,
    pub(super) global_b: Buf,
    pub(super) eval_w: Buf,
    pub(super) eval_b: f32,
    pub(super) reasoner: GpuReasoner,
}

/// How the score matrix is cut into device-sized blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuPlan {
    /// Floats of the largest per-block buffer (the attended context,
    /// `images * words * d`), at most; about a third of the block's memory.
    pub max_block_floats: usize,
    /// Cubes per grid dimension, at most: `None` for the device's limit
    /// ([`Gpu::max_cubes_per_dim`]); a small number makes every launch
    /// take its 2-D or piecewise path (the self-check's released-size case).
    pub max_cubes_per_dim: Option<usize>,
}

impl Default for GpuPlan {
    fn default() -> Self {
        // 2^26 floats: 256 MiB for the context, about 1 GiB per block in all
        // at the released size.
        Self {
            max_block_floats: 1 << 26,
            max_cubes_per_dim: None,
        }
    }
}

impl GpuPlan {
    /// The most cubes per grid dimension on `gpu` under this plan.
    pub fn grid_cap(&self, gpu: &Gpu) -> usize {
        let device = gpu.max_cubes_per_dim();
        self.max_cubes_per_dim.map_or(device, |c| c.min(device))
    }
}

/// Where an image group's scores go: images `i0..i0 + ni` against the
/// `chunk` captions from `s0` on, in blocks of `step` captions (the last
/// one shorter), the blocks' `[ni, c1 - c0]` one after another in what
/// was read.
struct Placement {
    i0: usize,
    ni: usize,
    s0: usize,
    chunk: usize,
    step: usize,
}

impl Placement {
    /// Copies `read` into the rows of `scores` `[n_img, n_cap]`.
    fn place(&self, read: &[f32], scores: &mut [f32], n_cap: usize) {
        for c0 in (0..self.chunk).step_by(self.step) {
            let c1 = (c0 + self.step).min(self.chunk);
            let block = &read[self.ni * c0..self.ni * c1];
            let (a, b) = (self.s0 + c0, self.s0 + c1);
            for (k, row) in block.chunks(c1 - c0).enumerate() {
                let at = (self.i0 + k) * n_cap;
                scores[at + a..at + b].copy_from_slice(row);
            }
        }
    }
}

/// Images on the device: region embeddings `[n, R, d]` and global vectors `[n, d]`.
struct ImagesOnDevice {
    regions: Buf,
    global: Buf,
    n: usize,
}

/// Captions on the device: packed words and global vectors.
struct CaptionsOnDevice {
    words: Buf,
    global: Buf,
}

impl GpuHead {
    /// Uploads a head's weights once.
    /// Every weight's length is checked against `d` and `m` first (the
    /// kernels index them by `d` and `m`).
    pub fn upload(gpu: &Gpu, head: &HeadWeights) -> GpuResult<Self> {
        let (d, m) = (head.d, head.m);
        let dm = d
            .checked_mul(m)
            .ok_or_else(|| GpuError(format!("head of d {d} x m {m} overflows")))?;
        let mm2 = m
            .checked_mul(m)
            .and_then(|x| x.checked_mul(2))
            .ok_or_else(|| GpuError(format!("head of m {m} overflows")))?;
        let mut sizes = vec![
            ("local_wt", head.local_wt.len(), dm),
            ("local_b", head.local_b.len(), m),
            ("global_wt", head.global_wt.len(), dm),
            ("global_b", head.global_b.len(), m),
            ("eval_w", head.eval_w.len(), m),
        ];
        match &head.reasoner {
            Reasoner::Sgr(steps) => {
                if steps.is_empty() {
                    return Err(GpuError("an SGR head without steps".into()));
                }
                for s in steps {
                    sizes.push(("fold_graph", s.fold_graph.len(), mm2));
                    sizes.push(("fold_bias", s.fold_bias.len(), m));
                    sizes.push(("graph_bias", s.graph_bias.len(), m));
                }
            }
            Reasoner::Saf { weight, .. } => sizes.push(("saf weight", weight.len(), m)),
        }
        if let Some((name, found, want)) = sizes.into_iter().find(|(_, f, w)| f != w) {
            return Err(GpuError(format!(
                "head weight {name}: {want} values expected (d {d}, m {m}), {found} found"
            )));
        }
        let reasoner = match &head.reasoner {
            Reasoner::Sgr(steps) => GpuReasoner::Sgr(
                steps
                    .iter()
                    .map(|s: &GraphStep| {
                        Ok(GpuStep {
                            fold_graph: gpu.upload(&s.fold_graph)?,
                            fold_bias: gpu.upload(&s.fold_bias)?,
                            graph_bias: gpu.upload(&s.graph_bias)?,
                        })
                    })
                    .collect::<GpuResult<_>>()?,
            ),
            Reasoner::Saf {
                weight,
                bias,
                bn_scale,
                bn_shift,
            } => GpuReasoner::Saf(GpuSaf {
                weight: gpu.upload(weight)?,
                bias: *bias,
                scale: *bn_scale,
                shift: *bn_shift,
            }),
        };
        Ok(Self {
            d: head.d,
            m: head.m,
            local_wt: gpu.upload(&head.local_wt)?,
            local_b: gpu.upload(&head.local_b)?,
            global_wt: gpu.upload(&head.global_wt)?,
            global_b: gpu.upload(&head.global_b)?,
            eval_w: gpu.upload(&head.eval_w)?,
            eval_b: head.eval_b,
            reasoner,
        })
    }

    /// Scores `[n_img, n_cap]` (image-major) of every image with every
    /// caption: the captions `max_captions` at a time, the images as many
    /// at a time as `plan` allows.
    pub fn score(
        &self,
        gpu: &Gpu,
        img: &Images,
        cap: &Captions,
        max_captions: usize,
        plan: GpuPlan,
    ) -> GpuResult<Vec<f32>> {
        let (d, r) = (self.d, img.n_regions);
        let n_img = img.global.len() / d.max(1);
        let n_cap = cap.lengths.len();
        let check = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(GpuError(format!("invalid input: {what}")))
            }
        };
        let words = cap
            .lengths
            .iter()
            .try_fold(0usize, |a, &n| a.checked_add(n));
        check(
            n_img
                .checked_mul(r)
                .and_then(|x| x.checked_mul(d))
                .is_some_and(|n| n == img.regions.len()),
            "regions are not [n_img, R, d]",
        )?;
        check(
            n_cap.checked_mul(d) == Some(cap.global.len()),
            "caption globals are not [n_cap, d]",
        )?;
        check(
            words.and_then(|w| w.checked_mul(d)) == Some(cap.words.len()),
            "packed words do not match the lengths",
        )?;
        check(cap.lengths.iter().all(|&n| n > 0), "empty caption")?;
        let mut scores = vec![0f32; n_img * n_cap];
        if n_img == 0 || n_cap == 0 {
            return Ok(scores);
        }
        // Every buffer stays within the plan and the device's largest binding;
        // one image's regions or one caption's words always make a block, so
        // a device whose largest binding cannot hold them is refused here.
        let device_max = gpu.max_buffer_floats();
        let longest = cap.lengths.iter().copied().max().unwrap_or(0);
        let one = r.max(longest).checked_mul(d).ok_or_else(|| {
            GpuError(format!(
                "invalid input: {r} regions or {longest} words of {d} floats overflow"
            ))
        })?;
        if one > device_max {
            return Err(GpuError(format!(
                "one block needs {one} floats (the larger of {r} regions and {longest} words, times d {d}), but the device's largest buffer holds {device_max}"
            )));
        }
        let limit = plan.max_block_floats.min(device_max).max(one);
        let grid_cap = plan.grid_cap(gpu);
        let mut pending: Option<(PendingRead, Placement)> = None;
        // Caption chunks (uploaded once each): whole captions, their words
        // within the limit; inside, blocks of at most `max_captions`.
        let step = max_captions.max(1);
        let (mut s0, mut sw0) = (0, 0);
        while s0 < n_cap {
            let (mut s1, mut sw1) = (s0, sw0);
            while s1 < n_cap && (s1 == s0 || (sw1 - sw0 + cap.lengths[s1]) * d <= limit) {
                sw1 += cap.lengths[s1];
                s1 += 1;
            }
            let caps_on_device = CaptionsOnDevice {
                words: gpu.upload(&cap.words[sw0 * d..sw1 * d])?,
                global: gpu.upload(&cap.global[s0 * d..s1 * d])?,
            };
            // Blocks: (first caption, first word, layout), relative to the chunk;
            // each ends where the next begins (`step` captions apart).
            let mut blocks = Vec::new();
            let (mut c0, mut w0) = (0, 0);
            while s0 + c0 < s1 {
                let c1 = (c0 + step).min(s1 - s0);
                let lengths = &cap.lengths[s0 + c0..s0 + c1];
                blocks.push((c0, w0, BlockMeta::new(gpu, lengths)?));
                (c0, w0) = (c1, w0 + lengths.iter().sum::<usize>());
            }
            // Images per device block: the context `[ni, nw, d]` and the
            // regions `[ni, R, d]` within the limit, and the scores of all
            // the chunk's blocks `[ni, chunk]` too.
            let widest = blocks.iter().map(|b| b.2.n_words).max().unwrap_or(1);
            let per_image = (widest.max(r) * d).max(1);
            let chunk = s1 - s0;
            let group = (limit / per_image).min(limit / chunk).clamp(1, n_img);
            for i0 in (0..n_img).step_by(group) {
                let i1 = (i0 + group).min(n_img);
                let imgs = ImagesOnDevice {
                    regions: gpu.upload(&img.regions[i0 * r * d..i1 * r * d])?,
                    global: gpu.upload(&img.global[i0 * d..i1 * d])?,
                    n: i1 - i0,
                };
                // Each block's scores `[ni, c1 - c0]` at `ni * c0` of one
                // buffer: one read-back per image group, not per block.
                let out = gpu.empty(imgs.n * chunk)?;
                for (c0, w0, meta) in &blocks {
                    self.score_block(
                        gpu,
                        &imgs,
                        r,
                        &caps_on_device,
                        (*c0, *w0),
                        meta,
                        (&out, imgs.n * c0),
                        grid_cap,
                    )?;
                }
                // The read travels while the next group's work runs; the
                // previous group's scores are placed meanwhile.
                let done = Placement {
                    i0,
                    ni: imgs.n,
                    s0,
                    chunk,
                    step,
                };
                let read = gpu.read_start(&out, imgs.n * chunk)?;
                if let Some((read, at)) = pending.replace((read, done)) {
                    at.place(&read.finish()?, &mut scores, n_cap);
                }
            }
            (s0, sw0) = (s1, sw1);
        }
        if let Some((read, at)) = pending.take() {
            at.place(&read.finish()?, &mut scores, n_cap);
        }
        Ok(scores)
    }

    /// One block, queued: `imgs.n` images against the captions of `meta`,
    /// whose first caption is `c0` and first word `w0` of the captions on
    /// the device; its scores `[ni, nc]` into `out` from `out_off` on;
    /// grids of at most `cap` cubes per dimension.
    #[allow(clippy::too_many_arguments)]
    fn score_block(
        &self,
        gpu: &Gpu,
        imgs: &ImagesOnDevice,
        r: usize,
        caps: &CaptionsOnDevice,
        (c0, w0): (usize, usize),
        meta: &BlockMeta,
        out: (&Buf, usize),
        cap: usize,
    ) -> GpuResult<()> {
        let (d, m, ni) = (self.d, self.m, imgs.n);
        let (nc, nw) = (meta.lengths.len(), meta.n_words);
        // Word-region affinities [nw, ni, R]: one product, the words
        // against all the images' regions (`[ni * R, d]`, transposed).
        let affinity = gpu.empty(ni * nw * r)?;
        gpu.matmul(
            &caps.words,
            Strides::rows(w0 * d, d, 0),
            &imgs.regions,
            Strides::transposed(0, d, 0),
            &affinity,
            Strides::rows(0, ni * r, 0),
            (1, nw, ni * r, d),
            cap,
        )?;
        let norms = gpu.empty(ni * nc * r)?;
        gpu.attention(&affinity, meta, &norms, (ni, r), cap)?;
        // Attended regions [ni, nw, d], then (l2norm(a) - t)^2 in place.
        let context = gpu.empty(ni * nw * d)?;
        // Image k's attention `[nw, R]` is rows `ni * R` apart in [nw, ni, R].
        let attention = Strides {
            offset: 0,
            batch: r,
            row: ni * r,
            col: 1,
        };
        gpu.matmul(
            &affinity,
            attention,
            &imgs.regions,
            Strides::rows(0, d, r * d),
            &context,
            Strides::rows(0, d, nw * d),
            (ni, nw, d, r),
            cap,
        )?;
        gpu.context_diff(&context, &caps.words, (ni * nw, nw, d, w0), cap)?;
        // Local and global similarity vectors, straight into the graph nodes.
        let graph = GraphMeta::new(gpu, &meta.lengths, ni)?;
        let local = gpu.empty(ni * nw * m)?;
        gpu.matmul(
            &context,
            Strides::rows(0, d, 0),
            &self.local_wt,
            Strides::rows(0, m, 0),
            &local,
            Strides::rows(0, m, 0),
            (1, ni * nw, m, d),
            cap,
        )?;
        let mut nodes = gpu.empty(graph.n_nodes * m)?;
        gpu.bias_l2norm_rows(&local, &self.local_b, &graph, false, &nodes, ni * nw, cap)?;
        let gdiff = gpu.empty(ni * nc * d)?;
        gpu.global_diff(&imgs.global, &caps.global, &gdiff, (ni, nc, d, c0), cap)?;
        let global = gpu.empty(ni * nc * m)?;
        gpu.matmul(
            &gdiff,
            Strides::rows(0, d, 0),
            &self.global_wt,
            Strides::rows(0, m, 0),
            &global,
            Strides::rows(0, m, 0),
            (1, ni * nc, m, d),
            cap,
        )?;
        gpu.bias_l2norm_rows(&global, &self.global_b, &graph, true, &nodes, ni * nc, cap)?;
        match &self.reasoner {
            GpuReasoner::Sgr(steps) => {
                let mut next = gpu.empty(graph.n_nodes * m)?;
                let proj = gpu.empty(graph.n_nodes * 2 * m)?;
                let edges = gpu.empty(graph.n_nodes * graph.max_nodes)?;
                let (last, full) = steps
                    .split_last()
                    .ok_or_else(|| GpuError("an SGR head without steps".into()))?;
                for step in full {
                    gpu.graph_step(step, &nodes, &next, &proj, &edges, &graph, m, cap)?;
                    std::mem::swap(&mut nodes, &mut next);
                }
                gpu.sgr_last_step(last, &nodes, &graph, self, out, cap)?;
            }
            GpuReasoner::Saf(saf) => {
                let gates = gpu.empty(graph.n_nodes)?;
                gpu.saf_score(&nodes, &gates, &graph, self, saf, out, cap)?;
            }
        }
        Ok(())
    }
}
