//! The image index of a features folder: every image's region embeddings
//! and visual global vector, per model, so `rank` encodes nothing twice.
//! One safetensors file in the folder (hidden, so never listed as features)
//! whose metadata names the models it was built for and the files it covers.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{DataError, Result};

pub const INDEX_FILE: &str = ".sgraf-index.safetensors";
const META_KEY: &str = "sgraf_index";
pub const INDEX_VERSION: u32 = 1;

/// What identifies a features file's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    pub name: String,
    pub size: u64,
    pub mtime_ns: u128,
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexMeta {
    pub version: u32,
    /// Fingerprints of the models, in `--model` order.
    pub models: Vec<String>,
    pub files: Vec<FileStamp>,
}

/// Per model: `[n, R, d]` region embeddings and `[n, d]` global vectors.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelRows {
    pub regions: Vec<f32>,
    pub regions_shape: Vec<usize>,
    pub global: Vec<f32>,
    pub global_shape: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ImageIndex {
    pub meta: IndexMeta,
    pub models: Vec<ModelRows>,
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let io = |err| DataError::Io {
        path: path.to_path_buf(),
        err,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Size and modification time of a file (no hashing).
pub fn quick_stamp(path: &Path) -> Result<(u64, u128)> {
    let meta = std::fs::metadata(path).map_err(|err| DataError::Io {
        path: path.to_path_buf(),
        err,
    })?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok((meta.len(), mtime))
}

pub fn index_path(dir: &Path) -> PathBuf {
    dir.join(INDEX_FILE)
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Reads `dir`'s index; `Ok(None)` when there is none.
pub fn read_index(dir: &Path) -> Result<Option<ImageIndex>> {
    let path = index_path(dir);
    if !path.is_file() {
        return Ok(None);
    }
    let bad = |msg: String| DataError::Format {
        path: path.clone(),
        msg,
    };
    let bytes = std::fs::read(&path).map_err(|err| DataError::Io {
        path: path.clone(),
        err,
    })?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("is not a readable index: {e}")))?;
    let meta: IndexMeta = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| bad("has no sgraf index metadata".into()))
        .and_then(|s| {
            serde_json::from_str(s).map_err(|e| bad(format!("has unreadable metadata: {e}")))
        })?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let mut models = Vec::with_capacity(meta.models.len());
    for i in 0..meta.models.len() {
        let get = |name: String| st.tensor(&name).map_err(|e| bad(format!("{name}: {e}")));
        let r = get(format!("model{i}.regions"))?;
        let g = get(format!("model{i}.global"))?;
        models.push(ModelRows {
            regions: f32s(r.data()),
            regions_shape: r.shape().to_vec(),
            global: f32s(g.data()),
            global_shape: g.shape().to_vec(),
        });
    }
    Ok(Some(ImageIndex { meta, models }))
}

/// Writes `dir`'s index atomically.
pub fn write_index(dir: &Path, index: &ImageIndex) -> Result<()> {
    let path = index_path(dir);
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = index
        .models
        .iter()
        .enumerate()
        .flat_map(|(i, m)| {
            let raw = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
            [
                (
                    format!("model{i}.regions"),
                    raw(&m.regions),
                    m.regions_shape.clone(),
                ),
                (
                    format!("model{i}.global"),
                    raw(&m.global),
                    m.global_shape.clone(),
                ),
            ]
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, data, shape)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| DataError::Invalid(format!("index tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = HashMap::from([(
        META_KEY.to_string(),
        serde_json::to_string(&index.meta).expect("metadata serializes"),
    )]);
    let data = safetensors::serialize(views, Some(meta))
        .map_err(|e| DataError::Invalid(format!("serializing the index: {e}")))?;
    crate::write_atomic(&path, &data)
}
