//! Test helpers shared by the GPU tests (tests/gpu.rs, tests/gpu_bench.rs,
//! tests/gpu_cuda.rs): a seeded generator, the released-size head and data,
//! and the comparison with the CPU (the matrix product's reference is the
//! library's `gpu::launch::matmul_ref`).
#![allow(dead_code)]

use sgraf_core::engine::{Captions, Images};
use sgraf_core::weights::{GraphStep, HeadWeights, Reasoner};

/// Relative tolerance of the device against the CPU engine.
pub const TOL: f32 = 1e-5;

pub struct Rng(pub u64);

impl Rng {
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale
            })
            .collect()
    }

    /// Rows of `d` with unit norm, as the encoders output.
    pub fn unit_rows(&mut self, rows: usize, d: usize) -> Vec<f32> {
        let mut x = self.vec(rows * d, 1.0);
        for row in x.chunks_mut(d) {
            let n = row.iter().map(|v| v * v).sum::<f32>().sqrt() + 1e-8;
            row.iter_mut().for_each(|v| *v /= n);
        }
        x
    }
}

pub fn close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst = (0f32, 0usize);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let diff = (g - w).abs() / w.abs().max(1.0);
        assert!(diff.is_finite(), "{what}[{i}]: {g} vs {w}");
        if diff > worst.0 {
            worst = (diff, i);
        }
    }
    println!(
        "{what}: {} values, largest difference {:e}",
        got.len(),
        worst.0
    );
    assert!(
        worst.0 <= tol,
        "{what}[{}]: {} on the device, {} on the CPU",
        worst.1,
        got[worst.1],
        want[worst.1]
    );
}

/// A head at the released size (d 1024, sim_dim 256), random weights of
/// about the trained models' scale.
pub fn head(sgr: bool, rng: &mut Rng) -> HeadWeights {
    let (d, m) = (1024, 256);
    let xavier = |i: usize, o: usize| (6.0 / (i + o) as f32).sqrt();
    let reasoner = if sgr {
        Reasoner::Sgr(
            (0..3)
                .map(|_| GraphStep {
                    fold_graph: rng.vec(m * 2 * m, xavier(m, m)),
                    fold_bias: rng.vec(m, 0.05),
                    graph_bias: rng.vec(m, 0.05),
                })
                .collect(),
        )
    } else {
        Reasoner::Saf {
            weight: rng.vec(m, xavier(m, 1)),
            bias: 0.02,
            bn_scale: 1.1,
            bn_shift: -0.05,
        }
    };
    HeadWeights {
        d,
        m,
        local_wt: rng.vec(d * m, xavier(d, m)),
        local_b: rng.vec(m, 0.05),
        global_wt: rng.vec(d * m, xavier(d, m)),
        global_b: rng.vec(m, 0.05),
        eval_w: rng.vec(m, xavier(m, 1) * 4.0),
        eval_b: 0.01,
        reasoner,
    }
}

pub struct Data {
    pub regions: Vec<f32>,
    pub global: Vec<f32>,
    pub words: Vec<f32>,
    pub cap_global: Vec<f32>,
    pub lengths: Vec<usize>,
}

pub fn data(n_img: usize, lengths: Vec<usize>, rng: &mut Rng) -> Data {
    let (r, d) = (36, 1024);
    Data {
        regions: rng.unit_rows(n_img * r, d),
        global: rng.unit_rows(n_img, d),
        words: rng.unit_rows(lengths.iter().sum(), d),
        cap_global: rng.unit_rows(lengths.len(), d),
        lengths,
    }
}

impl Data {
    pub fn sides(&self) -> (Images<'_>, Captions<'_>) {
        (
            Images {
                regions: &self.regions,
                global: &self.global,
                n_regions: 36,
            },
            Captions {
                words: &self.words,
                global: &self.cap_global,
                lengths: &self.lengths,
            },
        )
    }
}
