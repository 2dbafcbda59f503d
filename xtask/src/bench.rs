//! `cargo xtask bench`: sgraf's CPU scoring against the PyTorch reference,
//! driven as the published evaluation drives it, in the same run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use sgraf_core::cost::{engine_macs_per_pair, published_flops_per_pair};
use sgraf_core::{Module, SgrafModel};

pub struct Case {
    pub module: &'static str,
    pub images: usize,
    pub captions: usize,
}

/// Runs `tests/reference/SCRIPT ARGS --threads T` with that many threads;
/// returns the JSON object of its last line. `needs` names its packages.
pub fn run_reference(
    script: &str,
    args: &[String],
    threads: usize,
    needs: &str,
) -> Result<serde_json::Value> {
    let script = crate::root().join("tests/reference").join(script);
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .args(["--threads", &threads.to_string()])
        .env("OMP_NUM_THREADS", threads.to_string())
        .output()
        .with_context(|| format!("running python3 {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "the PyTorch reference failed (it needs {needs}):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(serde_json::from_str(text.lines().last().unwrap_or("{}"))?)
}

fn reference(dir: &Path, case: &Case, threads: usize, repeat: usize) -> Result<serde_json::Value> {
    let args = [
        "--dir".to_string(),
        dir.display().to_string(),
        "--images".into(),
        case.images.to_string(),
        "--captions".into(),
        case.captions.to_string(),
        "--module".into(),
        case.module.into(),
        "--repeat".into(),
        repeat.to_string(),
    ];
    run_reference(
        "bench_reference.py",
        &args,
        threads,
        "torch, numpy and safetensors",
    )
}

/// Times sgraf on the inputs the reference wrote (best of `repeat`);
/// returns (seconds, max abs diff).
fn ours(dir: &Path, case: &Case, repeat: usize) -> Result<(f64, f32)> {
    let dev = Device::Cpu;
    let model = SgrafModel::from_folder(
        dir.join(case.module.to_lowercase()),
        &sgraf_core::Device::Cpu,
    )?;
    let inputs = candle_core::safetensors::load(
        dir.join(format!("{}_inputs.safetensors", case.module.to_lowercase())),
        &dev,
    )?;
    let lengths: Vec<usize> = inputs["lengths"]
        .to_vec1::<i64>()?
        .into_iter()
        .map(|n| n as usize)
        .collect();
    let img = model.encode_images(&inputs["images"])?;
    let cap = model.encode_captions(&inputs["ids"], &lengths)?;
    // Warm-up on a slice, then the timed run: the similarity head only, as the reference.
    model.similarity(&img.narrow(0, 0, 2)?, &cap.narrow(0, 0, 2)?, &lengths[..2])?;
    let mut secs = f64::INFINITY;
    let mut scores = None;
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        scores = Some(model.similarity(&img, &cap, &lengths)?);
        secs = secs.min(start.elapsed().as_secs_f64());
    }
    let scores = scores.expect("at least one run");
    let diff: f32 = (scores - &inputs["scores"])?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar()?;
    Ok((secs, diff))
}

pub fn bench(quick: bool, out: Option<PathBuf>, repeat: Option<usize>) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let case = |module, images, captions| Case {
        module,
        images,
        captions,
    };
    let mut cases = vec![case("SGR", 100, 100), case("SAF", 100, 100)];
    if !quick {
        cases.extend([case("SGR", 500, 2500), case("SAF", 500, 2500)]);
    }
    let dir = std::env::temp_dir().join(format!("sgraf-bench-{}", std::process::id()));
    let mut rows = Vec::new();
    println!(
        "{:<4} {:>12} {:>14} {:>14} {:>7} {:>10} {:>9} {:>9}",
        "", "pairs", "torch pairs/s", "sgraf pairs/s", "ratio", "max diff", "GFLOP/s", "real"
    );
    for case in &cases {
        let pairs = case.images * case.captions;
        let repeat = repeat.unwrap_or(if pairs <= 10_000 { 3 } else { 1 });
        let r = reference(&dir, case, threads, repeat)?;
        let (secs, diff) = ours(&dir, case, repeat)?;
        let pairs = pairs as f64;
        let torch_rate = r["pairs_per_second"].as_f64().unwrap_or(0.0);
        let rate = pairs / secs;
        let module = if case.module == "SGR" {
            Module::Sgr
        } else {
            Module::Saf
        };
        let gflops = rate * published_flops_per_pair(module, 14) / 1e9;
        let real = rate * 2.0 * engine_macs_per_pair(module, 14) / 1e9;
        println!(
            "{:<4} {:>12} {:>14.0} {:>14.0} {:>6.2}x {:>10.2e} {:>9.1} {:>9.1}",
            case.module,
            pairs as u64,
            torch_rate,
            rate,
            rate / torch_rate,
            diff,
            gflops,
            real
        );
        rows.push(serde_json::json!({
            "module": case.module, "images": case.images, "captions": case.captions, "words": 14,
            "torch_pairs_per_second": torch_rate, "sgraf_pairs_per_second": rate,
            "ratio": rate / torch_rate, "max_abs_diff": diff, "sgraf_gflops": gflops,
            "sgraf_real_gflops": real,
            "sgemm_gflops": r["sgemm_gflops"], "threads": threads, "torch": r["torch"],
            "repeat": repeat,
        }));
    }
    let sgemm = rows
        .first()
        .and_then(|r| r["sgemm_gflops"].as_f64())
        .unwrap_or(0.0);
    println!("measured sgemm: {sgemm:.0} GFLOP/s on {threads} threads (GFLOP/s above: the published model's flops per pair / time; real: the multiply-adds sgraf's head does after its exact rewrites, x2 / time)");
    let _ = std::fs::remove_dir_all(&dir);
    let out = out.unwrap_or_else(|| crate::root().join("bench/results/cpu-latest.json"));
    let report = serde_json::json!({
        "cases": rows, "sgemm_gflops": sgemm, "commit": git_head(), "cpu": cpu_name(),
    });
    crate::write_json(&out, &report)?;
    println!("wrote {}", out.display());
    Ok(())
}

pub fn cpu_name() -> String {
    sgraf_testkit::cpu_name().unwrap_or_default()
}

pub fn git_head() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
