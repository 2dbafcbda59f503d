//! Argument structs of the commands that share the library code in
//! `sgraf-app` (explain, serve).

use std::path::PathBuf;

use clap::Args;

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
