//! Reading the runs: each run's `metrics.jsonl`, named for the legend.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sgraf::{StepRecord, TrainLog as Log, ValidationRecord, TRAIN_LOG_FILE};

/// A run's log, named for the legend.
#[derive(Clone, Debug)]
pub struct Run {
    pub name: String,
    pub steps: Vec<StepRecord>,
    pub vals: Vec<ValidationRecord>,
}

/// Reads `RUN/metrics.jsonl` (a resumed run's repeated steps replace the
/// ones logged before: see [`Log::parse`]).
pub fn read_run(dir: &Path, name: String) -> Result<Run> {
    let path = dir.join(TRAIN_LOG_FILE);
    let log = Log::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    if log.steps.is_empty() {
        bail!("{} holds no training steps yet", path.display());
    }
    Ok(Run {
        name,
        steps: log.steps,
        vals: log.validations,
    })
}

/// Names for the legend: folder names, or whole paths when those repeat.
pub(super) fn run_names(dirs: &[PathBuf]) -> Vec<String> {
    let short: Vec<String> = dirs
        .iter()
        .map(|d| {
            d.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| d.display().to_string())
        })
        .collect();
    let unique = short
        .iter()
        .enumerate()
        .all(|(i, a)| short[..i].iter().all(|b| b != a));
    if unique {
        short
    } else {
        dirs.iter().map(|d| d.display().to_string()).collect()
    }
}
