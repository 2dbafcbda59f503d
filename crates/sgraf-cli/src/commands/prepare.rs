//! `sgraf-cli prepare`: photos and captions -> a SCAN precomp folder.

use anyhow::{bail, Result};
use sgraf::prepare::{prepare, PrepareOptions};

use crate::flags::PrepareArgs;
use crate::ui::Bars;

/// `DEV,TEST`.
fn split_sizes(s: &str) -> Result<(usize, usize)> {
    let parse = |v: &str| v.trim().parse::<usize>().ok();
    match s.split_once(',') {
        Some((d, t)) => match (parse(d), parse(t)) {
            (Some(d), Some(t)) => Ok((d, t)),
            _ => bail!("--split-sizes must be DEV,TEST image counts (e.g. 1000,1000), found {s:?}"),
        },
        None => bail!("--split-sizes must be DEV,TEST image counts (e.g. 1000,1000), found {s:?}"),
    }
}

pub fn run(a: &PrepareArgs) -> Result<()> {
    let shard = a.shard.as_deref().map(sgraf::Shard::parse).transpose()?;
    let device = sgraf::parse_device(&a.device)?;
    let opts = PrepareOptions {
        captions: a.captions.clone(),
        images: a.images.clone(),
        detector: a.detector.clone(),
        out: a.out.clone(),
        split_sizes: a.split_sizes.as_deref().map(split_sizes).transpose()?,
        captions_per_image: a.captions_per_image,
        skip_missing: a.skip_missing,
        shard,
        boxes: a.boxes,
        device,
    };
    let report = prepare(&opts, &Bars::default())?;
    if a.json {
        println!("{}", report.to_json());
        return Ok(());
    }
    let photos = format!(
        "{} photo(s) extracted into {}, {} already there",
        report.extracted,
        a.images.join(sgraf::CACHE_DIR).display(),
        report.reused
    );
    if let Some(s) = report.shard {
        println!(
            "shard {}/{}: {photos}; run prepare without --shard to write {}",
            s.index,
            s.count,
            a.out.display()
        );
        return Ok(());
    }
    let k = report.captions_per_image;
    let splits: Vec<String> = report
        .splits
        .iter()
        .map(|(s, n)| format!("{} {n} images ({} captions)", s.name(), n * k))
        .collect();
    println!(
        "prepared {} ({}, {k} caption(s) per image, [{}, {}] regions per image): {}",
        a.out.display(),
        report.format.map_or(String::new(), |f| f.to_string()),
        report.regions,
        report.feature_dim,
        splits.join(", ")
    );
    println!("{photos}");
    let mut left_out = Vec::new();
    if report.dropped_few_captions > 0 {
        left_out.push(format!(
            "{} with fewer than {k} captions",
            report.dropped_few_captions
        ));
    }
    if !report.skipped_missing.is_empty() {
        left_out.push(format!("{} missing", report.skipped_missing.len()));
    }
    if !report.skipped_failed.is_empty() {
        left_out.push(format!("{} unreadable", report.skipped_failed.len()));
    }
    if !left_out.is_empty() {
        println!("left out photos: {}", left_out.join(", "));
    }
    Ok(())
}
