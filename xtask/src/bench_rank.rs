//! `cargo xtask bench rank`: the image index at photo-library scale.
//! Synthetic region features at the released size (`[36, 2048]` per file),
//! two random full-size models (SGR + SAF); for each folder size: `index`
//! from scratch (time, peak RSS), `rank` for a query (time, peak RSS; the
//! best of three), and `index` after adding one file. Each command is a
//! `sgraf-cli` process, so its peak RSS is its own (`wait4`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use sgraf_core::{Config, Module, SgrafModel};

/// A full-size model folder with the published initialisation.
pub(crate) fn random_model(dir: &Path, module: Module, seed: u64) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let words: Vec<String> = ["<pad>", "<start>", "<end>", "<unk>"]
        .iter()
        .map(|s| s.to_string())
        .chain((0..8477).map(|i| format!("w{i}")))
        .collect();
    let vocab = sgraf_text::Vocab::from_words(words)?;
    let cfg = Config::released(module, vocab.len());
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    SgrafModel::load(vb, &cfg)?;
    let vars: Vec<(String, candle_core::Var)> = {
        let data = varmap.data().lock().expect("varmap");
        let mut v: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    sgraf_train::init::initialize(&vars, &cfg, seed)?;
    varmap.save(dir.join(sgraf_core::WEIGHTS_FILE))?;
    std::fs::write(
        dir.join(sgraf_core::CONFIG_FILE),
        serde_json::to_string_pretty(&cfg)?,
    )?;
    std::fs::write(
        dir.join(sgraf_core::TOKENIZER_FILE),
        vocab.tokenizer_json().to_string(),
    )?;
    Ok(())
}

/// Writes feature files `img{i}.npy` for `start..end` (`[36, 2048]`, random).
fn write_features(dir: &Path, range: std::ops::Range<usize>) -> Result<()> {
    let per = 36 * 2048;
    let mut rng = sgraf_core::rng::SplitMix64(range.start as u64 + 1);
    let mut buf = vec![0f32; per];
    for i in range {
        for v in buf.iter_mut() {
            *v = rng.uniform(0.0, 2.0);
        }
        sgraf_data::npy::write_f32(&dir.join(format!("img{i:06}.npy")), &[36, 2048], &buf)?;
    }
    Ok(())
}

fn du(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|it| {
            it.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

pub fn bench_rank(sizes: &[usize], out: Option<PathBuf>, baseline: Option<PathBuf>) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let work = std::env::temp_dir().join(format!("sgraf-bench-rank-{}", std::process::id()));
    let models = work.join("models");
    random_model(&models.join("sgr"), Module::Sgr, 1)?;
    random_model(&models.join("saf"), Module::Saf, 2)?;
    let mut clis = vec![("current", crate::bench_e2e::cli()?)];
    if let Some(b) = baseline {
        anyhow::ensure!(b.is_file(), "--baseline {} is not a file", b.display());
        clis.insert(0, ("baseline", b));
    }
    let images = work.join("images");
    std::fs::create_dir_all(&images)?;
    let (sgr, saf) = (models.join("sgr"), models.join("saf"));
    let query = "w12 w873 w5 w4410 w77 w3001 w18 w2 w640";
    println!(
        "{:>9} {:>7} {:>9} {:>10} {:>9} {:>10} {:>12} {:>9} {:>10} {:>10}",
        "cli",
        "images",
        "index s",
        "index MB",
        "rank s",
        "rank MB",
        "rank img/s",
        "+1 s",
        "+1 MB",
        "index GB"
    );
    let mut rows = Vec::new();
    let mut have = 0;
    for &n in sizes {
        write_features(&images, have..n)?;
        have = n;
        let mut cases = Vec::new();
        for (label, cli) in &clis {
            let index = |dir: &Path| {
                let mut c = Command::new(cli);
                c.arg("index")
                    .arg("-m")
                    .arg(&sgr)
                    .arg("-m")
                    .arg(&saf)
                    .arg("--images")
                    .arg(dir);
                c
            };
            let rank = |dir: &Path, extra: &[&str]| {
                let mut c = Command::new(cli);
                c.arg("rank")
                    .arg("--images")
                    .arg(dir)
                    .arg("--query")
                    .arg(query)
                    .args(["--top", "10"])
                    .args(extra);
                c
            };
            // Each binary builds its own index from the same files.
            let _ = std::fs::remove_dir_all(images.join(sgraf_retrieval::index::INDEX_DIR));
            let (index_s, index_mb) = crate::bench_e2e::timed(&mut index(&images))?;
            let (rank_s, rank_mb) = crate::bench_e2e::best_of(3, || rank(&images, &[]))?;
            let (short_s, short_mb) =
                crate::bench_e2e::best_of(3, || rank(&images, &["--shortlist", "500"]))?;
            write_features(&images, n..n + 1)?;
            let (add_s, add_mb) = crate::bench_e2e::timed(&mut index(&images))?;
            std::fs::remove_file(images.join(format!("img{n:06}.npy")))?;
            let (remove_s, _) = crate::bench_e2e::timed(&mut index(&images))?;
            let gb = du(&images.join(sgraf_retrieval::index::INDEX_DIR)) as f64 / 1e9;
            println!(
                "{:>9} {:>7} {:>9.1} {:>10.0} {:>9.2} {:>10.0} {:>12.0} {:>9.2} {:>10.0} {:>10.2}",
                label,
                n,
                index_s,
                index_mb,
                rank_s,
                rank_mb,
                n as f64 / rank_s,
                add_s,
                add_mb,
                gb
            );
            println!(
                "{:>17} rank --shortlist 500: {short_s:.2} s, {short_mb:.0} MB; removing one file: {remove_s:.2} s",
                ""
            );
            cases.push((label, serde_json::json!({
                "images": n, "index_seconds": index_s, "index_peak_rss_mb": index_mb,
                "rank_seconds": rank_s, "rank_peak_rss_mb": rank_mb,
                "rank_images_per_second": n as f64 / rank_s,
                "rank_shortlist_500_seconds": short_s, "rank_shortlist_500_peak_rss_mb": short_mb,
                "add_one_seconds": add_s, "add_one_peak_rss_mb": add_mb,
                "remove_one_seconds": remove_s, "index_gb": gb,
            })));
        }
        let mut row = cases.last().expect("the current cli").1.clone();
        if let [(_, before), (_, after)] = cases.as_slice() {
            let ratio =
                |k: &str| after[k].as_f64().unwrap_or(0.0) / before[k].as_f64().unwrap_or(1.0);
            println!(
                "{:>17} current / baseline time: index {:.2}x, rank {:.2}x, rank --shortlist {:.2}x, add one {:.2}x",
                "",
                ratio("index_seconds"),
                ratio("rank_seconds"),
                ratio("rank_shortlist_500_seconds"),
                ratio("add_one_seconds")
            );
            row["baseline"] = before.clone();
        }
        rows.push(row);
    }
    let baseline_cli = (clis.len() > 1).then(|| clis[0].1.display().to_string());
    let report = serde_json::json!({
        "baseline_cli": baseline_cli,
        "task": "rank", "models": ["SGR", "SAF"], "feature_shape": [36, 2048], "cases": rows,
        "threads": threads, "commit": crate::bench::git_head(), "cpu": crate::bench::cpu_name(),
    });
    let out = out.unwrap_or_else(|| crate::root().join("bench/results/rank-latest.json"));
    crate::write_json(&out, &report)?;
    println!("wrote {}", out.display());
    if std::env::var_os("SGRAF_BENCH_KEEP").is_some() {
        println!("kept {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(())
}
