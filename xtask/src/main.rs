//! Project tasks: `cargo xtask <task>`.

mod bench;
mod cuda;
mod demo;

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
    ConvertWeights {
        /// The PyTorch checkpoint, e.g. runs/f30k_SGR/model_best.pth.tar.
        #[arg(long)]
        checkpoint: PathBuf,
        /// The vocabulary it was trained with, e.g. vocab/f30k_precomp_vocab.json.
        #[arg(long)]
        vocab: PathBuf,
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
    /// Time sgraf's CPU scoring against the PyTorch reference (needs python3 with torch,
    /// numpy, safetensors) and write bench/results/cpu-latest.json.
    Bench {
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
    /// with torch, numpy and safetensors).
    Fixtures {
        /// Write the full-size check (d 1024, m 256, vocab 8481) into DIR instead.
        #[arg(long, value_name = "DIR")]
        full: Option<PathBuf>,
    },
    /// Build sgraf-cli with `--features cuda` without a GPU or a CUDA install
    /// (downloads the CUDA 13.0 wheels, about 1.2 GB, into target/cuda-toolchain;
    /// binary: target/cuda/release/sgraf-cli).
    CudaBuild {
        /// CUDA compute capability to compile candle's kernels for (90: H100/H200).
        #[arg(long, default_value = "90")]
        compute_cap: String,
    },
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
            python("make_train_fixtures.py", &[])
        }
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
        .with_context(|| format!("converting {}", checkpoint.display()))?;
    let cfg = &done.config;
    println!(
        "wrote {}: {} model ({}), {} tensors, epoch {}, best_rsum {}",
        out.display(),
        cfg.module,
        cfg.data_name.as_deref().unwrap_or("unknown data"),
        done.tensors,
        done.epoch.map_or("?".into(), |e| e.to_string()),
        done.best_rsum.map_or("?".into(), |r| format!("{r:.2}")),
    );
    println!("source sha256 {}", done.sha256);
    if verify {
        let scores =
            sgraf_convert::verify(out).with_context(|| format!("verifying {}", out.display()))?;
        println!(
            "verified: loaded with sgraf-core, {} x {} scores on pseudo-random inputs, all in [0, 1]",
            scores.len(),
            scores.first().map_or(0, Vec::len)
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    sgraf_retrieval::keep_large_allocations_in_heap();
    match Cli::parse().task {
        Task::ConvertWeights {
            checkpoint,
            vocab,
            out,
            force,
            verify,
        } => convert_weights(&checkpoint, &vocab, &out, force, verify),
        Task::Fixtures { full } => fixtures(full),
        Task::Demo { dir, epochs } => demo::demo(&dir, epochs),
        Task::Bench { quick, out, repeat } => bench::bench(quick, out, repeat),
        Task::CudaBuild { compute_cap } => cuda::cuda_build(&compute_cap),
    }
}
