//! Photos and their captions -> a SCAN precomp folder to train and
//! evaluate on (`sgraf-cli prepare`).
//!
//! The captions file is one of
//! - Karpathy's `dataset_*.json`: `images[].filename` (under
//!   `images[].filepath` when it has one), `split` (`train`, `restval` ->
//!   train, `val` -> dev, `test`), `sentences[].raw`;
//! - COCO's captions JSON: `images[].{id, file_name}` and
//!   `annotations[].{image_id, caption}`, split by `--split-sizes DEV,TEST`;
//! - a TSV of `file<TAB>caption` lines, one caption per line (the lines of a
//!   file are its captions), split by `--split-sizes DEV,TEST`.
//!
//! The output has `{split}_ims.npy` (`[images, regions, features]`, each row
//! what `sgraf-cli extract` gives for the photo) and `{split}_caps.txt` (k
//! captions per image, consecutive, images in the captions file's order),
//! and `precomp.json` naming k. Photos go through the detector once, into
//! the folder's region cache (`DIR/.sgraf-regions/`) that `rank` and
//! `index` share; the arrays are then written a row at a time from it into
//! a temporary folder that replaces the output folder whole at the end, so
//! an interrupted run leaves no partial output and resumes at no cost.
//!
//! Its home is this crate, not `sgraf-data`: it joins the detector
//! (`sgraf-vision`), the tokenizer's idea of a word (`sgraf-text`), the
//! detector's fingerprint (`sgraf-retrieval`) and Hub ids (`hub`), which
//! `sgraf-data`, the bottom of the stack, must not depend on; the file
//! formats it writes are `sgraf-data`'s (`npy::F32Writer`, `Pending`).
//! [`captions`] reads the captions file.

pub mod captions;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sgraf_core::Device;
use sgraf_data::npy::F32Writer;
use sgraf_data::Shard;
use sgraf_vision::{store, BoxPolicy};

pub use captions::{parse_captions, read_captions, Captions, Entry, Format, Split};

use crate::error::{listing, Error, Result};
use crate::Ui;

/// An I/O error on `path`.
fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The layout file beside the splits (see `sgraf_data::precomp`).
pub use sgraf_data::precomp::LAYOUT_FILE;

/// How many names a message lists before "...".
const LISTED: usize = 5;

/// What `prepare` is asked to do.
#[derive(Clone, Debug)]
pub struct PrepareOptions {
    /// The captions file (Karpathy JSON, COCO JSON or TSV).
    pub captions: PathBuf,
    /// The folder of the photos the captions file names.
    pub images: PathBuf,
    /// The detector: a converted folder (config.json, model.safetensors) or a
    /// Hub id, resolved once the captions and photos are found good.
    pub detector: String,
    /// The precomp folder to write.
    pub out: PathBuf,
    /// `(dev, test)` images for COCO and TSV captions.
    pub split_sizes: Option<(usize, usize)>,
    /// k (default: the smallest count of any photo).
    pub captions_per_image: Option<usize>,
    /// Leave out photos missing from the folder (or unreadable) instead of refusing.
    pub skip_missing: bool,
    /// Only extract this shard's photos into the cache; write nothing.
    pub shard: Option<Shard>,
    /// Regions per photo (default: the detector's own fixed count, else 36).
    pub boxes: Option<usize>,
    pub device: Device,
}

/// What `prepare` did.
#[derive(Clone, Debug, Default)]
pub struct PrepareReport {
    pub format: Option<Format>,
    pub captions_per_image: usize,
    /// Images per written split (none with `--shard`).
    pub splits: Vec<(Split, usize)>,
    /// Photos with fewer than k captions, left out.
    pub dropped_few_captions: usize,
    /// Photos missing from the folder, left out (`--skip-missing`).
    pub skipped_missing: Vec<String>,
    /// Photos the detector could not read, left out (`--skip-missing`), with why.
    pub skipped_failed: Vec<(String, String)>,
    pub extracted: usize,
    pub reused: usize,
    /// `[regions, features]` of every row.
    pub regions: usize,
    pub feature_dim: usize,
    pub shard: Option<Shard>,
}

impl PrepareReport {
    /// The summary `sgraf-cli prepare --json` prints.
    pub fn to_json(&self) -> Value {
        let splits: serde_json::Map<String, Value> = self
            .splits
            .iter()
            .map(|(s, n)| {
                (
                    s.name().to_string(),
                    json!({"images": n, "captions": n * self.captions_per_image}),
                )
            })
            .collect();
        json!({
            "format": self.format.map(|f| match f {
                Format::Karpathy => "karpathy",
                Format::Coco => "coco",
                Format::Tsv => "tsv",
            }),
            "captions_per_image": self.captions_per_image,
            "splits": splits,
            "dropped_few_captions": self.dropped_few_captions,
            "skipped_missing": self.skipped_missing,
            "skipped_failed": self.skipped_failed.iter().map(|(p, why)| json!({"photo": p, "error": why})).collect::<Vec<_>>(),
            "extracted": self.extracted,
            "reused": self.reused,
            "regions": self.regions,
            "feature_dim": self.feature_dim,
            "shard": self.shard.map(|s| format!("{}/{}", s.index, s.count)),
        })
    }
}

/// The regions per photo: `boxes`, else the detector's own fixed count,
/// else 36 (the SCAN features).
fn box_policy(detector: &Path, boxes: Option<usize>) -> Result<BoxPolicy> {
    if boxes == Some(0) {
        return Err(at_least_one("boxes"));
    }
    let n = match boxes {
        Some(n) => n,
        None => {
            let cfg = sgraf_vision::DetectorConfig::from_file(detector.join("config.json"))
                .map_err(|e| {
                    Error::loading(format!("reading the detector {}", detector.display()))(e.into())
                })?;
            if cfg.boxes.min == cfg.boxes.max {
                cfg.boxes.min
            } else {
                36
            }
        }
    };
    Ok(BoxPolicy::fixed(n))
}

/// An option given 0 where it counts something.
fn at_least_one(name: &'static str) -> Error {
    Error::BadOption {
        name,
        expected: "at least 1".into(),
        found: "0".into(),
    }
}

/// Photos and captions -> a precomp folder (see the module's notes). With
/// `shard`, only extracts that shard's photos into the region cache; a run
/// without it then writes the folder from the cache.
pub fn prepare(o: &PrepareOptions, ui: &dyn Ui) -> Result<PrepareReport> {
    let what = o.captions.display().to_string();
    if !o.images.is_dir() {
        return Err(Error::NotFound {
            path: o.images.clone(),
            expected: "a folder of photos",
        });
    }
    let captions = read_captions(&o.captions)?;
    let format = captions.format;
    match (format, o.split_sizes) {
        (Format::Karpathy, Some((dev, test))) => {
            return Err(Error::BadOption {
                name: "split_sizes",
                expected: format!(
                    "left out for {what}: Karpathy's format, whose images name their split"
                ),
                found: format!("{dev},{test}"),
            })
        }
        (Format::Coco | Format::Tsv, None) => {
            return Err(Error::BadOption {
                name: "split_sizes",
                expected: format!(
                    "DEV,TEST for {what} ({format}), which names no splits (the first DEV \
                     photos become dev, the next TEST test, the rest train)"
                ),
                found: "none".into(),
            })
        }
        _ => {}
    }
    let mut report = PrepareReport {
        format: Some(format),
        shard: o.shard,
        ..Default::default()
    };

    // k: given, else the smallest count; photos with fewer are left out.
    let k = match o.captions_per_image {
        Some(0) => return Err(at_least_one("captions_per_image")),
        Some(k) => k,
        None => captions
            .images
            .iter()
            .map(|e| e.captions.len())
            .filter(|&n| n > 0)
            .min()
            .ok_or_else(|| Error::NoCaptionsIn {
                path: o.captions.clone(),
            })?,
    };
    report.captions_per_image = k;
    let mut entries: Vec<Entry> = Vec::with_capacity(captions.images.len());
    for mut e in captions.images {
        if e.captions.len() < k {
            report.dropped_few_captions += 1;
        } else {
            e.captions.truncate(k);
            entries.push(e);
        }
    }
    if report.dropped_few_captions > 0 {
        ui.note(&format!(
            "left out {} photo(s) with fewer than {k} captions",
            report.dropped_few_captions
        ));
    }

    // Photos missing from the folder: refused, or left out.
    let mut missing = Vec::new();
    entries.retain_mut(|e| {
        if o.images.join(&e.file).is_file() {
            return true;
        }
        if let Some(alt) = e.alt.take() {
            if o.images.join(&alt).is_file() {
                e.file = alt;
                return true;
            }
        }
        missing.push(e.file.clone());
        false
    });
    if !missing.is_empty() {
        if !o.skip_missing {
            return Err(Error::MissingPhotos {
                dir: o.images.clone(),
                photos: missing,
            });
        }
        ui.note(&format!(
            "left out {} photo(s) missing from {}: {}",
            missing.len(),
            o.images.display(),
            listing(&missing, LISTED)
        ));
        report.skipped_missing = missing;
    }
    // Two entries may only now name one photo (Karpathy's filepath fallback).
    let mut seen = HashMap::new();
    for e in &entries {
        captions::once(&mut seen, &e.file, &e.origin).map_err(|(at, problem)| Error::Captions {
            path: o.captions.clone(),
            at,
            problem,
        })?;
    }
    if entries.is_empty() {
        return Err(Error::NothingToPrepare {
            captions: o.captions.clone(),
        });
    }
    if let (Some((dev, test)), None) = (o.split_sizes, o.shard) {
        if dev.saturating_add(test) >= entries.len() {
            return Err(Error::BadOption {
                name: "split_sizes",
                expected: format!(
                    "DEV + TEST below the {} photos with {k} captions, which leaves training photos",
                    entries.len()
                ),
                found: format!("{dev},{test}"),
            });
        }
    }

    // Every photo through the detector once, into the folder's cache.
    let detector = crate::hub::resolve_detector(&o.detector)?;
    let policy = box_policy(&detector, o.boxes)?;
    let fingerprint = sgraf_retrieval::index::model_fingerprint(&detector).map_err(|e| {
        Error::loading(format!("reading the detector {}", detector.display()))(e.into())
    })?;
    let photos: Vec<String> = entries
        .iter()
        .map(|e| e.file.clone())
        .filter(|f| o.shard.is_none_or(|s| s.owns(f)))
        .collect();
    ui.start("photos", photos.len() as u64);
    let cached = store::ensure_cached(
        &o.images,
        &photos,
        &fingerprint,
        policy,
        &mut || sgraf_vision::Detector::from_folder(&detector, &o.device.tensors()),
        &mut |_, _| ui.inc(1),
    );
    ui.finish();
    let cached = cached.map_err(|e| {
        Error::loading(format!(
            "extracting with the detector {}",
            detector.display()
        ))(e.into())
    })?;
    report.extracted = cached.extracted;
    report.reused = cached.reused;
    if o.shard.is_some() {
        for (photo, why) in &cached.failed {
            ui.note(&format!(
                "could not extract {}: {why}",
                o.images.join(photo).display()
            ));
        }
        report.skipped_failed = cached.failed;
        return Ok(report);
    }
    if !cached.failed.is_empty() {
        let names: Vec<String> = cached
            .failed
            .iter()
            .map(|(p, why)| format!("{p} ({why})"))
            .collect();
        if !o.skip_missing {
            return Err(Error::UnreadablePhotos { photos: names });
        }
        ui.note(&format!(
            "left out {} photo(s) the detector could not read: {}",
            names.len(),
            listing(&names, LISTED)
        ));
        let failed: HashSet<&str> = cached.failed.iter().map(|(p, _)| p.as_str()).collect();
        entries.retain(|e| !failed.contains(e.file.as_str()));
        report.skipped_failed = cached.failed.clone();
    }
    let features: HashMap<String, String> = cached.ready.into_iter().collect();

    // Splits: Karpathy's own, else the first DEV photos, the next TEST, the rest.
    let mut splits: Vec<(Split, Vec<&Entry>)> =
        Split::ALL.iter().map(|&s| (s, Vec::new())).collect();
    for (i, e) in entries.iter().enumerate() {
        let split = match (e.split, o.split_sizes) {
            (Some(s), _) => s,
            (None, Some((dev, _))) if i < dev => Split::Dev,
            (None, Some((dev, test))) if i < dev + test => Split::Test,
            _ => Split::Train,
        };
        splits
            .iter_mut()
            .find(|(s, _)| *s == split)
            .expect("every split")
            .1
            .push(e);
    }
    splits.retain(|(_, v)| !v.is_empty());
    if splits.is_empty() {
        return Err(Error::NothingToPrepare {
            captions: o.captions.clone(),
        });
    }

    // The shape of a row, from the first photo.
    let first = &features[&splits[0].1[0].file];
    let shape = sgraf_data::Npy::open(o.images.join(first))?
        .shape()
        .to_vec();
    let [regions, dim] = shape[..] else {
        return Err(Error::Invalid(format!(
            "{first} has shape {shape:?}, expected [regions, features]"
        )));
    };
    report.regions = regions;
    report.feature_dim = dim;

    // The whole folder is written under a temporary name and swapped in at
    // the end: an error or an interruption leaves the previous one as it was.
    if let Some(parent) = o.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let pending = sgraf_data::Pending::dir(&o.out)?;
    let tmp = pending.path().to_path_buf();
    let rows: usize = splits.iter().map(|(_, v)| v.len()).sum();
    ui.start("writing", rows as u64);
    for (split, images) in &splits {
        let name = split.name();
        let ims = tmp.join(format!("{name}_ims.npy"));
        let mut w = F32Writer::create(&ims, &[images.len(), regions, dim])?;
        for e in images {
            let feats = o.images.join(&features[&e.file]);
            let npy = sgraf_data::Npy::open(&feats)?;
            if npy.shape() != [regions, dim] {
                return Err(Error::FeatureShape {
                    what: feats.display().to_string(),
                    expected: [regions, dim],
                    found: npy.shape().to_vec(),
                });
            }
            w.write(&npy.to_vec()?)?;
            ui.inc(1);
        }
        w.finish()?;
        let caps = tmp.join(format!("{name}_caps.txt"));
        let mut text = String::new();
        for e in images {
            for c in &e.captions {
                text.push_str(c);
                text.push('\n');
            }
        }
        std::fs::write(&caps, text).map_err(io(&caps))?;
        report.splits.push((*split, images.len()));
    }
    ui.finish();
    let layout = tmp.join(LAYOUT_FILE);
    let mut description = report.to_json();
    if let Some(obj) = description.as_object_mut() {
        // What this run did is no property of the folder.
        for key in ["extracted", "reused", "shard"] {
            obj.remove(key);
        }
        obj.insert("captions".into(), json!(o.captions.display().to_string()));
        obj.insert("images".into(), json!(o.images.display().to_string()));
        obj.insert("detector".into(), json!(fingerprint));
    }
    let bytes = serde_json::to_vec_pretty(&description).expect("JSON");
    std::fs::write(&layout, bytes).map_err(io(&layout))?;
    pending.commit()?;
    Ok(report)
}
