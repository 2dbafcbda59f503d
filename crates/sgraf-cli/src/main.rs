//! `sgraf-cli`: a thin command line over the sgraf crates.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::{Parser, Subcommand};
use sgraf_core::SgrafModel;

#[derive(Parser)]
#[command(name = "sgraf-cli", version, about = "SGRAF image-text matching")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load a model folder (config.json + model.safetensors) and describe it.
    Info {
        /// Model folder.
        #[arg(long)]
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Info { model, json } => info(&model, json),
    }
}

fn info(dir: &std::path::Path, json: bool) -> Result<()> {
    let model = SgrafModel::from_folder(dir, &Device::Cpu)?;
    let cfg = model.config();
    if json {
        println!("{}", serde_json::to_string_pretty(cfg)?);
    } else {
        println!("model      {}", dir.display());
        println!("module     {}", cfg.module);
        println!(
            "data       {}",
            cfg.data_name.as_deref().unwrap_or("unknown")
        );
        println!(
            "image      {} regions x {} features -> d = {}",
            cfg.num_regions, cfg.img_dim, cfg.embed_size
        );
        println!(
            "text       vocab {} -> word_dim {} -> {}GRU x{} -> d = {}",
            cfg.vocab_size,
            cfg.word_dim,
            if cfg.bi_gru { "bi-" } else { "" },
            cfg.num_layers,
            cfg.embed_size
        );
        println!("similarity m = {}, sgr_step {}", cfg.sim_dim, cfg.sgr_step);
    }
    Ok(())
}
