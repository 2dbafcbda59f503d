//! The command line: one clap struct per command, and the flags several
//! commands share ([`ModelArgs`], [`PhotoArgs`]). A new command is a struct
//! here, a variant of [`Command`], a file in `commands/` and a line of the
//! dispatch in `main.rs`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use sgraf::TrainOptions;

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
model make SGRAF. HF_HOME sets the Hub cache, HF_HUB_OFFLINE=1 reads only the cache.",
    after_help = "Guide: docs/book (mdBook; start at docs/book/src/getting-started.md#the-command-line). \
Each command's --help names its chapter."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Score every image of a features array against every caption of a text file.
    #[command(after_help = "Guide: docs/book/src/search.md#score")]
    Score(ScoreArgs),
    /// The standard Flickr30K/COCO evaluation on a SCAN precomp folder.
    #[command(after_help = "Guide: docs/book/src/evaluation.md#eval")]
    Eval(EvalArgs),
    /// Rank the images of a folder for a query, or the captions of a file for an image.
    #[command(after_help = "Guide: docs/book/src/search.md#index-and-rank")]
    Rank(RankArgs),
    /// Encode every image of a features folder once into DIR/.sgraf-index/ (segments
    /// of a few hundred images), which rank then streams; updated incrementally: only
    /// new and changed files are encoded. Photos (JPEG, PNG, WebP) go through the
    /// detector first (--detector), once.
    #[command(
        after_help = "Guide: docs/book/src/search.md#index-and-rank (shards: docs/book/src/clusters.md)"
    )]
    Index(IndexArgs),
    /// Extract bottom-up-attention region features from photos: NAME.npy [k, 2048]
    /// and NAME.json (boxes, object and attribute classes, confidences, image size)
    /// per photo, the input SGRAF models read.
    #[command(after_help = "Guide: docs/book/src/photos.md")]
    Extract(ExtractArgs),
    /// Photos and their captions (Karpathy's dataset_*.json, COCO captions JSON, or
    /// FILE<TAB>CAPTION lines) -> a SCAN precomp folder to train and evaluate on:
    /// {train,dev,test}_ims.npy from the detector (extracted once into
    /// DIR/.sgraf-regions/) and {split}_caps.txt, k captions per image.
    #[command(after_help = "Guide: docs/book/src/fine-tuning.md#1-prepare")]
    Prepare(PrepareArgs),
    /// Build a vocabulary as the published code does: lowercase + word_tokenize, count,
    /// keep words seen at least THRESHOLD times, ids 0..3 special, then first-seen order.
    #[command(
        after_help = "Guide: docs/book/src/fine-tuning.md#training-from-scratch-and-resuming"
    )]
    Vocab(VocabArgs),
    /// Train an SGR or SAF model on a SCAN precomp folder, from scratch or from a model (--init).
    #[command(after_help = "Guide: docs/book/src/fine-tuning.md#2-train")]
    Train(Box<TrainArgs>),
    /// Plot the training curves of one or more runs (RUN/metrics.jsonl) to a PNG:
    /// loss, learning rate, validation rsum and R@1/5/10.
    #[command(after_help = "Guide: docs/book/src/fine-tuning.md#5-plot-the-runs")]
    Plot(PlotArgs),
    /// Why an image matches a query: each word's attention over the image's
    /// regions (the model's own), its strongest regions, and --out a picture of them.
    #[command(after_help = "Guide: docs/book/src/search.md#explain")]
    Explain(Box<ExplainArgs>),
    /// Search a folder from the browser: a local web page and JSON API
    /// (/api/search, /api/explain, /api/image, /api/health) over the folder,
    /// its models and index loaded once.
    #[command(
        after_help = "Guide: docs/book/src/search.md#serve (tokens: docs/book/src/security.md#who-can-ask-the-server)"
    )]
    Serve(Box<ServeArgs>),
    /// Describe a model: module, data, image and text encoders, similarity sizes.
    #[command(after_help = "Guide: docs/book/src/models.md")]
    Info(InfoArgs),
}

/// The models a command scores with, and where.
#[derive(Args)]
pub struct ModelArgs {
    /// Model folder or Hub id owner/name[@revision]; repeat to average models (SGRAF).
    /// Default: $SGRAF_MODEL (comma-separated), and for rank the models the
    /// folder's index was built with.
    #[arg(long = "model", short = 'm', value_name = "MODEL")]
    pub models: Vec<String>,
    /// cpu, cuda, cuda:N, metal or wgpu (cuda, metal and wgpu need a build
    /// with `--features cuda` / `--features metal` / `--features gpu`; wgpu
    /// runs the GPU engine's kernels on Vulkan, Metal or DX12).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Photos in an images folder: their region features come from a detector.
#[derive(Args, Clone, Default)]
pub struct PhotoArgs {
    /// Detector folder or Hub id for the photos in the folder (default: the
    /// model folder's `detector/` sub-folder or its config's "detector" entry).
    /// Features are extracted once into DIR/.sgraf-regions/ and reused.
    #[arg(long)]
    pub detector: Option<String>,
}

#[derive(Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Region features, [n_images, 36, img_dim] float32 .npy.
    #[arg(long)]
    pub features: PathBuf,
    /// Captions, one per line.
    #[arg(long)]
    pub captions: PathBuf,
    /// Write the [n_images, n_captions] float32 scores to this .npy instead of printing them.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the scores as JSON.
    #[arg(long, conflicts_with = "out")]
    pub json: bool,
}

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Folder with {split}_ims.npy and {split}_caps.txt (five captions per image).
    #[arg(long)]
    pub data: PathBuf,
    /// Split to evaluate: test, dev, testall (COCO).
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Average over five folds of the images (COCO 1K: testall in folds of 1000).
    #[arg(long)]
    pub fold5: bool,
    /// Print {"i2t": [r1, r5, r10, medr, meanr], "t2i": [...], "rsum": x}.
    #[arg(long)]
    pub json: bool,
    /// Captions per image (k; image i owns captions k*i .. k*i+k-1): default
    /// captions / images, or the folder's precomp.json, else 5 for a split with a
    /// row per caption (the published layout). Image -> text takes the best of
    /// an image's k captions.
    #[arg(long, value_name = "K")]
    pub captions_per_image: Option<usize>,
}

#[derive(Args)]
pub struct RankArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Folder of region-feature files, one per image (NAME.npy [36, img_dim], .npz, .safetensors).
    #[arg(long, requires = "query", conflicts_with_all = ["image", "captions"])]
    pub images: Option<PathBuf>,
    /// The text to search the images for.
    #[arg(long)]
    pub query: Option<String>,
    /// One image's region features (caption retrieval).
    #[arg(long, requires = "captions")]
    pub image: Option<PathBuf>,
    /// Captions to rank for --image, one per line.
    #[arg(long)]
    pub captions: Option<PathBuf>,
    /// Show only the best K.
    #[arg(long, value_name = "K")]
    pub top: Option<usize>,
    /// Print JSON.
    #[arg(long, conflicts_with = "paths_only")]
    pub json: bool,
    /// Print only the ranked files (or captions), one per line.
    #[arg(long)]
    pub paths_only: bool,
    /// Skip files or folders matching this glob (* and ?), on top of hidden ones; repeatable.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    #[command(flatten)]
    pub photos: PhotoArgs,
    /// First order the indexed images by a cheap score (cosine of the models'
    /// image and caption global vectors) and score only the best K exactly.
    /// Faster on large folders, but can miss images the exact ranking would
    /// place in the top: exact is the default.
    #[arg(long, value_name = "K")]
    pub shortlist: Option<usize>,
}

#[derive(Args)]
pub struct IndexArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Folder of region-feature files and/or photos.
    #[arg(long)]
    pub images: PathBuf,
    /// Skip files or folders matching this glob; repeatable.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    #[command(flatten)]
    pub photos: PhotoArgs,
    /// Index only shard I of N (0-based) of the files, e.g. one task of a Slurm
    /// array or a Kubernetes Indexed Job; every shard writes its own manifest into
    /// the same folder, rank reads them all, and a later run without --shard joins them.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
}

#[derive(Args)]
pub struct ExtractArgs {
    /// Detector folder (cargo xtask convert-weights --detector) or Hub id.
    #[arg(long)]
    pub detector: String,
    /// Folder of photos (JPEG, PNG, WebP, BMP, TIFF), searched recursively.
    #[arg(long)]
    pub images: PathBuf,
    /// Output folder (the photos' sub-folders are kept).
    #[arg(long)]
    pub out: PathBuf,
    /// Regions per photo: N (exactly, e.g. 36 for the SCAN features) or MIN-MAX
    /// (those of confidence >= --conf, at least MIN, at most MAX); default: the
    /// detector's own (36 for the k36 model, 10-100 otherwise).
    #[arg(long)]
    pub boxes: Option<String>,
    /// Confidence threshold of the MIN-MAX selection.
    #[arg(long, default_value_t = 0.2)]
    pub conf: f32,
    /// Keep outputs that already exist and are newer than their photo.
    #[arg(long)]
    pub skip_existing: bool,
    /// Skip files or folders matching this glob; repeatable.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print a JSON summary (extracted files and failures) on stdout.
    #[arg(long)]
    pub json: bool,
    /// Extract only shard I of N (0-based) of the photos, the same split as
    /// `index --shard`: one task of a Slurm array or Kubernetes Indexed Job.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
}

#[derive(Args)]
pub struct PrepareArgs {
    /// Captions file: Karpathy's dataset_*.json (images[].filename, split,
    /// sentences[].raw), COCO's captions JSON (images[].file_name,
    /// annotations[].caption), or lines of FILE<TAB>CAPTION.
    #[arg(long)]
    pub captions: PathBuf,
    /// Folder of the photos the captions file names.
    #[arg(long)]
    pub images: PathBuf,
    /// Detector folder (cargo xtask convert-weights --detector) or Hub id.
    #[arg(long)]
    pub detector: String,
    /// The precomp folder to write ({train,dev,test}_ims.npy and _caps.txt, precomp.json).
    #[arg(long)]
    pub out: PathBuf,
    /// DEV,TEST: photos in the dev and test splits, for COCO and TSV captions (the
    /// first DEV photos, the next TEST, the rest train); Karpathy's file names its own.
    #[arg(long, value_name = "DEV,TEST")]
    pub split_sizes: Option<String>,
    /// Captions per image, k: each photo's first k (default: the smallest count
    /// found); photos with fewer are left out.
    #[arg(long, value_name = "K")]
    pub captions_per_image: Option<usize>,
    /// Leave out photos missing from the folder or unreadable, instead of refusing.
    #[arg(long)]
    pub skip_missing: bool,
    /// Regions per photo (default: the detector's own fixed count, else 36).
    #[arg(long)]
    pub boxes: Option<usize>,
    /// Extract only shard I of N (0-based) of the photos into the cache, the same
    /// split as `index --shard`; a later run without --shard writes the folder.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print a JSON summary (splits, counts, what was left out) on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct VocabArgs {
    /// Caption files, one caption per line.
    #[arg(long, num_args = 1.., required = true)]
    pub captions: Vec<PathBuf>,
    /// Minimum count of a kept word.
    #[arg(long, default_value_t = 4)]
    pub threshold: usize,
    /// The vocabulary JSON to write ({"word2idx", "idx2word", "idx"}).
    #[arg(long)]
    pub out: PathBuf,
}

/// The defaults shown and used are the library's ([`TrainOptions::default`]).
#[derive(Args)]
pub struct TrainArgs {
    /// SCAN precomp folder ({split}_ims.npy, {split}_caps.txt).
    #[arg(long, required_unless_present = "resume")]
    pub data: Option<PathBuf>,
    /// SGR or SAF (taken from --init when fine-tuning).
    #[arg(long, value_parser = ["SGR", "SAF"])]
    pub module: Option<String>,
    /// Run folder: best/ and last/ model folders, state/, metrics.jsonl, tb/ (TensorBoard events).
    #[arg(long, required_unless_present = "resume")]
    pub out: Option<PathBuf>,
    /// Start from this model (folder or Hub id): fine-tuning; an RCAR folder trains RCAR.
    #[arg(long)]
    pub init: Option<String>,
    /// Vocabulary JSON (default: the --init model's, else built from the training captions).
    #[arg(long)]
    pub vocab: Option<PathBuf>,
    /// Continue the run in RUN exactly where it stopped.
    #[arg(long, value_name = "RUN", conflicts_with_all = ["data", "module", "out", "init", "vocab"])]
    pub resume: Option<PathBuf>,
    /// Captions per batch.
    #[arg(long, default_value_t = TrainOptions::default().batch_size)]
    pub batch_size: usize,
    /// Default 40 (SGR) / 30 (SAF); 20 on COCO; RCAR 40, 25 on COCO.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Adam's learning rate at the start.
    #[arg(long, default_value_t = TrainOptions::default().learning_rate)]
    pub learning_rate: f64,
    /// Epochs between learning-rate decays (x0.1); default 30 (SGR) / 20 (SAF), 10 on COCO;
    /// RCAR 30, 15 on COCO.
    #[arg(long)]
    pub lr_update: Option<usize>,
    /// Epochs summing the loss over all negatives before the hardest one (RCAR's
    /// --vse_mean_warmup_epochs); default 0 (SGR, SAF), RCAR 3, 5 on COCO.
    #[arg(long)]
    pub warmup_epochs: Option<usize>,
    /// Margin of the triplet ranking loss.
    #[arg(long, default_value_t = TrainOptions::default().margin)]
    pub margin: f64,
    /// Sum over all negatives instead of the hardest one (the official --max_violation switch).
    #[arg(long)]
    pub no_max_violation: bool,
    /// Gradient clipping at this global L2 norm (0 disables).
    #[arg(long, default_value_t = TrainOptions::default().grad_clip)]
    pub grad_clip: f64,
    /// Size of the joint embedding (new models only).
    #[arg(long, default_value_t = TrainOptions::default().embed_size)]
    pub embed_size: usize,
    /// Size of the similarity vectors (new models only).
    #[arg(long, default_value_t = TrainOptions::default().sim_dim)]
    pub sim_dim: usize,
    /// Size of the word embeddings (new models only).
    #[arg(long, default_value_t = TrainOptions::default().word_dim)]
    pub word_dim: usize,
    /// Graph reasoning steps of SGR (new models only).
    #[arg(long, default_value_t = TrainOptions::default().sgr_step)]
    pub sgr_step: usize,
    /// GRU layers of the text encoder (new models only).
    #[arg(long, default_value_t = TrainOptions::default().num_layers)]
    pub num_layers: usize,
    /// Dropout probability everywhere (0 disables every dropout).
    #[arg(long, default_value_t = TrainOptions::default().dropout)]
    pub dropout: f32,
    /// Stop after this many optimizer steps in all (last/ is still written); with
    /// --resume, the new limit (without it, the run goes on to its last epoch).
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Batches in file order.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Seed of the batch order, the initial weights and dropout.
    #[arg(long, default_value_t = TrainOptions::default().seed)]
    pub seed: u64,
    /// Split trained on.
    #[arg(long, default_value_t = TrainOptions::default().train_split)]
    pub train_split: String,
    /// Split validated on.
    #[arg(long, default_value_t = TrainOptions::default().val_split)]
    pub val_split: String,
    /// Also validate every this many steps (logged only).
    #[arg(long, default_value_t = TrainOptions::default().val_step)]
    pub val_step: u64,
    /// Vocabulary threshold when the vocabulary is built from the training captions.
    #[arg(long, default_value_t = TrainOptions::default().vocab_threshold)]
    pub vocab_threshold: usize,
    /// Also write last/ and state/ every this many steps (0: epoch ends only).
    #[arg(long, default_value_t = TrainOptions::default().checkpoint_step)]
    pub checkpoint_step: u64,
}

#[derive(Args)]
pub struct PlotArgs {
    /// Run folders (--out of train); several are overlaid.
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// The PNG to write (default RUN/curves.png; required with several runs).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Weight of the loss smoothing, TensorBoard's debiased EMA (0: none).
    #[arg(long, default_value_t = 0.6)]
    pub smoothing: f64,
}

#[derive(Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A region-feature file (NAME.npy, .npz, .safetensors; boxes from NAME.json
    /// beside it when present) or a photo (through the detector).
    #[arg(long)]
    pub image: PathBuf,
    /// The text whose match with the image is explained.
    #[arg(long)]
    pub query: String,
    /// Write a PNG of the photo (or of the boxes on grey when only features and
    /// NAME.json are known) with each word's strongest regions drawn, one panel
    /// per word, the strongest words first.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Panels in --out, at most.
    #[arg(long, default_value_t = 6)]
    pub panels: usize,
    /// Regions listed per word.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
    /// Print the explanation as JSON (the object of the server's /api/explain).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub photos: PhotoArgs,
}

/// The server's own flags are `sgraf_serve::Options`'s.
#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub server: sgraf_serve::Options,
    #[command(flatten)]
    pub photos: PhotoArgs,
}

#[derive(Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}
