//! `cargo xtask bench extract`: region-feature extraction (read the photo,
//! detect, select 36 regions) against the PyTorch reference, same photos,
//! same random full-size detector, same number of threads, same run.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use sgraf_vision::{BgrImage, BoxPolicy, Detector};

pub fn bench_extract(images: usize, out: Option<PathBuf>, repeat: usize) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let dir = std::env::temp_dir().join(format!("sgraf-bench-extract-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let script = crate::root().join("tests/reference/bench_extract.py");
    eprintln!("PyTorch reference: full-size random detector, {images} photos ...");
    let py = Command::new("python3")
        .arg(&script)
        .args(["--dir", &dir.display().to_string()])
        .args(["--images", &images.to_string()])
        .args(["--threads", &threads.to_string()])
        .args(["--repeat", &repeat.to_string()])
        .env("OMP_NUM_THREADS", threads.to_string())
        .output()
        .with_context(|| format!("running python3 {}", script.display()))?;
    if !py.status.success() {
        bail!(
            "the PyTorch reference failed (it needs torch, torchvision, numpy, safetensors and opencv-python-headless):\n{}",
            String::from_utf8_lossy(&py.stderr)
        );
    }
    let r: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&py.stdout)
            .lines()
            .last()
            .unwrap_or("{}"),
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
        let gb: Vec<f32> = got.boxes.iter().flatten().copied().collect();
        if gb.len() == b.len() && gb.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-2) {
            same_boxes += 1;
            let scale = f.iter().fold(1f32, |m, v| m.max(v.abs()));
            let d = got
                .features
                .iter()
                .zip(&f)
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
                / scale;
            diff = diff.max(d);
        }
    }
    let torch_rate = r["images_per_second"].as_f64().unwrap_or(0.0);
    let rate = images as f64 / secs;
    println!(
        "{:>8} {:>16} {:>16} {:>7} {:>12} {:>16}",
        "photos", "torch images/s", "sgraf images/s", "ratio", "same boxes", "max rel. diff"
    );
    println!(
        "{:>8} {:>16.3} {:>16.3} {:>6.2}x {:>12} {:>16.2e}",
        images,
        torch_rate,
        rate,
        rate / torch_rate,
        format!("{same_boxes}/{images}"),
        diff
    );
    let report = serde_json::json!({
        "task": "extract", "photos": images, "repeat": repeat, "threads": threads,
        "torch_images_per_second": torch_rate, "sgraf_images_per_second": rate,
        "ratio": rate / torch_rate, "same_boxes": same_boxes, "max_rel_diff": diff,
        "torch": r["torch"], "commit": crate::bench::git_head(), "cpu": crate::bench::cpu_name(),
    });
    let out = out.unwrap_or_else(|| crate::root().join("bench/results/extract-latest.json"));
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("wrote {}", out.display());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
