//! One argument struct per command; `main.rs` dispatches them.

use std::path::PathBuf;

use clap::Args;

use crate::{ModelArgs, PhotoArgs};

#[derive(Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub model: crate::ModelArgs,
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
    pub photos: crate::PhotoArgs,
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: crate::ModelArgs,
    /// Folder of region-feature files and/or photos (as for rank).
    #[arg(long)]
    pub images: PathBuf,
    /// Skip files or folders matching this glob; repeatable.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    #[command(flatten)]
    pub photos: crate::PhotoArgs,
    /// Address to listen on; the default serves this machine only.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: any free port; the URL printed says which).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
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
pub struct InfoArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}
