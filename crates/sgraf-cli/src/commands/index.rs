//! `sgraf-cli index`: encode a folder's images once into DIR/.sgraf-index/.

use anyhow::Result;
use sgraf::{IndexOptions, Shard, Ui};

use crate::flags::IndexArgs;
use crate::ui::Bars;

pub fn run(a: &IndexArgs) -> Result<()> {
    let dir = &a.images;
    let shard = a.shard.as_deref().map(Shard::parse).transpose()?;
    let loaded = super::load(&a.model)?;
    let ui = Bars::default();
    let opts = IndexOptions {
        exclude: a.exclude.clone(),
        detector: a.photos.detector.clone(),
        shard,
    };
    let report = sgraf::index_folder(&loaded, dir, &opts, &ui, &mut || {
        ui.note("waiting for another index process on this folder")
    })?;
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
        sgraf::index_dir(dir).display(),
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
