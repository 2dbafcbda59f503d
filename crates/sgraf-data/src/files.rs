//! Helpers on the files of a folder that every stage shares: shards of a
//! folder, content hashes, quick stamps and atomic replacement of files and
//! folders.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

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

/// A file or folder being written under a temporary sibling name
/// (`.NAME.tmp-PID-N`), renamed over `dst` by [`Pending::commit`]; dropped
/// uncommitted, the temporary is removed. Readers of `dst` see the old
/// content or the new one, never a partial one:
///
/// - a file replaces `dst` with one `rename`;
/// - a folder takes the place of a missing `dst` with one `rename`, and an
///   existing folder is swapped with it atomically (`renameat2` with
///   `RENAME_EXCHANGE` on Linux) and then removed. Where the swap is not
///   available, the old folder is renamed aside (`.NAME.old-PID-N`), the
///   new one in, and the old one removed; if the second rename fails the
///   old folder is put back, and the error says where it is if even that
///   fails.
#[derive(Debug)]
pub struct Pending {
    tmp: Option<PathBuf>,
    dst: PathBuf,
}

impl Pending {
    /// A file: write it at [`Pending::path`].
    pub fn file(dst: &Path) -> Self {
        Self {
            tmp: Some(tmp_sibling(dst)),
            dst: dst.to_path_buf(),
        }
    }

    /// A folder, created empty at [`Pending::path`] (its parents too).
    pub fn dir(dst: &Path) -> Result<Self> {
        let tmp = tmp_sibling(dst);
        std::fs::create_dir_all(&tmp).map_err(|err| DataError::Io {
            path: tmp.clone(),
            err,
        })?;
        Ok(Self {
            tmp: Some(tmp),
            dst: dst.to_path_buf(),
        })
    }

    /// Where to write.
    pub fn path(&self) -> &Path {
        self.tmp.as_deref().expect("not yet committed")
    }

    /// The path it replaces.
    pub fn target(&self) -> &Path {
        &self.dst
    }

    /// Moves the written file or folder to its place (see [`Pending`]).
    pub fn commit(mut self) -> Result<()> {
        let tmp = self.tmp.clone().expect("not yet committed");
        let dst = self.dst.clone();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |err| DataError::Io { path, err }
        };
        // On disk before it is in place: after a power loss the name shows
        // either the old content or the whole new one, never an empty file.
        sync_tree(&tmp).map_err(io(&tmp))?;
        let replacing_dir =
            tmp.is_dir() && std::fs::symlink_metadata(&dst).is_ok_and(|m| m.file_type().is_dir());
        if !replacing_dir {
            std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
            self.tmp = None;
        } else if !replace_dir(&tmp, &dst, exchange)? {
            self.tmp = None;
        }
        // Swapped: `tmp` now holds the old folder, which `drop` removes.
        if let Some(parent) = dst.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent).map_err(io(parent))?;
        }
        Ok(())
    }
}

/// `fsync` of a file, or of a folder we wrote and everything in it.
fn sync_tree(path: &Path) -> std::io::Result<()> {
    if !path.is_dir() {
        return std::fs::File::open(path)?.sync_all();
    }
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            } else if entry.file_type()?.is_file() {
                std::fs::File::open(entry.path())?.sync_all()?;
            }
        }
        sync_dir(&dir)?;
    }
    Ok(())
}

/// `fsync` of a folder: its entries (a rename into it) reach the disk.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Puts the folder `tmp` in the place of the folder `dst`: swapped by
/// `exchange` (true), else by renaming `dst` aside (false, the old folder
/// removed). On an error `dst` is the old folder.
fn replace_dir(
    tmp: &Path,
    dst: &Path,
    exchange: fn(&Path, &Path) -> std::io::Result<()>,
) -> Result<bool> {
    if exchange(tmp, dst).is_ok() {
        return Ok(true);
    }
    let old = sibling(dst, "old");
    std::fs::rename(dst, &old).map_err(|err| DataError::Io {
        path: dst.to_path_buf(),
        err,
    })?;
    if let Err(err) = std::fs::rename(tmp, dst) {
        if let Err(back) = std::fs::rename(&old, dst) {
            return Err(DataError::Invalid(format!(
                "{}: could not move the new folder in ({err}) nor the old one back ({back}); \
                 the old folder is {}, the new one {}",
                dst.display(),
                old.display(),
                tmp.display()
            )));
        }
        return Err(DataError::Io {
            path: dst.to_path_buf(),
            err,
        });
    }
    let _ = std::fs::remove_dir_all(&old);
    Ok(false)
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            if tmp.is_dir() {
                let _ = std::fs::remove_dir_all(&tmp);
            } else {
                let _ = std::fs::remove_file(&tmp);
            }
        }
    }
}

/// Swaps two paths atomically.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).map_err(std::io::Error::from)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Writes `bytes` to `path` through a temporary sibling and a rename, so a
/// failure never leaves a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let p = Pending::file(path);
    std::fs::write(p.path(), bytes).map_err(|err| DataError::Io {
        path: path.to_path_buf(),
        err,
    })?;
    p.commit()
}

/// `.NAME.tmp-PID-N` beside `path`, distinct for every call of a process.
pub fn tmp_sibling(path: &Path) -> PathBuf {
    sibling(path, "tmp")
}

fn sibling(path: &Path, tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(
        ".{name}.{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("sgraf-data-files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn files_and_folders_are_replaced_whole() {
        let d = scratch("replace");
        let f = d.join("a.json");
        write_atomic(&f, b"one").unwrap();
        write_atomic(&f, b"two").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");

        let best = d.join("best");
        for content in ["first", "second"] {
            let p = Pending::dir(&best).unwrap();
            std::fs::write(p.path().join("w"), content).unwrap();
            assert!(p.path() != best);
            p.commit().unwrap();
            assert_eq!(std::fs::read_to_string(best.join("w")).unwrap(), content);
        }
        // Dropped uncommitted: nothing changes, nothing is left behind.
        let p = Pending::dir(&best).unwrap();
        std::fs::write(p.path().join("w"), "third").unwrap();
        drop(p);
        assert_eq!(std::fs::read_to_string(best.join("w")).unwrap(), "second");
        assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_failed_replacement_keeps_the_old_folder() {
        let d = scratch("fail");
        let best = d.join("best");
        let p = Pending::dir(&best).unwrap();
        std::fs::write(p.path().join("w"), "old").unwrap();
        p.commit().unwrap();
        // The new folder vanished before the commit: the rename fails and
        // the old folder stays where it was.
        let p = Pending::dir(&best).unwrap();
        std::fs::remove_dir_all(p.path()).unwrap();
        std::fs::write(p.path(), "not a folder").unwrap();
        assert!(p.commit().is_err());
        assert_eq!(std::fs::read_to_string(best.join("w")).unwrap(), "old");
        assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));

        // Without the atomic swap: renamed aside, and put back when the new
        // folder cannot move in.
        let none = |_: &Path, _: &Path| Err(std::io::ErrorKind::Unsupported.into());
        let missing = d.join(".gone");
        assert!(replace_dir(&missing, &best, none).is_err());
        assert_eq!(std::fs::read_to_string(best.join("w")).unwrap(), "old");
        let new = d.join(".new");
        std::fs::create_dir(&new).unwrap();
        std::fs::write(new.join("w"), "new").unwrap();
        assert!(!replace_dir(&new, &best, none).unwrap());
        assert_eq!(std::fs::read_to_string(best.join("w")).unwrap(), "new");
        assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
