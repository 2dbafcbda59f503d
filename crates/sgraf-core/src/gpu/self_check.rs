//! The self-check run when a device is opened: fixed inputs scored on the
//! device and by the CPU engine.
//!
//! Two sizes: a small one (d 40, m 24, 6 regions: every product one
//! partial tile), and the released size (d 1024, m 256, 36 regions, 132
//! words in a block of 5 captions: more than one tile in every dimension of
//! the word products, in two image blocks, with grids of at most
//! [`SELF_CHECK_GRID_CAP`] cubes per dimension, so every larger launch
//! takes its 2-D or 3-D path and the larger products are launched in
//! pieces). The released
//! size costs milliseconds on a GPU and runs at every first use; on a
//! CPU-emulated adapter (lavapipe) it takes seconds and runs once per process.

use std::sync::atomic::{AtomicBool, Ordering};

use super::head::{GpuHead, GpuPlan};
use super::{Gpu, GpuError, GpuResult};
use crate::engine::{Captions, Images};
use crate::weights::{GraphStep, HeadWeights, Reasoner};

/// Largest difference allowed between the device's and the CPU engine's
/// scores of the self-check's fixed inputs.
pub const SELF_CHECK_TOLERANCE: f32 = 1e-4;

/// Cubes per grid dimension in the released-size case: small enough that
/// its launches go 2-D past 7 cubes and 3-D past 49 (up to 274), and its
/// 1024-wide products take two pieces (8 tiles of 128 columns).
pub const SELF_CHECK_GRID_CAP: usize = 7;

/// Cubes per grid dimension in the released-size case's second plan
/// ([`self_check_case_released_wide`]): blocks of 4 images need up to 548
/// cubes, within 9 x 9 x 9.
pub const SELF_CHECK_WIDE_GRID_CAP: usize = 9;

/// A fixed input: a head, its image and caption sides, and how they are
/// cut into blocks.
pub struct SelfCheckCase {
    pub head: HeadWeights,
    /// `[n_img, n_regions, d]`
    pub regions: Vec<f32>,
    /// `[n_img, d]`
    pub global: Vec<f32>,
    /// `[sum(lengths), d]`
    pub words: Vec<f32>,
    /// `[n_cap, d]`
    pub cap_global: Vec<f32>,
    pub lengths: Vec<usize>,
    pub n_regions: usize,
    /// Captions per block.
    pub block_captions: usize,
    /// The blocks and grids the check runs with.
    pub plan: GpuPlan,
}

impl SelfCheckCase {
    /// The image side.
    pub fn images(&self) -> Images<'_> {
        Images {
            regions: &self.regions,
            global: &self.global,
            n_regions: self.n_regions,
        }
    }

    /// The caption side.
    pub fn captions(&self) -> Captions<'_> {
        Captions {
            words: &self.words,
            global: &self.cap_global,
            lengths: &self.lengths,
        }
    }

    /// The CPU engine's scores of the case's head.
    pub fn cpu_scores(&self) -> Vec<f32> {
        self.head.score(&self.images(), &self.captions())
    }

    /// `head`'s scores of the case's input on `gpu`, `block_captions` per block.
    pub fn device_scores(
        &self,
        gpu: &Gpu,
        head: &HeadWeights,
        plan: GpuPlan,
    ) -> GpuResult<Vec<f32>> {
        GpuHead::upload(gpu, head)?.score(
            gpu,
            &self.images(),
            &self.captions(),
            self.block_captions,
            plan,
        )
    }

    /// The largest difference between the device's and the CPU's scores
    /// under the case's own plan, or an error naming the device, the model
    /// and the numbers when it passes [`SELF_CHECK_TOLERANCE`].
    pub fn check(&self, gpu: &Gpu, what: &str) -> GpuResult<f32> {
        let want = self.cpu_scores();
        let got = self.device_scores(gpu, &self.head, self.plan)?;
        if got.len() != want.len() {
            return Err(GpuError(format!(
                "self-check failed on {}: {what}: {} scores on the device, {} on the CPU; \
                 refusing this device",
                gpu.describe(),
                got.len(),
                want.len()
            )));
        }
        let mut worst = 0f32;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let diff = (g - w).abs();
            if diff.is_nan() || diff > SELF_CHECK_TOLERANCE {
                return Err(GpuError(format!(
                    "self-check failed on {}: {what} score {i} is {g} on the device, {w} on the \
                     CPU (difference {diff:e} > {SELF_CHECK_TOLERANCE:e}); refusing this device",
                    gpu.describe(),
                )));
            }
            worst = worst.max(diff);
        }
        Ok(worst)
    }
}

/// A seeded generator of values in `[-scale/2, scale/2)`.
fn generator(seed: u64) -> impl FnMut(usize, f32) -> Vec<f32> {
    let mut seed = seed;
    move |n, scale| {
        (0..n)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
            })
            .collect()
    }
}

/// `rows` rows of `d` with unit norm, as the encoders output.
fn unit_rows(rnd: &mut impl FnMut(usize, f32) -> Vec<f32>, rows: usize, d: usize) -> Vec<f32> {
    let mut x = rnd(rows * d, 1.0);
    for row in x.chunks_mut(d) {
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt() + 1e-8;
        row.iter_mut().for_each(|v| *v /= n);
    }
    x
}

/// A head of `d`, `m` with seeded weights, every value scaled by
/// `scale(fan_in, fan_out)`.
fn seeded_head(
    sgr: bool,
    (d, m): (usize, usize),
    rnd: &mut impl FnMut(usize, f32) -> Vec<f32>,
    scale: impl Fn(usize, usize) -> f32,
) -> HeadWeights {
    let reasoner = if sgr {
        Reasoner::Sgr(
            (0..3)
                .map(|_| GraphStep {
                    fold_graph: rnd(m * 2 * m, scale(m, m)),
                    fold_bias: rnd(m, 0.6),
                    graph_bias: rnd(m, 0.6),
                })
                .collect(),
        )
    } else {
        Reasoner::Saf {
            weight: rnd(m, scale(m, 1)),
            bias: 0.1,
            bn_scale: 1.3,
            bn_shift: -0.2,
        }
    };
    HeadWeights {
        d,
        m,
        local_wt: rnd(d * m, scale(d, m)),
        local_b: rnd(m, 0.6),
        global_wt: rnd(d * m, scale(d, m)),
        global_b: rnd(m, 0.6),
        eval_w: rnd(m, 4.0 * scale(m, 1)),
        eval_b: 0.05,
        reasoner,
    }
}

/// A small fixed head and input (SGR or SAF): d 40, m 24, 6 regions, 3
/// images, 5 captions two per block, in two image blocks.
pub fn self_check_case(sgr: bool) -> SelfCheckCase {
    let (d, m, r) = (40, 24, 6);
    let lengths = vec![3usize, 1, 7, 2, 5];
    let mut rnd = generator(0x5eed);
    let n_img = 3;
    let regions = rnd(n_img * r * d, 0.6);
    let global = rnd(n_img * d, 0.6);
    let words = rnd(lengths.iter().sum::<usize>() * d, 0.6);
    let cap_global = rnd(lengths.len() * d, 0.6);
    let head = seeded_head(sgr, (d, m), &mut rnd, |_, _| 0.6);
    // Two caption blocks, two image blocks: the blocking is checked too.
    let plan = GpuPlan {
        max_block_floats: 2 * lengths[..2].iter().sum::<usize>() * d,
        max_cubes_per_dim: None,
    };
    SelfCheckCase {
        head,
        regions,
        global,
        words,
        cap_global,
        lengths,
        n_regions: r,
        block_captions: 2,
        plan,
    }
}

/// The released size (d 1024, m 256, 36 regions), SGR or SAF: 4 images of
/// unit-norm regions, 5 captions of 132 words in one block (two row tiles
/// of the word products; the affinity's columns, 2 images' 72 regions, are
/// one tile here, two in [`self_check_case_released_wide`]), two image
/// blocks, grids of at most
/// [`SELF_CHECK_GRID_CAP`] cubes per dimension; weights of about the
/// trained models' scale.
pub fn self_check_case_released(sgr: bool) -> SelfCheckCase {
    let (d, m, r) = (1024, 256, 36);
    let lengths = vec![30usize, 21, 38, 17, 26];
    let n_words: usize = lengths.iter().sum();
    let mut rnd = generator(0x5eed_1024);
    let n_img = 4;
    let regions = unit_rows(&mut rnd, n_img * r, d);
    let global = unit_rows(&mut rnd, n_img, d);
    let words = unit_rows(&mut rnd, n_words, d);
    let cap_global = unit_rows(&mut rnd, lengths.len(), d);
    // Xavier's range (the generator's values span `scale`).
    let head = seeded_head(sgr, (d, m), &mut rnd, |i, o| {
        2.0 * (6.0 / (i + o) as f32).sqrt()
    });
    let plan = GpuPlan {
        // Two images per block: [2, 132, 1024] of context.
        max_block_floats: 2 * n_words * d,
        max_cubes_per_dim: Some(SELF_CHECK_GRID_CAP),
    };
    SelfCheckCase {
        head,
        regions,
        global,
        words,
        cap_global,
        block_captions: lengths.len(),
        lengths,
        n_regions: r,
        plan,
    }
}

/// The released-size case in one block of its 4 images, so that the
/// affinity's 144 columns are two tiles, on grids of at most
/// [`SELF_CHECK_WIDE_GRID_CAP`] cubes per dimension (the larger launches
/// 3-D). Run at first use on a GPU (milliseconds); on a CPU-emulated
/// adapter, where it costs seconds per process, `tests/gpu.rs` runs it.
pub fn self_check_case_released_wide(sgr: bool) -> SelfCheckCase {
    let mut case = self_check_case_released(sgr);
    let n_words: usize = case.lengths.iter().sum();
    let n_img = case.global.len() / case.head.d;
    case.plan = GpuPlan {
        max_block_floats: n_img * n_words * case.head.d,
        max_cubes_per_dim: Some(SELF_CHECK_WIDE_GRID_CAP),
    };
    case
}

/// Whether this process has run the released-size case on a CPU-emulated
/// adapter.
static RELEASED_ON_SOFTWARE: AtomicBool = AtomicBool::new(false);

/// Scores the fixed inputs (SGR and SAF, small then released size) on
/// `gpu` and on the CPU engine; an error names the device, the model and
/// the numbers when they differ by more than [`SELF_CHECK_TOLERANCE`].
/// On a CPU-emulated adapter the released size runs once per process.
/// Returns the largest difference.
pub fn self_check(gpu: &Gpu) -> GpuResult<f32> {
    let mut worst = 0f32;
    for sgr in [true, false] {
        let model = if sgr { "SGR" } else { "SAF" };
        worst = worst.max(self_check_case(sgr).check(gpu, &format!("small {model}"))?);
    }
    let released = !gpu.is_software() || !RELEASED_ON_SOFTWARE.swap(true, Ordering::SeqCst);
    if released {
        for sgr in [true, false] {
            let model = if sgr { "SGR" } else { "SAF" };
            let case = self_check_case_released(sgr);
            worst = worst.max(case.check(gpu, &format!("released-size {model}"))?);
            if !gpu.is_software() {
                let wide = self_check_case_released_wide(sgr);
                let label = format!("released-size {model}, 4 images per block");
                worst = worst.max(wide.check(gpu, &label)?);
            }
        }
    }
    Ok(worst)
}
