//! `cargo xtask bench python`: what calling `score` through Python costs.
//! Two random full-size models (SGR + SAF, the released shapes), 100 images
//! x 500 captions: `sgraf::Sgraf::score` timed in this process, then
//! `sgraf.Sgraf.score` timed by bench/python_overhead.py in `$PYTHON`
//! (default python3, with the `sgraf` package installed: build it in the
//! profile this xtask runs, `maturin develop` for the dev profile), the best
//! of `repeat` each; both score matrices must be equal.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sgraf_core::Module;

const IMAGES: usize = 100;
const CAPTIONS: usize = 500;

pub fn bench_python(out: Option<PathBuf>, repeat: usize) -> Result<()> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let work = std::env::temp_dir().join(format!("sgraf-bench-python-{}", std::process::id()));
    let (sgr, saf) = (work.join("sgr"), work.join("saf"));
    crate::bench_rank::random_model(&sgr, Module::Sgr, 1)?;
    crate::bench_rank::random_model(&saf, Module::Saf, 2)?;

    let (regions, dim) = (36usize, 2048usize);
    let mut rng = sgraf_core::rng::SplitMix64(7);
    let features: Vec<f32> = (0..IMAGES * regions * dim)
        .map(|_| rng.uniform(0.0, 2.0))
        .collect();
    sgraf_data::npy::write_f32(
        &work.join("features.npy"),
        &[IMAGES, regions, dim],
        &features,
    )?;
    // Captions of 8 to 15 words of the random models' vocabulary.
    let captions: Vec<String> = (0..CAPTIONS)
        .map(|_| {
            let words = 8 + (rng.uniform(0.0, 8.0) as usize).min(7);
            (0..words)
                .map(|_| format!("w{}", (rng.uniform(0.0, 8477.0) as usize).min(8476)))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    std::fs::write(work.join("captions.txt"), captions.join("\n") + "\n")?;

    let models = sgraf::Sgraf::load(
        &[&sgr, &saf].map(|p| p.display().to_string()),
        &sgraf::Device::Cpu,
    )?;
    let mut rust_secs = f64::INFINITY;
    let mut scores = Vec::new();
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        scores = models.score(&features, &captions)?.values;
        rust_secs = rust_secs.min(start.elapsed().as_secs_f64());
    }
    sgraf_data::npy::write_f32(&work.join("rust_scores.npy"), &[IMAGES, CAPTIONS], &scores)?;
    drop(models);

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench/python_overhead.py");
    let run = Command::new(&python)
        .arg(&script)
        .arg(&work)
        .arg("--repeat")
        .arg(repeat.max(1).to_string())
        .output()
        .with_context(|| format!("running {python} {}", script.display()))?;
    if !run.status.success() {
        bail!(
            "{python} {} failed (is the sgraf package installed? cd bindings/python && maturin develop):\n{}",
            script.display(),
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let py: serde_json::Value = serde_json::from_slice(&run.stdout).with_context(|| {
        format!(
            "{} printed {:?}",
            script.display(),
            String::from_utf8_lossy(&run.stdout)
        )
    })?;
    let py_secs = py["seconds"].as_f64().context("python: no seconds")?;
    let diff = py["max_abs_diff"]
        .as_f64()
        .context("python: no max_abs_diff")?;
    let overhead = py_secs / rust_secs - 1.0;
    let cpu = crate::bench::cpu_name();
    println!("score, {IMAGES} images x {CAPTIONS} captions, full-size SGR + SAF (best of {repeat}), {cpu}:");
    println!("  Rust   sgraf::Sgraf::score   {rust_secs:>8.3} s");
    println!(
        "  Python sgraf.Sgraf.score    {py_secs:>8.3} s  ({} build, Python {})",
        py["profile"].as_str().unwrap_or("?"),
        py["python"].as_str().unwrap_or("?")
    );
    println!(
        "  Python / Rust = {:.4} ({:+.2}%); max |difference| of the scores {diff:e}",
        py_secs / rust_secs,
        overhead * 100.0
    );
    let report = serde_json::json!({
        "images": IMAGES, "captions": CAPTIONS, "repeat": repeat,
        "rust_seconds": rust_secs, "python_seconds": py_secs,
        "ratio": py_secs / rust_secs, "overhead": overhead, "max_abs_diff": diff,
        "python": py["python"], "extension_profile": py["profile"],
        "xtask_profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "commit": crate::bench::git_head(), "cpu": cpu,
    });
    let out = out.unwrap_or_else(|| crate::root().join("bench/results/python-latest.json"));
    crate::write_json(&out, &report)?;
    println!("wrote {}", out.display());
    let _ = std::fs::remove_dir_all(&work);
    if diff != 0.0 {
        bail!("the Python scores differ from the Rust scores by up to {diff:e}");
    }
    if overhead >= 0.05 {
        bail!(
            "calling through Python costs {:.1}% of score (the bound is 5%)",
            overhead * 100.0
        );
    }
    Ok(())
}
