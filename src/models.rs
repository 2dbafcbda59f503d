//! Models from `--model`, `$SGRAF_MODEL` or the folder's index.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use sgraf_core::SgrafModel;
use sgraf_retrieval::index::store::ModelSpec;
use sgraf_retrieval::{index, Scorer};
use sgraf_text::CaptionTokenizer;

/// `cpu`, `cuda`, `cuda:N` or `metal`.
pub fn parse_device(spec: &str) -> Result<Device> {
    let device = match spec {
        "cpu" => Device::Cpu,
        "cuda" => Device::new_cuda(0)?,
        "metal" => Device::new_metal(0)?,
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Device::new_cuda(n)?,
            _ => bail!("--device must be cpu, cuda, cuda:N or metal, found {other:?}"),
        },
    };
    Ok(device)
}

/// The models to load: `given` (--model), else $SGRAF_MODEL
/// (comma-separated), else `fallback` (the models an index was built with).
pub fn model_specs(given: &[String], fallback: Option<Vec<String>>) -> Result<Vec<String>> {
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    if let Ok(env) = std::env::var("SGRAF_MODEL") {
        let specs: Vec<String> = env
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if !specs.is_empty() {
            return Ok(specs);
        }
    }
    fallback.ok_or_else(|| {
        anyhow::anyhow!("no model: pass --model MODEL (a folder or a Hub id; repeat for SGRAF) or set SGRAF_MODEL")
    })
}

/// The models for an images folder, as `rank` finds them: `given`, else
/// $SGRAF_MODEL, else the models `dir`'s index was built with.
pub fn folder_model_specs(given: &[String], dir: &Path) -> Result<Vec<String>> {
    let indexed = index::index_models(dir)?;
    model_specs(
        given,
        indexed.map(|m| m.into_iter().map(|s| s.source).collect()),
    )
    .map_err(|_| {
        anyhow::anyhow!(
            "no model and no index in {0}: index the folder once with \
             `sgraf-cli index -m MODEL [-m MODEL] --images {0}` (then rank needs no --model), \
             or pass --model / set SGRAF_MODEL",
            dir.display()
        )
    })
}

/// Loaded models with their folders and the specs they were loaded from.
pub struct Loaded {
    pub scorer: Scorer,
    pub folders: Vec<PathBuf>,
    pub specs: Vec<String>,
}

/// Loads the models (folders or Hub ids) onto `device` (see [`parse_device`]).
pub fn load_specs(specs: Vec<String>, device: &str) -> Result<Loaded> {
    let mut models = Vec::new();
    let mut tokenizers = Vec::new();
    let mut folders = Vec::new();
    let dev = parse_device(device).with_context(|| format!("opening the device {device:?}"))?;
    for spec in &specs {
        let dir = crate::hub::resolve(spec)?;
        let model = SgrafModel::from_folder(&dir, &dev)
            .with_context(|| format!("loading the model {spec}"))?;
        let tok = CaptionTokenizer::from_file(dir.join(sgraf_core::TOKENIZER_FILE))?;
        models.push(model);
        tokenizers.push(tok);
        folders.push(dir);
    }
    Ok(Loaded {
        scorer: Scorer::new(models, tokenizers)?,
        folders,
        specs,
    })
}

impl Loaded {
    /// The models as an index records them: fingerprint, and the folder
    /// (absolute) or Hub id they came from.
    pub fn model_records(&self) -> Result<Vec<ModelSpec>> {
        self.folders
            .iter()
            .zip(&self.specs)
            .map(|(dir, spec)| {
                let source = match Path::new(spec).canonicalize() {
                    Ok(abs) if abs.is_dir() => abs.display().to_string(),
                    _ => spec.clone(),
                };
                Ok(ModelSpec {
                    fingerprint: index::model_fingerprint(dir)?,
                    source,
                })
            })
            .collect()
    }

    pub fn fingerprints(&self) -> Result<Vec<String>> {
        Ok(self
            .model_records()?
            .into_iter()
            .map(|m| m.fingerprint)
            .collect())
    }
}

/// The detector for photos: `given` (--detector), else the (first) model
/// folder's `detector/` sub-folder or its config's "detector" entry (a
/// folder relative to the model, or a Hub id).
pub fn find_detector(given: Option<&str>, loaded: &Loaded) -> Result<Option<PathBuf>> {
    if let Some(spec) = given {
        return Ok(Some(crate::hub::resolve_detector(spec)?));
    }
    for dir in &loaded.folders {
        let sub = dir.join("detector");
        if sub.join("config.json").is_file() {
            return Ok(Some(sub));
        }
        let cfg: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join(sgraf_core::CONFIG_FILE)).unwrap_or_default(),
        )
        .unwrap_or_default();
        if let Some(spec) = cfg.get("detector").and_then(|v| v.as_str()) {
            let local = dir.join(spec);
            return Ok(Some(if local.is_dir() {
                local
            } else {
                crate::hub::resolve_detector(spec)?
            }));
        }
    }
    Ok(None)
}
