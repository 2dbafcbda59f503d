//! Building, updating and streaming the image index of a features folder
//! (the format: [`store`]).
//!
//! `update` encodes only what changed, in batches, and commits a segment at
//! a time; `rank` streams the segments memory-mapped, a chunk of images at a
//! time, so memory follows the chunk and never the folder.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use sgraf_core::ImageSide;
use sgraf_data::files::{quick_stamp, sha256_file, Shard};

pub mod store;

use sha2::{Digest, Sha256};
use store::{
    self as ix, FileStamp, Lock, Manifest, ModelSpec, Segment, SegmentRef, SegmentWriter,
    INDEX_VERSION, LEGACY_INDEX_FILE,
};
pub use store::{index_dir, INDEX_DIR};

use crate::scorer::IMAGE_CHUNK;
use crate::{Error, Result, Scorer};

/// Images per segment: a segment is written, then committed to the
/// manifest, so an interrupted run loses at most this many encodings.
pub const SEGMENT_ROWS: usize = 512;
/// Images scored per step of a streamed ranking.
pub const RANK_CHUNK: usize = 256;
/// A segment with fewer live rows than this fraction is rewritten.
const COMPACT_BELOW: f64 = 0.5;

/// Identifies a model folder's content: its config and weights.
pub fn model_fingerprint(dir: &Path) -> Result<String> {
    let mut h = Sha256::new();
    for file in [sgraf_core::CONFIG_FILE, sgraf_core::WEIGHTS_FILE] {
        h.update(sha256_file(&dir.join(file))?.as_bytes());
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// What [`update`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpdateReport {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub unchanged: usize,
    /// Files that could not be indexed (unreadable, wrong shape), with why.
    pub skipped: Vec<(String, String)>,
    /// An index for other models, or of an older format, was discarded.
    pub discarded: bool,
    /// Damaged or missing segments and manifests: their files were re-indexed.
    pub damaged: Vec<String>,
    /// Segments rewritten without their deleted rows.
    pub compacted: usize,
    /// Rows in the index after the run (this shard's own, with `--shard`).
    pub rows: usize,
}

/// Region features of one file, checked against the models.
fn load_one(scorer: &Scorer, path: &Path) -> Result<Vec<f32>> {
    let (shape, data) = sgraf_data::load_features(path)?;
    scorer.check_features(&shape, &path.display().to_string())?;
    Ok(data)
}

/// What [`encode_chunks`] calls with each chunk's names and image sides.
pub type ChunkFn<'a> = dyn FnMut(&[String], Vec<ImageSide>) -> Result<()> + 'a;

/// Encodes the feature files `names` of `dir`, [`IMAGE_CHUNK`] at a time,
/// calling `each` with every chunk's names and sides (one per model); a
/// file that cannot be read is passed to `skip` with the reason.
pub fn encode_chunks(
    scorer: &Scorer,
    dir: &Path,
    names: &[String],
    skip: &mut dyn FnMut(&str, String),
    each: &mut ChunkFn,
) -> Result<()> {
    for chunk in names.chunks(IMAGE_CHUNK) {
        let mut feats = Vec::new();
        let mut ok = Vec::with_capacity(chunk.len());
        for name in chunk {
            match load_one(scorer, &dir.join(name)) {
                Ok(f) => {
                    feats.extend(f);
                    ok.push(name.clone());
                }
                Err(e) => skip(name, e.to_string()),
            }
        }
        if !ok.is_empty() {
            let sides = scorer.image_sides(feats, ok.len())?;
            each(&ok, sides)?;
        }
    }
    Ok(())
}

/// `[k, R, d]` and `[k, d]` of image `i` of a side.
fn side_rows(side: &ImageSide) -> Result<(Vec<f32>, Vec<f32>)> {
    Ok((
        side.regions.flatten_all()?.to_vec1()?,
        side.global.flatten_all()?.to_vec1()?,
    ))
}

/// The segments of every manifest built for these models, opened and
/// checked, and the rows they hold by file name.
struct Rows {
    segments: Vec<Segment>,
    /// The manifest (index into `manifests`) and reference of each segment.
    owner: Vec<(usize, SegmentRef)>,
    by_name: HashMap<String, Vec<(usize, usize)>>,
    manifests: Vec<(String, Manifest)>,
    /// Manifests for other models or shapes.
    foreign: Vec<String>,
    /// Manifests that could not be read, by file name.
    unreadable: Vec<String>,
    damaged: Vec<String>,
    /// Segments found damaged after opening (their rows are not used).
    dead: HashSet<usize>,
}

impl Rows {
    /// The segments of every manifest for these models, as they are now
    /// (callers that write hold the folder lock around it).
    fn open(dir: &Path, fingerprints: &[String], regions: usize, dim: usize) -> Result<Self> {
        let (all, bad) = ix::scan_manifests(dir)?;
        let mut rows = Self {
            segments: Vec::new(),
            owner: Vec::new(),
            by_name: HashMap::new(),
            manifests: Vec::new(),
            foreign: Vec::new(),
            unreadable: bad.iter().map(|(n, _)| n.clone()).collect(),
            damaged: bad.into_iter().map(|(_, why)| why).collect(),
            dead: HashSet::new(),
        };
        let mut seen = HashSet::new();
        for (name, m) in all {
            if m.fingerprints() != fingerprints || (m.regions, m.dim) != (regions, dim) {
                rows.foreign.push(name);
                continue;
            }
            let mi = rows.manifests.len();
            for seg in &m.segments {
                if !seen.insert(seg.file.clone()) {
                    rows.damaged
                        .push(format!("{}: listed by two manifests", seg.file));
                    continue;
                }
                match Segment::open(dir, seg, fingerprints, regions, dim) {
                    Ok(s) => {
                        let si = rows.segments.len();
                        let deleted: HashSet<usize> = seg.deleted.iter().copied().collect();
                        for (r, f) in s.files.iter().enumerate() {
                            if !deleted.contains(&r) {
                                rows.by_name
                                    .entry(f.name.clone())
                                    .or_default()
                                    .push((si, r));
                            }
                        }
                        rows.segments.push(s);
                        rows.owner.push((mi, seg.clone()));
                    }
                    Err(e) => rows.damaged.push(e.to_string()),
                }
            }
            rows.manifests.push((name, m));
        }
        Ok(rows)
    }

    /// [`Rows::open`] for a reader, which takes no lock: a writer may
    /// publish, join or collect between its reads of the manifests and of
    /// the segments, so what looks damaged is read again under the folder
    /// lock (which writers hold for those moments; a folder we cannot write
    /// has none) before it is called damage.
    fn open_reader(
        dir: &Path,
        fingerprints: &[String],
        regions: usize,
        dim: usize,
    ) -> Result<Self> {
        let first = Self::open(dir, fingerprints, regions, dim)?;
        if first.damaged.is_empty() {
            return Ok(first);
        }
        let _lock = ix::Lock::folder(dir).ok();
        Self::open(dir, fingerprints, regions, dim)
    }

    /// Verifies every segment's data against its checksums (several at a
    /// time); the damaged ones are noted and their rows forgotten.
    fn verify_all(&mut self) {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let next = std::sync::atomic::AtomicUsize::new(0);
        let segments = &self.segments;
        let failed: Vec<(usize, String)> = std::thread::scope(|sc| {
            let workers: Vec<_> = (0..threads.min(segments.len()))
                .map(|_| {
                    sc.spawn(|| {
                        let mut bad = Vec::new();
                        loop {
                            let s = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(seg) = segments.get(s) else {
                                return bad;
                            };
                            if let Err(e) = seg.verify_all() {
                                bad.push((s, e.to_string()));
                            }
                            seg.release();
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("verifying a segment"))
                .collect()
        });
        for (s, why) in failed {
            self.damaged.push(why);
            self.dead.insert(s);
        }
        let dead = &self.dead;
        for list in self.by_name.values_mut() {
            list.retain(|(s, _)| !dead.contains(s));
        }
        self.by_name.retain(|_, list| !list.is_empty());
    }

    fn stamp(&self, (s, r): (usize, usize)) -> &FileStamp {
        &self.segments[s].files[r]
    }

    /// A live row of `name` whose size and modification time are `now`.
    fn current(&self, name: &str, now: (u64, u128)) -> Option<(usize, usize)> {
        self.by_name.get(name).and_then(|c| {
            c.iter()
                .copied()
                .find(|&at| (self.stamp(at).size, self.stamp(at).mtime_ns) == now)
        })
    }

    /// Per model, the regions and global vector of one row.
    fn row(&self, (s, r): (usize, usize), n_models: usize) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
        let seg = &self.segments[s];
        (0..n_models)
            .map(|m| {
                Ok((
                    seg.regions(m, r..r + 1)?.into_owned(),
                    seg.global(m, r..r + 1)?.into_owned(),
                ))
            })
            .collect()
    }
}

/// The models an index was built with (those of its main manifest, else of
/// any manifest): the sources `rank` loads when given no `--model`.
pub fn index_models(dir: &Path) -> Result<Option<Vec<ModelSpec>>> {
    let (manifests, _) = ix::read_manifests(dir)?;
    Ok(manifests.into_iter().next().map(|(_, m)| m.models))
}

/// The `(regions, d)` of every model's rows: an index stores one
/// embedding size for all its models.
fn index_shape(scorer: &Scorer) -> Result<(usize, usize)> {
    let dim = one_embed_size(scorer.models().iter().map(|m| m.config().embed_size()))?;
    Ok((scorer.config().num_regions(), dim))
}

/// The one embedding size of models embedding in `sizes` (model 0's), or
/// [`Error::EmbeddingSizeMismatch`] naming the first model that differs.
fn one_embed_size(mut sizes: impl Iterator<Item = usize>) -> Result<usize> {
    let Some(expected) = sizes.next() else {
        return Err(Error::Invalid("an index needs at least one model".into()));
    };
    match (1..).zip(sizes).find(|&(_, d)| d != expected) {
        Some((model, found)) => Err(Error::EmbeddingSizeMismatch {
            model,
            expected,
            found,
        }),
        None => Ok(expected),
    }
}

/// Brings `dir`'s index up to date with `names` (the folder's feature files;
/// with `shard`, the part of them that shard owns, see [`Shard::owns`]): new and changed files
/// are encoded, removed ones deleted, segments mostly deleted rewritten.
/// Every segment is verified against its checksums first; a damaged one is
/// dropped and its files encoded again. An index for other models is
/// rebuilt. Without `shard`, every shard's manifest is joined into the main
/// one (after the runs of those shards end). Runs of different shards
/// encode at the same time; `waiting` is called if another process runs
/// the same manifest (or, without `shard`, a shard this run joins).
pub fn update(
    scorer: &Scorer,
    models: &[ModelSpec],
    dir: &Path,
    names: &[String],
    shard: Option<Shard>,
    progress: &mut dyn FnMut(usize),
    waiting: &mut dyn FnMut(),
) -> Result<UpdateReport> {
    let (regions, dim) = index_shape(scorer)?;
    let n_models = scorer.models().len();
    if models.len() != n_models {
        return Err(Error::Invalid(format!(
            "{} model specs for {n_models} models",
            models.len()
        )));
    }
    let fingerprints: Vec<String> = models.iter().map(|m| m.fingerprint.clone()).collect();
    let my_manifest = ix::manifest_name(shard);
    // This run's lock, held to the end: runs of the same manifest take turns.
    let me = ix::writer(shard);
    let mut locks = vec![Lock::writer(dir, &me, waiting)?];
    // The manifests this run rewrites or joins, and their writers.
    let mut owned: Vec<String> = vec![my_manifest.clone()];
    let mut writers: Vec<String> = vec![me];
    if shard.is_none() {
        // Joining a shard waits for its run to end (a shard that starts
        // later keeps its own manifest until the next run).
        let (present, bad) = ix::scan_manifests(dir)?;
        let mut names: Vec<String> = present
            .into_iter()
            .map(|(n, _)| n)
            .chain(bad.into_iter().map(|(n, _)| n))
            .collect();
        names.sort();
        for name in names {
            if let Some(s) = ix::shard_of_manifest(&name) {
                let w = ix::writer(Some(s));
                locks.push(Lock::writer(dir, &w, waiting)?);
                owned.push(name);
                writers.push(w);
            }
        }
    }
    let mut report = UpdateReport::default();
    let mut rows = {
        // No one collects garbage between reading a manifest and opening
        // its segments; once mapped, a segment stays readable.
        let _folder = Lock::folder(dir)?;
        Rows::open(dir, &fingerprints, regions, dim)?
    };
    rows.verify_all();
    report.damaged = rows.damaged.clone();
    let legacy = dir.join(LEGACY_INDEX_FILE);
    report.discarded = !rows.foreign.is_empty() || legacy.exists();

    // The segments this run owns: those of the manifests it rewrites.
    let mine: Vec<usize> = (0..rows.segments.len())
        .filter(|&s| !rows.dead.contains(&s) && owned.contains(&rows.manifests[rows.owner[s].0].0))
        .collect();
    let publish = |m: &Manifest| -> Result<()> {
        let _folder = Lock::folder(dir)?;
        ix::write_manifest(dir, &my_manifest, m)?;
        Ok(())
    };

    let wanted: Vec<&String> = names.iter().collect();
    let mut keep: HashSet<(usize, usize)> = HashSet::new();
    let mut restamp: Vec<((usize, usize), FileStamp)> = Vec::new();
    let mut todo: Vec<(String, FileStamp)> = Vec::new();
    for name in &wanted {
        let path = dir.join(name.as_str());
        let (size, mtime_ns) = match quick_stamp(&path) {
            Ok(s) => s,
            Err(e) => {
                report.skipped.push(((*name).clone(), e.to_string()));
                continue;
            }
        };
        if let Some(at) = rows.current(name, (size, mtime_ns)) {
            keep.insert(at);
            report.unchanged += 1;
            continue;
        }
        let sha256 = sha256_file(&path)?;
        let stamp = FileStamp {
            name: (*name).clone(),
            size,
            mtime_ns,
            sha256,
        };
        let same = rows.by_name.get(name.as_str()).and_then(|c| {
            c.iter()
                .copied()
                .find(|&at| rows.stamp(at).sha256 == stamp.sha256)
        });
        match same {
            // Touched but unchanged: the row moves to a new segment with the new stamp.
            Some(at) => {
                report.unchanged += 1;
                restamp.push((at, stamp));
            }
            None => {
                if rows.by_name.contains_key(name.as_str()) {
                    report.changed += 1;
                } else {
                    report.added += 1;
                }
                todo.push(((*name).clone(), stamp));
            }
        }
    }
    if shard.is_none() {
        let listed: HashSet<&str> = names.iter().map(String::as_str).collect();
        report.removed = rows
            .by_name
            .keys()
            .filter(|n| !listed.contains(n.as_str()))
            .count();
    }

    // Tombstones: every row of this run's segments that is not kept.
    let mut refs: Vec<(usize, SegmentRef)> = mine
        .iter()
        .map(|&s| {
            let mut r = rows.owner[s].1.clone();
            r.deleted = (0..r.rows).filter(|&i| !keep.contains(&(s, i))).collect();
            (s, r)
        })
        .collect();
    let manifest = |refs: &[(usize, SegmentRef)], new: &[SegmentRef]| Manifest {
        version: INDEX_VERSION,
        models: models.to_vec(),
        regions,
        dim,
        segments: refs
            .iter()
            .map(|(_, r)| r.clone())
            .chain(new.iter().cloned())
            .collect(),
    };
    let mut new_segments: Vec<SegmentRef> = Vec::new();
    publish(&manifest(&refs, &new_segments))?;

    let mut writer = SegmentWriter::new(&writers[0], n_models, regions, dim);
    let flush = |writer: &mut SegmentWriter,
                 refs: &[(usize, SegmentRef)],
                 new: &mut Vec<SegmentRef>,
                 force: bool|
     -> Result<()> {
        if writer.len() >= SEGMENT_ROWS || (force && !writer.is_empty()) {
            new.push(writer.finish(dir, &fingerprints)?);
            publish(&manifest(refs, new))?;
        }
        Ok(())
    };

    // Rows that move without re-encoding: touched files, and the live rows
    // of segments that are mostly deleted.
    let compact: Vec<usize> = refs
        .iter()
        .enumerate()
        .filter(|(_, (_, r))| {
            let live = r.rows - r.deleted.len();
            (live as f64) < COMPACT_BELOW * r.rows as f64
        })
        .map(|(i, _)| i)
        .collect();
    let mut moves: Vec<((usize, usize), FileStamp)> = restamp;
    for &i in &compact {
        let (s, r) = &refs[i];
        let deleted: HashSet<usize> = r.deleted.iter().copied().collect();
        for row in (0..r.rows).filter(|row| !deleted.contains(row)) {
            moves.push(((*s, row), rows.stamp((*s, row)).clone()));
        }
    }
    for (at, stamp) in moves {
        let data = rows.row(at, n_models)?;
        let views: Vec<(&[f32], &[f32])> = data
            .iter()
            .map(|(r, g)| (r.as_slice(), g.as_slice()))
            .collect();
        writer.push(stamp, &views)?;
        flush(&mut writer, &refs, &mut new_segments, false)?;
    }
    flush(&mut writer, &refs, &mut new_segments, true)?;
    report.compacted = compact.len();
    let compacted: HashSet<usize> = compact.iter().map(|&i| refs[i].0).collect();
    refs.retain(|(s, r)| !compacted.contains(s) && r.deleted.len() < r.rows);
    publish(&manifest(&refs, &new_segments))?;

    // New and changed files.
    let stamps: HashMap<String, FileStamp> = todo.iter().cloned().collect();
    let todo_names: Vec<String> = todo.into_iter().map(|(n, _)| n).collect();
    let mut skipped = Vec::new();
    encode_chunks(
        scorer,
        dir,
        &todo_names,
        &mut |name, why| skipped.push((name.to_string(), why)),
        &mut |chunk, sides| {
            let data = sides.iter().map(side_rows).collect::<Result<Vec<_>>>()?;
            let (rd, d) = (regions * dim, dim);
            for (i, name) in chunk.iter().enumerate() {
                let views: Vec<(&[f32], &[f32])> = data
                    .iter()
                    .map(|(r, g)| (&r[i * rd..(i + 1) * rd], &g[i * d..(i + 1) * d]))
                    .collect();
                writer.push(stamps[name].clone(), &views)?;
                flush(&mut writer, &refs, &mut new_segments, false)?;
            }
            progress(chunk.len());
            Ok(())
        },
    )?;
    flush(&mut writer, &refs, &mut new_segments, true)?;
    for (name, _) in &skipped {
        if rows.by_name.contains_key(name.as_str()) {
            report.changed -= 1;
        } else {
            report.added -= 1;
        }
    }
    report.skipped.extend(skipped);
    let last = manifest(&refs, &new_segments);
    report.rows = last.segments.iter().map(|s| s.rows - s.deleted.len()).sum();
    let _folder = Lock::folder(dir)?;
    ix::write_manifest(dir, &my_manifest, &last)?;
    if shard.is_none() {
        // Joined: the shards' manifests, and foreign, damaged or old indexes go.
        for name in owned.iter().filter(|n| **n != my_manifest) {
            ix::remove_manifest(dir, name)?;
        }
        for name in rows.foreign.iter().chain(&rows.unreadable) {
            // A shard's is removed above when this run joined it, else its
            // run started meanwhile and the manifest is its own.
            if *name != my_manifest && ix::shard_of_manifest(name).is_none() {
                ix::remove_manifest(dir, name)?;
            }
        }
        if legacy.exists() {
            let _ = std::fs::remove_file(&legacy);
        }
    }
    ix::collect_garbage(dir, &writers)?;
    drop(locks);
    Ok(report)
}

/// One ranked file.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranked {
    pub name: String,
    pub score: f32,
}

/// How a ranking was computed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RankReport {
    /// Images read from the index, and encoded from their files.
    pub indexed: usize,
    pub encoded: usize,
    /// Images scored exactly (all, or the shortlist plus encoded ones).
    pub exact: usize,
    pub skipped: Vec<(String, String)>,
    /// Damaged segments or manifests that were not used.
    pub damaged: Vec<String>,
    /// The index exists but was built for other models.
    pub foreign_index: bool,
}

/// Ranks the feature files `names` of `dir` for `query`, best first (equal
/// scores by name). Indexed images are streamed from the index, a chunk at
/// a time; the others are encoded from their files. With `shortlist`, the
/// indexed images are first ordered by the cosine of the visual and the
/// caption global vectors (mean over the models) and only the best
/// `shortlist` are scored exactly; the scores returned are always exact.
pub fn rank(
    scorer: &Scorer,
    fingerprints: &[String],
    dir: &Path,
    names: &[String],
    query: &str,
    shortlist: Option<usize>,
    progress: &mut dyn FnMut(usize),
) -> Result<(Vec<Ranked>, RankReport)> {
    let (regions, dim) = index_shape(scorer)?;
    let n_models = scorer.models().len();
    let caps = scorer.caption_sides(&[query])?;
    let rows = Rows::open_reader(dir, fingerprints, regions, dim)?;
    let mut report = RankReport {
        damaged: rows.damaged.clone(),
        foreign_index: !rows.foreign.is_empty() && rows.manifests.is_empty(),
        ..Default::default()
    };
    // Which images come from which segment row, the rest from their files.
    let mut per_segment: Vec<Vec<(usize, usize)>> = vec![Vec::new(); rows.segments.len()];
    let mut unindexed = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let now = match quick_stamp(&dir.join(name)) {
            Ok(s) => s,
            Err(e) => {
                report.skipped.push((name.clone(), e.to_string()));
                continue;
            }
        };
        match rows.current(name, now) {
            Some((s, r)) => per_segment[s].push((r, i)),
            None => unindexed.push(i),
        }
    }
    report.indexed = per_segment.iter().map(Vec::len).sum();
    let mut scores: Vec<Option<f32>> = vec![None; names.len()];

    // A segment's rows whose data turns out damaged are encoded instead.
    let fall_back = |report: &mut RankReport,
                     unindexed: &mut Vec<usize>,
                     e: sgraf_data::DataError,
                     images: &mut dyn Iterator<Item = usize>| {
        let before = unindexed.len();
        unindexed.extend(images);
        report.indexed -= unindexed.len() - before;
        report.damaged.push(e.to_string());
    };
    if let Some(k) = shortlist {
        // The cheap order reads the global vectors of the models that have
        // them (SGR, SAF); RCAR has none (its engines store zeros).
        let with_globals: Vec<usize> = (0..n_models)
            .filter(|&m| {
                scorer.models()[m].config().architecture() == sgraf_core::Architecture::Sgraf
            })
            .collect();
        if with_globals.is_empty() {
            return Err(Error::NoShortlist {
                models: scorer
                    .models()
                    .iter()
                    .map(|m| m.config().name())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let cap_globals: Vec<Vec<f32>> = caps
            .iter()
            .map(|c| Ok(c.global.flatten_all()?.to_vec1()?))
            .collect::<Result<_>>()?;
        let mut cheap: Vec<(f32, usize, usize, usize)> = Vec::with_capacity(report.indexed);
        for (s, list) in per_segment.iter_mut().enumerate() {
            if list.is_empty() {
                continue;
            }
            let seg = &rows.segments[s];
            let globals = match with_globals
                .iter()
                .map(|&m| seg.global(m, 0..seg.rows()))
                .collect::<std::result::Result<Vec<_>, _>>()
            {
                Ok(g) => g,
                Err(e) => {
                    fall_back(
                        &mut report,
                        &mut unindexed,
                        e,
                        &mut list.drain(..).map(|(_, i)| i),
                    );
                    continue;
                }
            };
            for &(r, i) in list.iter() {
                let mut c = 0f32;
                for (g, &m) in globals.iter().zip(&with_globals) {
                    c += cosine(&g[r * dim..(r + 1) * dim], &cap_globals[m]);
                }
                cheap.push((c / with_globals.len() as f32, s, r, i));
            }
            seg.release();
            progress(list.len());
        }
        cheap.sort_by(|a, b| b.0.total_cmp(&a.0).then(names[a.3].cmp(&names[b.3])));
        cheap.truncate(k);
        for list in per_segment.iter_mut() {
            list.clear();
        }
        for (_, s, r, i) in cheap {
            per_segment[s].push((r, i));
        }
    }
    for (s, list) in per_segment.iter_mut().enumerate() {
        list.sort_unstable();
        let seg = &rows.segments[s];
        for chunk in list.chunks(RANK_CHUNK) {
            let (first, last) = (chunk[0].0, chunk[chunk.len() - 1].0);
            let got = if last - first + 1 == chunk.len() {
                // Consecutive rows: scored straight from the mapping.
                (0..n_models)
                    .map(|m| {
                        Ok((
                            seg.regions(m, first..last + 1)?,
                            seg.global(m, first..last + 1)?,
                        ))
                    })
                    .collect::<std::result::Result<Vec<_>, sgraf_data::DataError>>()
                    .map(|data| {
                        let views: Vec<(&[f32], &[f32])> =
                            data.iter().map(|(r, g)| (&r[..], &g[..])).collect();
                        scorer.score_image_rows(&views, &caps)
                    })
            } else {
                let mut data = vec![(Vec::new(), Vec::new()); n_models];
                let read = (|| {
                    for &(row, _) in chunk {
                        for (m, (r, g)) in data.iter_mut().enumerate() {
                            r.extend_from_slice(&seg.regions(m, row..row + 1)?);
                            g.extend_from_slice(&seg.global(m, row..row + 1)?);
                        }
                    }
                    Ok(())
                })();
                read.map(|()| {
                    let views: Vec<(&[f32], &[f32])> =
                        data.iter().map(|(r, g)| (&r[..], &g[..])).collect();
                    scorer.score_image_rows(&views, &caps)
                })
            };
            match got {
                Ok(got) => {
                    for (&(_, i), s) in chunk.iter().zip(got?) {
                        scores[i] = Some(s);
                    }
                    report.exact += chunk.len();
                    if shortlist.is_none() {
                        progress(chunk.len());
                    }
                }
                Err(e) => fall_back(
                    &mut report,
                    &mut unindexed,
                    e,
                    &mut chunk.iter().map(|&(_, i)| i),
                ),
            }
        }
        seg.release();
    }
    let todo: Vec<String> = unindexed.iter().map(|&i| names[i].clone()).collect();
    let position: HashMap<&str, usize> =
        unindexed.iter().map(|&i| (names[i].as_str(), i)).collect();
    let mut skipped = Vec::new();
    encode_chunks(
        scorer,
        dir,
        &todo,
        &mut |name, why| skipped.push((name.to_string(), why)),
        &mut |chunk, sides| {
            let got = scorer
                .score(&sides, &caps)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            for (name, s) in chunk.iter().zip(got) {
                scores[position[name.as_str()]] = Some(s);
            }
            report.encoded += chunk.len();
            report.exact += chunk.len();
            progress(chunk.len());
            Ok(())
        },
    )?;
    report.skipped.extend(skipped);
    let mut ranked: Vec<Ranked> = names
        .iter()
        .zip(scores)
        .filter_map(|(name, s)| {
            s.map(|score| Ranked {
                name: name.clone(),
                score,
            })
        })
        .collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.name.cmp(&b.name)));
    Ok((ranked, report))
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa.sqrt() * bb.sqrt()).max(1e-12)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_of_an_index_embed_in_one_size() {
        assert_eq!(one_embed_size([1024, 1024].into_iter()).unwrap(), 1024);
        assert!(matches!(
            one_embed_size([1024, 1024, 512].into_iter()),
            Err(Error::EmbeddingSizeMismatch {
                model: 2,
                expected: 1024,
                found: 512
            })
        ));
        assert!(matches!(
            one_embed_size(std::iter::empty()),
            Err(Error::Invalid(_))
        ));
    }
}
