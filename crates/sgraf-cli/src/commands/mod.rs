//! One module per command, each with `run(&flags)`; and what several share.

pub mod eval;
pub mod explain;
pub mod extract;
pub mod index;
pub mod info;
pub mod plot;
pub mod prepare;
pub mod rank;
pub mod score;
pub mod serve;
pub mod train;
pub mod vocab;

use std::path::Path;

use anyhow::{bail, Context, Result};
use sgraf::Sgraf;

use crate::flags::ModelArgs;

/// The models of --model, else $SGRAF_MODEL.
fn load(args: &ModelArgs) -> Result<Sgraf> {
    Ok(sgraf::load_specs(
        sgraf::model_specs(&args.models, None)?,
        &args.device,
    )?)
}

/// Caption lines of a file; empty lines and empty files are errors.
fn read_captions(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let lines: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    if lines.is_empty() {
        bail!("{} holds no captions", path.display());
    }
    if let Some(i) = lines.iter().position(String::is_empty) {
        bail!(
            "{} line {} is empty; put one caption on each line",
            path.display(),
            i + 1
        );
    }
    Ok(lines)
}
