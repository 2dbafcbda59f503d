//! Helpers on the files of a folder that every stage shares: shards of a
//! folder, content hashes and quick stamps.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{DataError, Result};

/// One of `count` deterministic parts of a folder's files (`I/N`, 0-based),
/// for spreading `extract` and `index` over machines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// `I/N` with `0 <= I < N`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            DataError::Invalid(format!(
                "--shard must be I/N with 0 <= I < N (e.g. 0/4 ... 3/4), found {s:?}"
            ))
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<usize>().map_err(|_| bad())?,
            n.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }

    /// Whether this shard handles the file `name` (relative to the folder):
    /// FNV-1a of the name, so every machine agrees without coordination.
    pub fn owns(&self, name: &str) -> bool {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.as_bytes() {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        (h % self.count as u64) as usize == self.index
    }

    pub fn manifest_name(&self) -> String {
        format!("manifest-shard-{}-of-{}.json", self.index, self.count)
    }
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let io = |err| DataError::Io {
        path: path.to_path_buf(),
        err,
    };
    let mut f = File::open(path).map_err(io)?;
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
