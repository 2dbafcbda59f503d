//! Extracted regions on disk: `NAME.npy` (`[k, 2048]` float32) and
//! `NAME.json` (boxes, classes, confidences, image size), and the cache of
//! a photo folder (`DIR/.sgraf-regions/`) that `rank` and `index` keep so
//! that every photo goes through the detector once.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::BoxPolicy;
use crate::detector::{Detector, Regions};
use crate::error::{Error, Result};
use crate::preprocess::BgrImage;

/// The cache folder inside a photo folder (hidden: never listed as features).
pub const CACHE_DIR: &str = ".sgraf-regions";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |err| Error::Io {
        path: path.into(),
        err,
    }
}

/// What identifies the photo and the extraction a cached file came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub photo: String,
    pub size: u64,
    pub mtime_ns: u128,
    pub detector: String,
    pub boxes: String,
}

/// `NAME.json` beside `NAME.npy`.
#[derive(Clone, Debug, Serialize)]
struct Sidecar<'a> {
    #[serde(flatten)]
    regions: &'a Regions,
    num_boxes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a Source>,
}

/// Writes the features to `npy` and the rest to `json`, each atomically
/// (temporary file, rename).
pub fn write_regions(npy: &Path, json: &Path, r: &Regions, source: Option<&Source>) -> Result<()> {
    for p in [npy, json] {
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
    }
    sgraf_data::npy::write_f32(npy, &[r.len(), r.feature_dim], &r.features)?;
    let bytes = serde_json::to_vec_pretty(&Sidecar {
        regions: r,
        num_boxes: r.len(),
        source,
    })
    .expect("regions serialize");
    Ok(sgraf_data::write_atomic(json, &bytes)?)
}

/// The cached features of `photo` (relative to `dir`): `DIR/.sgraf-regions/PHOTO.npy`.
pub fn cached_features(photo: &str) -> String {
    format!("{CACHE_DIR}/{photo}.npy")
}

/// The photo a cached features name stands for, if it is one.
pub fn photo_of(feature_name: &str) -> Option<&str> {
    feature_name
        .strip_prefix(CACHE_DIR)?
        .strip_prefix('/')?
        .strip_suffix(".npy")
}

fn cached_source(json: &Path) -> Option<Source> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(json).ok()?).ok()?;
    serde_json::from_value(v.get("source")?.clone()).ok()
}

/// Outcome of [`ensure_cached`] for a folder.
#[derive(Debug, Default)]
pub struct CacheReport {
    /// `(photo, cached features name)`, both relative to the folder, in input order.
    pub ready: Vec<(String, String)>,
    pub extracted: usize,
    pub reused: usize,
    /// Photos that could not be decoded or extracted, with why.
    pub failed: Vec<(String, String)>,
}

/// Makes sure every photo of `dir` has current cached features from this
/// detector (`fingerprint`) with this box policy; extracts the missing or
/// stale ones. A photo that fails is reported and skipped, never fatal.
/// `load` is called at the first photo that needs the detector, if any: a
/// folder whose cache is current never loads it.
pub fn ensure_cached(
    dir: &Path,
    photos: &[String],
    fingerprint: &str,
    policy: BoxPolicy,
    load: &mut dyn FnMut() -> Result<Detector>,
    progress: &mut dyn FnMut(&str, bool),
) -> Result<CacheReport> {
    let mut report = CacheReport::default();
    let mut detector: Option<Detector> = None;
    let cache = dir.join(CACHE_DIR);
    for photo in photos {
        let path = dir.join(photo);
        let (size, mtime_ns) = sgraf_data::quick_stamp(&path)?;
        let source = Source {
            photo: photo.clone(),
            size,
            mtime_ns,
            detector: fingerprint.to_string(),
            boxes: policy.to_string(),
        };
        let feats = cache.join(format!("{photo}.npy"));
        let json = cache.join(format!("{photo}.json"));
        if feats.is_file() && cached_source(&json).as_ref() == Some(&source) {
            report.reused += 1;
            report.ready.push((photo.clone(), cached_features(photo)));
            progress(photo, false);
            continue;
        }
        if detector.is_none() {
            detector = Some(load()?);
        }
        let det = detector.as_ref().expect("loaded above");
        let result = BgrImage::open(&path)
            .and_then(|img| det.extract(&img, Some(policy)))
            .and_then(|r| {
                // A fixed count is what the matching model reads; a photo
                // too small for that many proposals cannot be scored.
                if policy.min == policy.max && r.len() != policy.min {
                    return Err(Error::Input(format!(
                        "the detector found {} regions, {} are needed",
                        r.len(),
                        policy.min
                    )));
                }
                Ok(r)
            });
        match result {
            Ok(r) => {
                write_regions(&feats, &json, &r, Some(&source))?;
                report.extracted += 1;
                report.ready.push((photo.clone(), cached_features(photo)));
            }
            Err(e) => report.failed.push((photo.clone(), e.to_string())),
        }
        progress(photo, true);
    }
    Ok(report)
}
