//! `cargo xtask bench rcar --upstream DIR`: RCAR scoring end to end against
//! the upstream code (github.com/Paranioar/RCAR checked out at DIR) in the
//! same run, 100 images x 500 captions, released size (d 1024, m 256,
//! coop_rcar with 2 steps), t2i and i2t.
//!
//! The upstream side (tests/reference/bench_rcar.py) writes a checkpoint as
//! upstream's train.py saves it, its vocabulary, the features and captions,
//! and times upstream's evaluation path from those files to the score matrix.
//! This side converts that checkpoint with the converter (once, not timed: a
//! user converts a released model once) and times one `sgraf-cli score`
//! process on the same files. Both matrices are compared.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

use crate::bench_e2e::{best_of, cli, max_abs_diff, read_npy, score_command};

/// Multiply-adds per image-caption pair of RCAR's head at `d`, `m`, with
/// `steps` coop_rcar steps, for a query of `lq` tokens attending over a
/// context of `lc` (t2i: words over 36 regions; i2t: regions over words).
/// Per step (sgraf_core::rcar::head, docs/rcar.md): the cross-attention's
/// scores and weighted sum (2 lq lc d), the alignment vector's projection
/// (lq d m), the aggregation regulator's key (lq m m), query (m m) and value
/// (lq m) layers; per step but the last, the correspondence regulator's two
/// MLPs (lq (2 m m + 2 m d) and lq (m m / 2 + m / 2)); then the score (m).
/// Elementwise work (squares, softmax, norms) is left out.
pub fn rcar_macs_per_pair(d: f64, m: f64, steps: usize, lq: f64, lc: f64) -> f64 {
    let step = 2.0 * lq * lc * d + lq * d * m + lq * m * m + m * m + lq * m;
    let rcr = lq * (2.0 * m * m + 2.0 * m * d) + lq * (m * m / 2.0 + m / 2.0);
    steps as f64 * step + steps.saturating_sub(1) as f64 * rcr + m
}

/// The average caption length in tokens of `captions.txt` (one caption a
/// line, <start> and <end> added by tokenization).
fn mean_tokens(captions: &Path) -> Result<f64> {
    let text = std::fs::read_to_string(captions)?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let words: usize = lines.iter().map(|l| l.split_whitespace().count() + 2).sum();
    Ok(words as f64 / lines.len().max(1) as f64)
}

pub fn bench_rcar(upstream: &Path, out: Option<PathBuf>, repeat: usize) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let dir = std::env::temp_dir().join(format!("sgraf-bench-rcar-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cli = cli()?;
    let (n_img, n_cap) = (100usize, 500usize);
    let upstream = upstream
        .canonicalize()
        .with_context(|| format!("the RCAR checkout {}", upstream.display()))?;
    let base = |attn: &str| -> Vec<String> {
        vec![
            upstream.display().to_string(),
            "--dir".into(),
            dir.display().to_string(),
            "--attn".into(),
            attn.into(),
            "--images".into(),
            n_img.to_string(),
            "--captions".into(),
            n_cap.to_string(),
        ]
    };
    let needs = "torch, numpy, safetensors, and a checkout of github.com/Paranioar/RCAR";
    println!(
        "RCAR score end to end, {n_img} images x {n_cap} captions, released size, coop_rcar 2 steps \
         (load, tokenize, encode, score, write), {threads} threads, {}:",
        crate::bench::cpu_name()
    );
    println!(
        "{:<4} {:>10} {:>10} {:>7} {:>10} {:>9} {:>9} {:>10} {:>10}",
        "", "torch s", "sgraf s", "ratio", "max diff", "GFLOP/s", "sgemm", "torch MB", "sgraf MB"
    );
    let mut rows = Vec::new();
    for attn in ["t2i", "i2t"] {
        let mut prep = base(attn);
        prep.push("--prepare-only".into());
        crate::bench::run_reference("bench_rcar.py", &prep, threads, needs)?;
        let folder = dir.join(format!("rcar_{attn}"));
        sgraf_convert::convert(
            &dir.join(format!("rcar_{attn}.pth")),
            &dir.join("vocab.json"),
            &folder,
            true,
        )
        .with_context(|| format!("converting the {attn} checkpoint"))?;
        let mut args = base(attn);
        args.extend(["--repeat".into(), repeat.to_string()]);
        let r = crate::bench::run_reference("bench_rcar.py", &args, threads, needs)?;
        let scores = dir.join(format!("sgraf_rcar_{attn}.npy"));
        let (secs, rss) = best_of(repeat, || score_command(&cli, &folder, &dir, &scores))?;
        let diff = max_abs_diff(
            &read_npy(&scores)?,
            &read_npy(&dir.join(format!("torch_rcar_{attn}.npy")))?,
        );
        let tokens = mean_tokens(&dir.join("captions.txt"))?;
        let (lq, lc) = if attn == "t2i" {
            (tokens, 36.0)
        } else {
            (36.0, tokens)
        };
        let flops = 2.0 * rcar_macs_per_pair(1024.0, 256.0, 2, lq, lc) * (n_img * n_cap) as f64;
        let torch_secs = r["seconds"].as_f64().unwrap_or(f64::NAN);
        let sgemm = r["sgemm_gflops"].as_f64().unwrap_or(f64::NAN);
        println!(
            "{:<4} {:>10.2} {:>10.2} {:>6.2}x {:>10.2e} {:>9.1} {:>9.1} {:>10.0} {:>10.0}",
            attn,
            torch_secs,
            secs,
            torch_secs / secs,
            diff,
            flops / secs / 1e9,
            sgemm,
            r["peak_rss_mb"].as_f64().unwrap_or(0.0),
            rss
        );
        rows.push(serde_json::json!({
            "attn_type": attn, "images": n_img, "captions": n_cap,
            "torch_seconds": torch_secs, "sgraf_seconds": secs, "ratio": torch_secs / secs,
            "max_abs_diff": diff, "head_gflop": flops / 1e9,
            "sgraf_head_gflops_per_s": flops / secs / 1e9, "sgemm_gflops": sgemm,
            "torch_peak_rss_mb": r["peak_rss_mb"], "sgraf_peak_rss_mb": rss,
            "torch": r["torch"],
        }));
    }
    println!(
        "GFLOP/s: the head's multiply-adds x 2 (xtask/src/bench_rcar.rs rcar_macs_per_pair) over \
         sgraf's end-to-end time; sgemm: torch's float32 matmul rate on this CPU."
    );
    let report = serde_json::json!({
        "cpu": crate::bench::cpu_name(), "threads": threads, "commit": crate::bench::git_head(),
        "upstream": "Paranioar/RCAR", "score_end_to_end": rows,
    });
    let out = out.unwrap_or_else(|| crate::root().join("bench/results/rcar-latest.json"));
    crate::write_json(&out, &report)?;
    println!("wrote {}", out.display());
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
