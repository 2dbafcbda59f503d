//! A detector folder with seeded random weights of sane magnitudes, and
//! generated photos, for checks that carry no weights: the scheme of
//! tests/reference/bua_ref.py's `randomize_` and make_vision_fixtures.py's
//! `photo`, drawn from our own generator (so not the same numbers).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use sgraf_core::rng::SplitMix64;
use sgraf_vision::boxes::cell_anchors;
use sgraf_vision::{weight_shapes, BgrImage, DetectorConfig, ANCHORS};

/// Typical photo sizes of Flickr30K / COCO (landscape and portrait), as
/// tests/reference/bench_extract.py uses them.
pub const PHOTO_SIZES: [(usize, usize); 4] = [(375, 500), (500, 333), (480, 640), (427, 640)];

/// Writes `config.json` and `model.safetensors` of a detector of shape
/// `cfg` into `dir` (what `Detector::from_folder` and `sgraf::load_detector`
/// read), every tensor of `weight_shapes(cfg)` drawn as `randomize_` draws
/// it, so that activations stay O(1) through the 30-odd blocks:
/// convolutions N(0, 1/fan_in), their biases N(0, 0.01); frozen BatchNorm
/// scale U(0.5, 1), shift and mean N(0, 0.01), variance U(0.5, 1.5);
/// linear layers N(0, 1/in), biases N(0, 0.01); the class embedding
/// N(0, 0.25); the RPN's box deltas a tenth of the rest, so that proposals
/// stay boxes of the anchors' scale. The cell anchors are Caffe's.
pub fn write_random_detector(dir: &Path, cfg: &DetectorConfig, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = SplitMix64(seed);
    let mut tensors = HashMap::new();
    for (name, shape) in weight_shapes(cfg) {
        let n: usize = shape.iter().product();
        let mut normal = |std: f32| (0..n).map(|_| rng.normal() * std).collect::<Vec<f32>>();
        let data = if name.ends_with(".norm.weight") {
            (0..n).map(|_| rng.uniform(0.5, 1.0)).collect()
        } else if name.ends_with(".norm.running_var") {
            (0..n).map(|_| rng.uniform(0.5, 1.5)).collect()
        } else if name.ends_with(".bias") || name.ends_with(".norm.running_mean") {
            normal(0.1)
        } else if name.ends_with("cls_embed.weight") {
            normal(0.5)
        } else if shape.len() == 4 {
            let fan = (shape[1] * shape[2] * shape[3]) as f32;
            let std = (1.0 / fan).sqrt();
            let deltas = name.contains("anchor_deltas");
            normal(if deltas { 0.1 * std } else { std })
        } else {
            assert_eq!(shape.len(), 2, "{name}: expected a linear layer's weight");
            normal(1.0 / (shape[1] as f32).sqrt())
        };
        let t = Tensor::from_vec(data, shape.as_slice(), &Device::Cpu).unwrap();
        tensors.insert(name, t);
    }
    let anchors: Vec<f32> = cell_anchors(cfg.stride, &cfg.anchor_ratios, &cfg.anchor_scales)
        .into_iter()
        .flatten()
        .collect();
    let a = cfg.num_anchors();
    tensors.insert(
        ANCHORS.to_string(),
        Tensor::from_vec(anchors, (a, 4), &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(cfg).unwrap(),
    )
    .unwrap();
}

/// A smooth `h x w` photo with six solid rectangles (edges for the RPN),
/// as make_vision_fixtures.py's `photo` draws one.
pub fn photo(h: usize, w: usize, seed: u64) -> BgrImage {
    let mut rng = SplitMix64(seed);
    let mut im = vec![0f32; h * w * 3];
    for ch in 0..3 {
        let (fx, fy, ph) = (
            rng.uniform(0.01, 0.06),
            rng.uniform(0.01, 0.06),
            rng.uniform(0.0, 6.0),
        );
        for y in 0..h {
            for x in 0..w {
                im[(y * w + x) * 3 + ch] =
                    128.0 + 90.0 * (fx * x as f32 + fy * y as f32 + ph).sin();
            }
        }
    }
    for _ in 0..6 {
        let (x0, y0) = (rng.below(w - 10), rng.below(h - 10));
        let (x1, y1) = (x0 + 8 + rng.below(w / 2 - 8), y0 + 8 + rng.below(h / 2 - 8));
        let colour = [0; 3].map(|_| rng.uniform(0.0, 255.0));
        for y in y0..y1.min(h) {
            for x in x0..x1.min(w) {
                im[(y * w + x) * 3..][..3].copy_from_slice(&colour);
            }
        }
    }
    BgrImage {
        height: h,
        width: w,
        data: im
            .iter()
            .map(|v| v.round().clamp(0.0, 255.0) as u8)
            .collect(),
    }
}

/// `n` photos of [`PHOTO_SIZES`] in turn, written into `dir` as PNG files
/// (lossless: `BgrImage::open` reads back the pixels drawn); their paths.
pub fn write_photos(dir: &Path, n: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let (h, w) = PHOTO_SIZES[i % PHOTO_SIZES.len()];
            let img = photo(h, w, 100 + i as u64);
            // BGR -> RGB for the PNG.
            let rgb: Vec<u8> = img
                .data
                .chunks(3)
                .flat_map(|p| [p[2], p[1], p[0]])
                .collect();
            let path = dir.join(format!("photo{i}.png"));
            image::RgbImage::from_raw(w as u32, h as u32, rgb)
                .unwrap()
                .save(&path)
                .unwrap();
            path
        })
        .collect()
}
