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

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use candle_core::Device;
use serde_json::{json, Value};
use sgraf_data::Shard;
use sgraf_vision::{store, BoxPolicy};

use crate::error::{invalid, Error, Result};
use crate::Ui;

/// An I/O error on `path`.
fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A detector error while `what`.
fn loading(what: String) -> impl FnOnce(Error) -> Error {
    move |source| Error::Loading {
        what,
        source: Box::new(source),
    }
}

/// The layout file beside the splits (see `sgraf_data::precomp`).
pub use sgraf_data::precomp::LAYOUT_FILE;

/// How many names a message lists before "...".
const LISTED: usize = 5;

/// The kind of captions file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Karpathy,
    Coco,
    Tsv,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Karpathy => "Karpathy dataset JSON",
            Format::Coco => "COCO captions JSON",
            Format::Tsv => "TSV",
        })
    }
}

/// The splits of a precomp folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Dev,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Dev, Split::Test];

    /// The file prefix: `train`, `dev`, `test`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Dev => "dev",
            Split::Test => "test",
        }
    }
}

/// One photo of the captions file.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The photo, relative to the images folder.
    pub file: String,
    /// Karpathy's bare `filename` when `file` joins it to a `filepath`: used
    /// when the photo is not under its `filepath`.
    pub alt: Option<String>,
    /// Karpathy's split; None for COCO and TSV (`--split-sizes`).
    pub split: Option<Split>,
    pub captions: Vec<String>,
    /// Where the file names it, for messages (`images[3]`, `line 7`).
    pub origin: String,
}

/// A parsed captions file.
#[derive(Clone, Debug)]
pub struct Captions {
    pub format: Format,
    pub images: Vec<Entry>,
}

/// A caption on one line, whitespace collapsed; refused when the
/// tokenizer finds no word in it.
fn caption(raw: &str, file: &str, at: &str, what: &str) -> Result<String> {
    let c = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    if sgraf_text::caption_words(&c).is_empty() {
        invalid!("{what}: {at}: the caption {raw:?} of {file} has no words (the tokenizer finds nothing in it)");
    }
    Ok(c)
}

/// A photo's name as the captions file gives it: relative, inside the folder.
fn photo_name(raw: &str, at: &str, what: &str) -> Result<String> {
    let name = raw.trim();
    let p = Path::new(name);
    if name.is_empty() {
        invalid!("{what}: {at}: the photo's file name is empty");
    }
    if p.is_absolute()
        || p.components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        invalid!("{what}: {at}: the photo {name:?} must be a path inside the images folder (no leading /, no ..)");
    }
    // `./a.jpg` is `a.jpg`, as the folder's listing names it.
    let parts: Vec<&str> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    Ok(parts.join("/"))
}

/// The text of a captions file; non-UTF-8 is refused at its byte.
fn utf8<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str> {
    match std::str::from_utf8(bytes) {
        Ok(t) => Ok(t.strip_prefix('\u{feff}').unwrap_or(t)),
        Err(e) => {
            let off = e.valid_up_to();
            let line = bytes[..off].iter().filter(|&&b| b == b'\n').count() + 1;
            invalid!(
                "{what} is not UTF-8: byte 0x{:02x} at byte offset {off} (line {line}); save it as UTF-8",
                bytes[off]
            )
        }
    }
}

/// Reads and checks a captions file of any of the three formats.
pub fn read_captions(path: &Path) -> Result<Captions> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    parse_captions(&bytes, &path.display().to_string())
}

/// [`read_captions`] on the bytes of a file; `what` names it in errors.
pub fn parse_captions(bytes: &[u8], what: &str) -> Result<Captions> {
    let text = utf8(bytes, what)?;
    let captions = if text.trim_start().starts_with(['{', '[']) {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::Invalid(format!("{what} is not valid JSON: {e}")))?;
        if v.get("annotations").is_some() {
            parse_coco(&v, what)?
        } else if v.get("images").is_some() {
            parse_karpathy(&v, what)?
        } else {
            invalid!(
                "{what}: a JSON captions file needs \"images\" (Karpathy's dataset_*.json: \
                 images[].filename, split, sentences[].raw) or \"images\" and \"annotations\" \
                 (COCO captions: images[].file_name, annotations[].caption and image_id)"
            )
        }
    } else {
        parse_tsv(text, what)?
    };
    if captions.images.is_empty() {
        invalid!("{what} names no photos");
    }
    Ok(captions)
}

fn field<'a>(v: &'a Value, key: &str, at: &str, what: &str, kind: &str) -> Result<&'a Value> {
    v.get(key)
        .ok_or_else(|| Error::Invalid(format!("{what}: {at}.{key} is missing ({kind})")))
}

fn string<'a>(v: &'a Value, key: &str, at: &str, what: &str, kind: &str) -> Result<&'a str> {
    field(v, key, at, what, kind)?
        .as_str()
        .ok_or_else(|| Error::Invalid(format!("{what}: {at}.{key} is not a string")))
}

fn array<'a>(v: &'a Value, key: &str, at: &str, what: &str, kind: &str) -> Result<&'a [Value]> {
    field(v, key, at, what, kind)?
        .as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| Error::Invalid(format!("{what}: {at}.{key} is not an array")))
}

/// Refuses a photo named twice.
fn once(seen: &mut HashMap<String, String>, file: &str, at: &str, what: &str) -> Result<()> {
    if let Some(first) = seen.insert(file.to_string(), at.to_string()) {
        invalid!("{what}: {at} names the photo {file} again (first at {first}); each photo must appear once");
    }
    Ok(())
}

fn parse_karpathy(v: &Value, what: &str) -> Result<Captions> {
    const KIND: &str = "Karpathy dataset JSON: images[].filename, split, sentences[].raw";
    let images = array(v, "images", "the top level", what, KIND)
        .map_err(|_| Error::Invalid(format!("{what}: \"images\" must be an array ({KIND})")))?;
    let mut seen = HashMap::new();
    let mut out = Vec::with_capacity(images.len());
    for (i, im) in images.iter().enumerate() {
        let at = format!("images[{i}]");
        if !im.is_object() {
            invalid!("{what}: {at} is not an object ({KIND})");
        }
        let filename = photo_name(string(im, "filename", &at, what, KIND)?, &at, what)?;
        let (file, alt) = match im.get("filepath") {
            None | Some(Value::Null) => (filename, None),
            Some(Value::String(dir)) if dir.trim().is_empty() => (filename, None),
            Some(Value::String(dir)) => {
                let joined = photo_name(&format!("{}/{filename}", dir.trim()), &at, what)?;
                (joined, Some(filename))
            }
            Some(_) => invalid!("{what}: {at}.filepath is not a string"),
        };
        let split = match string(im, "split", &at, what, KIND)? {
            "train" | "restval" => Split::Train,
            "val" | "dev" => Split::Dev,
            "test" => Split::Test,
            other => {
                invalid!("{what}: {at}.split is {other:?}; expected train, restval, val or test")
            }
        };
        once(&mut seen, &file, &at, what)?;
        let mut captions = Vec::new();
        for (j, s) in array(im, "sentences", &at, what, KIND)?.iter().enumerate() {
            let sat = format!("{at}.sentences[{j}]");
            let raw = string(s, "raw", &sat, what, KIND)?;
            captions.push(caption(raw, &file, &sat, what)?);
        }
        out.push(Entry {
            file,
            alt,
            split: Some(split),
            captions,
            origin: at,
        });
    }
    Ok(Captions {
        format: Format::Karpathy,
        images: out,
    })
}

fn parse_coco(v: &Value, what: &str) -> Result<Captions> {
    const KIND: &str =
        "COCO captions JSON: images[].id, file_name; annotations[].image_id, caption";
    let images = array(v, "images", "the top level", what, KIND)
        .map_err(|_| Error::Invalid(format!("{what}: \"images\" must be an array ({KIND})")))?;
    let annotations = array(v, "annotations", "the top level", what, KIND).map_err(|_| {
        Error::Invalid(format!("{what}: \"annotations\" must be an array ({KIND})"))
    })?;
    let mut seen = HashMap::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(images.len());
    for (i, im) in images.iter().enumerate() {
        let at = format!("images[{i}]");
        if !im.is_object() {
            invalid!("{what}: {at} is not an object ({KIND})");
        }
        let id = field(im, "id", &at, what, KIND)?;
        if !(id.is_u64() || id.is_i64() || id.is_string()) {
            invalid!("{what}: {at}.id is {id}, not a number or a string");
        }
        let file = photo_name(string(im, "file_name", &at, what, KIND)?, &at, what)?;
        once(&mut seen, &file, &at, what)?;
        if let Some(first) = by_id.insert(id.to_string(), i) {
            invalid!("{what}: {at}.id {id} is also the id of images[{first}]; ids must be unique");
        }
        out.push(Entry {
            file,
            alt: None,
            split: None,
            captions: Vec::new(),
            origin: at,
        });
    }
    for (a, ann) in annotations.iter().enumerate() {
        let at = format!("annotations[{a}]");
        if !ann.is_object() {
            invalid!("{what}: {at} is not an object ({KIND})");
        }
        let id = field(ann, "image_id", &at, what, KIND)?;
        let raw = string(ann, "caption", &at, what, KIND)?;
        let &i = by_id.get(&id.to_string()).ok_or_else(|| {
            Error::Invalid(format!(
                "{what}: {at}.image_id {id} is the id of no image in \"images\""
            ))
        })?;
        let c = caption(raw, &out[i].file, &at, what)?;
        out[i].captions.push(c);
    }
    Ok(Captions {
        format: Format::Coco,
        images: out,
    })
}

fn parse_tsv(text: &str, what: &str) -> Result<Captions> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<Entry> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = format!("line {}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        let Some((file, raw)) = line.split_once('\t') else {
            invalid!("{what}: {at} has no tab: expected FILE<TAB>CAPTION (one caption per line)");
        };
        let file = photo_name(file, &at, what)?;
        let c = caption(raw, &file, &at, what)?;
        match index.get(&file) {
            Some(&i) => out[i].captions.push(c),
            None => {
                index.insert(file.clone(), out.len());
                out.push(Entry {
                    file,
                    alt: None,
                    split: None,
                    captions: vec![c],
                    origin: at,
                });
            }
        }
    }
    Ok(Captions {
        format: Format::Tsv,
        images: out,
    })
}

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

/// `a, b, c, ... (N in all)`.
fn listing(names: &[String]) -> String {
    let mut s = names[..names.len().min(LISTED)].join(", ");
    if names.len() > LISTED {
        s.push_str(&format!(", ... ({} in all)", names.len()));
    }
    s
}

/// The regions per photo: `boxes`, else the detector's own fixed count,
/// else 36 (the SCAN features).
fn box_policy(detector: &Path, boxes: Option<usize>) -> Result<BoxPolicy> {
    if boxes == Some(0) {
        invalid!("--boxes must be at least 1");
    }
    let n = match boxes {
        Some(n) => n,
        None => {
            let cfg = sgraf_vision::DetectorConfig::from_file(detector.join("config.json"))
                .map_err(|e| {
                    loading(format!("reading the detector {}", detector.display()))(e.into())
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

/// A `.npy` header (format 1.0, float32, C order) for `shape`, data
/// aligned to 64 bytes, as `sgraf_data::npy::encode_f32` writes it.
fn npy_header(shape: &[usize]) -> Vec<u8> {
    let dims = shape
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let dims = if shape.len() == 1 {
        format!("({dims},)")
    } else {
        format!("({dims})")
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
    let total = 6 + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len());
    out.extend_from_slice(b"\x93NUMPY");
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out
}

/// Photos and captions -> a precomp folder (see the module's notes). With
/// `shard`, only extracts that shard's photos into the region cache; a run
/// without it then writes the folder from the cache.
pub fn prepare(o: &PrepareOptions, ui: &dyn Ui) -> Result<PrepareReport> {
    let what = o.captions.display().to_string();
    if !o.images.is_dir() {
        invalid!("{} is not a folder of photos", o.images.display());
    }
    let captions = read_captions(&o.captions)?;
    let format = captions.format;
    match (format, o.split_sizes) {
        (Format::Karpathy, Some(_)) => invalid!(
            "--split-sizes is for COCO and TSV captions; {what} is Karpathy's format, whose \
             images name their split"
        ),
        (Format::Coco | Format::Tsv, None) => invalid!(
            "{what} ({format}) names no splits: pass --split-sizes DEV,TEST (the first DEV \
             photos become dev, the next TEST test, the rest train)"
        ),
        _ => {}
    }
    let mut report = PrepareReport {
        format: Some(format),
        shard: o.shard,
        ..Default::default()
    };

    // k: given, else the smallest count; photos with fewer are left out.
    let k = match o.captions_per_image {
        Some(0) => invalid!("--captions-per-image must be at least 1"),
        Some(k) => k,
        None => captions
            .images
            .iter()
            .map(|e| e.captions.len())
            .filter(|&n| n > 0)
            .min()
            .ok_or_else(|| Error::Invalid(format!("{what} holds no captions")))?,
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
            invalid!(
                "{} of the photos {what} names are not in {}: {} (pass --skip-missing to leave them out)",
                missing.len(),
                o.images.display(),
                listing(&missing)
            );
        }
        ui.note(&format!(
            "left out {} photo(s) missing from {}: {}",
            missing.len(),
            o.images.display(),
            listing(&missing)
        ));
        report.skipped_missing = missing;
    }
    // Two entries may only now name one photo (Karpathy's filepath fallback).
    let mut seen = HashMap::new();
    for e in &entries {
        once(&mut seen, &e.file, &e.origin, &what)?;
    }
    if entries.is_empty() {
        invalid!("no photo of {what} is left to prepare");
    }
    if let (Some((dev, test)), None) = (o.split_sizes, o.shard) {
        if dev + test >= entries.len() {
            invalid!(
                "--split-sizes {dev},{test} leaves no training photos: {} photos have {k} captions",
                entries.len()
            );
        }
    }

    // Every photo through the detector once, into the folder's cache.
    let detector = crate::hub::resolve_detector(&o.detector)?;
    let policy = box_policy(&detector, o.boxes)?;
    let fingerprint = sgraf_retrieval::index::model_fingerprint(&detector)
        .map_err(|e| loading(format!("reading the detector {}", detector.display()))(e.into()))?;
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
        &mut || sgraf_vision::Detector::from_folder(&detector, &o.device),
        &mut |_, _| ui.inc(1),
    );
    ui.finish();
    let cached = cached.map_err(|e| {
        Error::Invalid(format!(
            "extracting with the detector {}: {e}",
            detector.display()
        ))
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
            invalid!(
                "the detector could not read {} photo(s): {} (pass --skip-missing to leave them out)",
                names.len(),
                listing(&names)
            );
        }
        ui.note(&format!(
            "left out {} photo(s) the detector could not read: {}",
            names.len(),
            listing(&names)
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
        invalid!("no photo of {what} is left to prepare");
    }

    // The shape of a row, from the first photo.
    let first = &features[&splits[0].1[0].file];
    let shape = sgraf_data::Npy::open(o.images.join(first))?
        .shape()
        .to_vec();
    let [regions, dim] = shape[..] else {
        invalid!("{first} has shape {shape:?}, expected [regions, features]");
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
        let file = std::fs::File::create(&ims).map_err(io(&ims))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        let failed = io(&ims);
        w.write_all(&npy_header(&[images.len(), regions, dim]))
            .map_err(&failed)?;
        let mut bytes = Vec::with_capacity(regions * dim * 4);
        for e in images {
            let feats = o.images.join(&features[&e.file]);
            let npy = sgraf_data::Npy::open(&feats)?;
            if npy.shape() != [regions, dim] {
                invalid!(
                    "{} has shape {:?}; every photo needs [{regions}, {dim}]",
                    feats.display(),
                    npy.shape()
                );
            }
            bytes.clear();
            for v in npy.to_vec()? {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            w.write_all(&bytes).map_err(&failed)?;
            ui.inc(1);
        }
        w.into_inner().map_err(|e| failed(e.into_error()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn err(bytes: &[u8]) -> String {
        format!("{:#}", parse_captions(bytes, "caps").unwrap_err())
    }

    #[test]
    fn formats() {
        let k = parse_captions(
            br#"{"images": [{"filename": "a.jpg", "split": "restval", "sentences": [{"raw": "A dog."}, {"raw": "a  dog\nrunning"}]},
                            {"filepath": "val2014", "filename": "b.jpg", "split": "val", "sentences": [{"raw": "x"}]}]}"#,
            "caps",
        )
        .unwrap();
        assert_eq!(k.format, Format::Karpathy);
        assert_eq!(k.images[0].captions, ["A dog.", "a dog running"]);
        assert_eq!(k.images[0].split, Some(Split::Train));
        assert_eq!(k.images[1].file, "val2014/b.jpg");
        assert_eq!(k.images[1].alt.as_deref(), Some("b.jpg"));
        assert_eq!(k.images[1].split, Some(Split::Dev));

        let c = parse_captions(
            br#"{"images": [{"id": 7, "file_name": "x.png"}, {"id": 3, "file_name": "./y.png"}],
                 "annotations": [{"image_id": 3, "caption": "one"}, {"image_id": 7, "caption": "two"}, {"image_id": 3, "caption": "three"}]}"#,
            "caps",
        )
        .unwrap();
        assert_eq!(c.format, Format::Coco);
        assert_eq!(c.images[1].file, "y.png");
        assert_eq!(c.images[1].captions, ["one", "three"]);

        let t = parse_captions(
            "\u{feff}a.png\tone\nb.png\ttwo\r\n\na.png\tthree\n".as_bytes(),
            "caps",
        )
        .unwrap();
        assert_eq!(t.format, Format::Tsv);
        assert_eq!(t.images.len(), 2);
        assert_eq!(t.images[0].captions, ["one", "three"]);
    }

    #[test]
    fn malformed() {
        assert!(err(b"{\"images\": [").contains("not valid JSON"));
        assert!(
            err(br#"{"images": [{"filename": "a.jpg", "split": "train"}]}"#)
                .contains("images[0].sentences is missing")
        );
        assert!(
            err(br#"{"images": [{"filename": "a.jpg", "split": "x", "sentences": []}]}"#)
                .contains("images[0].split")
        );
        let e = err(br#"{"images": [{"filename": "a.jpg", "split": "train", "sentences": [{"raw": "ok"}]},
                                    {"filename": "a.jpg", "split": "test", "sentences": [{"raw": "ok"}]}]}"#);
        assert!(e.contains("images[1]") && e.contains("a.jpg again"), "{e}");
        let e = err(br#"{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 2, "caption": "x"}]}"#);
        assert!(e.contains("annotations[0].image_id 2"), "{e}");
        let e = err(b"a.png\tfine\nb.png\t  \n");
        assert!(e.contains("line 2") && e.contains("no words"), "{e}");
        assert!(err(b"a.png fine\n").contains("line 1 has no tab"));
        let e = err(b"a.png\tok\nb.png\tcaf\xe9\n");
        assert!(e.contains("byte offset 18") && e.contains("line 2"), "{e}");
        assert!(err(b"../a.png\tok\n").contains("inside the images folder"));
        assert!(err(br#"{"x": 1}"#).contains("needs \"images\""));
    }

    #[test]
    fn header_matches_the_writer() {
        let full = sgraf_data::npy::encode_f32(&[2, 3, 4], &[0.0; 24]);
        let h = npy_header(&[2, 3, 4]);
        assert_eq!(&full[..h.len()], &h[..]);
        assert_eq!(full.len(), h.len() + 24 * 4);
    }
}
