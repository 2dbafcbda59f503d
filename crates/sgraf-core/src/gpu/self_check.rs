//! The self-check run when a device is opened: a small fixed input scored
//! on the device and by the CPU engine.

use super::head::{GpuHead, GpuPlan};
use super::{Gpu, GpuError, GpuResult};
use crate::engine::{Captions, Images};
use crate::weights::{GraphStep, HeadWeights, Reasoner};

/// Largest difference allowed between the device's and the CPU engine's
/// scores of the self-check's fixed input.
pub const SELF_CHECK_TOLERANCE: f32 = 1e-4;

/// The self-check's fixed input: a small head and its image and caption sides.
pub struct SelfCheckCase {
    pub head: HeadWeights,
    /// `[3, 6, 40]`
    pub regions: Vec<f32>,
    pub global: Vec<f32>,
    pub words: Vec<f32>,
    pub cap_global: Vec<f32>,
    pub lengths: Vec<usize>,
}

impl SelfCheckCase {
    /// The image side.
    pub fn images(&self) -> Images<'_> {
        Images {
            regions: &self.regions,
            global: &self.global,
            n_regions: SELF_CHECK_REGIONS,
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

    /// `head`'s scores of the case's input on `gpu`, two captions per block.
    pub fn device_scores(
        &self,
        gpu: &Gpu,
        head: &HeadWeights,
        plan: GpuPlan,
    ) -> GpuResult<Vec<f32>> {
        GpuHead::upload(gpu, head).score(gpu, &self.images(), &self.captions(), 2, plan)
    }
}

/// Regions per image of [`self_check_case`].
const SELF_CHECK_REGIONS: usize = 6;

/// A small fixed head and input (SGR and SAF), for the self-check.
pub fn self_check_case(sgr: bool) -> SelfCheckCase {
    let (d, m, r) = (40, 24, SELF_CHECK_REGIONS);
    let lengths = vec![3usize, 1, 7, 2, 5];
    let mut seed = 0x5eed_u64;
    let mut rnd = |n: usize, scale: f32| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
            })
            .collect()
    };
    let n_img = 3;
    let regions = rnd(n_img * r * d, 0.6);
    let global = rnd(n_img * d, 0.6);
    let words = rnd(lengths.iter().sum::<usize>() * d, 0.6);
    let cap_global = rnd(lengths.len() * d, 0.6);
    let reasoner = if sgr {
        Reasoner::Sgr(
            (0..3)
                .map(|_| GraphStep {
                    fold_graph: rnd(m * 2 * m, 0.6),
                    fold_bias: rnd(m, 0.6),
                    graph_bias: rnd(m, 0.6),
                })
                .collect(),
        )
    } else {
        Reasoner::Saf {
            weight: rnd(m, 0.6),
            bias: 0.1,
            bn_scale: 1.3,
            bn_shift: -0.2,
        }
    };
    let head = HeadWeights {
        d,
        m,
        local_wt: rnd(d * m, 0.6),
        local_b: rnd(m, 0.6),
        global_wt: rnd(d * m, 0.6),
        global_b: rnd(m, 0.6),
        eval_w: rnd(m, 0.6),
        eval_b: 0.05,
        reasoner,
    };
    SelfCheckCase {
        head,
        regions,
        global,
        words,
        cap_global,
        lengths,
    }
}

/// Scores the fixed input of [`self_check_case`] (SGR and SAF) on `gpu`
/// and on the CPU engine; an error names the device and the difference
/// when they differ by more than [`SELF_CHECK_TOLERANCE`].
pub fn self_check(gpu: &Gpu) -> GpuResult<f32> {
    let mut worst = 0f32;
    for sgr in [true, false] {
        let case = self_check_case(sgr);
        let want = case.cpu_scores();
        // Two caption blocks, two image blocks: the blocking is checked too.
        let plan = GpuPlan {
            max_block_floats: 2 * case.lengths[..2].iter().sum::<usize>() * case.head.d,
        };
        let got = case.device_scores(gpu, &case.head, plan)?;
        for (g, w) in got.iter().zip(&want) {
            let diff = (g - w).abs();
            if diff.is_nan() || diff > SELF_CHECK_TOLERANCE {
                return Err(GpuError(format!(
                    "self-check failed on {}: {} score {g} on the device, {w} on the CPU \
                     (difference {diff:e} > {SELF_CHECK_TOLERANCE:e}); refusing this device",
                    gpu.describe(),
                    if sgr { "SGR" } else { "SAF" }
                )));
            }
            worst = worst.max(diff);
        }
    }
    Ok(worst)
}
