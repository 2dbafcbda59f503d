//! Models from `--model`, `$SGRAF_MODEL` or the folder's index.

use std::path::{Path, PathBuf};

use sgraf_core::{Device, ModelConfig, SgrafModel};
use sgraf_retrieval::index::store::ModelSpec;
use sgraf_retrieval::{index, Scorer};
use sgraf_text::CaptionTokenizer;

use crate::error::{Error, Result};
use crate::{Folder, FolderOptions, Hit, QueryExplanation, Quiet};

/// `cpu`, `cuda`, `cuda:N`, `metal` or `wgpu`, opened ([`Device::open`]).
/// `wgpu` (a build with the `gpu` feature) runs each model loaded onto it
/// on the GPU engine, whose kernels run through wgpu (Vulkan, Metal, DX12);
/// the device is self-checked when opened, and its adapter printed on
/// stderr.
pub fn parse_device(spec: &str) -> Result<Device> {
    let device = Device::open(spec)?;
    if spec == "wgpu" {
        eprintln!("device: {}", device.describe());
    }
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
    fallback.ok_or(Error::NoModel)
}

/// The models for an images folder, as `rank` finds them: `given`, else
/// $SGRAF_MODEL, else the models `dir`'s index was built with.
pub fn folder_model_specs(given: &[String], dir: &Path) -> Result<Vec<String>> {
    let indexed = index::index_models(dir)?;
    model_specs(
        given,
        indexed.map(|m| m.into_iter().map(|s| s.source).collect()),
    )
    .map_err(|_| Error::NoModelForFolder {
        dir: dir.to_path_buf(),
    })
}

/// SGRAF models ready to score: one model, or several whose scores are
/// averaged (an SGR and a SAF model together are SGRAF), with their
/// tokenizer, the folders they were read from and the names they were
/// given by (folders or Hub ids). Cloning is cheap: the weights are shared.
#[derive(Clone)]
pub struct Sgraf {
    pub scorer: Scorer,
    pub folders: Vec<PathBuf>,
    pub specs: Vec<String>,
}

/// Loads the models (folders or Hub ids) onto `device` (see [`parse_device`]).
pub fn load_specs(specs: Vec<String>, device: &str) -> Result<Sgraf> {
    Sgraf::load(&specs, &parse_device(device)?)
}

impl Sgraf {
    /// Loads each model, a folder or a Hugging Face Hub id
    /// (`owner/name[@revision]`, fetched into the standard cache; with
    /// `HF_HUB_OFFLINE=1` only the cache is read), onto `device`, prepared
    /// for inference. Two or more models are averaged: all must read the
    /// same vocabulary and features.
    pub fn load<S: AsRef<str>>(models: &[S], device: &Device) -> Result<Self> {
        if models.is_empty() {
            return Err(Error::NoModel);
        }
        let mut loaded = Vec::new();
        let mut tokenizers = Vec::new();
        let mut folders = Vec::new();
        for spec in models.iter().map(AsRef::as_ref) {
            let load = || -> Result<_> {
                let dir = crate::hub::resolve(spec)?;
                let model = SgrafModel::from_folder(&dir, device)?;
                let tok = CaptionTokenizer::from_file(dir.join(sgraf_core::TOKENIZER_FILE))?;
                Ok((dir, model, tok))
            };
            let (dir, model, tok) =
                load().map_err(Error::loading(format!("loading the model {spec}")))?;
            loaded.push(model);
            tokenizers.push(tok);
            folders.push(dir);
        }
        let specs: Vec<String> = models.iter().map(|s| s.as_ref().to_string()).collect();
        let scorer = Scorer::new(loaded, tokenizers).map_err(|e| match specs.len() {
            1 => e.into(),
            _ => Error::ModelsDisagree {
                models: specs.clone(),
                source: Box::new(e.into()),
            },
        })?;
        Ok(Self {
            scorer,
            folders,
            specs,
        })
    }

    /// The models for ranking the folder `dir`: `models` if any, else
    /// `$SGRAF_MODEL` (comma-separated), else the models `dir`'s index was
    /// built with.
    pub fn for_folder<S: AsRef<str>>(
        dir: impl AsRef<Path>,
        models: &[S],
        device: &Device,
    ) -> Result<Self> {
        let given: Vec<String> = models.iter().map(|s| s.as_ref().to_string()).collect();
        Self::load(&folder_model_specs(&given, dir.as_ref())?, device)
    }

    /// The models' shared configuration (regions, feature size, ...).
    pub fn config(&self) -> &ModelConfig {
        self.scorer.config()
    }

    /// The candle device of the models' tensors.
    pub fn device(&self) -> &candle_core::Device {
        self.scorer.device()
    }

    /// The scorer behind [`Sgraf::score`]: encoded sides, blocks, progress.
    pub fn scorer(&self) -> &Scorer {
        &self.scorer
    }

    /// The mean score of every image against every caption: `features`
    /// holds `n` images row-major (`[n, num_regions, img_dim]`, the SCAN
    /// precomp layout). Memory follows the images and a block of captions.
    pub fn score<S: AsRef<str>>(&self, features: &[f32], captions: &[S]) -> Result<Scores> {
        let cfg = self.config();
        let per_image = cfg.num_regions() * cfg.img_dim();
        if features.is_empty() || !features.len().is_multiple_of(per_image) {
            return Err(Error::FeatureShape {
                what: "the features".into(),
                expected: [cfg.num_regions(), cfg.img_dim()],
                found: vec![features.len()],
            });
        }
        let n = features.len() / per_image;
        self.score_rows(
            n,
            &|start, k| Ok(features[start * per_image..(start + k) * per_image].to_vec()),
            captions,
            &crate::Quiet,
        )
    }

    /// Every image of the folder `dir` for `query`, best first, through
    /// the folder's index where it has one for these models (images not in
    /// it are encoded on the fly). Photos need a detector
    /// ([`FolderOptions::detector`]); see [`Folder`] to rank one folder
    /// many times.
    pub fn rank_folder(&self, dir: impl AsRef<Path>, query: &str) -> Result<Vec<Hit>> {
        let folder = Folder::open(
            dir.as_ref(),
            self.clone(),
            &FolderOptions::default(),
            &Quiet,
        )?;
        Ok(folder.rank(query, None, &mut |_| {})?.0)
    }

    /// Why the image `features` (`[num_regions, img_dim]`) matches `query`:
    /// each word's attention over the regions, from the same computation
    /// that scores it.
    pub fn explain(&self, features: &[f32], query: &str) -> Result<QueryExplanation> {
        crate::explain::explain(&self.scorer, features.to_vec(), query)
    }
}

/// A score matrix, row-major `[n_images, n_captions]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Scores {
    pub n_images: usize,
    pub n_captions: usize,
    pub values: Vec<f32>,
}

impl Scores {
    /// The score of image `i` against caption `c`.
    ///
    /// Panics when `(i, c)` is outside the matrix, as slice indexing does.
    pub fn get(&self, i: usize, c: usize) -> f32 {
        assert!(
            i < self.n_images && c < self.n_captions,
            "({i}, {c}) is outside {} x {}",
            self.n_images,
            self.n_captions
        );
        self.values[i * self.n_captions + c]
    }

    /// Image `i`'s scores against every caption.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.n_captions..(i + 1) * self.n_captions]
    }
}

impl Sgraf {
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

/// The bottom-up-attention detector (a folder converted with `cargo xtask
/// convert-weights --detector`, or a Hub id) on `device`.
pub fn load_detector(spec: &str, device: &Device) -> Result<sgraf_vision::Detector> {
    let load = || -> Result<_> {
        let dir = crate::hub::resolve_detector(spec)?;
        Ok(sgraf_vision::Detector::from_folder(
            &dir,
            &device.tensors(),
        )?)
    };
    load().map_err(Error::loading(format!("loading the detector {spec}")))
}

/// The detector for photos: `given` (--detector), else the (first) model
/// folder's `detector/` sub-folder or its config's "detector" entry (a
/// folder relative to the model, or a Hub id).
pub fn find_detector(given: Option<&str>, loaded: &Sgraf) -> Result<Option<PathBuf>> {
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
