//! `cargo xtask demo`: the whole job, offline, on synthetic data.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use sgraf_core::{Module, SgrafModel};
use sgraf_data::Precomp;
use sgraf_retrieval::index;
use sgraf_retrieval::metrics::evaluate;
use sgraf_retrieval::{Metrics, Scorer};
use sgraf_text::CaptionTokenizer;
use sgraf_train::synthetic::Synthetic;
use sgraf_train::trainer::Event;
use sgraf_train::Trainer;

fn show(name: &str, m: &Metrics) {
    println!(
        "  {name:<22} image->text R@1 {:5.1} R@5 {:5.1} R@10 {:5.1} | text->image R@1 {:5.1} R@5 {:5.1} R@10 {:5.1} | rsum {:6.1}",
        m.i2t.r1, m.i2t.r5, m.i2t.r10, m.t2i.r1, m.t2i.r5, m.t2i.r10, m.rsum
    );
}

fn load(dir: &Path) -> Result<(SgrafModel, CaptionTokenizer)> {
    Ok((
        SgrafModel::from_folder(dir, &sgraf_core::Device::Cpu)?,
        CaptionTokenizer::from_file(dir.join(sgraf_core::TOKENIZER_FILE))?,
    ))
}

pub fn demo(dir: &Path, epochs: usize) -> Result<()> {
    let start = Instant::now();
    let _ = std::fs::remove_dir_all(dir);
    let data = dir.join("data");
    let shape = Synthetic {
        train_images: 300,
        dev_images: 60,
        test_images: 60,
        regions: 12,
        img_dim: 16,
        seed: 1,
    };
    let contents = shape.write(&data)?;
    println!(
        "SYNTHETIC DATA, not real images: {} writes a SCAN-style precomp folder where",
        data.display()
    );
    println!(
        "each image is {} region vectors carrying two of {} 'concepts' and its five captions name them",
        shape.regions,
        sgraf_train::synthetic::CONCEPTS.len()
    );
    println!(
        "({} train, {} dev, {} test images). Models are tiny (d 32, m 16) so that they train in a minute.\n",
        shape.train_images, shape.dev_images, shape.test_images
    );

    let test = Precomp::open(&data, "test")?;
    let mut trainers = Vec::new();
    for module in [Module::Sgr, Module::Saf] {
        let opts = sgraf_train::synthetic::tiny_options(&data, module, epochs);
        let run = dir.join(format!("runs/{}", module.to_string().to_lowercase()));
        trainers.push(Trainer::new(&run, opts)?);
    }
    let before: Vec<Scorer> = trainers
        .iter()
        .map(|t| t.scorer())
        .collect::<Result<_, _>>()?;
    println!("Before training (test split, {} images):", test.n_images());
    let ensemble = |s: &[Scorer]| -> Result<Scorer> {
        let models = s.iter().map(|x| x.models()[0].clone()).collect();
        let toks = s.iter().map(|x| x.tokenizer().clone()).collect();
        Ok(Scorer::new(models, toks)?)
    };
    show(
        "SGRAF (SGR + SAF)",
        &evaluate(&ensemble(&before)?, &test, None, 1, &mut |_| {})?,
    );

    for t in &mut trainers {
        let module = t.config().name();
        let began = Instant::now();
        println!(
            "\nTraining {module} for {epochs} epochs ({} steps)...",
            t.planned_steps()
        );
        t.run(&mut |e| {
            if let Event::Validation { epoch, metrics, .. } = e {
                println!("  epoch {}: dev rsum {:.1}", epoch + 1, metrics.rsum);
            }
        })?;
        println!(
            "  done in {:.0} s; best model in {}",
            began.elapsed().as_secs_f64(),
            t.run_dir().join("best").display()
        );
    }

    let best: Vec<(SgrafModel, CaptionTokenizer)> = trainers
        .iter()
        .map(|t| load(&t.run_dir().join("best")))
        .collect::<Result<_>>()?;
    println!("\nAfter training (test split):");
    for (m, tok) in &best {
        let s = Scorer::new(vec![m.clone()], vec![tok.clone()])?;
        show(
            &m.config().name(),
            &evaluate(&s, &test, None, 1, &mut |_| {})?,
        );
    }
    let scorer = Scorer::new(
        best.iter().map(|b| b.0.clone()).collect(),
        best.iter().map(|b| b.1.clone()).collect(),
    )?;
    show(
        "SGRAF (SGR + SAF)",
        &evaluate(&scorer, &test, None, 1, &mut |_| {})?,
    );

    // A folder of per-image feature files, indexed once, then searched.
    let images = dir.join("images");
    std::fs::create_dir_all(&images)?;
    let per = shape.regions * shape.img_dim;
    let feats = test.images.to_vec()?;
    let names: Vec<String> = contents[2]
        .iter()
        .enumerate()
        .map(|(i, c)| format!("img{i:02}-{}.npy", c.join("-")))
        .collect();
    for (i, name) in names.iter().enumerate() {
        sgraf_data::npy::write_f32(
            &images.join(name),
            &[shape.regions, shape.img_dim],
            &feats[i * per..(i + 1) * per],
        )?;
    }
    let models: Vec<sgraf_retrieval::index::store::ModelSpec> = trainers
        .iter()
        .map(|t| {
            let best = t.run_dir().join("best");
            Ok(sgraf_retrieval::index::store::ModelSpec {
                fingerprint: index::model_fingerprint(&best)?,
                source: best.canonicalize()?.display().to_string(),
            })
        })
        .collect::<Result<_>>()?;
    let mut sorted = names.clone();
    sorted.sort();
    let report = index::update(
        &scorer,
        &models,
        &images,
        &sorted,
        None,
        &mut |_| {},
        &mut || {},
    )?;
    println!(
        "\nIndexed {} images into {} ({} new)",
        report.rows,
        sgraf_retrieval::index::store::index_dir(&images).display(),
        report.added
    );
    // A query naming the two concepts of the first test image.
    let target = &contents[2][0];
    let query = format!("a {} next to a {}", target[0], target[1]);
    let query = query.as_str();
    let fingerprints: Vec<String> = models.iter().map(|m| m.fingerprint.clone()).collect();
    let (ranked, _) = index::rank(
        &scorer,
        &fingerprints,
        &images,
        &sorted,
        query,
        None,
        &mut |_| {},
    )?;
    let hits: Vec<(f32, &String)> = ranked.iter().map(|r| (r.score, &r.name)).collect();
    let position = hits
        .iter()
        .position(|h| h.1 == &names[0])
        .map_or(0, |p| p + 1);
    println!(
        "\nrank --query {query:?} (SGRAF), top 5; file names list each image's concepts, {} (the image the query describes) ranks {position} of {}:",
        names[0],
        hits.len()
    );
    println!("{:>4}  {:>7}  file", "rank", "score");
    for (i, (s, name)) in hits.iter().take(5).enumerate() {
        println!("{:>4}  {:>7.4}  {}", i + 1, s, images.join(name).display());
    }
    println!(
        "\nThe same with the command line (the index names its models):\n  sgraf-cli rank --images {0}/images --query {query:?} --top 5",
        dir.display()
    );
    println!("\nDemo finished in {:.0} s.", start.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The README's first command, shortened to one epoch per model.
    #[test]
    fn demo_runs_end_to_end() {
        let dir = std::env::temp_dir().join(format!("sgraf-demo-test-{}", std::process::id()));
        super::demo(&dir, 1).unwrap();
        for path in [
            "runs/sgr/best/model.safetensors",
            "runs/saf/best/tokenizer.json",
            "images/.sgraf-index/manifest.json",
        ] {
            assert!(dir.join(path).is_file(), "{path} is missing");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
