//! `cargo xtask bench extract`: region-feature extraction (read the photo,
//! detect, select 36 regions) against the PyTorch reference, same photos,
//! same random full-size detector, same number of threads, same run.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use candle_core::Device;
use sgraf_vision::boxes::BBox;
use sgraf_vision::{regions_difference, BgrImage, BoxPolicy, Detector, DetectorConfig};

pub fn bench_extract(images: usize, out: Option<PathBuf>, repeat: usize) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let dir = std::env::temp_dir().join(format!("sgraf-bench-extract-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    eprintln!("PyTorch reference: full-size random detector, {images} photos ...");
    let args = [
        "--dir".to_string(),
        dir.display().to_string(),
        "--images".into(),
        images.to_string(),
        "--repeat".into(),
        repeat.to_string(),
    ];
    let r = crate::bench::run_reference(
        "bench_extract.py",
        &args,
        threads,
        "torch, torchvision, numpy, safetensors and opencv-python-headless",
    )?;
    let det_dir = dir.join("detector");
    sgraf_convert::convert_detector(&dir.join("bua_full.pth"), &det_dir, None, true)?;
    let det = Detector::from_folder(&det_dir, &Device::Cpu)?;
    let photos: Vec<PathBuf> = (0..images)
        .map(|i| dir.join(format!("photos/photo{i}.png")))
        .collect();
    let policy = BoxPolicy::fixed(36);
    det.extract(&BgrImage::open(&photos[0])?, Some(policy))?; // warm-up
    let mut secs = f64::INFINITY;
    let mut results = Vec::new();
    for _ in 0..repeat.max(1) {
        results.clear();
        let start = Instant::now();
        for p in &photos {
            results.push(det.extract(&BgrImage::open(p)?, Some(policy))?);
        }
        secs = secs.min(start.elapsed().as_secs_f64());
    }
    // Same regions, same features: the largest difference relative to the
    // features' scale, and how many photos selected different boxes.
    let want = candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu)?;
    let (mut diff, mut same_boxes) = (0f32, 0);
    for (i, got) in results.iter().enumerate() {
        let f: Vec<f32> = want[&format!("features{i}")].flatten_all()?.to_vec1()?;
        let b: Vec<f32> = want[&format!("boxes{i}")].flatten_all()?.to_vec1()?;
        let b: Vec<BBox> = b.chunks(4).map(|c| [c[0], c[1], c[2], c[3]]).collect();
        if let Some(d) = regions_difference(&got.boxes, &got.features, &b, &f) {
            same_boxes += 1;
            if d.is_nan() || d > diff {
                diff = d; // a NaN stays (f32::max would drop it)
            }
        }
    }
    let torch_rate = r["images_per_second"].as_f64().unwrap_or(0.0);
    let rate = images as f64 / secs;
    // The work done, from each photo's input size and proposal count (the
    // reference's, which are ours when the boxes agree).
    let cfg = det.config();
    let mut macs = 0f64;
    let hw = r["input_hw"].as_array().cloned().unwrap_or_default();
    let props = r["proposals"].as_array().cloned().unwrap_or_default();
    for (hw, n) in hw.iter().zip(&props) {
        let (h, w) = (hw[0].as_u64().unwrap_or(0), hw[1].as_u64().unwrap_or(0));
        macs += multiply_adds(
            cfg,
            h as usize,
            w as usize,
            n.as_u64().unwrap_or(0) as usize,
        );
    }
    let gflops = 2.0 * macs / secs / 1e9;
    let sgemm = r["sgemm_gflops"].as_f64().unwrap_or(0.0);
    println!(
        "{:>8} {:>16} {:>16} {:>7} {:>12} {:>16} {:>9}",
        "photos",
        "torch images/s",
        "sgraf images/s",
        "ratio",
        "same boxes",
        "max rel. diff",
        "GFLOP/s"
    );
    println!(
        "{:>8} {:>16.3} {:>16.3} {:>6.2}x {:>12} {:>16.2e} {:>9.1}",
        images,
        torch_rate,
        rate,
        rate / torch_rate,
        format!("{same_boxes}/{images}"),
        diff,
        gflops
    );
    println!(
        "{:.0} G multiply-adds per photo on average; measured sgemm: {sgemm:.0} GFLOP/s on {threads} threads (sgraf reaches {:.0}%)",
        macs / images as f64 / 1e9,
        100.0 * gflops / sgemm
    );
    let report = serde_json::json!({
        "task": "extract", "photos": images, "repeat": repeat, "threads": threads,
        "torch_images_per_second": torch_rate, "sgraf_images_per_second": rate,
        "ratio": rate / torch_rate, "same_boxes": same_boxes, "max_rel_diff": diff,
        "gflops": gflops, "sgemm_gflops": sgemm, "multiply_adds_per_photo": macs / images as f64,
        "torch": r["torch"], "commit": crate::bench::git_head(), "cpu": crate::bench::cpu_name(),
    });
    let out = out.unwrap_or_else(|| crate::root().join("bench/results/extract-latest.json"));
    crate::write_json(&out, &report)?;
    println!("wrote {}", out.display());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Multiply-adds of one photo's detection: every convolution of the trunk and
/// the RPN on an `h x w` input, res5 on `regions` pooled regions, and the
/// class and attribute heads (the unused box regression is not computed).
pub fn multiply_adds(cfg: &DetectorConfig, h: usize, w: usize, regions: usize) -> f64 {
    let conv = |cin: usize, cout: usize, k: usize, oh: usize, ow: usize| {
        (cin * cout * k * k) as f64 * (oh * ow) as f64
    };
    // One bottleneck block on an `i x j` input: (multiply-adds, output size).
    let block = |cin: usize, cout: usize, b: usize, s: usize, (i, j): (usize, usize)| {
        let (oh, ow) = ((i - 1) / s + 1, (j - 1) / s + 1);
        let mut m = conv(cin, b, 1, oh, ow) + conv(b, b, 3, oh, ow) + conv(b, cout, 1, oh, ow);
        if cin != cout {
            m += conv(cin, cout, 1, oh, ow);
        }
        (m, (oh, ow))
    };
    let (sh, sw) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
    let mut macs = conv(3, cfg.stem, 7, sh, sw);
    let pool = |n: usize| n.saturating_sub(3).div_ceil(2) + 1;
    let mut size = (pool(sh), pool(sw));
    let (mut cin, mut cout, mut b) = (cfg.stem, cfg.res2_out, cfg.bottleneck);
    for (i, &n) in cfg.blocks.iter().enumerate() {
        for k in 0..n {
            let s = if k == 0 && i > 0 { 2 } else { 1 };
            let (m, out) = block(if k == 0 { cin } else { cout }, cout, b, s, size);
            macs += m;
            size = out;
        }
        (cin, cout, b) = (cout, cout * 2, b * 2);
    }
    let (c4, c5) = (cfg.res4_channels(), cfg.feature_dim());
    macs += conv(c4, cfg.rpn_channels, 3, size.0, size.1)
        + conv(cfg.rpn_channels, 6 * cfg.num_anchors(), 1, size.0, size.1);
    let mut res5 = 0.0;
    let mut rsize = (cfg.pool, cfg.pool);
    for k in 0..3 {
        let s = if k == 0 { cfg.res5_first_stride() } else { 1 };
        let (m, out) = block(if k == 0 { c4 } else { c5 }, c5, c5 / 4, s, rsize);
        res5 += m;
        rsize = out;
    }
    let mut head = (c5 * cfg.num_classes) as f64;
    if cfg.num_attributes > 0 {
        head +=
            ((c5 + cfg.attr_embed) * cfg.attr_hidden + cfg.attr_hidden * cfg.num_attributes) as f64;
    }
    macs + regions as f64 * (res5 + head)
}
