//! Photos -> region features: each photo of a folder through the detector
//! into `OUT/<photo path without extension>.npy` (`[regions, 2048]`) and
//! `.json` (its boxes), what `sgraf-cli extract` runs.

use std::path::{Path, PathBuf};

use sgraf_data::Shard;
use sgraf_vision::{store, BgrImage, BoxPolicy, Detector};

use crate::error::{Error, Result};
use crate::Ui;

/// What to extract.
#[derive(Clone, Debug)]
pub struct ExtractOptions {
    /// The folder of photos (searched recursively).
    pub images: PathBuf,
    /// Where the features go, mirroring the photos' relative paths.
    pub out: PathBuf,
    /// Glob patterns of files to leave out.
    pub exclude: Vec<String>,
    /// Only the photos this shard owns.
    pub shard: Option<Shard>,
    /// Leave out photos whose outputs are newer than the photo.
    pub skip_existing: bool,
    /// How boxes are chosen (by default the detector's own policy); its
    /// confidence threshold is replaced by `conf`.
    pub boxes: Option<BoxPolicy>,
    /// The detection confidence threshold.
    pub conf: f32,
}

/// One photo's features, written.
#[derive(Clone, Debug, PartialEq)]
pub struct Extracted {
    /// Relative to the photos' folder.
    pub photo: String,
    pub features: PathBuf,
    pub regions: usize,
}

/// What an extraction did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExtractReport {
    pub extracted: Vec<Extracted>,
    /// Photos whose outputs were already newer ([`ExtractOptions::skip_existing`]).
    pub skipped_existing: usize,
    /// Photos that could not be read or extracted, and why.
    pub failed: Vec<(String, String)>,
    /// The box policy used.
    pub policy: Option<BoxPolicy>,
    /// Set when the shard owns none of the photos (nothing was done).
    pub shard_owns_none: Option<Shard>,
}

/// `a/b/photo.jpg` -> `OUT/a/b/photo` (the .npy and .json stem).
fn stem(out: &Path, photo: &str) -> PathBuf {
    out.join(Path::new(photo).with_extension(""))
}

fn newer_than(output: &Path, photo: &Path) -> bool {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    matches!((m(output), m(photo)), (Some(o), Some(p)) if o >= p)
}

/// Extracts the region features of every photo of `opts.images` with
/// `detector`; a photo that fails is reported (through `ui` and in the
/// report), not fatal. Progress goes to `ui` ("photos").
pub fn extract(detector: &Detector, opts: &ExtractOptions, ui: &dyn Ui) -> Result<ExtractReport> {
    let mut policy = opts.boxes.unwrap_or(detector.config().boxes);
    policy.conf = opts.conf;
    let mut report = ExtractReport {
        policy: Some(policy),
        ..ExtractReport::default()
    };
    let mut photos = sgraf_data::list_features(&opts.images, &opts.exclude)?.photos;
    if let Some(s) = opts.shard {
        photos.retain(|p| s.owns(p));
        if photos.is_empty() {
            report.shard_owns_none = Some(s);
            return Ok(report);
        }
    }
    if photos.is_empty() {
        return Err(Error::NoPhotos {
            dir: opts.images.clone(),
        });
    }
    std::fs::create_dir_all(&opts.out).map_err(|source| Error::Io {
        path: opts.out.clone(),
        source,
    })?;
    ui.start("photos", photos.len() as u64);
    for photo in photos {
        let src = opts.images.join(&photo);
        let stem = stem(&opts.out, &photo);
        let (npy, js) = (stem.with_extension("npy"), stem.with_extension("json"));
        if opts.skip_existing && newer_than(&npy, &src) && newer_than(&js, &src) {
            report.skipped_existing += 1;
            ui.inc(1);
            continue;
        }
        let result = if sgraf_vision::is_image_path(&src) {
            BgrImage::open(&src).and_then(|img| detector.extract(&img, Some(policy)))
        } else {
            Err(sgraf_vision::Error::Decode {
                path: src.clone(),
                err: "unsupported format (JPEG, PNG, WebP, BMP and TIFF are read; GIF is not)"
                    .into(),
            })
        };
        match result.and_then(|r| {
            store::write_regions(&npy, &js, &r, None)?;
            Ok(r.len())
        }) {
            Ok(regions) => report.extracted.push(Extracted {
                photo,
                features: npy,
                regions,
            }),
            Err(e) => {
                let why = crate::error::chain(&e);
                ui.note(&format!("skipped {}: {why}", src.display()));
                report.failed.push((photo, why));
            }
        }
        ui.inc(1);
    }
    ui.finish();
    Ok(report)
}
