//! `sgraf-cli score`: every image of a features array against every caption.

use anyhow::Result;
use serde_json::json;

use crate::flags::ScoreArgs;
use crate::ui::Bars;

pub fn run(a: &ScoreArgs) -> Result<()> {
    let models = super::load(&a.model)?;
    let caps = super::read_captions(&a.captions)?;
    let scored = models.score_file(&a.features, &caps, &Bars::default())?;
    let (n_img, scores) = (scored.n_images, &scored.values);
    let n_cap = caps.len();
    if let Some(out) = &a.out {
        scored.write_npy(out)?;
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
