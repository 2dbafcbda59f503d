//! `sgraf-cli score`: every image of a features array against every caption.

use anyhow::{bail, Result};
use serde_json::json;
use sgraf::Sgraf;
use sgraf_data::Npy;

use crate::flags::ScoreArgs;
use crate::ui::progress;

pub fn run(a: &ScoreArgs) -> Result<()> {
    let Sgraf { scorer, .. } = super::load(&a.model)?;
    let features = &a.features;
    let feats = Npy::open(features)?;
    if feats.shape().len() != 3 {
        bail!(
            "{} has shape {:?}; expected [n_images, {}, {}]",
            features.display(),
            feats.shape(),
            scorer.config().num_regions,
            scorer.config().img_dim
        );
    }
    scorer.check_features(feats.shape(), &features.display().to_string())?;
    let caps = super::read_captions(&a.captions)?;
    let n_img = feats.shape()[0];
    let bar = progress((n_img + n_img * caps.len()) as u64, "scoring");
    let images = scorer.encode_images(n_img, |s, n| Ok(feats.rows(s, n)?), &mut |n| {
        bar.inc(n as u64)
    })?;
    let scores = scorer.score_captions(&images, &caps, &mut |n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    let n_cap = caps.len();
    if let Some(out) = &a.out {
        sgraf_data::npy::write_f32(out, &[n_img, n_cap], &scores)?;
        eprintln!("wrote {}: [{n_img}, {n_cap}] float32 scores", out.display());
    } else if a.json {
        let rows: Vec<&[f32]> = scores.chunks(n_cap.max(1)).collect();
        println!("{}", json!({ "captions": caps, "scores": rows }));
    } else {
        print!("{:>8}", "");
        for c in 0..n_cap {
            print!(" {:>7}", format!("c{c}"));
        }
        println!();
        for i in 0..n_img {
            print!("{:>8}", format!("image {i}"));
            for s in &scores[i * n_cap..(i + 1) * n_cap] {
                print!(" {s:>7.4}");
            }
            println!();
        }
        println!();
        for (c, cap) in caps.iter().enumerate() {
            println!("c{c}: {cap}");
        }
    }
    Ok(())
}
