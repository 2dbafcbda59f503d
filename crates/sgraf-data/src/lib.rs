//! Data files for sgraf: `.npy` arrays (memory-mapped), per-image region
//! feature files (`.npy`, `.npz`, `.safetensors`), SCAN precomp folders, and
//! the file helpers every stage shares (shards, hashes, atomic writes).

pub mod error;
pub mod features;
pub mod files;
pub mod npy;
pub mod precomp;

pub use error::{DataError, Result};
pub use features::{list_features, load_features, Listing};
pub use files::{quick_stamp, sha256_file, Shard};
pub use npy::Npy;
pub use precomp::Precomp;

/// Writes `bytes` to `path` through a temporary sibling and a rename, so a
/// failure never leaves a half-written file.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_sibling(path);
    let res = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path));
    res.map_err(|err| {
        let _ = std::fs::remove_file(&tmp);
        DataError::Io {
            path: path.to_path_buf(),
            err,
        }
    })
}

/// `.NAME.tmp-PID` beside `path`.
pub fn tmp_sibling(path: &std::path::Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}
