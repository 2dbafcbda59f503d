//! A folder of images (feature files, and photos through the detector)
//! and ranking it for a query.

use std::path::{Path, PathBuf};

use crate::error::{invalid, Error, Result};
use sgraf_data::list_features;
use sgraf_data::Shard;
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
            None if names.is_empty() => invalid!(
                "{} holds photos ({}{}) but no region features: pass --detector DIR (a detector \
                 converted with cargo xtask convert-weights --detector) to extract them, or run \
                 sgraf-cli extract first",
                dir.display(),
                listing.photos[..listing.photos.len().min(3)].join(", "),
                if listing.photos.len() > 3 { ", ..." } else { "" },
            ),
            None => ui.note(&format!(
                "note: skipping {} photo(s) in {}: pass --detector to extract their region features",
                listing.photos.len(),
                dir.display()
            )),
        }
    }
    if names.is_empty() && shard.is_none() {
        invalid!(
            "{} holds no region-feature files (.npy, .npz, .safetensors) and no photos",
            dir.display()
        );
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
    let policy = sgraf_vision::BoxPolicy::fixed(loaded.scorer.config().num_regions);
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
        let fingerprints = models.fingerprints()?;
        Ok(Self {
            dir: dir.to_path_buf(),
            loaded: models,
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
        if query.trim().is_empty() {
            invalid!("the query is empty");
        }
        let (ranked, report) = index::rank(
            &self.loaded.scorer,
            &self.fingerprints,
            &self.dir,
            &self.names,
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
