//! Project tasks: `cargo xtask <task>`.
#![allow(
    unsafe_code,
    reason = "glibc's mallopt, as the CLI does, so benchmarks measure what users run"
)]

mod bench;
mod bench_e2e;
mod bench_extract;
mod bench_python;
mod bench_rank;
mod bench_rcar;
mod cuda;
mod demo;
mod gpu_check;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "sgraf project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Convert a released SGRAF checkpoint (model_best.pth.tar, legacy or zip
    /// format) and its vocabulary JSON into a model folder: config.json,
    /// model.safetensors, tokenizer.json and a model card (README.md).
    /// With --detector instead: convert the bottom-up-attention detector's
    /// .pth (bua-caffe-frcn-r101_k36.pth) into a detector folder.
    ConvertWeights {
        /// The PyTorch checkpoint, e.g. runs/f30k_SGR/model_best.pth.tar.
        #[arg(long, required_unless_present = "detector", requires = "vocab")]
        checkpoint: Option<PathBuf>,
        /// The vocabulary it was trained with, e.g. vocab/f30k_precomp_vocab.json.
        #[arg(long)]
        vocab: Option<PathBuf>,
        /// The detector's .pth (the PyTorch port's release), e.g. bua-caffe-frcn-r101_k36.pth.
        #[arg(long, conflicts_with_all = ["checkpoint", "vocab"])]
        detector: Option<PathBuf>,
        /// Regions per image the detector folder defaults to: 36 or 10-100
        /// (default: 36 when the file name says k36 or fix36, else 10-100).
        #[arg(long, requires = "detector")]
        boxes: Option<String>,
        /// The model folder to create, e.g. weights/f30k_sgr.
        #[arg(long)]
        out: PathBuf,
        /// Replace OUT if it already exists.
        #[arg(long)]
        force: bool,
        /// Load the result with sgraf-core and score pseudo-random inputs.
        #[arg(long)]
        verify: bool,
    },
    /// Offline demo on synthetic data: train an SGR and a SAF model, evaluate
    /// them before and after, index a folder of images and rank it for a query.
    Demo {
        /// Working folder (replaced).
        #[arg(long, default_value = "target/sgraf-demo")]
        dir: PathBuf,
        /// Training epochs of each model.
        #[arg(long, default_value_t = 12)]
        epochs: usize,
    },
    /// Time sgraf against the PyTorch reference on this CPU: `bench` (or `bench scoring`)
    /// times the similarity scoring and writes bench/results/cpu-latest.json (needs python3
    /// with torch, numpy, safetensors); `bench e2e` times `sgraf-cli score` end to end, the
    /// encoders and `sgraf-cli eval` (bench/results/e2e-latest.json); `bench rank` times
    /// `index` and `rank` on 2k and 20k synthetic images (bench/results/rank-latest.json); `bench extract` times region-feature extraction
    /// from photos and writes bench/results/extract-latest.json (also needs torchvision
    /// and opencv-python-headless).
    Bench {
        /// scoring or extract.
        #[arg(default_value = "scoring", value_parser = ["scoring", "e2e", "rank", "extract", "python", "rcar"])]
        what: String,
        /// Images of the e2e benchmark's eval case (five captions each; 0 skips it).
        #[arg(long, default_value_t = 1000)]
        eval_images: usize,
        /// Folder sizes of the rank benchmark.
        #[arg(long, value_delimiter = ',', default_value = "2000,20000")]
        sizes: Vec<usize>,
        /// `bench rcar`: a checkout of github.com/Paranioar/RCAR (the upstream
        /// code it is timed against).
        #[arg(long, required_if_eq("what", "rcar"))]
        upstream: Option<PathBuf>,
        /// Photos of the extract benchmark.
        #[arg(long, default_value_t = 4)]
        photos: usize,
        /// `bench rank`: another sgraf-cli binary (an earlier build) timed in
        /// the same run on the same files, each with its own index, with the
        /// ratios printed: before and after a change.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// Only the 100 x 100 shards.
        #[arg(long)]
        quick: bool,
        /// Where to write the results (default bench/results/cpu-latest.json).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Times each side this many times and keeps each side's best (the
        /// machine is shared): default 3 for the 100 x 100 cases, 1 for the large ones.
        #[arg(long)]
        repeat: Option<usize>,
    },
    /// Regenerate tests/fixtures/ with the PyTorch reference (needs python3
    /// with torch, numpy and safetensors; the detector's also torchvision and
    /// opencv-python-headless).
    Fixtures {
        /// Write the full-size check (d 1024, m 256, vocab 8481) into DIR instead.
        #[arg(long, value_name = "DIR")]
        full: Option<PathBuf>,
    },
    /// Build the CUDA routes without a GPU or a CUDA install: our kernels on
    /// CUDA (sgraf-core `--features cuda-kernels`: NVRTC and the driver loaded
    /// at run time, so nothing CUDA is needed to build; its tests and
    /// benchmark, which the GPU check's bundle carries), then sgraf-cli with
    /// candle's `--features cuda` (downloads the CUDA 13.0 wheels, about
    /// 1.2 GB, into target/cuda-toolchain; binary: target/cuda/release/sgraf-cli)
    /// and the detector's CUDA check for the GPU check's bundle
    /// (tests/gpu_extract.rs: target/cuda/gpu-extract).
    CudaBuild {
        /// CUDA compute capability to compile candle's kernels for (90: H100/H200).
        #[arg(long, default_value = "90")]
        compute_cap: String,
        /// Only our kernels' route (no download).
        #[arg(long)]
        kernels: bool,
    },
    /// The check only an NVIDIA GPU passes: builds the GPU tests and the
    /// benchmark (wgpu and our kernels on CUDA) into one bundle,
    /// target/gpu-check/ (run.sh and payload.tar.gz, at most 64 MiB, with the
    /// Vulkan loader), and runs run.sh: it fails at once without an NVIDIA
    /// GPU; else the benchmark (pairs/s, TFLOP/s and % of fp32 peak, the
    /// COCO 5K time, the CPU engine for the ratio), then the tests, in 5
    /// minutes at most. `--prepare`: build only (carry target/gpu-check to
    /// the GPU machine and run `bash target/gpu-check/run.sh`). `--nvrtc`:
    /// check every kernel's CUDA C++ against its definition and compile it
    /// with NVRTC 13.0 (installs the PyPI wheels), no GPU needed.
    GpuCheck {
        #[arg(long)]
        prepare: bool,
        #[arg(long, conflicts_with = "prepare")]
        nvrtc: bool,
    },
}

/// Writes a benchmark's JSON report whole or not at all (a temporary file
/// beside it, then a rename).
pub fn write_json(out: &Path, report: &serde_json::Value) -> Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = out.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(report)? + "\n")?;
    std::fs::rename(&tmp, out)?;
    Ok(())
}

/// Where cargo puts this workspace's builds (`CARGO_TARGET_DIR` or `target/`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { root().join(t) })
        .unwrap_or_else(|| root().join("target"))
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn python(script: &str, args: &[std::ffi::OsString]) -> Result<()> {
    let script = root().join("tests/reference").join(script);
    let status = Command::new("python3")
        .arg(&script)
        .args(args)
        .status()
        .with_context(|| format!("running python3 {}", script.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    Ok(())
}

fn fixtures(full: Option<PathBuf>) -> Result<()> {
    match full {
        Some(dir) => python("make_fixtures.py", &["--full".into(), dir.into_os_string()]),
        None => {
            // The tokenizer cases first: the precomp fixture tokenizes with them.
            python("make_tokenizer_fixtures.py", &[])?;
            python("make_fixtures.py", &[])?;
            python("make_train_fixtures.py", &[])?;
            python("make_vision_fixtures.py", &[])
        }
    }
}

/// The converter's error, with the flag that replaces an existing output.
fn force_hint(e: sgraf_convert::ConvertError) -> anyhow::Error {
    match e {
        sgraf_convert::ConvertError::OutputExists(_) => {
            anyhow::anyhow!("{e} (pass --force to replace it)")
        }
        e => e.into(),
    }
}

fn convert_weights(
    checkpoint: &Path,
    vocab: &Path,
    out: &Path,
    force: bool,
    verify: bool,
) -> Result<()> {
    let done = sgraf_convert::convert(checkpoint, vocab, out, force)
        .map_err(force_hint)
        .with_context(|| format!("converting {}", checkpoint.display()))?;
    let cfg = &done.config;
    println!(
        "wrote {}: {} model ({}), {} tensors, epoch {}, best_rsum {}",
        out.display(),
        cfg.describe(),
        cfg.data_name().unwrap_or("unknown data"),
        done.tensors,
        done.epoch.map_or("?".into(), |e| e.to_string()),
        done.best_rsum.map_or("?".into(), |r| format!("{r:.2}")),
    );
    println!("source sha256 {}", done.sha256);
    if verify {
        let scores =
            sgraf_convert::verify(out).with_context(|| format!("verifying {}", out.display()))?;
        let range = match &done.config {
            sgraf_convert::ModelConfig::Rcar(c) => sgraf_convert::rcar::score_range(c),
            sgraf_convert::ModelConfig::Sgraf(_) => 0.0..=1.0,
        };
        println!(
            "verified: loaded with sgraf-core, {} x {} scores on pseudo-random inputs, all in [{}, {}]",
            scores.len(),
            scores.first().map_or(0, Vec::len),
            range.start(),
            range.end()
        );
    }
    Ok(())
}

fn convert_detector(
    pth: &Path,
    boxes: Option<&str>,
    out: &Path,
    force: bool,
    verify: bool,
) -> Result<()> {
    let boxes = boxes.map(sgraf_vision::BoxPolicy::parse).transpose()?;
    let done = sgraf_convert::convert_detector(pth, out, boxes, force)
        .map_err(force_hint)
        .with_context(|| format!("converting {}", pth.display()))?;
    let c = &done.config;
    println!(
        "wrote {}: ResNet-{} detector, {} classes, {} attributes, {} regions per image, {} tensors ({} checkpoint)",
        out.display(),
        2 + 3 * (c.blocks.iter().sum::<usize>() + 3),
        c.num_classes,
        c.num_attributes,
        c.boxes,
        done.tensors,
        match done.format {
            sgraf_convert::Format::Legacy => "legacy",
            sgraf_convert::Format::Zip => "zip",
        }
    );
    println!(
        "anchors: {}; ignored: {} BatchNorm counter(s); source sha256 {}",
        if done.anchors_from_checkpoint {
            "from the checkpoint"
        } else {
            "generated (Caffe's generate_anchors)"
        },
        done.ignored.len(),
        done.sha256
    );
    if let Some(w) = &done.anchor_warning {
        eprintln!("warning: {w}");
    }
    if verify {
        let det = sgraf_vision::Detector::from_folder(out, &candle_core::Device::Cpu)?;
        let img = sgraf_vision::BgrImage {
            height: 120,
            width: 160,
            data: (0..120 * 160 * 3).map(|i| (i * 37 % 251) as u8).collect(),
        };
        let r = det.extract(&img, None)?;
        if r.features.iter().any(|v| !v.is_finite()) {
            bail!("verification failed: non-finite region features");
        }
        println!(
            "verified: loaded and ran on a synthetic image, {} regions of {} values",
            r.len(),
            r.feature_dim
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    // The allocator thresholds sgraf-cli sets first thing (its main.rs), so
    // that `bench scoring`, which scores in this process, times the scorer
    // as the binary runs it: block-sized tensors stay in the heap.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 << 30);
    }
    match Cli::parse().task {
        Task::ConvertWeights {
            checkpoint,
            vocab,
            detector,
            boxes,
            out,
            force,
            verify,
        } => match (detector, checkpoint, vocab) {
            (Some(det), _, _) => convert_detector(&det, boxes.as_deref(), &out, force, verify),
            (None, Some(ckpt), Some(vocab)) => convert_weights(&ckpt, &vocab, &out, force, verify),
            _ => bail!("convert-weights needs --checkpoint and --vocab, or --detector"),
        },
        Task::Fixtures { full } => fixtures(full),
        Task::Demo { dir, epochs } => demo::demo(&dir, epochs),
        Task::Bench {
            what,
            eval_images,
            sizes,
            photos,
            upstream,
            baseline,
            quick,
            out,
            repeat,
        } => match what.as_str() {
            "rcar" => bench_rcar::bench_rcar(
                upstream.as_deref().context("bench rcar needs --upstream")?,
                out,
                repeat.unwrap_or(1),
            ),
            "extract" => bench_extract::bench_extract(photos.max(1), out, repeat.unwrap_or(1)),
            "e2e" => bench_e2e::bench_e2e(out, repeat.unwrap_or(1), eval_images),
            "rank" => bench_rank::bench_rank(&sizes, out, baseline),
            "python" => bench_python::bench_python(out, repeat.unwrap_or(3)),
            _ => bench::bench(quick, out, repeat),
        },
        Task::CudaBuild {
            compute_cap,
            kernels,
        } => cuda::cuda_build(&compute_cap, kernels),
        Task::GpuCheck { prepare, nvrtc } => gpu_check::gpu_check(prepare, nvrtc),
    }
}
