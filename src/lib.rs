//! SGRAF image-text matching (Similarity Graph Reasoning and Attention
//! Filtration, Diao et al., AAAI 2021) on candle.
//!
//! Models from folders, the Hugging Face Hub or a folder's index
//! ([`models`], [`hub`]), a folder's images with photos through the
//! detector and ranking them ([`folder`]), and why an image matches a query
//! ([`explain`], drawn by [`overlay`]).

pub use sgraf_core as core;

pub mod explain;
pub mod folder;
pub mod hub;
pub mod models;
pub mod overlay;

pub use explain::{explain, QueryExplanation};
pub use folder::{display_name, feature_names, Folder, Hit};
pub use models::{find_detector, load_specs, model_specs, parse_device, Loaded};

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
