//! The image index of a features folder, format 3: the folder
//! `DIR/.sgraf-index/` (hidden, so never listed as features) holds
//! immutable **segments** and **manifests**.
//!
//! - A segment (`seg-*.st`, safetensors) holds, for a batch of images, each
//!   model's region embeddings `model{i}.regions` `[n, R, d]` and visual
//!   global vectors `model{i}.global` `[n, d]` (float32), and in its
//!   metadata the files' stamps (name, size, modification time, sha256).
//!   Segments are written under a temporary name and renamed; they are never
//!   modified afterwards, so readers memory-map them. The file name carries
//!   its writer (`seg-main-…`, `seg-s0of2-…` for shard 0/2), its process and
//!   the time.
//! - A manifest (`manifest.json`, or `manifest-shard-I-of-N.json` for one
//!   shard of a distributed run) names the models (fingerprint and where
//!   they came from), the shape of the rows and the segments with their
//!   sizes, deleted rows and the CRC-32C of every [`CHECK_BLOCK`] bytes of
//!   each segment. It is stored as `{"crc32c": "…", "manifest": {…}}`, the
//!   checksum taken over the exact bytes of the inner object, and replaced
//!   atomically after each segment, so an interrupted run leaves a usable
//!   index that the next run extends.
//!
//! Readers take the union of every manifest built for the same models and,
//! for each file, a row whose stamp matches the file as it is now. Every
//! manifest is checked against its checksum, every segment against its
//! manifest (size, checksums) and its own header (dtype, shapes, row count):
//! the header's blocks are verified when a segment is opened, the data's
//! before they are first read. A damaged part is never used: its images are
//! encoded from their files (`rank`) or re-indexed (`index`). Format 2 (no
//! checksums) is not trusted: it is rebuilt.
//!
//! Locks (`flock`, through `fs4`): a run holds `lock-main` (or its shard's
//! `lock-s0of2`) for its whole length, so two runs of the same manifest take
//! turns, while different shards encode at the same time. The folder-wide
//! `lock` is only held for a moment: to read the manifests and open their
//! segments, to publish a manifest, and to collect garbage, which deletes a
//! segment no manifest names only when its writer's lock is free.
#![allow(
    unsafe_code,
    reason = "memory-maps index segments and views their aligned bytes as f32"
)]

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
pub const INDEX_VERSION: u32 = 3;
/// Bytes of a segment covered by one CRC-32C.
pub const CHECK_BLOCK: usize = 1 << 20;
const MAIN_MANIFEST: &str = "manifest.json";
const SEGMENT_META: &str = "sgraf_segment";
const LOCK_FILE: &str = "lock";
/// A segment that no manifest names, of a writer whose lock is free, is
/// only deleted past this age (a writer on another machine of a filesystem
/// whose locks are local to each machine publishes well within it).
const GC_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(3600);
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
    /// CRC-32C of each [`CHECK_BLOCK`] bytes of the file, in order.
    #[serde(default)]
    pub crc32c: Vec<u32>,
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
    let (ok, bad) = scan_manifests(dir)?;
    Ok((ok, bad.into_iter().map(|(_, why)| why).collect()))
}

/// The manifest file as written: the manifest and the checksum of its bytes.
#[derive(Deserialize)]
struct Envelope<'a> {
    crc32c: String,
    #[serde(borrow)]
    manifest: &'a serde_json::value::RawValue,
}

/// A manifest from its file's bytes, checked against its checksum.
pub fn parse_manifest(bytes: &[u8]) -> std::result::Result<Manifest, String> {
    let env: Envelope = match serde_json::from_slice(bytes) {
        Ok(e) => e,
        Err(e) => {
            #[derive(Deserialize)]
            struct Old {
                version: u32,
            }
            return Err(match serde_json::from_slice::<Old>(bytes) {
                Ok(old) if old.version == INDEX_VERSION => {
                    "a manifest without checksums (damaged or edited)".to_string()
                }
                Ok(old) => format!(
                    "index format {}, without checksums, expected {INDEX_VERSION}",
                    old.version
                ),
                Err(_) => format!("unreadable manifest: {e}"),
            });
        }
    };
    let raw = env.manifest.get().as_bytes();
    let want = format!("{:08x}", crc32c::crc32c(raw));
    if env.crc32c != want {
        return Err(format!(
            "damaged manifest: its checksum is {want}, it says {}",
            env.crc32c
        ));
    }
    let m: Manifest =
        serde_json::from_slice(raw).map_err(|e| format!("unreadable manifest: {e}"))?;
    if m.version != INDEX_VERSION {
        return Err(format!(
            "index format {}, expected {INDEX_VERSION}",
            m.version
        ));
    }
    Ok(m)
}

/// The bytes of a manifest file: `{"crc32c": "…", "manifest": {…}}`.
pub fn manifest_bytes(manifest: &Manifest) -> Vec<u8> {
    let inner = serde_json::to_vec_pretty(manifest).expect("a manifest serializes");
    let mut out = format!(
        "{{\"crc32c\": \"{:08x}\",\n\"manifest\": ",
        crc32c::crc32c(&inner)
    )
    .into_bytes();
    out.extend_from_slice(&inner);
    out.extend_from_slice(b"}\n");
    out
}

/// Manifests by file name (main first), and the (file name, problem) of
/// those that could not be read.
pub type Scanned = (Vec<(String, Manifest)>, Vec<(String, String)>);

/// Like [`read_manifests`], with the names of the manifests that could not
/// be read.
pub fn scan_manifests(dir: &Path) -> Result<Scanned> {
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
            .map_err(|e| format!("unreadable manifest: {e}"))
            .and_then(|b| parse_manifest(&b));
        match parsed {
            Ok(m) => out.push((name, m)),
            Err(e) => problems.push((name, format!("{}: {e}", path.display()))),
        }
    }
    Ok((out, problems))
}

/// Replaces a manifest atomically (the caller holds the folder's lock, see
/// [`Lock::folder`]).
pub fn write_manifest(dir: &Path, name: &str, manifest: &Manifest) -> Result<()> {
    let idx = index_dir(dir);
    std::fs::create_dir_all(&idx).map_err(|err| DataError::Io {
        path: idx.clone(),
        err,
    })?;
    sgraf_data::write_atomic(&idx.join(name), &manifest_bytes(manifest))
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

/// The writer a segment's file name carries: `main` or `s0of2`
/// (`seg-WRITER-…`, `.seg-WRITER-….tmp-…` while written).
fn writer_of(file: &str) -> Option<&str> {
    let rest = file
        .strip_prefix("seg-")
        .or_else(|| file.strip_prefix(".seg-"))?;
    rest.split_once('-').map(|(w, _)| w)
}

/// The writer of a manifest's segments (`main`, or `s0of2` for
/// `manifest-shard-0-of-2.json`); what its lock is named after.
pub fn writer(shard: Option<Shard>) -> String {
    shard.map_or_else(
        || "main".to_string(),
        |s| format!("s{}of{}", s.index, s.count),
    )
}

/// The shard a manifest's name is of (`None` for the main one or a name
/// that is no shard's).
pub fn shard_of_manifest(name: &str) -> Option<Shard> {
    let rest = name
        .strip_prefix("manifest-shard-")?
        .strip_suffix(".json")?;
    let (i, n) = rest.split_once("-of-")?;
    Shard::parse(&format!("{i}/{n}")).ok()
}

/// Deletes the segment files that no manifest of the folder lists, and the
/// temporary files of runs that died: those of the writers in `own` (this
/// run's, whose locks it holds), and those of other writers when their lock
/// is free (no run of theirs is going on) and they are older than an hour.
/// A running shard's segments, written but not yet in its manifest, are
/// never deleted. The caller holds the folder's lock.
pub fn collect_garbage(dir: &Path, own: &[String]) -> Result<usize> {
    let idx = index_dir(dir);
    let (manifests, _) = scan_manifests(dir)?;
    let used: std::collections::HashSet<&str> = manifests
        .iter()
        .flat_map(|(_, m)| m.segments.iter().map(|s| s.file.as_str()))
        .collect();
    let mut removed = 0;
    let Ok(entries) = std::fs::read_dir(&idx) else {
        return Ok(0);
    };
    // Per writer: whether its segments may go (its lock is held meanwhile).
    let mut free: HashMap<String, Option<Lock>> = HashMap::new();
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(w) = writer_of(&name) else {
            continue;
        };
        if name.starts_with("seg-") && used.contains(name.as_str()) {
            continue;
        }
        if !own.iter().any(|o| o == w) {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= GC_MIN_AGE);
            if !old {
                continue;
            }
            let lock = free
                .entry(w.to_string())
                .or_insert_with(|| Lock::try_writer(dir, w).ok().flatten());
            if lock.is_none() {
                continue;
            }
        }
        if std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// An exclusive lock (`flock`, through `fs4`) on a file of a folder's index,
/// released when dropped.
pub struct Lock {
    _file: File,
}

impl Lock {
    /// The folder-wide lock, held for a moment (reading the manifests,
    /// publishing one, collecting garbage).
    pub fn folder(dir: &Path) -> Result<Self> {
        Self::acquire(dir, LOCK_FILE, &mut || {})
    }

    /// The lock of a writer (`main`, `s0of2`), held by a run for its whole
    /// length; `waiting` is called once if another process holds it.
    pub fn writer(dir: &Path, writer: &str, waiting: &mut dyn FnMut()) -> Result<Self> {
        Self::acquire(dir, &format!("lock-{writer}"), waiting)
    }

    /// A writer's lock if no one holds it.
    pub fn try_writer(dir: &Path, writer: &str) -> Result<Option<Self>> {
        let (file, path) = Self::open(dir, &format!("lock-{writer}"))?;
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => Ok(Some(Self { _file: file })),
            Err(fs4::TryLockError::WouldBlock) => Ok(None),
            Err(fs4::TryLockError::Error(err)) => Err(lock_error(&path, err)),
        }
    }

    fn open(dir: &Path, name: &str) -> Result<(File, PathBuf)> {
        let idx = index_dir(dir);
        std::fs::create_dir_all(&idx).map_err(|err| DataError::Io {
            path: idx.clone(),
            err,
        })?;
        let path = idx.join(name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|err| DataError::Io {
                path: path.clone(),
                err,
            })?;
        Ok((file, path))
    }

    /// Takes the lock `name`, calling `waiting` once if another process
    /// holds it.
    fn acquire(dir: &Path, name: &str, waiting: &mut dyn FnMut()) -> Result<Self> {
        let (file, path) = Self::open(dir, name)?;
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                waiting();
                fs4::FileExt::lock(&file).map_err(|err| lock_error(&path, err))?;
            }
            Err(fs4::TryLockError::Error(err)) => return Err(lock_error(&path, err)),
        }
        Ok(Self { _file: file })
    }
}

/// The error of a lock that could not be taken; a filesystem without
/// `flock` (Lustre mounted without `-o flock`, NFS with `nolock`, some FUSE
/// filesystems) gets a message naming the file and what to do.
pub fn lock_error(path: &Path, err: std::io::Error) -> DataError {
    let unsupported = matches!(
        err.raw_os_error(),
        Some(code) if [libc::ENOLCK, libc::EOPNOTSUPP, libc::ENOTSUP, libc::ENOSYS].contains(&code)
    ) || err.kind() == std::io::ErrorKind::Unsupported;
    if !unsupported {
        return DataError::Io {
            path: path.to_path_buf(),
            err,
        };
    }
    DataError::Invalid(format!(
        "{}: the filesystem does not support file locks (flock: {err}), which keep concurrent \
         index runs from overwriting each other's work. Mount it with locks (Lustre: -o flock; \
         NFS: without -o nolock, with the lock daemon running), or index a copy of the folder \
         on a local disk and copy its {INDEX_DIR} folder back.",
        path.display()
    ))
}

/// The metadata a segment carries about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SegmentMeta {
    version: u32,
    models: Vec<String>,
    files: Vec<FileStamp>,
}

/// A segment opened read-only, memory-mapped and checked: its header when
/// opened, its data's blocks before they are first read.
pub struct Segment {
    pub file: String,
    pub files: Vec<FileStamp>,
    path: PathBuf,
    map: memmap2::Mmap,
    /// The manifest's checksums, and which blocks were verified.
    crc32c: Vec<u32>,
    verified: Vec<std::sync::atomic::AtomicBool>,
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
        if seg.crc32c.len() as u64 != len.div_ceil(CHECK_BLOCK as u64) {
            return Err(bad(format!(
                "the manifest has {} checksums for a segment of {len} bytes",
                seg.crc32c.len()
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
        let verified = (0..seg.crc32c.len())
            .map(|_| std::sync::atomic::AtomicBool::new(false))
            .collect();
        let mut this = Self {
            file: seg.file.clone(),
            files: Vec::new(),
            path: path.clone(),
            map,
            crc32c: seg.crc32c.clone(),
            verified,
            tensors: Vec::new(),
            regions,
            dim,
        };
        this.verify(0..8 + header_len as usize)?;
        let map = &this.map;
        let (_, header) = safetensors::SafeTensors::read_metadata(map)
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
        this.files = meta.files;
        this.tensors = tensors;
        Ok(this)
    }

    pub fn rows(&self) -> usize {
        self.files.len()
    }

    /// Checks the blocks that hold `bytes` against the manifest's checksums
    /// (each block once).
    pub fn verify(&self, bytes: Range<usize>) -> Result<()> {
        use std::sync::atomic::Ordering;
        if bytes.is_empty() {
            return Ok(());
        }
        for b in bytes.start / CHECK_BLOCK..bytes.end.div_ceil(CHECK_BLOCK) {
            if self.verified[b].load(Ordering::Relaxed) {
                continue;
            }
            let block = &self.map[b * CHECK_BLOCK..((b + 1) * CHECK_BLOCK).min(self.map.len())];
            if crc32c::crc32c(block) != self.crc32c[b] {
                return Err(DataError::Format {
                    path: self.path.clone(),
                    msg: format!(
                        "damaged: bytes {}..{} do not match their checksum in the manifest",
                        b * CHECK_BLOCK,
                        b * CHECK_BLOCK + block.len()
                    ),
                });
            }
            self.verified[b].store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Checks the whole file.
    pub fn verify_all(&self) -> Result<()> {
        self.verify(0..self.map.len())
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
    /// Verified first: a damaged block is an error, never data.
    fn floats(
        &self,
        bytes: Range<usize>,
        rows: Range<usize>,
        per_row: usize,
    ) -> Result<Cow<'_, [f32]>> {
        assert!(rows.end <= self.rows(), "rows past the segment");
        let at = bytes.start + rows.start * per_row * 4..bytes.start + rows.end * per_row * 4;
        self.verify(at.clone())?;
        let b = &self.map[at];
        if cfg!(target_endian = "little") {
            // SAFETY: every bit pattern is a valid f32, and align_to only
            // yields the part of `b` that is aligned for f32.
            let (head, mid, tail) = unsafe { b.align_to::<f32>() };
            if head.is_empty() && tail.is_empty() {
                return Ok(Cow::Borrowed(mid));
            }
        }
        Ok(Cow::Owned(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
        ))
    }

    /// Region embeddings of `rows` for model `m`: `[rows, R, d]` row-major.
    pub fn regions(&self, m: usize, rows: Range<usize>) -> Result<Cow<'_, [f32]>> {
        let per = self.regions * self.dim;
        self.floats(self.tensors[m].0.clone(), rows, per)
    }

    /// Visual global vectors of `rows` for model `m`: `[rows, d]`.
    pub fn global(&self, m: usize, rows: Range<usize>) -> Result<Cow<'_, [f32]>> {
        self.floats(self.tensors[m].1.clone(), rows, self.dim)
    }
}

/// The CRC-32C of each [`CHECK_BLOCK`] bytes of a segment.
pub fn checksums(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks(CHECK_BLOCK).map(crc32c::crc32c).collect()
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
            crc32c: checksums(&bytes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filesystem_without_locks_is_named_with_what_to_do() {
        let path = Path::new("/lustre/photos/.sgraf-index/lock-main");
        for code in [libc::ENOLCK, libc::EOPNOTSUPP, libc::ENOSYS] {
            let msg = lock_error(path, std::io::Error::from_raw_os_error(code)).to_string();
            assert!(
                msg.contains("/lustre/photos/.sgraf-index/lock-main")
                    && msg.contains("does not support file locks")
                    && msg.contains("-o flock"),
                "{msg}"
            );
        }
        let msg = lock_error(path, std::io::Error::from_raw_os_error(libc::EACCES)).to_string();
        assert!(!msg.contains("does not support"), "{msg}");
    }

    #[test]
    fn writers_of_segments_and_manifests() {
        assert_eq!(writer_of("seg-main-12-34.st"), Some("main"));
        assert_eq!(writer_of(".seg-s1of4-12-34.st.tmp-12-0"), Some("s1of4"));
        assert_eq!(writer_of("manifest.json"), None);
        let s = shard_of_manifest("manifest-shard-1-of-4.json").unwrap();
        assert_eq!(writer(Some(s)), "s1of4");
        assert_eq!(shard_of_manifest("manifest.json"), None);
    }

    #[test]
    fn garbage_collection_spares_running_writers() {
        let dir = std::env::temp_dir().join(format!("sgraf-gc-{}", std::process::id()));
        let idx = index_dir(&dir);
        std::fs::create_dir_all(&idx).unwrap();
        for f in ["seg-main-1-1.st", "seg-s0of2-1-1.st", "seg-s1of2-1-1.st"] {
            std::fs::write(idx.join(f), b"x").unwrap();
        }
        let old = std::time::SystemTime::now() - GC_MIN_AGE * 2;
        for f in ["seg-s0of2-1-1.st", "seg-s1of2-1-1.st"] {
            std::fs::File::options()
                .write(true)
                .open(idx.join(f))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        // Shard 1 is running (its lock is held): its segment stays.
        let running = Lock::try_writer(&dir, "s1of2").unwrap().unwrap();
        assert_eq!(collect_garbage(&dir, &["main".to_string()]).unwrap(), 2);
        assert!(idx.join("seg-s1of2-1-1.st").exists());
        drop(running);
        assert_eq!(collect_garbage(&dir, &[]).unwrap(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
