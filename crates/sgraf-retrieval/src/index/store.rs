//! The image index of a features folder, format 2: the folder
//! `DIR/.sgraf-index/` (hidden, so never listed as features) holds
//! immutable **segments** and **manifests**.
//!
//! - A segment (`seg-*.st`, safetensors) holds, for a batch of images, each
//!   model's region embeddings `model{i}.regions` `[n, R, d]` and visual
//!   global vectors `model{i}.global` `[n, d]` (float32), and in its
//!   metadata the files' stamps (name, size, modification time, sha256).
//!   Segments are written under a temporary name and renamed; they are never
//!   modified afterwards, so readers memory-map them.
//! - A manifest (`manifest.json`, or `manifest-shard-I-of-N.json` for one
//!   shard of a distributed run) names the models (fingerprint and where
//!   they came from), the shape of the rows and the segments with their
//!   sizes and deleted rows. It is replaced atomically after each segment,
//!   so an interrupted run leaves a usable index that the next run extends.
//!
//! Readers take the union of every manifest built for the same models and,
//! for each file, a row whose stamp matches the file as it is now. Every
//! segment is checked against its manifest and its own header (size, dtype,
//! shapes, row count); a damaged one is never used.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use sgraf_data::files::Shard;
use sgraf_data::{DataError, Result};

/// The index folder inside a features folder.
pub const INDEX_DIR: &str = ".sgraf-index";
/// Format 1: one safetensors file rewritten whole (rebuilt when found).
pub const LEGACY_INDEX_FILE: &str = ".sgraf-index.safetensors";
pub const INDEX_VERSION: u32 = 2;
const MAIN_MANIFEST: &str = "manifest.json";
const SEGMENT_META: &str = "sgraf_segment";
const LOCK_FILE: &str = "lock";
/// Largest segment header read (the stamps of a few thousand files).
const MAX_HEADER: u64 = 64 << 20;

/// What identifies a features file's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    pub name: String,
    pub size: u64,
    pub mtime_ns: u128,
    pub sha256: String,
}

/// One model of an index: its fingerprint and where it was loaded from (an
/// absolute folder or a Hub id), so that `rank` can load it again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub fingerprint: String,
    pub source: String,
}

/// A segment as a manifest lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRef {
    pub file: String,
    pub rows: usize,
    /// Size of the file in bytes: a partial or replaced file differs.
    pub bytes: u64,
    /// Rows superseded or removed since the segment was written.
    #[serde(default)]
    pub deleted: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub models: Vec<ModelSpec>,
    /// Regions per image and embedding size of every row.
    pub regions: usize,
    pub dim: usize,
    pub segments: Vec<SegmentRef>,
}

impl Manifest {
    pub fn fingerprints(&self) -> Vec<String> {
        self.models.iter().map(|m| m.fingerprint.clone()).collect()
    }
}

/// `DIR/.sgraf-index`.
pub fn index_dir(dir: &Path) -> PathBuf {
    dir.join(INDEX_DIR)
}

/// The manifest a run writes: the main one, or its shard's.
pub fn manifest_name(shard: Option<Shard>) -> String {
    shard.map_or_else(|| MAIN_MANIFEST.to_string(), |s| s.manifest_name())
}

/// Manifests by file name (main first), and the problems of those that
/// could not be read.
pub type Manifests = (Vec<(String, Manifest)>, Vec<String>);

/// Every manifest of `dir`'s index by file name (main first), and the
/// problems of those that could not be read (they are not used).
pub fn read_manifests(dir: &Path) -> Result<Manifests> {
    let idx = index_dir(dir);
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let entries = match std::fs::read_dir(&idx) {
        Ok(e) => e,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok((out, problems)),
        Err(err) => return Err(DataError::Io { path: idx, err }),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("manifest") && n.ends_with(".json"))
        .collect();
    names.sort_by_key(|n| (n != MAIN_MANIFEST, n.clone()));
    for name in names {
        let path = idx.join(&name);
        let parsed = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Manifest>(&b).map_err(|e| e.to_string()));
        match parsed {
            Ok(m) if m.version == INDEX_VERSION => out.push((name, m)),
            Ok(m) => problems.push(format!(
                "{}: index format {}, expected {INDEX_VERSION}",
                path.display(),
                m.version
            )),
            Err(e) => problems.push(format!("{}: unreadable manifest: {e}", path.display())),
        }
    }
    Ok((out, problems))
}

/// Replaces a manifest atomically.
pub fn write_manifest(dir: &Path, name: &str, manifest: &Manifest) -> Result<()> {
    let idx = index_dir(dir);
    std::fs::create_dir_all(&idx).map_err(|err| DataError::Io {
        path: idx.clone(),
        err,
    })?;
    let json = serde_json::to_vec_pretty(manifest).expect("a manifest serializes");
    sgraf_data::write_atomic(&idx.join(name), &json)
}

/// Removes a manifest (a shard's, once joined into the main one).
pub fn remove_manifest(dir: &Path, name: &str) -> Result<()> {
    let path = index_dir(dir).join(name);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(DataError::Io { path, err }),
    }
}

/// Deletes the segment files that no manifest in `keep` lists, and the
/// temporary files of runs that died.
pub fn collect_garbage(dir: &Path, keep: &[&Manifest]) -> Result<usize> {
    let idx = index_dir(dir);
    let used: std::collections::HashSet<&str> = keep
        .iter()
        .flat_map(|m| m.segments.iter().map(|s| s.file.as_str()))
        .collect();
    let mut removed = 0;
    let Ok(entries) = std::fs::read_dir(&idx) else {
        return Ok(0);
    };
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let stale_tmp = name.starts_with(".seg-") && name.contains(".tmp");
        let unused = name.starts_with("seg-") && !used.contains(name.as_str());
        if (unused || stale_tmp) && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// An exclusive lock on a folder's index, held while a run writes it; a
/// second `index` on the same folder waits for the first.
pub struct IndexLock {
    _file: File,
}

impl IndexLock {
    /// Takes the lock, calling `waiting` once if another process holds it.
    pub fn acquire(dir: &Path, waiting: &mut dyn FnMut()) -> Result<Self> {
        let idx = index_dir(dir);
        std::fs::create_dir_all(&idx).map_err(|err| DataError::Io {
            path: idx.clone(),
            err,
        })?;
        let path = idx.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|err| DataError::Io {
                path: path.clone(),
                err,
            })?;
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        // SAFETY: flock on a descriptor this function owns; no memory is shared.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(DataError::Io { path, err });
            }
            waiting();
            // SAFETY: as above.
            if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
                return Err(DataError::Io {
                    path,
                    err: std::io::Error::last_os_error(),
                });
            }
        }
        Ok(Self { _file: file })
    }
}

/// The metadata a segment carries about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SegmentMeta {
    version: u32,
    models: Vec<String>,
    files: Vec<FileStamp>,
}

/// A segment opened read-only, memory-mapped and checked.
pub struct Segment {
    pub file: String,
    pub files: Vec<FileStamp>,
    map: memmap2::Mmap,
    /// Per model: byte ranges of the regions and the global vectors.
    tensors: Vec<(Range<usize>, Range<usize>)>,
    regions: usize,
    dim: usize,
}

impl Segment {
    /// Opens `seg` of `dir`'s index for models of these fingerprints and
    /// rows of `regions x dim`; any mismatch is an error naming the file.
    pub fn open(
        dir: &Path,
        seg: &SegmentRef,
        fingerprints: &[String],
        regions: usize,
        dim: usize,
    ) -> Result<Self> {
        let path = index_dir(dir).join(&seg.file);
        let bad = |msg: String| DataError::Format {
            path: path.clone(),
            msg,
        };
        if seg.file.contains('/') || seg.file.contains("..") {
            return Err(bad("is not a segment file name".into()));
        }
        let file = File::open(&path).map_err(|err| DataError::Io {
            path: path.clone(),
            err,
        })?;
        let len = file
            .metadata()
            .map_err(|err| DataError::Io {
                path: path.clone(),
                err,
            })?
            .len();
        if len != seg.bytes {
            return Err(bad(format!(
                "holds {len} bytes, the manifest says {} (partial or replaced)",
                seg.bytes
            )));
        }
        // SAFETY: segments are written under a temporary name and renamed
        // into place, and never written again: the mapping is of a file
        // that does not change while mapped (a run that replaces the index
        // writes new files; unlinking keeps this mapping valid).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|err| DataError::Io {
            path: path.clone(),
            err,
        })?;
        if map.len() < 8 {
            return Err(bad("is too short for a segment".into()));
        }
        let header_len = u64::from_le_bytes(map[..8].try_into().expect("8 bytes"));
        if header_len > MAX_HEADER || header_len.saturating_add(8) > len {
            return Err(bad(format!(
                "declares a header of {header_len} bytes in a file of {len}"
            )));
        }
        let (_, header) = safetensors::SafeTensors::read_metadata(&map)
            .map_err(|e| bad(format!("is not a readable segment: {e}")))?;
        let meta: SegmentMeta = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(SEGMENT_META))
            .ok_or_else(|| bad("has no segment metadata".into()))
            .and_then(|s| {
                serde_json::from_str(s).map_err(|e| bad(format!("has unreadable metadata: {e}")))
            })?;
        if meta.models != fingerprints {
            return Err(bad("was written for other models".into()));
        }
        let n = meta.files.len();
        if n != seg.rows {
            return Err(bad(format!(
                "holds {n} files, the manifest says {} rows",
                seg.rows
            )));
        }
        if seg.deleted.iter().any(|&r| r >= n) {
            return Err(bad("the manifest deletes rows it does not have".into()));
        }
        let start = 8 + header_len as usize;
        let mut tensors = Vec::with_capacity(fingerprints.len());
        for i in 0..fingerprints.len() {
            let range = |name: String, shape: &[usize]| -> Result<Range<usize>> {
                let info = header
                    .tensors()
                    .get(&name)
                    .cloned()
                    .ok_or_else(|| bad(format!("has no tensor {name}")))?;
                if info.dtype != safetensors::Dtype::F32 || info.shape != shape {
                    return Err(bad(format!(
                        "{name} is {:?} {:?}, expected F32 {shape:?}",
                        info.dtype, info.shape
                    )));
                }
                let want = shape
                    .iter()
                    .try_fold(4usize, |a, &b| a.checked_mul(b))
                    .ok_or_else(|| bad(format!("{name}: size overflows")))?;
                let (a, b) = info.data_offsets;
                if b.checked_sub(a) != Some(want)
                    || start.checked_add(b).is_none_or(|e| e > map.len())
                {
                    return Err(bad(format!("{name}: data outside the file")));
                }
                Ok(start + a..start + b)
            };
            let r = range(format!("model{i}.regions"), &[n, regions, dim])?;
            let g = range(format!("model{i}.global"), &[n, dim])?;
            tensors.push((r, g));
        }
        Ok(Self {
            file: seg.file.clone(),
            files: meta.files,
            map,
            tensors,
            regions,
            dim,
        })
    }

    pub fn rows(&self) -> usize {
        self.files.len()
    }

    /// Drops the pages read so far from this process's memory (they stay in
    /// the page cache): a streamed ranking then holds one chunk, not every
    /// segment it has read.
    pub fn release(&self) {
        // SAFETY: the mapping is a read-only view of a file that does not
        // change (see `open`); MADV_DONTNEED on it only discards the
        // process's page-table entries, and the next read faults the same
        // bytes back in from the file. No reference into the mapping
        // outlives this call in a way that could observe a difference.
        let _ = unsafe {
            self.map
                .unchecked_advise(memmap2::UncheckedAdvice::DontNeed)
        };
    }

    /// The floats of `rows`, borrowed from the mapping when it is aligned
    /// (safetensors pads its header to 8 bytes, so it is) on a little-endian
    /// machine, copied otherwise.
    fn floats(&self, bytes: Range<usize>, rows: Range<usize>, per_row: usize) -> Cow<'_, [f32]> {
        assert!(rows.end <= self.rows(), "rows past the segment");
        let b = &self.map[bytes][rows.start * per_row * 4..rows.end * per_row * 4];
        if cfg!(target_endian = "little") {
            // SAFETY: every bit pattern is a valid f32, and align_to only
            // yields the part of `b` that is aligned for f32.
            let (head, mid, tail) = unsafe { b.align_to::<f32>() };
            if head.is_empty() && tail.is_empty() {
                return Cow::Borrowed(mid);
            }
        }
        Cow::Owned(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
        )
    }

    /// Region embeddings of `rows` for model `m`: `[rows, R, d]` row-major.
    pub fn regions(&self, m: usize, rows: Range<usize>) -> Cow<'_, [f32]> {
        let per = self.regions * self.dim;
        self.floats(self.tensors[m].0.clone(), rows, per)
    }

    /// Visual global vectors of `rows` for model `m`: `[rows, d]`.
    pub fn global(&self, m: usize, rows: Range<usize>) -> Cow<'_, [f32]> {
        self.floats(self.tensors[m].1.clone(), rows, self.dim)
    }
}

/// Rows collected for a new segment.
pub struct SegmentWriter {
    prefix: String,
    files: Vec<FileStamp>,
    /// Per model: regions and global vectors, row-major.
    models: Vec<(Vec<f32>, Vec<f32>)>,
    regions: usize,
    dim: usize,
}

impl SegmentWriter {
    /// `prefix` makes the file names of concurrent writers distinct (the
    /// shard, the process).
    pub fn new(prefix: &str, n_models: usize, regions: usize, dim: usize) -> Self {
        Self {
            prefix: prefix.to_string(),
            files: Vec::new(),
            models: vec![(Vec::new(), Vec::new()); n_models],
            regions,
            dim,
        }
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Appends one image: per model its regions `[R * d]` and global `[d]`.
    pub fn push(&mut self, stamp: FileStamp, rows: &[(&[f32], &[f32])]) -> Result<()> {
        let (rd, d) = (self.regions * self.dim, self.dim);
        if rows.len() != self.models.len()
            || rows.iter().any(|(r, g)| r.len() != rd || g.len() != d)
        {
            return Err(DataError::Invalid(format!(
                "index row for {} of the wrong size: expected {} models of [{}, {d}] + [{d}]",
                stamp.name,
                self.models.len(),
                self.regions
            )));
        }
        for ((r_acc, g_acc), (r, g)) in self.models.iter_mut().zip(rows) {
            r_acc.extend_from_slice(r);
            g_acc.extend_from_slice(g);
        }
        self.files.push(stamp);
        Ok(())
    }

    /// Writes the collected rows as a segment of `dir`'s index (temporary
    /// name, then renamed) and empties the writer.
    pub fn finish(&mut self, dir: &Path, fingerprints: &[String]) -> Result<SegmentRef> {
        let n = self.files.len();
        let raw = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let data: Vec<(String, Vec<u8>, Vec<usize>)> = self
            .models
            .iter()
            .enumerate()
            .flat_map(|(i, (r, g))| {
                [
                    (
                        format!("model{i}.regions"),
                        raw(r),
                        vec![n, self.regions, self.dim],
                    ),
                    (format!("model{i}.global"), raw(g), vec![n, self.dim]),
                ]
            })
            .collect();
        let views = data
            .iter()
            .map(|(name, bytes, shape)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| DataError::Invalid(format!("index tensor {name}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let meta = SegmentMeta {
            version: INDEX_VERSION,
            models: fingerprints.to_vec(),
            files: std::mem::take(&mut self.files),
        };
        let meta = HashMap::from([(
            SEGMENT_META.to_string(),
            serde_json::to_string(&meta).expect("metadata serializes"),
        )]);
        let bytes = safetensors::serialize(views, Some(meta))
            .map_err(|e| DataError::Invalid(format!("serializing an index segment: {e}")))?;
        drop(data);
        for m in &mut self.models {
            m.0.clear();
            m.1.clear();
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let file = format!("seg-{}-{}-{now}.st", self.prefix, std::process::id());
        let idx = index_dir(dir);
        std::fs::create_dir_all(&idx).map_err(|err| DataError::Io {
            path: idx.clone(),
            err,
        })?;
        sgraf_data::write_atomic(&idx.join(&file), &bytes)?;
        Ok(SegmentRef {
            file,
            rows: n,
            bytes: bytes.len() as u64,
            deleted: Vec::new(),
        })
    }
}
