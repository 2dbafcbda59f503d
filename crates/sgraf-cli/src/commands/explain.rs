//! `sgraf-cli explain`: why an image matches a query.

use anyhow::{bail, Context, Result};
use sgraf::overlay;

use crate::flags::ExplainArgs;

pub fn run(a: &ExplainArgs) -> Result<()> {
    if a.query.trim().is_empty() {
        bail!("the query is empty");
    }
    let specs = sgraf::model_specs(&a.model.models, None)?;
    let loaded = sgraf::load_specs(specs, &a.model.device)?;
    let scorer = &loaded.scorer;
    let path = &a.image;
    let (mut e, photo) = if sgraf_vision::is_image_path(path) {
        let Some(det_dir) = sgraf::find_detector(a.photos.detector.as_deref(), &loaded)? else {
            bail!(
                "{} is a photo: pass --detector DIR to extract its regions (or explain its features from sgraf-cli extract)",
                path.display()
            );
        };
        let det = sgraf_vision::Detector::from_folder(&det_dir, scorer.device())
            .with_context(|| format!("loading the detector {}", det_dir.display()))?;
        let policy = sgraf_vision::BoxPolicy::fixed(scorer.config().num_regions);
        let regions = sgraf_vision::BgrImage::open(path)
            .and_then(|img| det.extract(&img, Some(policy)))
            .with_context(|| format!("extracting the regions of {}", path.display()))?;
        let mut e = sgraf::explain(scorer, regions.features.clone(), &a.query)?;
        e.boxes = Some(regions.boxes.clone());
        e.image_size = Some([regions.image_w, regions.image_h]);
        (e, Some(overlay::open_photo(path)?))
    } else {
        let (shape, feats) = sgraf_data::load_features(path)?;
        scorer.check_features(&shape, &path.display().to_string())?;
        if shape.len() != 2 && shape.iter().rev().skip(2).product::<usize>() != 1 {
            bail!(
                "{} holds {shape:?}: explain takes one image",
                path.display()
            );
        }
        (
            sgraf::explain(scorer, feats, &a.query)?.with_boxes_of(path),
            None,
        )
    };
    e.file = path.display().to_string();
    let order = e.strongest_words();
    if let Some(out) = &a.out {
        let canvas = match (&photo, e.image_size) {
            (Some(p), _) => p.clone(),
            (None, Some([w, h])) => overlay::blank(w, h),
            (None, None) => bail!(
                "--out needs the regions' boxes: {} has no {} with boxes (sgraf-cli extract writes it), \
                 or explain the photo itself with --detector",
                path.display(),
                sgraf::explain::sidecar_path(path).display()
            ),
        };
        let words: Vec<usize> = order.iter().copied().take(a.panels.max(1)).collect();
        let img = overlay::draw(&canvas, &e, &words)?;
        overlay::save_png(&img, out)?;
        eprintln!(
            "wrote {} ({}x{}): panels {}",
            out.display(),
            img.width(),
            img.height(),
            words
                .iter()
                .enumerate()
                .map(|(k, &w)| format!("{} {:?}", k + 1, e.words[w]))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if a.json {
        println!("{}", e.to_json());
        return Ok(());
    }
    let mut line = format!("{}: score {:.4}", e.file, e.score);
    if e.models.len() > 1 {
        let parts: Vec<String> = e
            .models
            .iter()
            .map(|p| format!("{} {:.4}", p.module, p.explanation.score))
            .collect();
        line += &format!(" ({})", parts.join(", "));
    }
    println!("{line}");
    let saf = e.saf_weights().map(<[f32]>::to_vec);
    let width = e.words.iter().map(|w| w.chars().count()).max().unwrap_or(4);
    for (i, word) in e.words.iter().enumerate() {
        let regions: Vec<String> = e
            .top_regions(i, a.top.max(1))
            .into_iter()
            .map(|(r, w)| {
                let b = e.boxes.as_ref().map_or(String::new(), |b| {
                    let [x1, y1, x2, y2] = b[r];
                    format!(" [{x1:.0},{y1:.0},{x2:.0},{y2:.0}]")
                });
                format!("region {r:>2} {w:.3}{b}")
            })
            .collect();
        let filt = saf
            .as_ref()
            .map_or(String::new(), |s| format!("  SAF {:.3}", s[i]));
        println!("  {word:<width$}{filt}  {}", regions.join("  "));
    }
    Ok(())
}
