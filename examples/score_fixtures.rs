//! Scores the committed tiny fixture images against the fixture captions
//! with the SGRAF ensemble (the SGR and SAF fixture models), offline.
//!
//! ```text
//! cargo run --release --example score_fixtures
//! ```
//! The fixture models have random weights: the numbers show the pipeline
//! running end to end, not a trained model's judgement.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::Device;
use sgraf::core::{Ensemble, SgrafModel};

fn main() -> Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dev = Device::Cpu;
    let sgr = SgrafModel::from_folder(dir.join("sgr"), &sgraf::Device::Cpu)?;
    let saf = SgrafModel::from_folder(dir.join("saf"), &sgraf::Device::Cpu)?;
    let inputs = candle_core::safetensors::load(dir.join("inputs.safetensors"), &dev)
        .context("reading the fixture inputs")?;
    let lengths: Vec<usize> = inputs["lengths"]
        .to_vec1::<i64>()?
        .into_iter()
        .map(|n| n as usize)
        .collect();
    let ensemble = Ensemble::new(vec![sgr, saf])?;
    let scores = ensemble.score(&inputs["images"], &inputs["ids"], &lengths)?;
    let scores = scores.to_vec2::<f32>()?;

    println!(
        "SGRAF (SGR + SAF fixture models) scores, {} images x {} captions:",
        scores.len(),
        lengths.len()
    );
    print!("{:>6}", "");
    for c in 0..lengths.len() {
        print!(" {:>6}", format!("cap{c}"));
    }
    println!();
    for (i, row) in scores.iter().enumerate() {
        print!("{:>6}", format!("img{i}"));
        for s in row {
            print!(" {s:>6.4}");
        }
        let best = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(c, _)| c)
            .unwrap_or(0);
        println!("   best: cap{best}");
    }
    Ok(())
}
