//! `--model` values: a local model folder, or a Hugging Face Hub repository
//! `owner/name` (optionally `owner/name@revision`) fetched with `hf-hub`
//! into the standard cache (`HF_HOME`, default `~/.cache/huggingface`).
//! With `HF_HUB_OFFLINE=1` only the cache is read.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

/// The files of a model folder.
pub const MODEL_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{} is not a model folder: {file} is missing", dir.display())]
    MissingFile { dir: PathBuf, file: &'static str },
    #[error("{spec:?} is neither a model folder nor a Hub repository id (owner/name[@revision])")]
    NotAModel { spec: String },
    #[error("{repo}@{revision}: {file} is not in the Hugging Face cache {} and HF_HUB_OFFLINE is set", cache.display())]
    NotCached {
        repo: String,
        revision: String,
        file: &'static str,
        cache: PathBuf,
    },
    #[error("{repo}@{revision}: cannot fetch {file} from the Hugging Face Hub: {msg}")]
    Download {
        repo: String,
        revision: String,
        file: &'static str,
        msg: String,
    },
}

/// Where a model comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    Local(PathBuf),
    Hub { repo: String, revision: String },
}

fn is_repo_part(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl ModelSource {
    /// An existing path is a local folder; otherwise `owner/name[@rev]` is a Hub id.
    pub fn parse(spec: &str) -> Result<Self, HubError> {
        let path = Path::new(spec);
        if path.exists() {
            return Ok(Self::Local(path.to_path_buf()));
        }
        let (id, revision) = match spec.split_once('@') {
            Some((id, rev)) if !rev.is_empty() => (id, rev.to_string()),
            Some(_) => return Err(HubError::NotAModel { spec: spec.into() }),
            None => (spec, "main".to_string()),
        };
        match id.split_once('/') {
            Some((owner, name)) if is_repo_part(owner) && is_repo_part(name) => Ok(Self::Hub {
                repo: id.to_string(),
                revision,
            }),
            _ => Err(HubError::NotAModel { spec: spec.into() }),
        }
    }
}

/// Whether `HF_HUB_OFFLINE` asks for no network.
pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

/// The Hub cache folder: `$HF_HOME/hub`, default `~/.cache/huggingface/hub`.
pub fn cache_dir() -> PathBuf {
    Cache::from_env().path().clone()
}

fn cached(repo: &str, revision: &str, file: &str) -> Option<PathBuf> {
    let cache = Cache::from_env();
    let r = Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string());
    if let Some(p) = cache.repo(r.clone()).get(file) {
        return Some(p);
    }
    // A revision given as a commit hash has a snapshot but no ref file.
    let snapshot = cache
        .path()
        .join(r.folder_name())
        .join("snapshots")
        .join(revision)
        .join(file);
    snapshot.exists().then_some(snapshot)
}

/// Resolves a `--model` value to a local folder holding [`MODEL_FILES`].
pub fn resolve(spec: &str) -> Result<PathBuf, HubError> {
    resolve_with(spec, &MODEL_FILES)
}

/// Files of a detector folder (`sgraf-cli extract --detector`).
pub const DETECTOR_FILES: [&str; 2] = ["config.json", "model.safetensors"];

/// Resolves a `--detector` value (folder or Hub id) to a local folder
/// holding [`DETECTOR_FILES`].
pub fn resolve_detector(spec: &str) -> Result<PathBuf, HubError> {
    resolve_with(spec, &DETECTOR_FILES)
}

/// Resolves a folder or Hub id to a local folder holding `files`.
pub fn resolve_with(spec: &str, files: &[&'static str]) -> Result<PathBuf, HubError> {
    match ModelSource::parse(spec)? {
        ModelSource::Local(dir) => {
            for &file in files {
                if !dir.join(file).is_file() {
                    return Err(HubError::MissingFile { dir, file });
                }
            }
            Ok(dir)
        }
        ModelSource::Hub { repo, revision } => {
            let mut folder = None;
            for &file in files {
                let path = match cached(&repo, &revision, file) {
                    Some(p) => p,
                    None if offline() => {
                        return Err(HubError::NotCached {
                            repo,
                            revision,
                            file,
                            cache: cache_dir(),
                        })
                    }
                    None => download(&repo, &revision, file)?,
                };
                folder.get_or_insert_with(|| {
                    path.parent().map(Path::to_path_buf).unwrap_or_default()
                });
            }
            folder.ok_or(HubError::NotAModel {
                spec: spec.to_string(),
            })
        }
    }
}

fn download(repo: &str, revision: &str, file: &'static str) -> Result<PathBuf, HubError> {
    let err = |msg: String| HubError::Download {
        repo: repo.to_string(),
        revision: revision.to_string(),
        file,
        msg,
    };
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .build()
        .map_err(|e| err(e.to_string()))?;
    api.repo(Repo::with_revision(
        repo.to_string(),
        RepoType::Model,
        revision.to_string(),
    ))
    .get(file)
    .map_err(|e| err(e.to_string()))
}
