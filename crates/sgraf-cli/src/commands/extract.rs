//! `sgraf-cli extract`: photos -> region features.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::json;
use sgraf_vision::{store, BgrImage, BoxPolicy, Detector};

use crate::flags::ExtractArgs;
use crate::ui::{progress, say};

/// `a/b/photo.jpg` -> `OUT/a/b/photo` (the .npy and .json stem).
fn stem(out: &Path, photo: &str) -> PathBuf {
    let p = Path::new(photo);
    out.join(p.with_extension(""))
}

fn newer_than(output: &Path, photo: &Path) -> bool {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    matches!((m(output), m(photo)), (Some(o), Some(p)) if o >= p)
}

pub fn run(o: &ExtractArgs) -> Result<()> {
    let device = sgraf::parse_device(&o.device)
        .with_context(|| format!("opening the device {:?}", o.device))?
        .tensors();
    let det_dir = sgraf::hub::resolve_detector(&o.detector)?;
    let det = Detector::from_folder(&det_dir, &device)
        .with_context(|| format!("loading the detector {}", o.detector))?;
    let mut policy = match &o.boxes {
        Some(b) => BoxPolicy::parse(b)?,
        None => det.config().boxes,
    };
    policy.conf = o.conf;
    let shard = o
        .shard
        .as_deref()
        .map(sgraf_data::Shard::parse)
        .transpose()?;
    let listing = sgraf_data::list_features(&o.images, &o.exclude)?;
    let mut photos = listing.photos;
    if let Some(s) = shard {
        photos.retain(|p| s.owns(p));
        if photos.is_empty() {
            eprintln!("shard {}/{} owns none of the photos", s.index, s.count);
            return Ok(());
        }
    }
    if photos.is_empty() {
        bail!(
            "{} holds no photos (.jpg, .jpeg, .png, .webp, .bmp, .tif, .tiff)",
            o.images.display()
        );
    }
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let bar = progress(photos.len() as u64, "photos");
    let (mut written, mut skipped, mut failed) = (Vec::new(), 0usize, Vec::new());
    for photo in &photos {
        let src = o.images.join(photo);
        let stem = stem(&o.out, photo);
        let (npy, js) = (stem.with_extension("npy"), stem.with_extension("json"));
        if o.skip_existing && newer_than(&npy, &src) && newer_than(&js, &src) {
            skipped += 1;
            bar.inc(1);
            continue;
        }
        let result = if sgraf_vision::is_image_path(&src) {
            BgrImage::open(&src).and_then(|img| det.extract(&img, Some(policy)))
        } else {
            Err(sgraf_vision::Error::Decode {
                path: src.clone(),
                err: "unsupported format (JPEG, PNG, WebP, BMP and TIFF are read; GIF is not)"
                    .into(),
            })
        };
        match result.map_err(anyhow::Error::from).and_then(|r| {
            store::write_regions(&npy, &js, &r, None)?;
            Ok(r.len())
        }) {
            Ok(k) => written.push(json!({"photo": photo, "features": npy, "regions": k})),
            Err(e) => {
                say(&bar, format!("skipped {}: {e:#}", src.display()));
                failed.push(json!({"photo": photo, "error": format!("{e:#}")}));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if o.json {
        println!(
            "{}",
            json!({"extracted": written, "skipped_existing": skipped, "failed": failed, "boxes": policy.to_string()})
        );
    } else {
        println!(
            "extracted {} photo(s) into {} ({policy} regions each), {skipped} already done, {} failed",
            written.len(),
            o.out.display(),
            failed.len()
        );
    }
    if written.is_empty() && skipped == 0 {
        bail!("no photo could be extracted");
    }
    Ok(())
}
