//! `sgraf-cli extract`: photos -> region features.

use anyhow::{bail, Result};
use serde_json::json;
use sgraf::{BoxPolicy, ExtractOptions, Shard};

use crate::flags::ExtractArgs;
use crate::ui::Bars;

pub fn run(o: &ExtractArgs) -> Result<()> {
    let device = sgraf::parse_device(&o.device)?;
    let det = sgraf::load_detector(&o.detector, &device)?;
    let opts = ExtractOptions {
        images: o.images.clone(),
        out: o.out.clone(),
        exclude: o.exclude.clone(),
        shard: o.shard.as_deref().map(Shard::parse).transpose()?,
        skip_existing: o.skip_existing,
        boxes: o.boxes.as_deref().map(BoxPolicy::parse).transpose()?,
        conf: o.conf,
    };
    let report = sgraf::extract(&det, &opts, &Bars::default())?;
    if let Some(s) = report.shard_owns_none {
        eprintln!("shard {}/{} owns none of the photos", s.index, s.count);
        return Ok(());
    }
    let policy = report.policy.expect("an extraction that ran has a policy");
    let skipped = report.skipped_existing;
    if o.json {
        let written: Vec<_> = report
            .extracted
            .iter()
            .map(|x| json!({"photo": x.photo, "features": x.features, "regions": x.regions}))
            .collect();
        let failed: Vec<_> = report
            .failed
            .iter()
            .map(|(photo, error)| json!({"photo": photo, "error": error}))
            .collect();
        println!(
            "{}",
            json!({"extracted": written, "skipped_existing": skipped, "failed": failed, "boxes": policy.to_string()})
        );
    } else {
        println!(
            "extracted {} photo(s) into {} ({policy} regions each), {skipped} already done, {} failed",
            report.extracted.len(),
            o.out.display(),
            report.failed.len()
        );
    }
    if report.extracted.is_empty() && skipped == 0 {
        bail!("no photo could be extracted");
    }
    Ok(())
}
