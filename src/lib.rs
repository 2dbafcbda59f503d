//! SGRAF image-text matching (Similarity Graph Reasoning and Attention
//! Filtration, Diao et al., AAAI 2021) on candle: the library that the
//! `sgraf-cli` commands and the server are built on.
//!
//! [`Sgraf`] is one model or several averaged (an SGR and a SAF model
//! together are SGRAF), loaded from folders or Hugging Face Hub ids
//! (`owner/name[@revision]`, see [`hub`]). Images are SCAN-style region
//! features (`[regions, img_dim]` per image, 36 x 2048 for the released
//! models); photos become region features through the bottom-up-attention
//! detector ([`Detector`], [`load_detector`]), which a [`Folder`] runs once
//! per photo and caches.
//!
//! Load the models (here the tiny committed fixture models; a released
//! SGRAF is `Sgraf::load(&["weights/f30k_sgr", "weights/f30k_saf"], &Device::Cpu)`)
//! and score images against captions:
//!
//! ```
//! use sgraf::{Device, Sgraf};
//! # fn main() -> sgraf::Result<()> {
//! let sgraf = Sgraf::load(&["tests/fixtures/sgr", "tests/fixtures/saf"], &Device::Cpu)?;
//! let (shape, features) = sgraf::load_npy("tests/fixtures/precomp/test_ims.npy")?;
//! assert_eq!(shape[1..], [36, sgraf.config().img_dim()]);
//! let scores = sgraf.score(&features, &["A man riding a bike on the street.", "Two dogs playing in the snow."])?;
//! assert_eq!((scores.n_images, scores.n_captions), (shape[0], 2));
//! assert!(scores.values.iter().all(|s| s.is_finite()));
//! # Ok(()) }
//! ```
//!
//! Rank a folder of images (feature files; photos too, given a detector)
//! for a query, best first, through the folder's index where it has one:
//!
//! ```
//! use sgraf::{Device, Sgraf};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("sgraf-doc-rank-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! # let (shape, features) = sgraf::load_npy("tests/fixtures/precomp/test_ims.npy")?;
//! # let per = shape[1] * shape[2];
//! # for i in 0..3 {
//! #     sgraf::data::npy::write_f32(&dir.join(format!("img{i}.npy")), &shape[1..], &features[i * per..(i + 1) * per])?;
//! # }
//! // `dir` holds img0.npy, img1.npy and img2.npy.
//! let sgraf = Sgraf::load(&["tests/fixtures/sgr", "tests/fixtures/saf"], &Device::Cpu)?;
//! let hits = sgraf.rank_folder(&dir, "Two dogs playing in the snow.")?;
//! assert_eq!(hits.len(), 3);
//! assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
//! println!("best: {} ({:.4})", hits[0].file, hits[0].score);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(()) }
//! ```
//!
//! Explain a match: each word's attention over the image's regions, from
//! the same computation that scores it:
//!
//! ```
//! use sgraf::{Device, Sgraf};
//! # fn main() -> sgraf::Result<()> {
//! let sgraf = Sgraf::load(&["tests/fixtures/sgr", "tests/fixtures/saf"], &Device::Cpu)?;
//! let (shape, features) = sgraf::load_npy("tests/fixtures/precomp/test_ims.npy")?;
//! let image = &features[..shape[1] * shape[2]];
//! let why = sgraf.explain(image, "Two dogs playing in the snow.")?;
//! let scores = sgraf.score(image, &["Two dogs playing in the snow."])?;
//! assert!((why.score - scores.values[0]).abs() < 1e-5);
//! for w in why.strongest_words().into_iter().take(2) {
//!     println!("{:>8}: regions {:?}", why.words[w], why.top_regions(w, 3));
//! }
//! # Ok(()) }
//! ```
//!
//! Errors are [`Error`]: bad input (an empty query, features of the wrong
//! size, a folder with nothing to rank, a model that is not a model) is an
//! error that says what was expected and what was found, never a panic.
//!
//! The stages are also reachable one by one: [`core`] (the model and its
//! CPU engine), [`text`] (tokenization), [`data`] (feature files, `.npy`,
//! precomp folders), [`retrieval`] (scoring in bounded memory, metrics, the
//! image index), [`vision`] (the detector), [`train`] (training and
//! fine-tuning) and [`convert`] (the released PyTorch checkpoints).

#![forbid(unsafe_code)]

pub use sgraf_convert as convert;
pub use sgraf_core as core;
pub use sgraf_data as data;
pub use sgraf_retrieval as retrieval;
pub use sgraf_text as text;
pub use sgraf_train as train;
pub use sgraf_vision as vision;

pub mod error;
pub mod evaluate;
pub mod explain;
pub mod extract;
pub mod folder;
pub mod hub;
pub mod models;
pub mod overlay;
pub mod prepare;
pub mod score;
pub mod vocab;

pub use error::{Error, Result};
pub use evaluate::{evaluate, EvalOptions, EvalReport, Evaluation, Recall};
pub use explain::{direction_name, explain, QueryExplanation};
pub use extract::{extract, ExtractOptions, ExtractReport, Extracted};
pub use folder::{
    display_name, feature_names, index_dir, index_folder, photo_of, stamps, Folder, FolderOptions,
    Hit, IndexOptions, IndexReport, CACHE_DIR,
};
pub use models::load_detector;
pub use score::{check_captions, Config, ModelConfig};
pub use sgraf_core::Device;
pub use sgraf_data::Shard;
pub use sgraf_retrieval::index::store::ModelSpec;
pub use sgraf_retrieval::index::RankReport;
pub use sgraf_train::metrics_log::{
    Log as TrainLog, StepRecord, ValidationRecord, FILE_NAME as TRAIN_LOG_FILE,
};
pub use sgraf_train::{Event as TrainEvent, StepInfo, TrainOptions, Trainer};
pub use sgraf_vision::{is_image_path, BoxPolicy};
pub use sgraf_vision::{BgrImage, Detector, Regions};
pub use vocab::{build_vocab, VocabSummary};
/// One image's region features from a file (`.npy`, `.npz`,
/// `.safetensors`, `[regions, img_dim]`): its shape and values, row-major.
pub fn load_features(path: impl AsRef<std::path::Path>) -> Result<(Vec<usize>, Vec<f32>)> {
    Ok(sgraf_data::load_features(path.as_ref())?)
}

/// A float32 `.npy` array (e.g. SCAN's `test_ims.npy`, `[n, regions,
/// img_dim]`): its shape and values, row-major.
pub fn load_npy(path: impl AsRef<std::path::Path>) -> Result<(Vec<usize>, Vec<f32>)> {
    let array = sgraf_data::Npy::open(path.as_ref())?;
    Ok((array.shape().to_vec(), array.to_vec()?))
}

pub use models::{find_detector, load_specs, model_specs, parse_device, Scores, Sgraf};

/// Where long-running library code reports: notes for the user and the
/// progress of a task. The command line draws progress bars; the server
/// and tests keep quiet ([`Quiet`]) or log.
pub trait Ui {
    /// A line for the user (a note, a skipped file).
    fn note(&self, line: &str) {
        eprintln!("{line}");
    }
    /// A task of `len` steps begins (`what`: "photos", "ranking", ...).
    fn start(&self, _what: &str, _len: u64) {}
    /// `n` more steps of the current task are done.
    fn inc(&self, _n: u64) {}
    /// The current task is over.
    fn finish(&self) {}
}

/// Notes on stderr, no progress.
pub struct Quiet;

impl Ui for Quiet {}

// The book's Rust examples (docs/book) and the README's run as doctests of
// this crate, so that they cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}
#[cfg(doctest)]
#[doc = include_str!("../docs/book/src/getting-started.md")]
mod book_getting_started {}
#[cfg(doctest)]
#[doc = include_str!("../docs/book/src/search.md")]
mod book_search {}
#[cfg(doctest)]
#[doc = include_str!("../docs/book/src/architecture.md")]
mod book_architecture {}
