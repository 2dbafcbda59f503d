//! `sgraf-cli explain`: why an image matches a query.

use anyhow::{bail, Result};
use sgraf::overlay;

use crate::flags::ExplainArgs;

pub fn run(a: &ExplainArgs) -> Result<()> {
    if a.query.trim().is_empty() {
        bail!("the query is empty");
    }
    let specs = sgraf::model_specs(&a.model.models, None)?;
    let loaded = sgraf::load_specs(specs, &a.model.device)?;
    let path = &a.image;
    let e = loaded.explain_file(path, &a.query, a.photos.detector.as_deref())?;
    let photo = if sgraf::is_image_path(path) {
        Some(overlay::open_photo(path)?)
    } else {
        None
    };
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
