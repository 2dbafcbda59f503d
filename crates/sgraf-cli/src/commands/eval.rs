//! `sgraf-cli eval`: the standard Flickr30K/COCO evaluation.

use std::time::Instant;

use anyhow::Result;
use sgraf::{EvalOptions, Evaluation};

use crate::flags::EvalArgs;
use crate::ui::progress;

pub fn run(a: &EvalArgs) -> Result<()> {
    let (data, split) = (&a.data, a.split.as_str());
    let models = super::load(&a.model)?;
    let opts = EvalOptions {
        split: split.to_string(),
        captions_per_image: a.captions_per_image,
        fold5: a.fold5,
    };
    let eval = Evaluation::open(&models, data, &opts)?;
    let pairs = eval.pairs();
    let bar = progress(pairs, "pairs");
    let start = Instant::now();
    let m = eval.run(&mut |n| bar.inc(n))?;
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    if a.json {
        println!("{}", m.to_json());
    } else {
        let what = if a.fold5 {
            format!("{split}, 5 folds of {} images", m.n_images / m.folds)
        } else {
            format!("{split}, {} images", m.n_images)
        };
        let k = m.captions_per_image;
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
