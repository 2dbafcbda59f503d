//! `sgraf-cli`: a thin command line over the sgraf crates.

mod args;
mod explain;
mod extract;
mod plot;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use sgraf_data::Shard;
use sgraf_data::{load_features, Npy, Precomp};
use sgraf_retrieval::index;

#[derive(Parser)]
#[command(
    name = "sgraf-cli",
    version,
    about = "SGRAF image-text matching: score, evaluate and rank with SGR, SAF and SGRAF models",
    long_about = "SGRAF image-text matching on precomputed region features (the SCAN release \
format: 36 bottom-up-attention regions of 2048 values per image), or on photos through the \
bottom-up-attention detector (extract, or rank/index --detector).\n\n\
Every command takes --model one or more times: a model folder (config.json, \
model.safetensors, tokenizer.json) or a Hugging Face Hub repository id \
owner/name[@revision]. Two or more models are averaged: one SGR and one SAF \
model make SGRAF. HF_HOME sets the Hub cache, HF_HUB_OFFLINE=1 reads only the cache."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
pub struct ModelArgs {
    /// Model folder or Hub id owner/name[@revision]; repeat to average models (SGRAF).
    /// Default: $SGRAF_MODEL (comma-separated), and for rank the models the
    /// folder's index was built with.
    #[arg(long = "model", short = 'm', value_name = "MODEL")]
    pub models: Vec<String>,
    /// cpu, cuda, cuda:N or metal (cuda and metal need a build with
    /// `--features cuda` / `--features metal`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

use sgraf::{parse_device, Loaded};

/// Photos in an images folder: their region features come from a detector.
#[derive(Args, Clone, Default)]
pub struct PhotoArgs {
    /// Detector folder or Hub id for the photos in the folder (default: the
    /// model folder's `detector/` sub-folder or its config's "detector" entry).
    /// Features are extracted once into DIR/.sgraf-regions/ and reused.
    #[arg(long)]
    pub detector: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Score every image of a features array against every caption of a text file.
    Score(args::ScoreArgs),
    /// The standard Flickr30K/COCO evaluation on a SCAN precomp folder.
    Eval(args::EvalArgs),
    /// Rank the images of a folder for a query, or the captions of a file for an image.
    Rank(args::RankArgs),
    /// Encode every image of a features folder once into DIR/.sgraf-index/ (segments
    /// of a few hundred images), which rank then streams; updated incrementally: only
    /// new and changed files are encoded. Photos (JPEG, PNG, WebP) go through the
    /// detector first (--detector), once.
    Index(args::IndexArgs),
    /// Extract bottom-up-attention region features from photos: NAME.npy [k, 2048]
    /// and NAME.json (boxes, object and attribute classes, confidences, image size)
    /// per photo, the input SGRAF models read.
    Extract(extract::Options),
    /// Build a vocabulary as the published code does: lowercase + word_tokenize, count,
    /// keep words seen at least THRESHOLD times, ids 0..3 special, then first-seen order.
    Vocab(args::VocabArgs),
    /// Train an SGR or SAF model on a SCAN precomp folder, from scratch or from a model (--init).
    Train(Box<TrainArgs>),
    /// Plot the training curves of one or more runs (RUN/metrics.jsonl) to a PNG:
    /// loss, learning rate, validation rsum and R@1/5/10.
    Plot(args::PlotArgs),
    /// Why an image matches a query: each word's attention over the image's
    /// regions (the model's own), its strongest regions, and --out a picture of them.
    Explain(Box<args::ExplainArgs>),
    /// Search a folder from the browser: a local web page and JSON API
    /// (/api/search, /api/explain, /api/image, /api/health) over the folder,
    /// its models and index loaded once.
    Serve(Box<args::ServeArgs>),
    /// Describe a model.
    Info(args::InfoArgs),
}

thread_local! {
    /// The library's defaults, which the flags show and use: one source.
    static TRAIN_DEFAULTS: sgraf_train::TrainOptions = sgraf_train::TrainOptions::default();
}

#[derive(Args)]
struct TrainArgs {
    /// SCAN precomp folder ({split}_ims.npy, {split}_caps.txt).
    #[arg(long, required_unless_present = "resume")]
    data: Option<PathBuf>,
    /// SGR or SAF (taken from --init when fine-tuning).
    #[arg(long, value_parser = ["SGR", "SAF"])]
    module: Option<String>,
    /// Run folder: best/ and last/ model folders, state/, metrics.jsonl, tb/ (TensorBoard events).
    #[arg(long, required_unless_present = "resume")]
    out: Option<PathBuf>,
    /// Start from this model (folder or Hub id): fine-tuning.
    #[arg(long)]
    init: Option<String>,
    /// Vocabulary JSON (default: the --init model's, else built from the training captions).
    #[arg(long)]
    vocab: Option<PathBuf>,
    /// Continue the run in RUN exactly where it stopped.
    #[arg(long, value_name = "RUN", conflicts_with_all = ["data", "module", "out", "init", "vocab"])]
    resume: Option<PathBuf>,
    #[arg(long, default_value_t = TRAIN_DEFAULTS.with(|d| d.batch_size))]
    batch_size: usize,
    /// Default 40 (SGR) / 30 (SAF); 20 on COCO.
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long, default_value_t = TRAIN_DEFAULTS.with(|d| d.learning_rate))]
    learning_rate: f64,
    /// Epochs between learning-rate decays (x0.1); default 30 (SGR) / 20 (SAF), 10 on COCO.
    #[arg(long)]
    lr_update: Option<usize>,
    #[arg(long, default_value_t = TRAIN_DEFAULTS.with(|d| d.margin))]
    margin: f64,
    /// Sum over all negatives instead of the hardest one (the official --max_violation switch).
    #[arg(long)]
    no_max_violation: bool,
    /// Gradient clipping at this global L2 norm (0 disables).
    #[arg(long, default_value_t = TRAIN_DEFAULTS.with(|d| d.grad_clip))]
    grad_clip: f64,
    #[arg(long, default_value_t = TRAIN_DEFAULTS.with(|d| d.embed_size))]
    embed_size: usize,
    #[arg(long, default_value_t = TRAIN_DEFAULTS.with(|d| d.sim_dim))]
    sim_dim: usize,
    #[arg(long, default_value_t = TRAIN_DEFAULTS.with(|d| d.word_dim))]
    word_dim: usize,
    #[arg(long, default_value_t = TRAIN_DEFAULTS.with(|d| d.sgr_step))]
    sgr_step: usize,
    #[arg(long, default_value_t = TRAIN_DEFAULTS.with(|d| d.num_layers))]
    num_layers: usize,
    /// Dropout probability everywhere (0 disables every dropout).
    #[arg(long, default_value_t = TRAIN_DEFAULTS.with(|d| d.dropout))]
    dropout: f32,
    /// Stop after this many optimizer steps in all (last/ is still written); with
    /// --resume, the new limit (without it, the run goes on to its last epoch).
    #[arg(long)]
    max_steps: Option<u64>,
    /// Batches in file order.
    #[arg(long)]
    no_shuffle: bool,
    #[arg(long, default_value_t = TRAIN_DEFAULTS.with(|d| d.seed))]
    seed: u64,
    #[arg(long, default_value_t = TRAIN_DEFAULTS.with(|d| d.train_split.clone()))]
    train_split: String,
    #[arg(long, default_value_t = TRAIN_DEFAULTS.with(|d| d.val_split.clone()))]
    val_split: String,
    /// Also validate every this many steps (logged only).
    #[arg(long, default_value_t = TRAIN_DEFAULTS.with(|d| d.val_step))]
    val_step: u64,
    /// Vocabulary threshold when the vocabulary is built from the training captions.
    #[arg(long, default_value_t = TRAIN_DEFAULTS.with(|d| d.vocab_threshold))]
    vocab_threshold: usize,
    /// Also write last/ and state/ every this many steps (0: epoch ends only).
    #[arg(long, default_value_t = TRAIN_DEFAULTS.with(|d| d.checkpoint_step))]
    checkpoint_step: u64,
}

/// The models of --model, else $SGRAF_MODEL.
fn load(args: &ModelArgs) -> Result<Loaded> {
    sgraf::load_specs(sgraf::model_specs(&args.models, None)?, &args.device)
}

fn progress(len: u64, msg: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:30}] {human_pos}/{human_len} {per_sec} ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(msg.to_string());
    bar
}

/// Caption lines of a file; empty lines and empty files are errors.
fn read_captions(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let lines: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    if lines.is_empty() {
        bail!("{} holds no captions", path.display());
    }
    if let Some(i) = lines.iter().position(String::is_empty) {
        bail!(
            "{} line {} is empty; put one caption on each line",
            path.display(),
            i + 1
        );
    }
    Ok(lines)
}

fn score(
    model: &ModelArgs,
    features: &Path,
    captions: &Path,
    out: Option<&Path>,
    as_json: bool,
) -> Result<()> {
    let Loaded { scorer, .. } = load(model)?;
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
    let caps = read_captions(captions)?;
    let n_img = feats.shape()[0];
    let bar = progress((n_img + n_img * caps.len()) as u64, "scoring");
    let images = scorer.encode_images(n_img, |s, n| Ok(feats.rows(s, n)?), &mut |n| {
        bar.inc(n as u64)
    })?;
    let scores = scorer.score_captions(&images, &caps, &mut |n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    let n_cap = caps.len();
    if let Some(out) = out {
        sgraf_data::npy::write_f32(out, &[n_img, n_cap], &scores)?;
        eprintln!("wrote {}: [{n_img}, {n_cap}] float32 scores", out.display());
    } else if as_json {
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

fn eval(model: &ModelArgs, data: &Path, split: &str, fold5: bool, as_json: bool) -> Result<()> {
    let Loaded { scorer, .. } = load(model)?;
    let pre = Precomp::open(data, split)?;
    pre.check_eval()?;
    scorer.check_features(pre.images.shape(), &pre.images.path().display().to_string())?;
    let n_img = pre.n_images();
    let folds = if fold5 { 5 } else { 1 };
    if n_img % folds != 0 {
        bail!(
            "--fold5 needs the images to split into five equal folds; {split} has {n_img} images"
        );
    }
    let per = n_img / folds;
    let pairs = (per * per * 5 * folds) as u64;
    let bar = progress(pairs, "pairs");
    let start = Instant::now();
    let m =
        sgraf_retrieval::metrics::evaluate(&scorer, &pre, None, folds, &mut |n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    if as_json {
        println!("{}", m.to_json());
    } else {
        let what = if fold5 {
            format!("{split}, 5 folds of {per} images")
        } else {
            format!("{split}, {n_img} images")
        };
        println!("{} ({what})", data.display());
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

fn index_cmd(
    model: &ModelArgs,
    dir: &Path,
    exclude: &[String],
    photos: &PhotoArgs,
    shard: Option<&str>,
) -> Result<()> {
    let shard = shard.map(Shard::parse).transpose()?;
    let loaded = load(model)?;
    let ui = explain::Bars::default();
    let names = sgraf::feature_names(
        dir,
        exclude,
        photos.detector.as_deref(),
        &loaded,
        shard,
        &ui,
    )?;
    let records = loaded.model_records()?;
    let bar = progress(names.len() as u64, "encoding");
    let report = index::update(
        &loaded.scorer,
        &records,
        dir,
        &names,
        shard,
        &mut |n| bar.inc(n as u64),
        &mut || {
            say(
                &bar,
                "waiting for another index process on this folder".into(),
            )
        },
    )?;
    bar.finish_and_clear();
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
        sgraf_retrieval::index::store::index_dir(dir).display(),
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

struct Hit {
    score: f32,
    label: String,
    extra: serde_json::Value,
}

fn print_hits(mut hits: Vec<Hit>, top: Option<usize>, as_json: bool, paths_only: bool, what: &str) {
    hits.sort_by(|a, b| b.score.total_cmp(&a.score));
    hits.truncate(top.unwrap_or(usize::MAX));
    if as_json {
        let rows: Vec<serde_json::Value> = hits
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let mut v = json!({"rank": i + 1, "score": h.score, what: h.label});
                if let (Some(obj), Some(extra)) = (v.as_object_mut(), h.extra.as_object()) {
                    obj.extend(extra.clone());
                }
                v
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
    } else if paths_only {
        for h in &hits {
            println!("{}", h.label);
        }
    } else {
        println!("{:>4}  {:>7}  {what}", "rank", "score");
        for (i, h) in hits.iter().enumerate() {
            println!("{:>4}  {:>7.4}  {}", i + 1, h.score, h.label);
        }
    }
}

fn rank(a: &args::RankArgs) -> Result<()> {
    let (model, top, as_json, paths_only) = (&a.model, a.top, a.json, a.paths_only);
    let (images, query) = (a.images.as_deref(), a.query.as_deref());
    let (image, captions) = (a.image.as_deref(), a.captions.as_deref());
    let (exclude, photos, shortlist) = (&a.exclude, &a.photos, a.shortlist);
    if top == Some(0) {
        bail!("--top must be at least 1");
    }
    if shortlist == Some(0) {
        bail!("--shortlist must be at least 1");
    }
    match (images, query, image, captions) {
        (Some(dir), Some(query), None, None) => {
            if query.trim().is_empty() {
                bail!("the query is empty");
            }
            let ui = explain::Bars::default();
            let folder = sgraf::Folder::open(
                dir,
                &model.models,
                &model.device,
                exclude,
                photos.detector.as_deref(),
                &ui,
            )?;
            let bar = progress(folder.names.len() as u64, "ranking");
            let (ranked, report) = folder.rank(query, shortlist, &mut |n| bar.inc(n as u64))?;
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
            let loaded = load(model)?;
            let (shape, feats) = load_features(image)?;
            loaded.scorer.check_features(&shape, &image.display().to_string())?;
            let caps = read_captions(captions)?;
            let sides = loaded.scorer.image_sides(feats, 1)?;
            let bar = progress(caps.len() as u64, "scoring");
            let scores = loaded.scorer.score_captions(&sides, &caps, &mut |n| bar.inc(n as u64))?;
            bar.finish_and_clear();
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

fn vocab(captions: &[PathBuf], threshold: usize, out: &Path) -> Result<()> {
    let mut lines = Vec::new();
    for path in captions {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        lines.extend(text.lines().map(|l| l.trim().to_string()));
    }
    if lines.is_empty() {
        bail!(
            "no captions in {}",
            captions
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let vocab = sgraf_text::Vocab::build(&lines, threshold);
    sgraf_data::write_atomic(out, vocab.to_json().to_string().as_bytes())?;
    println!(
        "wrote {}: {} words (4 special + {} seen at least {threshold} times) from {} captions",
        out.display(),
        vocab.len(),
        vocab.len() - 4,
        lines.len()
    );
    Ok(())
}

/// A line above the progress bar, or on stderr when there is no bar (no terminal).
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

fn train(args: TrainArgs) -> Result<()> {
    use sgraf_train::trainer::Event;
    let mut trainer = match &args.resume {
        Some(run) => sgraf_train::Trainer::resume(run, args.max_steps)?,
        None => {
            let init = args.init.as_deref().map(sgraf::hub::resolve).transpose()?;
            let opts = sgraf_train::TrainOptions {
                data: args.data.clone().expect("clap requires --data"),
                module: args.module.as_deref().map(str::parse).transpose()?,
                init,
                vocab: args.vocab.clone(),
                batch_size: args.batch_size,
                epochs: args.epochs,
                learning_rate: args.learning_rate,
                lr_update: args.lr_update,
                margin: args.margin,
                max_violation: !args.no_max_violation,
                grad_clip: args.grad_clip,
                embed_size: args.embed_size,
                sim_dim: args.sim_dim,
                word_dim: args.word_dim,
                sgr_step: args.sgr_step,
                num_layers: args.num_layers,
                dropout: args.dropout,
                max_steps: args.max_steps,
                no_shuffle: args.no_shuffle,
                seed: args.seed,
                train_split: args.train_split.clone(),
                val_split: args.val_split.clone(),
                val_step: args.val_step,
                vocab_threshold: args.vocab_threshold,
                checkpoint_step: args.checkpoint_step,
                ..sgraf_train::TrainOptions::default()
            };
            sgraf_train::Trainer::new(args.out.as_deref().expect("clap requires --out"), opts)?
        }
    };
    let bar = ProgressBar::new(trainer.planned_steps());
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:25}] step {pos}/{len} ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_position(trainer.steps_done());
    trainer.run(&mut |e| match e {
        Event::Step(s) => {
            bar.set_position(s.step);
            bar.set_message(format!(
                "epoch {}/{} loss {:.4} lr {:.1e}",
                s.epoch + 1,
                s.epochs,
                s.loss,
                s.lr
            ));
        }
        Event::Validation { epoch, step, metrics } => say(&bar, format!(
            "epoch {} step {step}: rsum {:.1} (i2t R@1 {:.1} R@5 {:.1} R@10 {:.1}, t2i R@1 {:.1} R@5 {:.1} R@10 {:.1})",
            epoch + 1,
            metrics.rsum,
            metrics.i2t.r1,
            metrics.i2t.r5,
            metrics.i2t.r10,
            metrics.t2i.r1,
            metrics.t2i.r5,
            metrics.t2i.r10
        )),
    })?;
    bar.finish_and_clear();
    let run = trainer.run_dir();
    println!(
        "{} steps; best validation rsum {:.1}; models in {} and {}",
        trainer.steps_done(),
        trainer.best_rsum(),
        run.join("best").display(),
        run.join("last").display()
    );
    Ok(())
}

fn info(model: &ModelArgs, as_json: bool) -> Result<()> {
    let Loaded {
        scorer, folders, ..
    } = load(model)?;
    let mut all = Vec::new();
    for (m, dir) in scorer.models().iter().zip(&folders) {
        let cfg = m.config();
        if as_json {
            all.push(json!({"folder": dir, "config": cfg}));
            continue;
        }
        println!("model      {}", dir.display());
        println!("module     {}", cfg.module);
        println!(
            "data       {}",
            cfg.data_name.as_deref().unwrap_or("unknown")
        );
        println!(
            "image      {} regions x {} features -> d = {}",
            cfg.num_regions, cfg.img_dim, cfg.embed_size
        );
        println!(
            "text       vocab {} -> word_dim {} -> {}GRU x{} -> d = {}",
            cfg.vocab_size,
            cfg.word_dim,
            if cfg.bi_gru { "bi-" } else { "" },
            cfg.num_layers,
            cfg.embed_size
        );
        println!("similarity m = {}, sgr_step {}", cfg.sim_dim, cfg.sgr_step);
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    }
    Ok(())
}

fn main() -> Result<()> {
    // Die quietly when a pipe closes (`sgraf-cli rank ... | head`), like other Unix tools.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    sgraf_retrieval::keep_large_allocations_in_heap();
    match Cli::parse().command {
        Command::Score(a) => score(&a.model, &a.features, &a.captions, a.out.as_deref(), a.json),
        Command::Eval(a) => eval(&a.model, &a.data, &a.split, a.fold5, a.json),
        Command::Rank(a) => rank(&a),
        Command::Index(a) => index_cmd(
            &a.model,
            &a.images,
            &a.exclude,
            &a.photos,
            a.shard.as_deref(),
        ),
        Command::Extract(opts) => extract::extract(&opts),
        Command::Explain(a) => explain::explain(&a),
        Command::Serve(a) => explain::serve(&a),
        Command::Info(a) => info(&a.model, a.json),
        Command::Vocab(a) => vocab(&a.captions, a.threshold, &a.out),
        Command::Train(args) => train(*args),
        Command::Plot(a) => {
            let out = plot::plot(&a.runs, a.out.as_deref(), a.smoothing)?;
            println!("wrote {}", out.display());
            Ok(())
        }
    }
}
