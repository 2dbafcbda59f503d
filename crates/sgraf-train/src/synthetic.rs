//! A synthetic SCAN precomp dataset, for the demo and the learning test:
//! no real images. Each image "contains" two or three concepts out of a
//! small set; each concept has a random prototype feature vector, and a few
//! of the image's 36 regions are that prototype plus noise (the others are
//! noise). The five captions of an image name its concepts in varied
//! sentences, so a model can only match them by learning which words go
//! with which region features.

use std::path::Path;

use sgraf_core::rng::SplitMix64;

use crate::error::io;
use crate::Result;

/// The concepts and the words that name them.
pub const CONCEPTS: [&str; 12] = [
    "dog", "cat", "horse", "bird", "car", "bike", "boat", "tree", "ball", "hat", "guitar", "bench",
];
const COLORS: [&str; 6] = ["red", "blue", "green", "black", "white", "brown"];
const TEMPLATES: [&str; 5] = [
    "a {0} next to a {1}.",
    "there is a {1} and a {0} in this picture",
    "a photo of a {0} with a {1}",
    "the {0} is near the {1}.",
    "a {c} {0} and a {1} outside.",
];

/// Shape of the generated data.
#[derive(Clone, Copy, Debug)]
pub struct Synthetic {
    pub train_images: usize,
    pub dev_images: usize,
    pub test_images: usize,
    pub regions: usize,
    pub img_dim: usize,
    pub seed: u64,
}

impl Default for Synthetic {
    fn default() -> Self {
        Self {
            train_images: 400,
            dev_images: 100,
            test_images: 100,
            regions: 36,
            img_dim: 64,
            seed: 1,
        }
    }
}

impl Synthetic {
    /// Writes `{train,dev,test}_ims.npy` and `{...}_caps.txt` into `dir`.
    /// Returns, per split, each image's concept names (for display).
    pub fn write(&self, dir: &Path) -> Result<Vec<Vec<Vec<&'static str>>>> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut rng = SplitMix64(self.seed);
        // Zero-mean prototypes: well apart in cosine, so concepts are separable.
        let prototypes: Vec<Vec<f32>> = CONCEPTS
            .iter()
            .map(|_| (0..self.img_dim).map(|_| rng.normal()).collect())
            .collect();
        let mut all = Vec::new();
        for (split, n) in [
            ("train", self.train_images),
            ("dev", self.dev_images),
            ("test", self.test_images),
        ] {
            let mut feats = Vec::with_capacity(n * self.regions * self.img_dim);
            let mut captions = Vec::with_capacity(n * 5);
            let mut contents = Vec::with_capacity(n);
            for _ in 0..n {
                let k = 2;
                let order = rng.permutation(CONCEPTS.len());
                let present = &order[..k];
                // Four regions per concept, the rest background.
                let mut owner: Vec<Option<usize>> = vec![None; self.regions];
                for (i, &c) in present.iter().enumerate() {
                    for r in 0..4 {
                        owner[(i * 4 + r) % self.regions] = Some(c);
                    }
                }
                let slots = rng.permutation(self.regions);
                for &slot in &slots {
                    match owner[slot] {
                        Some(c) => {
                            for p in &prototypes[c] {
                                feats.push(p + rng.normal() * 0.3);
                            }
                        }
                        None => {
                            for _ in 0..self.img_dim {
                                feats.push((rng.normal() * 0.3).abs());
                            }
                        }
                    }
                }
                for t in TEMPLATES {
                    let (a, b) = (present[rng.below(k)], present[rng.below(k)]);
                    let b = if a == b {
                        present[(present.iter().position(|&x| x == a).unwrap() + 1) % k]
                    } else {
                        b
                    };
                    let line = t
                        .replace("{0}", CONCEPTS[a])
                        .replace("{1}", CONCEPTS[b])
                        .replace("{c}", COLORS[rng.below(COLORS.len())]);
                    captions.push(line);
                }
                contents.push(present.iter().map(|&c| CONCEPTS[c]).collect());
            }
            sgraf_data::npy::write_f32(
                &dir.join(format!("{split}_ims.npy")),
                &[n, self.regions, self.img_dim],
                &feats,
            )?;
            let caps = dir.join(format!("{split}_caps.txt"));
            std::fs::write(&caps, captions.join("\n") + "\n").map_err(io(&caps))?;
            all.push(contents);
        }
        Ok(all)
    }
}

/// Training options for a tiny model that learns the synthetic dataset in
/// `data` within a few epochs (the demo's and the learning test's).
pub fn tiny_options(data: &Path, module: sgraf_core::Module, epochs: usize) -> crate::TrainOptions {
    crate::TrainOptions {
        data: data.to_path_buf(),
        module: Some(module),
        batch_size: 16,
        epochs: Some(epochs),
        learning_rate: 1e-3,
        embed_size: 32,
        sim_dim: 16,
        word_dim: 16,
        dropout: 0.0,
        vocab_threshold: 1,
        seed: 5,
        ..crate::TrainOptions::default()
    }
}
