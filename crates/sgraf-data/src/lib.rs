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
pub use files::{quick_stamp, sha256_file, tmp_sibling, write_atomic, Pending, Shard};
pub use npy::Npy;
pub use precomp::Precomp;
