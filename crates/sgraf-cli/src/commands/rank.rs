//! `sgraf-cli rank`: the images of a folder for a query, or the captions of
//! a file for an image.

use anyhow::{bail, Result};
use serde_json::json;

use crate::flags::RankArgs;
use crate::ui::{print_hits, progress, Bars, Hit};

pub fn run(a: &RankArgs) -> Result<()> {
    let (model, top, as_json, paths_only) = (&a.model, a.top, a.json, a.paths_only);
    if top == Some(0) {
        bail!("--top must be at least 1");
    }
    if a.shortlist == Some(0) {
        bail!("--shortlist must be at least 1");
    }
    match (&a.images, &a.query, &a.image, &a.captions) {
        (Some(dir), Some(query), None, None) => {
            if query.trim().is_empty() {
                bail!("the query is empty");
            }
            let ui = Bars::default();
            let device = sgraf::parse_device(&model.device)?;
            let models = sgraf::Sgraf::for_folder(dir, &model.models, &device)?;
            let opts = sgraf::FolderOptions {
                exclude: a.exclude.clone(),
                detector: a.photos.detector.clone(),
            };
            let folder = sgraf::Folder::open(dir, models, &opts, &ui)?;
            let bar = progress(folder.names.len() as u64, "ranking");
            let (ranked, report) = folder.rank(query, a.shortlist, &mut |n| bar.inc(n as u64))?;
            bar.finish_and_clear();
            folder.report_notes(&report, &ui);
            let hits = ranked
                .into_iter()
                .map(|r| Hit {
                    score: r.score,
                    label: r.file,
                    extra: json!({}),
                })
                .collect();
            print_hits(hits, top, as_json, paths_only, "file");
        }
        (None, None, Some(image), Some(captions)) => {
            let loaded = super::load(model)?;
            let caps = super::read_captions(captions)?;
            let scores = loaded.caption_scores(image, &caps, &Bars::default())?;
            let hits = caps
                .into_iter()
                .zip(scores)
                .enumerate()
                .map(|(i, (caption, score))| Hit {
                    score,
                    label: caption,
                    extra: json!({"line": i + 1}),
                })
                .collect();
            print_hits(hits, top, as_json, paths_only, "caption");
        }
        _ => bail!(
            "rank needs either --images DIR --query TEXT (image retrieval) or --image FILE --captions FILE (caption retrieval)"
        ),
    }
    Ok(())
}
