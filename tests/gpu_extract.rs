//! `extract --device cuda` against the CPU: a full-size detector with
//! seeded random weights (tests/common/detector.rs; no weights carried),
//! loaded through `sgraf::load_detector` on CUDA GPU 0 (what `sgraf-cli
//! extract --device cuda` does) and on the CPU, on generated photos of
//! typical sizes. Prints photos/s on each, the ratio, how many photos kept
//! the same boxes and the largest feature difference; fails unless every
//! photo kept the CPU's boxes and features.
//!
//! ```sh
//! # a GPU machine (`cargo xtask cuda-build` builds it; the GPU check's bundle runs it):
//! cargo test --release -p sgraf --features cuda --test gpu_extract -- --ignored --nocapture
//! # anywhere: candle's operations (what CUDA runs) on the CPU stand in for the GPU:
//! SGRAF_EXTRACT_DEVICE=cpu cargo test --release -p sgraf --test gpu_extract -- --ignored --nocapture
//! ```
//!
//! Without a CUDA device the ignored test fails, saying so; it never
//! passes or skips. Time budgets: `SGRAF_BENCH_GPU_SECONDS` (default 15) of
//! rounds over the photos on the device, `SGRAF_BENCH_CPU_SECONDS`
//! (default 10) on the CPU, one round at least each, after one warm-up
//! photo; `SGRAF_EXTRACT_PHOTOS` photos (default 4).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::detector::{write_photos, write_random_detector, PHOTO_SIZES};
use sgraf::{BgrImage, Detector, Device, Regions};
use sgraf_vision::{regions_difference, BoxPolicy, DetectorConfig};

/// The largest feature difference accepted, relative to the CPU features'
/// scale (max(1, max |feature|)). Both sides compute in float32 (candle
/// leaves cuBLAS's TF32 off: CUBLAS_COMPUTE_32F), so they differ only in
/// the order of the sums: the CPU engine and PyTorch's CPU, two unrelated
/// float32 implementations of this full-size network, differ by 6.3e-7
/// (bench/results/extract-latest.json). 1e-4 leaves a hundredfold margin
/// for GPU reduction orders, and stays under what a real error gives: a
/// wrong operation or layout moves features by O(1), and TF32 products
/// (10-bit mantissa) by 1e-3 or more after 30-odd blocks.
const FEATURE_TOLERANCE: f32 = 1e-4;

/// The weights' seed (any; fixed so that a failure can be rerun).
const SEED: u64 = 11;

/// Regions kept per photo: the released fixed-36 model's policy.
const BOXES: usize = 36;

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?}: expected a whole number")),
        Err(_) => default,
    }
}

/// The CPU's threads: rayon's global pool (`RAYON_NUM_THREADS`, else every
/// core), which the detector's CPU path runs on.
fn cpu_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn cpu_name() -> String {
    sgraf_testkit::cpu_name().unwrap_or_else(|| "unknown CPU".into())
}

/// What one detector did: photos/s over the timed rounds, and the regions
/// of the first round (one per photo).
struct Timed {
    photos: usize,
    secs: f64,
    regions: Vec<Regions>,
}

impl Timed {
    fn rate(&self) -> f64 {
        self.photos as f64 / self.secs
    }
}

/// One warm-up extraction (the first photo: kernels loaded, buffers
/// allocated), then rounds over `photos` until `budget` is spent, one
/// round at least. Each extraction reads its file, as `extract` does.
fn timed(det: &Detector, photos: &[PathBuf], budget: Duration) -> Timed {
    let policy = Some(BoxPolicy::fixed(BOXES));
    let extract = |p: &Path| {
        det.extract(&BgrImage::open(p).unwrap(), policy)
            .unwrap_or_else(|e| panic!("extracting {} on {:?}: {e}", p.display(), det.device()))
    };
    extract(&photos[0]);
    let start = Instant::now();
    let mut regions = Vec::new();
    let mut done = 0;
    loop {
        for p in photos {
            let r = extract(p);
            if regions.len() < photos.len() {
                regions.push(r);
            }
            done += 1;
        }
        if start.elapsed() >= budget {
            break;
        }
    }
    Timed {
        photos: done,
        secs: start.elapsed().as_secs_f64(),
        regions,
    }
}

/// Photos whose boxes equal the reference's (as `cargo xtask bench extract`
/// compares them), and the largest relative feature difference among those.
fn compare(got: &[Regions], reference: &[Regions]) -> (usize, f32) {
    let mut same = 0;
    let mut worst = 0f32;
    for (g, r) in got.iter().zip(reference) {
        if let Some(d) = regions_difference(&g.boxes, &g.features, &r.boxes, &r.features) {
            same += 1;
            if d.is_nan() || d > worst {
                worst = d; // a NaN stays (f32::max would drop it)
            }
        }
    }
    (same, worst)
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The detector of shape `cfg` on `spec` ("cuda", "cuda:N", or "cpu": then
/// candle's operations on the CPU, the code a GPU runs) against the same
/// folder on the CPU with its own path and every core; both through
/// `sgraf::load_detector`. Prints as it goes; panics on a difference.
fn device_against_cpu(cfg: &DetectorConfig, spec: &str, n_photos: usize, budgets: [Duration; 2]) {
    // The device first: without one, fail before any work.
    let device = sgraf::parse_device(spec).unwrap_or_else(|e| {
        panic!(
            "no CUDA device for `{spec}`: {e}. This check passes only on an NVIDIA GPU, \
             in a build with candle's CUDA backend (`--features cuda`), with libcuda.so.1 \
             and CUDA 13's libcublas, libcublasLt, libcurand and libcudart"
        )
    });
    let tmp = TempDir(std::env::temp_dir().join(format!(
        "sgraf-gpu-extract-{}-{}",
        std::process::id(),
        cfg.feature_dim()
    )));
    let folder = tmp.0.join("detector");
    let t = Instant::now();
    write_random_detector(&folder, cfg, SEED);
    let photos = write_photos(&tmp.0.join("photos"), n_photos);
    let sizes: Vec<String> = PHOTO_SIZES
        .iter()
        .take(n_photos)
        .map(|(h, w)| format!("{h}x{w}"))
        .collect();
    println!(
        "random detector (seed {SEED}, blocks {:?}, {} classes, {} attributes) and {n_photos} photos ({}) written in {:.1} s",
        cfg.blocks,
        cfg.num_classes,
        cfg.num_attributes,
        sizes.join(", "),
        t.elapsed().as_secs_f64()
    );
    let spec_dir = folder.to_str().expect("a UTF-8 temporary folder");
    let on_device = sgraf::load_detector(spec_dir, &device).unwrap();
    let on_device = match &device {
        Device::Cpu => on_device.with_cpu_kernels(false).unwrap(),
        _ => {
            assert!(
                on_device.device().is_cuda(),
                "`{spec}` opened {device}, whose detector runs on the CPU: this check needs \
                 candle's CUDA backend (`--features cuda`, not `cuda-kernels`)"
            );
            on_device
        }
    };
    let on_cpu = sgraf::load_detector(spec_dir, &Device::Cpu).unwrap();
    let name = match &device {
        Device::Cpu => "candle's operations on the CPU".to_string(),
        d => match std::env::var("SGRAF_GPU_NAME") {
            Ok(gpu) if !gpu.is_empty() => format!("{d} ({gpu})"),
            _ => d.to_string(),
        },
    };

    let dev = timed(&on_device, &photos, budgets[0]);
    println!(
        "{name}: {:.3} photos/s ({} photos in {:.2} s after one warm-up)",
        dev.rate(),
        dev.photos,
        dev.secs
    );
    let cpu = timed(&on_cpu, &photos, budgets[1]);
    let threads = cpu_threads();
    println!(
        "CPU ({}, {threads} threads): {:.3} photos/s ({} photos in {:.2} s after one warm-up)",
        cpu_name(),
        cpu.rate(),
        cpu.photos,
        cpu.secs
    );
    println!(
        "{name} / CPU ({threads} threads): {:.2}x",
        dev.rate() / cpu.rate()
    );
    let (same, diff) = compare(&dev.regions, &cpu.regions);
    println!(
        "same boxes: {same}/{n_photos}; max relative feature difference {diff:.2e} (tolerance {FEATURE_TOLERANCE:.0e})"
    );
    assert_eq!(
        same,
        n_photos,
        "{name} kept other boxes than the CPU on {} of {n_photos} photos",
        n_photos - same
    );
    assert!(
        diff <= FEATURE_TOLERANCE,
        "{name}'s features differ from the CPU's by {diff:.2e} of their scale (tolerance {FEATURE_TOLERANCE:.0e})"
    );
}

/// The released detector's shape (ResNet-101, Visual Genome's 1600 + 1
/// classes and 400 + 1 attributes) and test-time settings.
fn full_size() -> DetectorConfig {
    DetectorConfig {
        boxes: BoxPolicy::fixed(BOXES),
        ..DetectorConfig::default()
    }
}

/// On the GPU: `SGRAF_EXTRACT_DEVICE` (default `cuda`, GPU 0) against the CPU.
#[test]
#[ignore = "needs an NVIDIA GPU and `--features cuda`: run with --ignored (see the module's doc)"]
fn extract_cuda_vs_cpu() {
    let spec = std::env::var("SGRAF_EXTRACT_DEVICE").unwrap_or_else(|_| "cuda".into());
    let budgets = [
        Duration::from_secs(env_usize("SGRAF_BENCH_GPU_SECONDS", 15) as u64),
        Duration::from_secs(env_usize("SGRAF_BENCH_CPU_SECONDS", 10) as u64),
    ];
    let n = env_usize("SGRAF_EXTRACT_PHOTOS", 4).max(1);
    device_against_cpu(&full_size(), &spec, n, budgets);
}

/// The same check, comparison and reporting in every build, on the tiny
/// detector's shape (tests/fixtures/vision): candle's operations on the
/// CPU, the code a GPU runs, against the CPU path.
#[test]
fn extract_candle_ops_vs_cpu_path_tiny() {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixtures().join("vision/config.json")).unwrap(),
    )
    .unwrap();
    let mut cfg: DetectorConfig = serde_json::from_value(meta["config"].clone()).unwrap();
    cfg.boxes = BoxPolicy::fixed(BOXES);
    device_against_cpu(&cfg, "cpu", 4, [Duration::ZERO; 2]);
}

/// Without a device (this build has no CUDA, or the machine no GPU), the
/// GPU check fails with the reason; it never passes.
#[cfg(not(feature = "cuda"))]
#[test]
fn extract_cuda_fails_without_cuda() {
    let err = std::panic::catch_unwind(|| {
        device_against_cpu(&full_size(), "cuda", 1, [Duration::ZERO; 2])
    })
    .expect_err("the CUDA check passed in a build without CUDA");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.starts_with("no CUDA device for `cuda`"), "{msg}");
}
