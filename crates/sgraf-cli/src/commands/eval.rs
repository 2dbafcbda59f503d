//! `sgraf-cli eval`: the standard Flickr30K/COCO evaluation.

use std::time::Instant;

use anyhow::{bail, Result};
use sgraf::Sgraf;
use sgraf_data::Precomp;

use crate::flags::EvalArgs;
use crate::ui::progress;

pub fn run(a: &EvalArgs) -> Result<()> {
    let (data, split) = (&a.data, a.split.as_str());
    let Sgraf { scorer, .. } = super::load(&a.model)?;
    let pre = Precomp::open_with(data, split, a.captions_per_image)?;
    pre.check_eval()?;
    scorer.check_features(pre.images.shape(), &pre.images.path().display().to_string())?;
    let n_img = pre.n_images();
    let folds = if a.fold5 { 5 } else { 1 };
    if n_img % folds != 0 {
        bail!(
            "--fold5 needs the images to split into five equal folds; {split} has {n_img} images"
        );
    }
    let per = n_img / folds;
    let pairs = (per * per * pre.captions_per_image() * folds) as u64;
    let bar = progress(pairs, "pairs");
    let start = Instant::now();
    let m =
        sgraf_retrieval::metrics::evaluate(&scorer, &pre, None, folds, &mut |n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    if a.json {
        println!("{}", m.to_json());
    } else {
        let what = if a.fold5 {
            format!("{split}, 5 folds of {per} images")
        } else {
            format!("{split}, {n_img} images")
        };
        let k = pre.captions_per_image();
        let each = if k == 5 {
            String::new()
        } else {
            format!(", {k} caption(s) per image")
        };
        println!("{} ({what}{each})", data.display());
        for (name, r) in [("image -> text", m.i2t), ("text -> image", m.t2i)] {
            println!(
                "{name}: R@1 {:.1}  R@5 {:.1}  R@10 {:.1}  medr {:.1}  meanr {:.1}",
                r.r1, r.r5, r.r10, r.medr, r.meanr
            );
        }
        println!("rsum: {:.1}", m.rsum);
    }
    eprintln!(
        "scored {pairs} pairs in {secs:.1} s ({:.0} pairs/s)",
        pairs as f64 / secs.max(1e-9)
    );
    Ok(())
}
