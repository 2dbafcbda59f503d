//! `cargo xtask bench e2e`: what a user waits for, against the published
//! evaluation path in the same run (tests/reference/bench_e2e.py):
//! - `score` end to end (load the models, read features and captions,
//!   tokenize, encode, score, write the matrix), as one `sgraf-cli score`
//!   process, SGR and SAF, 100 images x 500 captions;
//! - the encoders alone: the Bi-GRU on 5000 captions of 11-18 tokens and the
//!   image encoder on 1000 images;
//! - `sgraf-cli eval` (SGR + SAF) on a Flickr30K-sized split, pairs/s and
//!   peak memory (sgraf only: the reference would take an hour).
//!
//! Peak memory is the child process's own (`wait4`'s maximum resident set).
#![allow(unsafe_code, reason = "wait4 for a child's peak memory (rusage)")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use sgraf_core::SgrafModel;

fn reference(args: &[String], threads: usize) -> Result<serde_json::Value> {
    crate::bench::run_reference("bench_e2e.py", args, threads, "torch, numpy, safetensors")
}

/// The `sgraf-cli` binary of this checkout's dev profile, built now.
pub(crate) fn cli() -> Result<PathBuf> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "-p", "sgraf-cli", "--bin", "sgraf-cli"])
        .current_dir(crate::root())
        .status()?;
    if !status.success() {
        bail!("building sgraf-cli failed");
    }
    Ok(crate::target_dir().join("debug/sgraf-cli"))
}

/// Runs a command to completion: (wall seconds, peak RSS in MB).
pub(crate) fn timed(cmd: &mut Command) -> Result<(f64, f64)> {
    let start = Instant::now();
    let child = cmd
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting sgraf-cli")?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: `rusage` is plain data (integers), valid when zeroed.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet reaped (std's Child never
    // waited on it); `status` and `usage` are live, writable locals.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let secs = start.elapsed().as_secs_f64();
    if r != pid {
        bail!("waiting for sgraf-cli: {}", std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("sgraf-cli failed ({status:#x}): {cmd:?}");
    }
    Ok((secs, usage.ru_maxrss as f64 / 1024.0))
}

pub(crate) fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "score matrices of different sizes");
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

pub(crate) fn read_npy(path: &Path) -> Result<Vec<f32>> {
    let npy = sgraf_data::Npy::open(path)?;
    let n = npy.shape()[0];
    Ok(npy.rows(0, n)?)
}

/// `sgraf-cli score -m MODEL` on `DIR/features.npy` and `DIR/captions.txt`,
/// writing `scores`.
pub(crate) fn score_command(cli: &Path, model: &Path, dir: &Path, scores: &Path) -> Command {
    let mut c = Command::new(cli);
    c.arg("score")
        .arg("-m")
        .arg(model)
        .arg("--features")
        .arg(dir.join("features.npy"))
        .arg("--captions")
        .arg(dir.join("captions.txt"))
        .arg("--out")
        .arg(scores);
    c
}

/// Best of `repeat` runs of `cmd`: (seconds, peak RSS MB of that run).
pub(crate) fn best_of(repeat: usize, mut cmd: impl FnMut() -> Command) -> Result<(f64, f64)> {
    let mut best = (f64::INFINITY, 0.0);
    for _ in 0..repeat.max(1) {
        let r = timed(&mut cmd())?;
        if r.0 < best.0 {
            best = r;
        }
    }
    Ok(best)
}

pub fn bench_e2e(out: Option<PathBuf>, repeat: usize, eval_images: usize) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let dir = std::env::temp_dir().join(format!("sgraf-bench-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cli = cli()?;
    let d = dir.display().to_string();
    let mut report = serde_json::Map::new();

    // 1. score end to end.
    let (n_img, n_cap) = (100usize, 500usize);
    println!(
        "score end to end, {n_img} images x {n_cap} captions (load, tokenize, encode, score, write):"
    );
    println!(
        "{:<4} {:>10} {:>10} {:>7} {:>10} {:>12} {:>12}",
        "", "torch s", "sgraf s", "ratio", "max diff", "torch MB", "sgraf MB"
    );
    let mut rows = Vec::new();
    let mut sgemm = 0.0;
    for module in ["SGR", "SAF"] {
        let m = module.to_lowercase();
        let args: Vec<String> = vec![
            "e2e".into(),
            "--dir".into(),
            d.clone(),
            "--module".into(),
            module.into(),
            "--images".into(),
            n_img.to_string(),
            "--captions".into(),
            n_cap.to_string(),
            "--repeat".into(),
            repeat.to_string(),
        ];
        let r = reference(&args, threads)?;
        sgemm = r["sgemm_gflops"].as_f64().unwrap_or(0.0);
        let scores = dir.join(format!("sgraf_{m}.npy"));
        let (secs, rss) = best_of(repeat, || score_command(&cli, &dir.join(&m), &dir, &scores))?;
        let diff = max_abs_diff(
            &read_npy(&scores)?,
            &read_npy(&dir.join(format!("torch_{m}.npy")))?,
        );
        let torch_secs = r["seconds"].as_f64().unwrap_or(f64::NAN);
        println!(
            "{:<4} {:>10.2} {:>10.2} {:>6.2}x {:>10.2e} {:>12.0} {:>12.0}",
            module,
            torch_secs,
            secs,
            torch_secs / secs,
            diff,
            r["peak_rss_mb"].as_f64().unwrap_or(0.0),
            rss
        );
        rows.push(serde_json::json!({
            "module": module, "images": n_img, "captions": n_cap,
            "torch_seconds": torch_secs, "sgraf_seconds": secs, "ratio": torch_secs / secs,
            "max_abs_diff": diff, "torch_peak_rss_mb": r["peak_rss_mb"], "sgraf_peak_rss_mb": rss,
        }));
    }
    report.insert("score_end_to_end".into(), rows.into());

    // 2. The encoders alone.
    let (enc_img, enc_cap) = (1000usize, 5000usize);
    let args: Vec<String> = vec![
        "encoders".into(),
        "--dir".into(),
        d.clone(),
        "--images".into(),
        enc_img.to_string(),
        "--captions".into(),
        enc_cap.to_string(),
        "--repeat".into(),
        repeat.to_string(),
    ];
    let r = reference(&args, threads)?;
    let dev = Device::Cpu;
    let model = SgrafModel::from_folder(dir.join("sgr"), &sgraf_core::Device::Cpu)?;
    let inputs = candle_core::safetensors::load(dir.join("encoders.safetensors"), &dev)?;
    let lengths: Vec<usize> = inputs["lengths"]
        .to_vec1::<i64>()?
        .into_iter()
        .map(|n| n as usize)
        .collect();
    let (mut cap_secs, mut img_secs) = (f64::INFINITY, f64::INFINITY);
    let (mut cap, mut img) = (None, None);
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        cap = Some(model.encode_captions(&inputs["ids"], &lengths)?);
        cap_secs = cap_secs.min(start.elapsed().as_secs_f64());
        let start = Instant::now();
        let mut parts = Vec::new();
        for i0 in (0..enc_img).step_by(sgraf_retrieval::scorer::IMAGE_CHUNK) {
            let n = sgraf_retrieval::scorer::IMAGE_CHUNK.min(enc_img - i0);
            parts.push(model.encode_images(&inputs["images"].narrow(0, i0, n)?)?);
        }
        img = Some(Tensor::cat(&parts, 0)?);
        img_secs = img_secs.min(start.elapsed().as_secs_f64());
    }
    let diff = |a: &Tensor, b: &Tensor| -> Result<f32> {
        Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar()?)
    };
    let cap_diff = diff(&cap.expect("ran"), &inputs["cap_emb"])?;
    let img_diff = diff(&img.expect("ran"), &inputs["img_emb"])?;
    let words: usize = lengths.iter().sum();
    // Multiply-adds of the Bi-GRU per word: two directions of (in + h) x 3h.
    let gru_macs = 2.0 * ((300 + 1024) * 3 * 1024) as f64 * words as f64;
    let img_macs = (enc_img * 36 * 2048 * 1024) as f64;
    let torch_cap = r["captions_per_second"].as_f64().unwrap_or(f64::NAN);
    let torch_img = r["images_per_second"].as_f64().unwrap_or(f64::NAN);
    let (cap_rate, img_rate) = (enc_cap as f64 / cap_secs, enc_img as f64 / img_secs);
    println!(
        "\nencoders ({enc_cap} captions of 11-18 tokens, {enc_img} images; batches of 128 on the torch side):"
    );
    println!(
        "{:<9} {:>12} {:>12} {:>7} {:>10} {:>9}",
        "", "torch /s", "sgraf /s", "ratio", "max diff", "GFLOP/s"
    );
    println!(
        "{:<9} {:>12.0} {:>12.0} {:>6.2}x {:>10.2e} {:>9.1}",
        "captions",
        torch_cap,
        cap_rate,
        cap_rate / torch_cap,
        cap_diff,
        2.0 * gru_macs / cap_secs / 1e9
    );
    println!(
        "{:<9} {:>12.0} {:>12.0} {:>6.2}x {:>10.2e} {:>9.1}",
        "images",
        torch_img,
        img_rate,
        img_rate / torch_img,
        img_diff,
        2.0 * img_macs / img_secs / 1e9
    );
    println!(
        "measured sgemm: {:.0} GFLOP/s on {threads} threads",
        r["sgemm_gflops"].as_f64().unwrap_or(sgemm)
    );
    report.insert(
        "encoders".into(),
        serde_json::json!({
            "captions": enc_cap, "images": enc_img, "words": words,
            "torch_captions_per_second": torch_cap, "sgraf_captions_per_second": cap_rate,
            "caption_ratio": cap_rate / torch_cap, "caption_max_abs_diff": cap_diff,
            "sgraf_caption_gflops": 2.0 * gru_macs / cap_secs / 1e9,
            "torch_images_per_second": torch_img, "sgraf_images_per_second": img_rate,
            "image_ratio": img_rate / torch_img, "image_max_abs_diff": img_diff,
            "sgraf_image_gflops": 2.0 * img_macs / img_secs / 1e9,
            "sgemm_gflops": r["sgemm_gflops"],
        }),
    );

    // 3. eval on a Flickr30K-sized split, SGR + SAF.
    if eval_images > 0 {
        let split = dir.join("precomp");
        std::fs::create_dir_all(&split)?;
        write_split(&split, eval_images, &dir.join("captions.txt"))?;
        let pairs = (eval_images * eval_images * 5) as f64;
        println!(
            "\neval, SGR + SAF, {eval_images} images x {} captions ({pairs} pairs per model):",
            eval_images * 5
        );
        let (secs, rss) = timed(
            Command::new(&cli)
                .arg("eval")
                .arg("-m")
                .arg(dir.join("sgr"))
                .arg("-m")
                .arg(dir.join("saf"))
                .arg("--data")
                .arg(&split)
                .arg("--split")
                .arg("test"),
        )?;
        println!(
            "  {secs:.1} s, {:.0} pairs/s (each pair scored by both models), peak RSS {rss:.0} MB",
            pairs / secs
        );
        report.insert(
            "eval".into(),
            serde_json::json!({
                "images": eval_images, "captions": eval_images * 5, "models": ["SGR", "SAF"],
                "seconds": secs, "pairs_per_second": pairs / secs, "peak_rss_mb": rss,
            }),
        );
    }

    report.insert("threads".into(), threads.into());
    report.insert("sgemm_gflops".into(), sgemm.into());
    report.insert("commit".into(), crate::bench::git_head().into());
    report.insert("cpu".into(), crate::bench::cpu_name().into());
    report.insert("repeat".into(), repeat.into());
    let out = out.unwrap_or_else(|| crate::root().join("bench/results/e2e-latest.json"));
    crate::write_json(&out, &serde_json::Value::Object(report))?;
    println!("wrote {}", out.display());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A precomp `test` split: `n` images of random features and five captions
/// each (taken in turn from `captions`), written without holding the array.
fn write_split(dir: &Path, n: usize, captions: &Path) -> Result<()> {
    use std::io::Write;
    let caps: Vec<String> = std::fs::read_to_string(captions)?
        .lines()
        .map(str::to_string)
        .collect();
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("test_caps.txt"))?);
    for i in 0..n * 5 {
        writeln!(f, "{}", caps[i % caps.len()])?;
    }
    f.flush()?;
    let row = 36 * 2048;
    let mut rng = sgraf_core::rng::SplitMix64(3);
    let data: Vec<f32> = (0..n * row).map(|_| rng.uniform(0.0, 2.0)).collect();
    sgraf_data::npy::write_f32(&dir.join("test_ims.npy"), &[n, 36, 2048], &data)?;
    Ok(())
}
