//! `sgraf-cli index`: encode a folder's images once into DIR/.sgraf-index/.

use anyhow::Result;
use sgraf_data::Shard;
use sgraf_retrieval::index;

use crate::flags::IndexArgs;
use crate::ui::{progress, say, Bars};

pub fn run(a: &IndexArgs) -> Result<()> {
    let dir = &a.images;
    let shard = a.shard.as_deref().map(Shard::parse).transpose()?;
    let loaded = super::load(&a.model)?;
    let ui = Bars::default();
    let names = sgraf::feature_names(
        dir,
        &a.exclude,
        a.photos.detector.as_deref(),
        &loaded,
        shard,
        &ui,
    )?;
    let records = loaded.model_records()?;
    let bar = progress(names.len() as u64, "encoding");
    let report = index::update(
        &loaded.scorer,
        &records,
        dir,
        &names,
        shard,
        &mut |n| bar.inc(n as u64),
        &mut || {
            say(
                &bar,
                "waiting for another index process on this folder".into(),
            )
        },
    )?;
    bar.finish_and_clear();
    if report.discarded {
        eprintln!("the old index was built for other models or in an older format; rebuilt it");
    }
    for problem in &report.damaged {
        eprintln!("damaged index part, its images were re-indexed: {problem}");
    }
    for (name, why) in &report.skipped {
        eprintln!("skipped {}: {why}", dir.join(name).display());
    }
    println!(
        "indexed {} images in {}{}: {} new, {} changed, {} removed, {} unchanged{}",
        report.rows,
        index::store::index_dir(dir).display(),
        shard.map_or(String::new(), |s| format!(
            " (shard {}/{})",
            s.index, s.count
        )),
        report.added,
        report.changed,
        report.removed,
        report.unchanged,
        if report.skipped.is_empty() {
            String::new()
        } else {
            format!(", {} skipped", report.skipped.len())
        }
    );
    Ok(())
}
