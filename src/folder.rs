//! A folder of images (feature files, and photos through the detector)
//! and ranking it for a query.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use sgraf_data::list_features;
use sgraf_data::Shard;
use sgraf_retrieval::index::store::{self, ModelSpec};
use sgraf_retrieval::index::{self, RankReport};

use crate::models::{find_detector, Sgraf};
use crate::Ui;

/// The feature files of an images folder, photos included when a detector
/// is known (their features extracted once into DIR/.sgraf-regions/).
pub fn feature_names(
    dir: &Path,
    exclude: &[String],
    detector: Option<&str>,
    loaded: &Sgraf,
    shard: Option<Shard>,
    ui: &dyn Ui,
) -> Result<Vec<String>> {
    let mut listing = list_features(dir, exclude)?;
    if let Some(s) = shard {
        // By the file's own name (a photo's, not its cached features').
        listing.features.retain(|n| s.owns(n));
        listing.photos.retain(|n| s.owns(n));
    }
    let mut names = listing.features;
    if !listing.photos.is_empty() {
        match find_detector(detector, loaded)? {
            Some(det_dir) => names.extend(cached_photo_features(
                dir,
                &listing.photos,
                &det_dir,
                loaded,
                ui,
            )?),
            None if names.is_empty() => {
                return Err(Error::PhotosWithoutDetector {
                    dir: dir.to_path_buf(),
                    photos: listing.photos,
                })
            }
            None => ui.note(&format!(
                "note: skipping {} photo(s) in {}: no detector to extract their region features",
                listing.photos.len(),
                dir.display()
            )),
        }
    }
    if names.is_empty() && shard.is_none() {
        return Err(Error::NothingToRank {
            dir: dir.to_path_buf(),
        });
    }
    Ok(names)
}

/// Extracts (once) the region features of `photos` into DIR/.sgraf-regions/
/// and returns their names.
pub fn cached_photo_features(
    dir: &Path,
    photos: &[String],
    det_dir: &Path,
    loaded: &Sgraf,
    ui: &dyn Ui,
) -> Result<Vec<String>> {
    let device = loaded.scorer.device().clone();
    let fingerprint = index::model_fingerprint(det_dir)?;
    // The models read a fixed number of regions per image.
    let policy = sgraf_vision::BoxPolicy::fixed(loaded.scorer.config().num_regions());
    ui.start("photos", photos.len() as u64);
    let report = sgraf_vision::store::ensure_cached(
        dir,
        photos,
        &fingerprint,
        policy,
        &mut || sgraf_vision::Detector::from_folder(det_dir, &device),
        &mut |_, _| ui.inc(1),
    );
    ui.finish();
    let report = report.map_err(|e| Error::Loading {
        what: format!("extracting with the detector {}", det_dir.display()),
        source: Box::new(e.into()),
    })?;
    if report.extracted > 0 {
        ui.note(&format!(
            "extracted the region features of {} photo(s) into {} ({} reused)",
            report.extracted,
            dir.join(sgraf_vision::store::CACHE_DIR).display(),
            report.reused
        ));
    }
    for (photo, why) in &report.failed {
        ui.note(&format!("skipped {}: {why}", dir.join(photo).display()));
    }
    Ok(report.ready.into_iter().map(|(_, f)| f).collect())
}

/// How a ranked file is shown: a cached photo's features as the photo.
pub fn display_name(dir: &Path, name: &str) -> String {
    let shown = sgraf_vision::store::photo_of(name).unwrap_or(name);
    dir.join(shown).display().to_string()
}

/// One ranked image.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    /// As `rank` prints it: the folder joined with the file (the photo for
    /// a photo's cached features).
    pub file: String,
    /// The feature file, relative to the folder.
    pub name: String,
    pub score: f32,
}

/// What to list in an images folder.
#[derive(Clone, Debug, Default)]
pub struct FolderOptions {
    /// Glob patterns of files to leave out (relative paths or file names).
    pub exclude: Vec<String>,
    /// The detector for photos (a folder or a Hub id); by default the
    /// models' own (`detector/` in a model folder, or its config's
    /// `"detector"` entry). Without one, photos are skipped with a note.
    pub detector: Option<String>,
}

/// An images folder with its models loaded and its files listed once:
/// what `rank` runs once and the server keeps.
pub struct Folder {
    pub dir: PathBuf,
    pub loaded: Sgraf,
    /// The models as the index records them ([`Sgraf::model_records`]).
    pub records: Vec<ModelSpec>,
    pub fingerprints: Vec<String>,
    /// Feature files relative to `dir` (photos as their cached features).
    pub names: Vec<String>,
    /// Whether the folder had an index for some models when opened.
    pub indexed: bool,
}

impl Folder {
    /// Lists the folder `dir` for `models`, extracting photos' features
    /// where needed (once: they are cached in `DIR/.sgraf-regions/`); see
    /// [`Sgraf::for_folder`] for the models a folder's index names.
    pub fn open(dir: &Path, models: Sgraf, opts: &FolderOptions, ui: &dyn Ui) -> Result<Self> {
        let indexed = index::index_models(dir)?.is_some();
        let names = feature_names(
            dir,
            &opts.exclude,
            opts.detector.as_deref(),
            &models,
            None,
            ui,
        )?;
        let records = models.model_records()?;
        let fingerprints = records.iter().map(|m| m.fingerprint.clone()).collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            loaded: models,
            records,
            fingerprints,
            names,
            indexed,
        })
    }

    /// Every listed image for `query`, best first (equal scores by name),
    /// as `rank` ranks them.
    pub fn rank(
        &self,
        query: &str,
        shortlist: Option<usize>,
        progress: &mut dyn FnMut(usize),
    ) -> Result<(Vec<Hit>, RankReport)> {
        self.rank_among(&self.names, query, shortlist, progress)
    }

    /// The images `names` of the folder (feature files relative to it, as
    /// [`feature_names`] lists them: a listing newer than [`Folder::names`])
    /// for `query`, best first, through the folder's index where it holds
    /// them.
    pub fn rank_among(
        &self,
        names: &[String],
        query: &str,
        shortlist: Option<usize>,
        progress: &mut dyn FnMut(usize),
    ) -> Result<(Vec<Hit>, RankReport)> {
        if query.trim().is_empty() {
            return Err(Error::EmptyQuery);
        }
        let (ranked, report) = index::rank(
            &self.loaded.scorer,
            &self.fingerprints,
            &self.dir,
            names,
            query,
            shortlist,
            progress,
        )?;
        let mut hits: Vec<Hit> = ranked
            .into_iter()
            .map(|r| Hit {
                file: display_name(&self.dir, &r.name),
                name: r.name,
                score: r.score,
            })
            .collect();
        // Stable: equal scores keep the index's order.
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok((hits, report))
    }

    /// Brings the folder's index up to date for `names` (a listing from
    /// [`feature_names`]): only new and changed files are encoded.
    /// `progress` gets the images encoded; `waiting` is called while
    /// another process holds the index.
    pub fn update_index(
        &self,
        names: &[String],
        progress: &mut dyn FnMut(usize),
        waiting: &mut dyn FnMut(),
    ) -> Result<IndexReport> {
        Ok(index::update(
            &self.loaded.scorer,
            &self.records,
            &self.dir,
            names,
            None,
            progress,
            waiting,
        )?)
    }

    /// How many of `names` the folder's index lacks (or holds for an older
    /// version of the file); `None` when the index is for other models or
    /// in another format, or damaged: writing it would throw away another
    /// user's index.
    pub fn index_pending(&self, names: &[String]) -> Result<Option<usize>> {
        let dir = &self.dir;
        let cfg = self.loaded.config();
        let (regions, dim) = (cfg.num_regions(), cfg.embed_size());
        let (manifests, problems) = store::read_manifests(dir)?;
        let ours = |m: &store::Manifest| {
            m.fingerprints() == self.fingerprints && (m.regions, m.dim) == (regions, dim)
        };
        if manifests.iter().any(|(_, m)| !ours(m))
            || !problems.is_empty()
            || dir.join(store::LEGACY_INDEX_FILE).exists()
        {
            return Ok(None);
        }
        let mut have: HashSet<(&str, u64, u128)> = HashSet::new();
        let mut segments = Vec::new();
        for (_, m) in &manifests {
            for seg in &m.segments {
                if let Ok(s) = store::Segment::open(dir, seg, &self.fingerprints, regions, dim) {
                    segments.push((s, seg.deleted.iter().copied().collect::<HashSet<usize>>()));
                }
            }
        }
        for (s, deleted) in &segments {
            for (r, f) in s.files.iter().enumerate() {
                if !deleted.contains(&r) {
                    have.insert((f.name.as_str(), f.size, f.mtime_ns));
                }
            }
        }
        Ok(Some(
            names
                .iter()
                .filter(|n| {
                    sgraf_data::quick_stamp(&dir.join(n)).map_or(true, |(size, mtime)| {
                        !have.contains(&(n.as_str(), size, mtime))
                    })
                })
                .count(),
        ))
    }

    /// The notes `rank` prints about a ranking.
    pub fn report_notes(&self, report: &RankReport, ui: &dyn Ui) {
        for problem in &report.damaged {
            ui.note(&format!(
                "note: not using a damaged part of the index: {problem}"
            ));
        }
        if report.encoded > 0 && (report.indexed > 0 || self.indexed) {
            ui.note(&format!(
                "note: {} of {} images are not in the index (new, changed{}); encoded them \
                 (run sgraf-cli index to update it)",
                report.encoded,
                self.names.len(),
                if report.foreign_index {
                    ", or the index is for other models"
                } else {
                    ""
                }
            ));
        }
        for (name, why) in &report.skipped {
            ui.note(&format!("skipped {}: {why}", self.dir.join(name).display()));
        }
    }
}

/// What [`index_folder`] encodes: `index_folder` takes the models, these
/// the files.
#[derive(Clone, Debug, Default)]
pub struct IndexOptions {
    /// Glob patterns of files to leave out.
    pub exclude: Vec<String>,
    /// The detector for photos (see [`FolderOptions::detector`]).
    pub detector: Option<String>,
    /// Only the files this shard owns, into the shard's own manifest.
    pub shard: Option<Shard>,
}

/// `DIR/.sgraf-index/`, where a folder's index lives.
pub use sgraf_retrieval::index::store::index_dir;
/// What an index update did: rows, files new, changed, removed,
/// unchanged, skipped, damaged parts rebuilt.
pub use sgraf_retrieval::index::UpdateReport as IndexReport;
/// The photo behind a feature file, when it is a photo's cached features
/// (`.sgraf-regions/a/b.jpg.npy` -> `a/b.jpg`).
pub use sgraf_vision::store::photo_of;
/// The sub-folder of an images folder where photos' features are cached.
pub use sgraf_vision::store::CACHE_DIR;

/// Encodes the images of `dir` (photos through the detector) once into
/// its index, `DIR/.sgraf-index/`, for `models`: only new and changed files
/// are encoded, removed ones dropped. Progress goes to `ui` ("encoding");
/// `waiting` is called while another process holds the index.
pub fn index_folder(
    models: &Sgraf,
    dir: &Path,
    opts: &IndexOptions,
    ui: &dyn Ui,
    waiting: &mut dyn FnMut(),
) -> Result<IndexReport> {
    let names = feature_names(
        dir,
        &opts.exclude,
        opts.detector.as_deref(),
        models,
        opts.shard,
        ui,
    )?;
    let records = models.model_records()?;
    ui.start("encoding", names.len() as u64);
    let report = index::update(
        &models.scorer,
        &records,
        dir,
        &names,
        opts.shard,
        &mut |n| ui.inc(n as u64),
        waiting,
    );
    ui.finish();
    Ok(report?)
}

/// Each feature file's and photo's (name, size, modification time) in
/// `dir`, sorted: what tells a rescan that the folder changed.
pub fn stamps(dir: &Path, exclude: &[String]) -> Result<Vec<(String, u64, u128)>> {
    let listing = list_features(dir, exclude)?;
    let mut out = Vec::with_capacity(listing.features.len() + listing.photos.len());
    for name in listing.features.iter().chain(&listing.photos) {
        // A file removed since the listing is simply not there.
        if let Ok((size, mtime)) = sgraf_data::quick_stamp(&dir.join(name)) {
            out.push((name.clone(), size, mtime));
        }
    }
    out.sort();
    Ok(out)
}
